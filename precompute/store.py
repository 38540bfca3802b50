"""The one owner of the DuckDB store: schema (DDL), schema version, provenance and writes.

A store is one self-describing DuckDB file. Long-format tables, keys first. Writers never modify the
published file in place: each checkpoint is written into a private copy (``STORE.tmp-<pid>``) inside one
transaction and then published by an atomic ``os.replace``. Readers (the explorer, ``precompute info``)
therefore always see the last complete state, and a killed writer leaves the published store untouched.
A second writer on the same store is refused through an exclusive lock file (``STORE.lock``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from precompute.faults import maybe_fail

SCHEMA_VERSION = 1

# Tables in dependency order. Every statement is idempotent (IF NOT EXISTS).
DDL: dict[str, str] = {
    "meta": """
        CREATE TABLE IF NOT EXISTS meta (
            key VARCHAR PRIMARY KEY,
            value VARCHAR NOT NULL
        )""",
    "runs": """
        CREATE TABLE IF NOT EXISTS runs (
            run_id VARCHAR PRIMARY KEY,
            model_id VARCHAR NOT NULL,
            model_card VARCHAR,
            config_json VARCHAR NOT NULL,
            concept_set_sha256 VARCHAR NOT NULL,
            packages_json VARCHAR NOT NULL,
            device VARCHAR,
            dtype VARCHAR,
            started_at TIMESTAMP,
            finished_at TIMESTAMP
        )""",
    "checkpoints": """
        CREATE TABLE IF NOT EXISTS checkpoints (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            step BIGINT,
            revision VARCHAR,
            source VARCHAR NOT NULL,
            tokens_seen BIGINT,
            completed_at TIMESTAMP NOT NULL,
            PRIMARY KEY (run_id, checkpoint)
        )""",
    "stage_timings": """
        CREATE TABLE IF NOT EXISTS stage_timings (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            stage VARCHAR NOT NULL,
            seconds DOUBLE NOT NULL,
            tokens_per_s DOUBLE,
            peak_mem_mb DOUBLE
        )""",
    "languages": """
        CREATE TABLE IF NOT EXISTS languages (
            lang VARCHAR PRIMARY KEY,
            name VARCHAR,
            script VARCHAR,
            family VARCHAR
        )""",
    "concepts": """
        CREATE TABLE IF NOT EXISTS concepts (
            concept_id VARCHAR PRIMARY KEY,
            label VARCHAR,
            category VARCHAR
        )""",
    "sentences": """
        CREATE TABLE IF NOT EXISTS sentences (
            sentence_id BIGINT PRIMARY KEY,
            concept_id VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            span_start INTEGER,
            span_end INTEGER
        )""",
    "layers": """
        CREATE TABLE IF NOT EXISTS layers (
            run_id VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            n_neurons INTEGER NOT NULL,
            hidden_size INTEGER NOT NULL,
            module_path VARCHAR NOT NULL,
            PRIMARY KEY (run_id, layer)
        )""",
    # representation: 'mean' (sentence-pooled residual) or 'token' (sampled single tokens).
    # layer 0 is the embedding output; layer i the output of block i.
    "probe_results": """
        CREATE TABLE IF NOT EXISTS probe_results (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            representation VARCHAR NOT NULL,
            accuracy DOUBLE NOT NULL,
            accuracy_std DOUBLE NOT NULL,
            macro_f1 DOUBLE NOT NULL,
            n_train INTEGER NOT NULL,
            n_test INTEGER NOT NULL,
            n_seeds INTEGER NOT NULL
        )""",
    "probe_per_language": """
        CREATE TABLE IF NOT EXISTS probe_per_language (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            representation VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            f1 DOUBLE NOT NULL
        )""",
    # Top-K expert units per (checkpoint, lang, concept); layer indexes MLP blocks from 0.
    "neuron_ap": """
        CREATE TABLE IF NOT EXISTS neuron_ap (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            ap DOUBLE NOT NULL,
            rank INTEGER NOT NULL,
            median_pos_act DOUBLE NOT NULL
        )""",
    # Every neuron, every checkpoint: AP summarised over all (lang, concept) pairs.
    "neuron_summary": """
        CREATE TABLE IF NOT EXISTS neuron_summary (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            mean_ap DOUBLE NOT NULL,
            max_ap DOUBLE NOT NULL,
            best_concept_id VARCHAR NOT NULL,
            best_lang VARCHAR NOT NULL
        )""",
    "expert_overlap": """
        CREATE TABLE IF NOT EXISTS expert_overlap (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            lang_a VARCHAR NOT NULL,
            lang_b VARCHAR NOT NULL,
            k INTEGER NOT NULL,
            jaccard DOUBLE NOT NULL,
            spearman_ap DOUBLE NOT NULL
        )""",
    "shared_experts": """
        CREATE TABLE IF NOT EXISTS shared_experts (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            n_langs_topk INTEGER NOT NULL,
            langs VARCHAR NOT NULL,
            min_ap DOUBLE NOT NULL,
            mean_ap DOUBLE NOT NULL
        )""",
    # Pre-aggregated for the explorer: per (checkpoint, lang, concept) how many of the top-K experts
    # are shared experts of that concept (top-K in >= min_langs languages).
    "expert_sharing": """
        CREATE TABLE IF NOT EXISTS expert_sharing (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            n_experts INTEGER NOT NULL,
            n_shared INTEGER NOT NULL
        )""",
    # Representation convergence: metric in ('matched_cosine', 'mismatched_cosine', 'cka', ...).
    "similarity": """
        CREATE TABLE IF NOT EXISTS similarity (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            lang_a VARCHAR NOT NULL,
            lang_b VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            value DOUBLE NOT NULL
        )""",
    # Effective dimensionality; scope is 'all' (pooled over languages) or a language code.
    "compression": """
        CREATE TABLE IF NOT EXISTS compression (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            scope VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            value DOUBLE NOT NULL
        )""",
    # Language selectivity of MLP neurons (LAPE, Tang et al. 2024): only the language-specific ones.
    "language_neurons": """
        CREATE TABLE IF NOT EXISTS language_neurons (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            lape DOUBLE NOT NULL,
            top_lang VARCHAR NOT NULL,
            top_prob DOUBLE NOT NULL
        )""",
    # Per checkpoint and layer: how many neurons are of each kind ('language_specific', 'shared_expert').
    "neuron_counts": """
        CREATE TABLE IF NOT EXISTS neuron_counts (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            n INTEGER NOT NULL
        )""",
    "steering": """
        CREATE TABLE IF NOT EXISTS steering (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            source_lang VARCHAR NOT NULL,
            prompt VARCHAR NOT NULL,
            seed INTEGER NOT NULL,
            n_neurons INTEGER NOT NULL,
            value_mode VARCHAR NOT NULL,
            output_text VARCHAR NOT NULL,
            output_lang VARCHAR,
            expresses_concept BOOLEAN NOT NULL,
            concept_lang VARCHAR
        )""",
}

# Indexes that make the explorer's drill-downs fast on paper-scale stores.
INDEXES: list[str] = []

# Tables whose rows belong to one (run_id, checkpoint): written together in one transaction.
CHECKPOINT_TABLES = [
    "stage_timings",
    "probe_results",
    "probe_per_language",
    "neuron_ap",
    "neuron_summary",
    "expert_overlap",
    "shared_experts",
    "expert_sharing",
    "similarity",
    "compression",
    "language_neurons",
    "neuron_counts",
]


class StoreError(Exception):
    """A store that cannot be opened, read or written, with a one-line reason."""


class StoreLockedError(StoreError):
    """Another precompute process is writing this store."""


def utc_now() -> datetime:
    """Naive UTC timestamp (DuckDB TIMESTAMP)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table (idempotent) and record the schema version."""
    for ddl in DDL.values():
        con.execute(ddl)
    for index in INDEXES:
        con.execute(index)
    con.execute(
        "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
    )


def schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The schema version a store declares, or None where it has no meta table."""
    try:
        rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    except duckdb.CatalogException:
        return None
    return int(rows[0][0]) if rows else None


def open_readonly(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open a published store read-only, checking that it is a crossling store of our schema."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    if path.is_dir():
        raise StoreError(f"{path}: is a directory, not a DuckDB store")
    try:
        con = duckdb.connect(str(path), read_only=True)
        # A store is data from someone else: SQL in it (views, macros) must not reach files or the network.
        con.execute("SET enable_external_access = false")
    except duckdb.Error as exc:
        raise StoreError(f"{path}: not a readable DuckDB file ({_first_line(exc)})") from None
    try:
        code = stored_code(con)
        version = schema_version(con)
    except (duckdb.Error, ValueError) as exc:
        con.close()
        raise StoreError(f"{path}: {corrupt_reason(exc)}") from None
    if code:
        con.close()
        raise StoreError(
            f"{path}: not a crossling store: it defines {code[0]}"
            f"{f' (and {len(code) - 1} more)' if len(code) > 1 else ''}; a store holds only tables of "
            "data, and crossling runs no SQL that comes from a file"
        )
    if version is None:
        con.close()
        raise StoreError(f"{path}: not a crossling store (no meta table)")
    if version != SCHEMA_VERSION:
        con.close()
        raise StoreError(
            f"{path}: store schema version {version}, this crossling reads version {SCHEMA_VERSION}"
        )
    return con


def corrupt_reason(exc: BaseException) -> str:
    """The one-line reason for a store that opened but cannot be read (cut short, damaged, foreign)."""
    if isinstance(exc, ValueError):
        return f"not a crossling store (unreadable schema version: {_first_line(exc)})"
    return f"truncated or corrupt store ({_first_line(exc)})"


def verify_readable(con: duckdb.DuckDBPyConnection, path: str | Path) -> None:
    """Read every block of every table once (a writer's check before it extends a store).

    Opening a DuckDB file reads only its catalog; a file cut short (a copy interrupted on its way from a
    colleague) opens and fails later. A writer pays one full read up front instead of failing mid-run.
    """
    try:
        present = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        for table in DDL:
            if table in present:
                con.execute(f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {table}").fetchall()
    except duckdb.Error as exc:
        raise StoreError(f"{path}: {corrupt_reason(exc)}") from None


def stored_code(con: duckdb.DuckDBPyConnection) -> list[str]:
    """SQL kept in the store's file that a query could run: views, macros, computed column defaults.

    crossling writes none of these; a shared store that has them is refused by :func:`open_readonly`.
    """
    db = "current_database()"
    found = [
        f"view {r[0]!r}"
        for r in con.execute(
            f"SELECT view_name FROM duckdb_views() WHERE NOT internal AND database_name = {db} ORDER BY 1"
        ).fetchall()
    ]
    found += [
        f"macro {r[0]!r}"
        for r in con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            f"WHERE function_type IN ('macro', 'table_macro') AND database_name = {db} ORDER BY 1"
        ).fetchall()
    ]
    found += [
        f"computed column {r[0]}.{r[1]}"
        for r in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() "
            f"WHERE column_default IS NOT NULL AND database_name = {db} ORDER BY 1, 2"
        ).fetchall()
    ]
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class CheckpointRows:
    """Everything one checkpoint contributes, keyed by table name (frames without run_id/checkpoint)."""

    checkpoint: str
    step: int | None
    revision: str | None
    source: str
    tokens_seen: int | None
    tables: dict[str, pl.DataFrame]


class StoreWriter:
    """Exclusive writer for one store path. Use as a context manager.

    ``with StoreWriter(path) as w: w.ensure_run(...); w.write_checkpoint(...)`` -- each call that
    changes the store copies the published file, applies the change in one transaction and publishes
    the copy by atomic rename.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: int | None = None

    def __enter__(self) -> StoreWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._acquire_lock()
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot lock the store for writing ({_os_reason(exc)})") from None
        try:
            if self.path.exists():
                # Validates that what we are about to extend is a whole store of our schema.
                con = open_readonly(self.path)
                try:
                    verify_readable(con, self.path)
                finally:
                    con.close()
            self._remove_stale_copies()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _acquire_lock(self) -> int:
        """An exclusive, non-blocking flock on ``STORE.lock`` (released by the kernel if we die)."""
        for _ in range(10):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise StoreLockedError(
                    f"{self.path}: another precompute is writing this store (lock {self.lock_path})"
                ) from None
            # The previous holder unlinks the lock file on exit: a lock on an unlinked file locks nothing.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)
        raise StoreLockedError(f"{self.path}: the lock file {self.lock_path} keeps changing; another precompute is starting")

    def _remove_stale_copies(self) -> None:
        """Delete private copies (``STORE.tmp-<pid>``) left by writers that were killed: we hold the lock."""
        prefix = f"{self.path.name}.tmp-"
        for stale in self.path.parent.glob(f"{glob_escape(prefix)}*"):
            pid = stale.name[len(prefix):].removesuffix(".wal")
            if pid.isdigit():
                stale.unlink(missing_ok=True)

    def __exit__(self, *exc_info: Any) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection on a private copy; committed and published atomically on normal exit."""
        if self._lock_fd is None:
            raise StoreError("StoreWriter used outside its 'with' block")
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
            stale.unlink(missing_ok=True)
        try:
            if self.path.exists():
                shutil.copyfile(self.path, tmp)
            maybe_fail("store.copied")
            con = duckdb.connect(str(tmp))
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
            _fsync_file(tmp)
            maybe_fail("store.committed")
            os.replace(tmp, self.path)
            maybe_fail("store.published")
            _fsync_dir(self.path.parent)
        except (OSError, duckdb.IOException, duckdb.FatalException, duckdb.OutOfMemoryException) as exc:
            # A full disk, a read-only folder, ...: the published store is still the previous one.
            raise StoreError(
                f"{self.path}: cannot write the store ({_os_reason(exc)}); the published store is unchanged"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)

    def finished_checkpoints(self, run_id: str) -> set[str]:
        """Checkpoints of this run already published."""
        if not self.path.exists():
            return set()
        con = open_readonly(self.path)
        try:
            rows = con.execute(
                "SELECT checkpoint FROM checkpoints WHERE run_id = ?", [run_id]
            ).fetchall()
        finally:
            con.close()
        return {r[0] for r in rows}

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
        if self.path.exists():
            con = open_readonly(self.path)
            try:
                existing = con.execute("SELECT run_id, config_json FROM runs").fetchall()
            finally:
                con.close()
            ids = {r[0] for r in existing}
            if run_id in ids:
                return
            if ids:
                raise StoreError(
                    f"{self.path}: holds another run ({', '.join(sorted(ids))}) with a different "
                    "model, config or concept set; write to a new store"
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
        """Publish all rows of one checkpoint in one transaction (replacing any earlier rows)."""
        with self.transaction() as con:
            con.execute(
                "DELETE FROM checkpoints WHERE run_id = ? AND checkpoint = ?",
                [run_id, rows.checkpoint],
            )
            for table in CHECKPOINT_TABLES:
                con.execute(
                    f"DELETE FROM {table} WHERE run_id = ? AND checkpoint = ?",
                    [run_id, rows.checkpoint],
                )
            for table, frame in rows.tables.items():
                if table not in CHECKPOINT_TABLES:
                    raise StoreError(f"unknown checkpoint table {table!r}")
                if frame.height == 0:
                    continue
                frame = frame.with_columns(
                    pl.lit(run_id).alias("run_id"), pl.lit(rows.checkpoint).alias("checkpoint")
                )
                insert_rows(con, table, frame)
                maybe_fail("store.insert")
            con.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    rows.checkpoint,
                    rows.step,
                    rows.revision,
                    rows.source,
                    rows.tokens_seen,
                    utc_now(),
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


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Insert a polars frame into ``table`` matching columns by name (missing columns become NULL)."""
    columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    unknown = set(frame.columns) - set(columns)
    if unknown:
        raise StoreError(f"table {table}: unknown columns {sorted(unknown)}")
    present = [c for c in columns if c in frame.columns]
    arrow = frame.select(present).to_arrow()  # noqa: F841  (referenced by name in SQL below)
    con.execute(
        f"INSERT INTO {table} ({', '.join(present)}) SELECT {', '.join(present)} FROM arrow"
    )


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row count of every schema table present in the store."""
    present = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    return {
        name: con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        for name in DDL
        if name in present
    }


def printable(text: str) -> str:
    """A store's string made safe for a terminal: control characters (ESC, ...) shown as ``\\xNN``.

    A store from someone else is data: its strings must not move the cursor, retitle the terminal or
    plant hyperlinks when ``precompute info`` or ``report`` prints them.
    """
    return "".join(
        ch if ch == "\n" or not (ord(ch) < 32 or 127 <= ord(ch) < 160) else f"\\x{ord(ch):02x}" for ch in text
    )


def _os_reason(exc: BaseException) -> str:
    """``No space left on device`` rather than ``[Errno 28] No space left on device: '/x/y'``."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    nospace = os.strerror(errno.ENOSPC)
    return nospace if nospace in str(exc) else _first_line(exc)


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters made literal."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in text)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_dumps(obj: Any) -> str:
    """Stable JSON for provenance columns."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
