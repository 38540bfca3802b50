"""The open store and its cache: which store and run this rerun explores, and cached queries on it.

The store path comes from ``CROSSLING_STORE`` (set by ``explorer STORE``), or defaults to the demo store
``data/demo.duckdb``. The connection is cached with ``st.cache_resource`` and query results with
``st.cache_data``, both keyed by the store's path and a version stamp (modification time, size, inode, and the
newest checkpoint part): a precompute that publishes a new checkpoint adds a part file, and one that packs or
rewrites the store replaces the file by atomic rename; either changes the stamp, so the next rerun reopens the
store and re-queries it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import streamlit as st

from explorer import queries as Q
from explorer.paths import BUILD_HINT, ENV_STORE, store_path
from explorer.problems import REBUILD_HINT, StoreProblem, problem_from
from explorer.text import md, md_code
from explorer.widgets import url_select
from precompute.store import HalfWrittenStoreError, StoreError, connect, newest_part, writer_active
from precompute.store.read import RunProgress, run_progress, unfinished_hint
from precompute.text import first_line

_CTX_KEY = "_crossling_ctx"


#: What `store_version` returns: the store file's modification time, size and inode, and its newest part.
Version = tuple[int, int, int, int]


def store_version(path: Path) -> Version:
    """A stamp that changes whenever the file is rewritten or replaced, or a checkpoint part is published."""
    st_ = path.stat()
    return (st_.st_mtime_ns, st_.st_size, st_.st_ino, newest_part(path))


def _release(con: Q.StoreConnection) -> None:
    with contextlib.suppress(Exception):
        con.close()


@st.cache_resource(max_entries=4, show_spinner=False, on_release=_release)
def _connection(path: str, version: Version) -> Q.StoreConnection:
    """One read-only connection per (store, version); queries run on cursors of it."""
    return Q.StoreConnection(path)


@st.cache_data(max_entries=4096, show_spinner=False)
def _cached(path: str, version: Version, name: str, args: tuple) -> Any:
    return getattr(Q, name)(_connection(path, version), *args)


@dataclass(frozen=True)
class Ctx:
    """The open store and run, as the pages see it."""

    path: str
    version: Version
    run_id: str
    n_runs: int
    top_k: int
    min_langs: int
    overlap_measure: str = "jaccard"  # [experts] overlap_measure: 'jaccard' or 'over_k'

    @property
    def name(self) -> str:
        return Path(self.path).name


def ctx() -> Ctx:
    """The context ``app.py`` set up for this rerun."""
    return st.session_state[_CTX_KEY]


def set_ctx(c: Ctx) -> None:
    """Make ``c`` the context the pages of this rerun see."""
    st.session_state[_CTX_KEY] = c


def q(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a function of ``explorer.queries`` through the cache, on the open store."""
    c = ctx()
    return _cached(c.path, c.version, fn.__name__, tuple(args))


def _raw(path: Path, version: Version, fn: Callable[..., Any], *args: Any) -> Any:
    return _cached(str(path), version, fn.__name__, tuple(args))


def _lacking_tables(path: Path) -> list[str]:
    """The schema tables a half-written store lacks (empty when the file cannot even list its tables).

    Only called after ``precompute.store`` checked the file carries no SQL; the connection is its locked one.
    """
    with contextlib.suppress(duckdb.Error, OSError):
        con = connect(path)
        try:
            return Q.missing_tables(con)
        finally:
            con.close()
    return []


def _progress(path: Path, version: Version, runs: Any, run_id: str, present: list[str]) -> RunProgress | None:
    """How far the run got (finished, planned, missing), from the runs row and the store's meta."""
    row = runs.filter(runs["run_id"] == run_id)
    meta = dict(_raw(path, version, Q.meta).iter_rows()) if runs.height == 1 else {}
    return run_progress(meta, row["finished_at"][0], present) if row.height else None


def _unfinished_text(path: Path, progress: RunProgress) -> str:
    """Why an unfinished run has nothing to show, and what to do: wait for its writer, or find its parts."""
    text = md(f"The run is unfinished: {progress.summary()}; {unfinished_hint(path, progress)}.")
    return text + (" Reload this page when it has published one." if writer_active(path) else "")


def open_context() -> Ctx:
    """Validate the store and pick the run; raise ``StoreProblem`` with a clear message otherwise."""
    path = store_path()
    if not path.exists():
        origin = f"${ENV_STORE}" if os.environ.get(ENV_STORE) else "the default demo store"
        raise StoreProblem(f"No store at {md_code(path)} ({origin}).", BUILD_HINT)
    if path.is_dir():
        raise StoreProblem(f"{md_code(path)} is a directory, not a store file.", BUILD_HINT)
    try:
        version = store_version(path)
        _connection(str(path), version)
    except HalfWrittenStoreError as exc:
        raise problem_from(exc, _lacking_tables(path)) from None
    except StoreError as exc:
        raise problem_from(exc) from None
    except OSError as exc:
        raise StoreProblem(f"Cannot read {md_code(path)}: {md(exc.strerror or exc)}", BUILD_HINT) from None
    try:
        missing = _raw(path, version, Q.missing_tables)
        if missing:
            raise StoreProblem(
                f"{md_code(path.name)} is incomplete: it lacks the tables {', '.join(missing)}.",
                "It may be a half-written or hand-made file. Rebuild it with `precompute run`, or open "
                "the published store (not a `.tmp-*` copy).",
            )
        runs = _raw(path, version, Q.runs)
    except duckdb.Error as exc:
        raise StoreProblem(f"Cannot read {md_code(path.name)}: {md(first_line(exc))}", REBUILD_HINT) from None
    if runs.height == 0:
        raise StoreProblem(
            f"{md_code(path.name)} holds no run yet.",
            "A precompute may still be starting: the store fills in one checkpoint at a time. "
            "Reload this page when it has published its first checkpoint (`precompute info STORE` "
            "shows progress).",
        )
    run_ids = runs["run_id"].to_list()
    run_id = run_ids[0]
    if len(run_ids) > 1:
        run_id = url_select(
            "Run",
            run_ids,
            param="run",
            key="sidebar.run",
            what="run",
            where=st.sidebar,
            help="This store holds several runs; pick the one to explore.",
        )
    checkpoints = _raw(path, version, Q.checkpoints, run_id)
    progress = _progress(path, version, runs, run_id, checkpoints["checkpoint"].to_list())
    if checkpoints.height == 0:
        raise StoreProblem(
            f"Run {md_code(run_id)} in {md_code(path.name)} has no completed checkpoint yet.",
            _unfinished_text(path, progress)
            if progress is not None and progress.unfinished
            else "Reload this page when a precompute has published one (`precompute info STORE` shows progress).",
        )
    if progress is not None and progress.summary():  # shown on every page: its figures are not the whole run's
        st.sidebar.warning(md(f"{path.name}: {progress.summary()}"))
    settings = _raw(path, version, Q.run_settings, run_id)
    top_k = settings["top_k"] or 1
    return Ctx(
        path=str(path),
        version=version,
        run_id=run_id,
        n_runs=len(run_ids),
        top_k=int(top_k),
        min_langs=int(settings["min_langs"] or 2),
        overlap_measure=settings["overlap_measure"],
    )
