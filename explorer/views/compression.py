"""Compression: do representations of different languages converge (similarity), and does the
representation space compress (effective dimensionality), layer by layer over training?"""

import polars as pl
import streamlit as st

from explorer import charts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.pickers import checkpoint_order, pick_checkpoint
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.widgets import url_select

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Compression", "icon": "🗜️", "url_path": "compression", "section": "The rest of the paper", "order": 80}

c = ctx()
order = checkpoint_order()

st.title("Compression")
st.caption(
    "Cross-language similarity of parallel representations, and effective dimensionality of the "
    "representation space, per layer (0 = embeddings) and checkpoint."
)

st.subheader("Cross-language similarity")
metrics = q(Q.similarity_metrics, c.run_id)
if not metrics:
    empty("This store has no similarity measurements (the similarity stage did not run).")
else:
    metric = url_select("Similarity measure", metrics, param="sim", key="compression.sim", what="similarity measure")
    by_layer = q(Q.similarity_by_layer, c.run_id, metric)
    left, right = st.columns(2)
    with left:
        chart(
            charts.layer_checkpoint_heatmap(by_layer, order, value="value", title=f"Mean {metric} over language pairs"),
            by_layer,
            f"similarity_{metric}_by_layer",
        )
    with right:
        layers = sorted(set(by_layer["layer"].to_list()))
        ckpt = pick_checkpoint(key="compression.ckpt")
        layer = url_select(
            "Layer",
            layers,
            param="layer",
            key="compression.layer",
            default=layers[len(layers) // 2] if layers else None,
            what="layer",
            slider=True,
        )
        pairs = q(Q.similarity_pairs, c.run_id, ckpt, layer, metric)
        if pairs.height:
            lo = min(0.0, charts.finite_min(pairs["value"]))  # NaN and infinity are not drawn
            chart(
                charts.lang_heatmap(pairs, "value", title=f"{metric} at {ckpt}, layer {layer}", domain=(lo, 1.0)),
                pairs,
                f"similarity_{metric}_{ckpt}_layer{layer}",
            )
        else:
            empty("No pairs at this checkpoint and layer.")

st.subheader("Effective dimensionality")
comp = q(Q.compression, c.run_id)
if comp.height == 0:
    empty("This store has no compression measurements.")
else:
    cmetrics = sorted(set(comp["metric"].to_list()))
    cmetric = url_select("Measure", cmetrics, param="cm", key="compression.cm", what="compression measure")
    scopes = sorted(set(comp["scope"].to_list()), key=lambda s: (s != "all", s))
    scope = url_select(
        "Scope",
        scopes,
        param="scope",
        key="compression.scope",
        what="scope",
        format_func=lambda s: "all languages pooled" if s == "all" else s,
    )
    one = comp.filter((pl.col("metric") == cmetric) & (pl.col("scope") == scope))
    chart(
        charts.layer_checkpoint_heatmap(one, order, value="value", title=f"{cmetric} ({scope})", scheme="magma"),
        one,
        f"compression_{cmetric}_{scope}",
    )
    with st.expander("All compression rows"):
        table(comp, "compression")
