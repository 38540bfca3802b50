"""Drill-downs for single units: what fires a unit, how it responds, what it writes.

Pure functions over one checkpoint's pooled responses, expert rows and weight products; the drilldown
stage (`precompute.stages.drilldown`) feeds them and runs the one extra forward pass they need (each top
context's peak token and the unit's activation at every token, `precompute.extract.unit_context_activations`),
and decodes the output tokens (`token_text`: a token that is part of a character keeps its bytes). Units are
columns of the unit axis of `precompute.extract.Pooled` ("global columns": all hooked layers' units concatenated, which
`precompute.analysis.units.UnitAxis` splits); the frames returned name them by (layer, unit) with ``layer`` the
model's block id, as every MLP table of the store has it.

Every loop here runs over languages, concepts' chunks of units or layers, never over single units: the
per-unit work is one top-k, one scatter-add or one matmul on the device.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from precompute.analysis.units import UnitAxis

#: Units per device block in `top_contexts` and `response_histograms`: bounds (contexts, block) and
#: (block, concepts x bins) tensors.
CHUNK_UNITS = 2048


def global_columns(frame: pl.DataFrame, units: UnitAxis) -> np.ndarray:
    """The unit-axis columns of a frame's (layer, unit) rows.

    Parameters
    ----------
    frame : DataFrame
        Rows with ``layer`` (block id) and ``unit``.
    units : UnitAxis

    Returns
    -------
    ndarray of int64, (rows,)
    """
    return units.columns(frame["layer"].to_numpy(), frame["unit"].to_numpy())


def select_units(top: pl.DataFrame, language_neurons: pl.DataFrame, units: UnitAxis, *, max_units: int) -> np.ndarray:
    """The units that get drill-downs: every top-K expert of any (concept, lang) and every LAPE unit.

    With ``max_units`` > 0 at most that many, by best (lowest) expert rank, then highest AP; a LAPE unit counts as
    rank 1 (it is selected by its own criterion, not by AP).

    Parameters
    ----------
    top : DataFrame
        ``neuron_ap`` rows (layer, unit, ap, rank).
    language_neurons : DataFrame
        ``language_neurons`` rows (layer, unit, ...).
    units : UnitAxis
        The unit axis both frames' units lie on.
    max_units : int
        ``[drilldown] max_units``; 0: no cap.

    Returns
    -------
    ndarray of int64, (selected,)
        Global columns, sorted.
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
    ranked = (
        pl.concat(parts)
        .group_by("layer", "unit")
        .agg(pl.col("rank").min(), pl.col("ap").max())
        .sort(["rank", "ap", "layer", "unit"], descending=[False, True, False, False], nulls_last=True)
    )
    if max_units > 0:
        ranked = ranked.head(max_units)
    return np.sort(global_columns(ranked, units))


def _lang_rows(langs: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [(str(lang), np.flatnonzero(langs == lang)) for lang in sorted(set(langs.tolist()))]


def _block(activations: torch.Tensor, rows: np.ndarray, cols: np.ndarray, device: torch.device) -> torch.Tensor:
    """(rows, cols) float32 on ``device``: the rows' responses of the units (gathered on the host)."""
    picked = activations.index_select(0, torch.from_numpy(rows)).index_select(1, torch.from_numpy(cols))
    return picked.to(device=device, dtype=torch.float32)


def top_contexts(
    activations: torch.Tensor, langs: np.ndarray, columns: np.ndarray, *, n_top: int, device: torch.device
) -> pl.DataFrame:
    """Per (unit, lang): the ``n_top`` contexts with the highest pooled response, rank 1 the highest.

    One top-k along the context axis of a (contexts of the language, units) block per language; ties keep
    torch's order.

    Parameters
    ----------
    activations : Tensor of float, (contexts, units)
        Pooled responses.
    langs : ndarray of str, (contexts,)
    columns : ndarray of int, (selected,)
        Global columns of the units (`select_units`).
    n_top : int
        Contexts per (unit, language) (``[drilldown] top_contexts``); fewer where a language has fewer.
    device : torch.device
        Where the top-k runs.

    Returns
    -------
    DataFrame
        (lang, col, rank, row, response): ``col`` the global column, ``row`` the index into the contexts;
        sorted by col, lang, rank.
    """
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("lang", "col", "rank", "row", "response")}
    columns = np.asarray(columns, dtype=np.int64)
    for lang, rows in _lang_rows(langs):
        k = min(n_top, len(rows))
        for start in range(0, len(columns), CHUNK_UNITS):
            cols = columns[start : start + CHUNK_UNITS]
            values, where = _block(activations, rows, cols, device).topk(k, dim=0)  # (k, block)
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

    Vectorised through one flat (sum of tokens, 2) array.

    Parameters
    ----------
    offsets : sequence of ndarray of int, each (tokens, 2)
        Per context, its tokens' character offsets (`precompute.extract.token_offsets`).
    context_index : ndarray of int, (peaks,)
        The context of each peak, an index into ``offsets``.
    positions : ndarray of int, (peaks,)
        The token position of each peak in its context.

    Returns
    -------
    start, end : ndarray of int32, (peaks,)
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
    units: UnitAxis,
    peak_start: np.ndarray,
    peak_end: np.ndarray,
    peak_act: np.ndarray,
) -> pl.DataFrame:
    """The ``unit_top_contexts`` rows of `top_contexts`' frame (in its order) and the peaks found for it.

    Parameters
    ----------
    top : DataFrame
        `top_contexts`' frame (lang, col, rank, row, response), ``top_rows`` rows.
    sentence_ids : ndarray of int, (contexts,)
        The sentence id of each context ``row`` indexes.
    units : UnitAxis
        The axis ``col`` lies on.
    peak_start, peak_end : ndarray of int, (top_rows,)
        Character offsets of each row's peak token (`peak_offsets`).
    peak_act : ndarray of float, (top_rows,)
        The unit's activation at that token.

    Returns
    -------
    DataFrame
        (layer, unit, lang, rank, sentence_id, response, peak_start, peak_end, peak_act), ``layer`` the block id.
    """
    cols = top["col"].to_numpy()
    return pl.DataFrame(
        {
            "layer": units.layer_of(cols),
            "unit": units.unit_of(cols),
            "lang": top["lang"],
            "rank": top["rank"],
            "sentence_id": sentence_ids[top["row"].to_numpy()].astype(np.int64),
            "response": top["response"],
            "peak_start": peak_start.astype(np.int32),
            "peak_end": peak_end.astype(np.int32),
            "peak_act": peak_act.astype(np.float64),
        }
    )


def ragged_take(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``values[starts[0] : starts[0] + counts[0]]``, then the same for every i, concatenated: one gather.

    values: (n, ...) flat ragged data; starts, counts: (m,) where each piece begins in ``values`` and its length.
    Returns (sum of counts, ...).
    """
    counts = np.asarray(counts, dtype=np.int64)
    out_starts = np.cumsum(counts) - counts
    index = np.repeat(np.asarray(starts, dtype=np.int64) - out_starts, counts) + np.arange(int(counts.sum()))
    return values[index]


def context_token_rows(
    offsets: Sequence[np.ndarray],
    real_masks: Sequence[np.ndarray],
    context_index: np.ndarray,
    token_acts: np.ndarray,
    token_counts: np.ndarray,
) -> pl.DataFrame:
    """Each top context's real tokens: their character offsets and the unit's activation at each, as list columns.

    The ``unit_top_contexts`` columns ``token_start``, ``token_end`` and ``token_act`` of `top_contexts`' rows (in
    their order), so that the Neuron page colours every token of a context and not only its peak. Specials (the
    tokenizer's start or end tokens: no text of the context, never pooled) are left out, as pooling leaves them
    out, so a row's largest ``token_act`` is the unit's max-pooled response to the context. Gathers on flat
    arrays, no loop over rows.

    Parameters
    ----------
    offsets : sequence of ndarray of int, each (tokens, 2)
        Per context, its tokens' character offsets (`precompute.extract.token_offsets`).
    real_masks : sequence of ndarray of bool, each (tokens,)
        Per context, True on its real tokens (``TokenizedContexts.real_masks``, in the order of ``offsets``).
    context_index : ndarray of int, (top_rows,)
        The context of each row, an index into ``offsets`` and ``real_masks``.
    token_acts : ndarray of float, (sum of token_counts,)
        The unit's activation at every token of each row's context, row after row
        (`precompute.extract.UnitContextActivations`).
    token_counts : ndarray of int, (top_rows,)
        How many of ``token_acts`` each row has: its context's tokens.

    Returns
    -------
    DataFrame
        (token_start, token_end, token_act), one row per input row: lists (real tokens of the context,) of
        int32, int32 and float32.
    """
    context_index = np.asarray(context_index, dtype=np.int64)
    token_counts = np.asarray(token_counts, dtype=np.int64)
    lengths = np.array([len(o) for o in offsets], dtype=np.int64)  # (contexts,)
    if len(token_counts) != len(context_index) or int(token_counts.sum()) != len(token_acts):
        raise ValueError(f"{len(context_index)} rows, {len(token_counts)} counts and {len(token_acts)} activations")
    if len(context_index) and not np.array_equal(lengths[context_index], token_counts):
        raise ValueError(
            "token counts differ from the offsets' (the offsets must come from the tokenization the pass ran on)"
        )
    if any(len(m) != n for m, n in zip(real_masks, lengths)):
        raise ValueError("a real-token mask differs in length from its context's offsets")
    starts = np.cumsum(lengths) - lengths  # (contexts,) where each context begins in the flat arrays
    flat_offsets = np.concatenate([np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in offsets] or [np.zeros((0, 2))])
    flat_real = np.concatenate([np.asarray(m, dtype=bool) for m in real_masks] or [np.zeros(0, dtype=bool)])
    row_offsets = ragged_take(flat_offsets, starts[context_index], token_counts)  # (row tokens, 2)
    keep = ragged_take(flat_real, starts[context_index], token_counts)  # (row tokens,)
    rows_of = np.repeat(np.arange(len(context_index)), token_counts)
    kept = np.bincount(rows_of[keep], minlength=len(context_index))  # (top_rows,) real tokens per row
    list_offsets = pa.array(np.concatenate([[0], np.cumsum(kept)]).astype(np.int32))

    def listed(values: np.ndarray, arrow_type: pa.DataType) -> pl.Series:
        return pl.from_arrow(pa.ListArray.from_arrays(list_offsets, pa.array(values, type=arrow_type)))

    return pl.DataFrame(
        [
            listed(row_offsets[keep, 0].astype(np.int32), pa.int32()).alias("token_start"),
            listed(row_offsets[keep, 1].astype(np.int32), pa.int32()).alias("token_end"),
            listed(np.asarray(token_acts, dtype=np.float32)[keep], pa.float32()).alias("token_act"),
        ]
    )


def _byte_level_table() -> dict[str, int]:
    """GPT-2's ``bytes_to_unicode`` inverted: the printable character byte-level BPE writes each byte as (the
    printable Latin-1 bytes as themselves, the others as U+0100 on, in byte order) -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}


#: Byte-level BPE's characters (GPT-2, BLOOM and ``tokenizers``' ByteLevel pre-tokenizer) -> the byte each is.
_BYTE_LEVEL_CHARS = _byte_level_table()


_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def piece_bytes(piece: str | None) -> bytes | None:
    """The bytes a tokenizer's vocabulary entry stands for, where its spelling says: a SentencePiece byte-fallback
    piece (``<0xE0>``) or a byte-level BPE piece (every character one of GPT-2's byte characters, ``Ġ`` a
    space); None for any other spelling (a SentencePiece word piece, a special token).

    Parameters
    ----------
    piece : str or None
        The vocabulary entry (``tokenizer.convert_ids_to_tokens(id)``).

    Returns
    -------
    bytes or None
    """
    if not piece:
        return None
    fallback = _BYTE_FALLBACK.fullmatch(piece)
    if fallback:
        return bytes([int(fallback.group(1), 16)])
    if all(c in _BYTE_LEVEL_CHARS for c in piece):
        return bytes(_BYTE_LEVEL_CHARS[c] for c in piece)
    return None


def bytes_text(raw: bytes) -> str:
    """``raw`` as text, every byte that is not part of a whole UTF-8 character written ``<0xNN>`` (as
    TransformerLens and Neuronpedia show them), the whole characters as themselves."""
    text = raw.decode("utf-8", errors="surrogateescape")
    return "".join(f"<0x{ord(c) - 0xDC00:02X}>" if "\udc80" <= c <= "\udcff" else c for c in text)


def token_text(decoded: str, piece: str | None) -> str:
    """The text stored for one output token: its decoding, or its bytes where the decoding lost them.

    A byte-level token that is part of a character (a Chinese character is three bytes, often two tokens)
    decodes alone to U+FFFD, the same for every such token; its bytes say which it is. So where ``decoded`` holds
    U+FFFD and the piece's bytes are known and are not whole UTF-8 characters, the token is its `bytes_text`
    (``<0xE4><0xB8>``, a whole character in it kept); otherwise (a token that is a U+FFFD, or a tokenizer whose
    pieces do not spell their bytes) its decoding, unchanged.

    Parameters
    ----------
    decoded : str
        The token decoded alone (``tokenizer.decode([id])``).
    piece : str or None
        Its vocabulary entry (``tokenizer.convert_ids_to_tokens(id)``).

    Returns
    -------
    str
    """
    if "\ufffd" not in decoded:
        return decoded
    raw = piece_bytes(piece)
    if raw is None:
        return decoded
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return bytes_text(raw)
    return decoded


def response_histograms(
    activations: torch.Tensor,
    langs: np.ndarray,
    concept_ids: np.ndarray,
    experts: pl.DataFrame,
    units: UnitAxis,
    *,
    n_bins: int,
    device: torch.device,
) -> pl.DataFrame:
    """Per expert row: histograms of the unit's pooled response on the concept's contexts and on the language's
    other contexts, over shared equal-width bins.

    The bins of a (unit, lang) span its responses on all the language's contexts, lo to hi (the same for every
    concept, so two concepts' histograms compare too). Per language and block of units, one scatter-add of
    (contexts, units) bin keys (concept x bins + bin) gives every concept's counts at once: (units, concepts x
    bins); "other" is the language's total minus the concept's.

    Parameters
    ----------
    activations : Tensor of float, (contexts, units)
        Pooled responses.
    langs : ndarray of str, (contexts,)
    concept_ids : ndarray of str, (contexts,)
    experts : DataFrame
        ``neuron_ap`` rows (lang, concept_id, layer, unit) to draw.
    units : UnitAxis
        The unit axis of ``activations``' columns.
    n_bins : int
        Bins per histogram (``[drilldown] hist_bins``).
    device : torch.device
        Where the counts run.

    Returns
    -------
    DataFrame
        ``unit_response_hist`` rows (layer, unit, concept_id, lang, lo, hi, concept_counts, other_counts), the
        two count lists (bins,) each; per language in sorted order, experts in their order.
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
        e_cols = global_columns(mine, units)
        e_con = np.searchsorted(names, mine["concept_id"].to_numpy().astype(str))
        drawn = np.unique(e_cols)
        key_c = torch.from_numpy(c_index.astype(np.int64)).to(device)[:, None] * n_bins  # (language contexts, 1)
        lo_all, hi_all, counts_all = [], [], []
        for start in range(0, len(drawn), CHUNK_UNITS):
            cols = drawn[start : start + CHUNK_UNITS]
            acts = _block(activations, rows, cols, device)  # (language contexts, block)
            lo, hi = acts.min(dim=0).values, acts.max(dim=0).values
            width = (hi - lo).clamp(min=1e-12)
            bins = ((acts - lo) / width * n_bins).floor().clamp(0, n_bins - 1).long()  # (language contexts, block)
            counts = torch.zeros((len(cols), n_con * n_bins), device=device)
            counts.scatter_add_(1, (key_c + bins).T, torch.ones_like(bins.T, dtype=torch.float32))
            lo_all.append(lo.cpu())
            hi_all.append(hi.cpu())
            counts_all.append(counts.view(len(cols), n_con, n_bins).cpu())
        # (drawn,), (drawn,), (drawn, concepts, bins)
        lo, hi, counts = torch.cat(lo_all), torch.cat(hi_all), torch.cat(counts_all)
        u_index = torch.from_numpy(np.searchsorted(drawn, e_cols))
        concept = counts[u_index, torch.from_numpy(e_con)]  # (experts, bins)
        other = counts.sum(dim=1)[u_index] - concept
        frames.append(
            pl.DataFrame(
                {
                    "layer": units.layer_of(e_cols),
                    "unit": units.unit_of(e_cols),
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
    *,
    n_tokens: int,
    vocab_size: int,
    decode: Callable[[list[int]], list[str]],
) -> pl.DataFrame:
    """The top ``n_tokens`` promoted and suppressed tokens of each unit of one layer from its direct effects.

    Parameters
    ----------
    effects : Tensor of float, (vocab, selected)
        Logit change per unit of activation (`precompute.model.unembed.direct_effects`) of each unit.
    layer : int
        The units' block id, written as ``layer``.
    units : ndarray of int, (selected,)
        The units' indices inside that block's MLP.
    n_tokens : int
        Tokens per unit and direction (``[drilldown] top_tokens``).
    vocab_size : int
        The tokenizer's vocabulary: only ids below it count (an LM head padded beyond it has rows no text decodes
        to).
    decode : callable
        Turns a list of token ids into their strings (the tokenizer's, one id each).

    Returns
    -------
    DataFrame
        ``unit_output_tokens`` rows (layer, unit, direction, rank, token_id, token, logit), promoted then
        suppressed, unit-major.
    """
    effects = effects[:vocab_size]
    k = min(n_tokens, effects.shape[0])
    parts = []
    for direction, sign in (("promoted", 1.0), ("suppressed", -1.0)):
        values, ids = (effects * sign).topk(k, dim=0)  # (k, selected)
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


#: Contexts drawn per (unit, language) from each activation decile band, and at random from all the language's
#: contexts (`sample_contexts`); the seed makes the draw reproducible. 12 rows per (unit, language), 1.2 times
#: the top contexts' 10: at the demo's shape (about 2,040 units at each of 8 checkpoints, 12 languages of 1,080
#: contexts) 2.35 million ``unit_sample_contexts`` rows and 196,000 ``unit_language_profile`` rows.
DECILE_SAMPLES = 1
RANDOM_SAMPLES = 2
SAMPLE_SEED = 0
#: The decile bands, lowest first: ``decile_1`` holds the language's lowest tenth of responses.
DECILES = 10


def language_profiles(
    activations: torch.Tensor,
    active: torch.Tensor,
    langs: np.ndarray,
    columns: np.ndarray,
    units: UnitAxis,
    *,
    device: torch.device,
) -> pl.DataFrame:
    """Per selected unit and language: how often the unit fires on the language's contexts and how strongly.

    ``firing_rate`` is the extract stage's ``mlp_active`` (per context the fraction of its real tokens on which
    the unit is active: the down projection's input above 0, for a gated MLP the gate's) averaged over the
    language's contexts, each context counted once (LAPE weights contexts by their tokens: its probability can
    differ where lengths differ). ``context_rate`` is the
    share of the language's contexts on which it is active on at least one token (near 1 for most units of a
    GELU model: a weak signal, kept for units that are silent on whole languages); ``mean_response`` the mean
    pooled response. One reduction along the context axis of a (contexts of the language, block of units)
    block per language, no loop over units.

    Parameters
    ----------
    activations : Tensor of float, (contexts, units)
        Pooled responses.
    active : Tensor of float, (contexts, units)
        ``Pooled.mlp_active``.
    langs : ndarray of str, (contexts,)
    columns : ndarray of int, (selected,)
        Global columns of the units (`select_units`).
    units : UnitAxis
    device : torch.device

    Returns
    -------
    DataFrame
        ``unit_language_profile`` rows (layer, unit, lang, n_contexts, firing_rate, context_rate,
        mean_response), per language in sorted order, units in column order.
    """
    schema = {
        "layer": pl.Int32,
        "unit": pl.Int32,
        "lang": pl.Utf8,
        "n_contexts": pl.Int32,
        "firing_rate": pl.Float64,
        "context_rate": pl.Float64,
        "mean_response": pl.Float64,
    }
    columns = np.asarray(columns, dtype=np.int64)
    frames = []
    for lang, rows in _lang_rows(langs):
        rates, any_rates, means = [], [], []
        for start in range(0, len(columns), CHUNK_UNITS):
            cols = columns[start : start + CHUNK_UNITS]
            fired = _block(active, rows, cols, device)  # (language contexts, block)
            rates.append(fired.to(torch.float64).mean(dim=0).cpu())
            any_rates.append((fired > 0).to(torch.float64).mean(dim=0).cpu())
            means.append(_block(activations, rows, cols, device).to(torch.float64).mean(dim=0).cpu())
        if not len(columns):
            continue
        frames.append(
            pl.DataFrame(
                {
                    "layer": units.layer_of(columns),
                    "unit": units.unit_of(columns),
                    "lang": [lang] * len(columns),
                    "n_contexts": np.full(len(columns), len(rows)),
                    "firing_rate": torch.cat(rates).numpy(),
                    "context_rate": torch.cat(any_rates).numpy(),
                    "mean_response": torch.cat(means).numpy(),
                }
            ).cast(schema)
        )
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def sample_contexts(
    activations: torch.Tensor,
    langs: np.ndarray,
    columns: np.ndarray,
    *,
    per_decile: int = DECILE_SAMPLES,
    n_random: int = RANDOM_SAMPLES,
    seed: int = SAMPLE_SEED,
    device: torch.device,
) -> pl.DataFrame:
    """Per (unit, language): contexts beyond the top, ``per_decile`` from each decile band of the unit's
    responses on the language's contexts and ``n_random`` drawn from all of them, each without replacement.

    Decile band d (1 the lowest) holds the contexts of ascending response rank ``[n (d-1) / 10, n d / 10)``
    (ties keep torch's sort order), so its responses lie between the band's edges. The draw uses random keys from
    one CPU generator seeded with ``seed`` (the same rows for the same inputs, on any device, and the global
    random state untouched): per band, the contexts with the ``per_decile`` smallest keys. One sort and one
    top-k per (language, block of units), no loop over units.

    Parameters
    ----------
    activations : Tensor of float, (contexts, units)
        Pooled responses.
    langs : ndarray of str, (contexts,)
    columns : ndarray of int, (selected,)
        Global columns of the units (`select_units`).
    per_decile, n_random : int
        Contexts per band and at random; fewer where a band or the language has fewer.
    seed : int
    device : torch.device

    Returns
    -------
    DataFrame
        (lang, col, sample, rank, row, response): ``sample`` 'decile_1' ... 'decile_10' or 'random', ``rank``
        1 ... within it (by descending response), ``row`` the index into the contexts; sorted by col, lang,
        sample, rank.
    """
    schema = {
        "lang": pl.Utf8,
        "col": pl.Int64,
        "sample": pl.Utf8,
        "rank": pl.Int32,
        "row": pl.Int64,
        "response": pl.Float64,
    }
    generator = torch.Generator(device="cpu").manual_seed(seed)
    columns = np.asarray(columns, dtype=np.int64)
    parts: list[pl.DataFrame] = []
    for lang, rows in _lang_rows(langs):
        n = len(rows)
        bands = [(f"decile_{d}", (n * (d - 1)) // DECILES, (n * d) // DECILES) for d in range(1, DECILES + 1)]
        for start in range(0, len(columns), CHUNK_UNITS):
            cols = columns[start : start + CHUNK_UNITS]
            acts = _block(activations, rows, cols, device)  # (language contexts, block)
            order = acts.argsort(dim=0, stable=True)  # (language contexts, block) ascending
            keys = torch.rand((n, len(cols)), generator=generator).to(device)  # (language contexts, block)
            for name, lo, hi in [*bands, ("random", 0, n)]:
                k = min(per_decile if name != "random" else n_random, hi - lo)
                if k <= 0:
                    continue
                picked = keys[lo:hi].topk(k, dim=0, largest=False).indices + lo  # (k, block) positions in the order
                where = order[picked, torch.arange(len(cols), device=device)] if name != "random" else picked
                values = acts.gather(0, where)  # (k, block)
                values, by = values.sort(dim=0, descending=True, stable=True)
                where = where.gather(0, by)
                parts.append(
                    pl.DataFrame(
                        {
                            "lang": [lang] * (k * len(cols)),
                            "col": np.tile(cols, k),
                            "sample": [name] * (k * len(cols)),
                            "rank": np.repeat(np.arange(1, k + 1, dtype=np.int32), len(cols)),
                            "row": rows[where.cpu().numpy().reshape(-1)],
                            "response": values.cpu().numpy().reshape(-1).astype(np.float64),
                        },
                        schema=schema,
                    )
                )
    if not parts:
        return pl.DataFrame(schema=schema)
    band_order = {f"decile_{d}": d for d in range(1, DECILES + 1)} | {"random": DECILES + 1}
    return (
        pl.concat(parts)
        .with_columns(pl.col("sample").replace_strict(band_order, return_dtype=pl.Int32).alias("_band"))
        .sort(["col", "lang", "_band", "rank"])
        .drop("_band")
    )
