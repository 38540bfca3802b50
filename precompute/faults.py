"""Fault injection for the reliability tests: make a precompute process die, pause or hit a full disk at
a named point, so that the tests can check what the store looks like afterwards.

Never set in normal use; with ``CROSSLING_FAULT`` unset every :func:`maybe_fail` call is one dictionary
lookup. The variable holds one or more comma-separated faults ``ACTION@POINT[:N]``, each firing the
N-th time (default: the first time) this process reaches POINT:

``kill``
    SIGKILL this process (no cleanup, no ``finally``, exactly what a killed cloud job sees).
``stop``
    SIGSTOP this process; the test inspects the store and resumes it with SIGCONT.
``enospc``
    raise ``OSError(ENOSPC)`` as a full disk would.

Each fault announces itself first with one line on stderr, ``crossling fault: ACTION at POINT#N (pid P)``.

Points (where the code calls :func:`maybe_fail`):

``extract.batch``      after each batch of forward passes (``precompute.extract``)
``experts.lang``       after each language's AP scoring (``precompute.analysis.experts``)
``store.copied``       a store write made its private file (a copy of the store, or a new checkpoint part),
                       before its transaction (``precompute.store``)
``store.insert``       a checkpoint's transaction inserted one more table, not yet committed
``store.committed``    the private file is committed and synced, not yet renamed into place
``store.published``    the rename is done (the new state is visible), before the next step
``store.packed``       a pack's rename is done, the parts it folded in not yet deleted

Example: ``CROSSLING_FAULT=kill@experts.lang:5 precompute run run.toml --out s.duckdb``.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

ENV = "CROSSLING_FAULT"
ACTIONS = ("kill", "stop", "enospc")
POINTS = (
    "extract.batch",
    "experts.lang",
    "store.copied",
    "store.insert",
    "store.committed",
    "store.published",
    "store.packed",
)

_counts: dict[str, int] = {}


class FaultSpecError(ValueError):
    """A malformed ``CROSSLING_FAULT`` value."""


def parse(spec: str) -> list[tuple[str, str, int]]:
    """``"kill@store.insert:3,stop@extract.batch"``
    -> ``[("kill", "store.insert", 3), ("stop", "extract.batch", 1)]``."""
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        action, sep, rest = item.partition("@")
        point, _, nth = rest.partition(":")
        if not sep or action not in ACTIONS or point not in POINTS:
            raise FaultSpecError(
                f"{ENV}={spec!r}: bad fault {item!r} (use ACTION@POINT[:N], ACTION in {ACTIONS}, POINT in {POINTS})"
            )
        try:
            n = int(nth) if nth else 1
        except ValueError:
            raise FaultSpecError(f"{ENV}={spec!r}: {nth!r} is not a count") from None
        faults.append((action, point, n))
    return faults


def maybe_fail(point: str) -> None:
    """Count one more arrival at ``point`` and fire the fault set for it in ``CROSSLING_FAULT``, if any."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    n = _counts[point] = _counts.get(point, 0) + 1
    for action, where, nth in parse(spec):
        if where != point or nth != n:
            continue
        print(f"crossling fault: {action} at {point}#{n} (pid {os.getpid()})", file=sys.stderr, flush=True)
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def reset() -> None:
    """Forget the arrival counts (for in-process tests)."""
    _counts.clear()


def with_fault_point(callback: Callable[..., None], point: str) -> Callable[..., None]:
    """``callback`` followed by :func:`maybe_fail` at ``point``: how the pipeline puts a kill point into a pure
    analysis (through its progress callback) without the analysis importing this module."""

    def wrapped(*args: Any, **kwargs: Any) -> None:
        callback(*args, **kwargs)
        maybe_fail(point)

    return wrapped
