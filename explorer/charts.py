"""Altair chart builders. Each takes a polars frame (as the queries return it) and the checkpoint
order, and returns a chart; the pages render them with ``explorer.downloads.chart`` (which adds downloads).
Every title goes through :func:`explorer.text.plain` (titles are built from store strings).

Checkpoints are an ordinal axis in training order (their names, sorted by step), so uneven
schedules (0, 1000, 2000, 4000, ...) stay readable; every checkpoint is labelled (rotated, never thinned out),
and every row of a heatmap is labelled too.

Colours: a language has one colour on every page (:func:`language_colors`, by the store's language order over a
palette of 24 distinct colours), and every series of a chart has its colour from an explicit scale (domain and
range), so a legend lists every series and the layers of one chart (line, interval band, chance line) agree. The
legend is drawn from the lines: bands and chance lines carry no legend of their own (:func:`with_chance`).

Lines over checkpoints break where a series has no value: :func:`complete_checkpoints` gives every series a row
at every checkpoint of the run (null where it is missing), and Vega-Lite breaks a line at a null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import polars as pl

from explorer.text import plain

HEIGHT = 300
SEQ_SCHEME = "viridis"
COUNT_SCHEME = "blues"

#: 24 colours that stay apart on a white page, the most distinct first (a store with up to 12 languages gets the
#: first 12: strong hues; 13-24 add darker and lighter shades). Grey is left out: it is the colour of chance.
PALETTE: tuple[str, ...] = (
    "#1f77b4",  # blue
    "#ff7f0e",  # orange
    "#2ca02c",  # green
    "#d62728",  # red
    "#9467bd",  # purple
    "#8c564b",  # brown
    "#e377c2",  # pink
    "#17becf",  # cyan
    "#bcbd22",  # olive
    "#000000",  # black
    "#393b79",  # indigo
    "#e7ba52",  # gold
    "#843c39",  # maroon
    "#637939",  # moss
    "#7b4173",  # plum
    "#6baed6",  # light blue
    "#fd8d3c",  # light orange
    "#74c476",  # light green
    "#fc9272",  # salmon
    "#9e9ac8",  # lavender
    "#c49c94",  # tan
    "#f7b6d2",  # light pink
    "#9edae5",  # light cyan
    "#dbdb8d",  # light olive
)

#: Colour fields whose values are language codes: coloured by :func:`language_colors`, the same on every page.
LANGUAGE_FIELDS = frozenset(
    {"lang", "top_lang", "language", "source_lang", "output_lang", "concept_lang", "most_active_lang", "assigned_lang"}
)


def language_colors(languages: Sequence[str]) -> dict[str, str]:
    """Language code -> colour, by the language's position in ``languages`` (the store's order, as
    :func:`explorer.queries.languages` lists it), so a language keeps its colour on every page and in every chart
    whatever subset of languages the chart draws. Past 24 languages the palette repeats."""
    return {lang: PALETTE[i % len(PALETTE)] for i, lang in enumerate(dict.fromkeys(languages))}


def store_languages() -> list[str]:
    """The open store's language codes in its order, or ``[]`` outside an explorer page (a chart built in a test
    or a script, with no store open): then a chart's own languages, sorted, give the order."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx(suppress_warning=True) is None:
        return []
    from explorer import queries as Q
    from explorer.store_context import q

    try:
        return q(Q.languages)["lang"].to_list()
    except KeyError:  # a page that runs before the store is open (no context yet)
        return []


def series_scale(field: str, values: Sequence[Any]) -> alt.Scale:
    """The colour scale of a chart's series: domain the series present (``values``: every layer's), range their
    colours. Languages take their store-wide colour (:func:`language_colors`), in the store's order; other series
    (measures, pairs) take the palette in sorted order."""
    present = [v for v in dict.fromkeys(values) if v is not None]
    if field in LANGUAGE_FIELDS:
        known = store_languages()
        extra = sorted((str(v) for v in present if v not in set(known)), key=str)
        colors = language_colors([*known, *extra])
        domain = [lang for lang in [*known, *extra] if lang in set(present)]
    else:
        domain = sorted(present, key=str)
        colors = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(domain)}
    return alt.Scale(domain=domain, range=[colors[v] for v in domain])


def _series_color(field: str, df: pl.DataFrame, *, title: str | None = None, legend: bool = True) -> alt.Color:
    """A nominal colour encoding of ``field`` with an explicit scale (:func:`series_scale`) and a legend that lists
    every series (no symbol limit), or none (``legend=False``: bands and chance lines under a line layer)."""
    values = df[field].to_list() if field in df.columns else []
    return alt.Color(
        f"{field}:N",
        title=title or field.replace("_", " "),
        scale=series_scale(field, values),
        legend=alt.Legend(symbolLimit=0, symbolType="stroke", symbolStrokeWidth=3) if legend else None,
    )


def _row_step(n_rows: int, target: int = HEIGHT) -> alt.Step:
    """Height of a chart with one band per row (a fixed pixel height is not kept for discrete y): at least 16 px,
    so every row's label fits (the chart grows with the row count instead of thinning its labels)."""
    return alt.Step(max(16, min(40, target // max(n_rows, 1))))


def _row_axis(title: str | None) -> alt.Axis:
    """The y axis of a heatmap: every row labelled."""
    return alt.Axis(title=title, labelOverlap=False, labelLimit=220)


def _title(text: str) -> alt.TitleParams:
    """A chart title that is drawn inside the chart's own space (offset below its top edge), so the widget above
    does not cover it."""
    return alt.TitleParams(plain(text), anchor="start", offset=10, fontSize=13)


def finite_min(series: pl.Series, default: float = 0.0) -> float:
    """The smallest finite value of ``series`` (NaN and infinity left out, as the chart leaves them out), else
    ``default``: what a scale's domain may be built from (vega cannot read NaN or infinity)."""
    finite = series.cast(pl.Float64).filter(series.cast(pl.Float64).is_finite())
    return float(finite.min()) if finite.len() else default


def finite_max(series: pl.Series, default: float = 1.0) -> float:
    """The largest finite value of ``series``, else ``default`` (see :func:`finite_min`)."""
    finite = series.cast(pl.Float64).filter(series.cast(pl.Float64).is_finite())
    return float(finite.max()) if finite.len() else default


def _data(df: pl.DataFrame) -> alt.Data:
    # Plain records: no dependence on altair's dataframe interchange for polars.
    return alt.Data(values=df.to_dicts())


def _ckpt_x(order: Sequence[str], title: str = "checkpoint (training order)") -> alt.X:
    """The checkpoint axis: every checkpoint labelled, rotated further when there are many."""
    return alt.X(
        "checkpoint:O",
        sort=list(order),
        title=title,
        scale=alt.Scale(domain=list(order)),
        axis=alt.Axis(labelAngle=-45 if len(order) <= 16 else -90, labelLimit=120, labelOverlap=False),
    )


def complete_checkpoints(df: pl.DataFrame, order: Sequence[str], series: str | None = None) -> pl.DataFrame:
    """``df`` with a row for every (checkpoint of ``order``, ``series`` value): the rows it lacks have nulls in
    every other column, so a line over checkpoints breaks where its series has no value (a unit outside the
    top-K at that checkpoint) instead of joining its neighbours. Rows at checkpoints outside ``order`` are kept.

    df: one row per (checkpoint, series) point, as the queries return it (a ``checkpoint`` column)."""
    if df.height == 0 or "checkpoint" not in df.columns or not order:
        return df
    keys = ["checkpoint", *([series] if series else [])]
    grid = pl.DataFrame({"checkpoint": list(order)}, schema={"checkpoint": df.schema["checkpoint"]})
    if series:
        grid = grid.join(df.select(series).unique(maintain_order=True), how="cross")
    missing = grid.join(df.select(keys).unique(), on=keys, how="anti")
    if missing.height == 0:
        return df
    rank = {name: i for i, name in enumerate(order)}
    filled = pl.concat([df, missing], how="diagonal_relaxed")
    return (
        filled.with_columns(_pos=pl.col("checkpoint").replace_strict(rank, default=len(rank)))
        .sort("_pos", maintain_order=True)
        .drop("_pos")
    )


def probe_heatmap(df: pl.DataFrame, order: Sequence[str], metric: str = "accuracy") -> alt.Chart:
    """LID probe accuracy as a layer x checkpoint heatmap (layer 0 = embeddings, at the bottom). Where ``df``
    carries ``majority_baseline`` (and ``control_accuracy``), the tooltip shows the chance a cell is read against."""
    lo = finite_min(df[metric], 0.5) if df.height else 0.0
    chance = [
        alt.Tooltip(f"{col}:Q", format=".3f", title=name)
        for col, name in (("majority_baseline", "chance: majority class"), ("control_accuracy", "control task"))
        if col in df.columns
    ]
    return (
        alt.Chart(_data(df))
        .mark_rect()
        .encode(
            x=_ckpt_x(order),
            y=alt.Y("layer:O", sort="descending", axis=_row_axis("layer (0 = embeddings)")),
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
                *chance,
            ],
        )
        .properties(
            height=_row_step(df["layer"].n_unique() if df.height else 1),
            title=_title(f"LID probe {metric.replace('_', ' ')}: layer x checkpoint"),
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
    """One line per ``color`` value across checkpoints; a line breaks at a checkpoint where its series has no row
    (:func:`complete_checkpoints`), so a missing point is a gap, never a straight line across it."""
    scale = alt.Scale(domain=list(domain)) if domain else alt.Scale(zero=False)
    enc: dict = {
        "x": _ckpt_x(order),
        "y": alt.Y(f"{y}:Q", title=y_title or y.replace("_", " "), scale=scale),
        "tooltip": ["checkpoint:N", "step:Q", alt.Tooltip(f"{y}:Q", format=".3f"), *tooltip]
        + ([f"{color}:N"] if color else []),
    }
    if color:
        enc["color"] = _series_color(color, df)
    base = alt.Chart(_data(complete_checkpoints(df, order, color))).mark_line(point=True).encode(**enc)
    if highlight and color:
        base = base.encode(
            opacity=alt.condition(alt.datum[color] == highlight, alt.value(1.0), alt.value(0.35)),
            strokeWidth=alt.condition(alt.datum[color] == highlight, alt.value(3), alt.value(1.5)),
        )
    return base.properties(height=height, title=_title(title))


def lines_over_layers(
    df: pl.DataFrame,
    y: str,
    *,
    color: str,
    title: str = "",
    y_title: str | None = None,
    domain: tuple[float, float] | None = None,
) -> alt.Chart:
    """One line per ``color`` value across the residual stream's layers."""
    scale = alt.Scale(domain=list(domain)) if domain else alt.Scale(zero=False)
    return (
        alt.Chart(_data(df))
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:O", title="layer (0 = embeddings)", axis=alt.Axis(labelAngle=0, labelOverlap=False)),
            y=alt.Y(f"{y}:Q", title=y_title or y, scale=scale),
            color=_series_color(color, df, title=color),
            tooltip=[f"{color}:N", "layer:O", alt.Tooltip(f"{y}:Q", format=".3f")],
        )
        .properties(height=HEIGHT, title=_title(title))
    )


#: The colour of a heatmap's diagonal (a language against itself): not on the value's scale.
DIAGONAL_COLOR = "#e6e6e6"


def lang_heatmap(
    df: pl.DataFrame,
    value: str,
    *,
    title: str,
    domain: tuple[float, float] | None = None,
    langs: Sequence[str] | None = None,
) -> alt.Chart:
    """A language x language matrix with the value written in each cell.

    The diagonal (a language with itself, 1 by definition) is drawn grey and kept off the colour scale, so the
    scale spans the pairs' own values; ``domain`` defaults to [min(0, smallest), largest] of the off-diagonal
    cells (give one domain to two heatmaps that are read side by side)."""
    order = list(langs) if langs else sorted(set(df["lang_a"].to_list()) | set(df["lang_b"].to_list()))
    same = pl.col("lang_a") == pl.col("lang_b")
    pairs, diagonal = df.filter(~same), df.filter(same)
    if domain is None:
        lo = min(0.0, finite_min(pairs[value], 0.0)) if pairs.height else 0.0
        hi = finite_max(pairs[value], 1.0) if pairs.height else 1.0
        domain = (lo, hi if hi > lo else lo + 1.0)
    angle = 0 if len(order) <= 16 else -90
    x = alt.X(
        "lang_b:N",
        sort=order,
        title=None,
        scale=alt.Scale(domain=order),
        axis=alt.Axis(labelAngle=angle, orient="top", labelOverlap=False),
    )
    y = alt.Y("lang_a:N", sort=order, title=None, scale=alt.Scale(domain=order), axis=_row_axis(None))
    base = alt.Chart(_data(pairs)).encode(x=x, y=y)
    rect = base.mark_rect().encode(
        color=alt.Color(
            f"{value}:Q", title=value.replace("_", " "), scale=alt.Scale(scheme=SEQ_SCHEME, domain=list(domain))
        ),
        tooltip=["lang_a:N", "lang_b:N", alt.Tooltip(f"{value}:Q", format=".3f")],
    )
    parts = [rect]
    if diagonal.height:
        same_lang = diagonal.select("lang_a", "lang_b").with_columns(note=pl.lit("the same language"))
        parts.append(
            alt.Chart(_data(same_lang))
            .mark_rect(color=DIAGONAL_COLOR)
            .encode(x=x, y=y, tooltip=["lang_a:N", "lang_b:N", "note:N"])
        )
    if len(order) <= 16:
        parts.append(
            base.mark_text(fontSize=10).encode(
                text=alt.Text(f"{value}:Q", format=".2f"),
                color=alt.condition(
                    alt.datum[value] > (domain[0] + domain[1]) / 2, alt.value("black"), alt.value("white")
                ),
            )
        )
    return alt.layer(*parts).properties(height=HEIGHT, title=_title(title))


def rank_lines(
    df: pl.DataFrame, order: Sequence[str], *, color: str = "lang", title: str = "", k: int | None = None
) -> alt.Chart:
    """Rank trajectories (rank 1 at the top, log scale); a gap where the unit left the top-K (the frame is
    completed over every checkpoint, :func:`complete_checkpoints`)."""
    return (
        alt.Chart(_data(complete_checkpoints(df, order, color)))
        .mark_line(point=True)
        .encode(
            x=_ckpt_x(order),
            y=alt.Y(
                "rank:Q", title="rank (1 = best)", scale=alt.Scale(type="log", reverse=True, domain=[1, max(k or 1, 2)])
            ),
            color=_series_color(color, df),
            tooltip=["checkpoint:N", f"{color}:N", "rank:Q", alt.Tooltip("ap:Q", format=".3f")],
        )
        .properties(height=HEIGHT, title=_title(title))
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
    """A (concept x checkpoint) grid coloured by a count, e.g. languages where a unit is top-K; every row and
    every checkpoint labelled (the chart grows with its rows)."""
    domain = [0, max_value] if max_value else alt.Undefined
    return (
        alt.Chart(_data(df))
        .mark_rect()
        .encode(
            x=_ckpt_x(order),
            y=alt.Y(f"{row_field}:N", sort=list(rows), axis=_row_axis(row_field.replace("_", " "))),
            color=alt.Color(
                f"{value}:Q",
                title=value.replace("_", " "),
                scale=alt.Scale(domain=domain, range=["#c6dbef", "#08306b"]),
            ),
            tooltip=[f"{c}:{'Q' if df[c].dtype.is_numeric() else 'N'}" for c in df.columns if c != "step"],
        )
        .properties(height=alt.Step(18 if len(rows) > 8 else 26), title=_title(title))
    )


def status_bars(df: pl.DataFrame, *, title: str) -> alt.Chart:
    """Per language: how many top-K units stayed, entered, left between two checkpoints."""
    colors = alt.Scale(domain=["stayed", "entered", "left"], range=["#4c78a8", "#54a24b", "#e45756"])
    return (
        alt.Chart(_data(df))
        .mark_bar()
        .encode(
            x=alt.X("lang:N", title="language", axis=alt.Axis(labelAngle=0, labelOverlap=False)),
            y=alt.Y("n:Q", title="units"),
            color=alt.Color("status:N", scale=colors, sort=["stayed", "entered", "left"]),
            xOffset=alt.XOffset("status:N", sort=["stayed", "entered", "left"]),
            tooltip=["lang:N", "status:N", "n:Q"],
        )
        .properties(height=HEIGHT, title=_title(title))
    )


def stacked_counts(df: pl.DataFrame, order: Sequence[str], *, y: str, color: str, title: str) -> alt.Chart:
    """Counts over checkpoints, stacked by ``color`` (a language keeps its store-wide colour)."""
    return (
        alt.Chart(_data(df))
        .mark_bar()
        .encode(
            x=_ckpt_x(order),
            y=alt.Y(f"{y}:Q", title=y),
            color=_series_color(color, df, title=color),
            tooltip=["checkpoint:N", f"{color}:N", f"{y}:Q"],
        )
        .properties(height=HEIGHT, title=_title(title))
    )


def layer_checkpoint_heatmap(
    df: pl.DataFrame, order: Sequence[str], *, value: str, title: str, scheme: str = SEQ_SCHEME
) -> alt.Chart:
    """A layer x checkpoint heatmap of ``value``, every layer and checkpoint labelled."""
    return (
        alt.Chart(_data(df))
        .mark_rect()
        .encode(
            x=_ckpt_x(order),
            y=alt.Y("layer:O", sort="descending", axis=_row_axis("layer")),
            color=alt.Color(f"{value}:Q", title=value, scale=alt.Scale(scheme=scheme)),
            tooltip=["checkpoint:N", "layer:O", alt.Tooltip(f"{value}:Q", format=".3f")],
        )
        .properties(height=_row_step(df["layer"].n_unique() if df.height else 1), title=_title(title))
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
    """Dashed reference lines of a chance level over checkpoints (one per ``color`` value, else one grey line);
    no legend of their own (the line layer's legend names the series; the caption names the dashes).

    df: checkpoint, ``y`` (and ``color``); every point carries ``label`` in its tooltip (the spec names it)."""
    data = complete_checkpoints(df, order, color).with_columns(reference=pl.lit(label))
    enc: dict = {
        "x": _ckpt_x(order),
        "y": alt.Y(f"{y}:Q", title=y_title or y.replace("_", " ")),
        "tooltip": ["reference:N", "checkpoint:N", alt.Tooltip(f"{y}:Q", format=".4f")]
        + ([f"{color}:N"] if color else []),
    }
    if color:
        enc["color"] = _series_color(color, df, legend=False)
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
    """A translucent band from ``lo`` to ``hi`` (a bootstrap interval) along ``x``; rows with no bounds are left
    out. No legend of its own: its faded colour would stand for the series in the legend instead of the line's."""
    data = df.filter(pl.col(lo).is_not_null() & pl.col(hi).is_not_null())
    enc: dict = {
        "x": x,
        "y": alt.Y(f"{lo}:Q", title=y_title or lo),
        "y2": alt.Y2(f"{hi}:Q"),
        "tooltip": [alt.Tooltip(f"{lo}:Q", format=".4f"), alt.Tooltip(f"{hi}:Q", format=".4f")]
        + ([f"{color}:N"] if color else []),
    }
    if color:
        enc["color"] = _series_color(color, data, legend=False)
        return alt.Chart(_data(data)).mark_area(opacity=0.2).encode(**enc)
    return alt.Chart(_data(data)).mark_area(opacity=0.2, color="#4c78a8").encode(**enc)


def ckpt_axis(order: Sequence[str]) -> alt.X:
    """The checkpoint x axis of every chart over training (for bands layered onto them)."""
    return _ckpt_x(order)


def layer_axis() -> alt.X:
    """The residual-stream layer x axis of the probe charts (0 = embeddings)."""
    return alt.X("layer:O", title="layer (0 = embeddings)", axis=alt.Axis(labelAngle=0, labelOverlap=False))


def _color_field(chart: alt.Chart) -> str | None:
    """The field a chart's colour encodes (``"lang"`` of ``"lang:N"``), or None."""
    color = chart.encoding.color if chart.encoding is not alt.Undefined else alt.Undefined
    if color is alt.Undefined or not isinstance(color, alt.Color):
        return None
    shorthand = color.shorthand if color.shorthand is not alt.Undefined else color.field
    return None if shorthand is alt.Undefined else str(shorthand).split(":")[0]


def _values(chart: alt.Chart, field: str) -> list[Any]:
    data = chart.data
    rows = data.values if isinstance(data, alt.Data) and data.values is not alt.Undefined else []
    return [row.get(field) for row in rows if isinstance(row, dict)]


def with_chance(
    chart: alt.Chart, *, band: alt.Chart | None = None, reference: alt.Chart | None = None
) -> alt.LayerChart:
    """``chart`` with its interval band below and its chance line above (the scales are shared); the title and
    height move to the layer, where Vega-Lite draws them. Where the layers colour the same series, they get one
    colour scale over every layer's series and only ``chart`` (the lines) draws the legend, so a swatch has the
    line's colour, not the band's faded one."""
    title, height = chart.title, chart.height
    chart = chart.copy()
    chart.title = alt.Undefined
    chart.height = alt.Undefined
    parts = [c for c in (band, chart, reference) if c is not None]
    field = _color_field(chart)
    if field:
        mine = [p for p in parts if _color_field(p) == field]
        scale = series_scale(field, [v for p in mine for v in _values(p, field)])
        for part in mine:
            part.encoding.color.scale = scale
            if part is not chart:
                part.encoding.color.legend = None
    layered = alt.layer(*parts)
    if field and len(mine) > 1:
        # One scale, one legend per layer: Vega-Lite drops a shared legend that one of its layers disables.
        layered = layered.resolve_legend(color="independent")
    if height is not alt.Undefined:
        layered = layered.properties(height=height)
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
        .properties(height=220, title=_title(title))
    )


def token_grid(df: pl.DataFrame, order: Sequence[str], *, title: str) -> alt.Chart:
    """(rank x checkpoint) grid of tokens: each cell the token's text (drawn by vega as text) on a colour of
    its logit, so a token that keeps its place over training reads as a row of the same word."""
    data = df.with_columns(pl.col("token").map_elements(plain, return_dtype=pl.Utf8))
    base = alt.Chart(_data(data)).encode(
        x=_ckpt_x(order),
        y=alt.Y("rank:O", axis=_row_axis("rank")),
        tooltip=["checkpoint:N", "rank:Q", "token:N", "token_id:Q", "logit:Q"],
    )
    rect = base.mark_rect().encode(color=alt.Color("logit:Q", scale=alt.Scale(scheme="blueorange", domainMid=0)))
    text = base.mark_text(fontSize=11, limit=110).encode(text="token:N")
    return (rect + text).properties(height=alt.Step(22), title=_title(title))
