"""What a store holds: model, checkpoints, languages, concepts, tables with row counts, stage timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from precompute.store import (
    StoreError,
    checkpoint_order,
    corrupt_reason,
    open_readonly,
    table_counts,
    verify_readable,
)


def store_info(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary of a store (keys: model, checkpoints, languages, concepts, tables, ...)."""
    con = open_readonly(path)
    try:
        verify_readable(con, path)  # a store cut short on its way here fails now, not half-way through
        runs = con.execute(
            "SELECT run_id, model_id, model_card, device, dtype, concept_set_sha256, packages_json, "
            "started_at, finished_at FROM runs ORDER BY started_at"
        ).fetchall()
        checkpoints = con.execute(
            "SELECT checkpoint, step, revision, tokens_seen FROM checkpoints "
            f"ORDER BY {checkpoint_order()}"
        ).fetchall()
        languages = [r[0] for r in con.execute("SELECT lang FROM languages ORDER BY lang").fetchall()]
        concepts = [
            r[0] for r in con.execute("SELECT concept_id FROM concepts ORDER BY concept_id").fetchall()
        ]
        timings = con.execute(
            "SELECT stage, sum(seconds), avg(tokens_per_s), max(peak_mem_mb) FROM stage_timings "
            "GROUP BY stage ORDER BY min(rowid)"
        ).fetchall()
        meta = dict(con.execute("SELECT key, value FROM meta ORDER BY key").fetchall())
        tables = table_counts(con)
    except duckdb.Error as exc:  # opened, but a block is missing or damaged
        raise StoreError(f"{path}: {corrupt_reason(exc)}") from None
    finally:
        con.close()
    model = runs[0][1] if runs else None
    return {
        "store": str(path),
        "schema_version": int(meta.get("schema_version", 0)),
        "model": model,
        "runs": [
            {
                "run_id": r[0], "model_id": r[1], "model_card": r[2], "device": r[3], "dtype": r[4],
                "concept_set_sha256": r[5], "packages": json.loads(r[6]),
                "started_at": str(r[7]), "finished_at": str(r[8]) if r[8] else None,
            }
            for r in runs
        ],
        "checkpoints": [
            {"checkpoint": c[0], "step": c[1], "revision": c[2], "tokens_seen": c[3]}
            for c in checkpoints
        ],
        "languages": languages,
        "concepts": concepts,
        "tables": tables,
        "stage_timings": [
            {"stage": t[0], "seconds": t[1], "tokens_per_s": t[2], "peak_mem_mb": t[3]}
            for t in timings
        ],
    }
