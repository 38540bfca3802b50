"""Language-specific vs shared neurons: LAPE (Tang et al. 2024) and counts per layer.

For every MLP neuron and language l, the **activation probability** p(l) is the probability that the
neuron's activation is > 0 on a token of language l. The extraction gives, per context, the fraction
of its tokens on which each neuron is > 0 (``mlp_active``); p(l) is

- token-weighted (Tang et al.'s definition, the exact share of language l's tokens) when the number
  of tokens of every context is passed as ``n_tokens``: p(l) = sum_i f_i T_i / sum_i T_i over the
  contexts i of language l;
- otherwise the mean over l's contexts of their fractions (every context weighs the same, whatever
  its length). With contexts of similar length the two agree closely.

The probabilities are normalised over languages, q(l) = p(l) / sum_l' p(l'), and the
**language activation probability entropy** is LAPE = -sum_l q(l) log q(l) (natural log): 0 for a
neuron active in one language only, log L for a neuron equally active in all L languages. A neuron
never active in any language has no LAPE (NaN) and is never selected.

**Language-specific neurons** (Tang et al.'s selection): among the neurons whose largest p(l) is at
least ``min_prob`` (Tang et al. use the 95th percentile of all probabilities; here an absolute
setting), the ``round(quantile * N)`` neurons with the lowest LAPE, N being all neurons of all
layers (Tang et al.: 1%). Because this fixes the total (whenever enough neurons pass ``min_prob``),
what changes over training is *where* the language-specific neurons are; for a count that can
itself rise and fall, pass ``max_lape`` (a cutoff on LAPE / log L in [0, 1]) instead, which selects
every neuron passing ``min_prob`` with normalised LAPE <= max_lape.

Table ``language_neurons`` (layer, unit, lape, top_lang, top_prob): the selected neurons, their
LAPE, their most active language and its p. Table ``neuron_counts`` (layer, kind, n), one row per
layer and kind, zeros included:

- ``language_specific``: selected neurons in the layer;
- ``shared_expert`` (only when ``shared_experts`` is given): distinct units of the layer that are a
  shared expert (see ``precompute.analysis.alignment``) of at least one concept;
- ``language_specific_shared`` (idem): units that are both: few, if the two notions are distinct.

Layers are numbered by position in ``layer_offsets`` (0 = the first hooked MLP layer), as in
``neuron_ap``; pass ``layers`` to number them otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl
import torch


def lape(probs: torch.Tensor) -> torch.Tensor:
    """LAPE of activation probabilities (..., L) -> (...): entropy (nats) of p normalised over languages.

    0 for a neuron active in one language only; log L for equal probabilities; NaN where all are 0.
    """
    probs = probs.to(torch.float64)
    total = probs.sum(dim=-1, keepdim=True)
    q = probs / total.clamp_min(1e-300)
    plogp = torch.where(q > 0, q * torch.log(q.clamp_min(1e-300)), torch.zeros_like(q))
    ent = -plogp.sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, ent, torch.full_like(ent, float("nan")))


def activation_probs(
    mlp_active: torch.Tensor,
    langs: Sequence[str],
    *,
    n_tokens: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    chunk_neurons: int = 65536,
    device: str | torch.device | None = None,
) -> tuple[list[str], torch.Tensor]:
    """Per-language activation probability of every neuron: (n, N) -> (sorted languages, (N, L) float64 on CPU).

    The (languages x contexts) weighted mean runs on ``device`` (default: the input's), in column chunks.
    """
    dev = torch.device(device) if device is not None else mlp_active.device
    n, n_neurons = mlp_active.shape
    if len(langs) != n:
        raise ValueError(f"langs must have length {n} (contexts), got {len(langs)}")
    lang_list, codes = np.unique(np.asarray(langs, dtype=object).astype(str), return_inverse=True)
    if n_tokens is None:
        w = torch.ones(n, dtype=torch.float64)
    else:
        w = torch.as_tensor(np.asarray(n_tokens), dtype=torch.float64)
        if w.shape != (n,) or bool((w < 0).any()):
            raise ValueError(f"n_tokens must be {n} non-negative counts")
    onehot = torch.zeros((len(lang_list), n), dtype=torch.float64)
    onehot[torch.as_tensor(codes), torch.arange(n)] = w
    onehot = (onehot / onehot.sum(dim=1, keepdim=True).clamp_min(1e-300)).to(device=dev, dtype=torch.float32)
    out = torch.empty((n_neurons, len(lang_list)), dtype=torch.float64)
    for start in range(0, n_neurons, chunk_neurons):
        stop = min(n_neurons, start + chunk_neurons)
        # float32 weighted means of fractions in [0, 1]: relative error ~1e-7, ample for an entropy.
        block = mlp_active[:, start:stop].to(device=dev, dtype=torch.float32)
        out[start:stop] = (onehot @ block).T.to(device="cpu", dtype=torch.float64)
    return [str(x) for x in lang_list], out


def language_neuron_tables(
    mlp_active: torch.Tensor,
    langs: Sequence[str],
    layer_offsets: Sequence[int],
    *,
    quantile: float,
    min_prob: float,
    shared_experts: pl.DataFrame | None = None,
    n_tokens: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    max_lape: float | None = None,
    layers: Sequence[int] | None = None,
    device: str | torch.device | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Tables ``language_neurons`` and ``neuron_counts`` (without run_id/checkpoint) for one checkpoint.

    mlp_active: (n, N) fraction of each context's tokens on which each neuron is > 0;
    layer_offsets: length n_layers + 1, layer i owns columns [off[i], off[i+1]).
    See the module docstring for the definitions and the selection rule. ``n_tokens``: tokens per
    context (token-weighted p); ``max_lape``: absolute cutoff instead of ``quantile``; ``layers``:
    layer numbers of the offsets' layers; ``device``: where the per-language means run.
    """
    offsets = [int(o) for o in layer_offsets]
    n_neurons = mlp_active.shape[1]
    if offsets[0] != 0 or offsets[-1] != n_neurons or any(b < a for a, b in zip(offsets, offsets[1:])):
        raise ValueError(f"layer_offsets must rise from 0 to {n_neurons}, got {offsets[:3]}...{offsets[-1:]}")
    n_layers = len(offsets) - 1
    layer_ids = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if len(layer_ids) != n_layers:
        raise ValueError(f"layers must name {n_layers} layers, got {len(layer_ids)}")
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if max_lape is not None and not 0 <= max_lape <= 1:
        raise ValueError(f"max_lape must be in [0, 1] (a fraction of log L), got {max_lape}")

    lang_list, probs = activation_probs(mlp_active, langs, n_tokens=n_tokens, device=device)
    scores = lape(probs)  # (N,)
    top_prob, top_idx = probs.max(dim=1)
    eligible = (top_prob >= min_prob) & torch.isfinite(scores)
    if len(lang_list) < 2:
        # With one language every neuron has LAPE 0: "language-specific" means nothing.
        selected = torch.zeros(0, dtype=torch.long)
    elif max_lape is not None:
        selected = torch.nonzero(eligible & (scores / math.log(len(lang_list)) <= max_lape + 1e-12)).flatten()
    else:
        k = min(int(round(quantile * n_neurons)), int(eligible.sum()))
        masked = torch.where(eligible, scores, torch.full_like(scores, float("inf")))
        order = torch.sort(masked, stable=True).indices
        selected = torch.sort(order[:k]).values

    off = torch.as_tensor(offsets[:-1])
    layer_pos = torch.searchsorted(off, selected, right=True) - 1
    unit = selected - off[layer_pos]
    layer_map = np.asarray(layer_ids, dtype=np.int32)
    neurons = pl.DataFrame(
        {
            "layer": pl.Series(layer_map[layer_pos.numpy()], dtype=pl.Int32),
            "unit": pl.Series(unit.numpy(), dtype=pl.Int32),
            "lape": pl.Series(scores[selected].numpy(), dtype=pl.Float64),
            "top_lang": pl.Series([lang_list[i] for i in top_idx[selected].tolist()], dtype=pl.Utf8),
            "top_prob": pl.Series(top_prob[selected].numpy(), dtype=pl.Float64),
        }
    )

    per_layer = np.bincount(layer_pos.numpy(), minlength=n_layers)
    count_rows = [(layer_ids[i], "language_specific", int(per_layer[i])) for i in range(n_layers)]
    if shared_experts is not None:
        units = (
            shared_experts.select(pl.col("layer").cast(pl.Int32), pl.col("unit").cast(pl.Int32)).unique()
            if shared_experts.height
            else pl.DataFrame(schema={"layer": pl.Int32, "unit": pl.Int32})
        )
        shared_n = dict(units.group_by("layer").len().iter_rows())
        both = units.join(neurons.select("layer", "unit"), on=["layer", "unit"], how="inner")
        both_n = dict(both.group_by("layer").len().iter_rows())
        count_rows += [(lid, "shared_expert", int(shared_n.get(lid, 0))) for lid in layer_ids]
        count_rows += [(lid, "language_specific_shared", int(both_n.get(lid, 0))) for lid in layer_ids]
    counts = pl.DataFrame(
        count_rows, schema={"layer": pl.Int32, "kind": pl.Utf8, "n": pl.Int32}, orient="row"
    )
    return neurons, counts
