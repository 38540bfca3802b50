"""The reads that ``info``, ``report``, the writer and the merge need, in one place next to the schema.

Each opens the store read-only through :func:`precompute.store.open.open_readonly` (so every refusal is a typed
:class:`StoreError` with one line), and turns a damaged value (a provenance column that is not JSON) into one
line naming the store, never a raw parser error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from precompute.store.errors import HalfWrittenStoreError
from precompute.store.open import (
    _ident,
    corrupt_reason,
    open_readonly,
    opens_in_duckdb,
    snapshot_files,
    table_counts,
    verify_readable,
)
from precompute.store.schema import DDL, checkpoint_order, polars_schema
from precompute.text import listed


@contextmanager
def _reading(path: str | Path, *, verify: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A checked read-only connection; a block that turns out damaged mid-read is one typed line too."""
    con = open_readonly(path)
    try:
        if verify:
            verify_readable(con, path)  # a store cut short on its way here fails now, not half-way through
        yield con
    except duckdb.Error as exc:  # opened, but a block is missing or damaged
        raise HalfWrittenStoreError(f"{path}: {corrupt_reason(exc)}") from None
    finally:
        con.close()


def _dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def read_runs(path: str | Path) -> list[dict[str, Any]]:
    """Every ``runs`` row of a store, as dicts (oldest first)."""
    with _reading(path) as con:
        return _dicts(con, "SELECT * FROM runs ORDER BY started_at NULLS LAST, run_id")


def read_meta(path: str | Path) -> dict[str, str]:
    """The store's ``meta`` table as a dict."""
    with _reading(path) as con:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())


def read_checkpoint_fingerprints(path: str | Path, run_id: str) -> dict[str, str | None]:
    """The run's published checkpoints -> the fingerprint of the weights each was computed from (None: unknown,
    e.g. a store written before fingerprints were recorded)."""
    with _reading(path) as con:
        fp = "source_fingerprint" if "source_fingerprint" in _columns(con, "checkpoints") else "NULL"
        rows = con.execute(f"SELECT checkpoint, {fp} FROM checkpoints WHERE run_id = ?", [run_id]).fetchall()
    return {r[0]: r[1] for r in rows}


@dataclass
class StoreRun:
    """The one run of a store with its checkpoints and MLP layout: what a merge compares."""

    path: Path
    run: dict[str, Any]
    checkpoints: dict[str, dict[str, Any]]  # checkpoint -> its checkpoints row
    layers: list[tuple]


def read_store_run(path: str | Path) -> StoreRun | None:
    """The store's single run (None for a store that holds no run); several runs are refused by the caller."""
    with _reading(path, verify=True) as con:
        runs = _dicts(con, "SELECT * FROM runs ORDER BY run_id")
        if len(runs) != 1:
            return StoreRun(Path(path), {"run_ids": [r["run_id"] for r in runs]}, {}, []) if runs else None
        run = runs[0]
        checkpoints = {
            r["checkpoint"]: r for r in _dicts(con, "SELECT * FROM checkpoints WHERE run_id = ?", [run["run_id"]])
        }
        layers = con.execute(
            "SELECT layer, n_neurons, hidden_size, module_path FROM layers WHERE run_id = ? ORDER BY layer",
            [run["run_id"]],
        ).fetchall()
    return StoreRun(Path(path), run, checkpoints, layers)


def table_sizes(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Approximate bytes on disk of each schema table, from DuckDB's storage metadata (no data is read).

    A table's share of a file is its blocks; a block shared by several small tables counts for each a
    fraction. Tables only in memory (never checkpointed) count 0. A snapshot with checkpoint parts sums the
    store file and its live parts.
    """
    current = con.execute("SELECT current_database()").fetchall()[0][0]
    files = snapshot_files(con)
    sizes: dict[str, int] = {}
    try:
        for database in files or [current]:
            con.execute(f"USE {_ident(database)}")
            for table, size in _file_table_sizes(con).items():
                sizes[table] = sizes.get(table, 0) + size
    finally:
        con.execute(f"USE {_ident(current)}")
    return {t: sizes[t] for t in DDL if t in sizes}


def _file_table_sizes(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """`table_sizes` of the current database, one file."""
    present = [t for t in DDL if t in {r[0] for r in con.execute("SHOW TABLES").fetchall()}]
    if not present:
        return {}
    block_size = con.execute(
        "SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
    ).fetchone()[0]
    union = " UNION ALL ".join(
        f"SELECT '{t}' AS t, block_id AS b FROM pragma_storage_info('{t}') WHERE persistent AND block_id >= 0 "
        f"UNION ALL SELECT '{t}', unnest(additional_block_ids) FROM pragma_storage_info('{t}') WHERE persistent"
        for t in present
    )
    rows = con.execute(
        f"WITH used AS (SELECT DISTINCT t, b FROM ({union})), shared AS (SELECT b, count(*) AS n FROM used GROUP BY b) "
        "SELECT t, sum(1.0 / n) FROM used JOIN shared USING (b) GROUP BY t"
    ).fetchall()
    share = dict(rows)
    return {t: round(share.get(t, 0.0) * block_size) for t in present}


def _packages(value: Any, path: str | Path, run_id: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except (TypeError, ValueError) as exc:
        raise HalfWrittenStoreError(
            f"{path}: runs.packages_json of run {run_id} is not valid JSON ({exc}); the store is damaged"
        ) from None
    if not isinstance(data, dict):
        raise HalfWrittenStoreError(
            f"{path}: runs.packages_json of run {run_id} is not a JSON object; the store is damaged"
        )
    return data


def _json_or_empty(value: str | None) -> dict[str, Any]:
    """An optional JSON object kept in ``meta`` (absent or unreadable: shown as not recorded, never a failure)."""
    try:
        data = json.loads(value) if value else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------------------------------
# Unfinished runs: what a run was meant to hold (recorded in ``meta`` when it starts) and what it holds.

#: meta key: the run's checkpoints as a JSON list of names, every shard's (what the whole run is meant to hold).
PLAN_KEY = "planned_checkpoints"
#: meta key, only in a shard's store: ``{"shard": "I/N", "checkpoints": [...]}`` (what this store is meant to hold).
SHARD_KEY = "planned_shard"


def plan_meta(
    planned: list[str], shard: str | None = None, shard_checkpoints: list[str] | None = None
) -> dict[str, str | None]:
    """The meta rows that record a run's plan (None: the key is removed, e.g. no shard)."""
    return {
        PLAN_KEY: json.dumps(list(planned)),
        SHARD_KEY: json.dumps({"shard": shard, "checkpoints": list(shard_checkpoints or [])}) if shard else None,
    }


def _names(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list) else None


@dataclass
class RunProgress:
    """How far a store's run got: finished or not (``runs.finished_at``), what it was meant to hold, what it holds."""

    finished: bool
    present: list[str]
    planned: list[str] | None = None  # the whole run's checkpoints (None: not recorded, an older store)
    shard: str | None = None
    shard_planned: list[str] | None = None

    @property
    def own_plan(self) -> list[str] | None:
        """What this store was meant to hold: its shard's checkpoints, or the whole run's."""
        return self.shard_planned if self.shard else self.planned

    @property
    def missing(self) -> list[str]:
        """Checkpoints this store was meant to hold and lacks."""
        have = set(self.present)
        return [c for c in self.own_plan or [] if c not in have]

    @property
    def run_missing(self) -> list[str]:
        """Checkpoints of the whole run this store lacks (a finished shard lacks the other shards')."""
        have = set(self.present)
        return [c for c in self.planned or [] if c not in have]

    @property
    def unfinished(self) -> bool:
        return not self.finished or bool(self.missing)

    def summary(self) -> str | None:
        """One sentence for info, report, merge and the explorer (None: a finished, complete run)."""
        held = len(self.present)
        missing = self.missing
        own = self.own_plan
        where = f" of shard {self.shard}" if self.shard else ""
        if self.unfinished:
            head = "unfinished run (runs.finished_at is empty)" if not self.finished else "incomplete run"
            if own is None:
                return (
                    f"{head}: it holds {held} checkpoint(s); how many it was meant to hold was not recorded "
                    "(a store written before crossling recorded it)"
                )
            if not missing:
                return (
                    f"{head}: it holds all {len(own)} planned checkpoint(s){where} but stopped before it was "
                    "marked finished (run the same command again to mark it)"
                )
            return (
                f"{head}: it holds {len(own) - len(missing)} of the {len(own)} planned checkpoint(s){where}; "
                f"missing {len(missing)}: {listed(missing)}"
            )
        if self.shard and self.run_missing:
            return (
                f"shard {self.shard} of a run of {len(self.planned or [])} checkpoints: it holds its "
                f"{len(own or [])}; the other {len(self.run_missing)} ({listed(self.run_missing)}) are in the "
                "other shards' stores (`precompute merge` them)"
            )
        return None


def run_progress(meta: dict[str, Any], finished_at: Any, present: list[str]) -> RunProgress:
    """`RunProgress` from a store's ``meta`` (key -> value), its run's ``finished_at`` and its checkpoints."""
    try:
        planned = _names(json.loads(meta[PLAN_KEY])) if meta.get(PLAN_KEY) else None
    except (TypeError, ValueError):
        planned = None
    try:
        shard = json.loads(meta[SHARD_KEY]) if meta.get(SHARD_KEY) else None
    except (TypeError, ValueError):
        shard = None
    shard = shard if isinstance(shard, dict) and isinstance(shard.get("shard"), str) else None
    return RunProgress(
        finished=finished_at is not None,
        present=list(present),
        planned=planned,
        shard=shard["shard"] if shard else None,
        shard_planned=_names(shard.get("checkpoints")) if shard else None,
    )


def unfinished_hint(path: str | Path, progress: RunProgress) -> str:
    """What to do about an unfinished store: wait for its writer, or where its checkpoints went."""
    from precompute.store.lock import writer_active
    from precompute.store.parts import newest_part

    path = Path(path)
    if writer_active(path):
        return "a precompute is writing it now; it publishes one checkpoint at a time"
    if progress.missing and not newest_part(path):
        return (
            f"no precompute is writing it and no {path.name}.parts/ folder is beside it: if it was copied from "
            "where it ran, the checkpoints a stopped run published are in that folder there (copy it along, or "
            "run `precompute pack` there first); otherwise run the same `precompute run` again to finish it"
        )
    return "no precompute is writing it: run the same `precompute run` again to finish it"


def read_progress(path: str | Path) -> RunProgress | None:
    """The `RunProgress` of a store's one run (None for a store with no run or several)."""
    with _reading(path) as con:
        runs = con.execute("SELECT run_id, finished_at FROM runs").fetchall()
        if len(runs) != 1:
            return None
        present = [
            r[0]
            for r in con.execute(
                f"SELECT checkpoint FROM checkpoints WHERE run_id = ? ORDER BY {checkpoint_order()}", [runs[0][0]]
            ).fetchall()
        ]
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    return run_progress(meta, runs[0][1], present)


def _progress_line(path: str | Path, progress: RunProgress) -> str | None:
    line = progress.summary()
    if line and progress.unfinished:
        line += f"; {unfinished_hint(path, progress)}"
    return line


def store_info(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary of a store (keys: model, checkpoints, languages, concepts, tables, ...)."""
    with _reading(path, verify=True) as con:
        runs = con.execute(
            "SELECT run_id, model_id, model_card, device, dtype, concept_set_sha256, packages_json, "
            "started_at, finished_at FROM runs ORDER BY started_at"
        ).fetchall()
        checkpoints = con.execute(
            f"SELECT checkpoint, step, revision, tokens_seen FROM checkpoints ORDER BY {checkpoint_order()}"
        ).fetchall()
        languages = [r[0] for r in con.execute("SELECT lang FROM languages ORDER BY lang").fetchall()]
        concepts = [r[0] for r in con.execute("SELECT concept_id FROM concepts ORDER BY concept_id").fetchall()]
        # Stages in the order the pipeline ran them (rows in insertion order); views over parts have no rowid.
        order = "stage" if snapshot_files(con) else "min(rowid)"
        timings = con.execute(
            "SELECT stage, sum(seconds), avg(tokens_per_s), max(peak_mem_mb) FROM stage_timings "
            f"GROUP BY stage ORDER BY {order}"
        ).fetchall()
        parts = len(snapshot_files(con)[1:])
        meta = dict(con.execute("SELECT key, value FROM meta ORDER BY key").fetchall())
        tables = table_counts(con)
        sizes = table_sizes(con)
    model = runs[0][1] if runs else None
    progress = run_progress(meta, runs[0][8], [c[0] for c in checkpoints]) if len(runs) == 1 else None
    return {
        "store": str(path),
        "schema_version": int(meta.get("schema_version", 0)),
        "storage_version": meta.get("storage_version"),
        "opens_in_duckdb": opens_in_duckdb(path, meta.get("storage_version")),
        "model": model,
        "runs": [
            {
                "run_id": r[0],
                "model_id": r[1],
                "model_card": r[2],
                "device": r[3],
                "dtype": r[4],
                "concept_set_sha256": r[5],
                "packages": _packages(r[6], path, r[0]),
                "started_at": str(r[7]),
                "finished_at": str(r[8]) if r[8] else None,
            }
            for r in runs
        ],
        "checkpoints": [{"checkpoint": c[0], "step": c[1], "revision": c[2], "tokens_seen": c[3]} for c in checkpoints],
        "languages": languages,
        "concepts": concepts,
        "concept_set": {
            "sha256": runs[0][5] if runs else None,
            "provenance": _json_or_empty(meta.get("concept_set_provenance")),
        },
        "tables": tables,
        "table_bytes": sizes,
        "file_bytes": Path(path).stat().st_size,
        "unpacked_parts": parts,  # checkpoints published as part files, not yet packed into the store file
        # The run's progress: finished (runs.finished_at set), what it was meant to hold (recorded when it started;
        # None in stores written before that), what it lacks, and one sentence saying so (None when complete).
        "finished": None if progress is None else not progress.unfinished,
        "planned_checkpoints": None if progress is None else progress.own_plan,
        "missing_checkpoints": None if progress is None else progress.missing,
        "shard": None if progress is None else progress.shard,
        "progress": None if progress is None else _progress_line(path, progress),
        "stage_timings": [{"stage": t[0], "seconds": t[1], "tokens_per_s": t[2], "peak_mem_mb": t[3]} for t in timings],
    }


# --------------------------------------------------------------------------------------------------
# What steering reads (``precompute steer STORE``, ``precompute.steering.stage``): the run, its config,
# checkpoints, experts, the concepts' sentences (surface forms) and the steering rows already stored.


def _steering_frame(con: duckdb.DuckDBPyConnection, sql: str, params: list, schema: dict[str, Any]) -> Any:
    """A query's rows as a polars frame of the given schema (independent of duckdb's arrow/polars API)."""
    import polars as pl

    return pl.DataFrame(con.execute(sql, params).fetchall(), schema=dict(schema), orient="row")


def _declared_types(table: str, *columns: str) -> dict[str, Any]:
    """The polars types the schema declares for some of ``table``'s columns, in the order given."""
    types = polars_schema(table, without=())
    return {column: types[column] for column in columns}


def steering_inputs(path: str | Path) -> dict[str, Any]:
    """The store's one run as steering needs it.

    Keys: settings (the run's facts, ``precompute.store.facts.run_settings``), run_id, model_id, config (the
    run config as a dict, from ``runs.config_json``), checkpoints (a frame: checkpoint, step, revision, source,
    in training order), langs (the run's languages that have sentences, in config order), concepts (ids,
    sorted), shared_counts (frame: checkpoint, concept_id, n).
    """
    import polars as pl

    from precompute.store.errors import StoreError
    from precompute.store.facts import run_settings

    con = open_readonly(path)
    try:
        runs = con.execute("SELECT run_id, model_id, config_json FROM runs ORDER BY run_id").fetchall()
        if not runs:
            raise StoreError(f"{path}: holds no run yet (run `precompute run` first)")
        if len(runs) > 1:
            raise StoreError(f"{path}: holds several runs ({', '.join(r[0] for r in runs)})")
        settings = run_settings(con, runs[0][0])
        run_id = settings.run_id
        checkpoints = _steering_frame(
            con,
            "SELECT checkpoint, step, revision, source FROM checkpoints WHERE run_id = ? "
            f"ORDER BY {checkpoint_order()}",
            [run_id],
            _declared_types("checkpoints", "checkpoint", "step", "revision", "source"),
        )
        sentence_langs = [r[0] for r in con.execute("SELECT DISTINCT lang FROM sentences ORDER BY lang").fetchall()]
        concepts = [r[0] for r in con.execute("SELECT concept_id FROM concepts ORDER BY concept_id").fetchall()]
        shared_counts = _steering_frame(
            con,
            "SELECT checkpoint, concept_id, count(*) AS n FROM shared_experts WHERE run_id = ? "
            "GROUP BY checkpoint, concept_id",
            [run_id],
            {**_declared_types("shared_experts", "checkpoint", "concept_id"), "n": pl.Int64},  # n: count(*)
        )
    finally:
        con.close()
    langs = [x for x in settings.config_languages if x in sentence_langs] or sentence_langs
    return {
        "settings": settings,
        "run_id": run_id,
        "model_id": settings.model_id,
        "config": settings.config,
        "checkpoints": checkpoints,
        "langs": langs,
        "concepts": concepts,
        "shared_counts": shared_counts,
    }


def steering_sentences(path: str | Path, concept_ids: list[str]) -> Any:
    """The concepts' sentences with a span (concept_id, lang, text, span_start, span_end): their surface forms."""

    con = open_readonly(path)
    try:
        return _steering_frame(
            con,
            "SELECT concept_id, lang, text, span_start, span_end FROM sentences "
            "WHERE span_start IS NOT NULL AND span_end IS NOT NULL AND list_contains(?, concept_id) "
            "ORDER BY sentence_id",
            [list(concept_ids)],
            _declared_types("sentences", "concept_id", "lang", "text", "span_start", "span_end"),
        )
    finally:
        con.close()


def concept_experts(
    path: str | Path, run_id: str, checkpoint: str, langs: list[str], concept_ids: list[str], max_rank: int
) -> Any:
    """neuron_ap rows (lang, concept_id, layer, unit, ap, rank, median_pos_act) with rank <= max_rank."""

    con = open_readonly(path)
    try:
        return _steering_frame(
            con,
            "SELECT lang, concept_id, layer, unit, ap, rank, median_pos_act FROM neuron_ap WHERE run_id = ? "
            "AND checkpoint = ? AND list_contains(?, lang) AND list_contains(?, concept_id) AND rank <= ? "
            "ORDER BY lang, concept_id, rank, layer, unit",
            [run_id, checkpoint, list(langs), list(concept_ids), int(max_rank)],
            _declared_types("neuron_ap", "lang", "concept_id", "layer", "unit", "ap", "rank", "median_pos_act"),
        )
    finally:
        con.close()


def steering_rows_at(path: str | Path, run_id: str, checkpoint: str, schema: dict[str, Any]) -> Any:
    """The ``steering`` rows of one checkpoint as a frame of ``schema`` (its columns, polars types)."""
    con = open_readonly(path)
    try:
        return _steering_frame(
            con,
            f"SELECT {', '.join(schema)} FROM steering WHERE run_id = ? AND checkpoint = ?",
            [run_id, checkpoint],
            schema,
        )
    finally:
        con.close()
