"""Problems and hints: every way a store or a view can fail becomes one message and what to do.

The hint for a store that cannot be opened is chosen by the type of the :class:`~precompute.store.StoreError`
that ``precompute.store`` raised (one subclass per reason), never by matching its message text, so a
reworded message keeps its hint.
"""

from __future__ import annotations

import duckdb
import streamlit as st

from explorer.paths import BUILD_HINT
from explorer.text import md, md_code
from precompute.store import (
    SCHEMA_VERSION,
    HalfWrittenStoreError,
    NotCrosslingStoreError,
    NotDuckDBError,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
    StoreMissingError,
    UnsafeStoreError,
)
from precompute.text import first_line

ALERT_ICON = "⚠️"  # an emoji: drawn by the browser, nothing fetched
INFO_ICON = "ℹ️"

REBUILD_HINT = "Rebuild it with `precompute run`."
_HINTS: dict[type[StoreError], str] = {
    StoreMissingError: BUILD_HINT,
    NotDuckDBError: (
        "This file is not a DuckDB database (or it was cut short while being copied). crossling "
        "stores are single `.duckdb` files written by `precompute`; check that you opened the "
        "right file, or ask for it to be sent again."
    ),
    HalfWrittenStoreError: (
        "The file is damaged or was cut short (an interrupted copy or download?). Ask for it again, or "
        "rebuild it with `precompute run`."
    ),
    UnsafeStoreError: (
        "crossling stores hold only tables of data; this file also carries SQL (views or macros), which "
        "the explorer refuses to run. Ask for a store written by `precompute`."
    ),
    NotCrosslingStoreError: (
        "This DuckDB file was not written by crossling. Open a store written by `precompute run` or `precompute demo`."
    ),
    SchemaVersionError: (
        f"This explorer reads schema version {SCHEMA_VERSION}. Open the store with the crossling "
        "version that wrote it, or rebuild it with `precompute run` from this version."
    ),
    StoreLockedError: (
        "A precompute is writing this store. The explorer reads the published file; reload this page "
        "when the precompute has published its next checkpoint."
    ),
}
GENERIC_HINT = "Check the file, or rebuild it with `precompute`."


class StoreProblem(Exception):
    """The store cannot be explored; ``title`` says what (markdown, already escaped), ``hint`` what to do."""

    def __init__(self, title: str, hint: str):
        super().__init__(title)
        self.title = title
        self.hint = hint


def hint_for(exc: StoreError) -> str:
    """What to do about a store error, by its type (the most specific class that has a hint)."""
    for cls in type(exc).__mro__:
        if cls in _HINTS:
            return _HINTS[cls]
    return GENERIC_HINT


def problem_from(exc: StoreError, lacking: list[str] | None = None) -> StoreProblem:
    """The message a page shows for a store that ``precompute.store`` refused (``lacking``: the schema
    tables a half-written file lacks, when they could be listed)."""
    title = f"Cannot open the store: {md_code(exc)}"
    if lacking:
        title += f" It lacks the tables {', '.join(md_code(t) for t in lacking)}."
    return StoreProblem(title, hint_for(exc))


def show_problem(problem: StoreProblem) -> None:
    st.error(f"**{problem.title}**\n\n{problem.hint}", icon=ALERT_ICON)


def show_unexpected(exc: BaseException) -> None:
    """An error no page expected: one line, what to do, no traceback."""
    if isinstance(exc, StoreError):
        show_problem(problem_from(exc))
    elif isinstance(exc, duckdb.Error):
        st.error(
            f"**The store could not answer this view:** {md(first_line(exc))}\n\n"
            "The file may be incomplete or from another crossling version. Reload the page; if it "
            "persists, rebuild the store with `precompute run`.",
            icon=ALERT_ICON,
        )
    else:
        st.error(
            f"**Something went wrong in this view:** {type(exc).__name__}: {md(first_line(exc))}\n\n"
            "Reload the page or pick other settings; if it persists, please report it with the link "
            "to this view.",
            icon=ALERT_ICON,
        )


def empty(message: str) -> None:
    """Nothing to show (an analysis that did not run, a selection with no rows): said, not drawn empty."""
    st.info(message, icon=INFO_ICON)
