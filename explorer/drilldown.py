"""The Neuron page's drill-downs: what fires the unit, how it responds, what it writes, and the
units most like it. A section of ``views/neuron.py``, kept in its own module so the page stays readable.

Store text is text: a context is shown by splitting it at the stored peak offsets and passing every piece
through :func:`explorer.text.md`; the highlight is markdown bold that this module adds around the escaped
peak token, never markup taken from the store. The bold markers are fenced by invisible word joiners
(U+2060): markdown only takes ``**`` for bold where its neighbours are "flanking" (a ``**`` between a
letter and a punctuation mark, as in ``a**,**b``, stays two literal asterisks), and a word joiner is
neither space nor punctuation, so the markers are bold whatever the store's text has next to the peak.
"""

from __future__ import annotations

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
)
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.text import WORD_JOINER, md
from explorer.widgets import plain_selectbox


def highlighted(text: str, start: int | None, end: int | None) -> str:
    """``text`` as literal markdown with the characters ``start:end`` (the peak token) in bold.

    The token's surrounding whitespace (byte-level BPE tokens start with their space) stays outside the bold
    markers, where markdown would not see them as emphasis; offsets outside the text highlight nothing.
    """
    if start is None or end is None or not (0 <= start < end <= len(text)):
        return md(text)
    token = text[start:end]
    lead = len(token) - len(token.lstrip())
    trail = len(token.rstrip())
    if not token.strip():
        return md(text)
    head, core, tail = text[: start + lead], text[start + lead : start + trail], text[start + trail :]
    return f"{md(head)}{BOLD_OPEN}{md(core)}{BOLD_CLOSE}{md(tail)}"


# Bold markers that are always left- and right-flanking (see the module docstring).
BOLD_OPEN = f"**{WORD_JOINER}"
BOLD_CLOSE = f"{WORD_JOINER}**"


def drilldown_section(layer: int, unit: int, concept: str | None) -> None:
    """Top contexts per language, response histograms (for ``concept``) and output tokens, at a checkpoint
    picked on a slider; then the units with the most similar cross-lingual profile."""
    c = ctx()
    order = checkpoint_order()
    fmt_concept = concept_label_func()
    fmt_lang = language_label_func()
    st.subheader("What fires it, how it responds, what it writes")
    ckpt = pick_checkpoint("Checkpoint (drill-downs)", param="dckpt", key="neuron.dckpt")
    contexts = q(Q.unit_top_contexts, c.run_id, ckpt, layer, unit)
    hist = q(Q.unit_response_hist, c.run_id, ckpt, layer, unit)
    tokens = q(Q.unit_output_tokens, c.run_id, layer, unit)

    st.markdown(f"**Top contexts per language at {md(checkpoint_label(ckpt))}** (peak token in bold)")
    if contexts.height == 0:
        empty(
            f"No drill-downs for layer {layer} · unit {unit} at {md(ckpt)}: they are stored for the units that "
            "are a top-K expert of some concept or language-specific (LAPE) there, up to [drilldown] max_units."
        )
    else:
        langs = contexts["lang"].unique().sort().to_list()
        for tab, lang in zip(st.tabs([md(fmt_lang(x)) for x in langs]), langs):
            with tab:
                for row in contexts.filter(pl.col("lang") == lang).iter_rows(named=True):
                    st.markdown(
                        f"{row['rank']}\\. `{row['response']:.3f}` · "
                        f"{highlighted(row['text'], row['peak_start'], row['peak_end'])}"
                    )
                    st.caption(
                        f"concept {md(fmt_concept(row['concept_id']))} · sentence {row['sentence_id']} · "
                        f"peak activation {row['peak_act']:.3f}"
                        if row["peak_act"] is not None
                        else ""
                    )
        table(contexts, f"neuron_L{layer}_U{unit}_top_contexts_{ckpt}")

    st.markdown("**Response distribution: the concept's contexts against the language's other contexts**")
    concepts = hist["concept_id"].unique().sort().to_list() if hist.height else []
    if not concepts:
        empty(f"At {md(ckpt)} the unit is no top-K expert with a stored histogram.")
    else:
        pick = concept if concept in concepts else concepts[0]
        top = st.columns(2)
        pick = plain_selectbox(
            "Concept (histograms)",
            concepts,
            format_func=fmt_concept,
            index=concepts.index(pick),
            key="neuron.hconcept",
            where=top[0],
        )
        h_langs = hist.filter(pl.col("concept_id") == pick)["lang"].unique().sort().to_list()
        lang = plain_selectbox("Language (histograms)", h_langs, format_func=fmt_lang, key="neuron.hlang", where=top[1])
        one = hist.filter((pl.col("concept_id") == pick) & (pl.col("lang") == (lang or h_langs[0])))
        left, right = st.columns(2)
        with left:
            mine = one.filter(pl.col("grp") == "concept")
            chart(
                charts.response_histogram(mine, title=f"{fmt_concept(pick)} contexts ({int(mine['n'].sum())})"),
                mine,
                f"neuron_L{layer}_U{unit}_hist_{pick}_{lang}_concept",
            )
        with right:
            rest = one.filter(pl.col("grp") == "other")
            chart(
                charts.response_histogram(rest, title=f"other contexts ({int(rest['n'].sum())})", color="#9e9e9e"),
                rest,
                f"neuron_L{layer}_U{unit}_hist_{pick}_{lang}_other",
            )

    st.markdown("**What it writes: direct effect on the output logits (logit lens), over training**")
    if tokens.height == 0:
        empty("No output tokens stored for this unit.")
    else:
        at = tokens.filter(pl.col("checkpoint") == ckpt)
        g_left, g_right = st.columns(2)
        for where, direction in ((g_left, "promoted"), (g_right, "suppressed")):
            with where:
                rows = tokens.filter(pl.col("direction") == direction)
                chart(
                    charts.token_grid(rows, order, title=f"most {direction} tokens"),
                    rows,
                    f"neuron_L{layer}_U{unit}_{direction}_tokens",
                )
                listed = at.filter(pl.col("direction") == direction)
                if listed.height:
                    st.markdown(
                        f"At {md(ckpt)}: "
                        + ", ".join(
                            f"{md(t)} ({v:+.2f})" for t, v in zip(listed["token"].to_list(), listed["logit"].to_list())
                        )
                    )
        st.caption(
            "Each unit of activation adds its down-projection column to the residual stream. Its exact direct "
            "effect: the column, mean-centred where the final norm is a LayerNorm (its mean subtraction is "
            "linear), times the final norm's scale, through the unembedding, centred over the vocabulary; "
            "it raises these logits most and lowers those most. Only the norm's division by the stream's "
            "size depends on the context, and it does not change the order."
        )

    st.markdown(f"**Units with the most similar cross-lingual profile at {md(checkpoint_label(ckpt))}**")
    similar = q(Q.similar_units, c.run_id, ckpt, layer, unit, 10)
    if similar.height:
        table(with_neuron_links(similar), f"neuron_L{layer}_U{unit}_similar_{ckpt}", column_config=LINK_CONFIG)
        st.caption(
            "Cosine of the units' AP vectors over concept x language (from the stored top-K rows; an AP "
            "outside a unit's top-K counts as 0)."
        )
    else:
        empty("No other unit is a top-K expert of any (concept, language) this unit serves at this checkpoint.")
