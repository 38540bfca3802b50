"""Language neurons: units that fire for one language only (LAPE, Tang et al. 2024), and how the
counts of language-specific and shared-expert units change over training."""

import polars as pl
import streamlit as st

from explorer import charts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.links import LINK_CONFIG, with_neuron_links
from explorer.pickers import checkpoint_order, pick_checkpoint
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.text import md
from explorer.widgets import url_select

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {
    "title": "Language neurons",
    "icon": "🏷️",
    "url_path": "language_neurons",
    "section": "The rest of the paper",
    "order": 90,
}

c = ctx()
order = checkpoint_order()

st.title("Language neurons")
st.caption(
    "Language-specific units by language activation probability entropy (LAPE): low entropy = the unit "
    "is active for one language. Shared experts: top-K for one concept in many languages."
)

counts = q(Q.neuron_counts, c.run_id)
per_lang = q(Q.language_neuron_counts, c.run_id)
if counts.height == 0 and per_lang.height == 0:
    empty("This store has no language-neuron analysis (the analysis stage did not run).")
    st.stop()

left, right = st.columns(2)
with left:
    if counts.height:
        totals = counts.group_by(["checkpoint", "step", "kind"]).agg(pl.col("n").sum())
        chart(
            charts.lines_over_checkpoints(
                totals, order, "n", color="kind", y_title="units", title="Units of each kind over training"
            ),
            counts,
            "neuron_counts",
        )
    else:
        empty("No neuron counts.")
with right:
    if per_lang.height:
        chart(
            charts.stacked_counts(
                per_lang, order, y="n", color="top_lang", title="Language-specific units by language"
            ),
            per_lang,
            "language_neuron_counts",
        )
    else:
        empty("No language-specific units.")

if counts.height:
    kinds = sorted(set(counts["kind"].to_list()))
    kind = url_select("Kind", kinds, param="kind", key="language_neurons.kind", what="kind")
    one = counts.filter(pl.col("kind") == kind).with_columns(pl.col("n").cast(pl.Float64))
    chart(
        charts.layer_checkpoint_heatmap(one, order, value="n", title=f"{kind} units per layer", scheme="blues"),
        one,
        f"neuron_counts_{kind}",
    )

st.subheader("The most language-specific units")
ckpt = pick_checkpoint(key="language_neurons.ckpt")
rows = q(Q.language_neurons, c.run_id, ckpt, 1000)
if rows.height:
    table(with_neuron_links(rows), f"language_neurons_{ckpt}", column_config=LINK_CONFIG, height=400)
else:
    empty(f"No language-specific units at {md(ckpt)}.")
