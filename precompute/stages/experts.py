"""Stage ``experts``: every unit's average precision as a detector of each concept in each language.

Suau et al.'s expert units: AP of the unit's pooled response for the concept's contexts against the other
concepts' contexts of the same language, all units at once on the device; the top-K per (concept, language) are
stored (``neuron_ap``) and the full AP matrix is handed to the alignment and chance stages as artefact ``experts``.
"""

from __future__ import annotations

import polars as pl

from precompute.analysis.experts import neuron_summary, score_experts
from precompute.faults import with_fault_point
from precompute.stages.base import CheckpointContext, Stage


def _run(ctx: CheckpointContext) -> dict[str, pl.DataFrame]:
    spec = ctx.cfg.experts
    langs = ctx.langs
    units = ctx.layout.units
    experts = score_experts(
        ctx.need("responses"),
        langs,
        ctx.concept_ids,
        units,
        top_k=spec.top_k,
        chunk_neurons=spec.chunk_neurons,
        device=ctx.device,
        progress=with_fault_point(ctx.task("  experts", len(set(langs.tolist()))), "experts.lang"),
    )
    ctx.artefacts["experts"] = experts
    return {"neuron_ap": experts.top, "neuron_summary": neuron_summary(experts, units)}


STAGE = Stage(name="experts", needs=("responses",), run=_run)
