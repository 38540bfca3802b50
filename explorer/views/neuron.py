"""Neuron: one MLP unit across concepts, languages and training."""

import polars as pl
import streamlit as st

from explorer import charts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.drilldown import drilldown_section
from explorer.pickers import checkpoint_order, concept_label_func
from explorer.problems import empty
from explorer.significance import significance_text
from explorer.store_context import ctx, q
from explorer.text import md
from explorer.widgets import plain_selectbox, url_int, url_select

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Neuron", "icon": "🧠", "url_path": "neuron", "section": "Explore", "order": 40}

c = ctx()
order = checkpoint_order()
fmt_concept = concept_label_func()
layers = q(Q.layers, c.run_id)

st.title("Neuron")
if layers.height == 0:
    empty("The store lists no MLP layers for this run.")
    st.stop()

layer_ids = layers["layer"].to_list()
sizes = dict(zip(layer_ids, layers["n_neurons"].to_list()))


def _jump() -> None:
    choice = st.session_state.get("neuron.jump")
    if choice:
        lay, unit_ = (int(x) for x in choice.split(":"))
        st.session_state["neuron.layer"] = lay
        st.session_state["neuron.unit"] = unit_


top = st.columns([1, 1, 3])
layer = url_int(
    "Layer",
    param="layer",
    key="neuron.layer",
    min_value=min(layer_ids),
    max_value=max(layer_ids),
    default=layer_ids[len(layer_ids) // 2],
    what="layer",
    where=top[0],
    help="MLP block, counted from 0.",
)
unit = url_int(
    "Unit",
    param="unit",
    key="neuron.unit",
    min_value=0,
    max_value=int(sizes.get(layer, 1)) - 1,
    default=0,
    what="unit",
    where=top[1],
    help=f"0 … {int(sizes.get(layer, 1)) - 1} in layer {layer}.",
)
suggest = q(Q.top_shared_neurons, c.run_id, order[-1], 15)
if suggest.height:
    labels = {
        f"{r['layer']}:{r['unit']}": f"layer {r['layer']} · unit {r['unit']} — top-K in {r['max_langs']} "
        f"languages, {r['n_concepts']} concept(s), e.g. {fmt_concept(r['top_concept'])}"
        for r in suggest.iter_rows(named=True)
    }
    plain_selectbox(
        "Jump to one of the most cross-lingual units (last checkpoint)",
        [None, *labels],
        format_func=lambda v: "—" if v is None else labels[v],
        key="neuron.jump",
        on_change=_jump,
        where=top[2],
    )

ap = q(Q.neuron_ap_history, c.run_id, layer, unit)
summary = q(Q.neuron_summary_history, c.run_id, layer, unit)
shared = q(Q.neuron_shared_history, c.run_id, layer, unit)

st.subheader(f"Layer {layer} · unit {unit}")
last = summary.filter(pl.col("checkpoint") == order[-1])
m = st.columns(4)
if last.height:
    row = last.row(0, named=True)
    m[0].metric("Mean AP (last checkpoint)", f"{row['mean_ap']:.3f}", help="Over every concept x language.")
    m[1].metric("Max AP", f"{row['max_ap']:.3f}", help=f"for {md(row['best_concept_id'])} in {md(row['best_lang'])}")
at_last = ap.filter(pl.col("checkpoint") == order[-1])
m[2].metric(
    "Top-K expert for (last checkpoint)",
    f"{at_last['concept_id'].n_unique()} concept(s)",
    help="Concepts for which this unit is among the top-K in at least one language.",
)
m[3].metric(
    "Shared expert for (last checkpoint)",
    f"{shared.filter(pl.col('checkpoint') == order[-1]).height} concept(s)",
    help=f"Top-K in at least {c.min_langs} languages.",
)

if ap.height == 0:
    empty(
        f"Layer {layer} · unit {unit} is never among the top-{c.top_k} experts of any concept in any "
        "language at any checkpoint. Its AP summary over training is below."
    )
else:
    st.markdown("**The concepts it is an expert for, at each checkpoint**")
    expert_of = (
        ap.group_by(["checkpoint", "step", "concept_id"])
        .agg(
            pl.len().alias("n_langs"),
            pl.col("lang").sort().str.join(",").alias("langs"),
            pl.col("rank").min().alias("best_rank"),
            pl.col("ap").max().alias("max_ap"),
        )
        .sort(["step", "checkpoint", "concept_id"], nulls_last=True)
    )
    concept_rank = (
        ap.group_by("concept_id")
        .agg(pl.col("ap").max().alias("m"), pl.len().alias("n"))
        .sort(["n", "m"], descending=True)["concept_id"]
        .to_list()
    )
    n_lang_total = q(Q.languages).height
    chart(
        charts.concept_checkpoint_grid(
            expert_of,
            order,
            value="n_langs",
            rows=concept_rank[:60],
            title=f"languages in which the unit is a top-{c.top_k} expert",
            max_value=n_lang_total,
        ),
        expert_of,
        f"neuron_L{layer}_U{unit}_expert_of",
    )
    if len(concept_rank) > 60:
        st.caption(f"Showing the 60 concepts it serves most often of {len(concept_rank)}; the download has all.")

    st.markdown("**AP and rank over training, for one concept**")
    concept = url_select(
        "Concept",
        concept_rank,
        param="concept",
        key="neuron.concept",
        what="concept",
        format_func=fmt_concept,
        missing="for which this unit is never a top-K expert",
    )
    one = ap.filter(pl.col("concept_id") == concept)
    # Chance: per language, the permutation threshold of the concept's AP (dashed).
    thresholds = q(Q.concept_chance_history, c.run_id, concept).filter(
        pl.col("lang").is_in(one["lang"].unique().to_list()) & pl.col("threshold").is_not_null()
    )
    left, right = st.columns(2)
    with left:
        ap_lines = charts.lines_over_checkpoints(
            one,
            order,
            "ap",
            color="lang",
            y_title="AP (where top-K)",
            title=f"AP for {fmt_concept(concept)}",
            domain=(0.0, 1.0),
            tooltip=["rank:Q"],
        )
        chart(
            charts.with_chance(
                ap_lines,
                reference=charts.chance_lines(
                    thresholds.select("checkpoint", "lang", pl.col("threshold").alias("ap")),
                    order,
                    "ap",
                    color="lang",
                    y_title="AP (where top-K)",
                    label="corrected permutation threshold",
                ),
            )
            if thresholds.height
            else ap_lines,
            one,
            f"neuron_L{layer}_U{unit}_ap_{concept}",
        )
        st.caption(
            "Dashed: each language's corrected permutation threshold; above it, the unit predicts the "
            f"concept better than chance. {significance_text(thresholds)}"
        )
    with right:
        chart(
            charts.rank_lines(one, order, title=f"Rank for {fmt_concept(concept)}", k=c.top_k),
            one,
            f"neuron_L{layer}_U{unit}_rank_{concept}",
        )
    st.caption(
        f"Points exist only where the unit is among the stored top-{c.top_k}; a gap in a line means it dropped out "
        "at that checkpoint."
    )

drilldown_section(layer, unit, concept if ap.height else None)  # contexts, histograms, tokens

st.markdown("**Language profile: how many concepts it is a top-K expert for, per language**")
lape_rows = q(Q.neuron_language_history, c.run_id, layer, unit)
if ap.height:
    profile = (
        ap.group_by(["checkpoint", "step", "lang"])
        .agg(pl.col("concept_id").n_unique().alias("n_concepts"))
        .sort(["step", "checkpoint", "lang"], nulls_last=True)
    )
    chart(
        charts.concept_checkpoint_grid(
            profile,
            order,
            value="n_concepts",
            rows=[lang for lang in q(Q.languages)["lang"].to_list() if lang in set(profile["lang"].to_list())],
            title="concepts for which the unit is top-K, per language",
            row_field="lang",
        ),
        profile,
        f"neuron_L{layer}_U{unit}_language_profile",
    )
if lape_rows.height:
    st.caption(
        "Language-specific (LAPE, lowest entropy of activation probability over languages) at "
        + ", ".join(
            f"{md(r['checkpoint'])} ({md(r['top_lang'])}, p = {r['top_prob']:.2f})"
            for r in lape_rows.iter_rows(named=True)
        )
        + "."
    )
else:
    st.caption("Never among the language-specific neurons (LAPE) of any checkpoint.")

st.markdown("**AP over every concept and language (summary), over training**")
if summary.height:
    long = summary.unpivot(
        index=["checkpoint", "step"], on=["mean_ap", "max_ap"], variable_name="measure", value_name="value"
    )
    chart(
        charts.lines_over_checkpoints(
            long,
            order,
            "value",
            color="measure",
            y_title="AP",
            title="Mean and max AP over all concept x language pairs",
            domain=(0.0, 1.0),
            height=260,
        ),
        summary,
        f"neuron_L{layer}_U{unit}_summary",
    )
else:
    empty("No summary rows for this unit.")

st.markdown("**Emergence: concepts for which it became a significant shared expert**")
emergence = q(Q.unit_emergence, c.run_id, c.min_langs, None, layer, unit)
if emergence.height:
    st.caption(
        f"From this checkpoint on, its AP beats the permutation threshold in ≥ {c.min_langs} languages "
        "at every later checkpoint."
    )
    table(emergence.drop("layer", "unit"), f"neuron_L{layer}_U{unit}_emergence")
else:
    empty(f"Not a significant expert in ≥ {c.min_langs} languages that lasts to the last checkpoint.")

tabs = st.tabs(["Shared-expert rows", "All top-K rows"])
with tabs[0]:
    if shared.height:
        table(shared, f"neuron_L{layer}_U{unit}_shared")
    else:
        empty(f"Never a shared expert (top-K in ≥ {c.min_langs} languages).")
with tabs[1]:
    if ap.height:
        table(ap, f"neuron_L{layer}_U{unit}_ap")
    else:
        empty("No top-K rows.")
