"""Stage ``extract``: one forward pass over every context, pooled per unit and per residual layer.

Keeps only what the analyses read (``[extract] pooling``'s unit responses, the activity fraction LAPE needs, the
residual stream's means and one sampled token per probe seed), in RAM or memory-mapped when it would not fit
(:func:`spill_directory`); refuses NaN or infinite activations (NaN weights) before any analysis sees them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

import polars as pl
import torch
from rich.markup import escape

from precompute.config import RunConfig
from precompute.extract import available_ram_bytes, extract, pooled_nbytes
from precompute.stages.base import CheckpointContext, Stage
from precompute.validate import check_finite


def spill_directory(cfg: RunConfig, nbytes: int, say: Callable[[str], None] | None = None) -> str | None:
    """Where to memory-map the pooled activations, or None to keep them in RAM.

    They spill when they need more than ``[extract] ram_budget_gb`` (0: half the RAM available now), into
    ``[extract] spill_dir`` (default: the system's temporary folder); ``say`` is told where.
    """
    budget = cfg.extract.ram_budget_gb * 2**30 if cfg.extract.ram_budget_gb > 0 else available_ram_bytes() / 2
    if nbytes <= budget:
        return None
    where = str(cfg.resolve(cfg.extract.spill_dir)) if cfg.extract.spill_dir else tempfile.gettempdir()
    if say is not None:
        say(
            f"pooled activations need {nbytes / 2**30:.1f} GB > RAM budget {budget / 2**30:.1f} GB: "
            f"memory-mapped in {escape(where)}"
        )
    return where


def _run(ctx: CheckpointContext) -> dict[str, pl.DataFrame]:
    cfg, loaded, layout = ctx.cfg, ctx.loaded, ctx.layout
    n_contexts = ctx.sentences.height
    storage = torch.float16 if loaded.dtype in (torch.float16, torch.bfloat16) else torch.float32
    # Only the configured pooling is kept (each costs contexts x units of host memory); token probes draw
    # their own token per context for every probe seed.
    poolings = (cfg.extract.pooling,)
    token_seeds = cfg.probes.seeds if "token" in cfg.probes.representations else []
    nbytes = pooled_nbytes(loaded, layout, n_contexts, storage, poolings, len(token_seeds))
    pooled = extract(
        loaded,
        layout,
        ctx.prepared.contexts,
        batch_tokens=cfg.extract.batch_tokens,
        poolings=poolings,
        token_seeds=token_seeds,
        storage_dtype=storage,
        progress=ctx.task("  extract", n_contexts),
        spill_dir=spill_directory(cfg, nbytes, ctx.note),
    )
    check_finite(
        {
            **{f"MLP activations ({name} pooling)": t for name, t in pooled.mlp.items()},
            "residual stream (mean)": pooled.resid_mean,
            "residual stream (token)": pooled.resid_token,
        },
        ctx.label or "checkpoint",
        pooled.layer_offsets,
        pooled.layer_ids,
    )
    ctx.artefacts["pooled"] = pooled
    ctx.artefacts["responses"] = pooled.responses(cfg.extract.pooling)  # (contexts, units): AP and steering value
    return {}


STAGE = Stage(
    name="extract",
    needs=(),
    run=_run,
    tokens=lambda ctx: int(ctx.prepared.contexts.lengths.sum()),
)
