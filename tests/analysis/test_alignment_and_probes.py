"""Alignment maths (Jaccard, Spearman, shared experts) and language probes on synthetic data."""

import numpy as np
import polars as pl
import pytest
import torch
from scipy.stats import spearmanr

from precompute.analysis.alignment import expert_overlap, jaccard, shared_experts, spearman_rows
from precompute.analysis.experts import ExpertResult
from precompute.analysis.probes import fit_probe, probe_tables
from precompute.analysis.units import UnitAxis

#: ``[probes]`` fit settings these tests use: no training cap, iterations to spare.
FIT = {"C": 1.0, "max_iter": 300, "max_train": 0}


def test_jaccard():
    assert jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(0.5)
    assert jaccard(set(), set()) == 1.0
    assert jaccard({1}, {2}) == 0.0


def test_spearman_rows_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    m = rng.integers(0, 4, size=(3, 30)).astype(float)
    rho = spearman_rows(m)
    for i in range(3):
        for j in range(3):
            assert rho[i, j] == pytest.approx(spearmanr(m[i], m[j]).statistic)


def _result(blocks: tuple[int, int] = (0, 1), k: int = 2) -> ExpertResult:
    # 2 layers x 3 units -> 6 units (the hooked ``blocks``); one concept "x"; three languages; top k per language.
    full = {
        "de": torch.tensor([[0.9, 0.8, 0.1, 0.2, 0.3, 0.4]], dtype=torch.float64),
        "en": torch.tensor([[0.9, 0.1, 0.8, 0.2, 0.3, 0.4]], dtype=torch.float64),
        "fr": torch.tensor([[0.9, 0.8, 0.2, 0.1, 0.3, 0.4]], dtype=torch.float64),
    }
    rows = []
    for lang, ap in full.items():
        idx = torch.argsort(ap[0], descending=True, stable=True)[:k]
        for rank, i in enumerate(idx.tolist(), 1):
            rows.append(
                {
                    "lang": lang,
                    "concept_id": "x",
                    "layer": blocks[i // 3],
                    "unit": i % 3,
                    "ap": float(ap[0, i]),
                    "rank": rank,
                    "median_pos_act": 0.0,
                }
            )
    return ExpertResult(top=pl.DataFrame(rows), full_ap=full, concept_ids=["x"])


def test_expert_overlap_pairs_and_values():
    overlap = expert_overlap(_result(), k=2)
    assert overlap.height == 3
    assert (overlap["lang_a"] < overlap["lang_b"]).all()
    de_fr = overlap.filter((pl.col("lang_a") == "de") & (pl.col("lang_b") == "fr"))
    assert de_fr["jaccard"][0] == pytest.approx(1.0)  # both {0, 1}
    de_en = overlap.filter((pl.col("lang_a") == "de") & (pl.col("lang_b") == "en"))
    assert de_en["jaccard"][0] == pytest.approx(1 / 3)  # {0,1} vs {0,2}
    expected = spearmanr(_result().full_ap["de"][0], _result().full_ap["en"][0]).statistic
    assert de_en["spearman_ap"][0] == pytest.approx(expected)


def test_shared_experts_counts_languages_and_takes_ap_over_all():
    shared = shared_experts(_result(), UnitAxis.contiguous([0, 3, 6]), min_langs=2)
    rows = {(r["layer"], r["unit"]): r for r in shared.iter_rows(named=True)}
    assert set(rows) == {(0, 0), (0, 1)}
    assert rows[(0, 0)]["n_langs_topk"] == 3 and rows[(0, 0)]["langs"] == "de,en,fr"
    assert rows[(0, 1)]["n_langs_topk"] == 2 and rows[(0, 1)]["langs"] == "de,fr"
    assert rows[(0, 1)]["min_ap"] == pytest.approx(0.1)  # en's AP counts too
    assert rows[(0, 1)]["mean_ap"] == pytest.approx((0.8 + 0.1 + 0.8) / 3)
    assert shared_experts(_result(), UnitAxis.contiguous([0, 3, 6]), min_langs=3).height == 1


def test_shared_experts_read_and_write_block_ids():
    """With blocks 1 and 3 hooked, the AP is read back at the right columns and the rows carry 1 and 3; with every
    block hooked the rows are the same with positions 0 and 1."""
    hooked = shared_experts(_result((1, 3), k=4), UnitAxis.from_sizes([1, 3], [3, 3]), min_langs=1)
    every = shared_experts(_result(k=4), UnitAxis.contiguous([0, 3, 6]), min_langs=1)
    assert set(hooked["layer"].to_list()) == {1, 3}
    fifth = hooked.filter((pl.col("layer") == 3) & (pl.col("unit") == 1))  # column 4: AP 0.3 in every language
    assert fifth["min_ap"].to_list() == pytest.approx([0.3]) and fifth["n_langs_topk"].to_list() == [3]
    assert every.equals(hooked.with_columns(pl.col("layer").replace_strict({1: 0, 3: 1}, return_dtype=pl.Int32)))
    with pytest.raises(KeyError, match="not hooked"):  # a row of a block the axis does not have
        shared_experts(_result((1, 3), k=4), UnitAxis.contiguous([0, 3, 6]), min_langs=1)


def test_probe_separates_separable_languages_only_where_they_differ():
    rng = np.random.default_rng(0)
    langs = np.repeat(["ar", "en", "zh"], 60)
    separable = rng.normal(size=(180, 8)) + np.repeat(np.eye(3, 8) * 6, 60, axis=0)
    noise = rng.normal(size=(180, 8))
    reps = {"mean": torch.from_numpy(np.stack([separable, noise]).astype(np.float32))}
    results, per_lang = probe_tables(reps, langs, seeds=[0, 1], test_size=0.3, control=True, n_resamples=0, **FIT)
    acc = dict(zip(results["layer"].to_list(), results["accuracy"].to_list()))
    assert acc[0] > 0.95
    assert acc[1] < 0.6
    assert per_lang.height == 2 * 3
    assert set(results["n_seeds"].to_list()) == {2}


def test_fit_probe_respects_max_train_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = np.repeat(["a", "b"], 100)
    a = fit_probe(x, y, seed=3, test_size=0.25, C=1.0, max_iter=300, max_train=50)
    b = fit_probe(x, y, seed=3, test_size=0.25, C=1.0, max_iter=300, max_train=50)
    assert a["n_train"] == 50 and a["n_test"] == 50
    assert a == b


def test_expert_sharing_counts_shared_units_per_language():
    from precompute.analysis.alignment import expert_sharing

    result = _result()
    shared = shared_experts(result, UnitAxis.contiguous([0, 3, 6]), min_langs=3)  # only unit (0, 0)
    counts = {
        (r["lang"], r["concept_id"]): (r["n_experts"], r["n_shared"])
        for r in expert_sharing(result.top, shared).iter_rows(named=True)
    }
    assert counts == {("de", "x"): (2, 1), ("en", "x"): (2, 1), ("fr", "x"): (2, 1)}
