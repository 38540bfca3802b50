"""``precompute run`` and ``precompute demo``: every stage for every checkpoint of a run, into one store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from precompute.cli.errors import err_console, fail
from precompute.config import ConfigError, parse_int_ranges

DEMO_STORE = Path("data/demo.duckdb")  # relative: the demo is built in the folder the command runs in
DEMO_WORK = Path("data/demo_run")


def run(
    config: Annotated[Path, typer.Argument(help="Run config (TOML).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store to create or extend.")],
    force: Annotated[bool, typer.Option(help="Recompute checkpoints already in the store.")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1, mps (overrides config).")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16, float16 (overrides config).")] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Run only shard I/N of the checkpoints (0-based, round-robin), e.g. 0/4; default: the SLURM job "
            "array task (SLURM_ARRAY_TASK_ID/COUNT) when set. '{shard}' in --out becomes I."
        ),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            help=(
                "MLP layers to hook, e.g. '0-5,12' (overrides the config's extract.layers; part of the run's identity)."
            )
        ),
    ] = None,
) -> None:
    """Run every stage for every checkpoint of CONFIG not yet in the store OUT."""
    from precompute.checkpoints import (
        parse_shard,
        resolve_checkpoints,
        select_shard,
        shard_from_env,
    )
    from precompute.config import load_config
    from precompute.pipeline import run as run_pipeline

    cfg = load_config(config)
    # Options override the config; they are checked by the same declared rules, and a refusal names the option.
    if device:
        cfg.model.device = device
    if dtype:
        cfg.model.dtype = dtype
        cfg.overridden["model.dtype"] = f"--dtype {dtype!r}"
    if layers is not None:
        cfg.extract.layers = _parse_layers(layers)
        cfg.overridden["extract.layers"] = f"--layers {layers!r}"
    cfg.validate()
    specs = resolve_checkpoints(cfg, where=str(config))
    if not specs:
        fail(f"{config}: no checkpoints listed ([[checkpoints]] tables or a [checkpoint_set])")
    planned = [c.name for c in specs]  # the whole run, recorded in the store so that a stopped run says what it lacks
    part = parse_shard(shard) if shard is not None else shard_from_env()
    if "{shard}" in str(out):
        if part is None:
            fail(f"--out {out}: contains {{shard}} but no shard is given (--shard I/N or a SLURM job array)")
        out = Path(str(out).replace("{shard}", str(part.index)))
    if part is not None:
        chosen = select_shard(specs, part)
        names = ", ".join(c.name for c in chosen) or "none"
        err_console.print(
            f"shard {part} ({part.origin}): {len(chosen)} of {len(specs)} checkpoints: {escape(names)}", soft_wrap=True
        )
        if not chosen:
            typer.echo(f"shard {part}: no checkpoints (the run has {len(specs)}); nothing to do")
            return
        specs = chosen
    summary = run_pipeline(
        cfg,
        out,
        force=force,
        console=err_console,
        checkpoints=specs,
        planned=planned,
        shard=f"{part.index}/{part.count}" if part is not None else None,
    )
    typer.echo(
        f"{summary.store}: {len(summary.done)} checkpoint(s) written, "
        f"{len(summary.skipped)} already present, {summary.seconds:.1f} s"
    )


def _parse_layers(text: str) -> list[int]:
    """'0-5,12' -> [0, 1, 2, 3, 4, 5, 12]; one red line for anything else. A range is checked before it is built
    (no model has 10,000 blocks), so '0-999999999999' is refused instead of filling the memory."""
    compact = text.replace(" ", "")
    if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", compact):
        fail(f"--layers {text!r}: expected layer numbers and ranges such as 0-5,12")
    try:
        return sorted(set(parse_int_ranges(compact, "--layers", max_values=_MAX_LAYERS)))
    except ConfigError as exc:
        fail(str(exc))


#: More MLP blocks than any model has; a --layers range beyond it is refused before it is built.
_MAX_LAYERS = 10_000


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Demo store to write.")] = DEMO_STORE,
    work: Annotated[Path, typer.Option(help="Folder for the demo's checkpoints and config.")] = DEMO_WORK,
    force: Annotated[bool, typer.Option(help="Retrain and recompute everything.")] = False,
) -> None:
    """Train the tiny multilingual demo model (checkpoints) and run the whole pipeline on it."""
    from precompute.demo.run import run_demo
    from precompute.demo.train import DemoFolderError

    try:
        store = run_demo(out=out, work=work, force=force, console=err_console)
    except DemoFolderError as exc:  # it would replace what it did not write: refused, nothing touched
        fail(str(exc))
    typer.echo(f"demo store ready: {store}  (open it with: explorer {store})")
