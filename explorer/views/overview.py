"""Overview: what the store holds, and the two headline pictures of the paper."""

import polars as pl
import streamlit as st

from explorer import charts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.text import md_code
from explorer.widgets import url_select

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Overview", "icon": "📊", "url_path": "overview", "section": "Explore", "order": 10, "default": True}

c = ctx()
run = q(Q.runs).filter(pl.col("run_id") == c.run_id).row(0, named=True)
ck = q(Q.checkpoints, c.run_id)
order = ck["checkpoint"].to_list()
langs = q(Q.languages)
concepts = q(Q.concepts)
layers = q(Q.layers, c.run_id)

st.title("Overview")
st.caption(f"Run {md_code(c.run_id)} of {md_code(run['model_id'])} in {md_code(c.name)}")
if run.get("model_card"):
    with st.container(border=True):
        st.text(run["model_card"])  # free text from the store: shown as written, never as markdown

cols = st.columns(5)
cols[0].metric("Checkpoints", ck.height)
cols[1].metric("Languages", langs.height)
cols[2].metric("Concepts", concepts.height)
n_units = int(layers["n_neurons"].sum()) if layers.height else 0
cols[3].metric(
    "MLP layers x units",
    f"{layers.height} x {layers['n_neurons'].max() if layers.height else 0}",
    help=f"{n_units:,} units in all",
)
cols[4].metric("Top-K experts", c.top_k, help=f"Shared experts: top-K in at least {c.min_langs} languages")

left, right = st.columns(2)
with left:
    st.subheader("Language identity by layer")
    reps = q(Q.representations, c.run_id)
    if reps:
        rep = url_select(
            "Representation",
            reps,
            param="rep",
            key="overview.rep",
            what="representation",
            help="'mean': sentence-pooled residual stream; 'token': single tokens.",
        )
        grid = q(Q.probe_grid, c.run_id, rep)
        chart(charts.probe_heatmap(grid, order), grid, f"probe_accuracy_{rep}")
        st.caption(
            "Early in training a linear probe identifies the language in every layer; the paper "
            "finds that later it fades in the middle layers, where meaning is shared."
        )
    else:
        empty("No language-identification probes in this store.")
with right:
    st.subheader("Cross-lingual expert overlap")
    ov = q(Q.overlap_summary, c.run_id)
    if ov.height:
        long = ov.unpivot(
            index=["checkpoint", "step"],
            on=["mean_jaccard", "mean_spearman_ap"],
            variable_name="measure",
            value_name="value",
        )
        ci = q(Q.headline_intervals, c.run_id)
        ci_overlap = ci.filter(pl.col("measure").is_in(["mean_jaccard", "mean_spearman_ap"]))
        y_title = "mean over concepts and language pairs"
        lines = charts.lines_over_checkpoints(
            long,
            order,
            "value",
            color="measure",
            y_title=y_title,
            title=f"Overlap of top-{int(ov['k'].max())} experts across languages",
            domain=(0.0, 1.0),
        )
        chart(
            charts.with_chance(
                lines,
                band=charts.interval_band(ci_overlap, charts.ckpt_axis(order), color="measure", y_title=y_title)
                if ci_overlap.height
                else None,
                reference=charts.chance_lines(
                    ci_overlap.rename({"chance": "value"}),
                    order,
                    "value",
                    color="measure",
                    y_title=y_title,
                    label="chance (random top-K sets)",
                )
                if ci_overlap.height
                else None,
            ),
            ov.join(
                ci_overlap.pivot(on="measure", index="checkpoint", values=["lo", "hi", "chance"]),
                on="checkpoint",
                how="left",
            )
            if ci_overlap.height
            else ov,
            "expert_overlap_over_training",
        )
        chance = q(Q.overlap_chance, c.run_id)
        chance_text = (
            (
                f" Two random top-{int(chance['k'][-1])} sets of the {int(chance['n_units'][-1]):,} units "
                f"would have Jaccard {chance['jaccard_mean'][-1]:.4f} (dashed; exact hypergeometric "
                "expectation); Spearman 0."
            )
            if chance.height
            else ""
        )
        st.caption(
            "Jaccard overlap of the top-K expert sets of every language pair, and the Spearman "
            "correlation of all units' AP, averaged over concepts. Rising = shared neurons. Bands: "
            "95 % bootstrap intervals over concepts." + chance_text
        )
        shared_ci = ci.filter(pl.col("measure") == "n_shared")
        if shared_ci.height:
            y_title = "shared experts (all concepts)"
            chart(
                charts.with_chance(
                    charts.lines_over_checkpoints(
                        shared_ci, order, "estimate", y_title=y_title, title="Shared experts over training", height=220
                    ),
                    band=charts.interval_band(shared_ci, charts.ckpt_axis(order), y_title=y_title),
                    reference=charts.chance_lines(
                        shared_ci, order, "chance", y_title=y_title, label="chance (random top-K sets)"
                    ),
                ),
                shared_ci,
                "shared_experts_over_training",
            )
    else:
        empty("No expert overlap in this store yet.")

st.subheader("What the store holds")
tabs = st.tabs(["Checkpoints", "Languages", "Concepts", "Layers", "Tables", "Stage timings"])
with tabs[0]:
    table(
        ck.drop("position"), "checkpoints", column_config={"tokens_seen": st.column_config.NumberColumn(format="%,d")}
    )
with tabs[1]:
    table(langs.join(q(Q.sentence_counts), on="lang", how="left"), "languages")
with tabs[2]:
    table(concepts, "concepts")
with tabs[3]:
    table(layers, "layers")
with tabs[4]:
    table(q(Q.table_counts), "table_counts")
with tabs[5]:
    timings = q(Q.stage_timings, c.run_id)
    if timings.height:
        table(timings, "stage_timings")
    else:
        empty("No stage timings recorded.")
