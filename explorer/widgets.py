"""Widgets whose state lives in the URL, so that a copied link reproduces the view.

Every widget that defines a view keeps its value in ``st.query_params``: a link someone pastes seeds the
widget (a value the store does not have falls back to the default, with a message saying so), and each
change writes the URL back. Option labels go through :mod:`explorer.text` here, by how the widget
renders them (markdown in a select slider, plain text in a selectbox), so pages pass raw store values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from explorer.text import md_code, md_func, plain_func

LINK_ICON = "🔗"
NOT_IN_STORE = "which is not in this store"


def _note_bad_link(what: str, raw: str, fallback: Any, where_hint: str = "", missing: str = NOT_IN_STORE) -> None:
    st.error(
        f"**This link asks for {what} {md_code(raw)}, {missing}.** Showing {md_code(fallback)} "
        f"instead; pick another {what} below.{where_hint} Links reproduce a view only with the store "
        "they were made from.",
        icon=LINK_ICON,
    )


def _sync(param: str, key: str, value_str: str) -> None:
    st.query_params[param] = value_str
    st.session_state[f"_url.{key}"] = value_str


def _from_url(
    param: str,
    key: str,
    options_str: list[str],
    default_index: int,
    what: str,
    options: Sequence[Any],
    missing: str = NOT_IN_STORE,
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
    missing: str = NOT_IN_STORE,
) -> Any:
    """A selectbox (or select_slider) whose value is mirrored in ``?param=``.

    ``label`` and ``help`` are markdown (escape store strings in them with :func:`explorer.text.md`);
    ``format_func`` returns raw text, escaped here for the widget that shows it.
    """
    where = where or st
    options = list(options)
    options_str = [str(o) for o in options]
    default_index = options.index(default) if default in options else 0
    _from_url(param, key, options_str, default_index, what or label.lower(), options, missing)
    if slider and len(options) > 1:
        value = where.select_slider(label, options=options, key=key, format_func=md_func(format_func), help=help)
    else:
        value = where.selectbox(label, options, key=key, format_func=plain_func(format_func), help=help)
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


def plain_selectbox(
    label: str, options: Sequence[Any], *, format_func: Callable[[Any], str] = str, where: Any = None, **kwargs: Any
) -> Any:
    """A selectbox not mirrored in the URL (a menu, such as a jump list) whose labels are plain text."""
    return (where or st).selectbox(label, list(options), format_func=plain_func(format_func), **kwargs)
