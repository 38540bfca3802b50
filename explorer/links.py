"""Links between pages: every (layer, unit) a page lists opens that unit's Neuron page, in this tab.

Link targets are relative URLs of this app (``neuron?layer=..&unit=..``) with every store value
percent-encoded, so a link never leaves the explorer.
"""

from __future__ import annotations

from urllib.parse import quote

import polars as pl
import streamlit as st

from explorer.store_context import ctx
from explorer.text import md

LINK_CONFIG = {"open": st.column_config.LinkColumn("neuron", display_text="open ↗", width="small")}


def _quote(value: str) -> str:
    return quote(value, safe="")


def with_neuron_links(df: pl.DataFrame, concept: str | None = None) -> pl.DataFrame:
    """Add an ``open`` column linking each (layer, unit) row to its Neuron page (opened on ``concept``,
    or on the row's own concept_id)."""
    extra = f"&run={_quote(ctx().run_id)}" if ctx().n_runs > 1 else ""
    if concept is not None:
        extra += f"&concept={_quote(concept)}"
        return df.with_columns(
            pl.format("neuron?layer={}&unit={}" + extra, pl.col("layer"), pl.col("unit")).alias("open")
        )
    if "concept_id" in df.columns:
        return df.with_columns(
            pl.format(
                "neuron?layer={}&unit={}&concept={}" + extra,
                pl.col("layer"),
                pl.col("unit"),
                pl.col("concept_id").map_elements(_quote, return_dtype=pl.Utf8),
            ).alias("open")
        )
    return df.with_columns(pl.format("neuron?layer={}&unit={}" + extra, pl.col("layer"), pl.col("unit")).alias("open"))


def neuron_link(layer: int, unit: int, label: str | None = None, concept: str | None = None) -> None:
    """A link that opens the Neuron page on this unit, in this tab (``label`` is raw text)."""
    params = {"layer": str(layer), "unit": str(unit)}
    if concept is not None:
        params["concept"] = concept
    if ctx().n_runs > 1:
        params["run"] = ctx().run_id
    st.page_link("views/neuron.py", label=md(label or f"layer {layer} · unit {unit}"), icon="🧠", query_params=params)
