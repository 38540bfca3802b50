"""The chance levels hold their stated level on pure noise: random responses, random labels, the real
code path; the share of cells that pass stays within its binomial band around the nominal level.

A chance level that was only derived, never measured, is how the earlier threshold passed 16.5 % of noise cells at
a nominal 1 % (the 0.99 quantile of five shuffles is nearly their maximum): these tests would have caught it.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from scipy.stats import hypergeom

from precompute.analysis.alignment import expert_overlap
from precompute.analysis.chance import (
    ap_threshold,
    benjamini_hochberg,
    chance_ap_table,
    monte_carlo_p,
    overlap_chance,
    overlap_cutoff,
    overlap_exceed_probability,
    random_ap,
    random_over_k,
)
from precompute.analysis.experts import average_precision_multi, score_experts
from precompute.analysis.units import UnitAxis
from precompute.config import ExpertSpec

#: The config's defaults for the settings these functions take: the null's quantile, the AP chunk.
QUANTILE = 0.99
CHUNK = 8192


def _overlap_chance(k: int, n: int, n_langs: int, min_langs: int, **extra):
    """`overlap_chance` at the config's quantile, the overlap's K also the experts' K, no correction unless
    ``extra`` says so."""
    settings = {"quantile": QUANTILE, "correction": "none"} | extra
    return overlap_chance(n, n_langs, k=k, expert_k=k, min_langs=min_langs, **settings)


def _band(n: int, p: float, z: float = 3.5) -> tuple[float, float]:
    """The central band of Binomial(n, p) counts, z standard deviations wide (a test fails by chance ~1 in 2,000)."""
    sd = np.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


def _noise_run(rng: np.random.Generator, n_langs: int, n_ctx: int, n_units: int, sizes: dict[str, int]):
    """Responses and labels with no relation at all: (activations (L * n_ctx, units), langs, concept_ids, top rows
    with each cell's best AP over all units, as ``neuron_ap`` would hold it)."""
    acts = torch.from_numpy(rng.normal(size=(n_langs * n_ctx, n_units)).astype(np.float32))
    langs = np.repeat([f"l{i}" for i in range(n_langs)], n_ctx)
    base = np.concatenate([[c] * k for c, k in sizes.items()])
    concepts = np.concatenate([rng.permutation(base) for _ in range(n_langs)])
    rows = []
    for lang in sorted(set(langs)):
        idx = np.flatnonzero(langs == lang)
        labels = np.stack([concepts[idx] == c for c in sizes], axis=1)
        ap = average_precision_multi(acts[idx], torch.from_numpy(labels), chunk_neurons=CHUNK)
        rows += [{"lang": lang, "concept_id": c, "ap": float(ap[i].max())} for i, c in enumerate(sizes)]
    return acts, langs, concepts, pl.DataFrame(rows)


def test_permutation_test_holds_its_level_on_pure_noise():
    """700 noise runs x 4 languages: the uncorrected cells at p <= 0.01 stay in the binomial band around 1 %, and
    Benjamini-Hochberg over the 8 cells of a run flags a run (any cell) at most ~1 % of the time (under the
    global null the FDR is the family-wise rate)."""
    rng = np.random.default_rng(2026)
    runs, n_langs, alpha = 700, 4, 0.01
    sizes = {"a": 20, "b": 60}  # distinct positive counts: each cell of a language has its own null
    p_a, any_bh, sig_none, thresholds_agree = [], 0, 0, True
    for r in range(runs):
        acts, langs, concepts, top = _noise_run(rng, n_langs, 80, 30, sizes)
        out = chance_ap_table(
            acts, langs, concepts, top, n_shuffles=99, quantile=1 - alpha, correction="bh", chunk_neurons=CHUNK, seed=r
        )
        p_a += out.filter(pl.col("concept_id") == "a")["p_value"].to_list()  # independent across languages and runs
        any_bh += bool(out["significant"].any())
        uncorrected = out["best_ap"] > out["threshold_uncorrected"]
        sig_none += int(uncorrected.filter(out["concept_id"] == "a").sum())
        thresholds_agree &= (uncorrected == (out["p_value"] <= alpha)).all()
    p_a = np.array(p_a)
    lo, hi = _band(p_a.size, alpha)
    assert lo <= (p_a <= alpha).sum() <= hi, (p_a <= alpha).mean()
    assert thresholds_agree and sig_none == (p_a <= alpha).sum()  # AP > threshold_uncorrected <=> p <= alpha
    lo5, hi5 = _band(p_a.size, 0.05)  # and the p-values are uniform elsewhere too
    assert lo5 <= (p_a <= 0.05).sum() <= hi5
    assert any_bh <= _band(runs, alpha)[1], any_bh / runs


def test_default_settings_make_the_level_exact():
    """With B shuffles a p-value is a multiple of 1 / (B + 1): the nominal level is only reached exactly when
    level x (B + 1) is whole (the default 999 and 0.99); and five shuffles cannot reach 1 % at all."""
    spec = ExpertSpec()
    assert spec.permutations == 999 and spec.permutation_quantile == 0.99 and spec.correction == "bh"
    assert (1 - spec.permutation_quantile) * (spec.permutations + 1) == pytest.approx(10)
    null = np.linspace(0.1, 0.2, 5)
    assert ap_threshold(null, int(np.floor(0.01 * 6))) == 1.0  # B = 5: no AP is significant at 1 %
    assert monte_carlo_p(null, np.array([0.99]))[0] == pytest.approx(1 / 6)  # the resolution


def test_monte_carlo_p_and_thresholds_agree_by_hand():
    null = np.array([0.3, 0.1, 0.2, 0.2, 0.4])
    np.testing.assert_allclose(monte_carlo_p(null, np.array([0.2, 0.45, 0.05])), [5 / 6, 1 / 6, 1.0])  # ties count
    # 1 + #{null >= x} <= 2  <=>  x > 0.3 (the second largest)
    assert ap_threshold(null, 2) == 0.3 and ap_threshold(null, 6) == 0.0


def test_benjamini_hochberg_matches_a_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    adjusted, cutoff = benjamini_hochberg(p, 0.05)
    # sorted 0.005 0.01 0.03 0.04 0.5; q k / m = 0.01 0.02 0.03 0.04 0.05: k* = 4, cutoff 0.04
    assert cutoff == 0.04
    np.testing.assert_allclose(adjusted, [0.025, 0.05, 0.05, 0.025, 0.5])
    assert ((adjusted <= 0.05) == (p <= cutoff)).all()
    assert benjamini_hochberg(np.array([0.2, 0.3]), 0.05)[1] is None


def test_random_ap_is_the_expectation_of_a_random_scorer():
    """E[AP] of a random continuous scorer by simulation (not the positive rate, a constant scorer's AP)."""
    rng = np.random.default_rng(5)
    n, n_pos, draws = 400, 8, 20000
    scores = torch.from_numpy(rng.random((n, draws)).astype(np.float32))  # each column a random scorer
    labels = torch.zeros((n, 1), dtype=torch.bool)
    labels[:n_pos] = True
    ap = average_precision_multi(scores, labels, chunk_neurons=CHUNK)[0].numpy()
    expected = random_ap(n_pos, n)
    assert abs(ap.mean() - expected) < 4 * ap.std() / np.sqrt(draws)
    assert abs(ap.mean() - n_pos / n) > 8 * ap.std() / np.sqrt(draws)  # the positive rate is measurably off
    assert random_ap(20, 4000) == pytest.approx(0.00696, abs=5e-6)
    assert random_ap(1, 1) == 1.0 and random_ap(3, 3) == pytest.approx(1.0)


def test_chance_ap_rows_store_both_random_levels():
    rng = np.random.default_rng(0)
    acts, langs, concepts, top = _noise_run(rng, 1, 50, 6, {"a": 10, "b": 40})
    out = chance_ap_table(
        acts, langs, concepts, top, n_shuffles=9, quantile=QUANTILE, correction="bh", chunk_neurons=CHUNK
    )
    row = out.filter(pl.col("concept_id") == "a").row(0, named=True)
    assert row["positive_rate"] == pytest.approx(10 / 50)
    assert row["random_ap"] == pytest.approx(random_ap(10, 50))
    assert row["p_resolution"] == pytest.approx(0.1) and row["n_cells"] == 2 and row["correction"] == "bh"
    none = chance_ap_table(
        acts, langs, concepts, top, n_shuffles=0, quantile=QUANTILE, correction="bh", chunk_neurons=CHUNK
    )
    assert none["threshold"].null_count() == none.height and none["p_value"].null_count() == none.height


@pytest.mark.parametrize("measure", ["jaccard", "over_k"])
def test_random_set_overlap_threshold_holds_its_level_on_noise(measure):
    """Experts scored on noise through score_experts and expert_overlap: the share of (concept, language pair)
    overlaps above the stored 99th-percentile threshold is the exact exceedance probability (<= 1 %)."""
    rng = np.random.default_rng(11)
    n_langs, n_concepts, per, n_units, k = 6, 150, 4, 40, 5
    langs = np.repeat([f"l{i}" for i in range(n_langs)], n_concepts * per)
    concepts = np.tile(np.repeat([f"c{i:03d}" for i in range(n_concepts)], per), n_langs)
    acts = torch.from_numpy(rng.normal(size=(langs.size, n_units)).astype(np.float32))
    result = score_experts(acts, langs, concepts, UnitAxis.contiguous([0, n_units]), top_k=k, chunk_neurons=CHUNK)
    overlap = expert_overlap(result, k=k)
    chance = _overlap_chance(k, n_units, n_langs, 2).row(0, named=True)
    passed = int((overlap[measure] > chance[f"{measure}_threshold"]).sum())
    level = overlap_exceed_probability(k, n_units, quantile=QUANTILE)
    assert 0 < level <= 0.01
    lo, hi = _band(overlap.height, level, z=4.0)
    assert lo <= passed <= hi, (passed / overlap.height, level)
    mean = chance["over_k_mean"] if measure == "over_k" else chance["jaccard_mean"]
    assert abs(overlap[measure].mean() - mean) < 4 * overlap[measure].std() / np.sqrt(overlap.height)
    assert random_over_k(k, n_units) == k / n_units


def test_overlap_over_k_is_the_intersection_over_k():
    rng = np.random.default_rng(3)
    langs = np.repeat(["a", "b"], 40)
    concepts = np.tile(np.repeat(["x", "y"], 20), 2)
    acts = torch.from_numpy(rng.normal(size=(80, 30)).astype(np.float32))
    result = score_experts(acts, langs, concepts, UnitAxis.contiguous([0, 30]), top_k=8, chunk_neurons=CHUNK)
    for k in (3, 8):
        overlap = expert_overlap(result, k=k)
        top = result.top.filter(pl.col("rank") <= k)
        for row in overlap.iter_rows(named=True):
            sets = [
                set(
                    top.filter((pl.col("lang") == lang) & (pl.col("concept_id") == row["concept_id"]))["unit"].to_list()
                )
                for lang in (row["lang_a"], row["lang_b"])
            ]
            assert row["over_k"] == len(sets[0] & sets[1]) / k and row["k"] == k
            assert row["jaccard"] == len(sets[0] & sets[1]) / len(sets[0] | sets[1])


def test_overlap_chance_exceedance_is_exact():
    k, n = 5, 40
    chance = _overlap_chance(k, n, 3, 2).row(0, named=True)
    i = round(chance["over_k_threshold"] * k)  # the intersection at the 99th percentile
    assert chance["jaccard_threshold"] == pytest.approx(i / (2 * k - i))
    assert hypergeom.cdf(i, n, k, k) >= 0.99 > hypergeom.cdf(i - 1, n, k, k)
    assert overlap_exceed_probability(k, n, quantile=QUANTILE) == pytest.approx(hypergeom.sf(i, n, k, k))


def test_overlap_cutoff_is_benjamini_hochberg_on_the_hypergeometric_tail():
    k, n = 5, 40
    observed = np.array([0, 1, 0, 3, 4, 5, 1, 0, 2, 4])
    p = hypergeom.sf(observed - 1, n, k, k)
    _, cutoff = benjamini_hochberg(p, 0.01)
    i_min = overlap_cutoff(observed, k, n, 0.01)
    assert ((observed >= i_min) == (p <= cutoff)).all() and i_min == 4  # 3 has p = 0.0093 > 0.01 x 4 / 10
    row = _overlap_chance(k, n, 3, 2, intersections=observed, correction="bh").row(0, named=True)
    assert row["over_k_threshold_corrected"] == (i_min - 1) / k and row["n_cells"] == observed.size
    assert row["jaccard_threshold_corrected"] == pytest.approx((i_min - 1) / (2 * k - i_min + 1))
    assert row["over_k_threshold_corrected"] >= row["over_k_threshold"]  # the correction only raises the bar
    assert overlap_cutoff(np.array([0, 1, 0]), k, n, 0.01) is None
    none = _overlap_chance(k, n, 3, 2, intersections=np.array([0, 1, 0]), correction="bh").row(0, named=True)
    assert none["jaccard_threshold_corrected"] == 1.0  # nothing survives: no overlap exceeds it
    plain = _overlap_chance(k, n, 3, 2, intersections=observed, correction="none").row(0, named=True)
    assert plain["jaccard_threshold_corrected"] == plain["jaccard_threshold"]


def test_corrected_overlap_threshold_holds_its_level_on_noise():
    """Random top-K sets for every (concept, pair) cell of 300 noise checkpoints: BH over the cells flags a
    checkpoint at most about FDR = 1 % of the time (under the global null the FDR is the family-wise rate)."""
    rng = np.random.default_rng(8)
    k, n, cells, runs = 5, 40, 200, 300
    flagged = 0
    for _ in range(runs):
        observed = hypergeom.rvs(n, k, k, size=cells, random_state=rng)
        flagged += overlap_cutoff(observed, k, n, 0.01) is not None
    assert flagged <= _band(runs, 0.01)[1]
