"""The store package's own guarantees: typed refusals, no network and no extensions on open, symlinked stores,
one lock per real file, one "same run" rule, checkpoint content fingerprints, table sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import polars as pl
import pytest

from precompute.checkpoints.fingerprint import fingerprints_differ, hub_fingerprint, local_fingerprint
from precompute.store import (
    CheckpointRows,
    HalfWrittenStoreError,
    NotCrosslingStoreError,
    NotDuckDBError,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
    StoreMissingError,
    StoreWriter,
    UnsafeStoreError,
    connect,
    connect_attached,
    open_readonly,
    read_checkpoint_fingerprints,
    read_runs,
    verify_readable,
    writer_active,
)

REPO = Path(__file__).resolve().parents[2]


# --- a small crossling store, written through the writer (no model needed) ------------------------------------


def _run_row(run_id: str = "r1", config: dict | None = None) -> dict:
    return {
        "run_id": run_id,
        "model_id": "m",
        "model_card": "",
        "config_json": json.dumps(config or {}),
        "concept_set_sha256": "abc",
        "packages_json": "{}",
        "device": "cpu",
        "dtype": "float32",
        "started_at": None,
        "finished_at": None,
    }


def _ensure(writer: StoreWriter, run_id: str = "r1", config: dict | None = None) -> None:
    writer.ensure_run(
        run=_run_row(run_id, config),
        languages=pl.DataFrame(
            {"lang": ["de", "en"], "name": ["German", "English"], "script": ["Latn", "Latn"], "family": [None, None]}
        ),
        concepts=pl.DataFrame({"concept_id": ["x"], "label": ["x"], "category": ["c"]}),
        sentences=pl.DataFrame(
            {
                "sentence_id": [0, 1],
                "concept_id": ["x", "x"],
                "lang": ["de", "en"],
                "text": ["Montag", "Monday"],
                "span_start": [0, 0],
                "span_end": [6, 6],
            }
        ),
        layers=pl.DataFrame({"layer": [0], "n_neurons": [4], "hidden_size": [2], "module_path": ["h.0"]}),
        meta={"crossling_version": "test"},
    )


def _checkpoint(name: str, fingerprint: str | None = None) -> CheckpointRows:
    ap = pl.DataFrame(
        {
            "lang": ["en"],
            "concept_id": ["x"],
            "layer": [0],
            "unit": [1],
            "ap": [0.5],
            "rank": [1],
            "median_pos_act": [0.1],
        }
    )
    return CheckpointRows(name, 1, None, "local", None, {"neuron_ap": ap}, source_fingerprint=fingerprint)


def small_store(path: Path, *checkpoints: str) -> Path:
    with StoreWriter(path) as writer:
        _ensure(writer)
        for name in checkpoints:
            writer.write_checkpoint("r1", _checkpoint(name, f"sha256:{name}"))
    return path


def _edit(path: Path, *sql: str) -> Path:
    con = duckdb.connect(str(path))
    for statement in sql:
        con.execute(statement)
    con.close()
    return path


# --- every hostile file gives its own StoreError subclass -----------------------------------------------------


def _sqlite(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (run_id TEXT)")
    con.commit()
    con.close()


def _parquet(path: Path) -> None:
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 1 AS run_id) TO '{path}' (FORMAT parquet)")
    con.close()


def _with_extension(path: Path) -> None:
    """A crossling store whose file references a function of an extension (spatial) that is not installed."""
    small_store(path, "c1")
    _edit(path, "CREATE TABLE geo (wkt VARCHAR DEFAULT st_astext(NULL))")


HOSTILE: dict[str, tuple] = {
    "missing": (lambda p: None, StoreMissingError, "no such store"),
    "directory": (lambda p: p.mkdir(), StoreMissingError, "is a directory"),
    "empty": (lambda p: p.write_bytes(b""), NotDuckDBError, "an empty file"),
    "sqlite": (_sqlite, NotDuckDBError, "a SQLite database"),
    "parquet": (_parquet, NotDuckDBError, "a Parquet file"),
    "csv": (lambda p: p.write_text("run_id;model\nr1;m\n" * 50), NotDuckDBError, "a text file"),
    "binary-junk": (lambda p: p.write_bytes(bytes(range(256)) * 64), NotDuckDBError, "not a readable DuckDB file"),
    "plain-duckdb": (lambda p: _edit(p, "CREATE TABLE t (x INT)"), NotCrosslingStoreError, "no meta table"),
    "meta-without-version": (
        lambda p: _edit(small_store(p), "DELETE FROM meta WHERE key = 'schema_version'"),
        NotCrosslingStoreError,
        "its meta table has no schema_version row",
    ),
    "version-not-a-number": (
        lambda p: _edit(small_store(p), "UPDATE meta SET value = 'x' WHERE key = 'schema_version'"),
        NotCrosslingStoreError,
        "unreadable schema version",
    ),
    "other-version": (
        lambda p: _edit(small_store(p), "UPDATE meta SET value = '99' WHERE key = 'schema_version'"),
        SchemaVersionError,
        "schema version 99",
    ),
    "view": (lambda p: _edit(small_store(p), "CREATE VIEW v AS SELECT 1"), UnsafeStoreError, "view 'v'"),
    "macro": (lambda p: _edit(small_store(p), "CREATE MACRO m(x) AS x + 1"), UnsafeStoreError, "macro 'm'"),
    "extension-reference": (_with_extension, UnsafeStoreError, "computed column geo.wkt"),
    "no-runs-table": (lambda p: _edit(small_store(p), "DROP TABLE runs"), HalfWrittenStoreError, "no table runs"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_each_hostile_file_gives_its_subclass(case, tmp_path):
    make, error, says = HOSTILE[case]
    path = tmp_path / "store.duckdb"
    make(path)
    with pytest.raises(error) as info:
        open_readonly(path).close()
    message = str(info.value)
    assert says in message and str(path) in message and "\n" not in message
    if case == "meta-without-version":
        assert "no meta table" not in message
    if case == "no-runs-table":
        assert "truncated or corrupt" not in message


def test_a_store_cut_short_is_half_written_or_not_duckdb(tmp_path):
    path = small_store(tmp_path / "s.duckdb", "c1")
    data = path.read_bytes()
    kinds = set()
    for fraction in (0.001, 0.3, 0.6, 0.9):
        cut = tmp_path / f"cut-{fraction}.duckdb"
        cut.write_bytes(data[: int(len(data) * fraction)])
        try:
            con = open_readonly(cut)
            try:
                verify_readable(con, cut)
            finally:
                con.close()
        except (NotDuckDBError, HalfWrittenStoreError) as exc:
            kinds.add(type(exc))
        else:
            pytest.fail(f"a store cut at {fraction} opened")
    assert NotDuckDBError in kinds


def test_a_second_writer_gets_store_locked_error(tmp_path):
    path = tmp_path / "s.duckdb"
    with StoreWriter(path), pytest.raises(StoreLockedError):
        StoreWriter(path).__enter__()


def test_info_on_damaged_provenance_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from precompute.cli import app

    path = _edit(small_store(tmp_path / "s.duckdb", "c1"), "UPDATE runs SET packages_json = '{not json'")
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "runs.packages_json" in errors[0] and "not valid JSON" in errors[0] and str(path) in errors[0]
    assert "JSONDecodeError" not in result.output


def test_info_prints_every_tables_rows_and_size(tmp_path):
    from typer.testing import CliRunner

    from precompute.cli import app

    path = small_store(tmp_path / "s.duckdb", "c1", "c2")
    result = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tables"]["neuron_ap"] == 2 and data["tables"]["checkpoints"] == 2
    assert set(data["table_bytes"]) == set(data["tables"])
    assert all(isinstance(n, int) and n >= 0 for n in data["table_bytes"].values())
    assert data["table_bytes"]["neuron_ap"] > 0  # it holds rows, so it has blocks in the file
    assert sum(data["table_bytes"].values()) <= data["file_bytes"] == path.stat().st_size
    human = CliRunner().invoke(app, ["info", str(path)])
    assert human.exit_code == 0 and "on disk" in human.stdout


# --- no network, no extensions, ever, on open ---------------------------------------------------------------


def test_every_connection_is_locked_down(tmp_path):
    path = small_store(tmp_path / "s.duckdb", "c1")
    cons = [connect(path), connect_attached({"s": path}, use="s")]
    with StoreWriter(tmp_path / "w.duckdb") as writer, writer.transaction(attach={"src": path}) as con:
        cons.append(con)
        for con in cons:
            settings = con.execute(
                "SELECT current_setting('autoinstall_known_extensions'), current_setting('autoload_known_extensions'), "
                "current_setting('enable_external_access')"
            ).fetchone()
            assert settings == (False, False, False)
            for sql in (
                "INSTALL sqlite",
                "LOAD sqlite",
                "SET enable_external_access = true",
                f"SELECT * FROM read_csv('{tmp_path / 'x.csv'}')",
            ):
                with pytest.raises(duckdb.Error):
                    con.execute(sql)
    for con in cons[:2]:
        con.close()


def test_only_the_store_package_connects_to_duckdb():
    """Every connection the project makes goes through precompute.store.open (its lockdown settings)."""
    offenders = []
    for package in ("precompute", "explorer"):
        for source in (REPO / package).rglob("*.py"):
            if source == REPO / "precompute" / "store" / "open.py":
                continue
            if "duckdb.connect(" in source.read_text(encoding="utf-8").replace("``duckdb.connect(path)``", ""):
                offenders.append(str(source.relative_to(REPO)))
    assert offenders == []


_PROBE = textwrap.dedent(
    """
    import sys
    from precompute.store import StoreError, open_readonly
    from explorer.queries import StoreConnection
    for path in sys.argv[1:]:
        for opener in (open_readonly, StoreConnection):
            try:
                opener(path).close()
            except StoreError as exc:
                print(type(exc).__name__, str(exc).replace(chr(10), ' '))
            else:
                print('OPENED', path)
    """
)


def test_opening_foreign_files_touches_no_network_and_no_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    files = tmp_path / "files"
    files.mkdir()
    makers = {"a.sqlite": _sqlite, "a.parquet": _parquet, "a.csv": HOSTILE["csv"][0], "ext.duckdb": _with_extension}
    paths = []
    for name, make in makers.items():
        make(files / name)
        paths.append(str(files / name))
    env = {k: v for k, v in os.environ.items() if k not in ("CROSSLING_DEBUG", "XDG_CACHE_HOME", "DUCKDB_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")

    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, *paths],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert len(lines) == 2 * len(paths), probe.stdout
    expected = {
        "a.sqlite": "NotDuckDBError",
        "a.parquet": "NotDuckDBError",
        "a.csv": "NotDuckDBError",
        "ext.duckdb": "UnsafeStoreError",
    }
    for i, name in enumerate(makers):
        for line in lines[2 * i : 2 * i + 2]:
            assert line.startswith(expected[name] + " ") and name in line, line
            assert "INSTALL" not in line and "extension" not in line.lower(), line

    for path in paths:
        info = subprocess.run(
            [sys.executable, "-m", "precompute.cli", "info", path],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert info.returncode == 1 and "Traceback" not in info.stderr, info.stderr
        errors = [line for line in info.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and Path(path).name in errors[0], info.stderr
        assert "INSTALL" not in errors[0] and "extension" not in errors[0].lower()
    assert list(home.rglob("*")) == []  # no ~/.duckdb/extensions, nothing at all
    assert sorted(p.name for p in files.iterdir()) == sorted(makers)  # nothing written next to them either


# --- symlinks and locks -----------------------------------------------------------------------------------


def test_a_symlinked_store_is_followed_not_replaced(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = small_store(real_dir / "store.duckdb", "c1")
    link = tmp_path / "link.duckdb"
    link.symlink_to(real)
    with StoreWriter(link) as writer:
        assert writer.lock_path == real_dir / "store.duckdb.lock"
        writer.write_checkpoint("r1", _checkpoint("c2"))
    assert link.is_symlink() and link.resolve() == real
    assert set(read_checkpoint_fingerprints(real, "r1")) == {"c1", "c2"}
    assert not list(tmp_path.glob("link.duckdb*.tmp-*")) and not (tmp_path / "link.duckdb.lock").exists()

    dangling = tmp_path / "new.duckdb"
    dangling.symlink_to(real_dir / "created.duckdb")
    small_store(dangling, "c1")
    assert dangling.is_symlink() and (real_dir / "created.duckdb").is_file()


def test_two_names_of_one_store_share_one_lock(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = small_store(real_dir / "store.duckdb", "c1")
    link = tmp_path / "link.duckdb"
    link.symlink_to(real)
    dir_link = tmp_path / "dirlink"
    dir_link.symlink_to(real_dir, target_is_directory=True)
    for first, second in ((link, real), (real, link), (dir_link / "store.duckdb", link)):
        with StoreWriter(first):
            assert writer_active(second) and writer_active(first)
            with pytest.raises(StoreLockedError, match="another precompute is writing"):
                StoreWriter(second).__enter__()
        assert not writer_active(second)


# --- one "same run" rule for the writer and the merge --------------------------------------------------------


def test_the_writer_names_what_differs_as_the_merge_does(tmp_path):
    from precompute.store.merge import merge_stores

    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    for path, top_k in ((a, 5), (b, 6)):
        with StoreWriter(path) as writer:
            _ensure(writer, f"r{top_k}", {"experts": {"top_k": top_k}, "model": {"device": "cpu"}})
    with StoreWriter(a) as writer, pytest.raises(StoreError) as refused:
        _ensure(writer, "r6", {"experts": {"top_k": 6}, "model": {"device": "cuda"}})
    assert "holds another run (r5)" in str(refused.value)
    assert "different configs at experts.top_k (5 vs 6)" in str(refused.value)
    with pytest.raises(StoreError) as merged:
        merge_stores([a, b], tmp_path / "all.duckdb")
    assert "different configs at experts.top_k (6 vs 5)" in str(merged.value)  # other vs reference


def test_a_device_only_difference_is_one_run(tmp_path):
    from precompute.store.identity import config_fingerprint, run_difference

    cpu = {"experts": {"top_k": 5}, "model": {"device": "cpu"}, "checkpoints": [{"name": "a"}]}
    gpu = {"experts": {"top_k": 5}, "model": {"device": "cuda"}, "checkpoints": [{"name": "b"}]}
    assert config_fingerprint(cpu) == config_fingerprint(gpu)
    assert run_difference(_run_row("r", cpu), _run_row("r", gpu)) is None
    damaged = dict(_run_row("r", cpu), config_json="{oops")
    with pytest.raises(HalfWrittenStoreError, match="runs.config_json is not valid JSON"):
        run_difference(damaged, _run_row("r", gpu), where_a="x.duckdb")


# --- checkpoint content fingerprints -----------------------------------------------------------------------


def _tiny(folder: Path, seed: int) -> Path:
    from tests.support.tiny_models import save_tiny_model

    return save_tiny_model("gpt2", folder, seed=seed)


def test_local_fingerprint_follows_the_weights_not_the_folder(tmp_path):
    a = _tiny(tmp_path / "a", seed=0)
    b = _tiny(tmp_path / "b", seed=1)  # same architecture: same headers and sizes, other weights
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    fa, fb = local_fingerprint(a), local_fingerprint(b)
    assert fa.startswith("sha256:") and fa == local_fingerprint(copy) and fa != fb
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte in the middle of the tensors
    weights.write_bytes(bytes(data))
    assert local_fingerprint(copy) != fa
    assert local_fingerprint(tmp_path / "nowhere") is None


def test_hub_fingerprints_and_when_they_count():
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert hub_fingerprint("org/model", sha) == f"commit:{sha}"
    assert hub_fingerprint("not a hub id !", "global_step1000") == "revision:global_step1000"
    assert fingerprints_differ("sha256:aa", "sha256:bb")
    assert not fingerprints_differ("sha256:aa", "sha256:aa")
    assert not fingerprints_differ(None, "sha256:bb")  # a store written before fingerprints existed
    assert not fingerprints_differ("revision:main", "revision:main")
    assert not fingerprints_differ("revision:main", f"commit:{sha}")  # commit unknown at one of the two times
    assert fingerprints_differ(f"commit:{sha}", "commit:" + "f" * 40)


def test_a_rerun_on_changed_weights_stops_and_force_recomputes(tmp_path):
    """The tiny trained model: a store of its last checkpoint; then that folder holds other weights."""
    from typer.testing import CliRunner

    from precompute.cli import app
    from tests.support.reliability import checkpoints, config_text

    runner = CliRunner()
    first, last = checkpoints()[0], checkpoints()[-1]
    folder = tmp_path / "ckpt"
    shutil.copytree(last.path, folder)
    config = tmp_path / "run.toml"
    config.write_text(config_text(last_checkpoint_only=True).replace(str(last.path), str(folder)), encoding="utf-8")
    store = tmp_path / "s.duckdb"
    assert runner.invoke(app, ["run", str(config), "--out", str(store)]).exit_code == 0
    (run_id,) = [r["run_id"] for r in read_runs(store)]
    recorded = read_checkpoint_fingerprints(store, run_id)
    assert recorded == {last.name: local_fingerprint(folder)}

    again = runner.invoke(app, ["run", str(config), "--out", str(store)])  # unchanged: nothing to do
    assert again.exit_code == 0 and "already done" in again.stderr

    shutil.copyfile(Path(first.path) / "model.safetensors", folder / "model.safetensors")  # other weights
    before = store.read_bytes()
    changed = runner.invoke(app, ["run", str(config), "--out", str(store)])
    assert changed.exit_code == 1 and "Traceback" not in changed.output
    errors = [line for line in changed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, changed.stderr
    assert repr(last.name) in errors[0] and "weights changed" in errors[0] and "--force" in errors[0]
    assert store.read_bytes() == before  # the old results stay as they were, and nothing is claimed about them

    forced = runner.invoke(app, ["run", str(config), "--out", str(store), "--force"])
    assert forced.exit_code == 0, forced.output
    assert read_checkpoint_fingerprints(store, run_id) == {last.name: local_fingerprint(folder)} != recorded
