"""The physical order of each table's rows within one checkpoint: what the explorer's filters can skip on.

DuckDB keeps the min and max of every column per row group (122,880 rows) and skips the row groups a filter
excludes; within a row group it skips the vectors (2,048 rows) where the filter column matches nothing. A
checkpoint's rows of a table are inserted together, in the order of the frame handed to the writer, so that
order decides which of the explorer's filters read a few row groups and which read the whole checkpoint (or,
for the queries over training, the whole table). The writer calls :func:`checkpoint_frames` on a checkpoint's
frames before it inserts them: it adds the derived tables and puts every frame in its table's order; nothing else
about a table changes (same rows, same columns), and readers never depend on the order for their results, only
for their speed.

``neuron_ap`` is concept-major, for the Concepts and Compare pages (one concept at one checkpoint, or over
training); its copy ``neuron_ap_by_unit`` (the same rows less ``median_pos_act``, derived here, so every writer
of a checkpoint writes it) is unit-major, for the Neuron page (one unit over training). At BLOOM-7b1 scale (1.6 M
rows a checkpoint) the opposite order makes either side read all 64 M rows of 40 checkpoints
(``benchmarks/bench_explorer_queries.py --bloom7b1``).
"""

from __future__ import annotations

import polars as pl

from precompute.store.schema import DERIVED_TABLES, polars_schema

#: Sort keys per table (tables not listed keep the order they were computed in).
ORDER: dict[str, tuple[str, ...]] = {
    # top_units, compare_checkpoints, expert_significance, unit_emergence(concept): one concept's rows are
    # adjacent, each language's top-K list in rank order.
    "neuron_ap": ("concept_id", "lang", "rank"),
    # neuron_ap_history, unit_emergence(unit), similar_units: one unit's rows are adjacent.
    "neuron_ap_by_unit": ("layer", "unit", "concept_id", "lang"),
}


def store_order(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (one checkpoint's rows of ``table``) sorted as the table is laid out; the frame itself for tables
    that need no order. A stable sort: rows equal on the keys keep their order."""
    keys = ORDER.get(table)
    if not keys or frame.height < 2 or not set(keys) <= set(frame.columns):
        return frame
    return frame.sort(list(keys), maintain_order=True)


def derived_columns(table: str) -> tuple[str, ...]:
    """The columns of its source table that the derived ``table`` carries, in its order (less run_id and
    checkpoint, which the writer adds)."""
    return tuple(polars_schema(table))


#: The columns of neuron_ap that its copy neuron_ap_by_unit carries (all but median_pos_act).
NEURON_AP_BY_UNIT_COLUMNS = derived_columns("neuron_ap_by_unit")


def checkpoint_frames(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """One checkpoint's frames as the store writes them: plus each derived table (``DERIVED_TABLES``: so far
    ``neuron_ap_by_unit`` from ``neuron_ap``) where its source is given and it is not, each in its table's order
    (:func:`store_order`)."""
    out = dict(tables)
    for derived, source in DERIVED_TABLES.items():
        if source in out and derived not in out:
            out[derived] = out[source].select(derived_columns(derived))
    return {name: store_order(name, frame) for name, frame in out.items()}
