"""What an MLP unit writes into the output vocabulary: its direct effect on the logits (the logit lens).

A unit's activation ``a`` enters the residual stream as ``a * w_out``, where ``w_out`` (shape ``(d_model,)``) is
the unit's column of its block's down projection. Read straight through the final norm and the unembedding,
as the logit lens does (nostalgebraist 2020; Geva et al. 2022, "Transformer Feed-Forward Layers Build
Predictions by Promoting Concepts in the Vocabulary Space"), one unit of activation changes the logits by

    effect = W_U @ (g * w_out)        (vocab,)

with ``g`` the final norm's *scale* only (``weight``; no centring, no division by the norm of the stream, no
bias: those depend on the rest of the stream, not on the unit) and ``W_U`` the unembedding (the LM head's
weight, ``(vocab, d_model)``; the input embedding where the model ties them). Conventions handled here:

- down projection as ``nn.Linear`` (weight ``(d_model, n)``: the unit's *column*) or as GPT-2's ``Conv1D``
  (weight ``(n, d_model)``, applied as ``x @ W``: the unit's *row*);
- gated MLPs (Llama, Mistral, Qwen2, OLMo): the unit is the down projection's input, so nothing changes;
- a final norm without parameters (OLMo-1's LayerNorm): scale 1; Gemma's RMSNorm scales by ``1 + weight``;
- OPT's ``project_out`` (when ``word_embed_proj_dim`` differs from the hidden size) sits between the final
  norm and the LM head and is applied.
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

    ``W_U @ (g[:, None] * W_out[:, units])``, chunked over units so that at most ``vocab x chunk`` floats are
    live (BLOOM's 250k vocabulary x 1,024 units = 1 GB); runs on the weights' device, in their dtype (a float16
    copy of a 7B model's unembedding in float32 would cost 4 GB), the result in float32.
    """
    w_u = unembedding(model)
    d_model = w_u.shape[1]
    hidden = site.module.weight.shape[1 if type(site.module).__name__ == "Conv1D" else 0]
    scale = final_norm_scale(model, hidden)
    project_out = getattr(getattr(getattr(model, "base_model", model), "decoder", None), "project_out", None)
    parts = []
    for start in range(0, len(units), chunk):
        cols = down_columns(site, units[start : start + chunk]) * scale.to(w_u.device)[:, None]  # (d_hidden, u)
        if isinstance(project_out, nn.Linear):
            cols = project_out.weight.detach().float() @ cols  # OPT: hidden -> word_embed_proj_dim
        if cols.shape[0] != d_model:
            raise ValueError(f"{site.path}: output width {cols.shape[0]} does not match the unembedding's {d_model}")
        parts.append((w_u @ cols.to(w_u.dtype)).float())
    return torch.cat(parts, dim=1) if parts else torch.empty((w_u.shape[0], 0), device=w_u.device)
