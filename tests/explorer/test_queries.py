"""Every query of ``explorer.queries`` against a small synthetic store built here, checked against an
independent computation on the raw tables."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from explorer import queries as Q
from precompute.store import StoreError, open_readonly
from tests.support.synthetic_store import RUN_ID, build_synthetic_store

LANGS = ("en", "de", "fr", "es")
CONCEPTS = ("monday", "tuesday", "march", "april")
K = 8
N_LAYERS = 3
N_UNITS = 32
N_CKPT = 3
MIN_LANGS = 2


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_synthetic_store(
        tmp_path_factory.mktemp("q") / "store.duckdb",
        n_layers=N_LAYERS,
        n_units=N_UNITS,
        checkpoints=N_CKPT,
        languages=LANGS,
        concepts=CONCEPTS,
        k=K,
        min_langs=MIN_LANGS,
        seed=3,
    )


@pytest.fixture(scope="module")
def con(store):
    c = open_readonly(store)
    yield c
    c.close()


@pytest.fixture(scope="module")
def raw(store):
    """Whole tables as polars frames, for the independent computations."""
    # open_readonly, as the `con` fixture: one process holds one file with one configuration.
    with open_readonly(store) as c:

        def table(name: str) -> pl.DataFrame:
            return c.sql(f"SELECT * FROM {name}").pl()

        yield table


CKPTS = [f"global_step{s}" for s in (0, 1000, 2000)]


def test_store_overview_queries(con, store):
    assert dict(Q.meta(con).iter_rows())["schema_version"] == "1"
    counts = dict(Q.table_counts(con).iter_rows())
    assert counts["neuron_ap"] == N_CKPT * len(LANGS) * len(CONCEPTS) * K
    assert counts["neuron_summary"] == N_CKPT * N_LAYERS * N_UNITS
    assert Q.missing_tables(con) == []
    assert Q.runs(con)["run_id"].to_list() == [RUN_ID]
    settings = Q.run_settings(con, RUN_ID)
    assert settings["top_k"] == K and settings["min_langs"] == MIN_LANGS
    assert Q.languages(con)["lang"].to_list() == sorted(LANGS)
    cc = Q.concepts(con)
    assert cc["concept_id"].to_list() == sorted(CONCEPTS)
    assert (cc["n_sentences"] == 2 * len(LANGS)).all()
    assert Q.layers(con, RUN_ID)["n_neurons"].to_list() == [N_UNITS] * N_LAYERS
    sc = Q.sentence_counts(con)
    assert sc["n_concepts"].to_list() == [len(CONCEPTS)] * len(LANGS)
    ex = Q.concept_sentences(con, "monday", None, 1)
    assert ex.height == len(LANGS) and ex["text"].str.contains("monday").all()
    assert Q.concept_sentences(con, "monday", "de", 5)["lang"].unique().to_list() == ["de"]
    assert set(Q.stage_timings(con, RUN_ID)["stage"]) == {"extract", "probes", "experts", "alignment"}


def test_checkpoints_in_training_order(con, store, tmp_path):
    ck = Q.checkpoints(con, RUN_ID)
    assert ck["checkpoint"].to_list() == CKPTS
    assert ck["position"].to_list() == [0, 1, 2]
    # A checkpoint without a step sorts after those with one.
    copy = tmp_path / "nullstep.duckdb"
    shutil.copyfile(store, copy)
    with duckdb.connect(str(copy)) as c:
        c.execute("UPDATE checkpoints SET step = NULL WHERE checkpoint = 'global_step0'")
    with duckdb.connect(str(copy), read_only=True) as c:
        assert Q.checkpoints(c, RUN_ID)["checkpoint"].to_list() == CKPTS[1:] + CKPTS[:1]


def test_probe_queries(con, raw):
    assert Q.representations(con, RUN_ID) == ["mean", "token"]
    grid = Q.probe_grid(con, RUN_ID, "mean")
    assert grid.height == N_CKPT * (N_LAYERS + 1)
    assert grid["checkpoint"].unique(maintain_order=True).to_list() == CKPTS
    expected = raw("probe_results").filter(pl.col("representation") == "mean")
    assert grid["accuracy"].sum() == pytest.approx(expected["accuracy"].sum())
    by_layer = Q.probe_languages(con, RUN_ID, "mean", CKPTS[1], None)
    assert by_layer.height == (N_LAYERS + 1) * len(LANGS) and set(by_layer["checkpoint"]) == {CKPTS[1]}
    by_ckpt = Q.probe_languages(con, RUN_ID, "token", None, 2)
    assert by_ckpt.height == N_CKPT * len(LANGS) and set(by_ckpt["layer"]) == {2}
    f1 = Q.language_probe_f1(con, RUN_ID, "de")
    assert f1.height == N_CKPT * (N_LAYERS + 1) * 2


def test_overlap_queries(con, raw):
    ov = raw("expert_overlap")
    summary = Q.overlap_summary(con, RUN_ID)
    assert summary["checkpoint"].to_list() == CKPTS
    for row in summary.iter_rows(named=True):
        part = ov.filter(pl.col("checkpoint") == row["checkpoint"])
        assert row["mean_jaccard"] == pytest.approx(part["jaccard"].mean())
        assert row["k"] == K and row["n_concepts"] == len(CONCEPTS)
    # Synthetic experts become shared over training.
    assert summary["mean_jaccard"][-1] > summary["mean_jaccard"][0]

    m = Q.concept_overlap_matrix(con, RUN_ID, CKPTS[-1], "march")
    assert m.height == len(LANGS) ** 2
    d = {(a, b): j for a, b, j in m.select("lang_a", "lang_b", "jaccard").iter_rows()}
    for a in LANGS:
        assert d[(a, a)] == 1.0
        for b in LANGS:
            assert d[(a, b)] == pytest.approx(d[(b, a)])
    pair = ov.filter((pl.col("checkpoint") == CKPTS[-1]) & (pl.col("concept_id") == "march")).row(0, named=True)
    assert d[(pair["lang_a"], pair["lang_b"])] == pytest.approx(pair["jaccard"])

    hist = Q.concept_overlap_history(con, RUN_ID, "march")
    n_pairs = len(LANGS) * (len(LANGS) - 1) // 2
    assert hist.height == N_CKPT * n_pairs
    assert (hist["lang_a"] < hist["lang_b"]).all()
    ranking = Q.concept_overlap_ranking(con, RUN_ID, CKPTS[-1])
    assert sorted(ranking["concept_id"]) == sorted(CONCEPTS)
    assert ranking["mean_jaccard"].is_sorted(descending=True)


def test_overlap_matrix_tolerates_both_orderings(store, tmp_path):
    copy = tmp_path / "both.duckdb"
    shutil.copyfile(store, copy)
    with duckdb.connect(str(copy)) as c:
        c.execute(
            "INSERT INTO expert_overlap BY NAME SELECT run_id, checkpoint, concept_id, lang_b AS lang_a, "
            "lang_a AS lang_b, k, jaccard, spearman_ap, over_k FROM expert_overlap"
        )
    with duckdb.connect(str(copy), read_only=True) as c, open_readonly(store) as o:
        a = Q.concept_overlap_matrix(c, RUN_ID, CKPTS[1], "monday")
        b = Q.concept_overlap_matrix(o, RUN_ID, CKPTS[1], "monday")
        assert a.equals(b)
        assert Q.overlap_summary(c, RUN_ID)["mean_jaccard"].to_list() == pytest.approx(
            Q.overlap_summary(o, RUN_ID)["mean_jaccard"].to_list()
        )


def test_top_units(con, raw):
    units = Q.top_units(con, RUN_ID, CKPTS[1], "tuesday", 3)
    assert units.height == 3 * len(LANGS)
    assert units.filter(pl.col("lang") == "de")["rank"].to_list() == [1, 2, 3]
    expected = (
        raw("neuron_ap")
        .filter((pl.col("checkpoint") == CKPTS[1]) & (pl.col("concept_id") == "tuesday") & (pl.col("rank") == 1))
        .sort("lang")
    )
    got = units.filter(pl.col("rank") == 1).sort("lang")
    assert got.select("lang", "layer", "unit").equals(expected.select("lang", "layer", "unit"))
    assert (got["ap"] >= units.filter(pl.col("rank") == 2).sort("lang")["ap"]).all()


def test_shared_experts(con, raw):
    shared = Q.shared_experts(con, RUN_ID, CKPTS[-1], "monday", 3, 500)
    assert (shared["n_langs_topk"] >= 3).all()
    assert shared["n_langs_topk"].is_sorted(descending=True)
    # Independent: units in the top-K of >= 3 languages.
    ap = raw("neuron_ap").filter((pl.col("checkpoint") == CKPTS[-1]) & (pl.col("concept_id") == "monday"))
    counts = ap.group_by("layer", "unit").len().filter(pl.col("len") >= 3)
    assert shared.height == counts.height
    assert Q.shared_experts(con, RUN_ID, CKPTS[-1], "monday", 1, 2).height <= 2
    hist = Q.shared_expert_history(con, RUN_ID, "monday")
    assert hist["checkpoint"].to_list() == CKPTS
    n_last = (
        raw("shared_experts").filter((pl.col("checkpoint") == CKPTS[-1]) & (pl.col("concept_id") == "monday")).height
    )
    assert hist["n_shared"][-1] == n_last


def test_compare_checkpoints(con, raw):
    diff = Q.compare_checkpoints(con, RUN_ID, "april", CKPTS[0], CKPTS[-1], K)
    for lang in LANGS:
        part = diff.filter(pl.col("lang") == lang)
        n = dict(part.group_by("status").len().iter_rows())
        assert n.get("stayed", 0) + n.get("left", 0) == K
        assert n.get("stayed", 0) + n.get("entered", 0) == K
    ap = raw("neuron_ap").filter((pl.col("concept_id") == "april") & (pl.col("lang") == "en"))
    a = set(ap.filter(pl.col("checkpoint") == CKPTS[0]).select("layer", "unit").iter_rows())
    b = set(ap.filter(pl.col("checkpoint") == CKPTS[-1]).select("layer", "unit").iter_rows())
    en = diff.filter(pl.col("lang") == "en")
    assert set(en.filter(pl.col("status") == "entered").select("layer", "unit").iter_rows()) == b - a
    assert set(en.filter(pl.col("status") == "left").select("layer", "unit").iter_rows()) == a - b
    stayed = en.filter(pl.col("status") == "stayed")
    assert stayed["rank_a"].is_not_null().all() and stayed["rank_b"].is_not_null().all()


def test_neuron_queries(con, raw):
    ap_all = raw("neuron_ap")
    layer, unit = (
        ap_all.group_by("layer", "unit")
        .len()
        .sort(["len", "layer", "unit"], descending=[True, False, False])
        .row(0)[:2]
    )
    hist = Q.neuron_ap_history(con, RUN_ID, layer, unit)
    expected = ap_all.filter((pl.col("layer") == layer) & (pl.col("unit") == unit))
    assert hist.height == expected.height > 0
    assert hist["checkpoint"].unique(maintain_order=True).to_list() == [
        c for c in CKPTS if c in set(expected["checkpoint"])
    ]
    summ = Q.neuron_summary_history(con, RUN_ID, layer, unit)
    assert summ["checkpoint"].to_list() == CKPTS
    assert (summ["max_ap"] >= summ["mean_ap"]).all()
    shared = Q.neuron_shared_history(con, RUN_ID, layer, unit)
    exp_shared = raw("shared_experts").filter((pl.col("layer") == layer) & (pl.col("unit") == unit))
    assert shared.height == exp_shared.height
    assert Q.neuron_ap_history(con, RUN_ID, N_LAYERS + 5, 0).height == 0
    top = Q.top_shared_neurons(con, RUN_ID, CKPTS[-1], 5)
    assert 0 < top.height <= 5 and top["max_langs"].is_sorted(descending=True)
    best = raw("shared_experts").filter(pl.col("checkpoint") == CKPTS[-1])["n_langs_topk"].max()
    assert top["max_langs"][0] == best


def test_language_queries(con, raw):
    ex = Q.language_experts(con, RUN_ID, "fr", CKPTS[-1], 3)
    assert ex.height == len(CONCEPTS) * 3
    shared = raw("shared_experts").filter(pl.col("checkpoint") == CKPTS[-1])
    for row in ex.iter_rows(named=True):
        match = shared.filter(
            (pl.col("concept_id") == row["concept_id"])
            & (pl.col("layer") == row["layer"])
            & (pl.col("unit") == row["unit"])
        )
        if match.height:
            assert row["n_langs_topk"] == match["n_langs_topk"][0] and "fr" in row["langs"].split(",")
        else:
            assert row["n_langs_topk"] is None
    sharing = Q.language_sharing(con, RUN_ID, "fr")
    assert sharing.height == N_CKPT * len(CONCEPTS)
    # Independent: of fr's top-K units per (checkpoint, concept), those top-K in >= MIN_LANGS languages.
    ap = raw("neuron_ap")
    n_langs = ap.group_by("checkpoint", "concept_id", "layer", "unit").len("n")
    fr = ap.filter(pl.col("lang") == "fr").join(n_langs, on=["checkpoint", "concept_id", "layer", "unit"])
    expected = fr.group_by("checkpoint", "concept_id").agg((pl.col("n") >= MIN_LANGS).sum().alias("e"))
    got = sharing.join(expected, on=["checkpoint", "concept_id"])
    assert got.height == sharing.height
    assert (got["n_shared"] == got["e"]).all()


def test_later_stage_queries(con, raw):
    assert Q.similarity_metrics(con, RUN_ID) == ["matched_cosine", "mismatched_cosine"]
    by_layer = Q.similarity_by_layer(con, RUN_ID, "matched_cosine")
    assert by_layer.height == N_CKPT * (N_LAYERS + 1)
    pairs = Q.similarity_pairs(con, RUN_ID, CKPTS[0], 1, "matched_cosine")
    assert pairs.height == len(LANGS) * (len(LANGS) - 1)
    comp = Q.compression(con, RUN_ID)
    assert comp.height == raw("compression").height and set(comp["scope"]) == {"all", *LANGS}
    counts = Q.neuron_counts(con, RUN_ID)
    assert set(counts["kind"]) == {"language_specific", "shared_expert"}
    ln = Q.language_neuron_counts(con, RUN_ID)
    assert ln["n"].sum() == raw("language_neurons").height
    rows = Q.language_neurons(con, RUN_ID, CKPTS[0], 1000)
    assert rows["lape"].is_sorted()
    steer = Q.steering(con, RUN_ID)
    assert steer.height == raw("steering").height == 12
    summ = Q.steering_summary(con, RUN_ID)
    assert summ["n_outputs"].sum() == 12
    late = summ.filter((pl.col("checkpoint") == CKPTS[-1]) & (pl.col("n_neurons") > 0)).row(0, named=True)
    assert late["concept_rate"] == 1.0 and late["main_output_lang"] == "en"


def test_every_page_query_runs_on_an_empty_run(tmp_path):
    # A store whose optional tables are empty still answers every query (with empty frames).
    path = build_synthetic_store(tmp_path / "bare.duckdb", optional_tables=False, checkpoints=2)
    with duckdb.connect(str(path), read_only=True) as c:
        assert Q.similarity_metrics(c, RUN_ID) == []
        assert Q.compression(c, RUN_ID).height == 0
        assert Q.steering_summary(c, RUN_ID).height == 0
        assert Q.language_neuron_counts(c, RUN_ID).height == 0


def test_store_connection_sees_a_replaced_file(tmp_path):
    first = build_synthetic_store(tmp_path / "a.duckdb", checkpoints=2)
    second = build_synthetic_store(tmp_path / "b.duckdb", checkpoints=3)
    held = Q.StoreConnection(first)  # an app session still holds the old version
    assert Q.checkpoints(held, RUN_ID).height == 2
    os.replace(second, first)  # a precompute publishes
    fresh = Q.StoreConnection(first)
    assert Q.checkpoints(fresh, RUN_ID).height == 3
    assert Q.checkpoints(held, RUN_ID).height == 2  # the old one keeps reading its own version
    held.close()
    fresh.close()


def test_store_connection_rejects_bad_files(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        Q.StoreConnection(tmp_path / "nope.duckdb")
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(StoreError, match="not a readable DuckDB file"):
        Q.StoreConnection(junk)


def test_page_queries_listed():
    assert all(callable(f) and f.__module__ == "explorer.queries" for f in Q.PAGE_QUERIES)
    assert len({f.__name__ for f in Q.PAGE_QUERIES}) == len(Q.PAGE_QUERIES)


def test_neuron_language_history(con, raw):
    ln = raw("language_neurons")
    row = ln.row(0, named=True)
    got = Q.neuron_language_history(con, RUN_ID, row["layer"], row["unit"])
    expected = ln.filter((pl.col("layer") == row["layer"]) & (pl.col("unit") == row["unit"]))
    assert got.height == expected.height
    assert set(got["checkpoint"]) == set(expected["checkpoint"])
    assert got["step"].is_sorted()


def test_store_order_lays_neuron_ap_out_by_concept_and_its_copy_by_unit():
    from precompute.store.layout import NEURON_AP_BY_UNIT_COLUMNS, checkpoint_frames, store_order

    rows = pl.DataFrame(
        {
            "lang": ["fr", "en", "fr", "en"],
            "concept_id": ["b", "b", "a", "a"],
            "layer": [1, 0, 1, 0],
            "unit": [5, 7, 2, 7],
            "ap": [0.9, 0.8, 0.7, 0.6],
            "rank": [1, 1, 1, 1],
            "median_pos_act": [1.0, 2.0, 3.0, 4.0],
        }
    )
    ordered = store_order("neuron_ap", rows)
    assert ordered.select("concept_id", "lang").rows() == [("a", "en"), ("a", "fr"), ("b", "en"), ("b", "fr")]
    assert ordered.sort("ap").equals(rows.sort("ap"))  # the same rows
    copy = checkpoint_frames({"neuron_ap": rows})["neuron_ap_by_unit"]
    assert copy.columns == list(NEURON_AP_BY_UNIT_COLUMNS)
    assert copy.select("layer", "unit", "concept_id").rows() == [(0, 7, "a"), (0, 7, "b"), (1, 2, "a"), (1, 5, "b")]
    assert copy.sort("ap").equals(rows.drop("median_pos_act").select(copy.columns).sort("ap"))
    assert store_order("shared_experts", rows) is rows  # tables without a layout keep their order
    no_rank = rows.drop("rank")
    assert store_order("neuron_ap", no_rank) is no_rank  # a frame without the keys is left as it is


def test_neuron_ap_by_unit_is_a_copy_of_neuron_ap_laid_out_by_unit(con, raw):
    ap = raw("neuron_ap").drop("median_pos_act")
    copy = raw("neuron_ap_by_unit")
    keys = ["checkpoint", "lang", "concept_id", "rank"]
    assert copy.select(ap.columns).sort(keys).equals(ap.sort(keys))
    for ckpt in CKPTS:  # physical order (as written): by unit within each checkpoint; neuron_ap by concept
        part = copy.filter(pl.col("checkpoint") == ckpt)
        assert part.select("layer", "unit").equals(part.select("layer", "unit").sort("layer", "unit"))
        part = raw("neuron_ap").filter(pl.col("checkpoint") == ckpt)
        assert part.select("concept_id", "lang", "rank").equals(
            part.select("concept_id", "lang", "rank").sort("concept_id", "lang", "rank")
        )
    assert Q._by_unit(con) == "neuron_ap_by_unit"


@pytest.mark.parametrize(
    "change", ["DROP TABLE neuron_ap_by_unit", f"DELETE FROM neuron_ap_by_unit WHERE checkpoint = '{CKPTS[0]}'"]
)
def test_unit_queries_read_neuron_ap_where_the_copy_is_missing_or_partial(store, con, raw, tmp_path, change):
    # A store written before neuron_ap_by_unit was added (or resumed across that change) answers the same.
    old = tmp_path / "old.duckdb"
    shutil.copyfile(store, old)
    with duckdb.connect(str(old)) as c:
        c.execute(change)
    units = raw("neuron_ap").group_by("layer", "unit").len().sort("len", "layer", "unit", descending=True)
    with duckdb.connect(str(old), read_only=True) as c:
        assert Q._by_unit(c) == "neuron_ap"
        assert Q.missing_tables(c) == []  # a derived table: the store is still whole
        for layer, unit, _ in units.head(3).iter_rows():
            assert Q.neuron_ap_history(c, RUN_ID, layer, unit).equals(Q.neuron_ap_history(con, RUN_ID, layer, unit))
            assert Q.unit_emergence(c, RUN_ID, 1, None, layer, unit).equals(
                Q.unit_emergence(con, RUN_ID, 1, None, layer, unit)
            )
            for ckpt in CKPTS:
                assert Q.similar_units(c, RUN_ID, ckpt, layer, unit, 5).equals(
                    Q.similar_units(con, RUN_ID, ckpt, layer, unit, 5)
                )
