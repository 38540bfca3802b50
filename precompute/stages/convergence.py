"""Stage ``convergence``: compression of the residual stream, layer by layer.

How close the same concept's representations are across languages (matched vs mismatched cosine, CKA-style
similarity per language pair) and the effective dimensionality of the concept centroids
(``precompute.analysis.similarity``).
"""

from __future__ import annotations

import polars as pl

from precompute.analysis.similarity import convergence_tables
from precompute.stages.base import CheckpointContext, Stage


def _run(ctx: CheckpointContext) -> dict[str, pl.DataFrame]:
    similarity, compression = convergence_tables(
        ctx.need("pooled").resid_mean, ctx.langs.tolist(), ctx.concept_ids.tolist(), device=ctx.device
    )
    return {"similarity": similarity, "compression": compression}


STAGE = Stage(name="convergence", needs=("pooled",), run=_run)
