"""Opening a published store read-only and safely: a store is data from someone else, never code.

Every DuckDB connection crossling makes (the CLI, the writer, the merge, the steering stage, the explorer) comes
from :func:`connect` or :func:`connect_attached`, which switch extension autoloading/autoinstalling and external
access off *before* any file is opened and lock the configuration, so that no file can make DuckDB download,
install or load an extension, reach the network or read another local file. Files that are not DuckDB at all
(a SQLite database, Parquet, CSV, ...) are recognised by their first bytes and refused before DuckDB sees them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import duckdb

from precompute.store import parts
from precompute.store.errors import (
    ForeignPartError,
    HalfWrittenStoreError,
    NotCrosslingStoreError,
    NotDuckDBError,
    SchemaVersionError,
    StoreError,
    StoreMissingError,
    UnsafeStoreError,
)
from precompute.store.lock import real_path
from precompute.store.schema import (
    ADDED_COLUMNS,
    DDL,
    REQUIRED_TABLES,
    SCHEMA_VERSION,
    STORAGE_NUMBER,
    STORAGE_VERSION,
    TABLES,
    schema_version,
)
from precompute.text import first_line as _first_line

# Set before a file is opened, for every connection: no extension is fetched or loaded, no file or URL is read
# other than the database files themselves, and no statement can switch these back on.
LOCKDOWN: dict[str, bool] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "enable_external_access": False,
    "lock_configuration": True,
}
# Files DuckDB keeps next to a database file (write-ahead log and its checkpoint): allowed with the file.
_COMPANIONS = ("", ".wal", ".wal.checkpoint", ".checkpoint.wal")


def connect(path: str | Path, *, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to one database file, with extensions and external access off before it opens.

    DuckDB shares one instance per file within a process and refuses a second connection "with a different
    configuration": where someone in this process (a notebook) holds the file open with other settings, the
    file is attached read-only to a private instance instead (:func:`connect_attached`; its default database
    is the store, though cursors made from it start in the in-memory one). A file opened for writing is written
    in :data:`~precompute.store.schema.STORAGE_VERSION` (readable by older DuckDB versions).
    """
    # An absolute path: a relative name such as ``md:x.duckdb`` or ``:memory:`` is a file here, never a URL.
    config = dict(LOCKDOWN) if read_only else {**LOCKDOWN, "storage_compatibility_version": STORAGE_VERSION}
    try:
        return duckdb.connect(os.path.abspath(path), read_only=read_only, config=config)
    except duckdb.ConnectionException as exc:
        if not read_only or "different configuration" not in str(exc):
            raise
    return connect_attached({"store": path}, use="store")


def connect_attached(
    databases: Mapping[str, str | Path],
    *,
    use: str,
    writable: Collection[str] = (),
    also_allowed: Collection[str | Path] = (),
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with ``databases`` (alias -> file) attached, read-only unless in ``writable``.

    For queries across files (the merge) and for reading the file a path names *now* (the explorer). External
    access is switched off before the first ATTACH; only the named files (and their write-ahead logs) stay
    reachable, plus ``also_allowed`` (files the caller attaches later, read-only: a store's parts), and the
    configuration is locked.
    """
    files = {alias: os.path.abspath(p) for alias, p in databases.items()}
    allowed = [*files.values(), *(os.path.abspath(p) for p in also_allowed)]
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        con.execute("SET allowed_paths = ?", [[f + s for f in allowed for s in _COMPANIONS]])
        if writable:
            spill = files[next(iter(writable))] + ".tmp"
            con.execute("SET temp_directory = ?", [spill])
            con.execute("SET allowed_directories = ?", [[spill + os.sep]])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        for alias, file in files.items():
            mode = f" (STORAGE_VERSION {repr_sql(STORAGE_VERSION)})" if alias in writable else " (READ_ONLY)"
            con.execute(f"ATTACH {repr_sql(file)} AS {_ident(alias)}{mode}")
        con.execute(f"USE {_ident(use)}")
    except BaseException:
        con.close()
        raise
    return con


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# First bytes of formats a store is often confused with (a DuckDB file has b"DUCK" at offset 8).
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"SQLite format 3\x00", "a SQLite database"),
    (0, b"PAR1", "a Parquet file"),
    (0, b"\x1f\x8b", "a gzip file"),
    (0, b"PK\x03\x04", "a zip archive"),
    (0, b"ARROW1", "an Arrow file"),
    (0, b"\x89HDF", "an HDF5 file"),
]
_DUCKDB_MAGIC_AT = 8
_DUCKDB_MAGIC = b"DUCK"


def storage_number(path: str | Path) -> int | None:
    """The storage version number in a DuckDB file's header (64: what DuckDB 0.10 to 1.1 write, and crossling's
    storage version); None for a file too short to have one."""
    with open(path, "rb") as handle:
        head = handle.read(_DUCKDB_MAGIC_AT + len(_DUCKDB_MAGIC) + 8)
    if len(head) < _DUCKDB_MAGIC_AT + len(_DUCKDB_MAGIC) + 8:
        return None
    return int.from_bytes(head[_DUCKDB_MAGIC_AT + len(_DUCKDB_MAGIC) :], "little")


#: The first DuckDB release that reads each storage version number a file header can have.
_FIRST_READER = {64: "1.1.0", 65: "1.2.0"}


def opens_in_duckdb(path: str | Path, recorded: str | None) -> str:
    """``">= 1.0.0"``: the DuckDB versions that open a store file, from its recorded storage version, or else
    from the number in its header."""
    from precompute.store.schema import OPENS_IN_DUCKDB

    if recorded == STORAGE_VERSION:
        return f">= {OPENS_IN_DUCKDB}"
    if recorded:
        return f">= {recorded.removeprefix('v')}"
    number = storage_number(path)
    if number in _FIRST_READER:
        return f">= {_FIRST_READER[number]}"
    return f"> 1.1 only (storage number {number}; rewritten as {STORAGE_VERSION} at its next write)"


def in_storage_version(path: str | Path) -> bool:
    """Whether a DuckDB file is in crossling's storage version (so a copy of it can be written as it is)."""
    return storage_number(path) == STORAGE_NUMBER


def sniff_format(path: Path) -> str | None:
    """None for a file that starts like a DuckDB database, else what it looks like (for the error line)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head[_DUCKDB_MAGIC_AT : _DUCKDB_MAGIC_AT + len(_DUCKDB_MAGIC)] == _DUCKDB_MAGIC:
        return None
    if not head:
        return "an empty file"
    for offset, magic, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the sample is still text
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 else None
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "a text file (CSV or similar)"
    if len(head) < _DUCKDB_MAGIC_AT + len(_DUCKDB_MAGIC):
        return "a file shorter than a DuckDB header"
    return "no DuckDB header"


def open_readonly(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open a published store read-only, checking that it is a crossling store of our schema.

    A store with live checkpoint parts (:mod:`precompute.store.parts`: a run in progress, or one killed before
    it packed) opens as :func:`open_snapshot` does, so every reader sees the checkpoints published so far.
    Raises the :class:`StoreError` subclass that says why not: missing, not DuckDB, not crossling, another
    schema version, code in the file, or half-written (damaged, or missing tables of the schema).
    """
    path = Path(path)
    _check_file(path)
    parts.check_folder(real_path(path), path)
    if parts.listed_parts(real_path(path)):
        return open_snapshot(path)
    try:
        con = connect(path, read_only=True)
    except duckdb.Error as exc:
        raise _unopenable(path, exc) from None
    try:
        check_store(con, path)
    except BaseException:
        con.close()
        raise
    return con


def _check_file(path: Path) -> None:
    """Refuse what is not a DuckDB file before DuckDB sees it (missing, a folder, a FIFO or device, SQLite, CSV...).

    Nothing but a regular file is ever opened: reading a FIFO would wait for a writer forever.
    """
    _check_path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise StoreMissingError(f"{path}: no such store") from None
    except OSError as exc:
        raise StoreMissingError(f"{path}: cannot read the store ({exc.strerror or _first_line(exc)})") from None
    _refuse_non_file(path, mode)
    try:
        looks_like = sniff_format(path)
    except OSError as exc:
        raise StoreMissingError(f"{path}: cannot read the store ({exc.strerror or _first_line(exc)})") from None
    if looks_like is not None:
        raise NotDuckDBError(f"{path}: not a readable DuckDB file ({looks_like})")


def _refuse_non_file(path: Path, mode: int) -> None:
    """A store is a regular file: a folder, FIFO, socket or device is refused before anything opens it."""
    if stat.S_ISDIR(mode):
        raise StoreMissingError(f"{path}: is a directory, not a DuckDB store")
    if not stat.S_ISREG(mode):
        raise StoreMissingError(f"{path}: is {_file_kind(mode)}, not a DuckDB store file")


def _file_kind(mode: int) -> str:
    """What a path that is not a regular file is, for the error line."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_path(path: Path) -> None:
    """Refuse a path DuckDB cannot open: it reads a backslash as a folder separator on every system."""
    for name in (os.path.abspath(path), str(real_path(path))):
        if "\\" in name:
            raise StoreMissingError(
                f"{path}: DuckDB cannot open a path with a backslash in it ({name}: it reads \\ as a folder "
                "separator); rename the file or folder"
            )


def check_output(path: str | Path) -> None:
    """Refuse an output path (a store to create or extend) that exists and is not a regular file, before
    anything opens it."""
    path = Path(path)
    _check_path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreMissingError(f"{path}: cannot use it as a store ({exc.strerror or _first_line(exc)})") from None
    _refuse_non_file(path, mode)


#: The database a snapshot's queries run in: views over the store file and its live parts (or the file itself).
SNAPSHOT_ALIAS = "crossling_store"
_BASE_ALIAS = "crossling_file"


def open_snapshot(path: str | Path, *, alias: str = SNAPSHOT_ALIAS) -> duckdb.DuckDBPyConnection:
    """The store as the path names it *now*, in a private in-memory DuckDB instance; its default database ``alias``.

    Without parts, the file itself is attached as ``alias``. With live parts, the file and each part are attached
    read-only and ``alias`` is an in-memory database of views, one per table: the file's rows, less the
    checkpoints a part replaces, then each part's rows, less those a later part replaces. Every file is checked
    as :func:`open_readonly` checks a store (the parts too: a part with SQL in it is refused). Open files stay
    readable after a pack deletes them, so a snapshot never changes under its reader; a pack that runs while
    the snapshot is being made is noticed (a listed part vanished) and the snapshot is made again.
    """
    path = Path(path)
    _check_file(path)
    target = real_path(path)
    parts.check_folder(target, path)
    for _ in range(20):
        listed = parts.listed_parts(target)
        con = _attach_snapshot(path, listed, alias)
        if con is not None:
            return con
    raise StoreError(f"{path}: it was repacked 20 times while being opened; try again")


def _attach_snapshot(path: Path, listed: dict[int, Path], alias: str) -> duckdb.DuckDBPyConnection | None:
    """One attempt of :func:`open_snapshot` with the parts ``listed`` beforehand; None when one vanished since."""
    base = alias if not listed else _BASE_ALIAS
    try:
        con = connect_attached({base: path}, use=base, also_allowed=list(listed.values()))
    except duckdb.Error as exc:
        raise _unopenable(path, exc) from None
    try:
        check_store(con, path)
        if not listed:
            return con
        attached = attach_parts(con, path, listed)
        if attached is None:
            con.close()
            return None
        live = live_parts(con, base, attached, path)
        for name in set(attached.values()) - set(live.values()):
            con.execute(f"DETACH {_ident(name)}")  # packed already, or replaced by a newer part
        con.execute(f"ATTACH ':memory:' AS {_ident(alias)}")
        con.execute(f"USE {_ident(alias)}")
        _create_union_views(con, base, live)
    except BaseException:
        con.close()
        raise
    return con


def snapshot_files(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The databases behind a snapshot with live parts (the store file's alias, then each part's, in order);
    [] for a connection to the store file alone."""
    names = [r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()]
    if _BASE_ALIAS not in names:
        return []
    seqs = sorted(int(n.removeprefix("crossling_part_")) for n in names if n.startswith("crossling_part_"))
    return [_BASE_ALIAS, *(f"crossling_part_{seq}" for seq in seqs)]


def attach_parts(con: duckdb.DuckDBPyConnection, path: Path, listed: dict[int, Path]) -> dict[int, str] | None:
    """Attach each listed part read-only (seq -> alias) and check it as a store is checked; None when one of them
    vanished since it was listed (a pack deleted it: the caller lists again). Keeps the current database."""
    current = con.execute("SELECT current_database()").fetchall()[0][0]
    attached: dict[int, str] = {}
    for seq, part in listed.items():
        name = f"crossling_part_{seq}"
        parts.check_part_file(part, path)  # a FIFO named like a part would block the ATTACH forever
        try:
            looks_like = sniff_format(part)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise HalfWrittenStoreError(f"{path}: checkpoint part {part.name} unreadable ({exc.strerror})") from None
        if looks_like is not None:  # the words the store file gets: a SQLite database, an empty file, ...
            raise NotDuckDBError(f"{path}: checkpoint part {part.name} is not a readable DuckDB file ({looks_like})")
        try:
            con.execute(f"ATTACH {repr_sql(os.path.abspath(part))} AS {_ident(name)} (READ_ONLY)")
        except duckdb.Error as exc:
            if not part.exists():
                return None
            raise HalfWrittenStoreError(
                f"{path}: checkpoint part {part.name} unreadable ({_first_line(exc)})"
            ) from None
        con.execute(f"USE {_ident(name)}")
        _check_part(con, path, part)
        attached[seq] = name
    con.execute(f"USE {_ident(current)}")
    return attached


def live_parts(
    con: duckdb.DuckDBPyConnection, base: str, attached: dict[int, str], path: str | Path = "the store"
) -> dict[int, str]:
    """The attached parts (seq -> alias) a reader must see (the rule: :mod:`precompute.store.parts`): those that
    prove they were written on top of the store file ``base`` as it is (its store id, generation and epoch, its
    run and that run's config), each the newest part of its checkpoint. Dead parts (older than the file) are left
    out; a foreign part raises :class:`ForeignPartError`, naming it. A file without a store id (written before
    ids existed) keeps the old rule for parts without one: the newest part of each checkpoint, unless the file
    holds that checkpoint with the same ``completed_at`` (packed already)."""
    file_meta = _meta(con, base)
    runs = {
        run_id: config
        for run_id, config in con.execute(f"SELECT run_id, config_json FROM {_ident(base)}.main.runs").fetchall()
    }
    packed = set(
        con.execute(f"SELECT run_id, checkpoint, completed_at FROM {_ident(base)}.main.checkpoints").fetchall()
    )
    newest: dict[tuple[str, str], tuple[int, Any]] = {}
    for seq, name in attached.items():
        rows = con.execute(f"SELECT run_id, checkpoint, completed_at FROM {_ident(name)}.main.checkpoints").fetchall()
        verdict = _part_verdict(file_meta, runs, packed, _meta(con, name), rows)
        if verdict == "dead":
            continue
        if verdict != "live":
            raise ForeignPartError(
                f"{path}: checkpoint part {seq:06d}.duckdb does not belong to this store file ({verdict}); it is "
                "not read, packed or deleted: move it out of the parts folder"
            )
        for run_id, checkpoint, completed in rows:
            if newest.get((run_id, checkpoint), (-1, None))[0] < seq:
                newest[(run_id, checkpoint)] = (seq, completed)
    legacy = parts.STORE_ID not in file_meta
    live = {seq for key, (seq, completed) in newest.items() if not (legacy and (*key, completed) in packed)}
    return {seq: name for seq, name in attached.items() if seq in live}


def config_sha256(config_json: str | None) -> str:
    """The fingerprint of a run's config as a part records it: of ``runs.config_json`` as the file stores it."""
    return hashlib.sha256((config_json or "").encode()).hexdigest()[:16]


def _meta(con: duckdb.DuckDBPyConnection, database: str) -> dict[str, str]:
    return dict(con.execute(f"SELECT key, value FROM {_ident(database)}.main.meta").fetchall())


def _part_verdict(
    file_meta: dict[str, str], runs: dict[str, str], packed: set[tuple], meta: dict[str, str], rows: list[tuple]
) -> str:
    """'live' (a candidate: still the newest-of-its-checkpoint test), 'dead', or why the part is foreign."""
    run_ids = sorted({r[0] for r in rows})
    strangers = [r for r in run_ids if r not in runs]
    if strangers:
        return f"its run {strangers[0]} is not a run of this store"
    file_id, part_id = file_meta.get(parts.STORE_ID), meta.get(parts.STORE_ID)
    if part_id is None:
        if file_id is None:
            return "live"  # both written before store ids: the old rule
        if rows and all(tuple(r) in packed for r in rows):
            return "dead"  # an old crossling's part, packed by the pack that gave the file its id
        return "it records no store id: written for another store file, by an older crossling"
    if file_id is None:
        return f"it was written on a store file with id {part_id[:12]}, and this file has none (an older copy?)"
    if part_id != file_id:
        return f"it belongs to another store (store id {part_id[:12]}, this file's {file_id[:12]})"
    try:
        part_gen, file_gen = int(meta.get(parts.STORE_GENERATION, "")), int(file_meta.get(parts.STORE_GENERATION, ""))
    except ValueError:
        return "its store generation is not a number"
    if part_gen < file_gen:
        return "dead"  # the file was published after it: packed already, or superseded by a newer file
    if part_gen > file_gen:
        return (
            f"it was written on generation {part_gen} of this store and the file is generation {file_gen}: "
            "the file was replaced by an older copy"
        )
    if meta.get(parts.STORE_EPOCH) != file_meta.get(parts.STORE_EPOCH):
        return f"it was written on another copy of this store file (generation {part_gen}, another epoch)"
    run_id = meta.get(parts.PART_RUN)
    if run_ids and run_ids != [run_id]:
        return f"its checkpoints are of run {', '.join(run_ids)}, its meta says run {run_id}"
    if run_id is not None and meta.get(parts.PART_CONFIG) != config_sha256(runs.get(run_id)):
        return f"it was computed with another config than run {run_id} of this store"
    return "live"


def _check_part(con: duckdb.DuckDBPyConnection, path: Path, part: Path) -> None:
    """A part (the connection's current database) holds only data of this schema version."""
    try:
        code, version = stored_code(con), schema_version(con)
    except (duckdb.Error, ValueError) as exc:
        raise HalfWrittenStoreError(f"{path}: checkpoint part {part.name}: {corrupt_reason(exc)}") from None
    if code:
        raise UnsafeStoreError(f"{path}: checkpoint part {part.name} is not crossling's: it defines {code[0]}")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(f"{path}: checkpoint part {part.name} has schema version {version}")
    problem = schema_problem(con, required=("meta", "checkpoints"))
    if problem:
        raise HalfWrittenStoreError(
            f"{path}: checkpoint part {part.name} is not a whole crossling part: {problem}; move it away"
        )


def _create_union_views(con: duckdb.DuckDBPyConnection, base: str, live: dict[int, str]) -> None:
    """One view per schema table in the current (in-memory) database: the file's rows, less the checkpoints a
    live part publishes, then the live parts' rows (each the newest of its checkpoint)."""
    databases = [base, *live.values()]
    present = {
        db: {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main'", [db]
            ).fetchall()
        }
        for db in databases
    }
    replaced = [
        pair
        for name in live.values()
        for pair in con.execute(f"SELECT DISTINCT run_id, checkpoint FROM {_ident(name)}.main.checkpoints").fetchall()
    ]
    for table in DDL:
        per_checkpoint = TABLES[table].scope == "checkpoint"
        selects = []
        for db in databases if per_checkpoint else [base]:
            if table not in present[db]:
                continue
            where = f" WHERE NOT ({_pairs_sql(replaced)})" if db == base and per_checkpoint and replaced else ""
            selects.append(f"SELECT * FROM {_ident(db)}.main.{_ident(table)}{where}")
        if selects:
            con.execute(f"CREATE VIEW {_ident(table)} AS " + " UNION ALL BY NAME ".join(selects))


def _pairs_sql(pairs: list[tuple[str, str]]) -> str:
    """``(run_id = 'r' AND checkpoint IN ('a', 'b')) OR ...`` for the given (run_id, checkpoint) pairs."""
    by_run: dict[str, list[str]] = {}
    for run_id, checkpoint in pairs:
        by_run.setdefault(run_id, []).append(checkpoint)
    return " OR ".join(
        f"(run_id = '{_sql_str(run)}' AND checkpoint IN ({', '.join(repr_sql(c) for c in sorted(set(cks)))}))"
        for run, cks in sorted(by_run.items())
    )


def repr_sql(text: str) -> str:
    """A SQL string literal."""
    return "'" + _sql_str(text) + "'"


def check_store(con: duckdb.DuckDBPyConnection, path: str | Path) -> None:
    """Refuse (with the right subclass) a connected database that is not a whole crossling store of our schema.

    Also used by the explorer on the file it attached, which may be newer than the one :func:`open_readonly`
    checked.
    """
    try:
        code = stored_code(con)
        version = schema_version(con)
        present = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = "
                "current_database() AND schema_name = 'main'"
            ).fetchall()
        }
    except (duckdb.Error, ValueError) as exc:
        raise _corrupt_error(exc)(f"{path}: {corrupt_reason(exc)}") from None
    if code:
        raise UnsafeStoreError(
            f"{path}: not a crossling store: it defines {code[0]}"
            f"{f' (and {len(code) - 1} more)' if len(code) > 1 else ''}; a store holds only tables of "
            "data, and crossling runs no SQL that comes from a file"
        )
    if version is None:
        if "meta" in present:
            raise NotCrosslingStoreError(f"{path}: not a crossling store (its meta table has no schema_version row)")
        raise NotCrosslingStoreError(f"{path}: not a crossling store (no meta table)")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: store schema version {version}, this crossling reads version {SCHEMA_VERSION}"
        )
    missing = [t for t in REQUIRED_TABLES if t not in present]
    if missing:
        raise HalfWrittenStoreError(
            f"{path}: an incomplete crossling store: no table {', '.join(missing[:3])}"
            f"{f' (and {len(missing) - 3} more)' if len(missing) > 3 else ''}, which schema version "
            f"{SCHEMA_VERSION} has; it was edited or damaged, copy or compute it again"
        )
    try:
        problem = schema_problem(con)
    except duckdb.Error as exc:
        raise HalfWrittenStoreError(f"{path}: {corrupt_reason(exc)}") from None
    if problem:
        raise HalfWrittenStoreError(
            f"{path}: not a whole crossling store: {problem}; it was edited or damaged, copy or compute it again"
        )


@functools.lru_cache(maxsize=1)
def _schema_columns() -> dict[str, dict[str, str]]:
    """table -> column -> type, of the schema as this crossling creates it (in a private in-memory database)."""
    from precompute.store.schema import create_schema

    con = duckdb.connect(":memory:", config=dict(LOCKDOWN))
    try:
        create_schema(con)
        return _columns_of(con)
    finally:
        con.close()


def _columns_of(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for table, column, sql_type in con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' ORDER BY table_name, column_index"
    ).fetchall():
        found.setdefault(table, {})[column] = sql_type
    return found


def schema_problem(con: duckdb.DuckDBPyConnection, required: Collection[str] = ()) -> str | None:
    """What the current database lacks or has wrong against the schema (None: nothing), in a few words:
    a ``required`` table missing, a column missing (columns added to the schema later may be missing), a column
    the schema does not have, or a column of another type. Tables of the schema it lacks are fine otherwise."""
    want, have = _schema_columns(), _columns_of(con)
    added = {(table, column) for table, column, _ in ADDED_COLUMNS}
    for table in required:
        if table not in have:
            return f"no table {table}"
    for table, columns in want.items():
        if table not in have:
            continue
        for column, sql_type in columns.items():
            got = have[table].get(column)
            if got is None and (table, column) not in added:
                return f"table {table} has no column {column} (schema version {SCHEMA_VERSION} has it)"
            if got is not None and got != sql_type:
                return f"column {table}.{column} is {got}, schema version {SCHEMA_VERSION} has {sql_type}"
        extra = [c for c in have[table] if c not in columns]
        if extra:
            return f"table {table} has a column {extra[0]} that schema version {SCHEMA_VERSION} does not have"
    return None


#: DuckDB's file header and its two database headers, 4 KiB each: a file shorter than this is no database.
_HEADERS_BYTES = 3 * 4096


def _unopenable(path: Path, exc: BaseException) -> StoreError:
    """Why DuckDB would not open ``path``: a file with whole DuckDB headers (the main header and the two database
    headers, 4 KiB each) that still cannot be opened is cut short or damaged (DuckDB reads past the headers at
    once for some storage versions); anything else is not a DuckDB file."""
    try:
        header_ok = path.stat().st_size >= _HEADERS_BYTES and sniff_format(path) is None
    except OSError:
        header_ok = False
    if header_ok:
        return HalfWrittenStoreError(f"{path}: {corrupt_reason(exc)}")
    return NotDuckDBError(f"{path}: not a readable DuckDB file ({_first_line(exc)})")


def _corrupt_error(exc: BaseException) -> type[StoreError]:
    """The type of :func:`corrupt_reason`'s verdict: a foreign schema row, or a file cut short / damaged."""
    return NotCrosslingStoreError if isinstance(exc, ValueError) else HalfWrittenStoreError


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
        raise HalfWrittenStoreError(f"{path}: {corrupt_reason(exc)}") from None


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


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row count of every schema table present in the store."""
    present = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    return {name: con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0] for name in DDL if name in present}
