"""Steering: fix a concept's expert units (found in one language) and generate freely: which
language and topic come out, early and late in training?"""

import polars as pl
import streamlit as st

from explorer import common
from explorer import queries as Q

c = common.ctx()
fmt_concept = common.concept_label_func()

st.title("Steering")
st.caption("Suau et al.'s self-conditioning: the top expert units of a concept, found in a source language, "
           "are fixed to a typical active value while the model generates from the start token.")

summary = common.q(Q.steering_summary, c.run_id)
if summary.height == 0:
    common.empty("This store has no steering generations (the steering stage did not run).")
    st.stop()

st.subheader("Outcome per checkpoint")
common.table(summary, "steering_summary",
             column_config={"concept_rate": st.column_config.ProgressColumn(
                                "on concept", min_value=0.0, max_value=1.0, format="%.2f"),
                            "source_lang_rate": st.column_config.ProgressColumn(
                                "in source language", min_value=0.0, max_value=1.0, format="%.2f")})

st.subheader("Generations")
rows = common.q(Q.steering, c.run_id)
concepts = sorted(set(rows["concept_id"].to_list()))
concept = common.url_select("Concept", concepts, param="concept", key="steering.concept", what="steered concept",
                            format_func=fmt_concept)
view = rows.filter(pl.col("concept_id") == concept)
common.table(view.select("checkpoint", "source_lang", "n_neurons", "seed", "output_lang", "expresses_concept",
                         "output_text", "prompt", "value_mode"),
             f"steering_{concept}", height=420)
