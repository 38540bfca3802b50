"""Language neurons: units that fire for one language only (LAPE, Tang et al. 2024), and how the
counts of language-specific and shared-expert units change over training.

Tang et al.'s rule assigns a selected unit to every language whose activation probability passes a bar, so the
store holds one row per (unit, language) assignment: every count on this page says whether it counts units
(each once) or assignments, and the unit's most active language is told apart from its assigned ones."""

import math

import polars as pl
import streamlit as st

from explorer import charts, charts_counts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.links import LINK_CONFIG, with_neuron_links
from explorer.pickers import checkpoint_label, checkpoint_order, pick_checkpoint
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

#: The category of the units whose largest activation probability is shared by several languages.
TIED = "tied"


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, in the plural unless there is one."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


c = ctx()
order = checkpoint_order()
n_langs = q(Q.sentence_counts).height

st.title("Language neurons")
log_l = f" = {math.log(n_langs):.3f}" if n_langs > 1 else ""
st.caption(
    "Language-specific units by language activation probability entropy (LAPE): LAPE runs from 0 (the unit is "
    f"active in one language only) to log L{log_l} (equally active in all {n_langs} languages). "
    "Shared experts: top-K for one concept in many languages."
)

counts = q(Q.neuron_counts, c.run_id)
totals = q(Q.language_neuron_totals, c.run_id)
if counts.height == 0 and totals.height == 0:
    empty("This store has no language-neuron analysis (the analysis stage did not run).")
    st.stop()

st.markdown(
    "A unit can be specific to several languages: the selection assigns it to every language in which its "
    "activation probability passes the bar, and the store keeps one row per **(unit, language) assignment**. "
    "The charts below count either **units** (each once) or **assignments** (each unit once per assigned "
    "language), as their axes say. A unit's **most active language** is the language of its largest activation "
    "probability (always one of its assigned languages); *tied* where several share it."
)

top = q(Q.language_neuron_top_languages, c.run_id)
per_lang = q(Q.language_neuron_counts, c.run_id).rename({"top_lang": "assigned_lang", "n": "n_assignments"})
languages = sorted((set(top["most_active_lang"].to_list()) | set(per_lang["assigned_lang"].to_list())) - {TIED})
colors = [*languages, TIED] if TIED in set(top["most_active_lang"].to_list()) else languages

left, right = st.columns(2)
with left:
    if counts.height:
        kinds = counts.group_by(["checkpoint", "step", "kind"]).agg(pl.col("n").sum())
        chart(
            charts.lines_over_checkpoints(
                kinds,
                order,
                "n",
                color="kind",
                y_title="distinct units",
                title="Units of each kind over training (each unit once)",
            ),
            counts,
            "neuron_counts",
        )
    else:
        empty("No neuron counts.")
with right:
    if top.height:
        chart(
            charts_counts.stacked_over_checkpoints(
                top,
                order,
                y="n_units",
                color="most_active_lang",
                y_title="language-specific units (each once)",
                color_title="most active language",
                colors=colors,
                title="Language-specific units by their most active language",
            ),
            top,
            "language_neuron_units_by_most_active_language",
        )
    else:
        empty("No language-specific units.")

left, right = st.columns(2)
with left:
    if per_lang.height:
        chart(
            charts_counts.stacked_over_checkpoints(
                per_lang,
                order,
                y="n_assignments",
                color="assigned_lang",
                y_title="(unit, language) assignments",
                color_title="assigned language",
                colors=colors,
                title="Assignments by assigned language (a unit once per language)",
            ),
            per_lang,
            "language_neuron_assignments_by_language",
        )
with right:
    if totals.height:
        shown = totals.select("checkpoint", "n_units", "n_assignments", "n_multilingual")
        table(
            shown,
            "language_neuron_totals",
            column_config={
                "n_units": st.column_config.NumberColumn("units", help="distinct language-specific units"),
                "n_assignments": st.column_config.NumberColumn(
                    "assignments", help="(unit, language) pairs: a unit assigned to two languages counts twice"
                ),
                "n_multilingual": st.column_config.NumberColumn(
                    "units with several languages", help="units assigned to more than one language"
                ),
            },
        )

if counts.height:
    kinds = sorted(set(counts["kind"].to_list()))
    kind = url_select("Kind", kinds, param="kind", key="language_neurons.kind", what="kind")
    one = counts.filter(pl.col("kind") == kind).with_columns(pl.col("n").cast(pl.Float64))
    chart(
        charts.layer_checkpoint_heatmap(
            one, order, value="n", title=f"{kind} units per layer (distinct units)", scheme="blues"
        ),
        one,
        f"neuron_counts_{kind}",
    )

st.subheader("The most language-specific units")
ckpt = pick_checkpoint(key="language_neurons.ckpt")
here = totals.filter(pl.col("checkpoint") == ckpt)
if here.height:
    n_units, n_assignments, n_multi = (int(here[col][0]) for col in ("n_units", "n_assignments", "n_multilingual"))
    st.markdown(
        f"At {md(checkpoint_label(ckpt))}: **{plural(n_units, 'language-specific unit')}**, with "
        f"**{plural(n_assignments, '(unit, language) assignment')}**; {n_multi} of the units "
        f"{'is' if n_multi == 1 else 'are'} assigned to more than one language. One row per assignment below."
    )
rows = q(Q.language_neuron_assignments, c.run_id, ckpt, 1000)
if rows.height:
    table(
        with_neuron_links(rows),
        f"language_neurons_{ckpt}",
        column_config={
            **LINK_CONFIG,
            "assigned_lang": st.column_config.TextColumn(
                "assigned language", help="a language the selection assigned the unit to (the store's top_lang)"
            ),
            "assigned_prob": st.column_config.NumberColumn(
                "p (assigned)", help="the unit's activation probability in the assigned language", format="%.3f"
            ),
            "n_langs_assigned": st.column_config.NumberColumn("languages assigned"),
            "most_active_lang": st.column_config.TextColumn(
                "most active language", help="the language(s) of the unit's largest activation probability"
            ),
        },
        height=400,
    )
else:
    empty(f"No language-specific units at {md(ckpt)}.")
