"""Language probes: how well a linear probe identifies the language, per layer, over training."""

import polars as pl
import streamlit as st

from explorer import charts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.pickers import checkpoint_order, pick_checkpoint
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.text import md
from explorer.widgets import url_select

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Language probes", "icon": "🔤", "url_path": "probes", "section": "Explore", "order": 20}

c = ctx()
order = checkpoint_order()

st.title("Language probes")
st.caption(
    "Logistic-regression language identification on hidden states, per layer (0 = embeddings, "
    "i = output of block i) and checkpoint, averaged over seeds."
)

reps = q(Q.representations, c.run_id)
if not reps:
    empty("This store has no probe results (the probe stage did not run).")
    st.stop()

controls = st.columns([1, 1, 3])
rep = url_select("Representation", reps, param="rep", key="probes.rep", what="representation", where=controls[0])
metric = url_select(
    "Measure", ["accuracy", "macro_f1"], param="metric", key="probes.metric", what="measure", where=controls[1]
)

grid = q(Q.probe_grid, c.run_id, rep)
if grid.height == 0:
    empty(f"No probe results for representation '{md(rep)}'.")
    st.stop()
# Chance where the heatmap is read: each cell's majority-class baseline and control task in its tooltip.
grid = grid.join(
    q(Q.probe_chance, c.run_id, rep).select("checkpoint", "layer", "majority_baseline", "control_accuracy"),
    on=["checkpoint", "layer"],
    how="left",
)
chart(charts.probe_heatmap(grid, order, metric), grid, f"probe_{metric}_{rep}")
majority = grid["majority_baseline"].drop_nulls()
if majority.len():
    st.caption(
        f"Chance: always guessing the commonest language scores accuracy {majority.min():.3f}"
        + (f" … {majority.max():.3f}" if majority.max() > majority.min() else "")
        + " (majority class; the tooltip gives each cell's, and the control task's where there is one)."
    )

layers = sorted(set(grid["layer"].to_list()))
left, right = st.columns(2)
with left:
    st.subheader("Across layers, at one checkpoint")
    ckpt = pick_checkpoint(key="probes.ckpt")
    per_lang = q(Q.probe_languages, c.run_id, rep, ckpt, None)
    if per_lang.height:
        chart(
            charts.lines_over_layers(
                per_lang,
                "f1",
                color="lang",
                y_title="F1 (per language)",
                title=f"Per-language F1 at {ckpt}",
                domain=(0.0, 1.0),
            ),
            per_lang,
            f"probe_f1_by_layer_{rep}_{ckpt}",
        )
    else:
        empty("No per-language results at this checkpoint.")
with right:
    st.subheader("Across training, at one layer")
    mid = layers[len(layers) // 2]
    layer = url_select("Layer", layers, param="layer", key="probes.layer", default=mid, what="layer", slider=True)
    per_ck = q(Q.probe_languages, c.run_id, rep, None, layer)
    if per_ck.height:
        chart(
            charts.lines_over_checkpoints(
                per_ck,
                order,
                "f1",
                color="lang",
                y_title="F1 (per language)",
                title=f"Per-language F1 at layer {layer}",
                domain=(0.0, 1.0),
            ),
            per_ck,
            f"probe_f1_by_checkpoint_{rep}_layer{layer}",
        )
    else:
        empty("No per-language results at this layer.")

st.subheader(f"Against chance, at {md(ckpt)}")
CONTROL_LABEL = "control task (random label per token type, Hewitt & Liang)"
# Chance: the majority-class baseline, the control task (random label per token type, Hewitt & Liang;
# selectivity = accuracy - control accuracy; token probes only), and the 95 % hierarchical bootstrap interval of the
# accuracy over seeds and test contexts (band).
base = q(Q.probe_chance, c.run_id, rep).filter(pl.col("checkpoint") == ckpt)
if base.height and base["control_accuracy"].is_not_null().any() | base["majority_baseline"].is_not_null().any():
    long = (
        base.unpivot(
            index=["layer"],
            on=["accuracy", "control_accuracy", "majority_baseline"],
            variable_name="series",
            value_name="value",
        )
        .drop_nulls("value")
        .with_columns(
            pl.col("series").replace(
                {"accuracy": "LID probe", "control_accuracy": CONTROL_LABEL, "majority_baseline": "majority class"}
            )
        )
    )
    y_title = "accuracy"
    lines = charts.lines_over_layers(
        long,
        "value",
        color="series",
        y_title=y_title,
        domain=(0.0, 1.0),
        title=f"LID accuracy against chance at {ckpt}",
    )
    band = base.with_columns(series=pl.lit("LID probe"))
    chart(
        charts.with_chance(
            lines,
            band=charts.interval_band(
                band, charts.layer_axis(), "accuracy_lo", "accuracy_hi", color="series", y_title=y_title
            )
            if band["accuracy_lo"].is_not_null().any()
            else None,
        ),
        base,
        f"probe_chance_{rep}_{ckpt}",
    )
    sel = base["selectivity"].drop_nulls()
    st.caption(
        "Band: 95 % bootstrap interval over seeds and, within each, its test contexts. "
        + (
            f"Selectivity (accuracy − control accuracy, {CONTROL_LABEL}) ranges "
            f"{sel.min():.3f} … {sel.max():.3f} over layers."
            if sel.len()
            else f"No {CONTROL_LABEL} for this representation (the sentence mean has no token type), so no selectivity."
        )
    )
else:
    empty("This store has no probe baselines (computed before chance levels were stored).")

with st.expander("All probe results (table)"):
    table(grid, f"probe_results_{rep}")
