"""Drill-downs for single units (issue 14): what fires a unit, how it responds, what it writes.

Pure functions over one checkpoint's pooled responses, expert rows and weight products; the pipeline
(`precompute.pipeline.drilldown_stage`) feeds them and runs the one extra forward pass they need (the peak
token of each top context, `precompute.extract.unit_peaks`). Units are columns of the neuron axis of
`precompute.extract.Pooled` ("global columns": all hooked layers' units concatenated, ``layer_offsets``
split them); the frames returned name them by (layer, unit) with ``layer`` the hooked layer's position, as
every MLP table has it before the pipeline maps positions to the model's block ids.

Every loop here runs over languages, concepts' chunks of units or layers, never over single units: the
per-unit work is one top-k, one scatter-add or one matmul on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import torch

#: Units per device block in `top_contexts` and `response_histograms`: bounds (contexts, block) and
#: (block, concepts x bins) tensors.
CHUNK_UNITS = 2048


def _split(cols: np.ndarray, layer_offsets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(layer position, unit within layer) of global columns."""
    offsets = np.asarray(layer_offsets, dtype=np.int64)
    layer = np.searchsorted(offsets, cols, side="right") - 1
    return layer.astype(np.int32), (cols - offsets[layer]).astype(np.int32)


def global_columns(frame: pl.DataFrame, layer_offsets: Sequence[int]) -> np.ndarray:
    """(rows,) global columns of a frame's (layer position, unit) rows."""
    offsets = np.asarray(layer_offsets, dtype=np.int64)
    return offsets[frame["layer"].to_numpy().astype(np.int64)] + frame["unit"].to_numpy().astype(np.int64)


def select_units(
    top: pl.DataFrame, language_neurons: pl.DataFrame, layer_offsets: Sequence[int], max_units: int = 0
) -> np.ndarray:
    """The units that get drill-downs: every top-K expert of any (concept, lang) and every LAPE unit.

    top: neuron_ap rows (layer position, unit, ap, rank); language_neurons: LAPE rows (layer, unit). With
    ``max_units`` > 0 at most that many, by best (lowest) expert rank, then highest AP; a LAPE unit counts as
    rank 1 (it is selected by its own criterion, not by AP). Returns sorted (U,) int64 global columns.
    """
    keyed = pl.DataFrame(schema={"layer": pl.Int64, "unit": pl.Int64, "rank": pl.Int64, "ap": pl.Float64})
    parts = [keyed]
    if top.height:
        parts.append(
            top.select(
                pl.col("layer").cast(pl.Int64),
                pl.col("unit").cast(pl.Int64),
                pl.col("rank").cast(pl.Int64),
                pl.col("ap").cast(pl.Float64),
            )
        )
    if language_neurons.height:
        parts.append(
            language_neurons.select(
                pl.col("layer").cast(pl.Int64),
                pl.col("unit").cast(pl.Int64),
                pl.lit(1, pl.Int64).alias("rank"),
                pl.lit(None, pl.Float64).alias("ap"),
            )
        )
    units = (
        pl.concat(parts)
        .group_by("layer", "unit")
        .agg(pl.col("rank").min(), pl.col("ap").max())
        .sort(["rank", "ap", "layer", "unit"], descending=[False, True, False, False], nulls_last=True)
    )
    if max_units > 0:
        units = units.head(max_units)
    return np.sort(global_columns(units, layer_offsets))


def _lang_rows(langs: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [(str(lang), np.flatnonzero(langs == lang)) for lang in sorted(set(langs.tolist()))]


def _block(activations: torch.Tensor, rows: np.ndarray, cols: np.ndarray, device: torch.device) -> torch.Tensor:
    """(len(rows), len(cols)) float32 on ``device``: the rows' responses of the units (gathered on the host)."""
    picked = activations.index_select(0, torch.from_numpy(rows)).index_select(1, torch.from_numpy(cols))
    return picked.to(device=device, dtype=torch.float32)


def top_contexts(
    activations: torch.Tensor, langs: np.ndarray, units: np.ndarray, n_top: int, device: torch.device
) -> pl.DataFrame:
    """Per (unit, lang): the ``n_top`` contexts with the highest pooled response, rank 1 the highest.

    activations: (contexts, neurons) pooled responses; langs: (contexts,); units: (U,) global columns.
    Returns lang, col (global column), rank, row (index into the contexts), response. One top-k along the
    context axis of a (contexts of the language, units) block per language; ties keep torch's order.
    """
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("lang", "col", "rank", "row", "response")}
    units = np.asarray(units, dtype=np.int64)
    for lang, rows in _lang_rows(langs):
        k = min(n_top, len(rows))
        for start in range(0, len(units), CHUNK_UNITS):
            cols = units[start : start + CHUNK_UNITS]
            values, where = _block(activations, rows, cols, device).topk(k, dim=0)  # (k, u)
            out["lang"].append(np.full(k * len(cols), lang, dtype=object))
            out["col"].append(np.tile(cols, k))
            out["rank"].append(np.repeat(np.arange(1, k + 1, dtype=np.int32), len(cols)))
            out["row"].append(rows[where.cpu().numpy().reshape(-1)])
            out["response"].append(values.cpu().numpy().reshape(-1).astype(np.float64))
    if not out["lang"]:
        return pl.DataFrame(
            schema={"lang": pl.Utf8, "col": pl.Int64, "rank": pl.Int32, "row": pl.Int64, "response": pl.Float64}
        )
    return pl.DataFrame(
        {k: np.concatenate(v) for k, v in out.items()},
        schema={"lang": pl.Utf8, "col": pl.Int64, "rank": pl.Int32, "row": pl.Int64, "response": pl.Float64},
    ).sort(["col", "lang", "rank"])


def peak_offsets(
    offsets: Sequence[np.ndarray], context_index: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Character offsets (start, end) of the token at ``positions[i]`` of context ``context_index[i]``.

    offsets: per context, (T, 2) token offsets (`precompute.extract.token_offsets`). Vectorised through one
    flat (sum T, 2) array.
    """
    if len(positions) == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
    flat = np.concatenate(offsets)
    base = np.concatenate([[0], np.cumsum([len(o) for o in offsets])[:-1]]).astype(np.int64)
    picked = flat[base[context_index] + positions]
    return picked[:, 0].astype(np.int32), picked[:, 1].astype(np.int32)


def top_context_rows(
    top: pl.DataFrame,
    sentence_ids: np.ndarray,
    layer_offsets: Sequence[int],
    peak_start: np.ndarray,
    peak_end: np.ndarray,
    peak_act: np.ndarray,
) -> pl.DataFrame:
    """The unit_top_contexts rows of `top_contexts`' frame (in its order) and the peaks found for it."""
    layer, unit = _split(top["col"].to_numpy(), layer_offsets)
    return pl.DataFrame(
        {
            "layer": layer,
            "unit": unit,
            "lang": top["lang"],
            "rank": top["rank"],
            "sentence_id": sentence_ids[top["row"].to_numpy()].astype(np.int64),
            "response": top["response"],
            "peak_start": peak_start.astype(np.int32),
            "peak_end": peak_end.astype(np.int32),
            "peak_act": peak_act.astype(np.float64),
        }
    )


def response_histograms(
    activations: torch.Tensor,
    langs: np.ndarray,
    concept_ids: np.ndarray,
    experts: pl.DataFrame,
    layer_offsets: Sequence[int],
    n_bins: int,
    device: torch.device,
) -> pl.DataFrame:
    """Per expert row (lang, concept_id, layer position, unit): histograms of the unit's pooled response on
    the concept's contexts and on the language's other contexts, over shared equal-width bins.

    The bins of a (unit, lang) span its responses on all the language's contexts, lo to hi (the same for
    every concept, so two concepts' histograms compare too). Per language and block of units, one
    scatter-add of (contexts, units) bin keys (concept x bins + bin) gives every concept's counts at once:
    (units, concepts x bins); "other" is the language's total minus the concept's.
    """
    schema = {
        "layer": pl.Int32,
        "unit": pl.Int32,
        "concept_id": pl.Utf8,
        "lang": pl.Utf8,
        "lo": pl.Float64,
        "hi": pl.Float64,
        "concept_counts": pl.List(pl.Int32),
        "other_counts": pl.List(pl.Int32),
    }
    frames = []
    for lang, rows in _lang_rows(langs):
        mine = experts.filter(pl.col("lang") == lang)
        if mine.height == 0:
            continue
        names, c_index = np.unique(concept_ids[rows], return_inverse=True)
        n_con = len(names)
        e_cols = global_columns(mine, layer_offsets)
        e_con = np.searchsorted(names, mine["concept_id"].to_numpy().astype(str))
        units = np.unique(e_cols)
        key_c = torch.from_numpy(c_index.astype(np.int64)).to(device)[:, None] * n_bins  # (n_l, 1)
        lo_all, hi_all, counts_all = [], [], []
        for start in range(0, len(units), CHUNK_UNITS):
            cols = units[start : start + CHUNK_UNITS]
            acts = _block(activations, rows, cols, device)  # (n_l, u)
            lo, hi = acts.min(dim=0).values, acts.max(dim=0).values
            width = (hi - lo).clamp(min=1e-12)
            bins = ((acts - lo) / width * n_bins).floor().clamp(0, n_bins - 1).long()  # (n_l, u)
            counts = torch.zeros((len(cols), n_con * n_bins), device=device)
            counts.scatter_add_(1, (key_c + bins).T, torch.ones_like(bins.T, dtype=torch.float32))
            lo_all.append(lo.cpu())
            hi_all.append(hi.cpu())
            counts_all.append(counts.view(len(cols), n_con, n_bins).cpu())
        lo, hi, counts = torch.cat(lo_all), torch.cat(hi_all), torch.cat(counts_all)  # (U,), (U,), (U, C, B)
        u_index = torch.from_numpy(np.searchsorted(units, e_cols))
        concept = counts[u_index, torch.from_numpy(e_con)]  # (E, B)
        other = counts.sum(dim=1)[u_index] - concept
        layer, unit = _split(e_cols, layer_offsets)
        frames.append(
            pl.DataFrame(
                {
                    "layer": layer,
                    "unit": unit,
                    "concept_id": mine["concept_id"],
                    "lang": [lang] * mine.height,
                    "lo": lo[u_index].double().numpy(),
                    "hi": hi[u_index].double().numpy(),
                    "concept_counts": concept.round().int().numpy(),
                    "other_counts": other.round().int().numpy(),
                }
            ).cast(schema)
        )
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def output_token_rows(
    effects: torch.Tensor,
    layer: int,
    units: np.ndarray,
    n_tokens: int,
    vocab_size: int,
    decode: Callable[[list[int]], list[str]],
) -> pl.DataFrame:
    """The top ``n_tokens`` promoted and suppressed tokens of each unit from its direct effects.

    effects: (vocab, U) logit change per unit of activation (`precompute.model.unembed.direct_effects`) of
    ``units`` (unit indices within hooked layer position ``layer``); only ids below ``vocab_size`` (the
    tokenizer's: an LM head padded beyond it has rows no text decodes to) count. ``decode`` turns ids into
    strings (the tokenizer's, one id each). Returns layer, unit, direction, rank, token_id, token, logit.
    """
    effects = effects[:vocab_size]
    k = min(n_tokens, effects.shape[0])
    parts = []
    for direction, sign in (("promoted", 1.0), ("suppressed", -1.0)):
        values, ids = (effects * sign).topk(k, dim=0)  # (k, U)
        parts.append((direction, (values * sign).cpu().numpy(), ids.cpu().numpy()))
    frames = []
    for direction, values, ids in parts:
        flat_ids = ids.T.reshape(-1)  # unit-major
        unique, inverse = np.unique(flat_ids, return_inverse=True)
        tokens = np.asarray(decode(unique.tolist()), dtype=object)[inverse]
        frames.append(
            pl.DataFrame(
                {
                    "layer": np.full(flat_ids.size, layer, dtype=np.int32),
                    "unit": np.repeat(np.asarray(units, dtype=np.int32), k),
                    "direction": [direction] * flat_ids.size,
                    "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(units)),
                    "token_id": flat_ids.astype(np.int32),
                    "token": tokens.astype(str) if flat_ids.size else np.zeros(0, dtype=str),
                    "logit": values.T.reshape(-1).astype(np.float64),
                },
                schema={
                    "layer": pl.Int32,
                    "unit": pl.Int32,
                    "direction": pl.Utf8,
                    "rank": pl.Int32,
                    "token_id": pl.Int32,
                    "token": pl.Utf8,
                    "logit": pl.Float64,
                },
            )
        )
    return pl.concat(frames)
