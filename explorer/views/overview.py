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
        grid = q(Q.probe_grid, c.run_id, rep).join(
            q(Q.probe_chance, c.run_id, rep).select("checkpoint", "layer", "majority_baseline", "control_accuracy"),
            on=["checkpoint", "layer"],
            how="left",
        )
        chart(charts.probe_heatmap(grid, order), grid, f"probe_accuracy_{rep}")
        majority = grid["majority_baseline"].drop_nulls()
        st.caption(
            "Early in training a linear probe identifies the language in every layer; the paper "
            "finds that later it fades in the middle layers, where meaning is shared."
            + (
                f" Chance (always the commonest language): accuracy {majority.min():.3f}"
                + (f" … {majority.max():.3f}" if majority.max() > majority.min() else "")
                + "; the tooltip gives each cell's."
                if majority.len()
                else ""
            )
        )
    else:
        empty("No language-identification probes in this store.")
with right:
    st.subheader("Cross-lingual expert overlap")
    ov = q(Q.overlap_summary, c.run_id)
    if ov.height:
        overlap_k = int(ov["k"].max())
        ci = q(Q.headline_intervals, c.run_id)
        chance = q(Q.overlap_chance, c.run_id)
        # Jaccard (about 0.05) and Spearman (about 0.4) are different quantities: each has its own chart and axis,
        # so Jaccard and its chance line are not pressed onto the floor of a 0-1 axis.
        for measure, title, y_title, chance_label in (
            (
                "mean_jaccard",
                f"Overlap of top-{overlap_k} experts across languages: Jaccard of the top-{overlap_k} sets",
                "mean Jaccard",
                "chance (random top-K sets)",
            ),
            (
                "mean_spearman_ap",
                "Overlap across languages: Spearman of all units' AP",
                "mean Spearman",
                "chance (unrelated APs: 0)",
            ),
        ):
            one = ov.select("checkpoint", "step", pl.col(measure).alias("value"))
            ci_one = ci.filter(pl.col("measure") == measure)
            top = max(
                charts.finite_max(one["value"], 0.0), charts.finite_max(ci_one["hi"], 0.0) if ci_one.height else 0.0
            )
            low = min(0.0, charts.finite_min(one["value"]), charts.finite_min(ci_one["lo"]) if ci_one.height else 0.0)
            lines = charts.lines_over_checkpoints(
                one,
                order,
                "value",
                y_title=y_title,
                title=title,
                domain=(low, min(1.0, max(top * 1.15, 1e-6))),
                height=220,
            )
            chart(
                charts.with_chance(
                    lines,
                    band=charts.interval_band(ci_one, charts.ckpt_axis(order), y_title=y_title)
                    if ci_one.height
                    else None,
                    reference=charts.chance_lines(
                        ci_one.select("checkpoint", pl.col("chance").alias("value")),
                        order,
                        "value",
                        y_title=y_title,
                        label=chance_label,
                    )
                    if ci_one.height
                    else None,
                ),
                ov.select("checkpoint", "step", measure, "n_concepts", "k").join(
                    ci_one.select("checkpoint", "lo", "hi", "chance"), on="checkpoint", how="left"
                ),
                f"expert_overlap_{measure}_over_training",
            )
        chance_text = (
            (
                f" Two random top-{int(chance['k'][-1])} sets of the {int(chance['n_units'][-1]):,} units "
                f"would have Jaccard {chance['jaccard_mean'][-1]:.4f} (dashed; exact hypergeometric "
                "expectation); Spearman 0 (dashed)."
            )
            if chance.height
            else ""
        )
        st.caption(
            f"Jaccard overlap of the top-{overlap_k} expert sets of every language pair, and the Spearman "
            "correlation of all units' AP, averaged over concepts; each on its own axis. Rising = shared "
            "neurons. Bands: 95 % bootstrap intervals over concepts." + chance_text
        )
        shared_ci = ci.filter(pl.col("measure") == "n_shared")
        if shared_ci.height:
            y_title = "shared experts (all concepts)"
            chart(
                charts.with_chance(
                    charts.lines_over_checkpoints(
                        shared_ci,
                        order,
                        "estimate",
                        y_title=y_title,
                        title=f"Shared experts over training (top-{c.top_k} in ≥ {c.min_langs} languages)",
                        domain=(
                            0.0,
                            1.1
                            * max(
                                charts.finite_max(shared_ci["hi"], 0.0), charts.finite_max(shared_ci["estimate"], 1.0)
                            ),
                        ),
                        height=220,
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
