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


def test_pooled_activations_do_not_depend_on_batching(tmp_path):
    from tests.tiny_models import save_tiny_model
    from precompute.model import load_checkpoint

    save_tiny_model("gpt2", tmp_path / "m")
    loaded = load_checkpoint(str(tmp_path / "m"), device="cpu", dtype="float32")
    texts = ["The earthquake shook the old house on Monday.", "El lunes", "地震在星期一摇动了老房子。",
             "Joy and happiness filled the house in March.", "Das Erdbeben", "x"]
    spans = [(4, 14), (3, 8), (0, 2), (None, None), (4, 12), (0, 1)]
    contexts = tokenize_contexts(loaded.tokenizer, texts, spans, 64)
    one = extract(loaded, contexts, batch_tokens=1)  # one context per batch, no padding
    many = extract(loaded, contexts, batch_tokens=4096)
    for name in ("mlp_mean", "mlp_span", "mlp_active", "resid_mean", "resid_token"):
        torch.testing.assert_close(getattr(one, name), getattr(many, name), rtol=1e-5, atol=1e-5, msg=name)
    # Without span tokens the span mean is the mean.
    assert torch.equal(one.mlp_span[3], one.mlp_mean[3])
