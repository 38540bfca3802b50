"""Compare: one concept at two checkpoints side by side: which units entered or left the top-K."""

import polars as pl
import streamlit as st

from explorer import charts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.links import LINK_CONFIG, with_neuron_links
from explorer.pickers import (
    checkpoint_label_func,
    checkpoint_order,
    concept_label_func,
    language_label_func,
    pick_concept,
    pick_k,
)
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.text import md
from explorer.widgets import url_select

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Compare", "icon": "↔️", "url_path": "compare", "section": "Explore", "order": 60}

c = ctx()
order = checkpoint_order()
fmt_concept = concept_label_func()
fmt_ckpt = checkpoint_label_func()
fmt_lang = language_label_func()

st.title("Compare checkpoints")
top = st.columns([2, 2, 2, 1])
concept = pick_concept(key="compare.concept", where=top[0])
ckpt_a = url_select(
    "Checkpoint A (before)",
    order,
    param="a",
    key="compare.a",
    default=order[0],
    what="checkpoint",
    where=top[1],
    format_func=fmt_ckpt,
)
ckpt_b = url_select(
    "Checkpoint B (after)",
    order,
    param="b",
    key="compare.b",
    default=order[-1],
    what="checkpoint",
    where=top[2],
    format_func=fmt_ckpt,
)
k = pick_k(key="compare.k", where=top[3])

diff = q(Q.compare_checkpoints, c.run_id, concept, ckpt_a, ckpt_b, k)
if diff.height == 0:
    empty(f"No experts stored for {md(fmt_concept(concept))} at either checkpoint.")
    st.stop()

counts = diff.group_by(["lang", "status"]).len("n").sort(["lang", "status"])
per_lang = (
    diff.group_by("lang")
    .agg(
        (pl.col("status") == "stayed").sum().alias("stayed"),
        (pl.col("status") == "entered").sum().alias("entered"),
        (pl.col("status") == "left").sum().alias("left"),
    )
    .with_columns(jaccard_a_b=pl.col("stayed") / (pl.col("stayed") + pl.col("entered") + pl.col("left")))
    .sort("lang")
)

left, right = st.columns([3, 2])
with left:
    chart(
        charts.status_bars(counts, title=f"Top-{k} units of {fmt_concept(concept)}: {ckpt_a} → {ckpt_b}"),
        counts,
        f"compare_counts_{concept}_{ckpt_a}_{ckpt_b}_k{k}",
    )
with right:
    st.markdown("**Per language**")
    table(
        per_lang,
        f"compare_summary_{concept}_{ckpt_a}_{ckpt_b}_k{k}",
        column_config={
            "jaccard_a_b": st.column_config.NumberColumn(
                "Jaccard A/B", format="%.2f", help=f"Overlap of the language's top-{k} sets at A and at B."
            )
        },
    )

st.subheader("Side by side: cross-lingual overlap")
ma = q(Q.concept_overlap_matrix, c.run_id, ckpt_a, concept)
mb = q(Q.concept_overlap_matrix, c.run_id, ckpt_b, concept)
chance_ov = q(Q.overlap_chance, c.run_id)  # chance: random top-K sets' exact expected Jaccard
chance = dict(zip(chance_ov["checkpoint"].to_list(), chance_ov["jaccard_mean"].to_list()))
# The stored overlaps are of the run's own K, not of the Top-K control above: the titles name it.
ok = q(Q.overlap_k, c.run_id) or c.top_k
st.caption(
    f"Jaccard of the stored top-{ok} sets of each language pair (the Top-{k} control does not change them); both "
    "heatmaps share one colour scale, and the diagonal (a language with itself) is grey, off the scale."
)
# One colour scale for A and B, from both sides' pairs (the diagonal left out), so equal colours are equal values.
both_sides = pl.concat([m.filter(pl.col("lang_a") != pl.col("lang_b")) for m in (ma, mb)])
shared_domain = (
    min(0.0, charts.finite_min(both_sides["jaccard"])),
    max(charts.finite_max(both_sides["jaccard"], 1.0), 1e-6),
)
ha, hb = st.columns(2)
# A and B may be the same checkpoint: each side's download is named by its side, so the keys differ.
for col, side, name, mat in ((ha, "A", ckpt_a, ma), (hb, "B", ckpt_b, mb)):
    with col:
        if mat.height:
            suffix = f", chance {chance[name]:.4f}" if name in chance else ""
            chart(
                charts.lang_heatmap(
                    mat, "jaccard", title=f"Jaccard at {side}: {name} (top-{ok} sets{suffix})", domain=shared_domain
                ),
                mat,
                f"overlap_matrix_{side}_{concept}_{name}",
            )
        else:
            empty(f"No overlap stored at {side}: {md(name)}.")

st.subheader("Units that entered or left")
langs = sorted(diff["lang"].unique().to_list())
lang = url_select(
    "Language",
    ["all", *langs],
    param="lang",
    key="compare.lang",
    what="language",
    format_func=lambda v: "all languages" if v == "all" else fmt_lang(v),
)
view = diff if lang == "all" else diff.filter(pl.col("lang") == lang)
cols = st.columns(3)
for col, status, blurb in (
    (cols[0], "entered", f"in the top-{k} at B, not at A"),
    (cols[1], "left", f"in the top-{k} at A, not at B"),
    (cols[2], "stayed", "in both"),
):
    drop = {"entered": ["rank_a", "ap_a"], "left": ["rank_b", "ap_b"], "stayed": []}[status]
    part = view.filter(pl.col("status") == status).drop(drop)
    with col:
        st.markdown(f"**{status.capitalize()}** ({part.height}): {blurb}")
        table(
            with_neuron_links(part.drop("status"), concept),
            f"compare_{status}_{concept}_{ckpt_a}_{ckpt_b}_{lang}",
            column_config=LINK_CONFIG,
            height=320,
        )
