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

**Selection ``"tang"``** (the config's default; Tang et al.'s ``identify.py``, every number below is theirs and the
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

Layers are the model's block ids (`precompute.analysis.units.UnitAxis.layer_of`), as in ``neuron_ap``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

from precompute.analysis.units import UnitAxis


def lape(probs: torch.Tensor) -> torch.Tensor:
    """LAPE of activation probabilities: the entropy (nats) of p normalised over languages.

    Parameters
    ----------
    probs : Tensor of float, (..., languages)
        Activation probabilities, e.g. (units, languages).

    Returns
    -------
    Tensor of float64, (...)
        0 for a unit active in one language only; log L for equal probabilities; NaN where all are 0.
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
    """The entropy of p normalised over languages, as Tang et al. compute it.

    A unit never active in any language gets 0, and is removed by the filter of `select_language_neurons`, since
    none of its p exceeds a quantile of non-negative probabilities.

    Parameters
    ----------
    probs : Tensor of float, (units, languages)

    Returns
    -------
    Tensor of float64, (units,)
    """
    probs = probs.to(torch.float64)
    q = probs / probs.sum(dim=-1, keepdim=True)
    q = torch.nan_to_num(q, nan=0.0)
    logq = torch.where(q > 0, torch.log(q.clamp_min(1e-300)), torch.zeros_like(q))
    return -(q * logq).sum(dim=-1)


def select_language_neurons(
    probs: torch.Tensor, *, top_rate: float, filter_rate: float, bar_ratio: float
) -> torch.Tensor:
    """Tang et al.'s language-specific units.

    As ``identify.py`` (RUCAIBox/Language-Specific-Neurons), on all hooked layers' units at once (N units, L
    languages):

    1. ``top = kthvalue(round(N * L * filter_rate))`` of all probabilities; a unit is kept only if some
       p(l) > top;
    2. the ``round(N * top_rate)`` kept units with the lowest entropy of p normalised over languages (ties:
       lower unit index first) are selected; fewer when fewer are kept (identify.py would fill its top-k with
       filtered units at entropy +inf, which no language's bar can take as long as ``bar_ratio >=
       filter_rate``, their setting);
    3. ``bar = kthvalue(round(N * L * bar_ratio))``; a selected unit is specific to every l with p(l) > bar.

    Tang et al.'s values (0.01, 0.95, 0.95) are the config's defaults. Vectorised: one sort of N entropies, two
    kthvalues.

    Parameters
    ----------
    probs : Tensor of float, (units, languages)
        Activation probabilities (`activation_probs`).
    top_rate : float
        Share of all units selected (``[analysis] lape_quantile``), in [0, 1].
    filter_rate : float
        Quantile of all probabilities a unit's largest p must exceed to be kept (``lape_filter_rate``).
    bar_ratio : float
        Quantile of all probabilities a selected unit's p must exceed for the language (``lape_bar_ratio``).

    Returns
    -------
    Tensor of bool, (units, languages)
        True where the unit is specific to the language; on the CPU.

    Raises
    ------
    ValueError
        When ``probs`` is not 2-D or a rate lies outside [0, 1].
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
    """Per-language activation probability of every unit.

    The (languages x contexts) weighted mean runs on ``device`` in column chunks.

    Parameters
    ----------
    mlp_active : Tensor of float, (contexts, units)
        Fraction of each context's real tokens on which each unit is active.
    langs : sequence of str, (contexts,)
    n_tokens : array of int, (contexts,), optional
        Real tokens per context: p is token-weighted (Tang et al.'s). Without it every context weighs the same.
    chunk_neurons : int
        Most columns converted at once (fewer where a block would pass 2**24 values); no result depends on it.
    device : str or torch.device, optional
        Where the means run; default the input's.

    Returns
    -------
    languages : list of str, (languages,)
        Sorted.
    probs : Tensor of float64, (units, languages)
        On the CPU.

    Raises
    ------
    ValueError
        When ``langs`` or ``n_tokens`` do not have one entry per context, or a count is negative.
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
    units: UnitAxis,
    *,
    selection: str,
    quantile: float,
    filter_rate: float,
    bar_ratio: float,
    min_prob: float,
    max_lape: float | None,
    shared_experts: pl.DataFrame | None = None,
    n_tokens: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    device: str | torch.device | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Tables ``language_neurons`` and ``neuron_counts`` (without run_id/checkpoint) for one checkpoint.

    See the module docstring for the definitions.

    Parameters
    ----------
    mlp_active : Tensor of float, (contexts, units)
        Fraction of each context's real tokens on which each unit is active.
    langs : sequence of str, (contexts,)
    units : UnitAxis
        The unit axis of ``mlp_active``'s columns.
    selection : {"tang", "threshold"}
        ``[analysis] lape_selection``: Tang et al.'s rule, or crossling's earlier one.
    quantile : float
        ``lape_quantile``: Tang's top_rate, or the share of lowest-LAPE units ``"threshold"`` selects.
    filter_rate, bar_ratio : float
        ``lape_filter_rate``, ``lape_bar_ratio`` (``"tang"`` only; see `select_language_neurons`).
    min_prob : float
        ``lape_min_prob``: the largest p a unit needs to be eligible (``"threshold"`` only).
    max_lape : float or None
        ``lape_max``: with ``"threshold"``, select every eligible unit with LAPE / log L <= this instead of a
        share; None: the share.
    shared_experts : DataFrame, optional
        `precompute.analysis.alignment.shared_experts` rows (layer, unit, ...): adds the ``shared_expert`` and
        ``language_specific_shared`` counts.
    n_tokens : array of int, (contexts,), optional
        Real tokens per context: token-weighted p (Tang et al.'s).
    device : str or torch.device, optional
        Where the per-language means run; default the input's.

    Returns
    -------
    language_neurons : DataFrame
        (layer, unit, lape, top_lang, top_prob): one row per (unit, language) assigned, units in column order.
    neuron_counts : DataFrame
        (layer, kind, n): one row per hooked layer and kind, zeros included.

    Raises
    ------
    ValueError
        For a unit axis of another width than ``mlp_active``, an unknown selection or a value out of range.
    """
    n_neurons = mlp_active.shape[1]
    units.check_width(n_neurons, "mlp_active")
    n_layers = units.n_layers
    layer_ids = list(units.layer_ids)
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if max_lape is not None and not 0 <= max_lape <= 1:
        raise ValueError(f"max_lape must be in [0, 1] (a fraction of log L), got {max_lape}")

    lang_list, probs = activation_probs(mlp_active, langs, n_tokens=n_tokens, device=device)
    scores = lape(probs)  # (units,)
    assigned = torch.zeros(probs.shape, dtype=torch.bool)  # (units, languages)
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
    columns = selected.numpy()
    neurons = pl.DataFrame(
        {
            "layer": pl.Series(units.layer_of(columns), dtype=pl.Int32),
            "unit": pl.Series(units.unit_of(columns), dtype=pl.Int32),
            "lape": pl.Series(scores[selected].numpy(), dtype=pl.Float64),
            "top_lang": pl.Series([lang_list[i] for i in lang_idx.tolist()], dtype=pl.Utf8),
            "top_prob": pl.Series(probs[selected, lang_idx].numpy(), dtype=pl.Float64),
        }
    )

    per_layer = np.bincount(units.position_of(torch.nonzero(assigned.any(dim=1)).flatten().numpy()), minlength=n_layers)
    count_rows = [(layer_ids[i], "language_specific", int(per_layer[i])) for i in range(n_layers)]
    if shared_experts is not None:
        shared_units = (
            shared_experts.select(pl.col("layer").cast(pl.Int32), pl.col("unit").cast(pl.Int32)).unique()
            if shared_experts.height
            else pl.DataFrame(schema={"layer": pl.Int32, "unit": pl.Int32})
        )
        shared_n = dict(shared_units.group_by("layer").len().iter_rows())
        both = shared_units.join(neurons.select("layer", "unit").unique(), on=["layer", "unit"], how="inner")
        both_n = dict(both.group_by("layer").len().iter_rows())
        count_rows += [(lid, "shared_expert", int(shared_n.get(lid, 0))) for lid in layer_ids]
        count_rows += [(lid, "language_specific_shared", int(both_n.get(lid, 0))) for lid in layer_ids]
    counts = pl.DataFrame(count_rows, schema={"layer": pl.Int32, "kind": pl.Utf8, "n": pl.Int32}, orient="row")
    return neurons, counts
