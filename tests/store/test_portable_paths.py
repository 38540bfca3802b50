"""A store names its inputs portably: no absolute path of the machine that wrote it.

A run over local checkpoints named by absolute paths (one ``[[checkpoints]]`` table, one ``[checkpoint_set]``
path), a concept set named by an absolute path and an absolute spill folder: the store must record every
one of them relative to the config's folder, and `precompute steer` must load the checkpoints back from
those relative names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from precompute.cli import app
from precompute.config import config_from_dict
from precompute.inputs.concepts import BUILTIN_CONCEPT_SET, DEFAULT_CONCEPT_SET, concept_set_path
from precompute.provenance import checkpoint_location, portable_config, portable_path
from precompute.store import DDL

runner = CliRunner()


def test_portable_path_rules(tmp_path):
    base = tmp_path / "configs"
    assert portable_path("ckpts/step_1", base) == "ckpts/step_1"  # relative: as the user wrote it
    assert portable_path("~/ckpts", base) == "~/ckpts"
    assert portable_path(str(base / "ckpts" / "a"), base) == "ckpts/a"
    assert portable_path(str(tmp_path / "data" / "x"), base) == "../data/x"
    assert portable_path("", base) == ""


def test_portable_config_names_the_builtin_set(tmp_path):
    cfg = config_from_dict(
        {
            "model": {"id": str(tmp_path / "model")},
            "data": {"concepts": str(DEFAULT_CONCEPT_SET)},
            "checkpoints": [{"name": "a", "path": str(tmp_path / "ck" / "a")}],
            "checkpoint_set": {"local": str(tmp_path / "ck" / "step_*")},
        },
        base_dir=tmp_path / "configs",
    )
    data = portable_config(cfg)
    assert data["data"]["concepts"] == BUILTIN_CONCEPT_SET
    assert data["model"]["id"] == "../model"
    assert data["checkpoints"][0]["path"] == "../ck/a"
    assert data["checkpoint_set"]["local"] == "../ck/step_*"
    assert str(tmp_path) not in json.dumps(data)
    # the config itself is untouched (it still loads from where the files are)
    assert cfg.checkpoints[0].path == str(tmp_path / "ck" / "a")
    assert concept_set_path(BUILTIN_CONCEPT_SET) == DEFAULT_CONCEPT_SET
    assert concept_set_path("x.tsv", tmp_path) == tmp_path / "x.tsv"


def test_checkpoint_location_resolves_relative_local_sources(tmp_path):
    (tmp_path / "ckpts" / "a").mkdir(parents=True)
    assert checkpoint_location("ckpts/a", None, tmp_path) == str(tmp_path / "ckpts" / "a")
    assert checkpoint_location("org/model", "step1", tmp_path) == "org/model"  # a hub id with a revision
    assert checkpoint_location("ckpts/a", None, None) == "ckpts/a"  # the current folder
    assert checkpoint_location("/abs/ckpt", None, tmp_path) == "/abs/ckpt"


def _string_values(path: Path) -> list[tuple[str, str, str]]:
    """(table, column, value) of every non-null string in every table of the store."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = []
        for table in DDL:
            for name, kind, *_ in con.execute(f"DESCRIBE {table}").fetchall():
                if kind.upper().startswith("VARCHAR") or kind.upper() == "JSON":
                    sql = f'SELECT DISTINCT "{name}" FROM {table} WHERE "{name}" IS NOT NULL'
                    out += [(table, name, str(value)) for (value,) in con.execute(sql).fetchall()]
        return out
    finally:
        con.close()


@pytest.mark.slow
def test_store_holds_no_absolute_path_of_the_writer(tiny_checkpoints, tmp_path, tmp_path_factory):
    first, _, last = tiny_checkpoints
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    concepts = shutil.copy(DEFAULT_CONCEPT_SET, inputs / "concepts.parquet")
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    config = config_dir / "run.toml"
    config.write_text(
        "\n".join(
            [
                "[model]",
                'id = "tiny"',
                'device = "cpu"',
                'dtype = "float32"',
                "[data]",
                f"concepts = {json.dumps(str(concepts))}",
                'languages = ["en", "de", "ru"]',
                'concept_ids = ["monday", "tuesday", "march"]',
                "max_contexts = 6",
                "[extract]",
                f"spill_dir = {json.dumps(str(tmp_path / 'spill'))}",
                "[experts]",
                "top_k = 5",
                "min_langs = 2",
                "[probes]",
                "seeds = [0]",
                "max_iter = 100",
                'representations = ["mean"]',
                "[[checkpoints]]",
                'name = "first"',
                f"path = {json.dumps(str(first.path))}",
                f"step = {first.step}",
                "[checkpoint_set]",
                f"paths = [{json.dumps(str(last.path))}]",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    store = tmp_path / "out" / "store.duckdb"
    result = runner.invoke(app, ["run", str(config), "--out", str(store)])
    assert result.exit_code == 0, result.output

    roots = {str(tmp_path_factory.getbasetemp()), str(tmp_path_factory.getbasetemp().resolve()), str(Path.home())}
    leaks = [(t, c, v) for t, c, v in _string_values(store) if any(r in v for r in roots)]
    assert not leaks, leaks[:5]

    con = duckdb.connect(str(store), read_only=True)
    sources = dict(con.execute("SELECT checkpoint, source FROM checkpoints").fetchall())
    config_json = json.loads(con.execute("SELECT config_json FROM runs").fetchone()[0])
    con.close()
    assert set(sources) == {"first", last.path.name}
    for name, ck in (("first", first), (last.path.name, last)):
        assert not Path(sources[name]).is_absolute()
        assert (config_dir / sources[name]).resolve() == ck.path.resolve()  # relative to the config's folder
    assert config_json["data"]["concepts"] == "../inputs/concepts.parquet"
    assert config_json["extract"]["spill_dir"] == "../spill"

    # Read back elsewhere: steering finds the checkpoints through the config's folder.
    from precompute.pipeline import steer

    summary = steer(
        store, checkpoints=["first"], n_neurons=[0], seeds=[0], max_new_tokens=2, device="cpu", config_dir=config_dir
    )
    assert summary.height > 0
