"""Planted and mutation tests of the LID probes' uncertainty and control task.

- the percentile intervals (`bootstrap_ci` over concepts, `hierarchical_bootstrap_ci` over seeds then test
  contexts) are the 2.5 % / 97.5 % quantiles of the statistic recomputed by hand on the very same draws, so a level
  typo (90 % labelled 95 %), a pooled instead of a per-seed mean, or a one-level resample fails;
- the hierarchical interval takes in the between-seed spread (wider than the pooled one when seeds disagree, as wide
  as one seed's when they are copies) and covers the mean about as often as it says in a small simulation;
- the control task (Hewitt & Liang 2019) is learnt from token identity, not from noise, and uses the first seed's
  sampled token ids (not another seed's, not the context ids); `extract` keeps the sampled ids per seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precompute.analysis.chance import bootstrap_ci, hierarchical_bootstrap_ci
from precompute.analysis.probes import control_labels, fit_probe, probe_tables

#: ``[probes]`` fit settings these tests use: no training cap, iterations to spare.
FIT = {"C": 1.0, "max_iter": 300, "max_train": 0}
#: And the rest of `probe_tables`' settings: the control task, no bootstrap.
TABLES = FIT | {"control": True, "n_resamples": 0}

R = 400  # resamples of the by-hand checks


def _two_level_by_hand(correct: list[np.ndarray], n_resamples: int, seed: int) -> np.ndarray:
    """The hierarchical statistic of every resample, one loop iteration per resample and drawn seed, from the
    draws `hierarchical_bootstrap_ci` makes: (R, S) seeds, then (R, S, max n_test) contexts, one generator."""
    sizes = np.array([c.size for c in correct])
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(correct), size=(n_resamples, len(correct)))
    contexts = rng.integers(0, sizes[drawn][..., None], size=(n_resamples, len(correct), sizes.max()), dtype=np.int32)
    stats = np.empty(n_resamples)
    for r in range(n_resamples):
        accs = []
        for j, s in enumerate(drawn[r]):
            picked = contexts[r, j, : sizes[s]]  # seed s's own number of test contexts, drawn among its own
            accs.append(correct[s][picked].mean())
        stats[r] = np.mean(accs)  # the mean over drawn seeds of their accuracies (not a pooled mean)
    return stats


def test_bootstrap_ci_bounds_are_the_95_quantiles_of_the_same_resamples():
    rng = np.random.default_rng(3)
    sums, counts = rng.random(25) * 4, rng.integers(1, 6, size=25).astype(float)
    idx = np.random.default_rng(11).integers(0, 25, size=(R, 25))
    by_hand = np.array([sums[i].sum() / counts[i].sum() for i in idx])
    estimate, lo, hi = bootstrap_ci(sums, counts, n_resamples=R, seed=11)
    assert estimate == pytest.approx(sums.sum() / counts.sum())
    assert (lo, hi) == pytest.approx(tuple(np.quantile(by_hand, [0.025, 0.975])), abs=1e-12)
    assert abs(lo - np.quantile(by_hand, 0.05)) > 1e-4  # the check tells 95 % from 90 %
    totals = np.array([sums[i].sum() for i in idx])
    _, lo, hi = bootstrap_ci(sums, n_resamples=R, seed=11, statistic="sum")
    assert (lo, hi) == pytest.approx(tuple(np.quantile(totals, [0.025, 0.975])), abs=1e-12)


@pytest.mark.parametrize("sizes", [(120, 120, 120), (90, 150, 60)])
def test_hierarchical_bounds_are_the_95_quantiles_of_the_same_two_level_resamples(sizes):
    rng = np.random.default_rng(5)
    correct = [rng.random(n) < p for n, p in zip(sizes, (0.55, 0.8, 0.95))]
    estimate, lo, hi = hierarchical_bootstrap_ci(correct, n_resamples=R, seed=7)
    assert estimate == pytest.approx(np.mean([c.mean() for c in correct]))  # what probe_results.accuracy says
    stats = _two_level_by_hand(correct, R, seed=7)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])), abs=1e-12)
    assert abs(lo - np.quantile(stats, 0.05)) > 1e-4 and abs(hi - np.quantile(stats, 0.95)) > 1e-4
    assert hierarchical_bootstrap_ci(correct, n_resamples=R, seed=7) == (estimate, lo, hi)  # reproducible
    assert np.isnan(hierarchical_bootstrap_ci(correct, n_resamples=0)[1])


def test_hierarchical_with_one_seed_is_the_bootstrap_over_test_contexts():
    correct = np.random.default_rng(0).random(500) < 0.7
    estimate, lo, hi = hierarchical_bootstrap_ci([correct], n_resamples=4000)
    ordinary = bootstrap_ci(correct.astype(float), n_resamples=4000)
    assert estimate == pytest.approx(ordinary[0])
    assert lo == pytest.approx(ordinary[1], abs=0.006) and hi == pytest.approx(ordinary[2], abs=0.006)
    half = 1.96 * np.sqrt(estimate * (1 - estimate) / correct.size)  # normal approximation of the same interval
    assert hi - lo == pytest.approx(2 * half, rel=0.1)


def test_hierarchical_interval_takes_in_the_seeds_spread():
    rng = np.random.default_rng(1)
    disagree = [rng.random(400) < p for p in (0.6, 0.9, 0.75)]  # planted: very different seeds
    _, lo, hi = hierarchical_bootstrap_ci(disagree, n_resamples=2000)
    _, plo, phi = bootstrap_ci(np.concatenate(disagree).astype(float), n_resamples=2000)
    assert hi - lo > 3 * (phi - plo)
    assert lo < 0.65 and hi > 0.85  # reaches towards the worst and the best seed
    # Seeds that agree exactly (three copies of one test set): no seed spread to add, and each drawn seed
    # resamples its contexts on its own, so the interval is the pooled one (one seed's / sqrt(3)); a resample
    # that shared its context draws across the drawn seeds would give one seed's width instead.
    one = rng.random(400) < 0.8
    _, lo, hi = hierarchical_bootstrap_ci([one, one, one], n_resamples=2000)
    _, slo, shi = bootstrap_ci(one.astype(float), n_resamples=2000)
    _, plo, phi = bootstrap_ci(np.tile(one, 3).astype(float), n_resamples=2000)
    assert hi - lo == pytest.approx(phi - plo, rel=0.15)
    assert (hi - lo) / (shi - slo) == pytest.approx(1 / np.sqrt(3), rel=0.15)


def test_hierarchical_interval_covers_about_95_percent_in_a_simulation():
    # Each seed's probe has its own true accuracy (mean 0.8, sd 0.05 over seeds) and 200 test contexts; the target
    # is the mean over seeds. 8 seeds, so the seed level has something to resample.
    rng = np.random.default_rng(2024)
    n_sim, n_seeds, n_test, mu = 150, 8, 200, 0.8
    hier = pooled = 0
    for sim in range(n_sim):
        p = np.clip(mu + 0.05 * rng.standard_normal(n_seeds), 0, 1)
        correct = [rng.random(n_test) < q for q in p]
        _, lo, hi = hierarchical_bootstrap_ci(correct, n_resamples=300, seed=sim)
        hier += lo <= mu <= hi
        _, lo, hi = bootstrap_ci(np.concatenate(correct).astype(float), n_resamples=300, seed=sim)
        pooled += lo <= mu <= hi
    assert 0.82 <= hier / n_sim <= 1.0  # percentile bootstrap over 8 seeds: a little under 95 %
    assert pooled / n_sim < 0.8 and hier - pooled >= 0.15 * n_sim  # leaving the seeds out undercovers


# --- the control task -------------------------------------------------------------------------------------


def test_control_labels_are_a_fixed_function_of_the_token_type():
    langs = np.array(["de"] * 600 + ["en"] * 300 + ["zh"] * 100)
    types = np.random.default_rng(0).integers(0, 5000, size=1000)
    labels = control_labels(types, langs)
    assert set(labels.tolist()) <= {"de", "en", "zh"}
    for t in np.unique(types):  # one label per type
        assert len(set(labels[types == t].tolist())) == 1
    assert np.array_equal(control_labels(types[:100], langs), labels[:100])  # not a function of the other types
    per_type = dict(zip(types.tolist(), labels.tolist()))
    freq = {lang: np.mean([v == lang for v in per_type.values()]) for lang in ("de", "en", "zh")}
    assert freq == pytest.approx({"de": 0.6, "en": 0.3, "zh": 0.1}, abs=0.05)  # the empirical distribution
    assert not np.array_equal(control_labels(types, langs, seed=1), labels)  # the seed picks the mapping


def _one_hot(ids: np.ndarray, n_types: int, rng: np.random.Generator) -> np.ndarray:
    return np.eye(n_types)[ids] + 0.05 * rng.standard_normal((ids.size, n_types))


def test_control_task_is_learnt_from_token_identity_not_from_noise():
    rng = np.random.default_rng(0)
    n, n_types = 600, 12
    langs = np.repeat(["ar", "en", "zh"], n // 3)
    ids = rng.integers(0, n_types, size=(1, n))  # token types independent of the language
    identity = _one_hot(ids[0], n_types, rng)
    noise = rng.standard_normal((n, n_types))
    token = torch.from_numpy(np.stack([identity, noise])[None].astype(np.float32))  # (1 seed, 2 layers, n, d)
    reps = {"token": token, "mean": token[0]}
    results, _ = probe_tables(reps, langs, seeds=[0], test_size=0.3, token_types={"token": ids}, **TABLES)
    tok = results.filter(results["representation"] == "token").sort("layer").rows(named=True)
    assert tok[0]["control_accuracy"] > 0.95  # the probe learns the type labels from token identity
    assert tok[0]["accuracy"] < 0.5  # ... but there is no language in these features
    assert tok[0]["accuracy"] - tok[0]["control_accuracy"] < -0.4  # selectivity: negative, as it should be
    majority = np.unique(control_labels(ids[0], langs), return_counts=True)[1].max() / n
    assert tok[1]["control_accuracy"] == pytest.approx(majority, abs=0.1)  # noise: about the majority rate
    # The sentence mean has no token type: no control task, NULL.
    assert results.filter(results["representation"] == "mean")["control_accuracy"].null_count() == 2
    no_control = TABLES | {"control": False}
    off, _ = probe_tables(reps, langs, seeds=[0], test_size=0.3, token_types={"token": ids}, **no_control)
    assert off["control_accuracy"].null_count() == 4


def test_control_uses_the_first_seeds_sampled_token_ids_not_another_seeds_nor_the_context_ids():
    rng = np.random.default_rng(4)
    n, n_types, seeds = 600, 12, [5, 2]  # seed values that are not their positions
    langs = np.repeat(["ar", "en", "zh"], n // 3)
    ids = rng.integers(0, n_types, size=(2, n))  # each seed sampled its own token per context
    assert (ids[0] != ids[1]).mean() > 0.8
    token = torch.from_numpy(np.stack([_one_hot(ids[s], n_types, rng)[None] for s in range(2)]).astype(np.float32))
    results, _ = probe_tables({"token": token}, langs, seeds=seeds, test_size=0.3, token_types={"token": ids}, **TABLES)
    assert results["control_accuracy"][0] > 0.95
    # The mutations this kills, each below 0.6 on the same features and split: the second seed's ids, the
    # context ids as types, and the old per-context shuffle.
    features = token[0, 0].numpy()
    wrong = {
        "other seed": control_labels(ids[1], langs),
        "context id": control_labels(np.arange(n), langs),
        "shuffled": np.random.default_rng(5).permutation(langs),
    }
    for name, labels in wrong.items():
        acc = fit_probe(features, labels, seed=5, test_size=0.3, stratify=langs, **FIT)["accuracy"]
        assert acc < 0.6, name


def test_control_fit_keeps_the_lid_probes_split():
    rng = np.random.default_rng(0)
    langs = np.repeat(["a", "b"], 100)
    x = rng.standard_normal((200, 3))
    types = control_labels(rng.integers(0, 40, size=200), langs)
    capped = FIT | {"max_train": 80}
    lid = fit_probe(x, langs, seed=3, test_size=0.25, **capped)
    ctrl = fit_probe(x, types, seed=3, test_size=0.25, stratify=langs, **capped)
    assert (ctrl["n_train"], ctrl["n_test"]) == (lid["n_train"], lid["n_test"])
    same = fit_probe(x, langs, seed=3, test_size=0.25, **FIT)
    assert fit_probe(x, langs, seed=3, test_size=0.25, stratify=langs, **FIT) == same
    one = fit_probe(x, np.array(["z"] * 200), seed=3, test_size=0.25, stratify=langs, **FIT)  # one class: said always
    assert one["accuracy"] == 1.0


def test_extract_keeps_the_sampled_token_ids_per_seed(tiny_gpt2_dir):
    from precompute.extract import extract, sample_token_positions, tokenize_contexts
    from precompute.model import load_checkpoint
    from precompute.model.layout import ModelLayout

    loaded = load_checkpoint(str(tiny_gpt2_dir), device="cpu", dtype="float32")
    texts = [
        "The earthquake shook the old house on Monday.",
        "El lunes por la mañana llovió mucho.",
        "地震在星期一摇动了老房子。",
        "Joy and happiness filled the house in March.",
    ]
    contexts = tokenize_contexts(loaded.tokenizer, texts, [(None, None)] * 4, 64)
    pooled = extract(loaded, ModelLayout.of(loaded.model), contexts, batch_tokens=4096, token_seeds=[3, 8])
    assert pooled.token_ids.shape == (2, 4) and pooled.token_ids.dtype == np.int64
    for s, seed in enumerate([3, 8]):
        pos = sample_token_positions(contexts.real_masks, seed)
        assert pooled.token_ids[s].tolist() == [contexts.input_ids[i][p] for i, p in enumerate(pos)]
        # The ids are the tokens behind resid_token[s]: layer 0 is the token's embedding plus its position's.
        wte, wpe = loaded.model.transformer.wte.weight, loaded.model.transformer.wpe.weight
        expected = wte[torch.from_numpy(pooled.token_ids[s])] + wpe[torch.from_numpy(pos)]
        torch.testing.assert_close(pooled.resid_token[s, 0], expected.detach(), rtol=1e-5, atol=1e-5)
    assert (pooled.token_ids[0] != pooled.token_ids[1]).any()
