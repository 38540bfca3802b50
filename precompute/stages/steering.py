"""Stage ``steering``: fix a concept's expert units during generation and label what comes out.

The paper's steering (``precompute.steering.stage``): the top-N experts of each concept found in a source
language are fixed to their median response on the concept's contexts (or zeroed), and the language and concept
of every output are labelled. It needs the checkpoint's ``neuron_ap``: made by the experts stage in a run, read
from the store by ``precompute steer``; a rerun replaces the rows of the same generation keys and keeps the rest.
"""

from __future__ import annotations

import polars as pl

from precompute.stages.base import CheckpointContext, Stage
from precompute.steering.stage import REPLACE_KEYS, STEERING_SCHEMA, steer_checkpoint


def _run(ctx: CheckpointContext) -> dict[str, pl.DataFrame]:
    plan = ctx.steering
    new = steer_checkpoint(
        ctx.loaded,
        ctx.layout,
        plan,
        ctx.need("neuron_ap"),
        checkpoint=ctx.checkpoint,
        progress=ctx.task("  steering", plan.n_generations),
        note=ctx.note,
    )
    ctx.artefacts["steering_new"] = new  # what this call generated, for `precompute steer`'s summary
    old = ctx.stored.get("steering")
    if old is not None and old.height:  # rows of earlier steers of this checkpoint that this one does not replace
        kept = old.select(list(STEERING_SCHEMA)).join(
            new.select(REPLACE_KEYS).unique(), on=REPLACE_KEYS, how="anti", nulls_equal=True
        )
        new = pl.concat([kept, new], how="vertical")
    return {"steering": new}


STAGE = Stage(
    name="steering",
    needs=("neuron_ap",),
    run=_run,
    enabled=lambda cfg: cfg.steering.enabled,
)
