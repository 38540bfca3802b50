"""Stage ``lape``: language-specific neurons (Tang et al.'s LAPE) and how many units each language has.

Activation probabilities per language are token-weighted, as Tang et al. count them: each context's activity
fraction weighted by its number of real tokens.
"""

from __future__ import annotations

import polars as pl
import torch

from precompute.analysis.lape import language_neuron_tables
from precompute.stages.base import CheckpointContext, Stage


def _run(ctx: CheckpointContext) -> dict[str, pl.DataFrame]:
    spec = ctx.cfg.analysis
    pooled = ctx.need("pooled")
    language_neurons, counts = language_neuron_tables(
        pooled.mlp_active,
        ctx.langs.tolist(),
        ctx.layout.units,
        selection=spec.lape_selection,
        quantile=spec.lape_quantile,
        filter_rate=spec.lape_filter_rate,
        bar_ratio=spec.lape_bar_ratio,
        min_prob=spec.lape_min_prob,
        max_lape=spec.lape_max,
        shared_experts=ctx.need("shared_experts"),
        n_tokens=torch.from_numpy(pooled.token_counts),  # real tokens per context: Tang's token-weighted p
        device=ctx.device,
    )
    return {"language_neurons": language_neurons, "neuron_counts": counts}


STAGE = Stage(name="lape", needs=("pooled", "shared_experts"), run=_run)
