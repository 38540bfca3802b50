"""Planted truth for steering: a unit wired to one output token's logit, fixed, makes that token appear.

A tiny Llama-architecture model is built from its config (random weights, no training) and one MLP unit is wired
to one output token, the word " the" of the tiny tokenizer:

- hidden coordinate K is reserved for the wire: the token embeddings, every attention output projection and
  every MLP down projection write nothing into it, so the residual stream's coordinate K is exactly 0 in any
  unsteered forward pass;
- unit UNIT of the last layer writes ALPHA into coordinate K and nothing elsewhere (its down-projection column is
  ALPHA * e_K), and its gate and up rows are zero, so it is 0 unless it is fixed;
- the unembedding reads coordinate K for the target token only (GAIN), for no other token.

The final RMSNorm bounds every logit by |unembedding row| * sqrt(hidden), so in a random model a unit that only
writes the target's own unembedding direction cannot make it dominate; the reserved coordinate is that
direction with its own gain, and it stays silent unsteered. Fixing the unit to VALUE puts ALPHA * VALUE on K,
the norm maps the residual almost onto e_K, and the target's logit is about GAIN * sqrt(hidden) above the rest.

The wiring is checked against a manual forward (the final norm and unembedding by hand from the unsteered
residual plus the unit's write); then the real steering code (``fixed_unit_hooks`` inside ``generate``, and
``steer_checkpoint`` with the unit as the concept's top expert) samples from the start token across seeds.
"""

from __future__ import annotations

import re

import polars as pl
import pytest
import torch

from precompute.config import SteeringSpec
from precompute.model import ModelLayout, load_checkpoint
from precompute.steering.intervene import Sampling, fixed_unit_hooks, generate, prompt_ids
from precompute.steering.stage import plan_steering, steer_checkpoint
from tests.support.tiny_models import HIDDEN, build_tiny_tokenizer, tiny_config

TARGET = " the"  # one token of the tiny tokenizer
LAYER, UNIT, VALUE = 1, 5, 4.0  # the planted unit (last of the 2 layers) and the value it is fixed to
K = HIDDEN - 1  # the reserved hidden coordinate
ALPHA, GAIN = 50.0, 3.0
SEEDS = list(range(12))
MAX_NEW = 8
WORD = re.compile(r"(?<![^\W\d_])the(?![^\W\d_])")  # the word "the", not inside another word


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    tok = build_tiny_tokenizer()
    target = tok.convert_tokens_to_ids("Ġthe")
    assert tok.decode([target]) == TARGET and tok(TARGET, add_special_tokens=False)["input_ids"] == [target]
    config = tiny_config("llama", len(tok), tok.bos_token_id, tok.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        # As tests.support.tiny_models.save_tiny_model does: no parameter left at its init value.
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        inner = model.model
        inner.embed_tokens.weight[:, K] = 0
        for block in inner.layers:
            block.self_attn.o_proj.weight[K, :] = 0
            block.mlp.down_proj.weight[K, :] = 0
        mlp = inner.layers[LAYER].mlp
        mlp.gate_proj.weight[UNIT, :] = 0
        mlp.up_proj.weight[UNIT, :] = 0
        mlp.down_proj.weight[:, UNIT] = 0
        mlp.down_proj.weight[K, UNIT] = ALPHA
        model.lm_head.weight[:, K] = 0
        model.lm_head.weight[target, K] = GAIN
    out = tmp_path_factory.mktemp("planted-steering")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared CPU is faster without thread hand-offs
    yield load_checkpoint(str(out), device="cpu", dtype="float32"), target
    torch.set_num_threads(threads)


def _forward(loaded, ids, units=()):
    """Logits, the pre-norm residual (input of the final norm) and the planted layer's unit activations."""
    seen = {}
    inner = loaded.model.model
    hooks = [
        inner.norm.register_forward_hook(lambda _m, args, _o: seen.__setitem__("residual", args[0].clone())),
        inner.layers[LAYER].mlp.down_proj.register_forward_hook(
            lambda _m, args, _o: seen.__setitem__("acts", args[0].clone())
        ),
    ]
    try:
        with fixed_unit_hooks(ModelLayout.of(loaded.model), units), torch.no_grad():
            logits = loaded.model(input_ids=ids).logits
    finally:
        for h in hooks:
            h.remove()
    return logits, seen["residual"], seen["acts"]


def _by_hand(loaded, residual):
    """The final RMSNorm and the unembedding, written out."""
    norm = loaded.model.model.norm
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    h = residual * torch.rsqrt(residual.pow(2).mean(-1, keepdim=True) + eps) * norm.weight
    return h @ loaded.model.lm_head.weight.T


def test_the_wiring_matches_a_manual_forward(planted):
    loaded, target = planted
    tok = loaded.tokenizer
    ids = torch.tensor([prompt_ids(tok, "El terremoto sacudió la casa")])
    plain, residual, acts = _forward(loaded, ids)
    # Unsteered, the unit is silent and the reserved coordinate is exactly 0: nothing reaches the wire.
    assert torch.all(acts[..., UNIT] == 0) and torch.all(residual[..., K] == 0)
    assert torch.allclose(plain, _by_hand(loaded, residual), atol=1e-4)
    assert not torch.all(plain.argmax(-1) == target)

    steered, steered_residual, steered_acts = _forward(loaded, ids, [(LAYER, UNIT, VALUE)])
    # The hook fixed the unit everywhere, and the unit's write is ALPHA * VALUE on coordinate K, nothing else.
    assert torch.all(steered_acts[..., UNIT] == VALUE)
    expected = residual.clone()
    expected[..., K] += ALPHA * VALUE
    assert torch.allclose(steered_residual, expected, atol=1e-4)
    assert torch.allclose(steered, _by_hand(loaded, expected), atol=1e-4)
    # At every position the target dominates: argmax, and nearly all the mass at the sampling temperature.
    assert torch.all(steered.argmax(-1) == target)
    probs = torch.softmax(steered / SteeringSpec().temperature, -1)[..., target]
    assert probs.min().item() > 0.99
    # Fixing the unit to 0 is the unsteered model (the unit is 0 anyway).
    zero, *_ = _forward(loaded, ids, [(LAYER, UNIT, 0.0)])
    assert torch.allclose(zero, plain, atol=1e-5)


def _share_with_target(outputs):
    return sum(bool(WORD.search(o["output_text"])) for o in outputs) / len(outputs)


def test_fixing_the_unit_makes_the_token_appear_across_seeds(planted):
    loaded, _target = planted
    sampling = Sampling.from_spec(SteeringSpec(max_new_tokens=MAX_NEW))
    steered = generate(loaded, [""], SEEDS, sampling, [(LAYER, UNIT, VALUE)])
    plain = generate(loaded, [""], SEEDS, sampling)
    assert [o["seed"] for o in steered] == SEEDS == [o["seed"] for o in plain]
    # Steered: every seed's text is the target word again and again.
    assert _share_with_target(steered) == 1.0
    assert min(len(WORD.findall(o["output_text"])) for o in steered) >= MAX_NEW // 2, steered
    # Unsteered (n_neurons 0): the word is rare.
    assert _share_with_target(plain) <= 0.25, plain
    assert sum(len(WORD.findall(o["output_text"])) for o in plain) <= len(SEEDS), plain


def test_steer_checkpoint_with_the_unit_as_top_expert_expresses_the_concept(planted):
    loaded, _target = planted
    sentences = pl.DataFrame(
        {
            "concept_id": ["the"],
            "lang": ["en"],
            "text": ["the house"],
            "span_start": [0],
            "span_end": [3],
        }
    )
    spec = SteeringSpec(
        concepts=["the"], source_langs=["en"], n_neurons=[0, 1], seeds=SEEDS, prompts=[""], max_new_tokens=MAX_NEW
    )
    plan = plan_steering(spec, known_concepts=["the"], langs=["en"], sentences=sentences, default=["the"], where="test")
    experts = pl.DataFrame(
        {  # the planted unit first, then a random unit of layer 0 that is never reached
            "lang": ["en", "en"],
            "concept_id": ["the", "the"],
            "layer": [LAYER, 0],
            "unit": [UNIT, 7],
            "rank": [1, 2],
            "median_pos_act": [VALUE, 1.0],
        }
    )
    rows = steer_checkpoint(loaded, ModelLayout.of(loaded.model), plan, experts, checkpoint="planted")
    share = dict(rows.group_by("n_neurons").agg(pl.col("expresses_concept").mean()).iter_rows())
    counts = dict(rows.group_by("n_neurons").len().iter_rows())
    assert counts == {0: len(SEEDS), 1: len(SEEDS)}
    assert share[1] == 1.0
    assert share[0] <= 0.25
    assert set(rows.filter(pl.col("n_neurons") == 1)["concept_lang"].to_list()) == {"en"}
