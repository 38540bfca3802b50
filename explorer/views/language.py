"""Language: one language's concept experts, and how many it shares with other languages over training."""

import polars as pl
import streamlit as st

from explorer import charts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.links import LINK_CONFIG, with_neuron_links
from explorer.pickers import (
    checkpoint_label,
    checkpoint_order,
    concept_label_func,
    language_label_func,
    pick_checkpoint,
    pick_k,
    pick_language,
)
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.text import md

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Language", "icon": "🗣️", "url_path": "language", "section": "Explore", "order": 50}

c = ctx()
order = checkpoint_order()
fmt_concept = concept_label_func()
fmt_lang = language_label_func()

st.title("Language")
top = st.columns([2, 4, 1])
lang = pick_language(key="language.lang", where=top[0])
ckpt = pick_checkpoint(key="language.ckpt", where=top[1])
k = pick_k(key="language.k", default=5, where=top[2])

sharing = q(Q.language_sharing, c.run_id, lang)
experts = q(Q.language_experts, c.run_id, lang, ckpt, k)
top_k = c.top_k

st.subheader(f"How many of {md(fmt_lang(lang))}'s experts are shared, over training")
st.caption(
    f"Per concept: how many of its top-{top_k} experts in {md(lang)} are shared experts, "
    f"i.e. also top-{top_k} in at least {c.min_langs - 1} other language(s)."
)
if sharing.height:
    per_ck = (
        sharing.group_by(["checkpoint", "step"])
        .agg(
            (pl.col("n_shared").mean() / top_k).alias("mean_share"),
            pl.col("n_shared").mean().alias("mean_n_shared"),
            (pl.col("n_shared") > 0).sum().alias("concepts_with_shared"),
        )
        .sort(["step", "checkpoint"], nulls_last=True)
    )
    left, right = st.columns([2, 3])
    with left:
        chart(
            charts.lines_over_checkpoints(
                per_ck,
                order,
                "mean_share",
                y_title=f"share of the top-{top_k}",
                title="Mean share of experts that are shared",
                domain=(0.0, 1.0),
                tooltip=["mean_n_shared:Q", "concepts_with_shared:Q"],
            ),
            per_ck,
            f"language_{lang}_sharing_mean",
        )
    with right:
        rows = (
            sharing.group_by("concept_id")
            .agg(pl.col("n_shared").sum())
            .sort("n_shared", descending=True)["concept_id"]
            .to_list()
        )
        shown = rows[:50]
        chart(
            charts.concept_checkpoint_grid(
                sharing.filter(pl.col("concept_id").is_in(shown)),
                order,
                value="n_shared",
                rows=shown,
                max_value=top_k,
                title="shared experts per concept",
            ),
            sharing,
            f"language_{lang}_sharing_by_concept",
        )
        if len(rows) > 50:
            st.caption(f"The 50 concepts with the most sharing of {len(rows)}; the download has all.")
else:
    empty("No sharing data for this language.")

st.subheader(f"Top-{k} experts per concept in {md(lang)} at {md(checkpoint_label(ckpt))}")
if experts.height:
    view = with_neuron_links(experts)
    table(
        view,
        f"language_{lang}_experts_{ckpt}_k{k}",
        height=420,
        column_config={
            **LINK_CONFIG,
            "n_langs_topk": st.column_config.NumberColumn(
                "languages", help=f"in how many languages it is top-{top_k} (empty = fewer than {c.min_langs})"
            ),
            "langs": st.column_config.TextColumn("shared with"),
        },
    )
else:
    empty(f"No experts stored for {md(lang)} at {md(ckpt)}.")

with st.expander(f"Language identification of {md(lang)} (probe F1 per layer and checkpoint)"):
    f1 = q(Q.language_probe_f1, c.run_id, lang)
    if f1.height:
        rep = min(set(f1["representation"].to_list()), key=lambda r: (r != "mean", r))
        one = f1.filter(pl.col("representation") == rep)
        chart(
            charts.layer_checkpoint_heatmap(one, order, value="f1", title=f"F1 for {lang} ({rep} representation)"),
            f1,
            f"language_{lang}_probe_f1",
        )
    else:
        empty("No probe results for this language.")
