"""Checkpoint parts: a checkpoint is published as its own part file, so its cost does not grow with
the store; readers see the store file plus its live parts; a writer that ends normally packs them into one file.
Every guarantee of the whole-file publish still holds: readers see whole checkpoints only, a killed writer leaves a
readable store, the next writer cleans up, and a rewritten checkpoint replaces its rows exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from explorer import queries as Q
from explorer.store_context import store_version
from precompute.cli import app
from precompute.store import (
    CheckpointRows,
    HalfWrittenStoreError,
    SchemaVersionError,
    StoreWriter,
    UnsafeStoreError,
    open_readonly,
    open_snapshot,
    parts,
    store_info,
)
from precompute.store.merge import MergeError, merge_stores
from tests.store.test_safety import _ensure

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _rows(name: str, ap: float) -> CheckpointRows:
    frame = pl.DataFrame(
        {
            "lang": ["en", "de"],
            "concept_id": ["x", "x"],
            "layer": [0, 0],
            "unit": [1, 2],
            "ap": [ap, ap / 2],
            "rank": [1, 2],
            "median_pos_act": [0.1, 0.2],
        }
    )
    return CheckpointRows(name, int(name[1:]), None, "local", None, {"neuron_ap": frame}, source_fingerprint=name)


def _neuron_ap(path: Path) -> list[tuple]:
    con = open_readonly(path)
    try:
        return con.execute("SELECT checkpoint, lang, unit, ap FROM neuron_ap ORDER BY ALL").fetchall()
    finally:
        con.close()


def _checkpoints(path: Path) -> list[str]:
    con = open_readonly(path)
    try:
        return [r[0] for r in con.execute("SELECT checkpoint FROM checkpoints ORDER BY step").fetchall()]
    finally:
        con.close()


def _listing(store: Path) -> list[str]:
    folder = parts.parts_dir(store)
    return sorted(os.listdir(folder)) if folder.is_dir() else []


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with its run and checkpoint c1, packed (one file)."""
    path = tmp_path / "s.duckdb"
    with StoreWriter(path) as writer:
        _ensure(writer)
        writer.write_checkpoint("r1", _rows("c1", 0.9))
    assert _listing(path) == []
    return path


def test_a_checkpoint_is_a_part_and_the_store_file_is_untouched_until_the_pack(store):
    before = store.read_bytes()
    with StoreWriter(store) as writer:
        writer.write_checkpoint("r1", _rows("c2", 0.8))
        assert store.read_bytes() == before  # the publish did not copy or change the store file
        assert _listing(store) == ["000001.duckdb"]
        # Every reader sees the new checkpoint: the CLI's reads, the notebook API's and the explorer's.
        assert _checkpoints(store) == ["c1", "c2"]
        assert store_info(store)["unpacked_parts"] == 1
        con = Q.StoreConnection(store)
        assert Q.checkpoints(con, "r1")["checkpoint"].to_list() == ["c1", "c2"]
        assert Q.missing_tables(con) == []
        con.close()
        writer.write_checkpoint("r1", _rows("c3", 0.7))
        assert _listing(store) == ["000001.duckdb", "000002.duckdb"]
    # The writer ended normally: the parts are packed, the store is one file with every row once.
    assert _listing(store) == [] and not parts.parts_dir(store).exists()
    assert _checkpoints(store) == ["c1", "c2", "c3"]
    assert len(_neuron_ap(store)) == 6
    assert store_info(store)["unpacked_parts"] == 0


def test_the_explorers_stamp_changes_with_each_part(store):
    stamps = [store_version(store)]
    with StoreWriter(store) as writer:
        writer.write_checkpoint("r1", _rows("c2", 0.8))
        stamps.append(store_version(store))
        writer.write_checkpoint("r1", _rows("c3", 0.7))
        stamps.append(store_version(store))
    stamps.append(store_version(store))
    assert len(set(stamps)) == 4


def test_a_rewritten_checkpoint_replaces_its_rows_once_in_parts_and_after_the_pack(store):
    with StoreWriter(store) as writer:
        writer.write_checkpoint("r1", _rows("c1", 0.5))  # --force: c1 again, other values
        assert _neuron_ap(store) == [("c1", "de", 2, 0.25), ("c1", "en", 1, 0.5)]
        writer.write_checkpoint("r1", _rows("c1", 0.4))  # and again: the newest part wins
        assert _neuron_ap(store) == [("c1", "de", 2, 0.2), ("c1", "en", 1, 0.4)]
        assert _checkpoints(store) == ["c1"]
    assert _neuron_ap(store) == [("c1", "de", 2, 0.2), ("c1", "en", 1, 0.4)]
    assert _checkpoints(store) == ["c1"]


def test_a_writer_that_fails_leaves_its_parts_readable_and_pack_folds_them(store, tmp_path):
    with pytest.raises(RuntimeError), StoreWriter(store) as writer:
        writer.write_checkpoint("r1", _rows("c2", 0.8))
        raise RuntimeError("the next checkpoint failed")
    assert _listing(store) == ["000001.duckdb"]
    assert _checkpoints(store) == ["c1", "c2"]
    info = runner.invoke(app, ["info", str(store)])
    assert info.exit_code == 0, info.output
    assert "1 checkpoint(s) are part files beside the store" in " ".join(info.stdout.split())
    assert "precompute pack" in info.stdout
    # Shards must be one file before a merge (the merge reads the files, not the parts).
    with pytest.raises(MergeError, match="precompute pack"):
        merge_stores([store], tmp_path / "merged.duckdb")
    result = runner.invoke(app, ["pack", str(store)])
    assert result.exit_code == 0, result.output
    assert "1 checkpoint part(s) packed" in result.stdout
    assert _listing(store) == [] and _checkpoints(store) == ["c1", "c2"]
    again = runner.invoke(app, ["pack", str(store)])
    assert again.exit_code == 0 and "no checkpoint parts to pack" in again.stdout


def test_a_snapshot_keeps_reading_what_it_opened_across_a_pack(store):
    with StoreWriter(store) as writer:
        writer.write_checkpoint("r1", _rows("c2", 0.8))
        held = Q.StoreConnection(store)
    # Packed and deleted meanwhile: the open snapshot still reads its files (they stay open).
    assert _listing(store) == []
    assert Q.checkpoints(held, "r1")["checkpoint"].to_list() == ["c1", "c2"]
    held.close()


def test_a_pack_killed_before_it_deleted_the_parts_is_read_once_and_cleaned_by_the_next_writer(store):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from precompute.store import StoreWriter
        from tests.store.test_parts import _rows
        with StoreWriter({str(store)!r}) as writer:
            writer.write_checkpoint("r1", _rows("c2", 0.8))
            writer.write_checkpoint("r1", _rows("c2", 0.6))
    """)
    env = {**os.environ, "CROSSLING_FAULT": "kill@store.packed"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == -9, proc.stderr
    # The store file holds both checkpoints; the two parts it folded in are still there, and are not read again.
    assert _listing(store) == ["000001.duckdb", "000002.duckdb"]
    assert _neuron_ap(store) == [
        ("c1", "de", 2, 0.45),
        ("c1", "en", 1, 0.9),
        ("c2", "de", 2, 0.3),
        ("c2", "en", 1, 0.6),
    ]
    con = open_readonly(store)
    assert con.execute("SELECT count(*) FROM checkpoints").fetchall() == [(2,)]
    con.close()
    with StoreWriter(store):
        assert _listing(store) == []  # the next writer removed them: they were packed
    assert _checkpoints(store) == ["c1", "c2"]


def test_a_snapshot_lists_again_when_a_pack_deletes_a_part_it_listed(store, monkeypatch):
    with pytest.raises(RuntimeError), StoreWriter(store) as writer:
        writer.write_checkpoint("r1", _rows("c2", 0.8))
        raise RuntimeError("leave the part")
    real = parts.listed_parts
    calls = []

    def listed_then_gone(target):
        calls.append(target)
        found = real(target)
        if len(calls) == 1:  # the first listing names a part a pack deletes before it is attached
            return {**found, 7: parts.part_path(target, 7)}
        return found

    monkeypatch.setattr(parts, "listed_parts", listed_then_gone)
    con = open_snapshot(store)
    assert [r[0] for r in con.execute("SELECT checkpoint FROM checkpoints ORDER BY 1").fetchall()] == ["c1", "c2"]
    con.close()
    assert len(calls) == 2


def _plant_part(store: Path, sql: list[str]) -> None:
    folder = parts.parts_dir(store)
    folder.mkdir(exist_ok=True)
    con = duckdb.connect(str(parts.part_path(store, 1)))
    for statement in sql:
        con.execute(statement)
    con.close()


@pytest.mark.parametrize(
    "sql, error",
    [
        (
            [
                "CREATE TABLE meta (key VARCHAR, value VARCHAR)",
                "INSERT INTO meta VALUES ('schema_version', '1')",
                "CREATE VIEW checkpoints AS SELECT 1 AS x",
            ],
            UnsafeStoreError,
        ),
        (
            ["CREATE TABLE meta (key VARCHAR, value VARCHAR)", "INSERT INTO meta VALUES ('schema_version', '99')"],
            SchemaVersionError,
        ),
    ],
)
def test_a_foreign_part_is_refused_with_its_reason(store, sql, error):
    _plant_part(store, sql)
    with pytest.raises(error, match="checkpoint part 000001.duckdb"):
        open_readonly(store)
    with pytest.raises(error):
        Q.StoreConnection(store)


def test_a_damaged_part_is_half_written(store):
    parts.parts_dir(store).mkdir()
    parts.part_path(store, 1).write_bytes(store.read_bytes()[:5000])
    with pytest.raises(HalfWrittenStoreError, match="checkpoint part 000001.duckdb"):
        open_readonly(store)
