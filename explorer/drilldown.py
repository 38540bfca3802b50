"""The Neuron page's drill-downs: what fires the unit, how it responds, what it writes, and the
units most like it. A section of ``views/neuron.py``, kept in its own module so the page stays readable.

Store text is text. A top context is HTML that this module builds (``st.html``, which renders no markdown):
the text is cut at the stored token offsets, every piece passes through :func:`explorer.text.html_text`, and
the only markup is the module's own spans around the pieces (a background colour from the unit's activation,
the value in a ``title``, an outline on the peak token). A store written before the per-token activations
were stored shows the peak token alone, as markdown: the text split at the stored peak offsets, every piece
through :func:`explorer.text.md`, the peak in bold markers fenced by invisible word joiners (U+2060):
markdown only takes ``**`` for bold where its neighbours are "flanking" (a ``**`` between a letter and a
punctuation mark, as in ``a**,**b``, stays two literal asterisks), and a word joiner is neither space nor
punctuation. Output tokens pass through :func:`explorer.text.readable_token` (a leading space as ``␣``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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
from explorer.text import WORD_JOINER, html_text, md, readable_token
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


#: A token's background runs from white (activation 0 or below) to this colour (the unit's largest activation
#: over the contexts shown), the Neuronpedia habit; the text on it stays black, on a light or a dark theme.
TOKEN_COLOUR = (255, 140, 0)
#: The peak token's outline, and a token tied with the peak's (the same activation: the peak is the first).
PEAK_OUTLINE = "2px solid #c2185b"
TIE_OUTLINE = "2px dashed #c2185b"


@dataclass
class TokenSpan:
    """Characters ``start:end`` of a context shown as one coloured piece, and the tokens (indices into the
    row's token lists) it shows: more than one where tokens share characters (byte-level BPE cuts a Chinese
    character into two tokens with the same offsets) or a token has none."""

    start: int
    end: int
    tokens: list[int] = field(default_factory=list)


def token_spans(n_chars: int, starts: Sequence[int], ends: Sequence[int]) -> list[TokenSpan]:
    """The pieces to colour of a text of ``n_chars`` characters, from its tokens' (start, end) offsets in token
    order: in order, not overlapping, within the text (offsets beyond it are clipped: a store is someone else's
    file), so that every character of the text is shown once, coloured or between pieces."""
    spans: list[TokenSpan] = []
    for k, (start, end) in enumerate(zip(starts, ends)):
        start = min(max(int(start), 0), n_chars)
        end = min(max(int(end), start), n_chars)
        if spans and (start < spans[-1].end or start == end):  # shares characters with the last piece, or has none
            spans[-1].end = max(spans[-1].end, end)
            spans[-1].tokens.append(k)
        else:
            spans.append(TokenSpan(start, end, [k]))
    return spans


def token_background(value: float, scale: float) -> str:
    """The CSS colour of a token of activation ``value`` on the white-to-`TOKEN_COLOUR` scale that reaches the
    colour at ``scale`` (the unit's largest activation shown); white at 0 and below, where ``scale`` is not
    positive, and for a value that is not a finite number."""
    finite = math.isfinite(value) and math.isfinite(scale)
    share = min(max(value / scale, 0.0), 1.0) if finite and scale > 0 else 0.0
    r, g, b = (round(255 + (c - 255) * share) for c in TOKEN_COLOUR)
    return f"rgb({r},{g},{b})"


def peak_token(
    starts: Sequence[int], ends: Sequence[int], acts: Sequence[float], peak_start: int | None, peak_end: int | None
) -> int | None:
    """The index of the peak token: of the tokens at the stored peak offsets (two where byte-level BPE cuts a
    character in two), the first with the largest activation; without one there, the first of the largest
    activation of all; None for a context without tokens."""
    at_peak = [k for k, (start, end) in enumerate(zip(starts, ends)) if start == peak_start and end == peak_end]
    candidates = at_peak or range(len(acts))
    return max(candidates, key=lambda k: acts[k]) if len(candidates) else None


def _usable_tokens(
    starts: Sequence[int | None], ends: Sequence[int | None], acts: Sequence[float | None]
) -> tuple[list[int], list[int], list[float]]:
    """The tokens of a stored row that can be drawn: as many as all three lists have, those with both offsets
    (a store is someone else's file: lists of other lengths or with NULLs in them are drawn as far as they go),
    a NULL activation read as NaN (drawn white)."""
    kept = [
        (int(s), int(e), float("nan") if a is None else float(a))
        for s, e, a in zip(starts, ends, acts)
        if s is not None and e is not None
    ]
    return [s for s, _, _ in kept], [e for _, e, _ in kept], [a for _, _, a in kept]


def context_html(
    text: str,
    starts: Sequence[int | None],
    ends: Sequence[int | None],
    acts: Sequence[float | None],
    *,
    peak_start: int | None,
    peak_end: int | None,
    scale: float,
) -> str:
    """One context as HTML: every token on the colour of the unit's activation there (`token_background`), the
    value in its ``title`` (shown on hover), the peak token outlined and tokens tied with it (the same
    activation) outlined dashed. Text between tokens (or beyond the last) is shown uncoloured; every piece of
    the store's text is escaped (`html_text`)."""
    starts, ends, acts = _usable_tokens(starts, ends, acts)
    peak = peak_token(starts, ends, acts, peak_start, peak_end)
    out, cursor = [], 0
    for span in token_spans(len(text), starts, ends):
        if span.start > cursor:
            out.append(html_text(text[cursor : span.start]))
        values = [float(acts[k]) for k in span.tokens]
        title = "activation " + " · ".join(f"{v:.3f}" for v in values)
        style = f"background-color:{token_background(max(values), scale)};color:#000;border-radius:2px;"
        if peak in span.tokens:
            title += " (peak)"
            style += f"outline:{PEAK_OUTLINE};"
        elif peak is not None and any(acts[k] == acts[peak] for k in span.tokens):
            title += " (tied with the peak)"
            style += f"outline:{TIE_OUTLINE};"
        out.append(f'<span title="{html_text(title)}" style="{style}">{html_text(text[span.start : span.end])}</span>')
        cursor = span.end
    if cursor < len(text):
        out.append(html_text(text[cursor:]))
    return "".join(out)


def activation_scale(contexts: pl.DataFrame) -> float:
    """The unit's largest activation over the tokens of ``contexts`` (its top contexts at one checkpoint, every
    language): where the colour scale tops out, so that the colours compare across the unit's contexts and
    languages at this checkpoint (the Neuronpedia habit of one scale per feature)."""
    values = contexts["token_act"].explode().drop_nulls()
    return float(values.max()) if values.len() else 0.0


def contexts_html(rows: pl.DataFrame, *, scale: float, concept_label) -> str:
    """The HTML of one language's top contexts (`unit_context_tokens` rows, every one with its tokens): per row
    its rank and response, the coloured context (`context_html`) and a line naming its concept and sentence."""
    items = []
    for row in rows.iter_rows(named=True):
        body = context_html(
            row["text"],
            row["token_start"],
            row["token_end"],
            row["token_act"],
            peak_start=row["peak_start"],
            peak_end=row["peak_end"],
            scale=scale,
        )
        items.append(
            '<div style="margin:0 0 0.8em 0;">'
            f'<span style="font-family:monospace;">{int(row["rank"])}. {row["response"]:.3f}</span> · '
            f'<span style="white-space:pre-wrap;line-height:1.9;">{body}</span>'
            f'<div style="font-size:0.85em;opacity:0.7;">concept {html_text(concept_label(row["concept_id"]))} · '
            f"sentence {int(row['sentence_id'])}</div></div>"
        )
    return "<div>" + "".join(items) + "</div>"


def _top_contexts(contexts: pl.DataFrame, fmt_lang, fmt_concept) -> None:
    """Per language tab: the contexts with every token coloured where the store has the tokens, else (a store
    written before they were stored) the peak token in bold, with a note."""
    tokens = contexts.height > 0 and contexts["token_act"].is_not_null().all()
    scale = activation_scale(contexts) if tokens else 0.0
    if not tokens:
        st.caption(
            "This store has no per-token activations for these contexts (written before they were stored): "
            "the peak token alone is shown, in bold."
        )
    langs = contexts["lang"].unique().sort().to_list()
    for tab, lang in zip(st.tabs([md(fmt_lang(x)) for x in langs]), langs):
        with tab:
            mine = contexts.filter(pl.col("lang") == lang)
            if tokens:
                st.html(contexts_html(mine, scale=scale, concept_label=fmt_concept))
                continue
            for row in mine.iter_rows(named=True):
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
    if tokens:
        st.caption(
            "Each token's background is the unit's activation there: white at 0 and below, orange at its largest "
            f"over these contexts in every language ({scale:.3f}); the value shows on hover. Outlined: the peak "
            "token; dashed: a token with the same activation as the peak."
        )


def drilldown_section(layer: int, unit: int, concept: str | None) -> None:
    """Top contexts per language, response histograms (for ``concept``) and output tokens, at a checkpoint
    picked on a slider; then the units with the most similar cross-lingual profile."""
    c = ctx()
    order = checkpoint_order()
    fmt_concept = concept_label_func()
    fmt_lang = language_label_func()
    st.subheader("What fires it, how it responds, what it writes")
    ckpt = pick_checkpoint("Checkpoint (drill-downs)", param="dckpt", key="neuron.dckpt")
    contexts = q(Q.unit_context_tokens, c.run_id, ckpt, layer, unit)
    hist = q(Q.unit_response_hist, c.run_id, ckpt, layer, unit)
    tokens = q(Q.unit_output_tokens, c.run_id, layer, unit)
    tokens = tokens.with_columns(pl.col("token").map_elements(readable_token, return_dtype=pl.Utf8))

    st.markdown(f"**Top contexts per language at {md(checkpoint_label(ckpt))}**")
    if contexts.height == 0:
        empty(
            f"No drill-downs for layer {layer} · unit {unit} at {md(ckpt)}: they are stored for the units that "
            "are a top-K expert of some concept or language-specific (LAPE) there, up to [drilldown] max_units."
        )
    else:
        _top_contexts(contexts, fmt_lang, fmt_concept)
        listed = contexts.drop("token_start", "token_end", "token_act")
        if (listed["peak_act"] == listed["response"]).all():  # max pooling: the peak is the response
            listed = listed.drop("peak_act")
        table(listed, f"neuron_L{layer}_U{unit}_top_contexts_{ckpt}")

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
