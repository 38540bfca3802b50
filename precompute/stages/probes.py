"""Stage ``probes``: language-identification probes on the residual stream of every layer.

One logistic-regression probe per layer and representation (sentence means, single sampled tokens) and seed, with
the majority baseline, Hewitt & Liang's control task for token probes and bootstrap intervals
(``precompute.analysis.probes``).
"""

from __future__ import annotations

import polars as pl

from precompute.analysis.probes import probe_tables
from precompute.stages.base import CheckpointContext, Stage


def _run(ctx: CheckpointContext) -> dict[str, pl.DataFrame]:
    spec = ctx.cfg.probes
    pooled = ctx.need("pooled")
    representations = {"mean": pooled.resid_mean, "token": pooled.resid_token}
    representations = {k: v for k, v in representations.items() if k in spec.representations}
    n_fits = sum(t.shape[-3] for t in representations.values())  # layers
    probe_rows, probe_lang_rows = probe_tables(
        representations,
        ctx.langs,
        seeds=spec.seeds,
        test_size=spec.test_size,
        C=spec.C,
        max_iter=spec.max_iter,
        max_train=spec.max_train,
        control=spec.control,
        token_types={"token": pooled.token_ids},
        n_resamples=ctx.cfg.analysis.bootstrap,
        progress=ctx.task("  probes", n_fits),
    )
    return {"probe_results": probe_rows, "probe_per_language": probe_lang_rows}


STAGE = Stage(name="probes", needs=("pooled",), run=_run)
