"""Steering: fix a concept's expert units (found in one language) and generate freely: which
language and topic come out, early and late in training?"""

import polars as pl
import streamlit as st

from explorer import charts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.pickers import checkpoint_order, concept_label_func
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.widgets import url_select

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Steering", "icon": "🧭", "url_path": "steering", "section": "The rest of the paper", "order": 100}

c = ctx()
fmt_concept = concept_label_func()

st.title("Steering")
st.caption(
    "Suau et al.'s self-conditioning: the top expert units of a concept, found in a source language, "
    "are fixed to a typical active value while the model generates from the start token."
)

summary = q(Q.steering_summary, c.run_id)
if summary.height == 0:
    empty("This store has no steering generations (the steering stage did not run).")
    st.stop()

st.subheader("Outcome per checkpoint")
table(
    summary,
    "steering_summary",
    column_config={
        "concept_rate": st.column_config.ProgressColumn("on concept", min_value=0.0, max_value=1.0, format="%.2f"),
        "source_lang_rate": st.column_config.ProgressColumn(
            "in source language", min_value=0.0, max_value=1.0, format="%.2f"
        ),
    },
)

rows = q(Q.steering, c.run_id)
concepts = sorted(set(rows["concept_id"].to_list()))
concept = url_select(
    "Concept", concepts, param="concept", key="steering.concept", what="steered concept", format_func=fmt_concept
)
view = rows.filter(pl.col("concept_id") == concept)

st.subheader("Output language over training")
st.caption(
    "Share of the outputs written in the experts' source language, in English, in any other language "
    "(lingua chooses among all the languages it knows), or undetermined, per checkpoint; one chart per "
    "number N of fixed units (N = 0: the unsteered control)."
)
shares = q(Q.steering_language_shares, c.run_id).filter(pl.col("concept_id") == concept)
order = checkpoint_order()
for src in sorted(set(shares["source_lang"].to_list())):
    by_src = shares.filter(pl.col("source_lang") == src)
    ns = sorted(set(by_src["n_neurons"].to_list()))
    for col, n in zip(st.columns(len(ns)), ns):
        with col:
            one = by_src.filter(pl.col("n_neurons") == n)
            chart(
                charts.lines_over_checkpoints(
                    one,
                    order,
                    "share",
                    color="language",
                    y_title="share of outputs",
                    domain=(0.0, 1.0),
                    tooltip=["n:Q", "n_outputs:Q"],
                    title=f"{src} experts, N = {n}",
                ),
                one,
                f"steering_languages_{concept}_{src}_{n}",
            )

st.subheader("Generations")
table(
    view.select(
        "checkpoint",
        "source_lang",
        "n_neurons",
        "seed",
        "output_lang",
        "output_lang_confidence",
        "expresses_concept",
        "concept_lang",
        "output_text",
        "prompt",
        "value_mode",
        "top_p",
        "temperature",
        "max_new_tokens",
    ),
    f"steering_{concept}",
    height=420,
)
