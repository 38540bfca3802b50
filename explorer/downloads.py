"""Showing data with its downloads: every chart and table comes with CSV and Parquet of exactly its rows.

The files are generated only when a button is clicked. Button keys come from the download's name; a
name used twice in one rerun (the Compare page with the same checkpoint on both sides) gets a numbered
key, so equal names never collide.

Store strings are someone else's data: in a CSV, a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return would run as a formula in a spreadsheet, so :func:`csv_bytes` prefixes such a cell with
a single quote (OWASP's advice for CSV injection). Charts draw only finite numbers: :func:`chart` leaves
NaN and infinite values out of what the chart draws (vega cannot read them) and says so under the chart;
the downloads keep every value as stored.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import streamlit as st

from explorer.store_context import ctx

_SEEN_KEY = "_crossling_download_names"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:120] or "data"


#: What makes a spreadsheet read a cell as a formula (OWASP, CSV injection): the cell's first character.
FORMULA_START = re.compile(r"^[=+\-@\t\r]")


def csv_safe(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with every text cell that a spreadsheet would run as a formula prefixed by a single quote."""
    exprs = []
    for name, dtype in df.schema.items():
        if dtype == pl.Utf8 or isinstance(dtype, (pl.Categorical, pl.Enum)):
            col = pl.col(name).cast(pl.Utf8)
            exprs.append(
                pl.when(col.str.contains(FORMULA_START.pattern)).then(pl.lit("'") + col).otherwise(col).alias(name)
            )
    return df.with_columns(exprs) if exprs else df


def csv_bytes(df: pl.DataFrame) -> bytes:
    """``df`` as a CSV file whose text cannot run as a spreadsheet formula (:func:`csv_safe`)."""
    return csv_safe(df).write_csv().encode("utf-8")


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
            "CSV",
            data=lambda: csv_bytes(df),
            file_name=f"{base}.csv",
            mime="text/csv",
            on_click="ignore",
            icon="⬇️",
            key=f"dl.csv.{key}",
            type="tertiary",
        )
        st.download_button(
            "Parquet",
            data=lambda: parquet_bytes(df),
            file_name=f"{base}.parquet",
            mime="application/vnd.apache.parquet",
            on_click="ignore",
            icon="⬇️",
            key=f"dl.parquet.{key}",
            type="tertiary",
        )


def _finite_row(row: Any, left_out: Counter) -> Any:
    if not isinstance(row, dict):
        return row
    clean = {}
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            left_out[(str(key), "NaN" if math.isnan(value) else "+inf" if value > 0 else "-inf")] += 1
            value = None
        clean[key] = value
    return clean


def _finite_frame(data: Any, left_out: Counter) -> Any:
    """A polars or pandas frame with its NaN and infinite floats as nulls (counted in ``left_out``)."""
    frame = pl.from_pandas(data) if not isinstance(data, pl.DataFrame) else data
    exprs = []
    for name, dtype in frame.schema.items():
        if dtype.is_float():
            col = pl.col(name)
            for kind, bad in (("NaN", col.is_nan()), ("+inf", col == math.inf), ("-inf", col == -math.inf)):
                n = int(frame.select(bad.fill_null(False).sum()).item())
                if n:
                    left_out[(name, kind)] += n
            exprs.append(pl.when(col.is_finite()).then(col).otherwise(None).alias(name))
    return frame.with_columns(exprs) if exprs else frame


def finite_chart(altair_chart: Any) -> tuple[Any, Counter]:
    """A copy of ``altair_chart`` whose data holds only finite numbers (NaN and infinity become nulls, which
    vega leaves out), and how many values of which column and kind were left out."""
    import altair as alt

    left_out: Counter = Counter()
    chart_copy = altair_chart.copy(deep=True)

    def walk(obj: Any) -> None:
        if not isinstance(obj, alt.SchemaBase):
            return
        data = obj._kwds.get("data", alt.Undefined) if hasattr(obj, "_kwds") else alt.Undefined
        mine: Counter = Counter()  # per data set: layers that draw the same rows count them once (max, below)
        if isinstance(data, alt.InlineData) or (isinstance(data, alt.SchemaBase) and "values" in data._kwds):
            values = data._kwds.get("values")
            if isinstance(values, list):
                data._kwds["values"] = [_finite_row(row, mine) for row in values]
        elif isinstance(data, pl.DataFrame) or type(data).__name__ == "DataFrame":
            obj._kwds["data"] = _finite_frame(data, mine)
        left_out.update({key: n - left_out[key] for key, n in mine.items() if n > left_out[key]})
        for attr in ("layer", "hconcat", "vconcat", "concat"):
            subs = obj._kwds.get(attr)
            if isinstance(subs, list):
                for sub in subs:
                    walk(sub)
        walk(obj._kwds.get("spec"))

    walk(chart_copy)
    return chart_copy, left_out


def left_out_text(left_out: Counter) -> str:
    """'Not drawn: 3 values that are NaN or infinite (accuracy: 2 NaN, 1 +inf). The downloads keep them.'"""
    by_column: dict[str, list[str]] = {}
    for (column, kind), n in sorted(left_out.items()):
        by_column.setdefault(column, []).append(f"{n} {kind}")
    total = sum(left_out.values())
    parts = "; ".join(f"{column}: {', '.join(kinds)}" for column, kinds in by_column.items())
    return (
        f"Not drawn: {total} value{'s' if total != 1 else ''} that {'are' if total != 1 else 'is'} NaN or "
        f"infinite ({parts}). The downloads keep them as stored."
    )


def fit_width(altair_chart: Any) -> Any:
    """``altair_chart`` sized to fill the page's width while its height stays the plot's own. Streamlit's default
    (``autosize: fit``) squeezes a chart's axes, rotated checkpoint labels and title into the height the chart
    asks for, which leaves a short chart a strip a few pixels tall; ``fit-x`` fits only the width."""
    import altair as alt

    if getattr(altair_chart, "autosize", alt.Undefined) is not alt.Undefined:
        return altair_chart
    return altair_chart.properties(autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))


def chart(altair_chart: Any, df: pl.DataFrame, name: str) -> None:
    """An altair chart with downloads of the data it draws; NaN and infinite values are not drawn (vega cannot
    read them), and a caption says how many of which column were left out."""
    from explorer.text import md

    drawn, left_out = finite_chart(altair_chart)
    st.altair_chart(fit_width(drawn), width="stretch")
    if left_out:
        st.caption(md(left_out_text(left_out)))
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
        df,
        hide_index=True,
        column_config=column_config,
        column_order=column_order,
        width="stretch",
        height=height if isinstance(height, str) or df.height * 35 + 40 > height else "auto",
    )
    downloads(df.drop([c for c in df.columns if c == "open"]), name)
