"""The ``precompute`` command line: run, demo, info, report, merge, pack, checkpoints, concepts, steer.

One module per command group; this package only builds the typer app and mounts them. Every command goes
through :func:`precompute.cli.errors.friendly_errors`: a bad input ends in one red line on stderr and exit
status 1, never a traceback (set CROSSLING_DEBUG=1 to see the traceback of an unexpected error).
"""

from __future__ import annotations

import typer

from precompute.cli.errors import fail, friendly_errors

app = typer.Typer(
    help="crossling precompute: trace cross-lingual concept neurons over training checkpoints into one DuckDB store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _mount() -> None:
    """Every command of every group, each wrapped in the one error path."""
    from precompute.cli import checkpoints, concepts, run, steer, stores

    for name, func in [
        ("run", run.run),
        ("demo", run.demo),
        ("info", stores.info),
        ("report", stores.report),
        ("merge", stores.merge),
        ("pack", stores.pack),
        ("checkpoints", checkpoints.checkpoints),
        ("steer", steer.steer),
    ]:
        app.command(name=name)(friendly_errors(func))
    app.add_typer(concepts.concepts_app, name="concepts", help="Build or check a concept set.")


_mount()

__all__ = ["app", "fail", "friendly_errors"]
