"""How extraction feeds the analyses: wiring that single plausible bugs would slip past elsewhere (the
survivors of mutation testing).

- padding is masked in every pooling when contexts of different lengths share one padded batch;
- LAPE's activation event is act > 0 (gated: act(gate) > 0), counted here with our own hooks;
- the pipeline's LAPE probabilities are token-weighted (Tang et al.), not context-weighted;
- every token-probe seed draws its own real token per context, and resid_token holds exactly those tokens.

(The Spearman null's spread, the other such survivor, is checked in ``tests/analysis/test_spearman_null.py``.)

Models are tiny random ones (``tests/support/tiny_models.py``); random weights make padding activations differ
from real ones, so an unmasked pooling shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from precompute.extract import extract, sample_token_positions, token_budget_batches, tokenize_contexts
from precompute.model import ModelLayout

# Token lengths with the tiny tokenizer: 35, 34, 33, 30, 28 (all within the 20 % padding bound of the longest,
# so a large budget puts them in one padded batch: up to 7 padding tokens).
SAME_BATCH_TEXTS = [
    "Das Erdbeben erschütterte am Montag das alte Haus.",
    "Le tremblement de terre a secoué la vieille maison lundi.",
    "地震在星期一摇动了老房子。",
    "The earthquake shook the old house on Monday.",
    "Joy and happiness filled the house in March. Joy.",
]
SAME_BATCH_SPANS = [(4, 12), (3, 14), (0, 2), (None, None), (4, 13)]

# Very unequal lengths (1 to 50 tokens) for the token-weighting and token-draw checks.
UNEQUAL_TEXTS = [
    "x",
    "Землетрясение потрясло старый дом в понедельник.",
    "El lunes",
    "house",
    "Das Erdbeben erschütterte am Montag das alte Haus.",
    "a",
    "地震在星期一摇动了老房子。",
    "El",
    "Le tremblement de terre a secoué la vieille maison lundi.",
    "Joy",
    "b",
    "Maanjäristys ravisteli vanhaa taloa maanantaina.",
]

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _load(model_dir: Path, padding_side: str = "right"):
    from precompute.model import load_checkpoint

    loaded = load_checkpoint(str(model_dir), device="cpu", dtype="float32")
    loaded.tokenizer.padding_side = padding_side  # extract pads by itself; the tokenizer's side must not matter
    return loaded


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random models: GPT-2 (GELU), GPT-2 with ReLU, OPT (ReLU), Llama (gated, with its own pad token) and
    XGLM whose tokenizer prepends a start token."""
    from tests.support.tiny_models import add_start_token, save_tiny_model

    root = tmp_path_factory.mktemp("wiring")
    dirs = {
        "gpt2": save_tiny_model("gpt2", root / "gpt2", seed=3),
        "opt": save_tiny_model("opt", root / "opt", seed=4),
        "llama": save_tiny_model("llama", root / "llama", seed=5, with_pad=True),
        "xglm": add_start_token(save_tiny_model("xglm", root / "xglm", seed=6)),
    }
    relu = save_tiny_model("gpt2", root / "gpt2-relu", seed=7)
    config_path = relu / "config.json"
    config = json.loads(config_path.read_text())
    config["activation_function"] = "relu"
    config_path.write_text(json.dumps(config))
    dirs["gpt2-relu"] = relu
    return dirs


# ---------------------------------------------------------------------------------------------------------------
# 1. Padding is masked in every pooling when contexts of different lengths share a batch.


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("arch", ["gpt2", "llama", "xglm"])
def test_shared_padded_batch_pools_like_contexts_alone(model_dirs, arch, padding_side):
    loaded = _load(model_dirs[arch], padding_side)
    contexts = tokenize_contexts(loaded.tokenizer, SAME_BATCH_TEXTS, SAME_BATCH_SPANS, 64)
    lengths = contexts.lengths
    assert len(set(lengths.tolist())) >= 4 and lengths.max() - lengths.min() >= 5
    budget = 4096
    assert len(token_budget_batches(lengths, budget)) == 1  # one padded batch for all of them
    layout = ModelLayout.of(loaded.model)
    shared = extract(loaded, layout, contexts, batch_tokens=budget, token_seeds=[0, 1])
    alone = extract(loaded, layout, contexts, batch_tokens=1, token_seeds=[0, 1])  # a batch of one each: no padding
    for pooling in ("max", "mean", "span"):
        torch.testing.assert_close(shared.responses(pooling), alone.responses(pooling), **TOL, msg=pooling)
    torch.testing.assert_close(shared.mlp_max, alone.mlp_max, **TOL)
    torch.testing.assert_close(shared.mlp_mean, alone.mlp_mean, **TOL)
    torch.testing.assert_close(shared.mlp_span, alone.mlp_span, **TOL)
    torch.testing.assert_close(shared.mlp_active, alone.mlp_active, **TOL)
    torch.testing.assert_close(shared.resid_mean, alone.resid_mean, **TOL)
    torch.testing.assert_close(shared.resid_token, alone.resid_token, **TOL)
    assert shared.token_counts.tolist() == alone.token_counts.tolist() == contexts.real_lengths.tolist()

    # And alone, the pooled values are the plain reductions over the real tokens (so "equal" is not "equally wrong").
    sites = _down_inputs(loaded, contexts)
    for i, per_layer in enumerate(sites):
        acts = torch.cat(per_layer, dim=-1)[contexts.real_masks[i]]  # (real tokens, N)
        torch.testing.assert_close(shared.mlp_max[i], acts.amax(0), **TOL)
        torch.testing.assert_close(shared.mlp_mean[i], acts.mean(0), **TOL)


def _down_inputs(loaded, contexts) -> list[list[torch.Tensor]]:
    """Per context (run alone), per MLP layer, the (T, n) input of the down projection, by our own hooks."""
    from precompute.model import find_mlp_sites

    modules = [s.module for s in find_mlp_sites(loaded.model)]
    return [_capture(loaded.model, modules, ids, inputs=True) for ids in contexts.input_ids]


def _capture(model, modules, ids: list[int], *, inputs: bool) -> list[torch.Tensor]:
    """Run one context alone; per module its (T, width) input (``inputs``) or output, by our own hooks."""
    caught: list[torch.Tensor] = [None] * len(modules)  # type: ignore[list-item]

    def make(j):
        def pre_hook(_module, args):
            caught[j] = args[0].detach().float().reshape(len(ids), -1)

        def hook(_module, _args, output):
            caught[j] = output.detach().float().reshape(len(ids), -1)

        return pre_hook if inputs else hook

    handles = [
        m.register_forward_pre_hook(make(j)) if inputs else m.register_forward_hook(make(j))
        for j, m in enumerate(modules)
    ]
    try:
        with torch.no_grad():
            model.base_model(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return caught


# ---------------------------------------------------------------------------------------------------------------
# 2. LAPE's activation event: act(x) > 0 after the non-linearity; gated MLPs: act(gate_proj(x)) > 0.


def _hand_activation_events(loaded, contexts, arch: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, N) fraction of each context's real tokens with the event, from hooks of our own, one context at a time.

    Ungated (GPT-2, OPT): the output of the MLP's activation module. Gated (Llama): SiLU applied here to the
    output of gate_proj (Tang et al.'s act_fn(gate_proj(x)) > 0). Also returns the last context's (T, N)
    activations.
    """
    model = loaded.model
    if arch in ("gpt2", "gpt2-relu"):
        modules, post = [b.mlp.act for b in model.transformer.h], None
    elif arch == "opt":
        modules, post = [b.activation_fn for b in model.model.decoder.layers], None
    elif arch == "llama":
        modules, post = [b.mlp.gate_proj for b in model.model.layers], torch.nn.functional.silu
    else:  # pragma: no cover
        raise ValueError(arch)
    rows = []
    for ids, real in zip(contexts.input_ids, contexts.real_masks):
        caught = _capture(model, modules, ids, inputs=False)
        acts = torch.cat([post(a) if post is not None else a for a in caught], dim=-1)[torch.from_numpy(real)]
        rows.append((acts > 0).float().mean(0))
    return torch.stack(rows), acts


@pytest.mark.parametrize("arch", ["opt", "gpt2-relu", "gpt2", "llama"])
def test_lape_activation_event_matches_hand_count(model_dirs, arch):
    loaded = _load(model_dirs[arch])
    if arch == "gpt2-relu":
        assert type(loaded.model.transformer.h[0].mlp.act).__name__ == "ReLU"
    contexts = tokenize_contexts(loaded.tokenizer, SAME_BATCH_TEXTS, SAME_BATCH_SPANS, 64)
    pooled = extract(
        loaded, ModelLayout.of(loaded.model), contexts, batch_tokens=4096, poolings=("max",), token_seeds=[]
    )
    expected, last_acts = _hand_activation_events(loaded, contexts, arch)
    torch.testing.assert_close(pooled.mlp_active, expected, rtol=0, atol=1e-6)
    # The counts are informative: neither all units always on nor always off.
    assert 0.05 < float(expected.mean()) < 0.95
    if arch in ("opt", "gpt2-relu"):
        assert bool((last_acts == 0).any()), "ReLU gives exact zeros: they are not activation events"
        assert float(expected.mean()) < 0.9


# ---------------------------------------------------------------------------------------------------------------
# 3. The pipeline's LAPE probabilities are token-weighted.


def test_pipeline_lape_is_token_weighted(model_dirs):
    from precompute.analysis.lape import activation_probs, language_neuron_tables
    from precompute.config import RunConfig
    from precompute.profiling import StageTimer
    from precompute.stages import CheckpointContext, run_stages
    from precompute.stages import lape as lape_stage

    loaded = _load(model_dirs["xglm"])
    n = len(UNEQUAL_TEXTS)
    langs = np.array(["de", "en", "fr"] * (n // 3))
    concept_ids = np.array([f"c{i // 3}" for i in range(n)])
    contexts = tokenize_contexts(loaded.tokenizer, UNEQUAL_TEXTS, [(None, None)] * n, 64)
    real = contexts.real_lengths
    assert real.min() == 1 and real.max() >= 40  # very unequal
    assert (contexts.lengths == real + 1).all()  # a start token that is fed but not counted
    mlp = ModelLayout.of(loaded.model)
    pooled = extract(loaded, mlp, contexts, batch_tokens=4096, poolings=("max",), token_seeds=[])
    assert pooled.token_counts.tolist() == real.tolist()

    cfg = RunConfig()
    cfg.analysis.lape_quantile = 0.1  # ~13 of 128 units, so that the comparison sees many units
    shared = pl.DataFrame(schema={"concept_id": pl.Utf8, "layer": pl.Int32, "unit": pl.Int32})
    ctx = CheckpointContext(
        cfg=cfg,
        checkpoint="c",
        layout=mlp,
        concept_set=SimpleNamespace(sentences=pl.DataFrame({"lang": langs, "concept_id": concept_ids})),
        artefacts={"pooled": pooled},
        stored={"shared_experts": shared},
    )
    tables = run_stages([lape_stage.STAGE], ctx, StageTimer(torch.device("cpu")))  # the stage the pipeline runs

    kwargs = {
        "selection": cfg.analysis.lape_selection,
        "quantile": cfg.analysis.lape_quantile,
        "filter_rate": cfg.analysis.lape_filter_rate,
        "bar_ratio": cfg.analysis.lape_bar_ratio,
        "min_prob": cfg.analysis.lape_min_prob,
        "max_lape": cfg.analysis.lape_max,
        "shared_experts": shared,
    }
    token_w = language_neuron_tables(pooled.mlp_active, langs.tolist(), pooled.units, n_tokens=real, **kwargs)
    context_w = language_neuron_tables(pooled.mlp_active, langs.tolist(), pooled.units, **kwargs)
    assert tables["language_neurons"].height > 0
    assert tables["language_neurons"].equals(token_w[0])
    assert tables["neuron_counts"].equals(token_w[1])
    assert not tables["language_neurons"].equals(context_w[0])  # the test can tell the two weightings apart

    # p(l) = sum_i f_i T_i / sum_i T_i over l's contexts (Tang's over_zero / n), by hand.
    names, probs = activation_probs(pooled.mlp_active, langs.tolist(), n_tokens=real)
    active = pooled.mlp_active.double().numpy()
    for j, lang in enumerate(names):
        mine = langs == lang
        hand = (active[mine] * real[mine, None]).sum(0) / real[mine].sum()
        np.testing.assert_allclose(probs[:, j].numpy(), hand, rtol=1e-12, atol=1e-12)
    neurons = tables["language_neurons"]
    cols = pooled.units.columns(neurons["layer"].to_numpy(), neurons["unit"].to_numpy())
    lang_idx = [names.index(x) for x in neurons["top_lang"].to_list()]
    np.testing.assert_allclose(neurons["top_prob"].to_numpy(), probs[cols, lang_idx].numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# 4. Each token-probe seed draws its own real token per context; resid_token holds exactly those tokens.


def test_token_draws_differ_per_seed_are_real_and_reproducible():
    rng = np.random.default_rng(11)
    masks = []
    for _ in range(300):  # a start token, 1-30 real tokens, 0-5 padding-like trailing positions
        n_real, n_pad = int(rng.integers(1, 31)), int(rng.integers(0, 6))
        masks.append(np.array([False] + [True] * n_real + [False] * n_pad))
    draws = {s: sample_token_positions(masks, s) for s in (0, 1, 2, 12345)}
    for pos in draws.values():
        assert all(m[p] for m, p in zip(masks, pos))  # never the start token, never padding
    assert np.array_equal(draws[0], sample_token_positions(masks, 0))
    multi = np.array([m.sum() > 1 for m in masks])
    for a, b in ((0, 1), (0, 2), (1, 2), (0, 12345)):
        assert (draws[a][multi] != draws[b][multi]).mean() > 0.6
    # Uniform over the real tokens: 4 real tokens, 4000 seeds, each position about 1000 times.
    one = [np.array([False, True, True, True, True, False])]
    counts = np.bincount([int(sample_token_positions(one, s)[0]) for s in range(4000)], minlength=6)
    assert counts[0] == counts[5] == 0
    assert (np.abs(counts[1:5] - 1000) < 120).all()


def test_resid_token_is_the_hidden_state_at_each_seeds_draw(model_dirs):
    loaded = _load(model_dirs["xglm"])
    contexts = tokenize_contexts(loaded.tokenizer, UNEQUAL_TEXTS, [(None, None)] * len(UNEQUAL_TEXTS), 64)
    seeds = [0, 1, 2]
    pooled = extract(
        loaded, ModelLayout.of(loaded.model), contexts, batch_tokens=4096, poolings=("mean",), token_seeds=seeds
    )
    assert len(token_budget_batches(contexts.lengths, 4096)) < len(UNEQUAL_TEXTS)  # some contexts share batches
    assert pooled.resid_token.shape[:3] == (len(seeds), loaded.n_layers + 1, len(UNEQUAL_TEXTS))
    positions = np.stack([sample_token_positions(contexts.real_masks, s) for s in seeds])  # (S, n)
    multi = contexts.real_lengths > 1
    assert (positions[0][multi] != positions[1][multi]).mean() > 0.5
    assert (positions[1][multi] != positions[2][multi]).mean() > 0.5
    for i, ids in enumerate(contexts.input_ids):
        assert all(contexts.real_masks[i][positions[:, i]])  # never the start token
        with torch.no_grad():
            hidden = loaded.model.base_model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        for s in range(len(seeds)):
            expected = torch.stack([h[0, positions[s, i]] for h in hidden])  # (L + 1, d)
            torch.testing.assert_close(pooled.resid_token[s, :, i], expected, **TOL, msg=f"seed {s}, context {i}")
    assert not torch.allclose(pooled.resid_token[0][:, multi], pooled.resid_token[1][:, multi])
