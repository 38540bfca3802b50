"""Stage ``drilldown``: the Neuron page's drill-downs for the units a reader will open.

For the selected units (``[drilldown] max_units``: the top experts and language neurons,
``precompute.analysis.drilldown.select_units``): each one's top contexts per language with the token where it
peaks and its activation at every token, its response histograms per concept, and the output tokens its write
direction promotes (the exact logit lens, ``precompute.model.unembed``). The peaks and per-token activations need
a second forward pass over only the union of the top contexts (``precompute.extract.unit_context_activations``);
their character offsets come from re-tokenizing those texts exactly as the extraction did. Beyond the top: each
unit's firing rate and mean response per language (``dd.language_profiles``, from the extract stage's
``mlp_active``) and a few contexts per decile band of its responses and at random (``dd.sample_contexts``), with
their tokens from a second pass of their own.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from precompute.analysis import drilldown as dd
from precompute.extract import max_positions, token_offsets, unit_context_activations
from precompute.model.unembed import direct_effects
from precompute.stages.base import CheckpointContext, Stage


def _run(ctx: CheckpointContext) -> dict[str, pl.DataFrame]:
    spec, loaded, layout = ctx.cfg.drilldown, ctx.loaded, ctx.layout
    units = layout.units
    responses = ctx.need("responses")  # (contexts, units)
    top = ctx.need("neuron_ap")
    langs = ctx.langs
    chosen = dd.select_units(top, ctx.need("language_neurons"), units, max_units=spec.max_units)  # (U,) columns
    best = dd.top_contexts(responses, langs, chosen, n_top=spec.top_contexts, device=loaded.device)
    contexts_rows = _context_rows(ctx, best)
    picked = pl.DataFrame({"col": chosen})
    experts = top.with_columns(col=pl.Series(dd.global_columns(top, units))).join(picked, on="col", how="semi")
    hist = dd.response_histograms(
        responses, langs, ctx.concept_ids, experts, units, n_bins=spec.hist_bins, device=loaded.device
    )
    position_of = units.position_of(chosen)
    unit_in = units.unit_of(chosen)
    tokenizer = loaded.tokenizer
    out_rows = []
    for i, site in enumerate(layout.sites):  # one matmul per layer, over all its selected units
        mine = unit_in[position_of == i]
        if len(mine):
            effects = direct_effects(loaded.model, site, torch.from_numpy(mine.astype(np.int64)))
            out_rows.append(
                dd.output_token_rows(
                    effects,
                    site.layer,
                    mine,
                    n_tokens=spec.top_tokens,
                    vocab_size=len(tokenizer),
                    decode=lambda ids: _token_texts(tokenizer, ids),
                )
            )
    tables = {
        "unit_top_contexts": contexts_rows,
        "unit_response_hist": hist,
        "unit_language_profile": dd.language_profiles(
            responses, ctx.need("pooled").mlp_active, langs, chosen, units, device=loaded.device
        ),
        "unit_sample_contexts": _sample_rows(ctx, responses, chosen),
    }
    if out_rows:
        tables["unit_output_tokens"] = pl.concat(out_rows)
    return tables


def _context_rows(ctx: CheckpointContext, picked: pl.DataFrame) -> pl.DataFrame:
    """The ``unit_top_contexts`` columns of (unit, context) pairs (`dd.top_contexts`' or `dd.sample_contexts`'
    frame, in its order): each pair's peak token and the unit's activation at every token, from one forward pass
    over only the pairs' contexts (``unit_context_activations``), their character offsets from re-tokenizing
    those texts exactly as the extraction did."""
    loaded, layout, sentences = ctx.loaded, ctx.layout, ctx.sentences
    rows = picked["row"].to_numpy()
    contexts = ctx.prepared.contexts
    found = unit_context_activations(
        loaded, layout, contexts, rows, picked["col"].to_numpy(), batch_tokens=ctx.cfg.extract.batch_tokens
    )
    union = np.unique(rows)
    token_offs = token_offsets(
        loaded.tokenizer,
        sentences["text"].gather(union).to_list(),
        max_positions(loaded.model, ctx.cfg.extract.max_length),
    )
    in_union = np.searchsorted(union, rows)
    start, end = dd.peak_offsets(token_offs, in_union, found.positions)
    sentence_ids = sentences["sentence_id"].to_numpy()
    pair_rows = dd.top_context_rows(picked, sentence_ids, layout.units, start, end, found.values)
    real_masks = [contexts.real_masks[i] for i in union]
    token_rows = dd.context_token_rows(token_offs, real_masks, in_union, found.token_acts, found.token_counts)
    return pair_rows.hstack(token_rows)


def _sample_rows(ctx: CheckpointContext, responses: torch.Tensor, chosen: np.ndarray) -> pl.DataFrame:
    """The ``unit_sample_contexts`` rows: `dd.sample_contexts`' decile and random contexts with their peaks and
    per-token activations, from a pass of their own (the top contexts' pass stays over its contexts alone, so
    its numbers do not depend on what else is sampled)."""
    picked = dd.sample_contexts(responses, ctx.langs, chosen, device=ctx.loaded.device)
    return _context_rows(ctx, picked).insert_column(3, picked["sample"])


def _token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each token id decoded alone, its bytes kept where that decoding loses them (`dd.token_text`): decided
    here, with the tokenizer at hand, because the store's text of a token that is part of a character is a bare
    U+FFFD, from which no reader can tell which bytes it was."""
    decoded = tokenizer.batch_decode([[t] for t in ids])
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    return [dd.token_text(text, piece) for text, piece in zip(decoded, pieces)]


STAGE = Stage(
    name="drilldown",
    needs=("pooled", "responses", "neuron_ap", "language_neurons"),
    run=_run,
    enabled=lambda cfg: cfg.drilldown.enabled,
)
