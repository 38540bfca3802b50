"""Stage ``alignment``: how a concept's expert sets align across languages, and which units are shared.

The overlap of each pair of languages' top experts (Jaccard and |A∩B|/k, Spearman of the AP profiles), the units
that are experts of a concept in at least ``[experts] min_langs`` languages, and per concept how many are.
"""

from __future__ import annotations

import polars as pl

from precompute.analysis.alignment import expert_overlap, expert_sharing, shared_experts
from precompute.stages.base import CheckpointContext, Stage


def _run(ctx: CheckpointContext) -> dict[str, pl.DataFrame]:
    spec = ctx.cfg.experts
    experts = ctx.need("experts")
    shared = shared_experts(experts, ctx.layout.units, min_langs=spec.min_langs)
    return {
        "expert_overlap": expert_overlap(experts, k=spec.overlap_top),
        "shared_experts": shared,
        "expert_sharing": expert_sharing(experts.top, shared),
    }


STAGE = Stage(name="alignment", needs=("experts",), run=_run)
