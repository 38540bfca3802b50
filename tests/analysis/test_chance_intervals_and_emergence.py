"""Chance levels, intervals and emergence: the exact random-set Jaccard against Monte Carlo, the
permutation threshold against a brute-force sklearn loop, bootstrap sanity, probe baselines, the emergence
queries against a Python recomputation from the stored tables, and what the explorer draws of them."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import average_precision_score
from streamlit.testing.v1 import AppTest

from explorer import queries as Q
from precompute.analysis.chance import (
    bootstrap_ci,
    chance_ap_table,
    headline_intervals,
    lang_seed,
    max_ap_null,
    overlap_chance,
    random_ap,
    random_jaccard,
    random_jaccard_quantile,
    random_shared_expected,
    shuffled_labels,
)
from precompute.analysis.probes import probe_tables
from tests.support.synthetic_store import RUN_ID

#: The config's defaults for the settings the chance functions take: the null's quantile, the AP chunk.
QUANTILE = 0.99
CHUNK = 8192
#: ``[probes]`` fit settings these tests use: no training cap, iterations to spare.
FIT = {"C": 1.0, "max_iter": 300, "max_train": 0}

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"


def _random_sets(rng: np.random.Generator, m: int, n: int, k: int) -> np.ndarray:
    """(m, n) bool: m independent uniform random k-subsets of n units."""
    order = rng.random((m, n)).argsort(axis=1)[:, :k]
    mask = np.zeros((m, n), dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


@pytest.mark.parametrize("k, n", [(5, 40), (50, 2048), (3, 5)])
def test_random_jaccard_matches_monte_carlo(k, n):
    rng = np.random.default_rng(0)
    m = 20000
    a, b = _random_sets(rng, m, n, k), _random_sets(rng, m, n, k)
    inter = (a & b).sum(axis=1)
    jac = inter / (2 * k - inter)
    se = jac.std() / np.sqrt(m)
    assert abs(random_jaccard(k, n) - jac.mean()) < 4 * se + 1e-12
    # The 99th percentile: at most ~1 % of random pairs exceed it, and the next support point is exceeded less.
    q = random_jaccard_quantile(k, n, quantile=QUANTILE)
    assert (jac > q).mean() <= 0.01 + 4 * np.sqrt(0.01 / m)
    assert (jac >= q).mean() >= 0.01 - 4 * np.sqrt(0.01 / m)


def test_random_jaccard_exact_small_case_and_readme_scale():
    # k = 1: the sets meet with probability 1/n, then Jaccard 1.
    assert random_jaccard(1, 10) == pytest.approx(0.1)
    assert random_jaccard(4, 4) == pytest.approx(1.0)
    # The demo: top-50 of 2,048 units -> about 0.0125 (the README's chance figure comes from this).
    assert random_jaccard(50, 2048) == pytest.approx(0.0126, abs=5e-4)


def test_random_shared_expected_matches_monte_carlo():
    rng = np.random.default_rng(1)
    k, n, n_langs, min_langs, m = 6, 30, 5, 3, 4000
    sets = _random_sets(rng, m * n_langs, n, k).reshape(m, n_langs, n)
    shared = (sets.sum(axis=1) >= min_langs).sum(axis=1)
    assert random_shared_expected(k, n, n_langs, min_langs) == pytest.approx(
        shared.mean(), abs=4 * shared.std() / np.sqrt(m)
    )
    chance = overlap_chance(n, n_langs, k=k, expert_k=k, min_langs=min_langs, quantile=QUANTILE, correction="none")
    row = chance.row(0, named=True)
    assert row["jaccard_mean"] == pytest.approx(random_jaccard(k, n)) and row["n_units"] == n


def test_permutation_null_matches_brute_force_sklearn_loop():
    rng = np.random.default_rng(3)
    n_ctx, n_units, n_shuffles = 40, 13, 4
    scores = np.round(rng.normal(size=(n_ctx, n_units)), 1).astype(np.float32)  # rounding makes ties
    null = max_ap_null(
        torch.from_numpy(scores), 10, n_shuffles=n_shuffles, rng=np.random.default_rng(7), chunk_neurons=5
    )
    column = np.zeros((n_ctx, 1), dtype=bool)
    column[:10] = True
    shuffled = shuffled_labels(column, n_shuffles, np.random.default_rng(7))
    assert shuffled.shape == (n_ctx, n_shuffles) and (shuffled.sum(axis=0) == 10).all()  # positives kept
    brute = np.array(
        [max(average_precision_score(shuffled[:, j], scores[:, u]) for u in range(n_units)) for j in range(n_shuffles)]
    )
    np.testing.assert_allclose(null, brute, rtol=1e-12, atol=1e-12)


def test_chance_ap_table_p_values_and_thresholds_from_the_null():
    """Each cell's p-value is (1 + exceedances) / (B + 1) against the null of its language and number of
    positives, drawn as `max_ap_null` draws it; the thresholds are the null's order statistics."""
    rng = np.random.default_rng(0)
    langs = np.array(["de"] * 12 + ["en"] * 8)
    concepts = np.array(["a"] * 4 + ["b"] * 8 + ["a"] * 2 + ["b"] * 6)
    acts = torch.from_numpy(rng.normal(size=(20, 6)).astype(np.float32))
    top = pl.DataFrame(
        {"lang": ["de", "de", "en", "en"], "concept_id": ["a", "b", "a", "b"], "ap": [0.9, 0.5, 0.7, 0.6]}
    )
    out = chance_ap_table(
        acts, langs, concepts, top, n_shuffles=19, correction="none", quantile=0.9, chunk_neurons=CHUNK
    )
    rows = {(r["lang"], r["concept_id"]): r for r in out.iter_rows(named=True)}
    assert rows[("de", "a")]["random_ap"] == pytest.approx(random_ap(4, 12))
    assert rows[("en", "a")]["positive_rate"] == pytest.approx(2 / 8) and rows[("en", "a")]["n_positive"] == 2
    assert rows[("de", "a")]["best_ap"] == 0.9
    gen = lang_seed(0, "de")  # de's nulls, in order of P: 4 then 8
    null_a = max_ap_null(acts[:12], 4, n_shuffles=19, rng=gen, chunk_neurons=CHUNK)
    assert rows[("de", "a")]["p_value"] == pytest.approx((1 + (null_a >= 0.9).sum()) / 20)
    # level 0.1 with B = 19: p <= 0.1 <=> 1 + #{null >= AP} <= 2 <=> AP above the second largest draw
    assert rows[("de", "a")]["threshold"] == rows[("de", "a")]["threshold_uncorrected"] == np.sort(null_a)[-2]
    assert all(0 < r["threshold"] <= 1 for r in rows.values())
    assert all(r["significant"] == (r["best_ap"] > r["threshold"]) for r in rows.values())
    bh = chance_ap_table(acts, langs, concepts, top, n_shuffles=19, quantile=0.9, correction="bh", chunk_neurons=CHUNK)
    assert (bh["threshold"] >= bh["threshold_uncorrected"]).all()  # the correction only raises the bar
    none = chance_ap_table(
        acts, langs, concepts, top, n_shuffles=0, quantile=QUANTILE, correction="bh", chunk_neurons=CHUNK
    )
    assert none["threshold"].null_count() == none.height  # no shuffles: significance unknown


def test_bootstrap_interval_covers_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 2000):
        values = rng.normal(0.3, 0.1, size=n)
        estimate, lo, hi = bootstrap_ci(values, n_resamples=2000, seed=0)
        assert estimate == pytest.approx(values.mean())
        assert lo < estimate < hi
        assert lo < 0.3 < hi  # covers the true mean (seeded; 95 % intervals)
        widths.append(hi - lo)
        assert bootstrap_ci(values, n_resamples=2000, seed=0) == (estimate, lo, hi)  # fixed seed: reproducible
    assert widths[1] < widths[0] / 5  # ~ 1/sqrt(n): 10x narrower for 100x the concepts
    # Pooled mean over groups of different sizes, and the sum statistic.
    est, _, _ = bootstrap_ci(np.array([1.0, 4.0]), np.array([1, 3]), n_resamples=10)
    assert est == pytest.approx(5 / 4)
    assert bootstrap_ci(np.array([2.0, 3.0]), n_resamples=10, statistic="sum")[0] == 5.0
    assert np.isnan(bootstrap_ci(np.array([2.0]), n_resamples=10)[1])  # one concept: no interval


def test_headline_intervals_rows():
    overlap = pl.DataFrame(
        {"concept_id": ["a", "a", "b", "b"], "jaccard": [0.1, 0.3, 0.2, 0.2], "spearman_ap": [0.5, 0.5, 0.1, 0.3]}
    )
    shared = pl.DataFrame({"concept_id": ["a", "a", "b"]})
    chance = overlap_chance(100, 3, k=5, expert_k=5, min_langs=2, quantile=QUANTILE, correction="none")
    rows = {
        r["measure"]: r
        for r in headline_intervals(overlap, shared, chance, ["a", "b", "c"], n_resamples=200).iter_rows(named=True)
    }
    assert rows["mean_jaccard"]["estimate"] == pytest.approx(0.2)
    assert rows["mean_jaccard"]["chance"] == pytest.approx(random_jaccard(5, 100))
    assert rows["mean_spearman_ap"]["chance"] == 0.0
    assert rows["n_shared"]["estimate"] == 3 and rows["n_shared"]["n_concepts"] == 3
    assert rows["n_shared"]["chance"] == pytest.approx(3 * random_shared_expected(5, 100, 3, 2))
    assert rows["mean_jaccard"]["lo"] <= 0.2 <= rows["mean_jaccard"]["hi"]


def test_probe_baselines_and_control():
    rng = np.random.default_rng(0)
    langs = np.repeat(["ar", "en", "zh"], 60)
    separable = rng.normal(size=(180, 8)) + np.repeat(np.eye(3, 8) * 6, 60, axis=0)
    reps = {"token": torch.from_numpy(separable[None].astype(np.float32))}
    types = rng.integers(0, 30, size=180)  # token types unrelated to the features
    results, _ = probe_tables(
        reps, langs, seeds=[0, 1], test_size=0.3, control=True, n_resamples=500, token_types={"token": types}, **FIT
    )
    row = results.row(0, named=True)
    assert row["majority_baseline"] == pytest.approx(1 / 3, abs=0.02)  # stratified: one third each
    assert row["control_accuracy"] < 0.6 and row["accuracy"] > 0.95  # control task unreadable from language
    no_types, _ = probe_tables(reps, langs, seeds=[0], test_size=0.3, control=True, n_resamples=0, **FIT)
    assert no_types["control_accuracy"].null_count() == 1  # no token types: no control
    assert row["accuracy_lo"] <= row["accuracy"] <= row["accuracy_hi"]
    off, _ = probe_tables(reps, langs, seeds=[0], test_size=0.3, control=False, n_resamples=0, **FIT)
    assert off["control_accuracy"].null_count() == 1 and off["accuracy_lo"].null_count() == 1


# --- the store: emergence queries against the per-checkpoint tables -------------------------------------------


def _stays_from(flags: dict[int, bool], n: int) -> int | None:
    """Brute force: the first position p with flags true at every position p..n-1 (missing = false)."""
    first = None
    for pos in range(n - 1, -1, -1):
        if not flags.get(pos, False):
            break
        first = pos
    return first


def test_pair_and_unit_emergence_match_a_recomputation(synthetic_store):
    con = duckdb.connect(str(synthetic_store), read_only=True)
    cks = Q.checkpoints(con, RUN_ID)["checkpoint"].to_list()
    n = len(cks)
    ov = con.execute(
        "SELECT o.concept_id, o.lang_a, o.lang_b, o.checkpoint, o.jaccard > ch.jaccard_threshold_corrected "
        "FROM expert_overlap o JOIN overlap_chance ch USING (run_id, checkpoint)"
    ).fetchall()
    flags: dict[tuple, dict[int, bool]] = {}
    for concept, a, b, ck, above in ov:
        flags.setdefault((concept, a, b), {})[cks.index(ck)] = above
    expected = {key: _stays_from(f, n) for key, f in flags.items()}
    got = Q.pair_emergence(con, RUN_ID)
    assert got.height == len(expected)
    for r in got.iter_rows(named=True):
        pos = expected[(r["concept_id"], r["lang_a"], r["lang_b"])]
        assert r["emerged_at"] == (None if pos is None else cks[pos])
    assert got["emerged_at"].is_not_null().any(), "the synthetic store's overlap rises above chance"

    min_langs = 2
    sig = con.execute(
        "SELECT n.concept_id, n.layer, n.unit, n.checkpoint, count(*) FROM neuron_ap n JOIN chance_ap ch "
        "USING (run_id, checkpoint, lang, concept_id) WHERE n.ap > ch.threshold GROUP BY ALL"
    ).fetchall()
    uflags: dict[tuple, dict[int, bool]] = {}
    for concept, layer, unit, ck, n_langs in sig:
        uflags.setdefault((concept, layer, unit), {})[cks.index(ck)] = n_langs >= min_langs
    uexpected = {key: _stays_from(f, n) for key, f in uflags.items()}
    uexpected = {key: pos for key, pos in uexpected.items() if pos is not None}
    units = Q.unit_emergence(con, RUN_ID, min_langs)
    assert {
        (r["concept_id"], r["layer"], r["unit"]): cks.index(r["emerged_at"]) for r in units.iter_rows(named=True)
    } == uexpected
    one = units.row(0, named=True)
    mine = Q.unit_emergence(con, RUN_ID, min_langs, None, one["layer"], one["unit"])
    assert one["concept_id"] in mine["concept_id"].to_list()
    # Significance of the experts is the SQL join ap > threshold.
    sig_rows = Q.expert_significance(con, RUN_ID, cks[0], "monday", 10)
    assert sig_rows["significant"].to_list() == (sig_rows["ap"] > sig_rows["threshold"]).to_list()
    assert sig_rows["significant"].any() and not sig_rows["significant"].all()
    con.close()


def test_report_prints_intervals_chance_and_emergence(synthetic_store):
    from precompute.store.report import headline_report

    text = headline_report(synthetic_store)
    assert "95% CI" in text and "control" in text and "majority class" in text
    assert "(chance 0.0426)" in text  # random top-10 of 128 units: the exact hypergeometric expectation
    assert f"{random_jaccard(10, 128):.4f}" == "0.0426"
    assert "Emergence" in text and "corrected permutation threshold" in text
    # The test behind "significant": its method, shuffles, Monte-Carlo resolution and correction.
    assert "permutation test of the max over units, 999 label shuffles" in text
    assert "Monte-Carlo resolution 0.001" in text and "Benjamini-Hochberg at FDR 0.01" in text
    con = duckdb.connect(str(synthetic_store), read_only=True)
    n, sig = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE significant) FROM chance_ap WHERE checkpoint = 'global_step0'"
    ).fetchone()
    con.close()
    assert f"first: {sig} of {n} cells significant after correction" in text


# --- the explorer draws them ------------------------------------------------------------------------------------


def _page(monkeypatch, store: Path, page: str, **params: str) -> AppTest:
    monkeypatch.setenv("CROSSLING_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _marks(spec: dict) -> list[str]:
    layers = spec.get("layer", [spec])
    return [
        (lay.get("mark", {}).get("type") if isinstance(lay.get("mark"), dict) else lay.get("mark")) for lay in layers
    ]


def _has_chance_line(spec: dict, label: str) -> bool:
    return any(
        isinstance(lay.get("mark"), dict)
        and lay["mark"].get("strokeDash")
        and any(v.get("reference") == label for v in lay.get("data", {}).get("values", []))
        for lay in spec.get("layer", [])
    )


def test_overview_overlap_chart_has_band_and_chance_line(monkeypatch, synthetic_store):
    at = _page(monkeypatch, synthetic_store, "overview")
    overlap = [s for s in _specs(at) if "Overlap of top-" in str(s.get("title", ""))]
    assert overlap, "the overlap chart is drawn"
    spec = overlap[0]
    assert "area" in _marks(spec) and _has_chance_line(spec, "chance (random top-K sets)")
    band = next(lay for lay in spec["layer"] if _marks({"layer": [lay]}) == ["area"])
    assert {v["measure"] for v in band["data"]["values"]} == {"mean_jaccard"}  # Jaccard has its own chart and axis
    chance = next(lay for lay in spec["layer"] if lay["mark"].get("strokeDash"))
    jac = [v["value"] for v in chance["data"]["values"]]
    assert jac and jac == pytest.approx([random_jaccard(10, 128)] * len(jac))
    spearman = next(s for s in _specs(at) if "Spearman of all units' AP" in str(s.get("title", "")))
    assert "area" in _marks(spearman) and _has_chance_line(spearman, "chance (unrelated APs: 0)")
    shared = [s for s in _specs(at) if "Shared experts over training" in json.dumps(s)]
    assert shared and "area" in _marks(shared[0])
    assert any("0.0426" in c.value for c in at.caption)


def test_concepts_page_marks_non_significant_experts_and_draws_chance(monkeypatch, synthetic_store):
    at = _page(monkeypatch, synthetic_store, "concepts", concept="monday", ckpt="global_step0")
    grid = at.dataframe[0].value
    cells = [str(v) for v in grid.drop(columns=["rank"]).to_numpy().ravel()]
    con = duckdb.connect(str(synthetic_store), read_only=True)
    sig = Q.expert_significance(con, RUN_ID, "global_step0", "monday", 10)
    con.close()
    assert sum(c.endswith("· n.s.") for c in cells) == int((~sig["significant"]).sum()) > 0
    assert any(not c.endswith("· n.s.") for c in cells)
    specs = _specs(at)
    assert any(
        _has_chance_line(s, "chance (random top-K sets)") and "per language pair" in json.dumps(s) for s in specs
    )
    assert any(_has_chance_line(s, "chance (random top-K sets)") and "Shared experts" in json.dumps(s) for s in specs)
    assert any("Emergence" == h.value for h in at.subheader)
    assert any("stay above chance" in m.value for m in at.markdown)
    # The page names the test behind "n.s.": shuffles, resolution, correction.
    named = [c.value for c in at.caption if "n.s." in c.value]
    assert named and "999 label shuffles" in named[0] and "Benjamini-Hochberg at FDR 0.01" in named[0]
    assert "Monte-Carlo resolution 0.001" in named[0]


def test_concepts_page_offers_the_over_k_overlap(monkeypatch, synthetic_store):
    at = _page(monkeypatch, synthetic_store, "concepts", concept="monday", ckpt="global_step0", ov="over_k")
    spec = next(s for s in _specs(at) if "over_k per language pair" in json.dumps(s))
    chance = next(lay for lay in spec["layer"] if isinstance(lay.get("mark"), dict) and lay["mark"].get("strokeDash"))
    values = [v["over_k"] for v in chance["data"]["values"]]
    assert values and values == pytest.approx([10 / 128] * len(values))  # E[|A∩B|/k] = k / N


def test_probes_page_shows_baselines_and_band(monkeypatch, synthetic_store):
    mean = _page(monkeypatch, synthetic_store, "probes", rep="mean")  # no token type: no control task
    assert any("No control task" in c.value and "no selectivity" in c.value for c in mean.caption)
    at = _page(monkeypatch, synthetic_store, "probes", rep="token")
    spec = next(s for s in _specs(at) if "against chance" in json.dumps(s))
    assert "area" in _marks(spec)
    series = {v["series"] for lay in spec["layer"] for v in lay["data"]["values"] if "series" in v}
    assert {"LID probe", "control task (random label per token type, Hewitt & Liang)", "majority class"} <= series
    assert any("Selectivity" in c.value for c in at.caption)


def test_neuron_page_lists_emergence_and_thresholds(monkeypatch, synthetic_store):
    con = duckdb.connect(str(synthetic_store), read_only=True)
    one = Q.unit_emergence(con, RUN_ID, 2).row(0, named=True)
    con.close()
    at = _page(
        monkeypatch,
        synthetic_store,
        "neuron",
        layer=str(one["layer"]),
        unit=str(one["unit"]),
        concept=one["concept_id"],
    )
    assert any("Emergence" in m.value for m in at.markdown)
    tables = [d.value for d in at.dataframe]
    assert any("emerged_at" in t.columns and one["emerged_at"] in t["emerged_at"].tolist() for t in tables)
    assert any(_has_chance_line(s, "corrected permutation threshold") for s in _specs(at))
    assert any("999 label shuffles" in c.value and "Benjamini-Hochberg" in c.value for c in at.caption)
