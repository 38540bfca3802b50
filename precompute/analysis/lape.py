"""Language-specific vs shared neurons: LAPE (Tang et al. 2024) and counts per layer.

For every MLP unit and language l, the **activation probability** p(l) is the probability that the unit
is active on a token of language l: its activation after the non-linearity is > 0, or, in gated MLPs,
act(gate) > 0 (Tang et al., RUCAIBox/Language-Specific-Neurons ``activation.py``; the extraction hooks the
gate's activation for gated MLPs, see ``precompute.model.sites``). The extraction gives, per context, the
fraction of its real tokens on which each unit is active (``mlp_active``); p(l) is

- token-weighted (Tang et al.'s definition, over_zero / n: the share of language l's tokens) when the number
  of real tokens of every context is passed as ``n_tokens``: p(l) = sum_i f_i T_i / sum_i T_i over the
  contexts i of language l (what the pipeline does);
- otherwise the mean over l's contexts of their fractions (every context weighs the same).

The probabilities are normalised over languages, q(l) = p(l) / sum_l' p(l'), and the **language activation
probability entropy** is LAPE = -sum_l q(l) log q(l) (natural log): 0 for a unit active in one language only,
log L for a unit equally active in all L languages.

**Selection ``"tang"``** (the default; Tang et al.'s ``identify.py``, every number below is theirs and the
paper's): see `select_language_neurons`. A unit is kept only if some language's p exceeds the
``filter_rate`` (0.95) quantile of all (unit, language) probabilities; of the kept units, the ``top_rate``
(1 %) share of **all** units with the lowest LAPE is selected; each selected unit is assigned to **every**
language whose p exceeds the activation bar, the ``bar_ratio`` (0.95) quantile of all probabilities. A
selected unit that passes no bar belongs to no language.

**Selection ``"threshold"``** (crossling's earlier rule, kept as an option; crossling's choice): among the
units whose largest p is at least ``min_prob`` (an absolute cut instead of Tang's quantile filter), the
``round(quantile * N)`` units with the lowest LAPE (or, with ``max_lape``, every such unit whose LAPE / log L
<= max_lape, so the count itself can change over training), each assigned to its one most active language.

Table ``language_neurons`` (layer, unit, lape, top_lang, top_prob): **one row per (unit, language)** the
selection assigns: ``top_lang`` is that language and ``top_prob`` the unit's p in it (the column names are
the store's schema; with ``"threshold"`` it is the unit's single most active language). Table
``neuron_counts`` (layer, kind, n), one row per layer and kind, zeros included:

- ``language_specific``: distinct units of the layer assigned to at least one language;
- ``shared_expert`` (only when ``shared_experts`` is given): distinct units of the layer that are a
  shared expert (see ``precompute.analysis.alignment``) of at least one concept;
- ``language_specific_shared`` (idem): units that are both: few, if the two notions are distinct.

Layers are numbered by position in ``layer_offsets`` (0 = the first hooked MLP layer), as in
``neuron_ap``; pass ``layers`` to number them otherwise.
"""

from __future__ import annotations

import itertools
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


#: Selections `language_neuron_tables` offers (``[analysis] lape_selection``).
SELECTIONS = ("tang", "threshold")


def _kth_smallest(flat: torch.Tensor, rate: float) -> float:
    """Tang et al.'s quantile: ``flat.kthvalue(round(len(flat) * rate))`` (1-based k, Python's round), k >= 1."""
    k = min(max(1, round(flat.numel() * rate)), flat.numel())
    return float(flat.kthvalue(k).values)


def tang_entropy(probs: torch.Tensor) -> torch.Tensor:
    """(N, L) -> (N,) entropy of p normalised over languages, as Tang et al. compute it (a unit never active in
    any language gets 0, and is removed by the filter of `select_language_neurons`, since none of its p exceeds
    a quantile of non-negative probabilities)."""
    probs = probs.to(torch.float64)
    q = probs / probs.sum(dim=-1, keepdim=True)
    q = torch.nan_to_num(q, nan=0.0)
    logq = torch.where(q > 0, torch.log(q.clamp_min(1e-300)), torch.zeros_like(q))
    return -(q * logq).sum(dim=-1)


def select_language_neurons(
    probs: torch.Tensor, *, top_rate: float = 0.01, filter_rate: float = 0.95, bar_ratio: float = 0.95
) -> torch.Tensor:
    """Tang et al.'s language-specific units: (N, L) activation probabilities -> (N, L) bool, True where unit n
    is specific to language l.

    As ``identify.py`` (RUCAIBox/Language-Specific-Neurons), on all hooked layers' units at once:

    1. ``top = kthvalue(round(N * L * filter_rate))`` of all probabilities; a unit is kept only if some
       p(l) > top;
    2. the ``round(N * top_rate)`` kept units with the lowest entropy of p normalised over languages (ties:
       lower unit index first) are selected; fewer when fewer are kept (identify.py would fill its top-k with
       filtered units at entropy +inf, which no language's bar can take as long as ``bar_ratio >=
       filter_rate``, their setting);
    3. ``bar = kthvalue(round(N * L * bar_ratio))``; a selected unit is specific to every l with p(l) > bar.

    Defaults (0.01, 0.95, 0.95) are Tang et al.'s. Vectorised: one sort of N entropies, two kthvalues.
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must be (units, languages), got shape {tuple(probs.shape)}")
    for name, value in (("top_rate", top_rate), ("filter_rate", filter_rate), ("bar_ratio", bar_ratio)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    probs = probs.to(torch.float64)
    n_units = probs.shape[0]
    out = torch.zeros(probs.shape, dtype=torch.bool)
    if probs.numel() == 0:
        return out
    flat = probs.flatten().cpu()
    kept = (probs > _kth_smallest(flat, filter_rate)).any(dim=1)
    entropy = torch.where(kept, tang_entropy(probs), torch.full((n_units,), float("inf"), dtype=torch.float64))
    k = min(round(n_units * top_rate), int(kept.sum()))
    chosen = torch.sort(entropy.cpu(), stable=True).indices[:k]
    bar = _kth_smallest(flat, bar_ratio)
    out[chosen] = probs[chosen].cpu() > bar
    return out


#: Largest block `activation_probs` converts at once (128 MiB of float64).
_BLOCK_ELEMENTS = 2**24


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
    # float64 (float32 on MPS, which has none): Tang's rule ranks units whose probabilities are nearly equal (an
    # early checkpoint's always-active units), so float32 rounding, which also depends on how the columns are
    # blocked, would pick among them and could give probabilities above 1.
    wide = torch.float32 if dev.type == "mps" else torch.float64
    onehot = (onehot / onehot.sum(dim=1, keepdim=True).clamp_min(1e-300)).to(device=dev, dtype=wide)
    out = torch.empty((n_neurons, len(lang_list)), dtype=torch.float64)
    # Column blocks of at most _BLOCK_ELEMENTS values: a block of 65,536 columns of 16,000 contexts was 4.2 GB
    # (float32), the largest allocation of a BLOOM-560m checkpoint's post-forward stages (benchmarks/bench_scale.py).
    step = max(1, min(chunk_neurons, _BLOCK_ELEMENTS // max(1, n)))
    for start in range(0, n_neurons, step):
        stop = min(n_neurons, start + step)
        block = mlp_active[:, start:stop].to(device=dev, dtype=wide)
        out[start:stop] = (onehot @ block).T.to(device="cpu", dtype=torch.float64)
    return [str(x) for x in lang_list], out


def language_neuron_tables(
    mlp_active: torch.Tensor,
    langs: Sequence[str],
    layer_offsets: Sequence[int],
    *,
    selection: str = "tang",
    quantile: float = 0.01,
    filter_rate: float = 0.95,
    bar_ratio: float = 0.95,
    min_prob: float = 0.05,
    max_lape: float | None = None,
    shared_experts: pl.DataFrame | None = None,
    n_tokens: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    layers: Sequence[int] | None = None,
    device: str | torch.device | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Tables ``language_neurons`` and ``neuron_counts`` (without run_id/checkpoint) for one checkpoint.

    mlp_active: (n, N) fraction of each context's real tokens on which each unit is active;
    layer_offsets: length n_layers + 1, layer i owns columns [off[i], off[i+1]).
    See the module docstring for the definitions. ``selection``: ``"tang"`` (Tang et al.: ``quantile`` is
    their top_rate, with ``filter_rate`` and ``bar_ratio``) or ``"threshold"`` (``quantile`` with the absolute
    ``min_prob``, or ``max_lape``). ``n_tokens``: real tokens per context (token-weighted p); ``layers``:
    layer numbers of the offsets' layers; ``device``: where the per-language means run.
    """
    offsets = [int(o) for o in layer_offsets]
    n_neurons = mlp_active.shape[1]
    if offsets[0] != 0 or offsets[-1] != n_neurons or any(b < a for a, b in itertools.pairwise(offsets)):
        raise ValueError(f"layer_offsets must rise from 0 to {n_neurons}, got {offsets[:3]}...{offsets[-1:]}")
    n_layers = len(offsets) - 1
    layer_ids = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if len(layer_ids) != n_layers:
        raise ValueError(f"layers must name {n_layers} layers, got {len(layer_ids)}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if max_lape is not None and not 0 <= max_lape <= 1:
        raise ValueError(f"max_lape must be in [0, 1] (a fraction of log L), got {max_lape}")

    lang_list, probs = activation_probs(mlp_active, langs, n_tokens=n_tokens, device=device)
    scores = lape(probs)  # (N,)
    assigned = torch.zeros(probs.shape, dtype=torch.bool)  # (N, L)
    if len(lang_list) < 2:
        pass  # with one language every unit has LAPE 0: "language-specific" means nothing
    elif selection == "tang":
        assigned = select_language_neurons(probs, top_rate=quantile, filter_rate=filter_rate, bar_ratio=bar_ratio)
    else:
        top_prob, top_idx = probs.max(dim=1)
        eligible = (top_prob >= min_prob) & torch.isfinite(scores)
        if max_lape is not None:
            chosen = torch.nonzero(eligible & (scores / math.log(len(lang_list)) <= max_lape + 1e-12)).flatten()
        else:
            k = min(round(quantile * n_neurons), int(eligible.sum()))
            masked = torch.where(eligible, scores, torch.full_like(scores, float("inf")))
            chosen = torch.sort(masked, stable=True).indices[:k]
        assigned[chosen, top_idx[chosen]] = True

    # One row per (unit, language), units in column order, languages sorted.
    selected, lang_idx = torch.nonzero(assigned, as_tuple=True)
    off = torch.as_tensor(offsets[:-1])
    layer_pos = torch.searchsorted(off, selected, right=True) - 1
    unit = selected - off[layer_pos]
    layer_map = np.asarray(layer_ids, dtype=np.int32)
    neurons = pl.DataFrame(
        {
            "layer": pl.Series(layer_map[layer_pos.numpy()], dtype=pl.Int32),
            "unit": pl.Series(unit.numpy(), dtype=pl.Int32),
            "lape": pl.Series(scores[selected].numpy(), dtype=pl.Float64),
            "top_lang": pl.Series([lang_list[i] for i in lang_idx.tolist()], dtype=pl.Utf8),
            "top_prob": pl.Series(probs[selected, lang_idx].numpy(), dtype=pl.Float64),
        }
    )

    units_per_layer = torch.searchsorted(off, torch.nonzero(assigned.any(dim=1)).flatten(), right=True) - 1
    per_layer = np.bincount(units_per_layer.numpy(), minlength=n_layers)
    count_rows = [(layer_ids[i], "language_specific", int(per_layer[i])) for i in range(n_layers)]
    if shared_experts is not None:
        units = (
            shared_experts.select(pl.col("layer").cast(pl.Int32), pl.col("unit").cast(pl.Int32)).unique()
            if shared_experts.height
            else pl.DataFrame(schema={"layer": pl.Int32, "unit": pl.Int32})
        )
        shared_n = dict(units.group_by("layer").len().iter_rows())
        both = units.join(neurons.select("layer", "unit").unique(), on=["layer", "unit"], how="inner")
        both_n = dict(both.group_by("layer").len().iter_rows())
        count_rows += [(lid, "shared_expert", int(shared_n.get(lid, 0))) for lid in layer_ids]
        count_rows += [(lid, "language_specific_shared", int(both_n.get(lid, 0))) for lid in layer_ids]
    counts = pl.DataFrame(count_rows, schema={"layer": pl.Int32, "kind": pl.Utf8, "n": pl.Int32}, orient="row")
    return neurons, counts
