"""``precompute merge A B ... --out ALL``: combine the stores of a run's shards into one store.

Every input must hold the same run: the same model, concept set (sha256), settings (the config without its
checkpoint list and device, i.e. the run's fingerprint), dtype and MLP layout. Otherwise merge refuses with
one line naming the two files and what differs. ``ALL`` may already exist: if it holds the same run, the
inputs' new checkpoints are added to it; if it holds another run, merge refuses.

A checkpoint is never duplicated. When two inputs (or an input and ``ALL``) hold the same checkpoint, their
rows are compared table by table, ignoring only timings (``stage_timings``, ``checkpoints.completed_at``) and
where the checkpoint was loaded from (``checkpoints.source``, a path that differs between machines): identical
rows are kept once (from ``ALL``, else from the first input that has it); different rows are refused.

What merge keeps of the run-level rows: the ``runs`` row of ``ALL`` or of the first input, with
``started_at`` the earliest and ``finished_at`` the latest of all inputs, and ``device`` the distinct devices
of all inputs (``"cuda:0"`` or ``"cpu, cuda:0"``); ``meta`` keys of ``ALL`` or the first input, with
``created_at`` the earliest. ``languages``, ``concepts`` and ``sentences`` (equal, since the concept set is)
are copied once. Every other table with ``run_id`` and ``checkpoint`` columns (``precompute.store``'s
checkpoint tables, ``steering``, and tables added later) is copied per checkpoint.

The inputs are opened read-only (DuckDB ``ATTACH ... (READ_ONLY)``); the output is written through
`precompute.store.StoreWriter`, so it is published atomically and a second writer is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from rich.console import Console
from rich.markup import escape

from precompute.store.errors import StoreError
from precompute.store.identity import config_difference, run_difference
from precompute.store.lock import writer_active
from precompute.store.parts import newest_part
from precompute.store.read import PLAN_KEY, SHARD_KEY, RunProgress, read_progress, read_store_run, unfinished_hint
from precompute.store.schema import TABLES
from precompute.store.writer import StoreWriter

__all__ = ["MergeError", "MergeSummary", "config_difference", "merge_stores"]


class MergeError(StoreError):
    """Stores that cannot be merged; the message is one line naming the files and what differs."""


# Columns that record when or where something ran, not what it computed.
VOLATILE_COLUMNS: dict[str, set[str]] = {
    "stage_timings": {"seconds", "tokens_per_s", "peak_mem_mb"},
    "checkpoints": {"completed_at", "source"},
    "runs": {"started_at", "finished_at", "device", "packages_json"},
}
# Tables skipped when comparing a duplicated checkpoint (all of its columns are timings).
NOT_COMPARED = {"stage_timings"}


@dataclass
class _Input:
    path: Path
    alias: str
    run: dict
    checkpoints: dict[str, dict]  # checkpoint -> its checkpoints row
    layers: list[tuple]
    progress: RunProgress | None = None  # finished or not, what it was meant to hold (see precompute.store.read)


@dataclass
class MergeSummary:
    """What a merge did."""

    out: Path
    run_id: str
    added: dict[str, list[str]] = field(default_factory=dict)  # input path -> checkpoints taken from it
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint, input it was skipped in)
    warnings: list[str] = field(default_factory=list)
    planned: list[str] | None = None  # every checkpoint of the run, as its shards recorded it (None: not recorded)
    missing: list[str] = field(default_factory=list)  # planned checkpoints the merged store lacks

    @property
    def n_added(self) -> int:
        return sum(len(v) for v in self.added.values())


def _q(database: str, table: str) -> str:
    """A fully qualified table name in an attached database."""
    return f'"{database}".main.{table}'


def _describe_columns(con: duckdb.DuckDBPyConnection, table: str, database: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = 'main' "
        "AND table_name = ? ORDER BY column_index",
        [database, table],
    ).fetchall()
    return [r[0] for r in rows]


def _read_input(path: Path, alias: str) -> _Input:
    stored = read_store_run(path)  # a store cut short fails here, in one line, not mid-merge
    if newest_part(path):
        raise MergeError(
            f"{path}: has checkpoints in part files beside it ({path.name}.parts/), not packed into the file; "
            f"run `precompute pack {path}` first (or let its run finish)"
        )
    if stored is None:
        raise MergeError(f"{path}: holds no run (an empty store); nothing to merge")
    if "run_ids" in stored.run:
        ids = ", ".join(sorted(stored.run["run_ids"]))
        raise MergeError(f"{path}: holds several runs ({ids}); merge stores of one run each")
    return _Input(
        path=path,
        alias=alias,
        run=stored.run,
        checkpoints=stored.checkpoints,
        layers=stored.layers,
        progress=read_progress(path),
    )


def _check_finished(item: _Input, allow_partial: bool, summary: MergeSummary) -> None:
    """Refuse a shard whose run is unfinished (``runs.finished_at`` empty, or planned checkpoints missing), unless
    ``allow_partial``: merged, it would make the merged store look complete."""
    progress = item.progress
    if progress is None or not progress.unfinished:
        return
    what = progress.summary()
    if not allow_partial:
        raise MergeError(
            f"{item.path}: {what}; {unfinished_hint(item.path, progress)}; or pass --allow-partial to merge the "
            "checkpoints it holds (the merged store then records the missing ones and stays unfinished)"
        )
    summary.warnings.append(f"{item.path}: {what}; merging the {len(item.checkpoints)} checkpoint(s) it holds")


def _check_same_run(ref: _Input, other: _Input) -> None:
    """Refuse (one line naming both files) when two stores do not hold the same analysis (the store's rule)."""
    why = run_difference(
        other.run, ref.run, where_a=str(other.path), where_b=str(ref.path), layers_a=other.layers, layers_b=ref.layers
    )
    if why:
        raise MergeError(f"{other.path} cannot be merged with {ref.path}: {why}")


def _checkpoint_tables() -> list[str]:
    """The tables whose rows belong to one (run_id, checkpoint), checkpoints first (the schema's order)."""
    return sorted(
        (name for name, table in TABLES.items() if table.scope == "checkpoint"), key=lambda t: t != "checkpoints"
    )


def _table_exists(con: duckdb.DuckDBPyConnection, database: str, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?", [database, table]
        ).fetchone()[0]
    )


def _rows_differ(
    con: duckdb.DuckDBPyConnection,
    out_db: str,
    table: str,
    cols: list[str],
    a: str,
    b: str,
    run_id: str,
    checkpoint: str,
) -> bool:
    has_a, has_b = _table_exists(con, a, table), _table_exists(con, b, table)
    if not has_a and not has_b:
        return False
    select = ", ".join(cols)

    def side(db: str, present: bool) -> str:
        if present:
            return f"SELECT {select} FROM {_q(db, table)} WHERE run_id = $run AND checkpoint = $ck"
        return f"SELECT {select} FROM {_q(out_db, table)} WHERE false"

    sql = (
        f"SELECT (SELECT count(*) FROM ({side(a, has_a)} EXCEPT ALL {side(b, has_b)})) + "
        f"(SELECT count(*) FROM ({side(b, has_b)} EXCEPT ALL {side(a, has_a)}))"
    )
    return con.execute(sql, {"run": run_id, "ck": checkpoint}).fetchone()[0] > 0


def merge_stores(
    inputs: list[Path], out: Path, *, console: Console | None = None, allow_partial: bool = False
) -> MergeSummary:
    """Merge the stores ``inputs`` (shards of one run) into ``out`` (created, or extended if it holds the run).

    An input whose run is unfinished is refused unless ``allow_partial``; the merged store records the run's
    planned checkpoints (``meta.planned_checkpoints``, from the inputs) and is finished only when it holds them all.
    """
    console = console or Console(stderr=True)
    out = Path(out)
    if not inputs:
        raise MergeError("merge: name at least one input store")
    paths: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise MergeError(f"{path}: no such store")
        if out.exists() and os.path.samefile(path, out):
            continue  # ALL is already the base of the merge
        if any(os.path.samefile(path, p) for p in paths):
            raise MergeError(f"{path}: named twice")
        paths.append(path)
    items = [_read_input(p, f"s{i}") for i, p in enumerate(paths)]
    base = _read_input(out, "main") if out.exists() else None
    ref = base or (items[0] if items else None)
    if ref is None:
        raise MergeError(f"merge: the only input is the output {out}; nothing to merge")
    for item in items:
        if item is not ref:
            _check_same_run(ref, item)
    summary = MergeSummary(out=out, run_id=ref.run["run_id"])
    for item in items:
        _check_finished(item, allow_partial, summary)
        if writer_active(item.path):
            console.print(
                f"[yellow]warning:[/] {escape(str(item.path))} is still being written; merging the checkpoints it "
                "has published",
                soft_wrap=True,
            )
    run_id = ref.run["run_id"]
    packages = {i.run.get("packages_json") for i in items + ([base] if base else [])}
    if len(packages) > 1:
        summary.warnings.append(
            "the inputs were computed with different package versions (runs.packages_json); "
            f"keeping those of {ref.path}"
        )

    # Which input provides each checkpoint; duplicates are checked against their first holder.
    holder: dict[str, _Input] = {}
    if base:
        for name in base.checkpoints:
            holder[name] = base
    taken: dict[str, list[str]] = {str(i.path): [] for i in items}
    duplicates: list[tuple[str, _Input, _Input]] = []
    for item in items:
        for name in item.checkpoints:
            if name in holder:
                duplicates.append((name, holder[name], item))
            else:
                holder[name] = item
                taken[str(item.path)].append(name)

    with StoreWriter(out) as writer, writer.transaction(attach={i.alias: i.path for i in items}) as con:
        out_db = con.execute("SELECT current_database()").fetchone()[0]
        if base is not None:
            base.alias = out_db
        tables = _checkpoint_tables()
        # 1. duplicates: identical rows or refuse.
        for name, first, second in duplicates:
            a, b = first.alias, second.alias
            for key in ("step", "revision", "tokens_seen", "source_fingerprint"):
                va, vb = first.checkpoints[name].get(key), second.checkpoints[name].get(key)
                if key == "source_fingerprint" and (va is None or vb is None):
                    continue  # a store written before fingerprints were recorded: the rows decide
                if va != vb:
                    raise MergeError(
                        f"checkpoint {name!r} is in {first.path} and {second.path} with different {key} "
                        f"({first.checkpoints[name].get(key)} vs {second.checkpoints[name].get(key)}); "
                        "remove it from one of them"
                    )
            for table in tables:
                if table in NOT_COMPARED or table == "checkpoints":
                    continue
                cols = [c for c in _describe_columns(con, table, out_db) if c not in VOLATILE_COLUMNS.get(table, set())]
                if _rows_differ(con, out_db, table, cols, a, b, run_id, name):
                    raise MergeError(
                        f"checkpoint {name!r} is in {first.path} and {second.path} with different rows "
                        f"(table {table}); remove it from one of them"
                    )
            summary.duplicates.append((name, str(second.path)))

        # 2. run-level rows (once).
        for item in items:
            _copy_global(con, out_db, item.alias)
        if base is None:
            a = items[0].alias
            for table in ("runs", "layers"):
                cols = _common_columns(con, out_db, table, a)
                con.execute(
                    f"INSERT INTO {_q(out_db, table)} ({cols}) SELECT {cols} FROM {_q(a, table)} WHERE run_id = ?",
                    [run_id],
                )
        stores = items + ([base] if base else [])
        summary.planned = _merged_plan(stores)
        merged = set(holder)
        summary.missing = [c for c in summary.planned or [] if c not in merged]
        _merge_run_row(con, out_db, run_id, stores, complete=_complete(stores, summary))
        _merge_created_at(con, out_db, items)
        _merge_plan(con, out_db, summary.planned)

        # 3. checkpoints, table by table, from the input that holds each.
        for item in items:
            names = taken[str(item.path)]
            if not names:
                continue
            for table in tables:
                if not _table_exists(con, item.alias, table):
                    continue
                cols = _common_columns(con, out_db, table, item.alias)
                con.execute(
                    f"INSERT INTO {_q(out_db, table)} ({cols}) SELECT {cols} FROM {_q(item.alias, table)} "
                    "WHERE run_id = ? AND list_contains(?, checkpoint)",
                    [run_id, names],
                )
    summary.added = {k: v for k, v in taken.items()}
    return summary


def _common_columns(con: duckdb.DuckDBPyConnection, out_db: str, table: str, alias: str) -> str:
    out_cols = _describe_columns(con, table, out_db)
    in_cols = set(_describe_columns(con, table, alias))
    return ", ".join(c for c in out_cols if c in in_cols)


def _copy_global(con: duckdb.DuckDBPyConnection, out_db: str, alias: str) -> None:
    """meta (keys not yet present), languages, concepts, sentences (rows whose key is not yet present): the
    run-level tables keyed by one column, less runs (its one row is merged by :func:`_merge_run_row`)."""
    keys = {
        name: table.key[0]
        for name, table in TABLES.items()
        if table.scope == "run" and len(table.key) == 1 and name != "runs"
    }
    for table, key in keys.items():
        if not _table_exists(con, alias, table):
            continue
        cols = _common_columns(con, out_db, table, alias)
        con.execute(
            f"INSERT INTO {_q(out_db, table)} ({cols}) SELECT {cols} FROM {_q(alias, table)} AS src "
            f"WHERE NOT EXISTS (SELECT 1 FROM {_q(out_db, table)} AS dst WHERE dst.{key} = src.{key})"
        )


def _merged_plan(stores: list[_Input]) -> list[str] | None:
    """Every checkpoint any store's run planned, in the order they list them (None: none recorded a plan)."""
    plans = [s.progress.planned for s in stores if s.progress is not None and s.progress.planned is not None]
    if not plans:
        return None
    out: list[str] = []
    for plan in plans:
        out += [c for c in plan if c not in out]
    return out


def _complete(stores: list[_Input], summary: MergeSummary) -> bool:
    """The merged run is finished when it holds every planned checkpoint (or, with no plan recorded, when every
    store's run finished)."""
    if summary.planned is not None:
        return not summary.missing
    return all(s.run.get("finished_at") is not None for s in stores)


def _merge_plan(con: duckdb.DuckDBPyConnection, out_db: str, planned: list[str] | None) -> None:
    """The merged store's plan: the whole run (a merged store is no shard), as the run itself records it."""
    con.execute(f"DELETE FROM {_q(out_db, 'meta')} WHERE key = ?", [SHARD_KEY])
    if planned is not None:
        con.execute(f"INSERT OR REPLACE INTO {_q(out_db, 'meta')} VALUES (?, ?)", [PLAN_KEY, json.dumps(planned)])


def _merge_run_row(
    con: duckdb.DuckDBPyConnection, out_db: str, run_id: str, stores: list[_Input], *, complete: bool = True
) -> None:
    started = [s.run.get("started_at") for s in stores if s.run.get("started_at") is not None]
    finished = [s.run.get("finished_at") for s in stores if s.run.get("finished_at") is not None]
    if not complete:
        finished = []  # runs.finished_at stays empty: the merged store does not hold the whole run
    devices = sorted({s.run.get("device") for s in stores if s.run.get("device")})
    con.execute(
        f"UPDATE {_q(out_db, 'runs')} SET started_at = ?, finished_at = ?, device = ? WHERE run_id = ?",
        [
            min(started) if started else None,
            max(finished) if finished else None,
            ", ".join(devices) if devices else None,
            run_id,
        ],
    )


def _merge_created_at(con: duckdb.DuckDBPyConnection, out_db: str, items: list[_Input]) -> None:
    values = []
    for db in [out_db] + [item.alias for item in items]:
        if _table_exists(con, db, "meta"):
            values += [
                r[0] for r in con.execute(f"SELECT value FROM {_q(db, 'meta')} WHERE key = 'created_at'").fetchall()
            ]
    if values:
        con.execute(f"INSERT OR REPLACE INTO {_q(out_db, 'meta')} VALUES ('created_at', ?)", [min(values)])
