"""Showing data with its downloads: every chart and table comes with CSV and Parquet of exactly its rows.

The files are generated only when a button is clicked. Button keys come from the download's name; a
name used twice in one rerun (the Compare page with the same checkpoint on both sides) gets a numbered
key, so equal names never collide.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import streamlit as st

from explorer.store_context import ctx

_SEEN_KEY = "_crossling_download_names"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120] or "data"


def parquet_bytes(df: pl.DataFrame) -> bytes:
    """``df`` as a Parquet file, in memory."""
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def start_rerun() -> None:
    """Forget the download names of the previous rerun (``app.py`` calls this before a page runs)."""
    st.session_state[_SEEN_KEY] = {}


def _key(name: str) -> str:
    seen: dict[str, int] = st.session_state.setdefault(_SEEN_KEY, {})
    n = seen.get(name, 0)
    seen[name] = n + 1
    return name if n == 0 else f"{name}#{n}"


def downloads(df: pl.DataFrame, name: str) -> None:
    """CSV and Parquet downloads of a frame, generated only when clicked."""
    base = _slug(f"{Path(ctx().path).stem}_{name}")
    key = _key(name)
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "CSV", data=lambda: df.write_csv(), file_name=f"{base}.csv", mime="text/csv",
            on_click="ignore", icon="⬇️", key=f"dl.csv.{key}", type="tertiary",
        )
        st.download_button(
            "Parquet", data=lambda: parquet_bytes(df), file_name=f"{base}.parquet",
            mime="application/vnd.apache.parquet", on_click="ignore", icon="⬇️",
            key=f"dl.parquet.{key}", type="tertiary",
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
