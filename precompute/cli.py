"""The ``precompute`` command line: run, demo, info, report, concepts, steer.

Every bad input ends in one red line on stderr and exit status 1, never a traceback
(set CROSSLING_DEBUG=1 to see the traceback of an unexpected error).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="crossling precompute: trace cross-lingual concept neurons over training checkpoints "
    "into one DuckDB store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

DEMO_STORE = Path("data/demo.duckdb")
DEMO_WORK = Path("data/demo_run")


def _known_errors() -> tuple[type[BaseException], ...]:
    from precompute.concepts import ConceptSetError
    from precompute.config import ConfigError
    from precompute.store import StoreError

    errors: list[type[BaseException]] = [ConfigError, ConceptSetError, StoreError, FileNotFoundError]
    try:
        from precompute.models import ModelLoadError, UnsupportedModelError

        errors += [ModelLoadError, UnsupportedModelError]
    except ImportError:
        pass
    return tuple(errors)


def fail(message: str) -> None:
    """Print one red error line and exit 1 (the message is text, not markup: '[model]' stays visible)."""
    from rich.markup import escape

    from precompute.store import printable

    err_console.print(f"[red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every failure of a command into one line and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted: finished checkpoints are kept; rerun to resume")
            raise typer.Exit(130) from None
        except _known_errors() as exc:
            fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - the CLI promises no tracebacks
            if os.environ.get("CROSSLING_DEBUG"):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            fail(f"{type(exc).__name__}: {first} (set CROSSLING_DEBUG=1 for the traceback)")

    return wrapper


@app.command()
@friendly_errors
def run(
    config: Annotated[Path, typer.Argument(help="Run config (TOML).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store to create or extend.")],
    force: Annotated[bool, typer.Option(help="Recompute checkpoints already in the store.")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1, mps (overrides config).")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16, float16 (overrides config).")] = None,
    shard: Annotated[str | None, typer.Option(
        help="Run only shard I/N of the checkpoints (0-based, round-robin), e.g. 0/4; default: the SLURM job "
        "array task (SLURM_ARRAY_TASK_ID/COUNT) when set. '{shard}' in --out becomes I.")] = None,
    layers: Annotated[str | None, typer.Option(
        help="MLP layers to hook, e.g. '0-5,12' (overrides the config's extract.layers; part of the run's identity).")] = None,
) -> None:
    """Run every stage for every checkpoint of CONFIG not yet in the store OUT."""
    from precompute.checkpoints import parse_shard, resolve_checkpoints, select_shard, shard_from_env
    from precompute.config import load_config
    from precompute.pipeline import run as run_pipeline

    cfg = load_config(config)
    if device:
        cfg.model.device = device
    if dtype:
        cfg.model.dtype = dtype
        cfg.validate(str(config))
    if layers is not None:
        cfg.extract.layers = _parse_layers(layers)
    specs = resolve_checkpoints(cfg, where=str(config))
    if not specs:
        fail(f"{config}: no checkpoints listed ([[checkpoints]] tables or a [checkpoint_set])")
    part = parse_shard(shard) if shard is not None else shard_from_env()
    if "{shard}" in str(out):
        if part is None:
            fail(f"--out {out}: contains {{shard}} but no shard is given (--shard I/N or a SLURM job array)")
        out = Path(str(out).replace("{shard}", str(part.index)))
    if part is not None:
        chosen = select_shard(specs, part)
        names = ", ".join(c.name for c in chosen) or "none"
        err_console.print(
            f"shard {part} ({part.origin}): {len(chosen)} of {len(specs)} checkpoints: {names}", soft_wrap=True
        )
        if not chosen:
            typer.echo(f"shard {part}: no checkpoints (the run has {len(specs)}); nothing to do")
            return
        specs = chosen
    summary = run_pipeline(cfg, out, force=force, console=err_console, checkpoints=specs)
    typer.echo(
        f"{summary.store}: {len(summary.done)} checkpoint(s) written, "
        f"{len(summary.skipped)} already present, {summary.seconds:.1f} s"
    )


def _parse_layers(text: str) -> list[int]:
    """'0-5,12' -> [0, 1, 2, 3, 4, 5, 12]; one red line for anything else."""
    layers: set[int] = set()
    for part in text.replace(" ", "").split(","):
        bounds = part.split("-")
        if not part or len(bounds) > 2 or not all(b.isdigit() for b in bounds):
            fail(f"--layers {text!r}: expected layer numbers and ranges such as 0-5,12")
        low, high = int(bounds[0]), int(bounds[-1])
        if low > high:
            fail(f"--layers {text!r}: range {part} runs backwards")
        layers.update(range(low, high + 1))
    return sorted(layers)


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Demo store to write.")] = DEMO_STORE,
    work: Annotated[Path, typer.Option(help="Folder for the demo's checkpoints and config.")] = DEMO_WORK,
    force: Annotated[bool, typer.Option(help="Retrain and recompute everything.")] = False,
) -> None:
    """Train the tiny multilingual demo model (checkpoints) and run the whole pipeline on it."""
    from precompute.demo.run import run_demo

    store = run_demo(out=out, work=work, force=force, console=err_console)
    typer.echo(f"demo store ready: {store}  (open it with: explorer {store})")


@app.command()
@friendly_errors
def info(
    store: Annotated[Path, typer.Argument(help="A crossling store (.duckdb).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """What a store holds: model, checkpoints, languages, concepts, tables and row counts."""
    from precompute.info import store_info

    data = store_info(store)
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return
    from rich.markup import escape

    from precompute.store import printable

    def e(text: str) -> str:  # a store's strings are data: shown as text, never as markup or control codes
        return escape(printable(text))

    console.print(f"[bold]{e(data['store'])}[/] (schema v{data['schema_version']})")
    for r in data["runs"]:
        console.print(f"model: [bold]{e(r['model_id'])}[/]  run {e(r['run_id'])}  device {e(str(r['device']))} {e(str(r['dtype']))}")
        if r["model_card"]:
            console.print(f"  {e(r['model_card'].splitlines()[0])}")
    ck = Table("checkpoint", "step", "tokens seen", title="checkpoints")
    for c in data["checkpoints"]:
        ck.add_row(e(c["checkpoint"]), str(c["step"]), str(c["tokens_seen"]))
    console.print(ck)
    console.print(f"languages ({len(data['languages'])}): {e(', '.join(data['languages']))}")
    console.print(f"concepts ({len(data['concepts'])}): {e(', '.join(data['concepts']))}")
    tables = Table("table", "rows", title="tables")
    for name, n in data["tables"].items():
        tables.add_row(name, f"{n:,}")
    console.print(tables)
    if data["stage_timings"]:
        timings = Table("stage", "seconds (all checkpoints)", "tokens/s", "peak MiB", title="stage timings")
        for t in data["stage_timings"]:
            timings.add_row(
                e(t["stage"]), f"{t['seconds']:.1f}",
                f"{t['tokens_per_s']:,.0f}" if t["tokens_per_s"] else "",
                f"{t['peak_mem_mb']:,.0f}" if t["peak_mem_mb"] else "",
            )
        console.print(timings)


@app.command()
@friendly_errors
def report(
    store: Annotated[Path, typer.Argument(help="A crossling store (.duckdb).")],
) -> None:
    """The headline figures of a store, first vs last checkpoint (the numbers the README quotes)."""
    from precompute.report import headline_report

    typer.echo(headline_report(store))


def _mount_subcommands() -> None:
    """Sub-commands contributed by their own modules."""
    from precompute.cli_concepts import concepts_app
    from precompute.cli_steer import steer

    app.add_typer(concepts_app, name="concepts", help="Build or check a concept set.")
    app.command(name="steer")(friendly_errors(steer))
    from precompute.cli_checkpoints import checkpoints, merge, tiny_checkpoints

    app.command(name="checkpoints")(friendly_errors(checkpoints))
    app.command(name="merge")(friendly_errors(merge))
    app.command(name="tiny-checkpoints")(friendly_errors(tiny_checkpoints))


_mount_subcommands()


if __name__ == "__main__":
    app()
