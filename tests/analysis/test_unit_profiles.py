"""The Neuron page beyond the top contexts: a unit's firing rate and mean response per language, and contexts
drawn from each decile band of its responses and at random.

On a tiny GPT-2 (tests/support/tiny_models.py) and its pooled activations: the per-language profile equals a
by-hand computation one unit and one language at a time; every decile sample's response lies in its band of
the language's sorted responses; the draw is the same for the same seed; and the drilldown stage, run as the
pipeline runs it, stores both tables with the samples' tokens from the second pass.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from precompute.analysis import drilldown as dd
from precompute.config import RunConfig
from precompute.extract import extract, tokenize_contexts
from precompute.model import load_checkpoint
from precompute.model.layout import ModelLayout
from precompute.profiling import StageTimer
from precompute.stages import CheckpointContext, run_stages
from precompute.stages import drilldown as drilldown_stage
from precompute.stages.contexts import PreparedContexts
from tests.support.tiny_models import save_tiny_model

CPU = torch.device("cpu")

WORDS = ["house", "rain", "cold", "Monday", "March", "joy", "river", "stone", "light", "bread", "green", "seven"]
#: 2 languages x 30 contexts: enough for every decile band to hold 3 contexts.
TEXTS = [f"The {WORDS[i % 12]} and the {WORDS[(i * 5 + 1) % 12]} are {i} times here." for i in range(30)] + [
    f"Der {WORDS[i % 12]} und die {WORDS[(i * 7 + 3) % 12]} sind {i} mal da." for i in range(30)
]
LANGS = np.array(["en"] * 30 + ["de"] * 30)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny GPT-2, its contexts, layout and max-pooled activations (with ``mlp_active``)."""
    loaded = load_checkpoint(str(save_tiny_model("gpt2", tmp_path_factory.mktemp("profiles"), seed=4)), device="cpu")
    contexts = tokenize_contexts(loaded.tokenizer, TEXTS, [(None, None)] * len(TEXTS), 64)
    layout = ModelLayout.of(loaded.model)
    pooled = extract(loaded, layout, contexts, batch_tokens=256, poolings=("max",), token_seeds=[])
    return SimpleNamespace(loaded=loaded, contexts=contexts, layout=layout, pooled=pooled)


def _columns(layout: ModelLayout) -> np.ndarray:
    """A few units of every hooked layer, as global columns."""
    layers = np.array([site.layer for site in layout.sites for _ in range(4)])
    units = np.array([u for _ in layout.sites for u in (0, 3, 11, 29)])
    return np.sort(layout.units.columns(layers, units))


def test_language_profile_is_the_by_hand_share_and_mean(tiny):
    responses, active = tiny.pooled.mlp["max"], tiny.pooled.mlp_active
    cols = _columns(tiny.layout)
    got = dd.language_profiles(responses, active, LANGS, cols, tiny.layout.units, device=CPU)
    assert got.height == len(cols) * 2
    fired_somewhere = False
    for row in got.iter_rows(named=True):
        col = int(tiny.layout.units.columns(np.array([row["layer"]]), np.array([row["unit"]]))[0])
        rows = np.flatnonzero(LANGS == row["lang"])
        share = active[rows, col].numpy().astype(np.float64)
        assert row["n_contexts"] == len(rows)
        assert row["firing_rate"] == pytest.approx(float(np.mean(share)), rel=1e-9, abs=1e-12)
        assert row["context_rate"] == pytest.approx(float(np.mean(share > 0)), abs=1e-12)
        mean = float(np.mean(responses[rows, col].numpy().astype(np.float64)))
        assert row["mean_response"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
        fired_somewhere |= 0 < row["firing_rate"] < 1
    assert fired_somewhere  # the check saw rates that are neither none nor all


def test_decile_samples_lie_in_their_band_and_the_draw_is_seeded(tiny):
    responses = tiny.pooled.mlp["max"]
    cols = _columns(tiny.layout)
    got = dd.sample_contexts(responses, LANGS, cols, per_decile=2, n_random=4, seed=7, device=CPU)
    # 2 per band x 10 bands + 4 random, per (unit, language).
    assert got.height == len(cols) * 2 * (2 * 10 + 4)
    for (col, lang), mine in got.group_by("col", "lang"):
        rows = np.flatnonzero(LANGS == lang)
        ordered = np.sort(responses[rows, col].numpy())  # (30,) ascending
        for d in range(1, 11):
            band = mine.filter(pl.col("sample") == f"decile_{d}")
            lo, hi = (30 * (d - 1)) // 10, (30 * d) // 10
            assert band.height == 2 and band["row"].n_unique() == 2
            assert set(band["row"].to_list()) <= set(rows.tolist())
            assert all(ordered[lo] <= r <= ordered[hi - 1] for r in band["response"].to_list())
            assert band["response"].to_list() == sorted(band["response"].to_list(), reverse=True)
        drawn = mine.filter(pl.col("sample") == "random")
        assert drawn.height == 4 and drawn["row"].n_unique() == 4 and set(drawn["row"]) <= set(rows.tolist())
        np.testing.assert_array_equal(drawn["response"].to_numpy(), responses[drawn["row"].to_list(), col].numpy())
    again = dd.sample_contexts(responses, LANGS, cols, per_decile=2, n_random=4, seed=7, device=CPU)
    assert again.equals(got)
    other = dd.sample_contexts(responses, LANGS, cols, per_decile=2, n_random=4, seed=8, device=CPU)
    assert not other["row"].equals(got["row"])


def test_drilldown_stage_stores_profiles_and_samples_with_their_tokens(tiny):
    cfg = RunConfig()
    cfg.drilldown.top_contexts = 3
    n = len(TEXTS)
    sentences = pl.DataFrame(
        {
            "sentence_id": np.arange(100, 100 + n),
            "text": TEXTS,
            "lang": LANGS,
            "concept_id": [WORDS[i % 12] for i in range(n)],
        }
    )
    cells = sentences.select("lang", "concept_id").unique()
    units = [(site.layer, u) for site in tiny.layout.sites for u in (0, 5)]
    neuron_ap = pl.DataFrame(
        [
            {"lang": lang, "concept_id": concept, "layer": layer, "unit": unit, "ap": 0.5, "rank": k + 1}
            for lang, concept in cells.rows()
            for k, (layer, unit) in enumerate(units)
        ]
    ).with_columns(pl.col("layer", "unit", "rank").cast(pl.Int32))
    responses = tiny.pooled.mlp["max"]
    ctx = CheckpointContext(
        cfg=cfg,
        checkpoint="c",
        loaded=tiny.loaded,
        layout=tiny.layout,
        concept_set=SimpleNamespace(sentences=sentences),
        prepared=PreparedContexts(contexts=tiny.contexts, keep=np.arange(n), truncated=pl.DataFrame()),
        artefacts={"pooled": tiny.pooled, "responses": responses},
        stored={"neuron_ap": neuron_ap, "language_neurons": pl.DataFrame(schema={"layer": pl.Int32, "unit": pl.Int32})},
    )
    tables = run_stages([drilldown_stage.STAGE], ctx, StageTimer(CPU))
    profile, samples = tables["unit_language_profile"], tables["unit_sample_contexts"]
    assert profile.height == len(units) * 2
    per_unit = dd.DECILES * dd.DECILE_SAMPLES + dd.RANDOM_SAMPLES
    assert samples.height == len(units) * 2 * per_unit
    assert samples.columns[:5] == ["layer", "unit", "lang", "sample", "rank"]
    for row in samples.iter_rows(named=True):
        col = int(tiny.layout.units.columns(np.array([row["layer"]]), np.array([row["unit"]]))[0])
        assert row["response"] == float(responses[row["sentence_id"] - 100, col])
        acts = np.asarray(row["token_act"], dtype=np.float32)
        assert float(acts.max()) == row["peak_act"]  # the pass's peak is its largest token
        assert row["peak_act"] == pytest.approx(row["response"], rel=1e-5, abs=1e-6)  # max pooling
