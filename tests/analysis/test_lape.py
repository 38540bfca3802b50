"""LAPE (Tang et al. 2024) and per-layer neuron counts on hand-checkable activation fractions."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from precompute.analysis.lape import activation_probs, language_neuron_tables, lape
from precompute.analysis.units import UnitAxis

#: Every LAPE setting, as the config's defaults set them (Tang et al.'s rule); tests override what they vary.
TANG = {
    "selection": "tang",
    "quantile": 0.01,
    "filter_rate": 0.95,
    "bar_ratio": 0.95,
    "min_prob": 0.05,
    "max_lape": None,
}


def _tables(active, langs, units, **settings):
    """`language_neuron_tables` with `TANG`'s settings, ``settings`` overriding some."""
    return language_neuron_tables(active, langs, units, **(TANG | settings))


def test_lape_minimal_for_one_language_and_maximal_for_uniform():
    probs = torch.tensor(
        [
            [0.8, 0.0, 0.0],  # active in one language only
            [0.3, 0.3, 0.3],  # equally active everywhere
            [0.5, 0.5, 0.0],  # two languages
            [0.0, 0.0, 0.0],  # never active: undefined
        ]
    )
    out = lape(probs)
    assert out[0].item() == 0.0
    assert out[1].item() == pytest.approx(math.log(3))
    assert out[2].item() == pytest.approx(math.log(2))
    assert math.isnan(out[3].item())


def _toy():
    """Two layers of 3 neurons; contexts in de, en, fr (2 each)."""
    langs = ["de", "de", "en", "en", "fr", "fr"]
    active = torch.tensor(
        [
            # layer 0: n0 de-only, n1 uniform, n2 never   | layer 1: n0 en-only, n1 mostly fr, n2 uniform low
            [0.9, 0.5, 0.0, 0.0, 0.1, 0.02],
            [0.7, 0.5, 0.0, 0.0, 0.1, 0.02],
            [0.0, 0.5, 0.0, 0.6, 0.1, 0.02],
            [0.0, 0.5, 0.0, 0.4, 0.1, 0.02],
            [0.0, 0.5, 0.0, 0.0, 0.9, 0.02],
            [0.0, 0.5, 0.0, 0.0, 0.7, 0.02],
        ]
    )
    return active, langs, UnitAxis.contiguous([0, 3, 6])


def test_activation_probs_context_mean_and_token_weighted():
    active, langs, _ = _toy()
    names, probs = activation_probs(active, langs)
    assert names == ["de", "en", "fr"]
    assert probs[0].tolist() == pytest.approx([0.8, 0.0, 0.0])
    # Token-weighted: de contexts of 1 and 3 tokens -> (0.9*1 + 0.7*3) / 4 = 0.75.
    _, weighted = activation_probs(active, langs, n_tokens=[1, 3, 1, 1, 1, 1])
    assert weighted[0, 0].item() == pytest.approx(0.75)


def test_language_specific_selection_and_counts_with_zeros():
    active, langs, units = _toy()
    # quantile 2/6 -> the 2 lowest-LAPE neurons among those with max p >= 0.05: de-only (L0 n0), en-only (L1 n0).
    neurons, counts = _tables(active, langs, units, selection="threshold", quantile=2 / 6, min_prob=0.05)
    assert neurons.select("layer", "unit", "top_lang").rows() == [(0, 0, "de"), (1, 0, "en")]
    assert neurons["lape"].to_list() == [0.0, 0.0]
    assert neurons["top_prob"].to_list() == pytest.approx([0.8, 0.5])
    assert counts.rows() == [(0, "language_specific", 1), (1, "language_specific", 1)]
    # min_prob excludes the en-only neuron (p = 0.5); the next lowest LAPE is the mostly-fr neuron.
    neurons, _ = _tables(active, langs, units, selection="threshold", quantile=2 / 6, min_prob=0.6)
    assert neurons.select("layer", "unit").rows() == [(0, 0), (1, 1)]
    # Nothing selected: every layer still has a row, with 0.
    neurons, counts = _tables(active, langs, units, selection="threshold", quantile=0.0, min_prob=0.05)
    assert neurons.height == 0
    assert counts.rows() == [(0, "language_specific", 0), (1, "language_specific", 0)]
    assert neurons.schema == {
        "layer": pl.Int32,
        "unit": pl.Int32,
        "lape": pl.Float64,
        "top_lang": pl.Utf8,
        "top_prob": pl.Float64,
    }


def test_absolute_threshold_and_never_active_neurons():
    active, langs, units = _toy()
    # Normalised LAPE <= 0.6: the single-language neurons (0) and the mostly-fr one (q = .1, .1, .8:
    # 0.639 nats / log 3 = 0.58); never the silent one.
    neurons, _ = _tables(active, langs, units, selection="threshold", quantile=0.01, min_prob=0.0, max_lape=0.6)
    assert neurons.select("layer", "unit").rows() == [(0, 0), (1, 0), (1, 1)]
    assert (0, 2) not in neurons.select("layer", "unit").rows()


def test_shared_expert_counts_distinct_units_per_layer_with_zeros():
    active, langs, units = _toy()
    shared = pl.DataFrame(
        {
            "concept_id": ["monday", "tuesday", "monday"],
            "layer": [1, 1, 1],
            "unit": [2, 2, 0],
            "n_langs_topk": [3, 3, 2],
        }
    )
    _, counts = _tables(
        active, langs, units, selection="threshold", quantile=2 / 6, min_prob=0.05, shared_experts=shared
    )
    got = {(layer, kind): n for layer, kind, n in counts.rows()}
    assert got[(0, "shared_expert")] == 0
    assert got[(1, "shared_expert")] == 2  # units 2 and 0, unit 2 counted once
    assert got[(1, "language_specific_shared")] == 1  # L1 n0 is en-specific and a shared expert
    assert got[(0, "language_specific_shared")] == 0
    _, counts = _tables(
        active, langs, units, selection="threshold", quantile=2 / 6, min_prob=0.05, shared_experts=shared.clear()
    )
    assert counts.filter(pl.col("kind") == "shared_expert")["n"].to_list() == [0, 0]


def test_layer_numbering_single_language_and_bad_offsets():
    """Hooked blocks 5 and 9 name the rows and the counts; with every block hooked the same rows carry 0 and 1."""
    active, langs, units = _toy()
    hooked = UnitAxis.from_sizes([5, 9], [3, 3])
    neurons, counts = _tables(active, langs, hooked, selection="threshold", quantile=2 / 6, min_prob=0.05)
    assert neurons["layer"].to_list() == [5, 9]
    assert counts["layer"].to_list() == [5, 9]
    every, every_counts = _tables(active, langs, units, selection="threshold", quantile=2 / 6, min_prob=0.05)
    as_positions = pl.col("layer").replace_strict({5: 0, 9: 1}, return_dtype=pl.Int32)
    assert every.equals(neurons.with_columns(as_positions))
    assert every_counts.equals(counts.with_columns(as_positions))
    neurons, counts = _tables(active, ["de"] * 6, units, selection="threshold", quantile=0.5, min_prob=0.0)
    assert neurons.height == 0 and counts["n"].to_list() == [0, 0]
    with pytest.raises(ValueError, match="unit columns"):
        _tables(active, langs, UnitAxis.contiguous([0, 3, 5]), quantile=0.1, min_prob=0.0)


def test_float16_input():
    active, langs, units = _toy()
    a, _ = _tables(active, langs, units, selection="threshold", quantile=2 / 6, min_prob=0.05)
    b, _ = _tables(active.half(), langs, units, selection="threshold", quantile=2 / 6, min_prob=0.05)
    assert a.select("layer", "unit").rows() == b.select("layer", "unit").rows()


def test_tang_selection_filters_ranks_by_entropy_and_assigns_every_language_over_the_bar():
    active, langs, units = _toy()
    # 18 context-mean probabilities; sorted: 7 zeros, 0.02 x3, 0.1 x2, 0.5 x4, 0.8 x2. filter_rate 0.5 ->
    # the 9th smallest, 0.02: kept are units with some p > 0.02 (not the silent L0 n2, not the flat-low L1 n2).
    neurons, counts = _tables(active, langs, units, selection="tang", quantile=2 / 6, filter_rate=0.5, bar_ratio=0.5)
    assert neurons.select("layer", "unit", "top_lang").rows() == [(0, 0, "de"), (1, 0, "en")]
    assert counts.rows() == [(0, "language_specific", 1), (1, "language_specific", 1)]
    # A third unit (mostly fr, LAPE 0.64) is selected with top_rate 3/6, and assigned to every language over
    # the bar (p = 0.1, 0.1, 0.8 > 0.02): one row per (unit, language), one unit in the counts.
    neurons, counts = _tables(active, langs, units, selection="tang", quantile=3 / 6, filter_rate=0.5, bar_ratio=0.5)
    rows = neurons.select("layer", "unit", "top_lang").rows()
    assert rows == [(0, 0, "de"), (1, 0, "en"), (1, 1, "de"), (1, 1, "en"), (1, 1, "fr")]
    assert neurons.filter((pl.col("layer") == 1) & (pl.col("unit") == 1))["top_prob"].to_list() == pytest.approx(
        [0.1, 0.1, 0.8]
    )
    assert counts.rows() == [(0, "language_specific", 1), (1, "language_specific", 2)]
    # Tang's bar (0.95 quantile = 0.8) is strict: no p exceeds it, so the selected units belong to no language.
    neurons, counts = _tables(active, langs, units, quantile=3 / 6, filter_rate=0.5)
    assert neurons.height == 0 and counts["n"].to_list() == [0, 0]


def test_tang_selection_is_select_language_neurons():
    from precompute.analysis.lape import select_language_neurons

    active, langs, units = _toy()
    _, probs = activation_probs(active, langs)
    expected = select_language_neurons(probs, top_rate=0.5, filter_rate=0.5, bar_ratio=0.5)
    neurons, _ = _tables(active, langs, units, quantile=0.5, filter_rate=0.5, bar_ratio=0.5)
    assert neurons.height == int(expected.sum())
    with pytest.raises(ValueError, match="selection"):
        _tables(active, langs, units, selection="lowest")
