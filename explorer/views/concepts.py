"""Concepts: which units predict one concept in each language, and how far they coincide."""

import polars as pl
import streamlit as st

from explorer import charts
from explorer import queries as Q
from explorer.downloads import chart, downloads, table
from explorer.links import LINK_CONFIG, neuron_link, with_neuron_links
from explorer.pickers import (
    checkpoint_label,
    checkpoint_order,
    concept_label_func,
    pick_checkpoint,
    pick_concept,
    pick_k,
)
from explorer.problems import empty
from explorer.significance import significance_text
from explorer.store_context import ctx, q
from explorer.text import md
from explorer.widgets import url_int, url_select

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Concepts", "icon": "💡", "url_path": "concepts", "section": "Explore", "order": 30}

NOT_SIGNIFICANT = " · n.s."
#: Languages per table of the top-units grid: a cell ("L3 · U427 (0.616)") is about 100 px wide, so a wider
#: table would hide its last columns behind a scroll bar; more languages are split over tables of equal width.
GRID_LANGUAGES = 7

c = ctx()
order = checkpoint_order()
fmt_concept = concept_label_func()

st.title("Concepts")
st.caption(
    "Expert units (Suau et al.): the units whose activation best predicts, by average precision, "
    "that a sentence expresses the concept, against other concepts' sentences in the same language."
)

top = st.columns([2, 4, 1])
concept = pick_concept(key="concepts.concept", where=top[0])
ckpt = pick_checkpoint("Checkpoint (training progress)", key="concepts.ckpt", where=top[1])
k = pick_k(key="concepts.k", where=top[2])

units = q(Q.top_units, c.run_id, ckpt, concept, k)
matrix = q(Q.concept_overlap_matrix, c.run_id, ckpt, concept)
shared_all = q(Q.shared_experts, c.run_id, ckpt, concept, c.min_langs, 500)

pairs = matrix.filter(pl.col("lang_a") < pl.col("lang_b"))
chance_ov = q(Q.overlap_chance, c.run_id)
# The stored overlaps and shared experts are of the run's own K (50 in the demo), whatever the Top-K control says:
# every title and label that shows them names that K.
ok = q(Q.overlap_k, c.run_id) or c.top_k
topk_sets = f"top-{ok} sets"
chance_text = (
    f"Jaccard {chance_ov['jaccard_mean'][-1]:.4f}, |A∩B|/k {chance_ov['over_k_mean'][-1] or 0:.4f} for "
    f"random top-{int(chance_ov['k'][-1])} sets of {int(chance_ov['n_units'][-1]):,} units; Spearman 0"
    if chance_ov.height
    else "not stored"
)
MEASURE_NAMES = {
    "jaccard": f"Jaccard of {topk_sets}",
    "over_k": f"|A∩B| / k of {topk_sets} (Wang et al.)",
    "spearman_ap": "Spearman of all units' AP",
}
m = st.columns(4)
m[0].metric("Languages with experts", units["lang"].n_unique() if units.height else 0)
lead = c.overlap_measure  # the run's [experts] overlap_measure
m[1].metric(
    f"Mean {'Jaccard' if lead == 'jaccard' else '|A∩B|/k'} of {topk_sets}",
    f"{pairs[lead].mean():.3f}" if pairs.height and pairs[lead].null_count() < pairs.height else "–",
    help=f"Over language pairs, of the stored top-{ok} sets at this checkpoint (the Top-K control does not change it).",
)
m[2].metric(
    f"Units top-{c.top_k} in ≥ {c.min_langs} languages",
    shared_all.height,
    help=f"Of the stored top-{c.top_k} sets (the Top-K control does not change it).",
)
m[3].metric("Most languages for one unit", int(shared_all["n_langs_topk"].max()) if shared_all.height else 0)

st.subheader(f"Top-{k} units per language at {md(checkpoint_label(ckpt))}")
if units.height == 0:
    empty(f"No experts stored for {md(fmt_concept(concept))} at {md(ckpt)}.")
else:
    grid_tab, table_tab = st.tabs(["By rank", "Table with links"])
    with grid_tab:
        # Significance: an expert whose AP does not beat the corrected permutation threshold of
        # its (language, concept) cell is marked "n.s." and greyed out; the caption names the test.
        tested = q(Q.expert_significance, c.run_id, ckpt, concept, k)
        sig = tested.select("lang", "rank", "significant")
        cells = units.join(sig, on=["lang", "rank"], how="left").with_columns(
            cell=pl.format("L{} · U{} ({})", "layer", "unit", pl.col("ap").round(3).cast(pl.Utf8))
            + pl.when(pl.col("significant").not_()).then(pl.lit(NOT_SIGNIFICANT)).otherwise(pl.lit(""))
        )
        grid = cells.pivot(on="lang", index="rank", values="cell", aggregate_function="first").sort("rank")
        grid_langs = [col for col in grid.columns if col != "rank"]
        n_tables = max(1, -(-len(grid_langs) // GRID_LANGUAGES))
        per_table = -(-len(grid_langs) // n_tables) if grid_langs else 1
        for start in range(0, max(len(grid_langs), 1), per_table):
            st.dataframe(
                grid.select("rank", *grid_langs[start : start + per_table])
                .to_pandas()
                .style.map(lambda v: "color: #9e9e9e" if isinstance(v, str) and v.endswith(NOT_SIGNIFICANT) else ""),
                hide_index=True,
                width="stretch",
            )
        n_ns = int(cells["significant"].not_().sum())  # null (no threshold stored) is not counted
        st.caption(
            "Each cell: layer · unit (AP). The same unit in several columns is a cross-lingual expert. "
            f"Greyed, *n.s.*: not significant, {n_ns} of {cells.height} shown. {significance_text(tested)}"
        )
        # The download: one row per (language, rank), with the test's threshold and its n.s. flag as the grid shows it.
        downloads(
            units.join(tested.select("lang", "rank", "threshold", "significant"), on=["lang", "rank"], how="left"),
            f"top_units_{concept}_{ckpt}_k{k}",
        )
    with table_tab:
        table(
            with_neuron_links(units.join(sig, on=["lang", "rank"], how="left"), concept),
            f"top_units_long_{concept}_{ckpt}_k{k}",
            column_config=LINK_CONFIG,
        )

left, right = st.columns(2)
with left:
    st.subheader("Language x language overlap")
    measure = url_select(
        "Measure",
        ["jaccard", "over_k", "spearman_ap"],
        param="ov",
        key="concepts.ov",
        default=c.overlap_measure,
        what="overlap measure",
        format_func=MEASURE_NAMES.get,
    )
    if matrix.height:
        chance_here = (
            f"{chance_ov[f'{measure}_mean'][-1] or 0:.4f}"
            if measure in ("jaccard", "over_k") and chance_ov.height
            else "0"
            if chance_ov.height
            else "not stored"
        )
        chart(
            charts.lang_heatmap(
                matrix,
                measure,
                title=f"{MEASURE_NAMES[measure]}: {fmt_concept(concept)} at {ckpt} (chance {chance_here})",
            ),
            matrix,
            f"overlap_matrix_{concept}_{ckpt}",
        )
    else:
        empty("No overlap stored for this concept and checkpoint.")
with right:
    st.subheader("Overlap over training")
    hist = q(Q.concept_overlap_history, c.run_id, concept)
    if hist.height:
        mean = hist.group_by(["checkpoint", "step"]).agg(pl.col(measure).mean()).with_columns(pair=pl.lit("mean"))
        both = pl.concat(
            [hist.select("checkpoint", "step", "pair", measure), mean.select("checkpoint", "step", "pair", measure)]
        )
        n_pairs = hist["pair"].n_unique()
        shown = both if n_pairs <= 28 else mean
        # Chance: random top-K sets' exact expected Jaccard or |A∩B|/k; Spearman's is 0.
        reference = (
            chance_ov.select("checkpoint", pl.col(f"{measure}_mean").alias(measure))
            if measure in ("jaccard", "over_k")
            else chance_ov.select("checkpoint", pl.lit(0.0).alias(measure))
        )
        # The axis spans the data and the chance line (a Jaccard of 0.05 on a 0-1 axis would read as flat).
        top = max(charts.finite_max(shown[measure], 0.0), charts.finite_max(reference[measure], 0.0))
        lines = charts.lines_over_checkpoints(
            shown,
            order,
            measure,
            color="pair",
            y_title=MEASURE_NAMES[measure],
            title=f"{fmt_concept(concept)}: {measure} per language pair"
            + (f" ({topk_sets})" if measure in ("jaccard", "over_k") else " (all units' AP)")
            + ("" if n_pairs <= 28 else f" (the mean of {n_pairs} pairs)"),
            highlight="mean",
            domain=(min(0.0, charts.finite_min(shown[measure])), min(1.0, max(top * 1.15, 1e-6))),
        )
        chart(
            charts.with_chance(
                lines, reference=charts.chance_lines(reference, order, measure, label="chance (random top-K sets)")
            )
            if reference.height
            else lines,
            hist,
            f"overlap_history_{concept}",
        )
        st.caption(f"Dashed: chance ({chance_text}).")
    else:
        empty("No overlap stored for this concept.")

st.subheader("Shared experts")
st.caption(
    f"Units in the stored top-{c.top_k} of {md(fmt_concept(concept))} in many languages at "
    f"{md(ckpt)}. min/mean AP are over "
    "every language, so a high min AP marks a reliable predictor everywhere."
)
n_langs = max(c.min_langs, units["lang"].n_unique() if units.height else c.min_langs)
s_left, s_right = st.columns([3, 2])
with s_left:
    min_langs = url_int(
        "At least this many languages",
        param="minl",
        key="concepts.minl",
        min_value=c.min_langs,
        max_value=max(n_langs, c.min_langs),
        default=c.min_langs,
        what="minimum number of languages",
    )
    shared = shared_all.filter(pl.col("n_langs_topk") >= min_langs)
    if shared.height:
        table(
            with_neuron_links(shared, concept),
            f"shared_experts_{concept}_{ckpt}_min{min_langs}",
            column_config=LINK_CONFIG,
            height=320,
        )
        st.caption("Open a unit's page:")
        with st.container(horizontal=True, gap="small"):
            for row in shared.head(6).iter_rows(named=True):
                neuron_link(
                    row["layer"],
                    row["unit"],
                    f"L{row['layer']} · U{row['unit']} ({row['n_langs_topk']} langs)",
                    concept,
                )
    else:
        empty(f"No unit is in the top-K of this concept in at least {min_langs} languages at {md(ckpt)}.")
with s_right:
    sh = q(Q.shared_expert_history, c.run_id, concept)
    shared_lines = charts.lines_over_checkpoints(
        sh,
        order,
        "n_shared",
        y_title="shared experts",
        title=f"Shared experts (top-{c.top_k} in ≥ {c.min_langs} languages) over training",
        tooltip=["max_langs:Q"],
        height=280,
    )
    chart(
        charts.with_chance(
            shared_lines,
            reference=charts.chance_lines(
                chance_ov.select("checkpoint", pl.col("shared_expected").alias("n_shared")),
                order,
                "n_shared",
                y_title="shared experts",
                label="chance (random top-K sets)",
            ),
        )
        if chance_ov.height
        else shared_lines,
        sh,
        f"shared_expert_history_{concept}",
    )

st.subheader("Emergence")
st.caption(
    "The first checkpoint from which an overlap or a shared unit stays above chance at every later "
    "checkpoint. Language pairs: top-K Jaccard above the random-set 99th percentile; units: AP above the "
    f"permutation threshold as a top-K expert in ≥ {c.min_langs} languages."
)
e_left, e_right = st.columns(2)
with e_left:
    pair_em = q(Q.pair_emergence, c.run_id, concept)
    emerged = pair_em.filter(pl.col("emerged_at").is_not_null())
    st.markdown(f"**Language pairs**: {emerged.height} of {pair_em.height} stay above chance")
    if pair_em.height:
        table(
            pair_em.drop("concept_id").with_columns(pl.col("emerged_at").fill_null("not yet")),
            f"pair_emergence_{concept}",
            height=260,
        )
    else:
        empty("No overlap stored for this concept.")
with e_right:
    unit_em = q(Q.unit_emergence, c.run_id, c.min_langs, concept)
    st.markdown(f"**Shared units**: {unit_em.height} stay above chance")
    if unit_em.height:
        table(
            with_neuron_links(unit_em.drop("concept_id"), concept),
            f"unit_emergence_{concept}",
            column_config=LINK_CONFIG,
            height=260,
        )
    else:
        empty(f"No unit stays significant in ≥ {c.min_langs} languages up to the last checkpoint.")

with st.expander("Example input sentences"):
    sentences = q(Q.concept_sentences, concept, None, 3)
    if sentences.height:
        table(sentences, f"sentences_{concept}")
    else:
        empty("The store carries no sentences for this concept.")
