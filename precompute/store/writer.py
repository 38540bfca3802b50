"""The one owner of the DuckDB store: schema (DDL), schema version, provenance and writes.

A store is one self-describing DuckDB file. Long-format tables, keys first. Writers never modify a published
file in place. A checkpoint is written, in one transaction, into a new part file of its own
(``STORE.parts/<seq>.duckdb.tmp-<pid>``, see :mod:`precompute.store.parts`) and published by an atomic
``os.replace`` to its final name, so its cost does not grow with the store. Every other change (the run's
inputs, steering rows added later, the merge, and the pack that folds the parts into the store file when a writer
ends normally) is made in a private copy of the store file (``STORE.tmp-<pid>``) and published the same way.
Readers (the explorer, ``precompute info``) therefore always see the last complete state, and a killed writer
leaves the published store untouched.
A second writer on the same store is refused through an exclusive lock file (``STORE.lock``, see
:mod:`precompute.store.lock`). The store path is resolved to its real file first: a symlink is followed (the file
it names is replaced, the link stays), and two writers reaching one file through different names share one lock.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from precompute.faults import maybe_fail
from precompute.store import lock, parts
from precompute.store.errors import ForeignPartError, StoreError
from precompute.store.identity import run_difference
from precompute.store.layout import checkpoint_frames
from precompute.store.open import (
    _first_line,
    attach_parts,
    check_output,
    config_sha256,
    connect,
    connect_attached,
    in_storage_version,
    live_parts,
    open_readonly,
    open_snapshot,
    verify_readable,
)
from precompute.store.read import read_checkpoint_fingerprints, read_runs
from precompute.store.schema import CHECKPOINT_TABLES, DDL, STORAGE_VERSION, create_schema, polars_schema


def utc_now() -> datetime:
    """Naive UTC timestamp (DuckDB TIMESTAMP)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class CheckpointRows:
    """Everything one checkpoint contributes, keyed by table name (frames without run_id/checkpoint)."""

    checkpoint: str
    step: int | None
    revision: str | None
    source: str
    tokens_seen: int | None
    tables: dict[str, pl.DataFrame]
    source_fingerprint: str | None = None  # what the weights were (precompute.checkpoints.fingerprint)


class StoreWriter:
    """Exclusive writer for one store path. Use as a context manager.

    ``with StoreWriter(path) as w: w.ensure_run(...); w.write_checkpoint(...)`` -- each checkpoint is published
    as a part file; every other change copies the published file, applies the change (and packs the live parts)
    in one transaction and publishes the copy by atomic rename. Leaving the ``with`` block normally packs what
    parts are left, so a finished writer leaves one file; after an exception they stay, readable, for the next
    writer (or ``precompute pack``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)  # as the user named it: every message shows this
        self.target = lock.real_path(self.path)  # the file itself: locked, copied and replaced
        self.lock_path = lock.lock_path(self.path)
        self._lock_fd: int | None = None

    def __enter__(self) -> StoreWriter:
        check_output(self.path)  # a FIFO, a device, a folder: refused before anything opens or locks it
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = lock.acquire(self.target, shown=self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot lock the store for writing ({_os_reason(exc)})") from None
        try:
            # A pack deletes the parts it folds in: never through a symlinked folder, never parts of no file.
            parts.check_folder(self.target, self.path, writing=True)
            if not self.target.exists() and parts.listed_parts(self.target):
                raise ForeignPartError(
                    f"{self.path}: there is no store file, but its parts folder {parts.parts_dir(self.target).name} "
                    "holds checkpoint parts (of another store file, or of one deleted since); move them away"
                )
            if self.target.exists():
                # Validates that what we are about to extend is a whole store of our schema.
                con = open_readonly(self.path)  # through a link too: its messages name the path given
                try:
                    verify_readable(con, self.path)
                finally:
                    con.close()
            self._remove_stale_copies()
        except BaseException:
            self._release()
            raise
        return self

    def _remove_stale_copies(self) -> None:
        """Delete what writers that were killed left (we hold the lock): private copies (``STORE.tmp-<pid>``),
        parts under construction, and parts already packed into the store file (a pack killed before it deleted
        them)."""
        prefix = f"{self.target.name}.tmp-"
        for stale in self.target.parent.glob(f"{glob_escape(prefix)}*"):
            pid = stale.name[len(prefix) :].removesuffix(".wal")
            if pid.isdigit():
                stale.unlink(missing_ok=True)
        for stale in parts.private_files(self.target):
            stale.unlink(missing_ok=True)
        listed = parts.listed_parts(self.target)
        if listed:
            live = self._live_parts()
            self._delete_parts([path for seq, path in listed.items() if seq not in live])

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if exc_type is None and self._lock_fd is not None:
                self.pack()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            lock.release(fd, self.target)

    def pack(self) -> int:
        """Fold the live parts into the store file (one private copy, one rename); returns how many there were."""
        count = len(self._live_parts())
        if count:
            with self.transaction():
                pass  # every transaction packs the live parts first
        return count

    def _live_parts(self) -> dict[int, Path]:
        """The published parts not yet in the store file (seq -> path, in order; see ``open.live_parts``)."""
        listed = parts.listed_parts(self.target)
        if not listed or not self.target.exists():
            return {}  # the common case, without opening the store file
        con = connect_attached(
            {"crossling_file": self.target}, use="crossling_file", also_allowed=list(listed.values())
        )
        try:
            attached = attach_parts(con, self.path, listed)  # we hold the lock: no part vanishes
            live = live_parts(con, "crossling_file", attached or {}, self.path)
        finally:
            con.close()
        return {seq: path for seq, path in listed.items() if seq in live}

    def _delete_parts(self, paths: list[Path]) -> None:
        """Remove parts the store file holds (or that a newer part replaced), then the folder when it is empty."""
        for path in paths:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (a later part), or not there
            parts.parts_dir(self.target).rmdir()

    @contextlib.contextmanager
    def transaction(self, attach: Mapping[str, str | Path] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection on a private copy; committed and published atomically on normal exit.

        ``attach`` (alias -> store file) attaches other stores read-only, for queries across files (the merge);
        the private copy is then the connection's default database.
        """
        if self._lock_fd is None:
            raise StoreError("StoreWriter used outside its 'with' block")
        tmp = self.target.with_name(f"{self.target.name}.tmp-{os.getpid()}")
        for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
            stale.unlink(missing_ok=True)
        listed, live = parts.listed_parts(self.target), self._live_parts()
        try:
            if self.target.exists():
                if in_storage_version(self.target):
                    shutil.copyfile(self.target, tmp)
                else:  # written by an older crossling in a newer DuckDB's format: rewritten once, readable by all
                    _copy_in_storage_version(self.target, tmp)
            maybe_fail("store.copied")
            part_aliases = {f"crossling_part_{seq}": path for seq, path in live.items()}
            if attach or part_aliases:
                others = {**part_aliases, **(attach or {})}
                alias = _free_alias("crossling_out", others)
                con = connect_attached({alias: tmp, **others}, use=alias, writable=[alias])
            else:
                con = connect(tmp, read_only=False)
            with _committed(con):
                if live:
                    _absorb_parts(con, list(part_aliases))
                _stamp_file(con)
                yield con
            _publish(tmp, self.target)
            if listed:
                maybe_fail("store.packed")
                self._delete_parts(list(listed.values()))
        except (OSError, duckdb.IOException, duckdb.FatalException, duckdb.OutOfMemoryException) as exc:
            # A full disk, a read-only folder, ...: the published store is still the previous one.
            unpacked = (
                f"; its {len(live)} checkpoint part(s) ({parts.parts_dir(self.target).name}/) are published and "
                f"readable: run `precompute pack {self.path}` once that is fixed"
                if live
                else ""
            )
            raise StoreError(
                f"{self.path}: cannot write the store ({_os_reason(exc)}); the published store is unchanged{unpacked}"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)

    def _file_identity(self, run_id: str) -> dict[str, str]:
        """What a part written now copies into its meta to prove it belongs to the store file as it is (the rule:
        :mod:`precompute.store.parts`). A file written before store ids existed is given one first (one copy)."""
        for _ in range(2):
            con = connect_attached({"crossling_file": self.target}, use="crossling_file")
            try:
                meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
                config = con.execute("SELECT config_json FROM runs WHERE run_id = ?", [run_id]).fetchall()
            finally:
                con.close()
            if parts.STORE_ID in meta:
                identity = {key: meta[key] for key in parts.IDENTITY_KEYS if key in meta}
                return {
                    **identity,
                    parts.PART_RUN: run_id,
                    parts.PART_CONFIG: config_sha256(config[0][0] if config else None),
                }
            with self.transaction():
                pass  # packs the file's old-style parts and gives it its store id
        raise StoreError(f"{self.path}: the store file records no store id after it was rewritten")

    @contextlib.contextmanager
    def _part_transaction(self, run_id: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection on a new, empty part file of the schema; committed and published as the next part."""
        identity = self._file_identity(run_id)
        seq = parts.newest_seq(self.target) + 1
        final = parts.part_path(self.target, seq)
        tmp = parts.private_part_path(self.target, seq)
        try:
            final.parent.mkdir(exist_ok=True)
            for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
                stale.unlink(missing_ok=True)
            con = connect(tmp, read_only=False)
            maybe_fail("store.copied")
            with _committed(con):
                _stamp_part(con, identity)
                yield con
            _publish(tmp, final)
        except (OSError, duckdb.IOException, duckdb.FatalException, duckdb.OutOfMemoryException) as exc:
            raise StoreError(
                f"{self.path}: cannot write the store ({_os_reason(exc)}); the published store is unchanged"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # a folder made for a part that was never published
                final.parent.rmdir()

    def finished_checkpoints(self, run_id: str) -> set[str]:
        """Checkpoints of this run already published."""
        return set(self.checkpoint_fingerprints(run_id))

    def checkpoint_fingerprints(self, run_id: str) -> dict[str, str | None]:
        """Checkpoints of this run already published, with the fingerprint of the weights each was computed from."""
        if not self.target.exists():
            return {}
        return read_checkpoint_fingerprints(self.path, run_id)

    def stored_checkpoint(self, run_id: str, checkpoint: str) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        """One published checkpoint as readers see it now (the store file and its live parts): its ``checkpoints``
        row, and its rows of every checkpoint table (frames without run_id, empty tables left out).

        What ``precompute steer`` publishes again with its own rows over them, as a part of the checkpoint: the
        cost is one checkpoint's rows, not a copy of the store.
        """
        con = open_snapshot(self.path)
        try:
            found = con.execute(
                "SELECT * FROM checkpoints WHERE run_id = ? AND checkpoint = ?", [run_id, checkpoint]
            ).fetchall()
            if not found:
                raise StoreError(f"{self.path}: run {run_id} has no checkpoint {checkpoint!r}")
            names = [d[0] for d in con.description]
            row = dict(zip(names, found[0]))
            tables = {}
            for table in CHECKPOINT_TABLES:
                cur = con.execute(
                    f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ? AND checkpoint = ?", [run_id, checkpoint]
                )
                types = polars_schema(table, without=("run_id",))
                columns = [d[0] for d in cur.description]
                frame = pl.DataFrame(cur.fetchall(), schema={c: types[c] for c in columns}, orient="row")
                if frame.height:
                    tables[table] = frame
        finally:
            con.close()
        return row, tables

    def ensure_run(
        self,
        *,
        run: dict[str, Any],
        languages: pl.DataFrame,
        concepts: pl.DataFrame,
        sentences: pl.DataFrame,
        layers: pl.DataFrame,
        meta: dict[str, str],
    ) -> None:
        """Record the run, its inputs and its model layout once; refuse a store of another run."""
        run_id = run["run_id"]
        if self.target.exists():
            existing = read_runs(self.path)
            ids = {r["run_id"] for r in existing}
            if run_id in ids:
                return
            if ids:
                why = run_difference(existing[0], run, where_a=str(self.path), where_b="this run") or (
                    "a different model, config or concept set"
                )
                raise StoreError(
                    f"{self.path}: holds another run ({', '.join(sorted(ids))}): {why} (the store's vs this "
                    "run's); write to a new store"
                )
        with self.transaction() as con:
            for key, value in meta.items():
                con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])
            insert_rows(con, "runs", pl.DataFrame([run]))
            insert_rows(con, "languages", languages)
            insert_rows(con, "concepts", concepts)
            insert_rows(con, "sentences", sentences)
            insert_rows(con, "layers", layers.with_columns(pl.lit(run_id).alias("run_id")))

    def write_checkpoint(self, run_id: str, rows: CheckpointRows) -> None:
        """Publish all rows of one checkpoint in one transaction (replacing any earlier rows).

        Into a part file of its own when the store file exists (a later part replaces the checkpoint's earlier
        rows for readers, and the pack deletes them); the very first write of a store creates the file.
        """
        in_part = self.target.exists()
        with self._part_transaction(run_id) if in_part else self.transaction() as con:
            if not in_part:
                con.execute(
                    "DELETE FROM checkpoints WHERE run_id = ? AND checkpoint = ?",
                    [run_id, rows.checkpoint],
                )
                for table in CHECKPOINT_TABLES:
                    con.execute(
                        f"DELETE FROM {table} WHERE run_id = ? AND checkpoint = ?",
                        [run_id, rows.checkpoint],
                    )
            for table, frame in checkpoint_frames(rows.tables).items():  # derived tables added, in store order
                if table not in CHECKPOINT_TABLES:
                    raise StoreError(f"unknown checkpoint table {table!r}")
                if frame.height == 0:
                    continue
                frame = frame.with_columns(pl.lit(run_id).alias("run_id"), pl.lit(rows.checkpoint).alias("checkpoint"))
                insert_rows(con, table, frame)
                maybe_fail("store.insert")
            con.execute(
                "INSERT INTO checkpoints (run_id, checkpoint, step, revision, source, tokens_seen, completed_at, "
                "source_fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    rows.checkpoint,
                    rows.step,
                    rows.revision,
                    rows.source,
                    rows.tokens_seen,
                    utc_now(),
                    rows.source_fingerprint,
                ],
            )

    def append_rows(self, table: str, frame: pl.DataFrame, *, replace_where: dict[str, Any]) -> None:
        """Replace the rows matching ``replace_where`` in ``table`` by ``frame``, in one transaction."""
        if table not in DDL:
            raise StoreError(f"unknown table {table!r}")
        with self.transaction() as con:
            if replace_where:
                cond = " AND ".join(f"{col} = ?" for col in replace_where)
                con.execute(f"DELETE FROM {table} WHERE {cond}", list(replace_where.values()))
            if frame.height:
                insert_rows(con, table, frame)

    def finish_run(self, run_id: str) -> None:
        """Stamp the run's finish time."""
        with self.transaction() as con:
            con.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", [utc_now(), run_id])


@contextlib.contextmanager
def _committed(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """The schema, then one transaction on a private file's connection: committed and checkpointed (so the file
    holds everything, no WAL) on normal exit, rolled back otherwise; the connection is closed either way."""
    try:
        create_schema(con)
        con.execute("BEGIN TRANSACTION")
        yield con
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def _stamp_file(con: duckdb.DuckDBPyConnection) -> None:
    """Record in the store file being published its identity: its store id (drawn once), the next generation and
    a new epoch (so that every part written on the previous file is now older than the file), and its storage
    version."""
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    try:
        generation = int(meta.get(parts.STORE_GENERATION) or 0) + 1
    except ValueError:
        generation = 1
    rows = [
        (parts.STORE_ID, meta.get(parts.STORE_ID) or uuid.uuid4().hex),
        (parts.STORE_GENERATION, str(generation)),
        (parts.STORE_EPOCH, uuid.uuid4().hex),
        ("storage_version", STORAGE_VERSION),
    ]
    con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows)


def _stamp_part(con: duckdb.DuckDBPyConnection, identity: Mapping[str, str]) -> None:
    """A part's meta: the identity of the store file it is written on, its run and its config's fingerprint."""
    rows = [*identity.items(), ("storage_version", STORAGE_VERSION)]
    con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows)


def _copy_in_storage_version(source: Path, copy: Path) -> None:
    """A copy of the store file ``source`` written in crossling's storage version (every table, every row)."""
    con = connect_attached(
        {"crossling_src": source, "crossling_dst": copy}, use="crossling_dst", writable=["crossling_dst"]
    )
    try:
        con.execute("COPY FROM DATABASE crossling_src TO crossling_dst")
    finally:
        con.close()


def _publish(private: Path, final: Path) -> None:
    """Make a committed private file the published one: synced, renamed into place, the folder's entry synced."""
    _fsync(private)
    maybe_fail("store.committed")
    os.replace(private, final)
    maybe_fail("store.published")
    _fsync(final.parent)


def _absorb_parts(con: duckdb.DuckDBPyConnection, aliases: list[str]) -> None:
    """Fold attached live parts, in sequence order, into the connection's default database (the private copy).

    Each part's checkpoints replace the rows the store has for them, ``checkpoints.completed_at`` included: that
    is how a reader knows a part left behind by an interrupted deletion is already in the store file.
    """
    for alias in aliases:
        published = f"SELECT DISTINCT run_id, checkpoint FROM {alias}.main.checkpoints"
        for table in ["checkpoints", *CHECKPOINT_TABLES]:
            con.execute(f"DELETE FROM {table} WHERE (run_id, checkpoint) IN ({published})")
            present = con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?", [alias, table]
            ).fetchall()[0][0]
            if present:
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {alias}.main.{table}")


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Insert a polars frame into ``table`` matching columns by name (missing columns become NULL)."""
    columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    unknown = set(frame.columns) - set(columns)
    if unknown:
        raise StoreError(f"table {table}: unknown columns {sorted(unknown)}")
    present = [c for c in columns if c in frame.columns]
    # Registered explicitly: connections have external access off, which also turns off replacement scans.
    view = f"_crossling_insert_{next(_REGISTERED)}"
    con.register(view, frame.select(present).to_arrow())
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(present)}) SELECT {', '.join(present)} FROM {view}")
    finally:
        con.unregister(view)


_REGISTERED = itertools.count()


def _free_alias(base: str, taken: Mapping[str, Any]) -> str:
    """An alias for the private copy that none of the attached stores uses."""
    alias, n = base, 0
    while alias in taken:
        n += 1
        alias = f"{base}_{n}"
    return alias


def _os_reason(exc: BaseException) -> str:
    """``No space left on device`` rather than ``[Errno 28] No space left on device: '/x/y'``."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    nospace = os.strerror(errno.ENOSPC)
    return nospace if nospace in str(exc) else _first_line(exc)


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters made literal."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in text)


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries (so that a rename survives a crash), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_dumps(obj: Any) -> str:
    """Stable JSON for provenance columns."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
