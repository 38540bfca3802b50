"""The one error path of the command line: every failure is one red line on stderr and exit status 1.

Every command is wrapped in :func:`friendly_errors`, and every command that refuses an argument itself calls
:func:`fail`. Messages quote the user's input and the store's strings, so they are printed as text (never as
rich markup, never with control characters). ``CROSSLING_DEBUG=1`` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from precompute.text import first_line, printable

err_console = Console(stderr=True)

MAX_DETAILS = 50


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is already the one line a user needs (no class name in front)."""
    from precompute.config import ConfigError
    from precompute.inputs.concepts import ConceptSetError
    from precompute.store import StoreError

    errors: list[type[BaseException]] = [ConfigError, ConceptSetError, StoreError, FileNotFoundError]
    try:
        from precompute.model import ModelLoadError, UnsupportedModelError
        from precompute.steering.stage import SteeringError

        errors += [ModelLoadError, UnsupportedModelError, SteeringError]
    except ImportError:  # pragma: no cover - torch missing: those errors cannot occur
        pass
    return tuple(errors)


def fail(message: str, details: Sequence[str] | None = None) -> NoReturn:
    """Print one red error line (plus up to 50 dim detail lines, e.g. a concept set's problems) and exit 1."""
    err_console.print(f"[red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)
    for line in list(details or [])[1 : MAX_DETAILS + 1]:
        err_console.print(f"  [dim]{escape(printable(line))}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every failure of a command into one line and exit status 1 (130 on Ctrl-C)."""

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
            fail(first_line(exc), getattr(exc, "problems", None))
        except Exception as exc:  # noqa: BLE001 - the CLI promises no tracebacks
            if os.environ.get("CROSSLING_DEBUG"):
                raise
            text = str(exc).strip()
            first = text.splitlines()[0] if text else ""
            fail(f"{type(exc).__name__}: {first} (set CROSSLING_DEBUG=1 for the traceback)")

    return wrapper
