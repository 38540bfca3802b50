"""Charts whose axes say what they count: stacked bars over training with a named unit (units, assignments,
outputs) or shares that sum to 1, and reference lines of a baseline over layers.

Built like `explorer.charts` (same checkpoint axis, heights and chance style); a separate module so the pages
that read counts and baselines (Language neurons, Steering, Language, Compression) own their chart code.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import polars as pl

from explorer import charts
from explorer.text import plain


def _data(df: pl.DataFrame) -> alt.Data:
    # Plain records, as explorer.charts hands them to vega.
    return alt.Data(values=df.to_dicts())


def stacked_over_checkpoints(
    df: pl.DataFrame,
    order: Sequence[str],
    *,
    y: str,
    color: str,
    y_title: str,
    color_title: str,
    title: str,
    shares: bool = False,
    colors: Sequence[str] | None = None,
    tooltip: Sequence[str] = (),
    height: int = charts.HEIGHT,
) -> alt.Chart:
    """Bars per checkpoint stacked by ``color``, the y axis titled with what one unit of ``y`` is.

    df: checkpoint, ``y``, ``color`` (one row per checkpoint and ``color`` value). ``shares``: ``y`` is a share of
    the checkpoint's total (the axis runs 0..1). ``colors``: every value ``color`` can take, so that charts drawn
    side by side give a value the same colour."""
    # Languages take their store-wide colour (the same on every page); other series the palette.
    scale = charts.series_scale(color, list(colors) if colors else df[color].to_list())
    y_scale = alt.Scale(domain=[0.0, 1.0]) if shares else alt.Undefined
    value_format = ".2f" if shares else "d"
    return (
        alt.Chart(_data(df))
        .mark_bar()
        .encode(
            x=charts.ckpt_axis(order),
            y=alt.Y(f"{y}:Q", title=plain(y_title), scale=y_scale, stack="zero"),
            color=alt.Color(f"{color}:N", title=plain(color_title), scale=scale),
            order=alt.Order(f"{color}:N"),
            tooltip=["checkpoint:N", f"{color}:N", alt.Tooltip(f"{y}:Q", format=value_format), *tooltip],
        )
        .properties(height=height, title=plain(title))
    )


def lines_with_baseline(
    df: pl.DataFrame,
    *,
    measure: str,
    baseline: str,
    y: str = "value",
    series: str = "series",
    y_title: str,
    title: str,
) -> alt.Chart:
    """A measure over layers with its baseline: one line per ``series`` value (``measure`` solid, ``baseline``
    dashed, as `explorer.charts` draws chance lines), so the gap between the two is the signal.

    df: layer, ``series`` (``measure`` or ``baseline``), ``y``."""
    domain = [plain(measure), plain(baseline)]
    return (
        alt.Chart(_data(df.with_columns(pl.col(series).map_elements(plain, return_dtype=pl.Utf8))))
        .mark_line(point=True)
        .encode(
            x=charts.layer_axis(),
            y=alt.Y(f"{y}:Q", title=plain(y_title), scale=alt.Scale(zero=False)),
            color=alt.Color(f"{series}:N", title=None, scale=alt.Scale(domain=domain)),
            strokeDash=alt.StrokeDash(
                f"{series}:N", scale=alt.Scale(domain=domain, range=[[1, 0], charts.CHANCE_DASH]), legend=None
            ),
            tooltip=[f"{series}:N", "layer:O", alt.Tooltip(f"{y}:Q", format=".3f")],
        )
        .properties(height=charts.HEIGHT, title=plain(title))
    )
