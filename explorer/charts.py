"""Altair chart builders. Each takes a polars frame (as the queries return it) and the checkpoint
order, and returns a chart; the pages render them with ``explorer.downloads.chart`` (which adds downloads).
Every title goes through :func:`explorer.text.plain` (titles are built from store strings).

Checkpoints are an ordinal axis in training order (their names, sorted by step), so uneven
schedules (0, 1000, 2000, 4000, ...) stay readable.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import polars as pl

from explorer.text import plain

HEIGHT = 360
SEQ_SCHEME = "viridis"
COUNT_SCHEME = "blues"


def _row_step(n_rows: int, target: int = HEIGHT) -> alt.Step:
    """Height of a chart with one band per row (a fixed pixel height is not kept for discrete y)."""
    return alt.Step(max(12, min(40, target // max(n_rows, 1))))


def finite_min(series: pl.Series, default: float = 0.0) -> float:
    """The smallest finite value of ``series`` (NaN and infinity left out, as the chart leaves them out), else
    ``default``: what a scale's domain may be built from (vega cannot read NaN or infinity)."""
    finite = series.cast(pl.Float64).filter(series.cast(pl.Float64).is_finite())
    return float(finite.min()) if finite.len() else default


def _data(df: pl.DataFrame) -> alt.Data:
    # Plain records: no dependence on altair's dataframe interchange for polars.
    return alt.Data(values=df.to_dicts())


def _ckpt_x(order: Sequence[str], title: str = "checkpoint (training order)") -> alt.X:
    return alt.X(
        "checkpoint:O",
        sort=list(order),
        title=title,
        scale=alt.Scale(domain=list(order)),
        axis=alt.Axis(labelAngle=-35, labelLimit=120),
    )


def probe_heatmap(df: pl.DataFrame, order: Sequence[str], metric: str = "accuracy") -> alt.Chart:
    """LID probe accuracy as a layer x checkpoint heatmap (layer 0 = embeddings, at the bottom)."""
    lo = finite_min(df[metric], 0.5) if df.height else 0.0
    return (
        alt.Chart(_data(df))
        .mark_rect()
        .encode(
            x=_ckpt_x(order),
            y=alt.Y("layer:O", sort="descending", title="layer (0 = embeddings)"),
            color=alt.Color(
                f"{metric}:Q",
                title=metric.replace("_", " "),
                scale=alt.Scale(scheme=SEQ_SCHEME, domain=[min(lo, 0.5), 1.0]),
            ),
            tooltip=[
                "checkpoint:N",
                "step:Q",
                "layer:O",
                alt.Tooltip(f"{metric}:Q", format=".3f"),
                alt.Tooltip("accuracy_std:Q", format=".3f"),
                "n_test:Q",
            ],
        )
        .properties(
            height=_row_step(df["layer"].n_unique() if df.height else 1),
            title=f"LID probe {metric.replace('_', ' ')}: layer x checkpoint",
        )
    )


def lines_over_checkpoints(
    df: pl.DataFrame,
    order: Sequence[str],
    y: str,
    *,
    color: str | None = None,
    y_title: str | None = None,
    title: str = "",
    domain: tuple[float, float] | None = None,
    tooltip: Sequence[str] = (),
    height: int = HEIGHT,
    highlight: str | None = None,
) -> alt.Chart:
    """One line per ``color`` value across checkpoints."""
    scale = alt.Scale(domain=list(domain)) if domain else alt.Scale(zero=False)
    enc: dict = {
        "x": _ckpt_x(order),
        "y": alt.Y(f"{y}:Q", title=y_title or y.replace("_", " "), scale=scale),
        "tooltip": ["checkpoint:N", "step:Q", alt.Tooltip(f"{y}:Q", format=".3f"), *tooltip]
        + ([f"{color}:N"] if color else []),
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color.replace("_", " "))
    base = alt.Chart(_data(df)).mark_line(point=True).encode(**enc)
    if highlight and color:
        base = base.encode(
            opacity=alt.condition(alt.datum[color] == highlight, alt.value(1.0), alt.value(0.35)),
            strokeWidth=alt.condition(alt.datum[color] == highlight, alt.value(3), alt.value(1.5)),
        )
    return base.properties(height=height, title=plain(title))


def lines_over_layers(
    df: pl.DataFrame,
    y: str,
    *,
    color: str,
    title: str = "",
    y_title: str | None = None,
    domain: tuple[float, float] | None = None,
) -> alt.Chart:
    scale = alt.Scale(domain=list(domain)) if domain else alt.Scale(zero=False)
    return (
        alt.Chart(_data(df))
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:O", title="layer (0 = embeddings)", axis=alt.Axis(labelAngle=0)),
            y=alt.Y(f"{y}:Q", title=y_title or y, scale=scale),
            color=alt.Color(f"{color}:N", title=color),
            tooltip=[f"{color}:N", "layer:O", alt.Tooltip(f"{y}:Q", format=".3f")],
        )
        .properties(height=HEIGHT, title=plain(title))
    )


def lang_heatmap(
    df: pl.DataFrame,
    value: str,
    *,
    title: str,
    domain: tuple[float, float] = (0.0, 1.0),
    langs: Sequence[str] | None = None,
) -> alt.Chart:
    """A language x language matrix with the value written in each cell."""
    order = list(langs) if langs else sorted(set(df["lang_a"].to_list()) | set(df["lang_b"].to_list()))
    base = alt.Chart(_data(df)).encode(
        x=alt.X("lang_b:N", sort=order, title=None, axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("lang_a:N", sort=order, title=None),
    )
    rect = base.mark_rect().encode(
        color=alt.Color(
            f"{value}:Q", title=value.replace("_", " "), scale=alt.Scale(scheme=SEQ_SCHEME, domain=list(domain))
        ),
        tooltip=["lang_a:N", "lang_b:N", alt.Tooltip(f"{value}:Q", format=".3f")],
    )
    parts = [rect]
    if len(order) <= 16:
        parts.append(
            base.mark_text(fontSize=10).encode(
                text=alt.Text(f"{value}:Q", format=".2f"),
                color=alt.condition(
                    alt.datum[value] > (domain[0] + domain[1]) / 2, alt.value("black"), alt.value("white")
                ),
            )
        )
    return alt.layer(*parts).properties(height=HEIGHT, title=plain(title))


def rank_lines(
    df: pl.DataFrame, order: Sequence[str], *, color: str = "lang", title: str = "", k: int | None = None
) -> alt.Chart:
    """Rank trajectories (rank 1 at the top, log scale); gaps where the unit left the top-K."""
    return (
        alt.Chart(_data(df))
        .mark_line(point=True)
        .encode(
            x=_ckpt_x(order),
            y=alt.Y(
                "rank:Q", title="rank (1 = best)", scale=alt.Scale(type="log", reverse=True, domain=[1, max(k or 1, 2)])
            ),
            color=alt.Color(f"{color}:N"),
            tooltip=["checkpoint:N", f"{color}:N", "rank:Q", alt.Tooltip("ap:Q", format=".3f")],
        )
        .properties(height=HEIGHT, title=plain(title))
    )


def concept_checkpoint_grid(
    df: pl.DataFrame,
    order: Sequence[str],
    *,
    value: str,
    rows: Sequence[str],
    title: str,
    row_field: str = "concept_id",
    max_value: int | None = None,
) -> alt.Chart:
    """A (concept x checkpoint) grid coloured by a count, e.g. languages where a unit is top-K."""
    domain = [0, max_value] if max_value else alt.Undefined
    return (
        alt.Chart(_data(df))
        .mark_rect()
        .encode(
            x=_ckpt_x(order),
            y=alt.Y(f"{row_field}:N", sort=list(rows), title=row_field.replace("_", " ")),
            color=alt.Color(
                f"{value}:Q",
                title=value.replace("_", " "),
                scale=alt.Scale(domain=domain, range=["#c6dbef", "#08306b"]),
            ),
            tooltip=[f"{c}:{'Q' if df[c].dtype.is_numeric() else 'N'}" for c in df.columns if c != "step"],
        )
        .properties(height=alt.Step(18 if len(rows) > 8 else 26), title=plain(title))
    )


def status_bars(df: pl.DataFrame, *, title: str) -> alt.Chart:
    """Per language: how many top-K units stayed, entered, left between two checkpoints."""
    colors = alt.Scale(domain=["stayed", "entered", "left"], range=["#4c78a8", "#54a24b", "#e45756"])
    return (
        alt.Chart(_data(df))
        .mark_bar()
        .encode(
            x=alt.X("lang:N", title="language", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("n:Q", title="units"),
            color=alt.Color("status:N", scale=colors, sort=["stayed", "entered", "left"]),
            xOffset=alt.XOffset("status:N", sort=["stayed", "entered", "left"]),
            tooltip=["lang:N", "status:N", "n:Q"],
        )
        .properties(height=HEIGHT, title=plain(title))
    )


def stacked_counts(df: pl.DataFrame, order: Sequence[str], *, y: str, color: str, title: str) -> alt.Chart:
    return (
        alt.Chart(_data(df))
        .mark_bar()
        .encode(
            x=_ckpt_x(order),
            y=alt.Y(f"{y}:Q", title=y),
            color=alt.Color(f"{color}:N", title=color),
            tooltip=["checkpoint:N", f"{color}:N", f"{y}:Q"],
        )
        .properties(height=HEIGHT, title=plain(title))
    )


def layer_checkpoint_heatmap(
    df: pl.DataFrame, order: Sequence[str], *, value: str, title: str, scheme: str = SEQ_SCHEME
) -> alt.Chart:
    return (
        alt.Chart(_data(df))
        .mark_rect()
        .encode(
            x=_ckpt_x(order),
            y=alt.Y("layer:O", sort="descending"),
            color=alt.Color(f"{value}:Q", title=value, scale=alt.Scale(scheme=scheme)),
            tooltip=["checkpoint:N", "layer:O", alt.Tooltip(f"{value}:Q", format=".3f")],
        )
        .properties(height=_row_step(df["layer"].n_unique() if df.height else 1), title=plain(title))
    )


# --- chance levels and intervals: layered onto the charts above ---------------------------------

CHANCE_COLOR = "#7f7f7f"
CHANCE_DASH = [5, 4]


def chance_lines(
    df: pl.DataFrame,
    order: Sequence[str],
    y: str,
    *,
    color: str | None = None,
    y_title: str | None = None,
    label: str = "chance",
) -> alt.Chart:
    """Dashed reference lines of a chance level over checkpoints (one per ``color`` value, else one grey line).

    df: checkpoint, ``y`` (and ``color``); every point carries ``label`` in its tooltip (the spec names it)."""
    data = df.with_columns(reference=pl.lit(label))
    enc: dict = {
        "x": _ckpt_x(order),
        "y": alt.Y(f"{y}:Q", title=y_title or y.replace("_", " ")),
        "tooltip": ["reference:N", "checkpoint:N", alt.Tooltip(f"{y}:Q", format=".4f")]
        + ([f"{color}:N"] if color else []),
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color.replace("_", " "))
        return alt.Chart(_data(data)).mark_line(strokeDash=CHANCE_DASH, strokeWidth=1.5).encode(**enc)
    return alt.Chart(_data(data)).mark_line(strokeDash=CHANCE_DASH, strokeWidth=1.5, color=CHANCE_COLOR).encode(**enc)


def interval_band(
    df: pl.DataFrame,
    x: alt.X,
    lo: str = "lo",
    hi: str = "hi",
    *,
    color: str | None = None,
    y_title: str | None = None,
) -> alt.Chart:
    """A translucent band from ``lo`` to ``hi`` (a bootstrap interval) along ``x``; rows with no bounds are left out."""
    data = df.filter(pl.col(lo).is_not_null() & pl.col(hi).is_not_null())
    enc: dict = {
        "x": x,
        "y": alt.Y(f"{lo}:Q", title=y_title or lo),
        "y2": alt.Y2(f"{hi}:Q"),
        "tooltip": [alt.Tooltip(f"{lo}:Q", format=".4f"), alt.Tooltip(f"{hi}:Q", format=".4f")]
        + ([f"{color}:N"] if color else []),
    }
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color.replace("_", " "))
        return alt.Chart(_data(data)).mark_area(opacity=0.2).encode(**enc)
    return alt.Chart(_data(data)).mark_area(opacity=0.2, color="#4c78a8").encode(**enc)


def ckpt_axis(order: Sequence[str]) -> alt.X:
    """The checkpoint x axis of every chart over training (for bands layered onto them)."""
    return _ckpt_x(order)


def layer_axis() -> alt.X:
    """The residual-stream layer x axis of the probe charts (0 = embeddings)."""
    return alt.X("layer:O", title="layer (0 = embeddings)", axis=alt.Axis(labelAngle=0))


def with_chance(
    chart: alt.Chart, *, band: alt.Chart | None = None, reference: alt.Chart | None = None
) -> alt.LayerChart:
    """``chart`` with its interval band below and its chance line above (the scales are shared); the title moves
    to the layer, where Vega-Lite draws it."""
    title = chart.title
    chart = chart.copy()
    chart.title = alt.Undefined
    layered = alt.layer(*[c for c in (band, chart, reference) if c is not None])
    return layered if title is alt.Undefined else layered.properties(title=title)


def response_histogram(df: pl.DataFrame, *, title: str, color: str = "#4c78a8") -> alt.Chart:
    """One group's response histogram (bins ``bin_lo``..``bin_hi``, height ``share`` of the group's contexts);
    `explorer.views.neuron` draws the concept's and the other contexts' side by side on the same bins."""
    return (
        alt.Chart(_data(df))
        .mark_bar(color=color)
        .encode(
            x=alt.X("bin_lo:Q", bin="binned", title="pooled response"),
            x2="bin_hi:Q",
            y=alt.Y("share:Q", title="share of the contexts", scale=alt.Scale(domain=[0, 1])),
            tooltip=["bin_lo:Q", "bin_hi:Q", "n:Q", "share:Q"],
        )
        .properties(height=220, title=plain(title))
    )


def token_grid(df: pl.DataFrame, order: Sequence[str], *, title: str) -> alt.Chart:
    """(rank x checkpoint) grid of tokens: each cell the token's text (drawn by vega as text) on a colour of
    its logit, so a token that keeps its place over training reads as a row of the same word."""
    data = df.with_columns(pl.col("token").map_elements(plain, return_dtype=pl.Utf8))
    base = alt.Chart(_data(data)).encode(
        x=_ckpt_x(order),
        y=alt.Y("rank:O", title="rank"),
        tooltip=["checkpoint:N", "rank:Q", "token:N", "token_id:Q", "logit:Q"],
    )
    rect = base.mark_rect().encode(color=alt.Color("logit:Q", scale=alt.Scale(scheme="blueorange", domainMid=0)))
    text = base.mark_text(fontSize=11, limit=110).encode(text="token:N")
    return (rect + text).properties(height=alt.Step(22), title=plain(title))
