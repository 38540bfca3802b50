"""The store schema's one declaration (precompute.store.schema.TABLES) and what is derived from it.

The reference page docs/store.md is generated from it and must match; the DDL derived from it creates exactly the
declared tables in DuckDB; the lists the writer, the readers and the merge use agree with it; the polars types a
stage's frames carry are the table's; a store built by the synthetic builder is a whole store of the schema.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import polars as pl
import pytest

from precompute.steering.stage import STEERING_SCHEMA
from precompute.store import connect
from precompute.store.layout import NEURON_AP_BY_UNIT_COLUMNS, checkpoint_frames
from precompute.store.open import schema_problem
from precompute.store.schema import (
    ADDED_COLUMNS,
    CHECKPOINT_TABLES,
    DDL,
    DERIVED_TABLES,
    MLP_LAYER_TABLES,
    REGENERATE,
    REQUIRED_TABLES,
    STAGES,
    TABLES,
    create_schema,
    polars_schema,
    schema_markdown,
    stage_of,
)
from tests.support.synthetic_store import build_synthetic_store

DOC = Path(__file__).resolve().parents[2] / "docs" / "store.md"


def _created(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str, bool]]]:
    """table -> [(column, type, nullable)] of the tables of the current database's main schema."""
    found: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, sql_type, is_nullable in con.execute(
        "SELECT table_name, column_name, data_type, is_nullable FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' ORDER BY table_name, column_index"
    ).fetchall():
        found.setdefault(table, []).append((column, sql_type, is_nullable))
    return found


def test_docs_store_md_is_the_generated_text():
    assert DOC.is_file(), f"docs/store.md is missing: write it with `{REGENERATE}`"
    assert DOC.read_text(encoding="utf-8") == schema_markdown(), (
        f"docs/store.md differs from the store schema's declaration: regenerate it with `{REGENERATE}`"
    )


def test_generated_doc_names_every_table_and_column():
    text = schema_markdown()
    for name, table in TABLES.items():
        assert f"\n## {name}\n" in text
        for column in table.columns:
            assert f"| `{column.name}` | {column.sql_type} |" in text


def test_ddl_creates_exactly_the_declared_columns_types_and_keys():
    con = duckdb.connect(":memory:")
    create_schema(con)
    created = _created(con)
    assert sorted(created) == sorted(TABLES)
    for name, table in TABLES.items():
        want = [(c.name, c.sql_type, not (c.not_null or c.name in table.key)) for c in table.columns]
        assert created[name] == want, name
    keys = {
        table: tuple(columns)
        for table, columns in con.execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE schema_name = 'main' AND constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    }
    assert keys == {name: table.key for name, table in TABLES.items() if table.key}
    assert list(DDL) == list(TABLES)
    con.close()


def test_a_store_created_before_the_added_columns_gains_them_in_the_declared_order():
    """A store of this schema version written before the added columns had them appended by create_schema: its
    tables end up as a fresh store's, so both pass schema_problem alike."""
    con = duckdb.connect(":memory:")
    added = {(table, column) for table, column, _ in ADDED_COLUMNS}
    for name, table in TABLES.items():
        older = [c for c in table.columns if (name, c.name) not in added]
        con.execute(dataclasses.replace(table, columns=tuple(older)).ddl())
    assert schema_problem(con) is None  # added columns may be missing
    create_schema(con)
    fresh = duckdb.connect(":memory:")
    create_schema(fresh)
    assert _created(con) == _created(fresh)
    assert schema_problem(con) is None
    con.close()
    fresh.close()


def test_every_checkpoint_table_has_run_id_and_checkpoint():
    for name, table in TABLES.items():
        if table.scope == "checkpoint":
            assert table.column_names[:2] == ("run_id", "checkpoint"), name
    assert set(CHECKPOINT_TABLES) == {n for n, t in TABLES.items() if t.scope == "checkpoint"} - {"checkpoints"}


def test_table_lists_follow_from_the_declaration():
    assert REQUIRED_TABLES == ("meta", "runs", "checkpoints", "languages", "concepts", "sentences", "layers")
    assert DERIVED_TABLES == {"neuron_ap_by_unit": "neuron_ap"}
    assert set(MLP_LAYER_TABLES) == {
        "layers",
        "neuron_ap",
        "neuron_ap_by_unit",
        "neuron_summary",
        "shared_experts",
        "language_neurons",
        "neuron_counts",
        "unit_top_contexts",
        "unit_response_hist",
        "unit_output_tokens",
        "unit_language_profile",
        "unit_sample_contexts",
    }
    assert all("layer" in TABLES[t].column_names for t in MLP_LAYER_TABLES)
    assert {stage_of(t) for t in CHECKPOINT_TABLES} <= set(STAGES) - {"run"}
    assert stage_of("neuron_ap") == "experts" and stage_of("steering") == "steering"
    assert stage_of("stage_timings") == "timings" and stage_of("no_such_table") is None


def test_polars_schema_of_steering_matches_its_ddl_and_the_steering_stage():
    con = duckdb.connect(":memory:")
    con.execute(DDL["steering"])
    ddl_columns = [r[0] for r in con.execute("DESCRIBE steering").fetchall()]
    con.close()
    full = polars_schema("steering", without=())
    assert list(full) == ddl_columns
    assert list(polars_schema("steering")) == ddl_columns[2:]
    empty = pl.DataFrame(schema=full)
    con = duckdb.connect(":memory:")
    con.execute(DDL["steering"])
    con.register("frame", empty.to_arrow())
    con.execute("INSERT INTO steering SELECT * FROM frame")  # positional: same columns, types cast by DuckDB
    con.close()
    assert polars_schema("steering", without=("run_id",)) == STEERING_SCHEMA


def test_polars_schema_refuses_an_unknown_table():
    with pytest.raises(KeyError, match="no table"):
        polars_schema("not_a_table")


def test_derived_table_is_its_source_less_the_columns_it_drops():
    assert NEURON_AP_BY_UNIT_COLUMNS == tuple(polars_schema("neuron_ap_by_unit"))
    source = pl.DataFrame(
        {
            "lang": ["en"],
            "concept_id": ["c"],
            "layer": [0],
            "unit": [3],
            "ap": [0.5],
            "rank": [1],
            "median_pos_act": [1.0],
        },
        schema=polars_schema("neuron_ap"),
    )
    frames = checkpoint_frames({"neuron_ap": source})
    assert frames["neuron_ap_by_unit"].schema == pl.Schema(polars_schema("neuron_ap_by_unit"))


def test_synthetic_store_is_a_whole_store_of_every_declared_table(tmp_path):
    path = build_synthetic_store(tmp_path / "store.duckdb", checkpoints=2)
    con = connect(path)
    try:
        assert schema_problem(con, required=list(TABLES)) is None
        counts = {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in TABLES}
    finally:
        con.close()
    empty = [name for name, n in counts.items() if n == 0]
    assert empty == [], f"tables the synthetic store leaves empty: {empty}"
