"""The notebook read API (``explorer.api``) on the explorer's synthetic test store: each answer checked
against the raw tables, and bad input refused with a clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from explorer import queries as Q
from explorer.api import Store, open_store
from precompute.store import NotDuckDBError, StoreError, StoreMissingError, UnsafeStoreError, connect
from tests.support.synthetic_store import MODEL_ID, RUN_ID, build_synthetic_store


@pytest.fixture(scope="module")
def store_path(synthetic_store) -> Path:
    return synthetic_store  # tests/conftest.py: 4 checkpoints, 3 languages, 3 concepts, top-10


@pytest.fixture(scope="module")
def store(store_path):
    with open_store(store_path) as s:
        yield s


def raw(path: Path, sql: str, params: list | None = None) -> pl.DataFrame:
    # The store's locked-down configuration: DuckDB refuses a second connection to one file with another.
    with connect(path) as con:
        return con.sql(sql, params=params or None).pl()


def test_opens_the_run_and_its_settings(store, store_path):
    assert isinstance(store, Store) and store.run_id == RUN_ID and store.run_ids == [RUN_ID]
    assert store.top_k == 10 and store.min_langs == 2
    assert store.runs()["model_id"].to_list() == [MODEL_ID]
    steps = raw(store_path, "SELECT checkpoint FROM checkpoints ORDER BY step")["checkpoint"].to_list()
    assert store.checkpoint_names == steps and len(steps) == 4
    assert store.languages()["lang"].to_list() == sorted(raw(store_path, "SELECT lang FROM languages")["lang"])
    assert store.concepts().height == 3 and store.layers().height >= 1
    counts = dict(store.table_counts().iter_rows())
    assert counts["neuron_ap"] == raw(store_path, "SELECT count(*) AS n FROM neuron_ap")["n"][0]


def test_experts_of_a_concept_per_language_and_checkpoint(store, store_path):
    last = store.checkpoint_names[-1]
    one = store.experts("monday", last, k=3)
    expected = raw(
        store_path,
        "SELECT lang, rank, layer, unit, ap FROM neuron_ap WHERE checkpoint = ? "
        "AND concept_id = 'monday' AND rank <= 3 ORDER BY lang, rank",
        [last],
    )
    assert one.select("lang", "rank", "layer", "unit", "ap").equals(expected)
    # Default: the run's K, at every checkpoint, in training order.
    every = store.experts("monday")
    assert every.columns[:2] == ["checkpoint", "step"]
    assert every["checkpoint"].unique(maintain_order=True).to_list() == store.checkpoint_names
    n_langs = store.languages().height
    assert (
        every.height
        == raw(store_path, "SELECT count(*) AS n FROM neuron_ap WHERE concept_id = 'monday' AND rank <= 10")["n"][0]
        == 4 * n_langs * 10
    )
    assert every.filter(pl.col("checkpoint") == last).drop("checkpoint", "step").equals(store.experts("monday", last))


def test_the_same_answers_as_the_pages(store, store_path):
    last = store.checkpoint_names[-1]
    con = store._con
    assert store.shared_experts("monday").equals(Q.shared_experts(con, RUN_ID, last, "monday", 2, 500))
    assert store.compare("monday", store.checkpoint_names[0], last, 5).equals(
        Q.compare_checkpoints(con, RUN_ID, "monday", store.checkpoint_names[0], last, 5)
    )
    assert store.concept_overlap("monday").equals(Q.concept_overlap_history(con, RUN_ID, "monday"))
    assert store.language_experts("de", k=2).height == 3 * 2


def test_a_units_history(store, store_path):
    layer, unit, n = raw(
        store_path, "SELECT layer, unit, count(*) AS n FROM neuron_ap GROUP BY ALL ORDER BY n DESC, layer, unit LIMIT 1"
    ).row(0)
    hist = store.unit_history(layer, unit)
    assert hist.height == n
    assert hist["checkpoint"].unique(maintain_order=True).to_list() == [
        c for c in store.checkpoint_names if c in set(hist["checkpoint"])
    ]
    summary = store.unit_summary(layer, unit)
    assert summary["checkpoint"].to_list() == store.checkpoint_names
    assert set(store.unit_shared_history(layer, unit)["checkpoint"]) <= set(store.checkpoint_names)
    top = store.top_shared_units(limit=5)
    assert top.height <= 5 and (top["max_langs"] >= 2).all()


def test_overlap_over_training(store, store_path):
    ov = store.overlap_over_training()
    assert ov["checkpoint"].to_list() == store.checkpoint_names
    expected = raw(
        store_path,
        "SELECT checkpoint, avg(jaccard) AS j FROM expert_overlap WHERE lang_a <> lang_b GROUP BY checkpoint",
    )
    got = dict(zip(ov["checkpoint"], ov["mean_jaccard"]))
    for ck, j in expected.iter_rows():
        assert got[ck] == pytest.approx(j)
    matrix = store.concept_overlap("monday", store.checkpoint_names[-1])
    langs = store.languages().height
    assert matrix.height == langs * langs
    assert matrix.filter(pl.col("lang_a") == pl.col("lang_b"))["jaccard"].to_list() == [1.0] * langs


def test_probe_grid(store, store_path):
    assert store.representations()[0] == "mean"
    grid = store.probe_grid()
    expected = raw(store_path, "SELECT count(*) AS n FROM probe_results WHERE representation = 'mean'")["n"][0]
    assert grid.height == expected
    assert grid["checkpoint"].unique(maintain_order=True).to_list() == store.checkpoint_names
    per_lang = store.probe_languages(checkpoint=store.checkpoint_names[0], layer=0)
    assert set(per_lang["lang"]) == set(store.languages()["lang"])


def test_bad_names_are_refused_not_empty(store):
    with pytest.raises(KeyError, match="no checkpoint 'global_step_nope'"):
        store.experts("monday", "global_step_nope")
    with pytest.raises(ValueError, match="at least 1"):
        store.experts("monday", k=0)


def test_bad_stores_raise_the_stores_own_errors(tmp_path, store_path):
    with pytest.raises(StoreMissingError):
        open_store(tmp_path / "nope.duckdb")
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database\n" * 50)
    with pytest.raises(NotDuckDBError):
        open_store(junk)
    sneaky = tmp_path / "sneaky.duckdb"
    shutil.copyfile(store_path, sneaky)
    with duckdb.connect(str(sneaky)) as con:
        con.execute("CREATE VIEW top AS SELECT * FROM neuron_ap")
    with pytest.raises(UnsafeStoreError):
        open_store(sneaky)
    with pytest.raises(StoreError, match="no run 'other'"):
        open_store(store_path, run_id="other")


def test_optional_analyses_absent(tmp_path):
    bare = build_synthetic_store(tmp_path / "bare.duckdb", optional_tables=False, checkpoints=2)
    with open_store(bare) as s:
        assert s.compression().height == 0 and s.steering().height == 0
        assert s.experts("monday").height > 0
