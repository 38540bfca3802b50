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
    """Print one red error line and exit 1."""
    err_console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
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
) -> None:
    """Run every stage for every checkpoint of CONFIG not yet in the store OUT."""
    from precompute.config import load_config
    from precompute.pipeline import run as run_pipeline

    cfg = load_config(config)
    if device:
        cfg.model.device = device
    if dtype:
        cfg.model.dtype = dtype
        cfg.validate(str(config))
    if not cfg.checkpoints:
        fail(f"{config}: no checkpoints listed ([[checkpoints]] tables)")
    summary = run_pipeline(cfg, out, force=force, console=err_console)
    typer.echo(
        f"{summary.store}: {len(summary.done)} checkpoint(s) written, "
        f"{len(summary.skipped)} already present, {summary.seconds:.1f} s"
    )


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
    console.print(f"[bold]{data['store']}[/] (schema v{data['schema_version']})")
    for r in data["runs"]:
        console.print(f"model: [bold]{r['model_id']}[/]  run {r['run_id']}  device {r['device']} {r['dtype']}")
        if r["model_card"]:
            console.print(f"  {r['model_card'].splitlines()[0]}")
    ck = Table("checkpoint", "step", "tokens seen", title="checkpoints")
    for c in data["checkpoints"]:
        ck.add_row(c["checkpoint"], str(c["step"]), str(c["tokens_seen"]))
    console.print(ck)
    console.print(f"languages ({len(data['languages'])}): {', '.join(data['languages'])}")
    console.print(f"concepts ({len(data['concepts'])}): {', '.join(data['concepts'])}")
    tables = Table("table", "rows", title="tables")
    for name, n in data["tables"].items():
        tables.add_row(name, f"{n:,}")
    console.print(tables)
    if data["stage_timings"]:
        timings = Table("stage", "seconds (all checkpoints)", "tokens/s", "peak MiB", title="stage timings")
        for t in data["stage_timings"]:
            timings.add_row(
                t["stage"], f"{t['seconds']:.1f}",
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


_mount_subcommands()


if __name__ == "__main__":
    app()
