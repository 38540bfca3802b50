"""Length-bucketed token-budget batches, and pooled results that do not depend on the batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precompute.extract import extract, token_budget_batches, tokenize_contexts


@pytest.mark.parametrize("budget", [1, 16, 300, 4096])
def test_batches_respect_budget_and_padding_bound(budget):
    lengths = np.random.default_rng(0).integers(1, 65, size=500)
    batches = token_budget_batches(lengths, budget)
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for batch in batches:
        longest = int(lengths[batch].max())
        assert len(batch) == 1 or len(batch) * longest <= budget
        assert (lengths[batch] >= 0.8 * longest).all()  # no context padded by more than 20 %
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    assert padded <= 1.25 * lengths.sum()


def test_long_tail_does_not_pad_short_contexts():
    lengths = np.array([60] + [4] * 200)
    batches = token_budget_batches(lengths, 2048)
    assert [len(b) for b in batches][:1] == [1]  # the long context alone, not 34 short ones padded to 60


def test_pooled_activations_do_not_depend_on_batching(tiny_gpt2_dir):
    from precompute.model import ModelLayout, load_checkpoint

    loaded = load_checkpoint(str(tiny_gpt2_dir), device="cpu", dtype="float32")
    layout = ModelLayout.of(loaded.model)
    texts = [
        "The earthquake shook the old house on Monday.",
        "El lunes",
        "地震在星期一摇动了老房子。",
        "Joy and happiness filled the house in March.",
        "Das Erdbeben",
        "x",
    ]
    spans = [(4, 14), (3, 8), (0, 2), (None, None), (4, 12), (0, 1)]
    contexts = tokenize_contexts(loaded.tokenizer, texts, spans, 64)
    one = extract(loaded, layout, contexts, batch_tokens=1)  # one context per batch, no padding
    many = extract(loaded, layout, contexts, batch_tokens=4096)
    for name in ("mlp_mean", "mlp_span", "mlp_active", "resid_mean", "resid_token"):
        torch.testing.assert_close(getattr(one, name), getattr(many, name), rtol=1e-5, atol=1e-5, msg=name)
    # Without span tokens the span mean is the mean.
    assert torch.equal(one.mlp_span[3], one.mlp_mean[3])


def test_token_positions_are_real_tokens_and_change_with_the_seed():
    from precompute.extract import sample_token_positions

    masks = [np.array([False] + [True] * 20 + [False] * 3) for _ in range(200)]
    a, b = sample_token_positions(masks, 0), sample_token_positions(masks, 1)
    for pos in (a, b):
        assert ((pos >= 1) & (pos <= 20)).all()  # never the start token, never padding
    assert (a != b).mean() > 0.8  # each seed draws its own tokens
    assert np.array_equal(a, sample_token_positions(masks, 0))


def test_start_token_is_fed_but_not_pooled_and_spans_cut_by_max_length_are_flagged(tmp_path):
    from precompute.model import ModelLayout, load_checkpoint
    from tests.support.tiny_models import add_start_token, save_tiny_model

    loaded = load_checkpoint(str(add_start_token(save_tiny_model("xglm", tmp_path / "m"))), device="cpu")
    texts = ["The earthquake shook the old house on Monday.", "El lunes"]
    contexts = tokenize_contexts(loaded.tokenizer, texts, [(4, 14), (3, 8)], 64)
    assert [m[0] for m in contexts.real_masks] == [False, False]
    assert contexts.real_lengths.tolist() == (contexts.lengths - 1).tolist()
    assert not contexts.span_cut.any()
    pooled = extract(loaded, ModelLayout.of(loaded.model), contexts, batch_tokens=4096, token_seeds=[0, 1, 2])
    assert pooled.resid_token.shape[:3] == (3, 3, 2)
    assert pooled.token_counts.tolist() == contexts.real_lengths.tolist()
    # The mean over real tokens equals the mean of the same context's hidden states without position 0.
    ids = torch.tensor([contexts.input_ids[1]])
    with torch.no_grad():
        hidden = loaded.model.base_model(input_ids=ids, output_hidden_states=True).hidden_states
    for layer, h in enumerate(hidden):
        torch.testing.assert_close(pooled.resid_mean[layer, 1], h[0, 1:].mean(0), rtol=1e-5, atol=1e-5)

    # "Monday" (chars 38-44) lies past 6 tokens: cut off; "The" (0-3) is kept: not cut.
    short = tokenize_contexts(loaded.tokenizer, [texts[0], texts[0]], [(38, 44), (0, 3)], 6)
    assert short.span_cut.tolist() == [True, False]
    assert not short.span_masks[0].any()


def test_truncated_spans_refuse_the_run_or_are_dropped_never_pooled_otherwise(tmp_path):
    """A concept span that max_length cuts off refuses the run naming (concept, language) pairs;
    on_truncated_span = "drop" leaves exactly those contexts out."""
    from precompute.config import ConfigError, RunConfig
    from precompute.inputs.concepts import DEFAULT_CONCEPT_SET, load_concept_set
    from precompute.model import load_checkpoint
    from precompute.pipeline import analyse_checkpoint, prepare_contexts
    from tests.support.tiny_models import save_tiny_model

    loaded = load_checkpoint(str(save_tiny_model("gpt2", tmp_path / "m")), device="cpu")
    concept_set = load_concept_set(DEFAULT_CONCEPT_SET).subset(["en", "de"], ["monday", "march"], 6)
    cfg = RunConfig()
    cfg.extract.max_length = 4
    cut = tokenize_contexts(
        loaded.tokenizer,
        concept_set.sentences["text"].to_list(),
        list(zip(concept_set.sentences["span_start"].to_list(), concept_set.sentences["span_end"].to_list())),
        4,
    ).span_cut
    assert 0 < cut.sum() < len(cut)  # some spans lie past 4 tokens, some do not
    with pytest.raises(ConfigError, match=r"max_length = 4 tokens cuts off the concept span of \d+ context") as info:
        prepare_contexts(cfg, loaded, concept_set)
    assert "on_truncated_span" in str(info.value) and "\n" not in str(info.value)
    assert any(f"{c}/{lang}" in str(info.value) for c in ("monday", "march") for lang in ("en", "de"))

    cfg.extract.on_truncated_span = "drop"
    prepared = prepare_contexts(cfg, loaded, concept_set)
    assert prepared.keep.tolist() == np.flatnonzero(~cut).tolist()
    assert int(prepared.truncated["n_truncated"].sum()) == int(cut.sum())
    assert not prepared.contexts.span_cut.any()
    cfg.experts.top_k, cfg.probes.seeds, cfg.probes.max_iter = 3, [0], 20
    _, pooled = analyse_checkpoint(cfg, loaded, concept_set, prepared=prepared)
    assert pooled.mlp_max.shape[0] == len(prepared.keep)
