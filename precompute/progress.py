"""The one progress display of every long stage (extraction, scoring, steering): bar, count, elapsed and ETA.

Its own module so that the pipeline and the steering stage share it without importing each other.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def make_progress(console: Console | None = None) -> Progress:
    """A rich ``Progress`` with description, bar, done/total, elapsed time and ETA, on ``console`` (stderr)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
