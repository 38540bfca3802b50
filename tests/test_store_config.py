"""Run-config validation and the store writer: round trip, replace, locking, schema checks."""

from pathlib import Path

import duckdb
import polars as pl
import pytest

from precompute.config import ConfigError, config_from_dict, load_config
from precompute.store import (
    SCHEMA_VERSION,
    CheckpointRows,
    StoreError,
    StoreLockedError,
    StoreWriter,
    open_readonly,
    table_counts,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
[model]
id = "ckpts"
[[checkpoints]]
name = "a"
path = "ckpts/a"
step = 10
[experts]
top_k = 5
"""


def test_config_loads_and_resolves_paths(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.experts.top_k == 5
    assert cfg.resolve(cfg.checkpoints[0].path) == tmp_path.resolve() / "ckpts/a"
    assert cfg.probes.seeds == [0, 1, 2]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model\nid=1", "malformed TOML"),
        (GOOD + "\n[experts2]\nx = 1\n", "unknown key 'experts2'"),
        (GOOD.replace("top_k = 5", "top_k = 'five'"), "experts.top_k must be int"),
        (GOOD.replace("top_k = 5", "topk = 5"), "unknown key 'experts.topk'"),
        (GOOD.replace("step = 10", "step = true"), "must be int, got bool"),
        (GOOD.replace('id = "ckpts"', 'id = ""'), "[model] id is required"),
        (GOOD + '\n[[checkpoints]]\nname = "a"\npath = "x"\n', "duplicate names ['a']"),
        (GOOD + '\n[[checkpoints]]\nname = "b"\n', "needs a path or a revision"),
        (GOOD.replace("top_k = 5", "top_k = 0"), "top_k must be >= 1"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_fingerprint_ignores_checkpoints_and_device():
    base = {"model": {"id": "m"}, "checkpoints": [{"name": "a", "path": "a"}]}
    a = config_from_dict(base)
    b = config_from_dict({"model": {"id": "m", "device": "cuda"}, "checkpoints": []})
    c = config_from_dict({"model": {"id": "m"}, "experts": {"top_k": 7}})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def _ensure(writer: StoreWriter, run_id: str = "r1") -> None:
    writer.ensure_run(
        run={
            "run_id": run_id,
            "model_id": "m",
            "model_card": "",
            "config_json": "{}",
            "concept_set_sha256": "abc",
            "packages_json": "{}",
            "device": "cpu",
            "dtype": "float32",
            "started_at": None,
            "finished_at": None,
        },
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


def _rows(name: str, ap: float) -> CheckpointRows:
    return CheckpointRows(
        checkpoint=name,
        step=int(name[1:]),
        revision=None,
        source="dir",
        tokens_seen=100,
        tables={
            "neuron_ap": pl.DataFrame(
                {
                    "lang": ["de"],
                    "concept_id": ["x"],
                    "layer": [0],
                    "unit": [1],
                    "ap": [ap],
                    "rank": [1],
                    "median_pos_act": [0.5],
                }
            )
        },
    )


def test_store_round_trip_replace_and_resume(tmp_path):
    store = tmp_path / "s.duckdb"
    with StoreWriter(store) as writer:
        _ensure(writer)
        _ensure(writer)  # idempotent
        writer.write_checkpoint("r1", _rows("c1", 0.7))
        writer.write_checkpoint("r1", _rows("c2", 0.8))
        writer.write_checkpoint("r1", _rows("c2", 0.9))  # replaced, not duplicated
        assert writer.finished_checkpoints("r1") == {"c1", "c2"}
    con = open_readonly(store)
    counts = table_counts(con)
    assert counts["checkpoints"] == 2 and counts["neuron_ap"] == 2 and counts["sentences"] == 2
    assert con.execute("SELECT ap FROM neuron_ap WHERE checkpoint = 'c2'").fetchone()[0] == 0.9
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()
    assert not list(tmp_path.glob("*.tmp-*")) and not (tmp_path / "s.duckdb.lock").exists()


def test_failed_transaction_leaves_published_store_untouched(tmp_path):
    store = tmp_path / "s.duckdb"
    with StoreWriter(store) as writer:
        _ensure(writer)
        writer.write_checkpoint("r1", _rows("c1", 0.7))
    before = store.read_bytes()
    bad = _rows("c2", 0.5)
    bad.tables["neuron_ap"] = bad.tables["neuron_ap"].with_columns(pl.lit(1).alias("bogus"))
    with StoreWriter(store) as writer, pytest.raises(StoreError, match="unknown columns"):
        writer.write_checkpoint("r1", bad)
    assert store.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp-*"))


def test_second_writer_is_refused(tmp_path):
    store = tmp_path / "s.duckdb"
    with StoreWriter(store):
        with pytest.raises(StoreLockedError, match="another precompute is writing"):
            StoreWriter(store).__enter__()


def test_store_of_another_run_is_refused(tmp_path):
    store = tmp_path / "s.duckdb"
    with StoreWriter(store) as writer:
        _ensure(writer, "r1")
        with pytest.raises(StoreError, match="holds another run"):
            _ensure(writer, "r2")


def test_open_readonly_errors(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        open_readonly(tmp_path / "missing.duckdb")
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"this is not duckdb" * 100)
    with pytest.raises(StoreError, match="not a readable DuckDB file"):
        open_readonly(junk)
    plain = tmp_path / "plain.duckdb"
    duckdb.connect(str(plain)).execute("CREATE TABLE t (x INT)").close()
    with pytest.raises(StoreError, match="not a crossling store"):
        open_readonly(plain)
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    con.close()
    with pytest.raises(StoreError, match="schema version 999"):
        open_readonly(other)


def _settings_classes():
    import dataclasses

    from precompute.config import RunConfig

    seen, todo = [], [RunConfig]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        for f in dataclasses.fields(cls):
            for sub in (dataclasses.MISSING if f.default_factory is dataclasses.MISSING else f.default_factory(),):
                item = sub[0] if isinstance(sub, list) and sub else sub
                if dataclasses.is_dataclass(item) and type(item) not in seen + todo:
                    todo.append(type(item))
    return seen


def test_every_numeric_setting_declares_its_range():
    """Ranges stand next to the settings (issue 10.10): a number without a declared bound is a gap."""
    import dataclasses
    import typing

    from precompute.config import CheckpointSpec, Rule

    classes = _settings_classes() + [CheckpointSpec]
    assert len(classes) >= 10
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            args = set(typing.get_args(tp)) or {tp}
            if args & {int, float} or (typing.get_origin(tp) is list and args & {int, float}):
                rule = f.metadata.get("rule")
                assert isinstance(rule, Rule), f"{cls.__name__}.{f.name} declares no rule"
                assert any(b is not None for b in (rule.ge, rule.gt, rule.le, rule.lt)), f"{cls.__name__}.{f.name}"


def test_no_hand_written_validation_left():
    """One generic checker reads the declarations; RunConfig.validate only delegates to it."""
    import inspect

    from precompute.config import RunConfig

    source = inspect.getsource(RunConfig.validate)
    assert "check_settings" in source and source.count("\n") < 6
    assert not hasattr(RunConfig, "_validate_checkpoint_set")


def test_options_and_config_values_are_checked_by_the_same_rules(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    cfg.model.dtype = "float8"
    cfg.overridden["model.dtype"] = "--dtype 'float8'"
    with pytest.raises(ConfigError, match=r"^--dtype 'float8': must be one of 'auto'"):
        cfg.validate()
    cfg.overridden.clear()
    with pytest.raises(ConfigError, match=r"run\.toml: \[model\] dtype must be one of"):
        cfg.validate()


def test_config_path_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(tmp_path)
