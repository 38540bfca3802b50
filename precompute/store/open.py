"""Opening a published store read-only and safely: a store is data from someone else, never code.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from precompute.store.errors import (
    HalfWrittenStoreError,
    NotCrosslingStoreError,
    NotDuckDBError,
    SchemaVersionError,
    StoreError,
    StoreMissingError,
    UnsafeStoreError,
)
from precompute.store.schema import DDL, SCHEMA_VERSION, schema_version
from precompute.text import first_line as _first_line


def open_readonly(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open a published store read-only, checking that it is a crossling store of our schema."""
    path = Path(path)
    if not path.exists():
        raise StoreMissingError(f"{path}: no such store")
    if path.is_dir():
        raise StoreMissingError(f"{path}: is a directory, not a DuckDB store")
    try:
        con = duckdb.connect(str(path), read_only=True)
        # A store is data from someone else: SQL in it (views, macros) must not reach files or the network.
        con.execute("SET enable_external_access = false")
    except duckdb.Error as exc:
        raise NotDuckDBError(f"{path}: not a readable DuckDB file ({_first_line(exc)})") from None
    try:
        code = stored_code(con)
        version = schema_version(con)
    except (duckdb.Error, ValueError) as exc:
        con.close()
        raise _corrupt_error(exc)(f"{path}: {corrupt_reason(exc)}") from None
    if code:
        con.close()
        raise UnsafeStoreError(
            f"{path}: not a crossling store: it defines {code[0]}"
            f"{f' (and {len(code) - 1} more)' if len(code) > 1 else ''}; a store holds only tables of "
            "data, and crossling runs no SQL that comes from a file"
        )
    if version is None:
        con.close()
        raise NotCrosslingStoreError(f"{path}: not a crossling store (no meta table)")
    if version != SCHEMA_VERSION:
        con.close()
        raise SchemaVersionError(
            f"{path}: store schema version {version}, this crossling reads version {SCHEMA_VERSION}"
        )
    return con


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
    return {
        name: con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        for name in DDL
        if name in present
    }


