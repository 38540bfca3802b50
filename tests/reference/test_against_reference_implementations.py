"""crossling's vectorised methods against independent, straightforward re-implementations of the references.

- Tang et al.'s language-neuron selection (RUCAIBox/Language-Specific-Neurons ``identify.py``) on random
  activation probabilities, against a plain numpy version written from their description, loops included;
- the steering value against ``numpy.percentile(q=50)`` (apple/ml-selfcond's ``on_p50``);
- max pooling against a manual loop over each context's tokens, one context at a time (no padding).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from precompute.analysis.experts import on_p50, score_experts
from precompute.analysis.lape import select_language_neurons
from precompute.analysis.units import UnitAxis


def _tang_numpy(probs: np.ndarray, top_rate: float, filter_rate: float, bar_ratio: float) -> np.ndarray:
    """identify.py, step by step, in numpy and Python loops (no code shared with crossling)."""
    n_units, n_langs = probs.shape
    flat = np.sort(probs.ravel())
    top_value = flat[max(1, round(flat.size * filter_rate)) - 1]  # kthvalue: k-th smallest, 1-based
    bar = flat[max(1, round(flat.size * bar_ratio)) - 1]
    entropies = []
    for n in range(n_units):
        if not any(probs[n, lang] > top_value for lang in range(n_langs)):
            entropies.append(math.inf)
            continue
        total = sum(probs[n])
        h = 0.0
        for lang in range(n_langs):
            q = probs[n, lang] / total
            if q > 0:
                h -= q * math.log(q)
        entropies.append(h)
    order = sorted(range(n_units), key=lambda n: (entropies[n], n))
    k = round(n_units * top_rate)
    chosen = [n for n in order[:k] if entropies[n] < math.inf]
    out = np.zeros(probs.shape, dtype=bool)
    for n in chosen:
        for lang in range(n_langs):
            out[n, lang] = probs[n, lang] > bar
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    ("top_rate", "filter_rate", "bar_ratio"), [(0.01, 0.95, 0.95), (0.05, 0.9, 0.95), (0.2, 0.5, 0.8)]
)
def test_tang_selection_matches_a_numpy_reimplementation(seed, top_rate, filter_rate, bar_ratio):
    rng = np.random.default_rng(seed)
    n_units, n_langs = int(rng.integers(200, 1200)), int(rng.integers(2, 9))
    # Activation probabilities as real units have them: mostly broad, some peaked on few languages, some dead.
    probs = rng.beta(2, 5, size=(n_units, n_langs))
    peaked = rng.random(n_units) < 0.1
    probs[peaked] *= rng.random((int(peaked.sum()), n_langs)) < 0.3
    probs[rng.random(n_units) < 0.02] = 0.0
    ours = select_language_neurons(
        torch.from_numpy(probs), top_rate=top_rate, filter_rate=filter_rate, bar_ratio=bar_ratio
    ).numpy()
    ref = _tang_numpy(probs, top_rate, filter_rate, bar_ratio)
    assert ref.any()  # the case is not vacuous
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("n_pos", [1, 2, 5, 10, 11])
def test_on_p50_matches_numpy_percentile(n_pos):
    rng = np.random.default_rng(n_pos)
    values = rng.normal(size=(30, 7)).astype(np.float32)
    mask = np.zeros(30, dtype=bool)
    mask[rng.choice(30, size=n_pos, replace=False)] = True
    ours = on_p50(torch.from_numpy(values), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(ours, np.percentile(values[mask], 50, axis=0), rtol=1e-6, atol=1e-6)


def test_score_experts_stores_on_p50_of_the_top_units():
    rng = np.random.default_rng(0)
    langs = np.array(["es"] * 20)
    concepts = np.array(["a"] * 8 + ["b"] * 12)
    acts = rng.normal(size=(20, 9)).astype(np.float32)
    units = UnitAxis.contiguous([0, 9])
    top = score_experts(torch.from_numpy(acts), langs, concepts, units, top_k=3, chunk_neurons=8192).top
    for row in top.iter_rows(named=True):
        on = acts[concepts == row["concept_id"], row["unit"]]
        assert row["median_pos_act"] == pytest.approx(float(np.percentile(on, 50)), rel=1e-6)


def test_max_pooling_matches_a_manual_loop_over_tokens(tmp_path):
    from precompute.extract import extract, tokenize_contexts
    from precompute.model import find_mlp_sites, load_checkpoint
    from precompute.model.layout import ModelLayout
    from tests.support.tiny_models import add_start_token, save_tiny_model

    loaded = load_checkpoint(str(add_start_token(save_tiny_model("xglm", tmp_path / "m"))), device="cpu")
    texts = ["El terremoto sacudió la casa vieja.", "地震", "Joy and happiness filled the house in March.", "x"]
    contexts = tokenize_contexts(loaded.tokenizer, texts, [(None, None)] * len(texts), 64)
    layout = ModelLayout.of(loaded.model)
    pooled = extract(loaded, layout, contexts, batch_tokens=4096, poolings=("max", "mean"))  # padded batches
    sites = find_mlp_sites(loaded.model)
    for i, ids in enumerate(contexts.input_ids):
        seen: dict[int, torch.Tensor] = {}
        handles = [
            s.module.register_forward_pre_hook(lambda m, a, j=s.layer, into=seen: into.__setitem__(j, a[0][0]))
            for s in sites
        ]
        with torch.no_grad():
            loaded.model(input_ids=torch.tensor([ids]))
        for h in handles:
            h.remove()
        tokens = torch.cat([seen[s.layer] for s in sites], dim=1)  # (T, N): every layer's units
        expected = torch.full((tokens.shape[1],), -math.inf)
        for t in range(len(ids)):
            if t == 0:
                continue  # the tokenizer's own start token </s>: fed, never pooled
            expected = torch.maximum(expected, tokens[t])
        torch.testing.assert_close(pooled.mlp_max[i], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pooled.mlp_mean[i], tokens[1:].mean(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_per_concept", [1, 7, 20])
def test_expert_ap_matches_sklearn_on_the_pipelines_layout(n_per_concept):
    """`score_experts`' full AP matrix against ``sklearn.metrics.average_precision_score`` per (concept, unit):
    every context positive for exactly one concept (as one language's contexts are), float16 post-GELU-like
    responses (many exact zeros and -0.0: heavy ties), 1,100 units (two CPU slices, two threads)."""
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(n_per_concept)
    n_concepts, n_units = 30, 1100
    concepts = np.repeat([f"c{i:02d}" for i in range(n_concepts)], n_per_concept)
    n = len(concepts)
    pre = rng.normal(size=(n, n_units)).astype(np.float32)
    zeros = np.where(rng.random((n, n_units)) < 0.5, np.float32(-0.0), np.float32(0.0))
    acts = np.where(pre > 0, pre, zeros).astype(np.float16)  # ReLU-like: half the responses zeros of either sign
    units = UnitAxis.contiguous([0, 600, n_units])
    result = score_experts(torch.from_numpy(acts), np.array(["xx"] * n), concepts, units, top_k=5, chunk_neurons=8192)
    ap = result.full_ap["xx"].numpy()
    for ci, concept in enumerate(result.concept_ids):
        labels = concepts == concept
        for unit in rng.choice(n_units, 25, replace=False):
            expected = average_precision_score(labels, acts[:, unit].astype(np.float64))
            assert abs(ap[ci, unit] - expected) <= 1e-12
