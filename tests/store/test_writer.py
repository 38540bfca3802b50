"""The store writer: round trip, replace and resume, a failed transaction, locking, another run, schema checks."""

import duckdb
import polars as pl
import pytest

from precompute.store import (
    SCHEMA_VERSION,
    CheckpointRows,
    StoreError,
    StoreLockedError,
    StoreWriter,
    open_readonly,
    table_counts,
)


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
