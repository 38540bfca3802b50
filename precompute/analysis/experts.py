"""Expert units (Suau et al., "Finding Experts in Transformer Models"): average precision of every
neuron's activation as a detector of one concept, computed for all neurons at once on the device.

The maths matches ``sklearn.metrics.average_precision_score`` exactly, ties included:
AP = sum over distinct thresholds t (descending) of (R_t - R_prev) * P_t, which equals the mean over
positive contexts i of TP(score >= s_i) / N(score >= s_i). Both counts come from binary searches in
each neuron's sorted scores; the sort does not depend on the labels, so one sort per language serves
every concept.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch


@dataclass
class SortedScores:
    """Per-neuron scores, neuron-major, and the same scores sorted ascending (for rank counting)."""

    by_neuron: torch.Tensor  # (N, n) scores, one row per neuron
    ascending: torch.Tensor  # (N, n) each row sorted ascending


def sort_scores(scores: torch.Tensor) -> SortedScores:
    """Transpose a (contexts, neurons) matrix to neuron-major rows and sort each row once."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (contexts, neurons), got shape {tuple(scores.shape)}")
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
    """AP of every neuron for one bool label vector, reusing a precomputed sort. Returns (N,) float64.

    AP = mean over positives i of TP(score >= s_i) / N(score >= s_i), which is sklearn's
    sum over distinct thresholds of recall increment x precision, ties included.
    """
    labels = labels.to(sorted_scores.by_neuron.device).bool()
    n = sorted_scores.ascending.shape[1]
    n_pos = int(labels.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive context")
    positives = sorted_scores.by_neuron[:, labels].contiguous()  # (N, P)
    n_at_or_above = n - torch.searchsorted(sorted_scores.ascending, positives, side="left")
    positives_sorted = _sort_rows(positives)
    tp_at_or_above = n_pos - torch.searchsorted(positives_sorted, positives, side="left")
    return (tp_at_or_above.double() / n_at_or_above.double()).mean(dim=1)


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Average precision of each neuron's score as a predictor of ``labels``.

    scores: float tensor (contexts, neurons); labels: bool tensor (contexts,). Returns (neurons,)
    float64 on the scores' device, equal to sklearn's ``average_precision_score`` per column.
    """
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels must have shape ({scores.shape[0]},), got {tuple(labels.shape)}"
        )
    # Column chunks keep each transpose and sort cache-sized.
    return average_precision_multi(scores, labels.bool()[:, None], chunk_neurons=2048)[0]


def average_precision_multi(
    scores: torch.Tensor, label_matrix: torch.Tensor, *, chunk_neurons: int = 8192
) -> torch.Tensor:
    """AP of every neuron for every label column: (contexts, neurons) x (contexts, concepts) -> (concepts, neurons).

    Neurons are processed in chunks of ``chunk_neurons`` columns to bound device memory; each chunk is
    sorted once and scored against every concept. On the CPU the chunks (at most 1,024 columns) run on every
    core this process may use (``CROSSLING_AP_THREADS`` sets the number); the result does not depend on either.
    """
    _, n_neurons = scores.shape
    n_concepts = label_matrix.shape[1]
    out = torch.empty((n_concepts, n_neurons), dtype=torch.float64, device=scores.device)
    label_matrix = label_matrix.to(scores.device).bool()

    cpu = scores.device.type == "cpu"
    if cpu:  # the positives of every concept, concept by concept (each in ascending context order)
        label_np = label_matrix.numpy()
        groups = [np.flatnonzero(label_np[:, c]) for c in range(n_concepts)]
        if any(len(g) == 0 for g in groups):
            raise ValueError("average precision needs at least one positive context")
        positives = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        sizes = np.array([len(g) for g in groups], dtype=np.int64)

    def score_chunk(start: int, stop: int) -> None:
        if cpu:
            by_neuron = _neuron_major(scores[:, start:stop])
            # Several concepts: rank counts (two sorts, no per-concept calls); one concept: the binary searches.
            if n_concepts > 1 and n_concepts * (by_neuron.shape[1] + 1) < 2**32 and np.isfinite(by_neuron).all():
                out[:, start:stop] = _ap_rank_counts(by_neuron, positives, sizes)
                return
            by_tensor = torch.from_numpy(by_neuron)
            sorted_chunk = SortedScores(by_neuron=by_tensor, ascending=_sort_rows(by_tensor))
        else:
            sorted_chunk = sort_scores(scores[:, start:stop].float())
        for c in range(n_concepts):
            out[c, start:stop] = average_precision_sorted(sorted_chunk, label_matrix[:, c])

    # CPU: slices of at most _CPU_SLICE columns keep each transpose and sort cache-sized, and every core sorts
    # its own slices (numpy's sort and torch's kernels release the GIL). Each neuron's AP depends on its own
    # column only, so neither the slicing nor the threads change a bit of the result. Torch's intra-op threads
    # are held at 1 meanwhile, so the workers do not oversubscribe the cores.
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


def _left_counts(keys: np.ndarray) -> np.ndarray:
    """For (rows, n) uint32 ``keys``: how many keys of the same row are strictly smaller than each one (int32).

    One sort per row of 64-bit words (key in the high half, column in the low half: numpy's SIMD sort, no
    argsort), then the start of each run of equal keys, scattered back to the keys' columns.
    """
    rows, n = keys.shape
    packed = np.empty((rows, n), dtype=np.uint64)
    if sys.byteorder == "little":
        halves = packed.view(np.uint32).reshape(rows, n, 2)
        halves[:, :, 1] = keys
        halves[:, :, 0] = np.arange(n, dtype=np.uint32)
        packed.sort(axis=1)
        ordered, columns = halves[:, :, 1], halves[:, :, 0]
    else:
        packed[:] = (keys.astype(np.uint64) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
        packed.sort(axis=1)
        ordered = (packed >> np.uint64(32)).astype(np.uint32)
        columns = (packed & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    starts = np.empty((rows, n), dtype=np.int32)
    starts[:, :1] = 0
    np.multiply(ordered[:, 1:] != ordered[:, :-1], np.arange(1, n, dtype=np.int32), out=starts[:, 1:])
    np.maximum.accumulate(starts, axis=1, out=starts)
    counts = np.empty((rows, n), dtype=np.int32)
    for row in range(rows):
        counts[row, columns[row]] = starts[row]
    return counts


def _ap_rank_counts(by_neuron: np.ndarray, positives: np.ndarray, sizes: np.ndarray) -> torch.Tensor:
    """AP of every neuron (rows of finite float32 ``by_neuron``) for every concept, from rank counts alone.

    ``positives``: the positive contexts of concept 0, then of concept 1, ... (``sizes[c]`` each). The counts are
    those of `average_precision_sorted` exactly (N(score >= s_i) and TP(score >= s_i) as integers), and each
    concept's mean is the same torch reduction over a contiguous (neurons, positives) block, so the result is
    bit-identical; it needs two sorts per chunk instead of one sort plus two binary searches per concept.
    """
    n = by_neuron.shape[1]
    bits = (by_neuron + np.float32(0.0)).view(np.uint32)  # + 0.0: -0.0 becomes +0.0, the same score
    # Order-preserving map of float32 to uint32: flip every bit of negatives, the sign bit of the others.
    keys = bits ^ ((bits >> np.uint32(31)) * np.uint32(0x7FFFFFFF) | np.uint32(0x80000000))
    below = _left_counts(keys)[:, positives]  # (N, T): contexts scoring below each positive
    n_at_or_above = n - below
    group = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    # Positives of one concept ranked among themselves: offset each concept's keys past the previous ones.
    within = _left_counts((group * (n + 1) + below).astype(np.uint32))
    tp_at_or_above = np.cumsum(sizes)[group] - within
    ratio = torch.from_numpy(tp_at_or_above).double() / torch.from_numpy(n_at_or_above).double()
    ends = np.cumsum(sizes)
    if len(sizes) and (sizes == sizes[0]).all():
        return ratio.view(ratio.shape[0], len(sizes), int(sizes[0])).mean(dim=2).T
    return torch.stack([ratio[:, e - s : e].contiguous().mean(dim=1) for s, e in zip(sizes, ends)])


#: Columns per CPU worker task in `average_precision_multi` (a cache-sized transpose and sort).
_CPU_SLICE = 1024


def _cpu_workers() -> int:
    """Threads for the CPU path: the cores this process may run on (``CROSSLING_AP_THREADS`` overrides)."""
    override = os.environ.get("CROSSLING_AP_THREADS", "")
    if override.strip().isdigit() and int(override) > 0:
        return int(override)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def top_k_experts(
    ap: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and AP of the top-k neurons per row of an (concepts, neurons) AP matrix.

    Ties are broken by the lower neuron index so results are deterministic.
    """
    k = min(k, ap.shape[1])
    # Stable descending sort keeps lower indices first among equal APs.
    values, idx = torch.sort(ap, dim=1, descending=True, stable=True)
    return idx[:, :k], values[:, :k]


def on_p50(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The steering value of each column: the interpolated median over the rows selected by ``mask``.

    values: (contexts, K) pooled responses of K units; mask: (contexts,) bool, the concept's contexts.
    Returns (K,) float: ``torch.quantile(q=0.5)`` (linear interpolation between the two middle values for an
    even count), as apple/ml-selfcond's ``on_p50`` (``np.percentile(q=50)`` of the responses on the concept's
    sentences): the paper's setting. Not the lower median of ``torch.median``.
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
    """Per language: the top-K rows, plus the full AP matrix (concepts x neurons) for alignment."""

    top: pl.DataFrame  # lang, concept_id, layer, unit, ap, rank, median_pos_act (= on_p50 of the responses)
    full_ap: dict[str, torch.Tensor]  # lang -> (n_concepts, N) float64 (CPU)
    concept_ids: list[str]


def score_experts(
    activations: torch.Tensor,
    langs: np.ndarray,
    concept_ids: np.ndarray,
    layer_offsets: list[int],
    *,
    top_k: int,
    chunk_neurons: int = 8192,
    device: torch.device | str = "cpu",
    progress=None,
) -> ExpertResult:
    """Score every neuron for every (language, concept); keep the top-K per pair.

    activations: (contexts, N) pooled responses of all layers' units concatenated (the run's ``[extract]
    pooling``: the same responses give the AP and the steering value); ``layer_offsets[i]`` is the first column
    of layer i (length n_layers + 1). ``median_pos_act`` of a top unit is `on_p50` of its responses on the
    concept's contexts in that language.
    """
    concepts = sorted(set(concept_ids.tolist()))
    offsets = torch.tensor(layer_offsets[:-1])
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
        medians = torch.stack([
            on_p50(scores[pos][:, idx[ci]].float(), torch.ones(len(pos), dtype=torch.bool, device=device))
            for ci, pos in enumerate(positive)
        ])
        full_ap = torch.full((len(concepts), ap.shape[1]), float("nan"), dtype=torch.float64)
        for ci, c in enumerate(present):
            full_ap[concepts.index(c)] = ap[ci].cpu()
        full[lang] = full_ap
        idx_cpu = idx.cpu().contiguous()
        layer = torch.searchsorted(offsets, idx_cpu, right=True) - 1
        unit = idx_cpu - offsets[layer]
        kk = idx.shape[1]
        frames.append(
            pl.DataFrame(
                {
                    "lang": [lang] * (len(present) * kk),
                    "concept_id": np.repeat(present, kk).tolist(),
                    "layer": layer.flatten().numpy().astype(np.int32),
                    "unit": unit.flatten().numpy().astype(np.int32),
                    "ap": vals.cpu().flatten().numpy(),
                    "rank": np.tile(np.arange(1, kk + 1, dtype=np.int32), len(present)),
                    "median_pos_act": medians.cpu().flatten().numpy().astype(np.float64),
                }
            )
        )
        if progress is not None:
            progress()
    return ExpertResult(top=pl.concat(frames), full_ap=full, concept_ids=concepts)


def neuron_summary(result: ExpertResult, layer_offsets: list[int]) -> pl.DataFrame:
    """Every neuron: mean and max AP over all (language, concept) pairs, and where the max is."""
    langs = sorted(result.full_ap)
    stacked = torch.stack([result.full_ap[lang] for lang in langs])  # (L, C, N)
    n_concepts, n_neurons = stacked.shape[1], stacked.shape[2]
    flat = stacked.reshape(-1, n_neurons)
    valid = ~torch.isnan(flat)
    mean_ap = torch.where(valid, flat, torch.zeros_like(flat)).sum(0) / valid.sum(0).clamp(min=1)
    max_ap, arg = torch.where(valid, flat, torch.full_like(flat, -1.0)).max(dim=0)
    offsets = torch.tensor(layer_offsets[:-1])
    idx = torch.arange(n_neurons)
    layer = torch.searchsorted(offsets, idx, right=True) - 1
    return pl.DataFrame(
        {
            "layer": layer.numpy().astype(np.int32),
            "unit": (idx - offsets[layer]).numpy().astype(np.int32),
            "mean_ap": mean_ap.numpy(),
            "max_ap": max_ap.numpy(),
            "best_concept_id": np.array(result.concept_ids)[(arg % n_concepts).numpy()],
            "best_lang": np.array(langs)[(arg // n_concepts).numpy()],
        }
    )
