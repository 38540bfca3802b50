"""The exact logit lens (precompute.model.unembed.direct_effects) against the models' own modules.

The reference never re-types the formula. It runs the real final norm, OPT's real ``project_out`` and the real
LM head (``torch.func.jvp``) at a residual stream ``x`` in the direction of a unit's write ``w`` (read off the
real down projection: ``down(e_u) - down(0)``). The norm's divisor ``sigma`` (std of the centred stream for a
LayerNorm, RMS for an RMSNorm) is the only part of the norm that depends on the rest of the stream; the
direct effect holds it fixed. Instead of patching it out of each family's module, ``x`` is picked so that
``sigma`` is stationary along ``w``: ``x`` has mean 0 and is orthogonal to ``w`` (then d sigma / d eps = 0
for both kinds of norm), so the real module's derivative *is* the frozen-sigma one, and with mean(x^2) = 1
``sigma = sqrt(1 + norm eps) = 1`` to 1e-5. The test does not need to know which kind of norm it runs: a
LayerNorm's mean subtraction, an RMSNorm's lack of one, Gemma's ``1 + weight``, the scale and project_out
all come from the modules. The reference logit change, minus its vocabulary mean, must equal the stored
effect, so each test fails if the centring of ``w_out`` is dropped, applied to an RMSNorm model, if the
norm's scale is dropped, or if the vocabulary centring is dropped.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from precompute.model import find_mlp_sites
from precompute.model.unembed import direct_effects, subtracts_mean
from tests.support.tiny_models import TINY_ARCHS, tiny_config

VOCAB = 97
HIDDEN = 32

# Per family: (final norm or None, project_out or None), named by hand from each family's module tree.
_TAIL = {
    "bloom": lambda m: (m.transformer.ln_f, None),
    "gpt2": lambda m: (m.transformer.ln_f, None),
    "gpt_neox": lambda m: (m.gpt_neox.final_layer_norm, None),
    "xglm": lambda m: (m.model.layer_norm, None),
    "opt": lambda m: (m.model.decoder.final_layer_norm, None),
    "opt_proj": lambda m: (m.model.decoder.final_layer_norm, m.model.decoder.project_out),
    "opt_post_ln": lambda m: (None, None),
    "llama": lambda m: (m.model.norm, None),
    "olmo": lambda m: (m.model.norm, None),  # OLMo-1: LayerNorm without parameters
    "olmo2": lambda m: (m.model.norm, None),
    "gemma": lambda m: (m.model.norm, None),  # RMSNorm scaling by (1 + weight)
}
_LAYERNORM = {"bloom", "gpt2", "gpt_neox", "xglm", "opt", "opt_proj", "olmo"}
_RMSNORM = {"llama", "olmo2", "gemma"}


def _config(arch: str):
    import transformers as tf

    if arch == "opt_proj":  # project_out: hidden 32 -> word_embed_proj_dim 16 (and project_in back)
        config = tiny_config("opt", VOCAB)
        config.word_embed_proj_dim = 16
        return config
    if arch == "opt_post_ln":  # OPT-350m style: no final norm
        config = tiny_config("opt", VOCAB)
        config.do_layer_norm_before = False
        return config
    if arch == "gemma":
        return tf.GemmaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            pad_token_id=None,
        )
    return tiny_config(arch, VOCAB)


def _model(arch: str, seed: int = 0) -> nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch)).float().eval()
    with torch.no_grad():  # no norm scale at exactly 1, no bias at exactly 0 (as tests/support/tiny_models.py does)
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "norm" in name or "ln_f" in name else 0.05))
    return model


def _write(site, unit: int) -> torch.Tensor:
    """(d_model,) what one unit of activation adds to the stream, from the real down projection's forward."""
    n = site.n_neurons
    one_hot = torch.zeros(2, n)
    one_hot[0, unit] = 1.0
    with torch.no_grad():
        out = site.module(one_hot)
    return out[0] - out[1]  # the bias cancels


def _stationary_stream(w: torch.Tensor, seed: int) -> torch.Tensor:
    """A stream x with mean 0, x . w = 0 and mean(x^2) = 1: every norm's divisor is stationary along w there."""
    d = w.shape[0]
    basis, _ = torch.linalg.qr(torch.stack([torch.ones(d), w.double()], dim=1).double())  # span{1, w}
    x = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - basis @ (basis.T @ x)
    return (x / x.pow(2).mean().sqrt()).float()


def _reference(model: nn.Module, arch: str, w: torch.Tensor, seed: int) -> torch.Tensor:
    """(vocab,) d logits / d eps at x + eps * w through the real norm, project_out and LM head, minus its mean."""
    norm, project_out = _TAIL[arch](model)
    head = model.lm_head

    def tail(h: torch.Tensor) -> torch.Tensor:
        if norm is not None:
            h = norm(h)
        if project_out is not None:
            h = project_out(h)
        return head(h)

    x = _stationary_stream(w, seed)
    _, tangent = torch.func.jvp(tail, (x,), (w,))
    return tangent - tangent.mean()


# None: built here, not by tests/support/tiny_models.py
_BASE = {"opt_proj": "opt", "opt_post_ln": "opt", "gemma": None}
_CASES = [a for a in _TAIL if _BASE.get(a, a) is None or _BASE.get(a, a) in TINY_ARCHS]


@pytest.mark.parametrize("arch", _CASES)
def test_direct_effect_is_the_real_tail_with_sigma_held(arch):
    try:
        model = _model(arch)
    except Exception as exc:  # noqa: BLE001 - an architecture this transformers cannot build at this size
        pytest.skip(f"{arch}: {exc}")
    if arch == "opt_proj":
        assert model.model.decoder.project_out is not None
    if arch == "opt_post_ln":
        assert model.model.decoder.final_layer_norm is None
    site = find_mlp_sites(model)[-1]
    units = torch.tensor([0, 7, site.n_neurons - 1])
    got = direct_effects(model, site, units, chunk=2)
    assert got.shape == (VOCAB, 3) and got.dtype == torch.float32
    for j, unit in enumerate(units.tolist()):
        expected = _reference(model, arch, _write(site, unit), seed=unit)
        torch.testing.assert_close(got[:, j], expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def _new_and_old(arch: str, norm_of) -> tuple[torch.Tensor, torch.Tensor]:
    """(vocab, units) effects of every unit of the last MLP of a tiny ``arch``: `direct_effects`, and the old
    formula W_U @ (g * w_out) written out for BLOOM/Llama's nn.Linear down projections (g: ``norm_of(model)``)."""
    model = _model(arch, seed=1)
    site = find_mlp_sites(model)[-1]
    units = torch.arange(site.n_neurons)
    with torch.no_grad():
        old = model.lm_head.weight @ (norm_of(model).weight[:, None] * site.module.weight[:, units])
        return direct_effects(model, site, units), old


def test_centring_changes_the_top_tokens_of_a_layernorm_model():
    """Tiny BLOOM: the centred effect is not the old one shifted, and some unit's top-10 promoted tokens move."""
    new, old = _new_and_old("bloom", lambda m: m.transformer.ln_f)
    shifted = old - old.mean(dim=0, keepdim=True)
    assert (new - shifted).abs().max() > 1e-2 * shifted.abs().max()
    top_new, top_old = new.topk(10, dim=0).indices, old.topk(10, dim=0).indices
    assert (top_new != top_old).any(dim=0).sum() >= 1


def test_rmsnorm_model_is_not_centred():
    """Tiny Llama: the new effect is the old W_U @ (g * w_out) up to its vocabulary mean (no w_out centring)."""
    new, old = _new_and_old("llama", lambda m: m.model.norm)
    torch.testing.assert_close(new, old - old.mean(dim=0, keepdim=True), rtol=1e-5, atol=1e-5)
    assert (old.mean(dim=0).abs() > 1e-4).any()  # the vocabulary centring did something
    assert torch.equal(new.topk(10, dim=0).indices, old.topk(10, dim=0).indices)


def test_norm_kinds_are_told_apart():
    import transformers.models.llama.modeling_llama as llama
    import transformers.models.t5.modeling_t5 as t5

    assert subtracts_mean(nn.LayerNorm(HIDDEN), HIDDEN)
    assert subtracts_mean(nn.LayerNorm(HIDDEN, elementwise_affine=False), HIDDEN)
    assert not subtracts_mean(llama.LlamaRMSNorm(HIDDEN), HIDDEN)
    assert not subtracts_mean(t5.T5LayerNorm(HIDDEN), HIDDEN)  # named LayerNorm, is an RMSNorm: probed
    assert not subtracts_mean(None, HIDDEN)
    if hasattr(nn, "RMSNorm"):
        assert not subtracts_mean(nn.RMSNorm(HIDDEN), HIDDEN)
    try:
        from transformers.models.olmo.modeling_olmo import OlmoLayerNorm
    except ImportError:
        return
    assert subtracts_mean(OlmoLayerNorm(HIDDEN), HIDDEN)  # no parameters, not an nn.LayerNorm: probed
