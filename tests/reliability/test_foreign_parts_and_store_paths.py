"""Hostile checkpoint parts and store paths: stale and foreign parts, storage versions, FIFOs, odd path names.

A part must prove that it belongs to the store file beside it (store id, generation and epoch of the file it
was written on, its run and that run's config): a dead part (older than the file) is never read and the next
writer deletes it; a foreign one (another store, another copy, a file newer than its store, another run or
config) is refused by readers and by ``pack`` in one line naming it, and is never read, packed or deleted. A pack
never follows a symlinked parts folder. Every file is written in the oldest DuckDB storage version the schema
needs and opens in an old DuckDB. Paths that are FIFOs or hold quotes are refused or opened, never hung on or
mis-parsed. The contract of every refusal: one ``error:`` line naming the input, no traceback, the store and its
parts byte-identical.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest

from explorer import queries as Q
from explorer.api import open_store
from precompute.store import (
    StoreError,
    StoreMissingError,
    StoreWriter,
    open_readonly,
    open_snapshot,
    parts,
    store_info,
)
from precompute.store.errors import ForeignPartError
from precompute.store.merge import merge_stores
from precompute.store.open import storage_number
from precompute.store.schema import OPENS_IN_DUCKDB, STORAGE_NUMBER, STORAGE_VERSION
from tests.store.test_parts import _checkpoints, _listing, _neuron_ap, _rows
from tests.store.test_safety import _ensure
from tests.support.reliability import assert_refused, config_text, leftovers, runner

REPO = Path(__file__).resolve().parents[2]


def _store(path: Path, run_id: str = "r1", config: dict | None = None) -> Path:
    """A store with its run and checkpoint c1, packed (one file)."""
    with StoreWriter(path) as writer:
        _ensure(writer, run_id, config)
        writer.write_checkpoint(run_id, _rows("c1", 0.9))
    return path


def _leave_part(path: Path, name: str, ap: float, run_id: str = "r1") -> Path:
    """Publish checkpoint ``name`` as a part and stop before the pack (a writer that failed)."""
    with contextlib.suppress(RuntimeError), StoreWriter(path) as writer:
        writer.write_checkpoint(run_id, _rows(name, ap))
        raise RuntimeError("stop before the pack")
    return max(parts.listed_parts(path).values())


def _state(path: Path) -> tuple:
    """The store file's bytes and every part's name and bytes (what a refusal must leave as it was)."""
    folder = parts.parts_dir(path)
    listed = (
        sorted((p.name, p.read_bytes() if p.is_file() else p.stat().st_mode) for p in folder.iterdir())
        if folder.is_dir()
        else []
    )
    return path.read_bytes(), listed


def _edit(path: Path, *sql: str) -> None:
    con = duckdb.connect(str(path))
    for statement in sql:
        con.execute(statement)
    con.close()


def _meta(path: Path) -> dict[str, str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()


def _refused_everywhere(store: Path, says: str, part_name: str) -> None:
    """info, report and pack refuse in one line naming the part; nothing is read, packed or deleted."""
    before = _state(store)
    for command in (["info", store], ["report", store], ["pack", store]):
        line = assert_refused(command, names=store, says=says)
        assert part_name in line, line
    with pytest.raises(ForeignPartError, match=part_name):
        open_readonly(store)
    with pytest.raises(ForeignPartError, match=part_name):
        Q.StoreConnection(store)
    with pytest.raises(ForeignPartError, match=part_name):
        open_store(store)
    with pytest.raises(ForeignPartError, match=part_name), StoreWriter(store):
        pass
    assert _state(store) == before


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return _store(tmp_path / "s.duckdb")


# --- stale and foreign parts ----------------------------------------------------------------------------


def test_every_write_stamps_the_file_and_every_part_with_the_files_identity(store):
    first = _meta(store)
    assert {"store_id", "store_generation", "store_epoch"} <= set(first)
    part = _leave_part(store, "c2", 0.8)
    meta = _meta(part)
    assert {k: meta[k] for k in ("store_id", "store_generation", "store_epoch")} == {
        k: first[k] for k in ("store_id", "store_generation", "store_epoch")
    }
    assert meta["run_id"] == "r1" and len(meta["run_config_sha256"]) == 16
    runner.invoke(__import__("precompute.cli", fromlist=["app"]).app, ["pack", str(store)])
    after = _meta(store)
    assert after["store_id"] == first["store_id"]
    assert int(after["store_generation"]) == int(first["store_generation"]) + 1
    assert after["store_epoch"] != first["store_epoch"]


def test_an_updated_file_copied_over_an_old_one_ignores_the_old_parts_and_pack_keeps_the_files_rows(store, tmp_path):
    # The colleague's newer copy: the same store, c2 computed again (other values) and packed.
    newer = tmp_path / "elsewhere" / "s.duckdb"
    newer.parent.mkdir()
    shutil.copyfile(store, newer)
    with StoreWriter(newer) as writer:
        writer.write_checkpoint("r1", _rows("c2", 0.5))
    # Here: a run that was stopped left c2 (0.8) as a part, then the newer file is copied over the old one.
    _leave_part(store, "c2", 0.8)
    shutil.copyfile(newer, store)
    want = [("c1", "de", 2, 0.45), ("c1", "en", 1, 0.9), ("c2", "de", 2, 0.25), ("c2", "en", 1, 0.5)]
    assert _neuron_ap(store) == want  # the file's checkpoint, not the old part's
    assert store_info(store)["unpacked_parts"] == 0
    assert Q.checkpoints(Q.StoreConnection(store), "r1")["checkpoint"].to_list() == ["c1", "c2"]
    from precompute.cli import app

    result = runner.invoke(app, ["pack", str(store)])
    assert result.exit_code == 0, result.output
    assert "no checkpoint parts to pack" in result.stdout
    assert _neuron_ap(store) == want and _listing(store) == []  # the dead part was deleted, not packed


def test_a_part_of_another_run_copied_in_under_a_new_number_is_refused(store, tmp_path):
    other = _store(tmp_path / "other.duckdb", "r2", {"experts": {"top_k": 3}})
    foreign = _leave_part(other, "c2", 0.1, run_id="r2")
    _leave_part(store, "c2", 0.8)  # a live part of our own, that must survive too
    shutil.copyfile(foreign, parts.part_path(store, 5))
    _refused_everywhere(store, "does not belong to this store file", "000005.duckdb")


def test_a_part_of_another_store_of_the_same_run_is_refused(store, tmp_path):
    twin = _store(tmp_path / "twin.duckdb")  # same run id and config, another store file
    shutil.copyfile(_leave_part(twin, "c2", 0.1), parts.parts_dir(store).mkdir() or parts.part_path(store, 3))
    _refused_everywhere(store, "belongs to another store", "000003.duckdb")


def test_parts_newer_than_a_file_replaced_by_an_older_copy_are_refused(store, tmp_path):
    old = tmp_path / "old-copy.duckdb"
    shutil.copyfile(store, old)
    with StoreWriter(store) as writer:  # the store moves on a generation
        writer.finish_run("r1")
    _leave_part(store, "c2", 0.8)
    shutil.copyfile(old, store)  # and an older copy is put back under its parts
    _refused_everywhere(store, "the file was replaced by an older copy", "000001.duckdb")


def test_a_part_of_a_diverged_copy_of_the_same_generation_is_refused(store, tmp_path):
    copy = tmp_path / "copy.duckdb"
    shutil.copyfile(store, copy)
    for path in (store, copy):  # both move on one generation, each with its own epoch
        with StoreWriter(path) as writer:
            writer.finish_run("r1")
    shutil.copyfile(_leave_part(copy, "c2", 0.3), parts.parts_dir(store).mkdir() or parts.part_path(store, 1))
    _refused_everywhere(store, "another copy of this store file", "000001.duckdb")


@pytest.mark.parametrize(
    "sql, says",
    [
        (["UPDATE checkpoints SET run_id = 'r9'", "UPDATE neuron_ap SET run_id = 'r9'"], "run r9 is not a run"),
        (["UPDATE meta SET value = '0000000000000000' WHERE key = 'run_config_sha256'"], "another config"),
        (["UPDATE meta SET value = 'x' WHERE key = 'store_generation'"], "generation is not a number"),
        (["DELETE FROM meta WHERE key IN ('store_id', 'store_generation', 'store_epoch')"], "records no store id"),
    ],
    ids=["run", "config", "generation", "no-id"],
)
def test_a_part_whose_identity_was_edited_is_refused(store, sql, says):
    part = _leave_part(store, "c2", 0.8)
    _edit(part, *sql)
    _refused_everywhere(store, says, part.name)


def test_pack_never_follows_a_symlinked_parts_folder(store, tmp_path):
    other = _store(tmp_path / "other.duckdb")
    _leave_part(other, "c2", 0.8)
    os.symlink(parts.parts_dir(other), parts.parts_dir(store))
    before = _state(other)
    for command in (["pack", store], ["info", store]):
        assert_refused(command, names=store, says="belongs to another store")
    with pytest.raises(ForeignPartError, match="symlink"), StoreWriter(store):
        pass
    assert _state(other) == before  # the other store kept its part and still reads it
    assert _checkpoints(other) == ["c1", "c2"]


def test_pack_refuses_a_symlinked_folder_even_of_the_stores_own_parts(store, tmp_path):
    _leave_part(store, "c2", 0.8)
    moved = tmp_path / "moved-parts"
    parts.parts_dir(store).rename(moved)
    os.symlink(moved, parts.parts_dir(store))
    assert _checkpoints(store) == ["c1", "c2"]  # readers follow it: the parts prove they are this file's
    before = _state(store)
    line = assert_refused(["pack", store], names=store, says="is a symlink")
    assert "s.duckdb.parts" in line and "never deletes through a link" in line
    assert _state(store) == before and sorted(os.listdir(moved)) == ["000001.duckdb"]


def test_a_new_store_is_not_written_over_a_parts_folder_it_does_not_own(tmp_path):
    other = _store(tmp_path / "other.duckdb")
    _leave_part(other, "c2", 0.8)
    new = tmp_path / "new.duckdb"
    shutil.copytree(parts.parts_dir(other), parts.parts_dir(new))
    with pytest.raises(ForeignPartError, match="there is no store file"), StoreWriter(new) as writer:
        _ensure(writer)
    assert not new.exists() and _listing(new) == ["000001.duckdb"]


def _make_legacy(path: Path) -> None:
    """What a store and its parts were before store ids: no identity in any meta."""
    keys = "('store_id', 'store_generation', 'store_epoch', 'storage_version', 'run_id', 'run_config_sha256')"
    for file in [path, *parts.listed_parts(path).values()]:
        _edit(file, f"DELETE FROM meta WHERE key IN {keys}")


def test_a_store_written_before_store_ids_keeps_the_old_rule_and_gets_an_id_at_its_next_write(store, tmp_path):
    _leave_part(store, "c2", 0.8)
    _make_legacy(store)
    assert _checkpoints(store) == ["c1", "c2"] and store_info(store)["unpacked_parts"] == 1
    with StoreWriter(store) as writer:
        writer.write_checkpoint("r1", _rows("c3", 0.7))  # gives the file its id first (packing c2), then a part
        assert _listing(store) == ["000001.duckdb"]
        assert "store_id" in _meta(store) and _checkpoints(store) == ["c1", "c2", "c3"]
    assert _listing(store) == [] and _checkpoints(store) == ["c1", "c2", "c3"]
    assert len(_neuron_ap(store)) == 6


def test_a_legacy_part_of_another_run_is_refused_even_by_the_old_rule(store, tmp_path):
    other = _store(tmp_path / "other.duckdb", "r2")
    foreign = _leave_part(other, "c2", 0.1, run_id="r2")
    _make_legacy(store)
    parts.parts_dir(store).mkdir()
    shutil.copyfile(foreign, parts.part_path(store, 2))
    _make_legacy(store)
    _refused_everywhere(store, "run r2 is not a run of this store", "000002.duckdb")


def test_a_legacy_part_packed_by_the_pack_that_gave_the_file_its_id_is_dead(store):
    _leave_part(store, "c2", 0.8)
    _make_legacy(store)
    kept = {p.name: p.read_bytes() for p in parts.listed_parts(store).values()}
    with StoreWriter(store) as writer:
        writer.pack()  # the upgrade: packs c2 and stamps the file
    # As if that pack was killed before it deleted the part: the old part comes back, it is read once.
    parts.parts_dir(store).mkdir()
    for name, data in kept.items():
        (parts.parts_dir(store) / name).write_bytes(data)
    assert _neuron_ap(store) == [
        ("c1", "de", 2, 0.45),
        ("c1", "en", 1, 0.9),
        ("c2", "de", 2, 0.4),
        ("c2", "en", 1, 0.8),
    ]
    with StoreWriter(store):
        assert _listing(store) == []


# --- a parts folder or a part of the wrong kind ----------------------------------------------------------------


def _sqlite_part(path: Path) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    con.commit()
    con.close()


@pytest.mark.parametrize(
    "make, says",
    [
        (lambda folder, part: folder.write_text("not a folder"), "is not a folder"),
        (lambda folder, part: os.symlink(folder.parent / "gone", folder), "which does not exist"),
        (lambda folder, part: (folder.mkdir(), part.mkdir()), "is not a regular file"),
        (lambda folder, part: (folder.mkdir(), os.mkfifo(part)), "is not a regular file"),
        (lambda folder, part: (folder.mkdir(), _sqlite_part(part)), "not a readable DuckDB file (a SQLite database)"),
        (lambda folder, part: (folder.mkdir(), part.write_bytes(b"")), "not a readable DuckDB file (an empty file)"),
        (
            lambda folder, part: (folder.mkdir(), part.write_text("run_id,checkpoint\nr1,c9\n")),
            "not a readable DuckDB file (a text file",
        ),
    ],
    ids=[
        "folder-is-a-file",
        "dangling-symlink",
        "part-is-a-folder",
        "part-is-a-fifo",
        "sqlite-part",
        "empty-part",
        "text-part",
    ],
)
def test_a_parts_folder_or_part_of_the_wrong_kind_is_one_line(store, make, says):
    make(parts.parts_dir(store), parts.part_path(store, 1))
    before = _state(store) if not parts.parts_dir(store).is_symlink() else None
    for command in (["info", store], ["report", store], ["pack", store]):
        _with_watchdog(lambda c=command: assert_refused(c, names=store, says=says))
    with pytest.raises(StoreError, match=re.escape(says)):
        _with_watchdog(lambda: open_snapshot(store))
    with pytest.raises(StoreError, match=re.escape(says)), StoreWriter(store):
        pass
    if before is not None:
        assert _state(store) == before


@pytest.mark.parametrize(
    "sql, says",
    [
        (["ALTER TABLE neuron_ap DROP COLUMN ap"], "table neuron_ap has no column ap"),
        (["ALTER TABLE checkpoints DROP COLUMN completed_at"], "table checkpoints has no column completed_at"),
        (["ALTER TABLE neuron_ap ADD COLUMN evil VARCHAR"], "has a column evil that schema version 1 does not have"),
        (["ALTER TABLE neuron_ap ALTER COLUMN ap TYPE VARCHAR"], "column neuron_ap.ap is VARCHAR"),
        (["DROP TABLE checkpoints"], "no table checkpoints"),
    ],
    ids=["missing-column", "missing-key-column", "extra-column", "other-type", "no-checkpoints"],
)
def test_a_part_with_a_damaged_schema_is_the_line_the_main_file_gets(store, sql, says):
    part = _leave_part(store, "c2", 0.8)
    _edit(part, *sql)
    before = _state(store)
    for command in (["info", store], ["report", store], ["pack", store]):
        line = assert_refused(command, names=store, says=says)
        assert "checkpoint part 000001.duckdb is not a whole crossling part" in line, line
    assert _state(store) == before
    if "DROP TABLE" not in sql[0]:  # the main file with the same damage: the same words
        _edit(store, *sql)
        assert_refused(["info", store], names=store, says=says)


# --- the oldest storage version -------------------------------------------------------------------------------


def test_store_and_parts_are_written_in_the_oldest_storage_version_and_info_says_so(store):
    part = _leave_part(store, "c2", 0.8)
    for path in (store, part):
        assert storage_number(path) == STORAGE_NUMBER
        assert _meta(path)["storage_version"] == STORAGE_VERSION
    from precompute.cli import app

    result = runner.invoke(app, ["info", str(store)])
    assert result.exit_code == 0, result.output
    assert f"opens in DuckDB >= {OPENS_IN_DUCKDB}" in " ".join(result.stdout.split())
    data = json.loads(runner.invoke(app, ["info", "--json", str(store)]).stdout)
    assert data["storage_version"] == STORAGE_VERSION and data["opens_in_duckdb"] == f">= {OPENS_IN_DUCKDB}"


def test_a_store_in_a_newer_storage_version_is_rewritten_in_the_old_one_at_its_next_write(store, tmp_path):
    newer = tmp_path / "newer.duckdb"
    con = duckdb.connect()
    con.execute(f"ATTACH '{store}' AS src (READ_ONLY)")
    con.execute(f"ATTACH '{newer}' AS dst")  # the installed DuckDB's own (latest) storage version
    con.execute("COPY FROM DATABASE src TO dst")
    con.execute("DELETE FROM dst.meta WHERE key = 'storage_version'")
    con.close()
    if storage_number(newer) == STORAGE_NUMBER:
        pytest.skip("the installed DuckDB writes the old storage version by default")
    assert "storage number" in store_info(newer)["opens_in_duckdb"]
    rows = _neuron_ap(newer)
    with StoreWriter(newer) as writer:
        writer.write_checkpoint("r1", _rows("c2", 0.8))
    assert storage_number(newer) == STORAGE_NUMBER and _meta(newer)["storage_version"] == STORAGE_VERSION
    assert _neuron_ap(newer) == sorted([*rows, ("c2", "de", 2, 0.4), ("c2", "en", 1, 0.8)])


OLD_DUCKDB = "1.1.3"
_READ_IN_OLD_DUCKDB = textwrap.dedent("""
    import duckdb, json, sys
    out = {"version": duckdb.__version__}
    for path in sys.argv[1:]:
        con = duckdb.connect(path, read_only=True)
        out[path] = {
            "meta": dict(con.execute("SELECT key, value FROM meta").fetchall()),
            "checkpoints": [r[0] for r in con.execute("SELECT checkpoint FROM checkpoints ORDER BY 1").fetchall()],
            "neuron_ap": con.execute("SELECT count(*), sum(ap) FROM neuron_ap").fetchall()[0],
            "tables": len(con.execute("SHOW TABLES").fetchall()),
        }
        con.close()
    print(json.dumps(out))
""")


def _old_duckdb_python(version: str) -> Path:
    """A virtualenv with ``duckdb==version`` from the package index, cached in the temporary folder."""
    venv = Path(tempfile.gettempdir()) / f"crossling-duckdb-{version}"
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import duckdb; assert duckdb.__version__ == {version!r}"]
    if python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return python
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True, timeout=120
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"duckdb=={version}"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        subprocess.run(check, check=True, capture_output=True, timeout=60)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot install duckdb=={version} in a virtualenv here ({type(exc).__name__})")
    return python


def test_a_store_and_its_parts_open_in_duckdb_1_1(store):  # about 10 s with the virtualenv to make
    python = _old_duckdb_python(OLD_DUCKDB)
    part = _leave_part(store, "c2", 0.8)
    proc = subprocess.run(
        [str(python), "-c", _READ_IN_OLD_DUCKDB, str(store), str(part)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["version"] == OLD_DUCKDB
    assert out[str(store)]["checkpoints"] == ["c1"] and out[str(part)]["checkpoints"] == ["c2"]
    assert out[str(store)]["neuron_ap"][0] == 2 and out[str(part)]["neuron_ap"][0] == 2
    assert out[str(store)]["meta"]["storage_version"] == STORAGE_VERSION
    # Packed, the one file opens there too, with every checkpoint.
    from precompute.cli import app

    assert runner.invoke(app, ["pack", str(store)]).exit_code == 0
    proc = subprocess.run(
        [str(python), "-c", _READ_IN_OLD_DUCKDB, str(store)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[str(store)]["checkpoints"] == ["c1", "c2"]


# --- the notebook API reads what info reads -------------------------------------------------------------------


def test_the_notebook_api_reads_a_store_with_parts(store):
    _leave_part(store, "c2", 0.8)
    with open_store(store) as api:
        assert api.checkpoint_names == ["c1", "c2"]
        assert api.experts("x", "c2", k=2)["ap"].sort().to_list() == [0.4, 0.8]
        assert api.table_counts().height > 0


def test_the_notebook_api_reads_a_store_another_connection_holds_open(store):
    held = duckdb.connect(str(store), read_only=True)  # a notebook's own connection, other settings
    try:
        with open_store(store) as api:
            assert api.checkpoint_names == ["c1"]
            assert api.experts("x", "c1", k=2).height == 2
    finally:
        held.close()
    _leave_part(store, "c2", 0.8)
    held = duckdb.connect(str(store), read_only=True)
    try:
        with open_store(store) as api:
            assert api.checkpoint_names == ["c1", "c2"]
    finally:
        held.close()


# --- a FIFO (or device) given as a store never hangs ---------------------------------------------------------------


def _with_watchdog(call, seconds: float = 20.0):
    """Run ``call``; a FIFO that something opened for reading is opened for writing after ``seconds`` (so that a
    regression fails, with the FIFO read as empty, instead of hanging), and the call must be quick."""
    stop = threading.Event()
    fifos: list[Path] = list(_FIFOS)

    def unblock() -> None:
        if stop.wait(seconds):
            return
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    watchdog = threading.Thread(target=unblock, daemon=True)
    watchdog.start()
    started = time.monotonic()
    try:
        return call()
    finally:
        stop.set()
        assert time.monotonic() - started < seconds, "blocked on a FIFO"


_FIFOS: list[Path] = []


@pytest.fixture
def fifo(tmp_path: Path):
    path = tmp_path / "pipe.duckdb"
    os.mkfifo(path)
    _FIFOS.append(path)
    yield path
    _FIFOS.remove(path)


@pytest.mark.parametrize("command", [["info"], ["info", "--json"], ["report"], ["pack"], ["steer"]])
def test_a_fifo_given_as_a_store_is_refused_at_once(fifo, command):
    _with_watchdog(lambda: assert_refused([*command, fifo], names=fifo, says="is a FIFO (named pipe)"))


def test_a_fifo_given_to_merge_as_input_or_output_is_refused_at_once(fifo, store):
    from precompute.cli import app

    for args in (["merge", fifo, "--out", store.with_name("m.duckdb")], ["merge", store, "--out", fifo]):
        result = _with_watchdog(lambda a=args: runner.invoke(app, [str(x) for x in a]))
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and str(fifo) in errors[0] and "FIFO" in errors[0], result.stderr
    assert not store.with_name("m.duckdb").exists()
    with pytest.raises(StoreError, match="FIFO"):
        _with_watchdog(lambda: merge_stores([store], fifo))


def test_a_fifo_given_to_the_explorer_and_the_writer_is_refused_at_once(fifo, tmp_path):
    for opener in (open_readonly, open_snapshot, Q.StoreConnection, open_store):
        with pytest.raises(StoreMissingError, match="is a FIFO"):
            _with_watchdog(lambda o=opener: o(fifo))
    link = tmp_path / "link.duckdb"
    os.symlink(fifo, link)
    with pytest.raises(StoreMissingError, match="is a FIFO"):
        _with_watchdog(lambda: open_readonly(link))
    with pytest.raises(StoreMissingError, match="is a FIFO"):
        _with_watchdog(lambda: StoreWriter(fifo).__enter__())
    assert leftovers(fifo) == []


def test_a_character_device_is_refused_like_a_fifo():
    with pytest.raises(StoreMissingError, match="is a character device"):
        open_readonly("/dev/null")


# --- paths with quotes and other SQL characters ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ['a"b.duckdb', "it's.duckdb", "q\"'; DROP TABLE runs; --.duckdb", "md:x.duckdb", ":memory:", "spa ce.duckdb"],
)
def test_a_store_path_with_sql_characters_is_read_written_and_packed(tmp_path, name):
    folder = tmp_path / "dir\"with'quotes"
    folder.mkdir()
    path = _store(folder / name)
    _leave_part(path, "c2", 0.8)
    from precompute.cli import app

    for command in (["info", str(path)], ["info", "--json", str(path)], ["report", str(path)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
    assert store_info(path)["unpacked_parts"] == 1
    with open_store(path) as api:
        assert api.checkpoint_names == ["c1", "c2"]
    result = runner.invoke(app, ["pack", str(path)])
    assert result.exit_code == 0, result.output
    assert _checkpoints(path) == ["c1", "c2"] and _listing(path) == []
    with StoreWriter(path) as writer:
        writer.finish_run("r1")
    merged = folder / f"merged-{name}"
    merge_stores([path], merged)
    assert _checkpoints(merged) == ["c1", "c2"]


def test_a_path_with_a_backslash_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "back\\slash"
    folder.mkdir()
    path = folder / "s.duckdb"
    for command in (["info", path], ["report", path], ["pack", path]):
        assert_refused(command, names=path, says="DuckDB cannot open a path with a backslash")
    shutil.copyfile(_store(tmp_path / "s.duckdb"), path)
    assert_refused(["info", path], names=path, says="DuckDB cannot open a path with a backslash", store=path)
    with pytest.raises(StoreMissingError, match="backslash"), StoreWriter(tmp_path / "new\\.duckdb"):
        pass


def test_a_relative_store_name_that_looks_like_a_url_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _store(Path("md:store.duckdb"))
    assert (tmp_path / "md:store.duckdb").is_file()
    assert _checkpoints(Path("md:store.duckdb")) == ["c1"]


def test_run_with_a_fifo_as_out_is_refused_at_once(fifo, tmp_path):
    """`precompute run --out FIFO` on the real tiny model: refused in one line before any compute, never hangs."""
    config = tmp_path / "run.toml"
    config.write_text(config_text(), encoding="utf-8")
    _with_watchdog(lambda: assert_refused(["run", config, "--out", fifo], names=fifo, says="is a FIFO (named pipe)"))
    assert leftovers(fifo) == []
