"""Vectorised average precision against sklearn, ties included, and top-K expert selection."""

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from precompute.analysis.experts import (
    average_precision,
    average_precision_multi,
    neuron_summary,
    score_experts,
    top_k_experts,
)
from precompute.analysis.units import UnitAxis

#: ``[experts] chunk_neurons`` as the config sets it (no result depends on it).
CHUNK = 8192


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(2, 80),
    n_neurons=st.integers(1, 12),
    n_levels=st.sampled_from([2, 3, 5, 1000]),
    pos_rate=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**31 - 1),
)
def test_average_precision_matches_sklearn(n, n_neurons, n_levels, pos_rate, seed):
    rng = np.random.default_rng(seed)
    # Few levels -> many ties; 1000 levels -> mostly distinct scores.
    scores = rng.integers(0, n_levels, size=(n, n_neurons)).astype(np.float32) / n_levels
    labels = rng.random(n) < pos_rate
    labels[rng.integers(n)] = True
    ours = average_precision(torch.from_numpy(scores), torch.from_numpy(labels)).numpy()
    ref = np.array([average_precision_score(labels, scores[:, j]) for j in range(n_neurons)])
    np.testing.assert_allclose(ours, ref, atol=1e-12, rtol=0)


def test_all_tied_scores_give_the_positive_rate():
    labels = torch.tensor([True, False, False, True])
    ap = average_precision(torch.zeros(4, 3), labels)
    assert torch.allclose(ap, torch.full((3,), 0.5, dtype=torch.float64))


def test_perfect_and_reversed_detectors():
    labels = torch.tensor([True, True, False, False, False])
    scores = torch.tensor([[5.0, -5.0], [4.0, -4.0], [1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]])
    ap = average_precision(scores, labels)
    assert ap[0].item() == pytest.approx(1.0)
    assert ap[1].item() == pytest.approx(average_precision_score(labels.numpy(), scores[:, 1].numpy()))


def test_multi_equals_single_column_calls_with_chunks():
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.normal(size=(40, 25)).astype(np.float32))
    labels = torch.from_numpy(rng.random((40, 4)) < 0.3)
    labels[0] = True
    multi = average_precision_multi(scores, labels, chunk_neurons=7)
    for c in range(4):
        assert torch.allclose(multi[c], average_precision(scores, labels[:, c]))


def test_requires_a_positive_and_matching_shapes():
    with pytest.raises(ValueError, match="positive"):
        average_precision(torch.zeros(3, 2), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels must have shape"):
        average_precision(torch.zeros(3, 2), torch.zeros(4, dtype=torch.bool))


def test_top_k_breaks_ties_by_lower_index():
    ap = torch.tensor([[0.5, 0.9, 0.5, 0.1]], dtype=torch.float64)
    idx, vals = top_k_experts(ap, 3)
    assert idx.tolist() == [[1, 0, 2]]
    assert vals.tolist() == [[0.9, 0.5, 0.5]]


def test_score_experts_finds_planted_units_and_maps_layers():
    rng = np.random.default_rng(0)
    langs = np.array(["de"] * 30 + ["en"] * 30)
    concepts = np.array((["a"] * 10 + ["b"] * 10 + ["c"] * 10) * 2)
    acts = rng.normal(size=(60, 12)).astype(np.float32)
    # Layer 1 (columns 5..11), unit 2 -> column 7 fires for concept "b" in both languages.
    acts[concepts == "b", 7] += 10.0
    units = UnitAxis.contiguous([0, 5, 12])
    result = score_experts(torch.from_numpy(acts), langs, concepts, units, top_k=3, chunk_neurons=CHUNK)
    top_b = result.top.filter((result.top["concept_id"] == "b") & (result.top["rank"] == 1))
    assert sorted(top_b["lang"].to_list()) == ["de", "en"]
    assert set(zip(top_b["layer"].to_list(), top_b["unit"].to_list())) == {(1, 2)}
    assert top_b["ap"].to_list() == pytest.approx([1.0, 1.0])
    # median_pos_act is the interpolated median (ml-selfcond's on_p50) over the concept's contexts: with 10
    # positives, the mean of the two middle values, not torch.median's lower one.
    de_rows = (langs == "de") & (concepts == "b")
    assert top_b.filter(top_b["lang"] == "de")["median_pos_act"][0] == pytest.approx(
        float(np.percentile(acts[de_rows, 7], 50)), rel=1e-6
    )
    assert top_b.filter(top_b["lang"] == "de")["median_pos_act"][0] != pytest.approx(
        float(torch.from_numpy(acts[de_rows, 7]).median())
    )
    assert result.top.height == 2 * 3 * 3
    summary = neuron_summary(result, units)
    assert summary.height == 12
    row = summary.filter((summary["layer"] == 1) & (summary["unit"] == 2))
    assert row["max_ap"][0] == pytest.approx(1.0)
    assert row["best_concept_id"][0] == "b"


def test_experts_name_hooked_blocks_by_their_block_id():
    """With blocks 1 and 3 hooked (``[extract] layers``), the rows carry 1 and 3; with every block hooked they
    carry the positions 0 and 1, and nothing else in the frames differs."""
    rng = np.random.default_rng(4)
    langs = np.array(["de"] * 20 + ["en"] * 20)
    concepts = np.array((["a"] * 10 + ["b"] * 10) * 2)
    acts = rng.normal(size=(40, 9)).astype(np.float32)
    acts[concepts == "a", 1] += 8.0  # block of the first hooked layer, unit 1
    acts[concepts == "b", 6] += 8.0  # the second hooked layer, unit 2
    activations = torch.from_numpy(acts)
    subset = UnitAxis.from_sizes([1, 3], [4, 5])
    every = UnitAxis.contiguous([0, 4, 9])
    hooked = score_experts(activations, langs, concepts, subset, top_k=9, chunk_neurons=CHUNK)
    whole = score_experts(activations, langs, concepts, every, top_k=9, chunk_neurons=CHUNK)
    assert set(hooked.top["layer"].to_list()) == {1, 3}
    best = hooked.top.filter(pl.col("rank") == 1).sort("lang", "concept_id")
    assert best.select("layer", "unit").rows() == [(1, 1), (3, 2), (1, 1), (3, 2)]
    as_positions = pl.col("layer").replace_strict({1: 0, 3: 1}, return_dtype=pl.Int32)
    assert whole.top.equals(hooked.top.with_columns(as_positions))
    summary = neuron_summary(hooked, subset)
    assert summary["layer"].to_list() == [1] * 4 + [3] * 5
    assert summary["unit"].to_list() == [0, 1, 2, 3, 0, 1, 2, 3, 4]
    assert neuron_summary(whole, every).equals(summary.with_columns(as_positions))
    # A column the axis does not have is refused before any scoring.
    with pytest.raises(ValueError, match="unit columns"):
        score_experts(activations, langs, concepts, UnitAxis.from_sizes([1, 3], [4, 4]), top_k=2, chunk_neurons=CHUNK)


def _sklearn_ap(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(concepts, neurons) AP from sklearn, one call per column, on the float32 scores the CPU path ranks."""
    return np.array(
        [
            [average_precision_score(labels[:, c], scores[:, j]) for j in range(scores.shape[1])]
            for c in range(labels.shape[1])
        ]
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_cpu_kernel_matches_sklearn_and_is_bit_identical_across_threads(dtype, monkeypatch):
    """The compiled CPU path (`_ap_rows`: one 1,024-column slice per task, thread pool) against sklearn, ties and
    -0.0 included, for one-concept-per-context labels plus an overlapping concept, one positive, all positives
    (the histogram count) and a few (the pairwise count); the result does not change a bit with the threads."""
    rng = np.random.default_rng(5)
    n, n_neurons = 90, 2600  # three slices
    scores = (rng.integers(-6, 6, size=(n, n_neurons)) / 4).astype(np.float32)  # many ties, some -0.0
    scores[rng.random((n, n_neurons)) < 0.1] = -0.0
    t = torch.from_numpy(scores).to(dtype)
    labels = np.eye(6, dtype=bool)[np.arange(n) % 6]  # one concept per context (15 positives each)
    labels[:, 5] |= rng.random(n) < 0.3  # and one overlapping concept
    one = np.zeros((n, 1), dtype=bool)
    one[17] = True
    labels = np.concatenate([labels, one, np.ones((n, 1), dtype=bool)], axis=1)
    as_ranked = t.float().numpy()  # float64 input is ranked as float32 (as `.float()` rounds it)
    columns = rng.choice(n_neurons, 40, replace=False)
    expected = _sklearn_ap(labels, as_ranked[:, columns])
    results = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("CROSSLING_AP_THREADS", threads)
        results[threads] = average_precision_multi(t, torch.from_numpy(labels), chunk_neurons=CHUNK)
        np.testing.assert_allclose(results[threads][:, columns].numpy(), expected, atol=1e-12, rtol=0)
        single = average_precision(t, torch.from_numpy(labels[:, 0]))
        assert torch.equal(single, results[threads][0])  # one concept alone: the same bits as among several
    assert torch.equal(results["1"], results["2"])
    assert torch.equal(results["1"][-1], torch.ones(n_neurons, dtype=torch.float64))  # all positive: AP 1


def test_cpu_kernel_matches_the_torch_searches():
    """The compiled path and the torch searches (other devices, NaN) agree to rounding on wide random data."""
    from precompute.analysis.experts import average_precision_sorted, sort_scores

    rng = np.random.default_rng(11)
    n, n_neurons = 3000, 300
    t = torch.from_numpy(np.round(rng.normal(size=(n, n_neurons)), 2).astype(np.float32))
    labels = torch.from_numpy(rng.random((n, 4)) < np.array([0.002, 0.02, 0.3, 0.9]))
    labels[0] = True
    sorted_all = sort_scores(t)
    reference = torch.stack([average_precision_sorted(sorted_all, labels[:, c]) for c in range(4)])
    assert (average_precision_multi(t, labels, chunk_neurons=CHUNK) - reference).abs().max() <= 1e-12


def test_cpu_kernel_ranks_infinities_and_leaves_nan_to_the_torch_searches():
    """Infinite scores rank as the extreme values they are (sklearn rejects them: compare with finite stand-ins in
    the same order); a column with NaN is scored by the torch searches, exactly as before, the others are not
    affected."""
    from precompute.analysis.experts import average_precision_sorted, sort_scores

    rng = np.random.default_rng(2)
    n, n_neurons = 50, 70
    scores = np.round(rng.normal(size=(n, n_neurons)), 1).astype(np.float32)
    scores[rng.random((n, n_neurons)) < 0.1] = np.inf
    scores[rng.random((n, n_neurons)) < 0.1] = -np.inf
    labels = rng.random((n, 3)) < 0.3
    labels[0] = True
    stand_ins = np.clip(scores, -1e30, 1e30)
    ap = average_precision_multi(torch.from_numpy(scores), torch.from_numpy(labels), chunk_neurons=CHUNK).numpy()
    np.testing.assert_allclose(ap, _sklearn_ap(labels, stand_ins), atol=1e-12, rtol=0)

    scores[3, 5] = np.nan
    t = torch.from_numpy(scores)
    with_nan = average_precision_multi(t, torch.from_numpy(labels), chunk_neurons=CHUNK)
    sorted_all = sort_scores(t)
    torch_path = torch.stack([average_precision_sorted(sorted_all, torch.from_numpy(labels[:, c])) for c in range(3)])
    torch.testing.assert_close(with_nan[:, 5], torch_path[:, 5], rtol=0, atol=0, equal_nan=True)
    np.testing.assert_allclose(np.delete(with_nan.numpy(), 5, axis=1), np.delete(ap, 5, axis=1), atol=0, rtol=0)
