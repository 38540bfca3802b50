"""What every page shares: the open store, cached queries, URL-backed widgets, downloads, errors.

The store path comes from ``CROSSLING_STORE`` (set by ``explorer STORE``), or defaults to the demo
store ``data/demo.duckdb``. The connection is cached with ``st.cache_resource`` and query results with
``st.cache_data``, both keyed by the store's path and a version stamp (modification time, size,
inode): a precompute that publishes a new checkpoint replaces the file by atomic rename, which
changes the stamp, so the next rerun reopens the file and re-queries it.

Every widget that defines a view keeps its value in the URL (``st.query_params``), so a copied link
reproduces the view on another machine that has the same store file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import polars as pl
import streamlit as st

from explorer import queries as Q
from explorer.paths import BUILD_HINT, ENV_STORE, store_path
from precompute.store import SCHEMA_VERSION, StoreError
from precompute.store import first_line as _first_line

_CTX_KEY = "_crossling_ctx"


# --- which store ------------------------------------------------------------------------------------


def store_version(path: Path) -> tuple[int, int, int]:
    """A stamp that changes whenever the file is rewritten or replaced."""
    st_ = path.stat()
    return (st_.st_mtime_ns, st_.st_size, st_.st_ino)


def _release(con: Q.StoreConnection) -> None:
    with contextlib.suppress(Exception):
        con.close()


@st.cache_resource(max_entries=4, show_spinner=False, on_release=_release)
def _connection(path: str, version: tuple[int, int, int]) -> Q.StoreConnection:
    """One read-only connection per (store, version); queries run on cursors of it."""
    return Q.StoreConnection(path)


@st.cache_data(max_entries=4096, show_spinner=False)
def _cached(path: str, version: tuple[int, int, int], name: str, args: tuple) -> Any:
    return getattr(Q, name)(_connection(path, version), *args)


@dataclass(frozen=True)
class Ctx:
    """The open store and run, as the pages see it."""

    path: str
    version: tuple[int, int, int]
    run_id: str
    n_runs: int
    top_k: int
    min_langs: int

    @property
    def name(self) -> str:
        return Path(self.path).name


def ctx() -> Ctx:
    """The context ``app.py`` set up for this rerun."""
    return st.session_state[_CTX_KEY]


def q(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a function of ``explorer.queries`` through the cache, on the open store."""
    c = ctx()
    return _cached(c.path, c.version, fn.__name__, tuple(args))


def _raw(path: Path, version: tuple[int, int, int], fn: Callable[..., Any], *args: Any) -> Any:
    return _cached(str(path), version, fn.__name__, tuple(args))


# --- text from the store is data, not markdown ------------------------------------------------------------
#
# A store comes from someone else: its strings (model card, ids, names, labels, ...) must not become
# links, images (remote beacons), HTML or formatting when a page shows them. Every store string that
# reaches a markdown-rendering call (st.markdown/caption/title/subheader/info/error, metric and widget
# labels and help, expander labels) goes through md_escape, or md_code inside a code span; free text
# of several lines (the model card) is shown with st.text.

# Markdown's special characters, plus ':' '@' '.' (which GFM needs for autolinks such as http://x,
# www.x, a@b.c, and Streamlit for :directives[]) and '&' (entities); escaped, each shows literally.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#!|~$&:@.])")
_MD_LEADING = re.compile(r"^(\s*)([+\-=])")


def md_escape(text: Any) -> str:
    """``text`` (from the store) as markdown that renders literally: one line, every special escaped."""
    flat = " ".join(str(text).splitlines())
    return _MD_LEADING.sub(r"\1\\\2", _MD_SPECIAL.sub(r"\\\1", flat))


def md_code(text: Any) -> str:
    """``text`` (from the store) as an inline code span: shown literally, in a fence it cannot close."""
    flat = " ".join(str(text).splitlines())
    runs = re.findall(r"`+", flat)
    fence = "`" * (max(map(len, runs), default=0) + 1)
    pad = " " if runs else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


# --- opening the store, with one clear message for each way it can fail -----------------------------


class StoreProblem(Exception):
    """The store cannot be explored; ``title`` says what, ``hint`` what to do."""

    def __init__(self, title: str, hint: str):
        super().__init__(title)
        self.title = title
        self.hint = hint


def _hint_for(message: str) -> str:
    if "no such store" in message or "is a directory" in message:
        return BUILD_HINT
    if "not a readable DuckDB" in message:
        return (
            "This file is not a DuckDB database (or it was cut short while being copied). crossling "
            "stores are single `.duckdb` files written by `precompute`; check that you opened the "
            "right file, or ask for it to be sent again."
        )
    if "truncated or corrupt" in message:
        return (
            "The file is damaged or was cut short (an interrupted copy or download?). Ask for it again, or "
            "rebuild it with `precompute run`."
        )
    if "it defines" in message:
        return (
            "crossling stores hold only tables of data; this file also carries SQL (views or macros), which "
            "the explorer refuses to run. Ask for a store written by `precompute`."
        )
    if "no meta table" in message or "not a crossling store" in message:
        return (
            "This DuckDB file was not written by crossling. Open a store written by `precompute run` "
            "or `precompute demo`."
        )
    if "schema version" in message:
        return (
            f"This explorer reads schema version {SCHEMA_VERSION}. Open the store with the crossling "
            "version that wrote it, or rebuild it with `precompute run` from this version."
        )
    return "Check the file, or rebuild it with `precompute`."


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
    except StoreError as exc:
        raise StoreProblem(f"Cannot open the store: {md_escape(exc)}", _hint_for(str(exc))) from None
    except OSError as exc:
        raise StoreProblem(f"Cannot read {md_code(path)}: {md_escape(exc.strerror or exc)}", BUILD_HINT) from None
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
        raise StoreProblem(f"Cannot read {md_code(path.name)}: {md_escape(_first_line(exc))}",
                           "Rebuild it with `precompute run`.") from None
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
            "Run", run_ids, param="run", key="sidebar.run", what="run", where=st.sidebar,
            help="This store holds several runs; pick the one to explore.",
        )
    checkpoints = _raw(path, version, Q.checkpoints, run_id)
    if checkpoints.height == 0:
        raise StoreProblem(
            f"Run {md_code(run_id)} in {md_code(path.name)} has no completed checkpoint yet.",
            "The precompute is probably still working on its first checkpoint. Reload this page when "
            "it has published one.",
        )
    settings = _raw(path, version, Q.run_settings, run_id)
    top_k = settings["top_k"] or 1
    return Ctx(
        path=str(path), version=version, run_id=run_id, n_runs=len(run_ids),
        top_k=int(top_k), min_langs=int(settings["min_langs"] or 2),
    )



def show_problem(problem: StoreProblem) -> None:
    st.error(f"**{problem.title}**\n\n{problem.hint}", icon=":material/error:")


def show_unexpected(exc: BaseException) -> None:
    """An error no page expected: one line, what to do, no traceback."""
    if isinstance(exc, duckdb.Error):
        st.error(
            f"**The store could not answer this view:** {md_escape(_first_line(exc))}\n\n"
            "The file may be incomplete or from another crossling version. Reload the page; if it "
            "persists, rebuild the store with `precompute run`.",
            icon=":material/error:",
        )
    else:
        st.error(
            f"**Something went wrong in this view:** {type(exc).__name__}: {md_escape(_first_line(exc))}\n\n"
            "Reload the page or pick other settings; if it persists, please report it with the link "
            "to this view.",
            icon=":material/error:",
        )


# --- the sidebar ----------------------------------------------------------------------------------------


def sidebar(c: Ctx) -> None:
    """Which store is open, and its provenance."""
    runs = q(Q.runs)
    run = runs.filter(pl.col("run_id") == c.run_id).row(0, named=True)
    meta = dict(q(Q.meta).iter_rows())
    ck = q(Q.checkpoints, c.run_id)
    size_mb = c.version[1] / 1e6
    with st.sidebar:
        st.markdown(f"**Store** {md_code(c.name)}")
        st.caption(f"{md_escape(c.path)}  \n{size_mb:,.1f} MB · opened read-only")
        st.markdown(f"**Model** {md_code(run['model_id'])}")
        first, last = ck.row(0, named=True), ck.row(-1, named=True)
        st.caption(
            f"{ck.height} checkpoint{'s' if ck.height != 1 else ''}: {md_code(first['checkpoint'])} … "
            f"{md_code(last['checkpoint'])}  \ntop-K = {c.top_k} · shared = top-K in ≥ {c.min_langs} languages"
        )
        with st.expander("Provenance"):
            if run.get("model_card"):
                st.text(run["model_card"])
            rows = {
                "run": c.run_id,
                "crossling": meta.get("crossling_version", "?"),
                "schema": meta.get("schema_version", "?"),
                "store created": meta.get("created_at", "?"),
                "run started": str(run.get("started_at") or "?"),
                "run finished": str(run.get("finished_at") or "not finished"),
                "device / dtype": f"{run.get('device') or '?'} / {run.get('dtype') or '?'}",
                "concept set sha256": (run.get("concept_set_sha256") or "?")[:16] + "…",
            }
            st.markdown("\n".join(f"- **{k}**: {md_code(v)}" for k, v in rows.items()))
            with contextlib.suppress(json.JSONDecodeError, TypeError):
                st.caption("Run config")
                st.json(json.loads(run["config_json"]), expanded=False)
            with contextlib.suppress(json.JSONDecodeError, TypeError):
                st.caption("Package versions")
                st.json(json.loads(run["packages_json"]), expanded=False)


# --- widgets whose state lives in the URL ---------------------------------------------------------------


def _note_bad_link(what: str, raw: str, fallback: Any, where_hint: str = "", missing: str = "which is not in this store") -> None:
    st.error(
        f"**This link asks for {what} {md_code(raw)}, {missing}.** Showing {md_code(fallback)} "
        f"instead; pick another {what} below.{where_hint} Links reproduce a view only with the store "
        "they were made from.",
        icon=":material/link_off:",
    )


def _sync(param: str, key: str, value_str: str) -> None:
    st.query_params[param] = value_str
    st.session_state[f"_url.{key}"] = value_str


def _from_url(
    param: str, key: str, options_str: list[str], default_index: int, what: str, options: Sequence[Any],
    missing: str = "which is not in this store",
) -> None:
    """Seed the widget's session state from the URL when the URL changed (a new link)."""
    raw = st.query_params.get(param)
    last = st.session_state.get(f"_url.{key}")
    # A URL value we did not write ourselves (a pasted or clicked link), or a page we re-enter.
    if raw is not None and (raw != last or key not in st.session_state):
        if raw in options_str:
            st.session_state[key] = options[options_str.index(raw)]
        else:
            st.session_state[key] = options[default_index]
            _note_bad_link(what, raw, options_str[default_index], missing=missing)
    elif key not in st.session_state or st.session_state[key] not in options:
        st.session_state[key] = options[default_index]


def url_select(
    label: str,
    options: Sequence[Any],
    *,
    param: str,
    key: str,
    default: Any = None,
    what: str | None = None,
    format_func: Callable[[Any], str] = str,
    where: Any = None,
    slider: bool = False,
    help: str | None = None,
    missing: str = "which is not in this store",
) -> Any:
    """A selectbox (or select_slider) whose value is mirrored in ``?param=``."""
    where = where or st
    options = list(options)
    options_str = [str(o) for o in options]
    default_index = options.index(default) if default in options else 0
    _from_url(param, key, options_str, default_index, what or label.lower(), options, missing)
    if slider and len(options) > 1:
        value = where.select_slider(label, options=options, key=key, format_func=format_func, help=help)
    else:
        value = where.selectbox(label, options, key=key, format_func=format_func, help=help)
    _sync(param, key, str(value))
    return value


def url_int(
    label: str,
    *,
    param: str,
    key: str,
    min_value: int,
    max_value: int,
    default: int,
    what: str | None = None,
    where: Any = None,
    help: str | None = None,
) -> int:
    """An integer input mirrored in ``?param=``; out-of-range links fall back with a message."""
    where = where or st
    what = what or label.lower()
    default = min(max(default, min_value), max_value)
    raw = st.query_params.get(param)
    last = st.session_state.get(f"_url.{key}")
    if raw is not None and (raw != last or key not in st.session_state):
        try:
            value = int(raw)
            ok = min_value <= value <= max_value
        except ValueError:
            ok = False
        if ok:
            st.session_state[key] = value
        else:
            st.session_state[key] = default
            _note_bad_link(what, raw, default, f" ({what} runs from {min_value} to {max_value}.)")
    elif key not in st.session_state or not (
        isinstance(st.session_state[key], int) and min_value <= st.session_state[key] <= max_value
    ):
        st.session_state[key] = default
    value = int(where.number_input(label, min_value=min_value, max_value=max_value, step=1, key=key, help=help))
    _sync(param, key, str(value))
    return value


# --- showing data: charts and tables with downloads -----------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120] or "data"


def _parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def downloads(df: pl.DataFrame, name: str) -> None:
    """CSV and Parquet downloads of a frame, generated only when clicked."""
    base = _slug(f"{Path(ctx().path).stem}_{name}")
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "CSV", data=lambda: df.write_csv(), file_name=f"{base}.csv", mime="text/csv",
            on_click="ignore", icon=":material/download:", key=f"dl.csv.{name}", type="tertiary",
        )
        st.download_button(
            "Parquet", data=lambda: _parquet_bytes(df), file_name=f"{base}.parquet",
            mime="application/vnd.apache.parquet", on_click="ignore", icon=":material/download:",
            key=f"dl.parquet.{name}", type="tertiary",
        )


def chart(altair_chart: Any, df: pl.DataFrame, name: str) -> None:
    """An altair chart with downloads of the data it draws."""
    st.altair_chart(altair_chart, width="stretch")
    downloads(df, name)


def table(
    df: pl.DataFrame,
    name: str,
    *,
    column_config: dict[str, Any] | None = None,
    height: int | str = "auto",
    column_order: Sequence[str] | None = None,
) -> None:
    """A table with CSV/Parquet downloads of exactly its rows."""
    st.dataframe(
        df, hide_index=True, column_config=column_config, column_order=column_order, width="stretch",
        height=height if isinstance(height, str) or df.height * 35 + 40 > height else "auto",
    )
    downloads(df.drop([c for c in df.columns if c == "open"]), name)


def with_neuron_links(df: pl.DataFrame, concept: str | None = None) -> pl.DataFrame:
    """Add an ``open`` column linking each (layer, unit) row to its Neuron page (opened on ``concept``,
    or on the row's own concept_id)."""
    extra = f"&run={quote(ctx().run_id)}" if ctx().n_runs > 1 else ""
    if concept is not None:
        extra += f"&concept={quote(concept)}"
        return df.with_columns(
            pl.format("neuron?layer={}&unit={}" + extra, pl.col("layer"), pl.col("unit")).alias("open"))
    if "concept_id" in df.columns:
        return df.with_columns(
            pl.format("neuron?layer={}&unit={}&concept={}" + extra, pl.col("layer"), pl.col("unit"),
                      pl.col("concept_id").map_elements(quote, return_dtype=pl.Utf8)).alias("open"))
    return df.with_columns(
        pl.format("neuron?layer={}&unit={}" + extra, pl.col("layer"), pl.col("unit")).alias("open"))


LINK_CONFIG = {"open": st.column_config.LinkColumn("neuron", display_text="open ↗", width="small")}


def neuron_link(layer: int, unit: int, label: str | None = None, concept: str | None = None) -> None:
    """A link that opens the Neuron page on this unit, in this tab."""
    params = {"layer": str(layer), "unit": str(unit)}
    if concept is not None:
        params["concept"] = concept
    if ctx().n_runs > 1:
        params["run"] = ctx().run_id
    st.page_link(
        "views/neuron.py", label=label or f"layer {layer} · unit {unit}", icon=":material/neurology:",
        query_params=params,
    )


def empty(message: str) -> None:
    st.info(message, icon=":material/info:")


# --- shared lookups ---------------------------------------------------------------------------------------


def checkpoint_order() -> list[str]:
    return q(Q.checkpoints, ctx().run_id)["checkpoint"].to_list()


def checkpoint_label_func() -> Callable[[str], str]:
    """Formats a checkpoint name with its step (a pure closure: AppTest calls it outside the run)."""
    ck = q(Q.checkpoints, ctx().run_id)
    steps = dict(zip(ck["checkpoint"].to_list(), ck["step"].to_list()))

    def fmt(name: str) -> str:
        step = steps.get(name)
        return f"{name} (step {step:,})" if step is not None and str(step) not in name else name

    return fmt


def checkpoint_label(name: str) -> str:
    return checkpoint_label_func()(name)


def concept_label_func() -> Callable[[str], str]:
    cc = q(Q.concepts)
    labels = dict(zip(cc["concept_id"].to_list(), cc["label"].to_list()))

    def fmt(cid: str) -> str:
        label = labels.get(cid)
        return f"{label} ({cid})" if label and label != cid else cid

    return fmt


def language_label_func() -> Callable[[str], str]:
    ll = q(Q.languages)
    names = dict(zip(ll["lang"].to_list(), ll["name"].to_list()))

    def fmt(lang: str) -> str:
        name = names.get(lang)
        return f"{lang} · {name}" if name else lang

    return fmt


def pick_checkpoint(label: str = "Checkpoint", *, param: str = "ckpt", key: str, default: str | None = None, where: Any = None) -> str:
    """A slider over training, mirrored in the URL."""
    order = checkpoint_order()
    return url_select(
        label, order, param=param, key=key, default=default if default is not None else order[-1],
        what="checkpoint", slider=True, where=where,
    )


def pick_concept(*, key: str, param: str = "concept", where: Any = None) -> str:
    ids = q(Q.concepts)["concept_id"].to_list()
    if not ids:
        raise StoreProblem("The store lists no concepts.", "Rebuild it with `precompute run`.")
    return url_select("Concept", ids, param=param, key=key, what="concept", format_func=concept_label_func(), where=where)


def pick_language(*, key: str, param: str = "lang", where: Any = None, default: str | None = None) -> str:
    langs = q(Q.languages)["lang"].to_list()
    if not langs:
        raise StoreProblem("The store lists no languages.", "Rebuild it with `precompute run`.")
    return url_select("Language", langs, param=param, key=key, what="language", format_func=language_label_func(), where=where, default=default)


def pick_k(*, key: str, param: str = "k", default: int = 10, where: Any = None) -> int:
    top_k = ctx().top_k
    return url_int(
        "Top-K", param=param, key=key, min_value=1, max_value=top_k, default=min(default, top_k),
        what="top-K", where=where, help=f"How many of the stored top-{top_k} units per language to show.",
    )
