"""Stage ``chance``: the chance level of every number the expert and alignment stages report.

``chance_ap``: a random scorer's expected AP and the permutation test of the best unit's AP per (concept,
language), corrected over the checkpoint's cells; ``overlap_chance``: exact random-set overlap, Spearman and
shared-expert chance for K of the N units, with the overlap thresholds corrected over the (concept, language pair)
cells; ``headline_ci``: bootstrap intervals over concepts of the overlap and sharing headlines.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from precompute.analysis.chance import chance_ap_table, headline_intervals, overlap_chance
from precompute.stages.base import CheckpointContext, Stage


def _run(ctx: CheckpointContext) -> dict[str, pl.DataFrame]:
    spec = ctx.cfg.experts
    responses = ctx.need("responses")  # (contexts, units)
    experts, overlap, shared = ctx.need("experts"), ctx.need("expert_overlap"), ctx.need("shared_experts")
    n_units = int(responses.shape[1])
    pairs = overlap.filter(pl.col("lang_a") != pl.col("lang_b"))
    chance = overlap_chance(
        n_units,
        len(experts.full_ap),
        k=spec.overlap_top,
        expert_k=spec.top_k,
        min_langs=spec.min_langs,
        quantile=spec.permutation_quantile,
        correction=spec.correction,
        intersections=np.rint(pairs["over_k"].to_numpy() * min(spec.overlap_top, n_units)).astype(np.int64),
    )
    return {
        "chance_ap": chance_ap_table(
            responses,
            ctx.langs,
            ctx.concept_ids,
            experts.top,
            n_shuffles=spec.permutations,
            quantile=spec.permutation_quantile,
            correction=spec.correction,
            chunk_neurons=spec.chunk_neurons,
            device=ctx.device,
        ),
        "overlap_chance": chance,
        "headline_ci": headline_intervals(
            overlap, shared, chance, experts.concept_ids, n_resamples=ctx.cfg.analysis.bootstrap
        ),
    }


STAGE = Stage(name="chance", needs=("responses", "experts", "expert_overlap", "shared_experts"), run=_run)
