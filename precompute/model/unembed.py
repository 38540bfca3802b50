"""What an MLP unit writes into the output vocabulary: its exact direct effect on the logits (the logit lens).

A unit's activation ``a`` enters the residual stream as ``a * w_out``, where ``w_out`` (shape ``(d_model,)``) is
the unit's column of its block's down projection. Read straight through the final norm and the unembedding,
as the logit lens does (nostalgebraist 2020; Geva et al. 2022, "Transformer Feed-Forward Layers Build
Predictions by Promoting Concepts in the Vocabulary Space"), one unit of activation changes the logits by

    e      = W_U @ P @ (g * C w_out)        (vocab,)
    effect = e - mean_vocab(e)

with

- ``C`` the final norm's centring: ``C w = w - mean(w)`` (mean over d_model) for a LayerNorm (BLOOM, XGLM,
  GPT-2, OPT, GPT-NeoX, OLMo-1's parameter-free LayerNorm), the identity for an RMSNorm (Llama, Mistral,
  Qwen2, OLMo-2, Gemma), which subtracts no mean;
- ``g`` the final norm's elementwise scale (``weight``; ones where it has none; Gemma's ``1 + weight``);
- ``P`` OPT's ``project_out`` where it has one (``word_embed_proj_dim`` differing from the hidden size: it sits
  between the final norm and the LM head), else the identity;
- ``W_U`` the unembedding (the LM head's weight, ``(vocab, d_model)``; the input embedding where tied);
- the vocabulary mean subtracted last (TransformerLens' ``center_unembed``): the softmax ignores a shift
  shared by every logit, so the stored values are the shift-free ones (the mean is over all of the LM head's
  rows, padding rows included).

This is exact (with the norm's divisor held at the stream's value, as in TransformerLens' direct logit
attribution), and the centring depends on the unit only: a LayerNorm computes
``g * (x - mean(x)) / sigma(x) + b``, and its mean subtraction is linear, so adding ``a * w_out`` to the stream
``x`` moves ``x - mean(x)`` by exactly ``a * C w_out`` whatever the rest of the stream is (TransformerLens
folds it into the writing weights: ``fold_ln`` / ``center_writing_weights``). The bias ``b`` does not depend on
the unit. Only the division by ``sigma(x)`` (the stream's standard deviation, or its RMS for an RMSNorm)
depends on the rest of the stream; it is one positive scalar per position, so it scales every logit change
of the unit alike and does not change which tokens the unit promotes or suppresses or their order. The values
here are per unit of activation at ``sigma = 1``: divide by the position's ``sigma`` for the logit change there.

Where the model has no final norm (OPT with ``do_layer_norm_before=False``, i.e. post-LN OPT-350m: each
block renormalises its own output, so the last block's stream reaches the LM head as it is) there is nothing
to read through: scale 1 and no centring, the plain ``W_U @ P @ w_out`` (then the vocabulary centring). That
is what the model does after the last block; a unit of an earlier block passes later blocks' norms, which
the direct effect ignores in every model.

Whether a norm subtracts the mean is decided from the module: ``nn.LayerNorm`` (and subclasses) does, a class
whose name says RMSNorm does not, and any other norm class (OLMo-1's ``OlmoLayerNorm``, Cohere's
``CohereLayerNorm``, T5's RMS "``T5LayerNorm``") is probed: it subtracts the mean if adding a constant vector
to its input leaves its output unchanged. Other conventions handled here:

- down projection as ``nn.Linear`` (weight ``(d_model, n)``: the unit's *column*) or as GPT-2's ``Conv1D``
  (weight ``(n, d_model)``, applied as ``x @ W``: the unit's *row*);
- gated MLPs (Llama, Mistral, Qwen2, OLMo): the unit is the down projection's input, so nothing changes.
"""

from __future__ import annotations

import torch
from torch import nn

from precompute.model.sites import MLPSite

# Names of the final norm (the last module before the LM head), as children of the base model or its decoder.
_FINAL_NORM_NAMES = ("ln_f", "final_layer_norm", "norm", "layer_norm", "final_layernorm", "norm_f", "final_norm")


def final_norm(model: nn.Module) -> nn.Module | None:
    """The model's final norm (GPT-2/BLOOM ``ln_f``, NeoX/OPT ``final_layer_norm``, Llama ``norm``, XGLM
    ``layer_norm``), or None where there is none (OPT with ``do_layer_norm_before=False``)."""
    base = getattr(model, "base_model", model)
    for holder in (base, getattr(base, "decoder", None)):
        if not isinstance(holder, nn.Module):
            continue
        children = dict(holder.named_children())
        for name in _FINAL_NORM_NAMES:
            if isinstance(children.get(name), nn.Module):
                return children[name]
    return None


def final_norm_scale(model: nn.Module, d_model: int) -> torch.Tensor:
    """(d_model,) the final norm's elementwise scale (ones where it has none), float32 on the weights' device."""
    norm = final_norm(model)
    weight = getattr(norm, "weight", None) if norm is not None else None
    device = next(model.parameters()).device
    if not isinstance(weight, torch.Tensor) or weight.shape != (d_model,):
        return torch.ones(d_model, device=device)
    scale = weight.detach().float()
    if "gemma" in type(norm).__name__.lower():  # Gemma's RMSNorm multiplies by (1 + weight)
        scale = 1.0 + scale
    return scale


def subtracts_mean(norm: nn.Module | None, d_model: int) -> bool:
    """Whether ``norm`` centres its input (a LayerNorm: subtract the mean over d_model) before scaling it.

    False for None (no final norm) and for RMSNorms. ``nn.LayerNorm`` and its subclasses centre; a class named
    ``*RMSNorm`` does not; any other class is probed (:func:`_probe_centres`), falling back to its name
    containing "LayerNorm" where the probe cannot run.
    """
    if norm is None:
        return False
    if isinstance(norm, nn.LayerNorm):
        return True
    rms = getattr(nn, "RMSNorm", None)
    name = type(norm).__name__.lower()
    if (rms is not None and isinstance(norm, rms)) or "rmsnorm" in name or "rms_norm" in name:
        return False
    probed = _probe_centres(norm, d_model)
    return probed if probed is not None else "layernorm" in name


def _probe_centres(norm: nn.Module, d_model: int) -> bool | None:
    """Run ``norm`` on a fixed random input with and without a constant added: a norm that subtracts the mean
    gives the same output (OLMo-1's ``OlmoLayerNorm``), one that does not (T5's RMS ``T5LayerNorm``) a very
    different one. None where the module will not run on a ``(2, d_model)`` input."""
    param = next(iter(norm.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn(2, d_model, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    try:
        with torch.no_grad():
            plain, shifted = norm(x), norm(x + 1.0)
    except Exception:  # noqa: BLE001 - an unusual norm signature: fall back to the class name
        return None
    if not isinstance(plain, torch.Tensor) or plain.shape != x.shape or shifted.shape != x.shape:
        return None
    return bool(torch.allclose(plain.float(), shifted.float(), rtol=0.05, atol=0.05))


def down_columns(site: MLPSite, units: torch.Tensor) -> torch.Tensor:
    """(d_model, U) the output weight vectors of ``units`` (indices into the site's n_neurons), float32.

    ``nn.Linear`` stores ``(out, in) = (d_model, n)``: the units are columns; GPT-2's ``Conv1D`` stores
    ``(nx, nf) = (n, d_model)`` and computes ``x @ W``: the units are rows, transposed here.
    """
    weight = site.module.weight.detach()
    units = units.to(weight.device)
    if type(site.module).__name__ == "Conv1D":
        return weight.index_select(0, units).float().T
    return weight.index_select(1, units).float()


def unembedding(model: nn.Module) -> torch.Tensor:
    """(vocab, d) the LM head's weight (tied or not: whatever the model multiplies the final state by)."""
    head = model.get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise ValueError(f"{type(model).__name__}: no output embedding (LM head) to read the direct effect through")
    return head.weight.detach()


def direct_effects(model: nn.Module, site: MLPSite, units: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(vocab, U) float32: the change of every logit per unit of activation of each of ``units`` of ``site``.

    ``W_U @ P @ (g[:, None] * C W_out[:, units])`` minus its mean over the vocabulary (module docstring: ``C``
    centres each column over d_model for a LayerNorm, is the identity for an RMSNorm or no final norm),
    chunked over units so that at most ``vocab x chunk`` floats are live (BLOOM's 250k vocabulary x 1,024
    units = 1 GB); runs on the weights' device, the unembedding matmul in their dtype (a float16 copy of a 7B
    model's unembedding in float32 would cost 4 GB), the centring and the result in float32.
    """
    w_u = unembedding(model)
    d_model = w_u.shape[1]
    hidden = site.module.weight.shape[1 if type(site.module).__name__ == "Conv1D" else 0]
    scale = final_norm_scale(model, hidden)
    centre = subtracts_mean(final_norm(model), hidden)
    project_out = getattr(getattr(getattr(model, "base_model", model), "decoder", None), "project_out", None)
    parts = []
    for start in range(0, len(units), chunk):
        cols = down_columns(site, units[start : start + chunk])  # (d_hidden, u) float32
        if centre:  # LayerNorm's mean subtraction, applied to the unit's write alone (it is linear)
            cols = cols - cols.mean(dim=0, keepdim=True)
        cols = cols * scale.to(cols.device)[:, None]
        if isinstance(project_out, nn.Linear):
            cols = project_out.weight.detach().float().to(cols.device) @ cols  # OPT: hidden -> word_embed_proj_dim
        if cols.shape[0] != d_model:
            raise ValueError(f"{site.path}: output width {cols.shape[0]} does not match the unembedding's {d_model}")
        effect = (w_u @ cols.to(device=w_u.device, dtype=w_u.dtype)).float()
        parts.append(effect - effect.mean(dim=0, keepdim=True))  # the softmax ignores a shift shared by all logits
    return torch.cat(parts, dim=1) if parts else torch.empty((w_u.shape[0], 0), device=w_u.device)
