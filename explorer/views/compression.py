"""Compression: do representations of different languages converge (similarity), and does the
representation space compress (effective dimensionality), layer by layer over training?"""

import polars as pl
import streamlit as st

from explorer import charts, common
from explorer import queries as Q

c = common.ctx()
order = common.checkpoint_order()

st.title("Compression")
st.caption("Cross-language similarity of parallel representations, and effective dimensionality of the "
           "representation space, per layer (0 = embeddings) and checkpoint.")

st.subheader("Cross-language similarity")
metrics = common.q(Q.similarity_metrics, c.run_id)
if not metrics:
    common.empty("This store has no similarity measurements (the similarity stage did not run).")
else:
    metric = common.url_select("Similarity measure", metrics, param="sim", key="compression.sim",
                               what="similarity measure")
    by_layer = common.q(Q.similarity_by_layer, c.run_id, metric)
    left, right = st.columns(2)
    with left:
        common.chart(charts.layer_checkpoint_heatmap(by_layer, order, value="value",
                                                     title=f"Mean {metric} over language pairs"),
                     by_layer, f"similarity_{metric}_by_layer")
    with right:
        layers = sorted(set(by_layer["layer"].to_list()))
        ckpt = common.pick_checkpoint(key="compression.ckpt")
        layer = common.url_select("Layer", layers, param="layer", key="compression.layer",
                                  default=layers[len(layers) // 2] if layers else None, what="layer", slider=True)
        pairs = common.q(Q.similarity_pairs, c.run_id, ckpt, layer, metric)
        if pairs.height:
            lo = min(0.0, float(pairs["value"].min()))
            common.chart(charts.lang_heatmap(pairs, "value", title=f"{metric} at {ckpt}, layer {layer}",
                                             domain=(lo, 1.0)),
                         pairs, f"similarity_{metric}_{ckpt}_layer{layer}")
        else:
            common.empty("No pairs at this checkpoint and layer.")

st.subheader("Effective dimensionality")
comp = common.q(Q.compression, c.run_id)
if comp.height == 0:
    common.empty("This store has no compression measurements.")
else:
    cmetrics = sorted(set(comp["metric"].to_list()))
    cmetric = common.url_select("Measure", cmetrics, param="cm", key="compression.cm", what="compression measure")
    scopes = sorted(set(comp["scope"].to_list()), key=lambda s: (s != "all", s))
    scope = common.url_select("Scope", scopes, param="scope", key="compression.scope", what="scope",
                              format_func=lambda s: "all languages pooled" if s == "all" else s)
    one = comp.filter((pl.col("metric") == cmetric) & (pl.col("scope") == scope))
    common.chart(charts.layer_checkpoint_heatmap(one, order, value="value", title=f"{cmetric} ({scope})",
                                                 scheme="magma"),
                 one, f"compression_{cmetric}_{scope}")
    with st.expander("All compression rows"):
        common.table(comp, "compression")
