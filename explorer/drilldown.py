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

import altair as alt
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
from explorer.text import WORD_JOINER, html_text, md, plain, readable_token
from explorer.widgets import url_select


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


def _url_tabs(labels: dict[str, str], *, param: str, key: str) -> tuple[Sequence, str]:
    """Tabs (value -> markdown label, in order) whose selected tab is mirrored in ``?param=``: a link opens the
    tab it names (a value this store lacks opens the first), and picking a tab writes it back. Returns the tab
    containers and the value of the selected tab."""
    values = list(labels)
    raw = st.query_params.get(param)
    if raw in labels and raw != st.session_state.get(f"_url.{key}"):
        st.session_state[key] = labels[raw]  # a link we did not write: its tab
    default = labels[raw] if raw in labels else labels[values[0]]
    if st.session_state.get(key) not in labels.values():
        st.session_state.pop(key, None)
    tabs = st.tabs(list(labels.values()), default=default, key=key, on_change="rerun")
    chosen = st.session_state.get(key, default)
    value = next((v for v, label in labels.items() if label == chosen), values[0])
    st.query_params[param] = value
    st.session_state[f"_url.{key}"] = value
    return tabs, value


#: Marks the HTML block of a language's contexts beyond the top (`samples_html`), apart from its top contexts'.
SAMPLES_CLASS = "crossling-beyond-top"


def sample_label(sample: str) -> str:
    """``decile_3`` -> "decile 3 (20–30 %)", ``random`` -> "random": the band a sample was drawn from."""
    if sample.startswith("decile_") and sample[7:].isdigit():
        d = int(sample[7:])
        return f"decile {d} ({(d - 1) * 10}–{d * 10} % of responses)"
    return sample


def samples_html(rows: pl.DataFrame, *, scale: float, concept_label) -> str:
    """The HTML of one language's contexts beyond the top (`unit_sample_tokens` rows, every one with its
    tokens): a heading per band (decile_1 the lowest responses first, then the random ones), under it each
    context as `contexts_html` draws a top context, on the same colour ``scale``."""
    parts = []
    for sample in rows["sample"].unique(maintain_order=True).to_list():
        mine = rows.filter(pl.col("sample") == sample)
        parts.append(
            f'<div style="font-weight:600;margin:0.6em 0 0.3em 0;">{html_text(sample_label(sample))}</div>'
            + contexts_html(mine, scale=scale, concept_label=concept_label)
        )
    return f'<div class="{SAMPLES_CLASS}">' + "".join(parts) + "</div>"


def _top_contexts(contexts: pl.DataFrame, samples: pl.DataFrame, fmt_lang, fmt_concept) -> None:
    """Per language tab (kept in ``?dlang=``): the contexts with every token coloured where the store has the
    tokens, else (a store written before they were stored) the peak token in bold, with a note; below them an
    expander with the contexts beyond the top (decile bands and random) where the store has them."""
    tokens = contexts.height > 0 and contexts["token_act"].is_not_null().all()
    scale = activation_scale(contexts) if tokens else 0.0
    if not tokens:
        st.caption(
            "This store has no per-token activations for these contexts (written before they were stored): "
            "the peak token alone is shown, in bold."
        )
    langs = contexts["lang"].unique().sort().to_list()
    tabs, _ = _url_tabs({x: md(fmt_lang(x)) for x in langs}, param="dlang", key="neuron.dlang")
    for tab, lang in zip(tabs, langs):
        with tab:
            mine = contexts.filter(pl.col("lang") == lang)
            if tokens:
                st.html(contexts_html(mine, scale=scale, concept_label=fmt_concept))
            else:
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
            beyond = samples.filter(pl.col("lang") == lang) if samples.height else samples
            # Coloured on the top contexts' scale: shown where the top contexts are drawn with their tokens.
            if tokens and beyond.height and beyond["token_act"].is_not_null().all():
                with st.expander(f"Beyond the top: {beyond.height} contexts from every decile band and at random"):
                    st.html(samples_html(beyond, scale=scale, concept_label=fmt_concept))
                    st.caption(
                        "Per decile band of the unit's responses on this language's contexts (decile 1: the lowest "
                        "tenth) a few contexts drawn at random (seeded), then a few drawn from all of them: what "
                        "the unit does on ordinary text, not only at its top. Coloured on the top contexts' scale."
                    )
    if tokens:
        st.caption(
            "Each token's background is the unit's activation there: white at 0 and below, orange at its largest "
            f"over these contexts in every language ({scale:.3f}); the value shows on hover. Outlined: the peak "
            "token; dashed: a token with the same activation as the peak."
        )


def _title(text: str) -> alt.TitleParams:
    """A chart title as `explorer.charts` draws them: plain text, one line, inside the chart's space."""
    return alt.TitleParams(plain(text), anchor="start", offset=10, fontSize=13)


def firing_rate_chart(profile: pl.DataFrame, *, title: str) -> alt.LayerChart:
    """Bars: the unit's firing rate per language (`explorer.queries.unit_language_profile` rows, with a
    ``language`` label column); a black tick on each: the baseline, the mean firing rate of every drilled-down
    unit in that language."""
    base = alt.Chart(alt.Data(values=profile.to_dicts())).encode(
        x=alt.X("language:N", title="language", sort=None),
        tooltip=["lang:N", "firing_rate:Q", "baseline_rate:Q", "n_units:Q", "mean_response:Q", "context_rate:Q"],
    )
    bars = base.mark_bar(color="#4c78a8").encode(
        y=alt.Y("firing_rate:Q", title="share of the language's tokens", scale=alt.Scale(domain=[0, 1]))
    )
    ticks = base.mark_tick(color="black", thickness=2, size=30).encode(y="baseline_rate:Q")
    return (bars + ticks).properties(height=220, title=_title(title))


def count_histogram(df: pl.DataFrame, *, title: str, color: str = "#4c78a8") -> alt.Chart:
    """One group's response histogram as counts of contexts (bins ``bin_lo``..``bin_hi``, height ``n``) on a
    symmetric-log axis: the concept's few contexts and the language's many others both readable, and an
    empty bin at 0."""
    return (
        alt.Chart(alt.Data(values=df.to_dicts()))
        .mark_bar(color=color)
        .encode(
            x=alt.X("bin_lo:Q", bin="binned", title="pooled response"),
            x2="bin_hi:Q",
            y=alt.Y("n:Q", title="contexts (symlog axis)", scale=alt.Scale(type="symlog")),
            tooltip=["bin_lo:Q", "bin_hi:Q", "n:Q", "share:Q"],
        )
        .properties(height=220, title=_title(title))
    )


def firing_rate_section(profile: pl.DataFrame, ckpt: str, layer: int, unit: int, fmt_lang) -> None:
    """The unit's firing rate per language at ``ckpt`` against the baseline of all drilled-down units."""
    st.markdown(f"**How often it fires, per language, at {md(checkpoint_label(ckpt))}**")
    if profile.height == 0:
        empty(
            "No firing rates for this unit here: the store was written before they were stored, or the unit has "
            "no drill-downs at this checkpoint."
        )
        return
    shown = profile.with_columns(pl.col("lang").map_elements(fmt_lang, return_dtype=pl.Utf8).alias("language"))
    chart(
        firing_rate_chart(shown, title="firing rate per language"),
        profile,
        f"neuron_L{layer}_U{unit}_firing_rate_{ckpt}",
    )
    n_units = int(profile["n_units"].max())
    st.caption(
        "Bar: the unit's firing rate, the share of the language's tokens on which it is active (activation above "
        "0; for a gated MLP, the gate's), averaged over its contexts, each counted once. Black tick, "
        f"the baseline: the mean firing rate of the {n_units} units with drill-downs at this checkpoint in the same "
        "language (the firing rate of every unit is not stored). The download also has each language's mean "
        "response and the share of its contexts with at least one active token."
    )


def ap_chance_line(summary: pl.DataFrame) -> None:
    """The unit's mean AP beside a random scorer's expected AP over the same cells."""
    if summary.height == 0:
        return
    row = summary.row(0, named=True)
    random_ap = row["random_ap"]
    chance = f"{random_ap:.3f}" if random_ap is not None else "not stored (the chance stage did not run)"
    st.markdown(
        f"Mean AP over every concept × language here: **{row['mean_ap']:.3f}** (max {row['max_ap']:.3f}); a random "
        f"scorer's expected AP, averaged over the same cells: **{chance}**."
    )


def histogram_caption(expert: pl.DataFrame, concept: str, lang: str, fmt_concept, fmt_lang) -> str:
    """What the histograms' AP is against chance: the unit's AP and rank for (concept, lang), the random
    scorer's expected AP and the corrected permutation threshold."""
    one = expert.filter((pl.col("concept_id") == concept) & (pl.col("lang") == lang))
    if one.height == 0:
        return ""
    row = one.row(0, named=True)
    text = f"AP for {md(fmt_concept(concept))} in {md(fmt_lang(lang))}: {row['ap']:.3f} (rank {int(row['rank'])})"
    if row["random_ap"] is not None:
        text += f"; a random scorer's expected AP {row['random_ap']:.3f}"
    if row["threshold"] is not None:
        verdict = "above it: better than chance" if row["ap"] > row["threshold"] else "not above it"
        text += f"; corrected permutation threshold {row['threshold']:.3f} ({verdict})"
    else:
        text += "; no permutation test stored for this cell"
    return text + "."


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
    samples = q(Q.unit_sample_tokens, c.run_id, ckpt, layer, unit)
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
        _top_contexts(contexts, samples, fmt_lang, fmt_concept)
        listed = contexts.drop("token_start", "token_end", "token_act")
        if (listed["peak_act"] == listed["response"]).all():  # max pooling: the peak is the response
            listed = listed.drop("peak_act")
        table(listed, f"neuron_L{layer}_U{unit}_top_contexts_{ckpt}")

    firing_rate_section(q(Q.unit_language_profile, c.run_id, ckpt, layer, unit), ckpt, layer, unit, fmt_lang)
    ap_chance_line(q(Q.unit_ap_against_chance, c.run_id, ckpt, layer, unit))

    st.markdown("**Response distribution: the concept's contexts against the language's other contexts**")
    concepts = hist["concept_id"].unique().sort().to_list() if hist.height else []
    if not concepts:
        empty(f"At {md(ckpt)} the unit is no top-K expert with a stored histogram.")
    else:
        top = st.columns(2)
        pick = url_select(
            "Concept (histograms)",
            concepts,
            param="hconcept",
            key="neuron.hconcept",
            default=concept if concept in concepts else concepts[0],
            what="concept",
            format_func=fmt_concept,
            where=top[0],
            missing="for which this unit has no histogram here",
        )
        h_langs = hist.filter(pl.col("concept_id") == pick)["lang"].unique().sort().to_list()
        lang = url_select(
            "Language (histograms)",
            h_langs,
            param="hlang",
            key="neuron.hlang",
            what="language",
            format_func=fmt_lang,
            where=top[1],
            missing="in which this unit has no histogram for the concept",
        )
        one = hist.filter((pl.col("concept_id") == pick) & (pl.col("lang") == lang))
        left, right = st.columns(2)
        with left:
            mine = one.filter(pl.col("grp") == "concept")
            chart(
                count_histogram(mine, title=f"{fmt_concept(pick)} contexts ({int(mine['n'].sum())})"),
                mine,
                f"neuron_L{layer}_U{unit}_hist_{pick}_{lang}_concept",
            )
        with right:
            rest = one.filter(pl.col("grp") == "other")
            chart(
                count_histogram(rest, title=f"other contexts ({int(rest['n'].sum())})", color="#9e9e9e"),
                rest,
                f"neuron_L{layer}_U{unit}_hist_{pick}_{lang}_other",
            )
        said = histogram_caption(
            q(Q.unit_expert_chance, c.run_id, ckpt, layer, unit), pick, lang, fmt_concept, fmt_lang
        )
        st.caption(
            "Counts of contexts per bin of the unit's pooled response, on a symmetric-log axis (the language's other "
            "contexts outnumber the concept's by far). " + said
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
