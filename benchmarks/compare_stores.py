"""Whether two stores hold the same numbers: per table, its row count and a hash over all its columns.

    .venv/bin/python benchmarks/compare_stores.py BEFORE.duckdb AFTER.duckdb

What a refactor must leave unchanged (run ``precompute demo`` before and after, into two files, and compare).
Left out, because they differ between any two builds: timestamps (TIMESTAMP columns and ``created_at``), the
store's identity in ``meta`` (store id, epoch, generation), the crossling version, ``stage_timings`` (wall times;
only its row count is compared) and the packages/device of ``runs``. lingua's output-language confidence varies in
the 15th digit between identical runs (its own summation order), so it is compared to 12 decimals. Rows are
compared as sets (sorted by every column). Exit status 1 when a table differs.
"""

from __future__ import annotations

import hashlib
import sys

import duckdb

TIMING_TABLES = {"stage_timings"}
META_SKIPPED = ("created_at", "store_id", "store_epoch", "store_generation", "crossling_version")
ROUNDED = {"output_lang_confidence": 12}


def digest(path: str) -> dict[str, tuple[int, str]]:
    """table -> (rows, hash of its rows) for one store file."""
    con = duckdb.connect(path, read_only=True)
    try:
        out: dict[str, tuple[int, str]] = {}
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall():
            n = con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
            if table in TIMING_TABLES:
                out[table] = (n, "timings: count only")
                continue
            if table == "meta":
                keys = ", ".join(f"'{k}'" for k in META_SKIPPED)
                rows = con.execute(f"SELECT key, value FROM meta WHERE key NOT IN ({keys}) ORDER BY 1").fetchall()
            elif table == "runs":
                rows = con.execute(
                    "SELECT run_id, model_id, model_card, config_json, concept_set_sha256 FROM runs ORDER BY 1"
                ).fetchall()
            else:
                columns = [
                    name
                    for name, kind in con.execute(
                        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
                        "ORDER BY column_index",
                        [table],
                    ).fetchall()
                    if kind != "TIMESTAMP"
                ]
                select = ", ".join(f'round("{c}", {ROUNDED[c]})' if c in ROUNDED else f'"{c}"' for c in columns)
                rows = con.execute(f'SELECT {select} FROM "{table}" ORDER BY ALL').fetchall()
            out[table] = (n, hashlib.sha256(repr(rows).encode()).hexdigest()[:16])
        return out
    finally:
        con.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    before, after = digest(argv[0]), digest(argv[1])
    differ = 0
    for table in sorted(set(before) | set(after)):
        same = before.get(table) == after.get(table)
        differ += not same
        print(f"{'same' if same else 'DIFF'}  {table:24s} {before.get(table)}  {after.get(table)}")
    print("every table identical" if not differ else f"{differ} table(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
