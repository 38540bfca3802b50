"""Steering: fix a concept's expert units (found in one language) and generate freely: which
language and topic come out, early and late in training?

The few outputs of a (checkpoint, N) rarely have one main language (a mode of three different languages is a
tie-break), so the page shows every output language's share, and says where fixing the units changed nothing:
each steered output is compared with the unsteered one of the same prompt and seed."""

import polars as pl
import streamlit as st

from explorer import charts, charts_counts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.pickers import checkpoint_label_func, checkpoint_order, concept_label_func
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.text import md
from explorer.widgets import url_select

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Steering", "icon": "🧭", "url_path": "steering", "section": "The rest of the paper", "order": 100}

#: The keys of one (checkpoint, concept, source language, N) group of outputs.
GROUP = ["checkpoint", "concept_id", "source_lang", "n_neurons"]

c = ctx()
fmt_concept = concept_label_func()
fmt_ckpt = checkpoint_label_func()


def language_mix(languages: pl.DataFrame) -> pl.DataFrame:
    """Per group: its output languages as one line, most frequent first ("sl 2/3, la 1/3")."""
    return (
        languages.sort(["n", "output_lang"], descending=[True, False])
        .group_by(GROUP, maintain_order=True)
        .agg(pl.format("{} {}/{}", "output_lang", "n", "n_outputs").str.join(", ").alias("output_languages"))
    )


def changed_text(one: pl.DataFrame) -> str:
    """One line per source language and N: how many steered outputs differ from the unsteered ones, per
    checkpoint (``one``: `explorer.queries.steering_changes` rows of one source language and N, in training
    order). Outputs without an unsteered control of the same prompt and seed are said to be left out."""
    parts = []
    for row in one.iter_rows(named=True):
        part = f"{row['n_changed']} of {row['n_compared']} outputs at {md(fmt_ckpt(row['checkpoint']))}"
        if row["n_compared"] and row["n_changed"] == 0:
            part += " (identical to N = 0)"
        if row["n_outputs"] > row["n_compared"]:
            part += f" ({row['n_outputs'] - row['n_compared']} without an unsteered output to compare)"
        parts.append(part)
    return "; ".join(parts)


st.title("Steering")
st.caption(
    "Suau et al.'s self-conditioning: the top expert units of a concept, found in a source language, "
    "are fixed to a typical active value while the model generates from the start token."
)

summary = q(Q.steering_summary, c.run_id)
if summary.height == 0:
    empty("This store has no steering generations (the steering stage did not run).")
    st.stop()

languages = q(Q.steering_output_languages, c.run_id)
changes = q(Q.steering_changes, c.run_id)

st.subheader("Outcome per checkpoint")
st.caption(
    "Output languages: every language the outputs of a row are written in, with its count of the row's outputs "
    "(no single main language: with a few outputs that would be a tie-break). Changed: the steered outputs whose "
    "text differs from the unsteered output (N = 0) of the same prompt and seed."
)
outcome = (
    summary.drop("main_output_lang")
    .join(language_mix(languages), on=GROUP, how="left")
    .join(
        changes.select(*GROUP, pl.format("{} of {}", "n_changed", "n_compared").alias("changed")),
        on=GROUP,
        how="left",
    )
)
table(
    outcome,
    "steering_summary",
    column_config={
        "concept_rate": st.column_config.ProgressColumn("on concept", min_value=0.0, max_value=1.0, format="%.2f"),
        "source_lang_rate": st.column_config.ProgressColumn(
            "in source language", min_value=0.0, max_value=1.0, format="%.2f"
        ),
        "output_languages": st.column_config.TextColumn("output languages"),
        "changed": st.column_config.TextColumn("changed vs N = 0"),
    },
)

rows = q(Q.steering, c.run_id)
concepts = sorted(set(rows["concept_id"].to_list()))
concept = url_select(
    "Concept", concepts, param="concept", key="steering.concept", what="steered concept", format_func=fmt_concept
)
view = rows.filter(pl.col("concept_id") == concept)
order = checkpoint_order()

st.subheader("Did fixing the units change the outputs?")
mine = changes.filter(pl.col("concept_id") == concept)
if mine.height:
    for src in sorted(set(mine["source_lang"].to_list())):
        by_src = mine.filter(pl.col("source_lang") == src)
        for n in sorted(set(by_src["n_neurons"].to_list())):
            one = by_src.filter(pl.col("n_neurons") == n)
            st.markdown(f"**{md(src)} experts, N = {n}** changed {changed_text(one)}.")
else:
    empty("No steered outputs (N > 0) of this concept to compare with the unsteered ones.")

st.subheader("Output languages per checkpoint")
st.caption(
    "Share of the outputs of each checkpoint and number N of fixed units written in each language "
    "(lingua's label; und = undetermined); the shares of a bar sum to 1. N = 0: the unsteered control."
)
mix = languages.filter(pl.col("concept_id") == concept)
palette = sorted(set(mix["output_lang"].to_list()))
for src in sorted(set(mix["source_lang"].to_list())):
    by_src = mix.filter(pl.col("source_lang") == src)
    ns = sorted(set(by_src["n_neurons"].to_list()))
    for col, n in zip(st.columns(len(ns)), ns):
        with col:
            one = by_src.filter(pl.col("n_neurons") == n)
            chart(
                charts_counts.stacked_over_checkpoints(
                    one,
                    order,
                    y="share",
                    color="output_lang",
                    y_title="share of the outputs",
                    color_title="output language",
                    shares=True,
                    colors=palette,
                    tooltip=["n:Q", "n_outputs:Q"],
                    title=f"{src} experts, N = {n}",
                ),
                one,
                f"steering_output_languages_{concept}_{src}_{n}",
            )

st.subheader("Output language over training")
st.caption(
    "Share of the outputs written in the experts' source language, in English, in any other language "
    "(lingua chooses among all the languages it knows), or undetermined, per checkpoint; one chart per "
    "number N of fixed units (N = 0: the unsteered control)."
)
shares = q(Q.steering_language_shares, c.run_id).filter(pl.col("concept_id") == concept)
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
