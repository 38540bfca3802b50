"""Planted truths: activations where the right answer is known by construction, and each analysis must find it.

No training: token-level activations are drawn at random, a known effect is planted, and the analyses run on
them exactly as the pipeline calls them (responses max-pooled over each context's tokens, as ml-selfcond and the
paper do; activation events counted per token, as Tang et al. do). Steering's planted test (a unit wired to one
output token's logit) is ``tests/planted/test_steering_wired_unit.py``.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from precompute.analysis.alignment import expert_overlap, shared_experts
from precompute.analysis.experts import score_experts
from precompute.analysis.lape import language_neuron_tables
from precompute.analysis.probes import probe_tables
from precompute.analysis.units import UnitAxis

LANGS = ["de", "en", "es", "ja", "ru", "zh"]
SCRIPT = {"de": "Latin", "en": "Latin", "es": "Latin", "ru": "Cyrillic", "ja": "Han", "zh": "Han"}


def _token_contexts(rng: np.random.Generator, n_contexts: int, n_units: int) -> list[np.ndarray]:
    """Per context, (T, n_units) token activations of pure noise, T in 5..16."""
    return [rng.normal(0.0, 1.0, size=(int(rng.integers(5, 17)), n_units)) for _ in range(n_contexts)]


def test_a_unit_firing_on_one_concepts_tokens_in_every_language_is_its_top_shared_expert():
    rng = np.random.default_rng(0)
    concepts = ["earthquake", "joy", "house", "monday", "march"]
    n_per, n_units, planted = 12, 300, 123  # column 123: layer 1 (columns 100..299), unit 23
    langs = np.repeat(LANGS, len(concepts) * n_per)
    concept_ids = np.tile(np.repeat(concepts, n_per), len(LANGS))
    contexts = _token_contexts(rng, len(langs), n_units)
    for tokens, concept in zip(contexts, concept_ids):
        if concept == "earthquake":  # the concept's word: 1-2 tokens somewhere in the context fire the unit
            start = int(rng.integers(0, len(tokens) - 1))
            tokens[start : start + int(rng.integers(1, 3)), planted] += 6.0
    responses = torch.from_numpy(np.stack([t.max(axis=0) for t in contexts]).astype(np.float32))  # max pooling
    units = UnitAxis.contiguous([0, 100, 300])
    result = score_experts(responses, langs, concept_ids, units, top_k=20, chunk_neurons=8192)
    top1 = result.top.filter((pl.col("concept_id") == "earthquake") & (pl.col("rank") == 1))
    assert sorted(top1["lang"].to_list()) == sorted(LANGS)
    assert set(zip(top1["layer"].to_list(), top1["unit"].to_list())) == {(1, planted - 100)}
    assert min(top1["ap"].to_list()) >= 0.99
    shared = shared_experts(result, units, min_langs=len(LANGS))
    row = shared.filter((pl.col("concept_id") == "earthquake") & (pl.col("layer") == 1) & (pl.col("unit") == 23))
    assert row.height == 1 and row["n_langs_topk"][0] == len(LANGS) and row["min_ap"][0] >= 0.99
    # No other concept has a unit that is top-20 in every language by chance.
    assert set(shared["concept_id"].to_list()) == {"earthquake"}
    overlap = expert_overlap(result, k=20)
    quake = overlap.filter(pl.col("concept_id") == "earthquake")["jaccard"]
    assert quake.len() == len(LANGS) * (len(LANGS) - 1) // 2
    assert quake.min() >= 1 / 39 - 1e-12  # every pair's two top-20 sets share at least the planted unit


def test_a_unit_firing_only_on_one_scripts_tokens_is_lape_specific_to_that_scripts_languages_only():
    rng = np.random.default_rng(1)
    n_per, n_units = 40, 400
    han, cyrillic = 17, 250  # layer 0 unit 17; layer 1 unit 50
    langs = np.repeat(LANGS, n_per)
    base = rng.uniform(0.2, 0.8, size=n_units)  # every other unit fires at its own rate in every language
    fractions, n_tokens = [], []
    for lang in langs:
        t = int(rng.integers(5, 17))
        events = rng.random((t, n_units)) < base  # (T, units) activation events (> 0)
        events[:, han] = SCRIPT[lang] == "Han"  # fires on every token of Han script, never elsewhere
        events[:, cyrillic] = SCRIPT[lang] == "Cyrillic"
        fractions.append(events.mean(axis=0))
        n_tokens.append(t)
    active = torch.from_numpy(np.stack(fractions).astype(np.float32))
    tang = {"quantile": 0.01, "filter_rate": 0.95, "bar_ratio": 0.95, "min_prob": 0.05, "max_lape": None}
    units = UnitAxis.contiguous([0, 200, 400])
    neurons, counts = language_neuron_tables(active, langs.tolist(), units, selection="tang", n_tokens=n_tokens, **tang)
    by_unit = {(lay, u): set(g["top_lang"].to_list()) for (lay, u), g in neurons.group_by("layer", "unit")}
    assert by_unit[(0, han)] == {"ja", "zh"}
    assert by_unit[(1, cyrillic - 200)] == {"ru"}
    # Tang's 1 % of 400 units: the two planted units have the lowest entropy; the other two selected are broad
    # units (LAPE near log 6), assigned wherever their probability passes the 95th-percentile bar.
    lape = {(lay, u): v for lay, u, v in neurons.select("layer", "unit", "lape").unique().iter_rows()}
    assert len(lape) == 4 and sorted(lape, key=lape.get)[:2] == [(1, cyrillic - 200), (0, han)]
    assert counts.filter(pl.col("kind") == "language_specific")["n"].sum() == 4


def test_language_identity_only_in_chosen_layers_gives_probe_accuracy_near_1_there_and_chance_elsewhere():
    rng = np.random.default_rng(2)
    n_per, d, n_layers, carrying = 50, 16, 5, {0, 4}  # near the input and the output, as the paper finds late
    langs = np.repeat(LANGS, n_per)
    codes = np.repeat(np.arange(len(LANGS)), n_per)
    directions = rng.normal(size=(len(LANGS), d)) * 3.0
    seeds = [0, 1, 2]

    def states() -> np.ndarray:
        h = rng.normal(size=(n_layers, len(langs), d))
        for layer in carrying:
            h[layer] += directions[codes]
        return h

    token = torch.from_numpy(np.stack([states() for _ in seeds]).astype(np.float32))  # (seeds, layers, n, d)
    mean = torch.from_numpy(states().astype(np.float32))
    fit = {"C": 1.0, "max_iter": 300, "max_train": 0, "control": True, "n_resamples": 0}
    results, _ = probe_tables({"token": token, "mean": mean}, langs, seeds=seeds, test_size=0.3, **fit)
    chance = 1 / len(LANGS)
    for rep in ("token", "mean"):
        acc = dict(results.filter(pl.col("representation") == rep).select("layer", "accuracy").iter_rows())
        for layer in range(n_layers):
            if layer in carrying:
                assert acc[layer] >= 0.95, (rep, layer, acc[layer])
            else:
                assert abs(acc[layer] - chance) < 0.12, (rep, layer, acc[layer])
    assert set(results["n_seeds"].to_list()) == {3}
