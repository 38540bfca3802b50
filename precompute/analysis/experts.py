"""Expert units (Suau et al., "Finding Experts in Transformer Models"): average precision of every
neuron's activation as a detector of one concept, computed for all neurons at once on the device.

The maths matches ``sklearn.metrics.average_precision_score`` exactly, ties included:
AP = sum over distinct thresholds t (descending) of (R_t - R_prev) * P_t, which equals the mean over
positive contexts i of TP(score >= s_i) / N(score >= s_i) (every positive tied with i shares i's threshold,
so it is counted in TP and N, and each of the tied positives adds the same term). Both counts need only
ranks: N(score >= s_i) = n - (how many scores are < s_i), a binary search in the neuron's sorted scores,
and TP(score >= s_i) = how many positives have a rank >= i's. The sort does not depend on the labels, so
one sort per neuron serves every concept.

On the CPU numpy sorts each neuron's row (its SIMD sort) and a compiled kernel (`_ap_rows`, numba, no GIL,
so every core runs one) does the searches and counts with integer order keys: exact integer counts, one
float64 division per positive. Other devices (and neurons with NaN scores) use the same counts from
``torch.searchsorted`` (`average_precision_sorted`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import polars as pl
import torch

from precompute.analysis.units import UnitAxis


@dataclass
class SortedScores:
    """Per-unit scores, unit-major, and the same scores sorted ascending (for rank counting).

    Attributes
    ----------
    by_neuron : Tensor, (units, contexts)
        The scores, one row per unit.
    ascending : Tensor, (units, contexts)
        Each row sorted ascending.
    """

    by_neuron: torch.Tensor
    ascending: torch.Tensor


def sort_scores(scores: torch.Tensor) -> SortedScores:
    """Transpose a score matrix to unit-major rows and sort each row once (the sort serves every concept).

    Parameters
    ----------
    scores : Tensor, (contexts, units)
        Every unit's score on every context.

    Returns
    -------
    SortedScores
        The (units, contexts) rows and the same rows sorted.

    Raises
    ------
    ValueError
        When ``scores`` is not 2-D.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (contexts, units), got shape {tuple(scores.shape)}")
    if scores.device.type == "cpu":
        by_neuron = torch.from_numpy(np.ascontiguousarray(scores.numpy().T))  # 2x torch's transpose
    else:
        by_neuron = scores.T.contiguous()
    return SortedScores(by_neuron=by_neuron, ascending=_sort_rows(by_neuron))


def _sort_rows(matrix: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending; numpy's SIMD sort on CPU (an order of magnitude faster than torch's)."""
    if matrix.device.type == "cpu":
        return torch.from_numpy(np.sort(matrix.numpy(), axis=1))
    return torch.sort(matrix, dim=1).values


def average_precision_sorted(sorted_scores: SortedScores, labels: torch.Tensor) -> torch.Tensor:
    """AP of every unit for one label vector, reusing a precomputed sort (the torch searches: any device, NaN).

    AP = mean over positives i of TP(score >= s_i) / N(score >= s_i), which is sklearn's sum over distinct
    thresholds of recall increment x precision, ties included.

    Parameters
    ----------
    sorted_scores : SortedScores
        The units' scores from `sort_scores`.
    labels : Tensor of bool, (contexts,)
        The positive contexts; at least one.

    Returns
    -------
    Tensor of float64, (units,)
        On the scores' device.
    """
    labels = labels.to(sorted_scores.by_neuron.device).bool()
    n = sorted_scores.ascending.shape[1]
    n_pos = int(labels.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive context")
    positives = sorted_scores.by_neuron[:, labels].contiguous()  # (units, positives)
    n_at_or_above = n - torch.searchsorted(sorted_scores.ascending, positives, side="left")
    positives_sorted = _sort_rows(positives)
    tp_at_or_above = n_pos - torch.searchsorted(positives_sorted, positives, side="left")
    return (tp_at_or_above.double() / n_at_or_above.double()).mean(dim=1)


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Average precision of each unit's score as a predictor of ``labels``: sklearn's
    ``average_precision_score`` per column.

    Parameters
    ----------
    scores : Tensor of float, (contexts, units)
    labels : Tensor of bool, (contexts,)
        The positive contexts; at least one.

    Returns
    -------
    Tensor of float64, (units,)
        On the scores' device.
    """
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels must have shape ({scores.shape[0]},), got {tuple(labels.shape)}")
    # Column chunks keep each transpose and sort cache-sized.
    return average_precision_multi(scores, labels.bool()[:, None], chunk_neurons=2048)[0]


def average_precision_multi(scores: torch.Tensor, label_matrix: torch.Tensor, *, chunk_neurons: int) -> torch.Tensor:
    """AP of every unit for every label column.

    Units are processed in chunks of ``chunk_neurons`` columns to bound device memory; each chunk is sorted once
    and scored against every concept. On the CPU the chunks (at most 1,024 columns) run on every core this
    process may use (``CROSSLING_AP_THREADS`` sets the number) through the compiled `_ap_rows`; the result does
    not depend on either.

    Parameters
    ----------
    scores : Tensor of float, (contexts, units)
    label_matrix : Tensor of bool, (contexts, concepts)
        One label column per concept, each with at least one positive.
    chunk_neurons : int
        Columns per device chunk (``[experts] chunk_neurons``).

    Returns
    -------
    Tensor of float64, (concepts, units)
        On the scores' device.
    """
    _, n_neurons = scores.shape
    n_concepts = label_matrix.shape[1]
    out = torch.empty((n_concepts, n_neurons), dtype=torch.float64, device=scores.device)
    label_matrix = label_matrix.to(scores.device).bool()

    cpu = scores.device.type == "cpu"
    if cpu:
        label_np = label_matrix.numpy()
        groups = [np.flatnonzero(label_np[:, c]) for c in range(n_concepts)]
        if any(len(g) == 0 for g in groups):
            raise ValueError("average precision needs at least one positive context")
        sizes = np.array([len(g) for g in groups], dtype=np.int64)
        # Each context positive for some concept is ranked once per neuron (`contexts`); the positives of concept
        # c, concept by concept, are ``slots`` into it (a context positive for several concepts is shared).
        positives = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        contexts, slots = np.unique(positives, return_inverse=True)
        contexts, slots = contexts.astype(np.int64), slots.astype(np.int64).ravel()
        out_np = out.numpy()

    def score_chunk(start: int, stop: int) -> None:
        if not cpu:
            sorted_chunk = sort_scores(scores[:, start:stop].float())
            for c in range(n_concepts):
                out[c, start:stop] = average_precision_sorted(sorted_chunk, label_matrix[:, c])
            return
        by_neuron = _neuron_major(scores[:, start:stop])
        for first in range(0, by_neuron.shape[0], _SORT_ROWS):  # each block sorted and scored while in cache
            rows = by_neuron[first : first + _SORT_ROWS]
            ascending = np.sort(rows, axis=1)
            _ap_rows(rows, ascending, contexts, slots, sizes, out_np, start + first)  # skips rows with NaN
            with_nan = np.flatnonzero(np.isnan(ascending[:, -1]))  # NaN sorts last
            if len(with_nan):  # those neurons: the torch searches, as on other devices
                nan_rows = SortedScores(
                    by_neuron=torch.from_numpy(rows[with_nan]), ascending=torch.from_numpy(ascending[with_nan])
                )
                for c in range(n_concepts):
                    out[c, start + first + with_nan] = average_precision_sorted(nan_rows, label_matrix[:, c])

    # CPU: slices of at most _CPU_SLICE columns keep each transpose and sort cache-sized, and every core scores
    # its own slices (numpy's sort and the compiled kernel release the GIL). Each neuron's AP depends on its own
    # column only, so neither the slicing nor the threads change a bit of the result. Torch's intra-op threads
    # are held at 1 meanwhile (the NaN fallback), so the workers do not oversubscribe the cores.
    step = max(1, min(chunk_neurons, _CPU_SLICE)) if cpu else chunk_neurons
    bounds = [(start, min(n_neurons, start + step)) for start in range(0, n_neurons, step)]
    workers = min(_cpu_workers(), len(bounds)) if cpu else 1
    if workers <= 1:
        for a, b in bounds:
            score_chunk(a, b)
        return out
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done in [pool.submit(score_chunk, a, b) for a, b in bounds]:
                done.result()
    finally:
        torch.set_num_threads(previous)
    return out


def _neuron_major(block: torch.Tensor) -> np.ndarray:
    """A CPU (contexts, w) block as a contiguous (w, contexts) float32 array: the same values as
    ``block.float().T.contiguous()``, copied in bands of 256 contexts (4x numpy's own transposing copy)."""
    if block.dtype not in (torch.float16, torch.float32, torch.float64):
        block = block.float()  # bfloat16 and others: no numpy view
    source = block.numpy()
    n, w = source.shape
    result = np.empty((w, n), dtype=np.float32)
    for i in range(0, n, 256):
        result[:, i : i + 256] = source[i : i + 256].T  # float16 -> float32 exact; float64 rounds as .float()
    return result


#: Counting the positives at or above each positive pairwise (size^2 comparisons, vectorised) beats a histogram
#: over the n ranks (O(n)) while size^2 <= _PAIRWISE * n.
_PAIRWISE = 2


@numba.njit(inline="always")
def _order_key(bits: int) -> int:
    """The int32 bits of a float32 as an int64 with the float's order: negatives' magnitude bits flipped, then
    shifted up by one so that -0.0 and +0.0 get the same key (0), as they compare equal. NaN never gets here."""
    b = np.int64(bits)
    sign = b >> 31  # -1 for negatives, 0 otherwise
    return (b ^ (sign & 0x7FFFFFFF)) - sign


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _ap_rows(
    by_neuron: np.ndarray,
    ascending: np.ndarray,
    contexts: np.ndarray,
    slots: np.ndarray,
    sizes: np.ndarray,
    out: np.ndarray,
    first_col: int,
) -> None:
    """AP of each row of ``by_neuron`` (w, n) float32 for every concept: ``out[c, first_col + j]`` (rows with NaN
    are skipped, left as they are).

    ``ascending``: the rows sorted; ``contexts``: every context positive for some concept; ``slots``: concept 0's
    positives as indices into ``contexts``, then concept 1's, ... (``sizes[c]`` each). Per row:

    - below[k] = how many scores are < the score of ``contexts[k]``, so N(score >= s) = n - below: a binary
      search in the sorted row, all contexts in lockstep (the searches are independent, so the CPU overlaps
      their loads) and branch-free on integer order keys: LLVM compiles the select on a float comparison to a
      branch, mispredicted half the time (5x slower), while the sign of a key difference is a mask;
    - TP(score >= s_i) of each positive i of a concept = how many of its positives have below >= below[i] (equal
      scores have equal below, so ties count as sklearn's thresholds do): pairwise for a few positives, else
      from a histogram of below;
    - AP = the mean over the positives, in ``slots`` order, of TP / N in float64.
    """
    w, n = by_neuron.shape
    n_ctx = contexts.shape[0]
    n_concepts = sizes.shape[0]
    halves = np.empty(64, dtype=np.int64)  # the binary search's step sizes for length n (the same for every key)
    levels = 0
    length = n
    while length > 1:
        halves[levels] = length >> 1
        length -= length >> 1
        levels += 1
    max_size = 1
    for c in range(n_concepts):
        max_size = max(max_size, sizes[c])
    key = np.empty(n_ctx, dtype=np.int64)
    below = np.empty(n_ctx, dtype=np.int64)
    group = np.empty(max_size, dtype=np.int64)
    at_or_above = np.zeros(n + 2, dtype=np.int64)
    for j in range(w):
        if np.isnan(ascending[j, n - 1]):  # NaN sorts last: the row is left to the caller
            continue
        row = by_neuron[j].view(np.int32)
        srt = ascending[j].view(np.int32)
        for k in range(n_ctx):
            key[k] = _order_key(row[contexts[k]])
            below[k] = 0
        for level in range(levels):
            h = halves[level]
            for k in range(n_ctx):
                b = below[k]
                # (srt < key) as a mask: the sign of the difference of two keys within int32's range.
                below[k] = b + (h & ((_order_key(srt[b + h - 1]) - key[k]) >> 63))
        for k in range(n_ctx):
            b = below[k]
            below[k] = b - ((_order_key(srt[b]) - key[k]) >> 63)
        offset = 0
        for c in range(n_concepts):
            size = sizes[c]
            for k in range(size):
                group[k] = below[slots[offset + k]]
            total = 0.0
            if size * size <= _PAIRWISE * n:
                for k in range(size):
                    v = group[k]
                    tp = 0
                    for m in range(size):
                        tp += np.int64(group[m] >= v)
                    total += tp / (n - v)
            else:
                for k in range(size):
                    at_or_above[group[k]] += 1
                for r in range(n - 1, -1, -1):
                    at_or_above[r] += at_or_above[r + 1]
                for k in range(size):
                    v = group[k]
                    total += at_or_above[v] / (n - v)
                at_or_above[:] = 0
            out[c, first_col + j] = total / size
            offset += size


#: Columns per CPU worker task in `average_precision_multi` (a cache-sized transpose).
_CPU_SLICE = 1024
#: Rows sorted and scored at a time inside a task: sorted and unsorted rows stay in the core's L2 cache.
_SORT_ROWS = 64


def _cpu_workers() -> int:
    """Threads for the CPU path: the cores this process may run on (``CROSSLING_AP_THREADS`` overrides)."""
    override = os.environ.get("CROSSLING_AP_THREADS", "")
    if override.strip().isdigit() and int(override) > 0:
        return int(override)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def top_k_experts(ap: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns and AP of the top-k units per row of an AP matrix, best first.

    Ties are broken by the lower column so results are deterministic: exactly the first k of a stable
    descending sort of each row, found without sorting the row. ``torch.topk`` gives each row's k-th largest AP;
    every unit above it is in, and of the units equal to it the lowest-indexed fill the rest; only those k are
    sorted. (A full stable sort of 200 x 98,304 APs per language was a fifth of the experts stage.)

    Parameters
    ----------
    ap : Tensor of float, (concepts, units)
    k : int
        Units per row (at most the number of units).

    Returns
    -------
    columns : Tensor of int64, (concepts, k)
    values : Tensor, (concepts, k)
        Their AP, descending.
    """
    k = min(k, ap.shape[1])
    if k == 0 or torch.isnan(ap).any():  # NaN orders as the sort orders it: keep the sort
        values, idx = torch.sort(ap, dim=1, descending=True, stable=True)
        return idx[:, :k], values[:, :k]
    kth = torch.topk(ap, k, dim=1, sorted=False).values.min(dim=1, keepdim=True).values  # (rows, 1)
    above = ap > kth
    at = ap == kth
    room = k - above.sum(dim=1, keepdim=True)  # how many units equal to the k-th value are in
    chosen = above | (at & (torch.cumsum(at, dim=1) <= room))  # exactly k per row, lower indices first
    columns = chosen.nonzero()[:, 1].view(ap.shape[0], k)  # each row's chosen units, in index order
    values = torch.gather(ap, 1, columns)
    values, order = torch.sort(values, dim=1, descending=True, stable=True)
    return torch.gather(columns, 1, order), values


def on_p50(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The steering value of each column: the interpolated median over the rows selected by ``mask``.

    ``torch.quantile(q=0.5)`` (linear interpolation between the two middle values for an even count), as
    apple/ml-selfcond's ``on_p50`` (``np.percentile(q=50)`` of the responses on the concept's sentences): the
    paper's setting. Not the lower median of ``torch.median``.

    Parameters
    ----------
    values : Tensor of float, (contexts, experts)
        Pooled responses of some units.
    mask : Tensor of bool, (contexts,)
        The concept's contexts; at least one.

    Returns
    -------
    Tensor, (experts,)
        In ``values``' dtype.
    """
    selected = values[mask.bool()]
    if selected.shape[0] == 0:
        raise ValueError("on_p50 needs at least one selected context")
    wide = torch.float32 if selected.device.type == "mps" else torch.float64  # MPS has no float64
    return torch.quantile(selected.to(wide), 0.5, dim=0, interpolation="linear").to(values.dtype)


#: The steering value (``neuron_ap.median_pos_act``): the interpolated median, see `on_p50`.
masked_median = on_p50


@dataclass
class ExpertResult:
    """Per language: the top-K rows, plus the full AP matrix for alignment.

    Attributes
    ----------
    top : DataFrame
        ``neuron_ap`` rows: lang, concept_id, layer (block id), unit, ap, rank, median_pos_act (`on_p50` of the
        responses).
    full_ap : dict of str to Tensor of float64, (concepts, units)
        Per language, every unit's AP for every concept of the run (NaN where the language lacks the concept);
        on the CPU.
    concept_ids : list of str, (concepts,)
        The rows of ``full_ap``, sorted.
    """

    top: pl.DataFrame
    full_ap: dict[str, torch.Tensor]
    concept_ids: list[str]


def score_experts(
    activations: torch.Tensor,
    langs: np.ndarray,
    concept_ids: np.ndarray,
    units: UnitAxis,
    *,
    top_k: int,
    chunk_neurons: int,
    device: torch.device | str = "cpu",
    progress: Callable[[], object] | None = None,
) -> ExpertResult:
    """Score every unit for every (language, concept); keep the top-K per pair.

    A concept's AP in a language is computed against that language's other contexts. ``median_pos_act`` of a top
    unit is `on_p50` of its responses on the concept's contexts in that language.

    Parameters
    ----------
    activations : Tensor of float, (contexts, units)
        Pooled responses of every hooked layer's units (the run's ``[extract] pooling``: the same responses give
        the AP and the steering value).
    langs : ndarray of str, (contexts,)
    concept_ids : ndarray of str, (contexts,)
    units : UnitAxis
        The unit axis of ``activations``' columns.
    top_k : int
        Experts kept per (language, concept) (``[experts] top_k``).
    chunk_neurons : int
        Columns per device chunk (``[experts] chunk_neurons``).
    device : torch.device or str
        Where the AP is computed; no result depends on it beyond rounding.
    progress : callable, optional
        Called once per language.

    Returns
    -------
    ExpertResult
        ``top`` names units by block id (``layer``) and index in the block (``unit``).
    """
    units.check_width(activations.shape[1], "activations")
    concepts = sorted(set(concept_ids.tolist()))
    frames = []
    full: dict[str, torch.Tensor] = {}
    for lang in sorted(set(langs.tolist())):
        rows = np.flatnonzero(langs == lang)
        lang_concepts = concept_ids[rows]
        present = [c for c in concepts if (lang_concepts == c).any()]
        labels = torch.from_numpy(np.stack([lang_concepts == c for c in present], axis=1))
        scores = activations[torch.from_numpy(rows)].to(device)
        ap = average_precision_multi(scores, labels, chunk_neurons=chunk_neurons)
        idx, vals = top_k_experts(ap, top_k)
        # The concept's own contexts first (~20 rows), then its K columns: a (20, K) gather per concept instead of
        # a (contexts, K) one; the values, and so on_p50, are the same.
        positive = [torch.from_numpy(np.flatnonzero(labels[:, ci].numpy())).to(device) for ci in range(len(present))]
        medians = torch.stack(
            [
                on_p50(scores[pos][:, idx[ci]].float(), torch.ones(len(pos), dtype=torch.bool, device=device))
                for ci, pos in enumerate(positive)
            ]
        )
        full_ap = torch.full((len(concepts), ap.shape[1]), float("nan"), dtype=torch.float64)
        for ci, c in enumerate(present):
            full_ap[concepts.index(c)] = ap[ci].cpu()
        full[lang] = full_ap
        columns = idx.cpu().flatten().numpy()
        kk = idx.shape[1]
        frames.append(
            pl.DataFrame(
                {
                    "lang": [lang] * (len(present) * kk),
                    "concept_id": np.repeat(present, kk).tolist(),
                    "layer": units.layer_of(columns),
                    "unit": units.unit_of(columns),
                    "ap": vals.cpu().flatten().numpy(),
                    "rank": np.tile(np.arange(1, kk + 1, dtype=np.int32), len(present)),
                    "median_pos_act": medians.cpu().flatten().numpy().astype(np.float64),
                }
            )
        )
        if progress is not None:
            progress()
    return ExpertResult(top=pl.concat(frames), full_ap=full, concept_ids=concepts)


def neuron_summary(result: ExpertResult, units: UnitAxis) -> pl.DataFrame:
    """Every unit: mean and max AP over all (language, concept) pairs, and where the max is.

    One language's (concepts, units) AP matrix at a time (languages in sorted order, concepts in order, the first
    maximum kept, as an argmax over the stacked (languages x concepts, units) matrix would), so the memory is one
    language's matrix rather than all of them stacked (2.5 GB at 98,304 units x 200 concepts x 16 languages).

    Parameters
    ----------
    result : ExpertResult
        From `score_experts`.
    units : UnitAxis
        The unit axis of ``result.full_ap``'s columns.

    Returns
    -------
    DataFrame
        ``neuron_summary`` rows, one per unit in column order: layer (block id), unit, mean_ap, max_ap,
        best_concept_id, best_lang.
    """
    langs = sorted(result.full_ap)
    n_neurons = result.full_ap[langs[0]].shape[1]
    units.check_width(n_neurons, "the AP matrix")
    total = torch.zeros(n_neurons, dtype=torch.float64)
    count = torch.zeros(n_neurons, dtype=torch.int64)
    max_ap = torch.full((n_neurons,), -1.0, dtype=torch.float64)
    best_lang = torch.zeros(n_neurons, dtype=torch.int64)
    best_concept = torch.zeros(n_neurons, dtype=torch.int64)
    for li, lang in enumerate(langs):
        ap = result.full_ap[lang]  # (concepts, units), NaN where the language lacks the concept
        valid = ~torch.isnan(ap)
        total += torch.where(valid, ap, 0.0).sum(0)
        count += valid.sum(0)
        lang_max, lang_arg = torch.where(valid, ap, -1.0).max(dim=0)  # the first maximum among concepts
        better = lang_max > max_ap  # strictly: an earlier language keeps a tie
        max_ap = torch.where(better, lang_max, max_ap)
        best_lang = torch.where(better, li, best_lang)
        best_concept = torch.where(better, lang_arg, best_concept)
    mean_ap = total / count.clamp(min=1)
    columns = np.arange(n_neurons, dtype=np.int64)
    return pl.DataFrame(
        {
            "layer": units.layer_of(columns),
            "unit": units.unit_of(columns),
            "mean_ap": mean_ap.numpy(),
            "max_ap": max_ap.numpy(),
            "best_concept_id": np.array(result.concept_ids)[best_concept.numpy()],
            "best_lang": np.array(langs)[best_lang.numpy()],
        }
    )
