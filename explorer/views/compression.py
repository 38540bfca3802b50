"""Compression: do representations of different languages converge (similarity), and does the
representation space compress (effective dimensionality), layer by layer over training?

Every measure is shown with what it means, which way is "converged" or "compressed", and the value it has
without any shared structure (its baseline or chance level), since none of them reads on its own: a centred
cosine of 0.3 is much or little depending on the mismatched cosine of the same centroids, and a participation
ratio depends on how many centroids there are (precompute.analysis.similarity)."""

from dataclasses import dataclass

import polars as pl
import streamlit as st

from explorer import charts, charts_counts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.pickers import checkpoint_label, checkpoint_order, pick_checkpoint
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.text import md
from explorer.widgets import url_select

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Compression", "icon": "🗜️", "url_path": "compression", "section": "The rest of the paper", "order": 80}


@dataclass(frozen=True)
class Measure:
    """What a stored measure means, which way is converged / compressed, and its baseline.

    ``baseline_metric``: the stored measure that is its baseline (the mismatched cosine of the matched one);
    ``chance``: the name of a baseline computed from the sizes of the inputs instead (see `chance_value`)."""

    meaning: str
    direction: str
    baseline: str
    baseline_metric: str | None = None
    chance: str | None = None


SIMILARITY = {
    "matched_cosine": Measure(
        "cosine between a concept's centroid in one language and its own translation's in the other, each "
        "language's centroids centred on their mean (so the common offset and the language's offset cancel)",
        "higher: the concepts are laid out alike in both languages (1: identical centroids)",
        "the mismatched cosine of the same centroids (a concept against other concepts)",
        baseline_metric="mismatched_cosine",
    ),
    "mismatched_cosine": Measure(
        "the same centred cosine between *different* concepts across the two languages: the baseline of the "
        "matched cosine",
        "none on its own: read it as the floor under `matched_cosine`",
        "about -1/(k - 1) for k concepts whose centred centroids have equal norms",
        chance="mismatched",
    ),
    "matched_cosine_raw": Measure(
        "the matched cosine on uncentred centroids: it keeps the common offset (anisotropy) and each language's offset",
        "higher is closer, but a high value with a small gap to the raw mismatched cosine means every "
        "representation points the same way, not that concepts are shared",
        "the raw mismatched cosine of the same centroids",
        baseline_metric="mismatched_cosine_raw",
    ),
    "mismatched_cosine_raw": Measure(
        "the raw (uncentred) cosine between different concepts across the two languages: the baseline of "
        "`matched_cosine_raw`",
        "none on its own: near 1 means anisotropy (every representation points the same way)",
        "none: it is itself the baseline of the raw matched cosine",
    ),
    "retrieval_acc": Measure(
        "translation retrieval: the share of concepts whose nearest centred centroid in the other language is "
        "their own translation, averaged over both directions",
        "higher: translations find each other (1: every concept)",
        "chance 1/k for k concepts (the mean over the language pairs of 1 / their shared concepts)",
        chance="retrieval",
    ),
    "cka": Measure(
        "linear CKA between the two languages' concept layouts (concepts as the shared sample)",
        "higher: one layout is a rotation and scaling of the other (1)",
        "no stored baseline: CKA of unrelated layouts is above 0, and near 1 when both are close to isotropic "
        "(few concepts in many dimensions); compare it with `cosine_gap`",
    ),
    "cosine_gap": Measure(
        "`matched_cosine` - `mismatched_cosine`: how much closer a concept is to its own translation than to "
        "other concepts",
        "higher: more cross-lingual concept structure",
        "0 (no cross-lingual concept structure)",
        chance="zero",
    ),
}

COMPRESSION = {
    "participation_ratio": Measure(
        "participation ratio (sum of the covariance eigenvalues squared over the sum of their squares) of the "
        "concept centroids: the effective number of dimensions they spread over",
        "lower: more compressed (fewer dimensions)",
        "its range and what a structureless cloud of the same centroids would give",
        chance="participation",
    ),
    "pr_ratio": Measure(
        "PR of all languages' centroids pooled over the mean PR of one language's",
        "lower: more compressed; 1 means pooling the languages adds no dimensions (a shared geometry), larger "
        "means each language adds its own directions",
        "the same ratio for structureless clouds of the same sizes",
        chance="pr_ratio",
    ),
    "language_variance_share": Measure(
        "share of the centroids' total variance between the language means",
        "lower: more compressed (the language matters less); falling over training is compression",
        "(L - 1)/(N - 1) for N structureless centroids in L languages",
        chance="language_share",
    ),
    "concept_variance_share": Measure(
        "share of the centroids' total variance between the concept means",
        "higher: more compressed (the concept matters more); rising over training is compression",
        "(C - 1)/(N - 1) for N structureless centroids of C concepts",
        chance="concept_share",
    ),
}


#: How the chart and the text name a baseline computed from the sizes of the inputs.
CHANCE_LABELS = {"retrieval": "chance 1/k", "mismatched": "-1/(k - 1)", "zero": "0"}


def isotropic_pr(n_points: int, hidden: int | None) -> float | None:
    """Expected participation ratio of ``n_points`` i.i.d. isotropic Gaussian points in ``hidden`` dimensions,
    centred: with m = n_points - 1, (E tr C)^2 / E ||C||_F^2 = (m d + 2) / (m + d + 1) (Wishart moments; within
    1 % of the mean ratio at the sizes of a run). None without a width or with fewer than two points."""
    if hidden is None or n_points < 2:
        return None
    m = n_points - 1
    return (m * hidden + 2) / (m + hidden + 1)


def compression_chance(name: str, scope: str, sizes: pl.DataFrame) -> tuple[float | None, str]:
    """The baseline value of a compression measure for ``scope``, and one sentence that says it."""
    row = sizes.filter(pl.col("scope") == scope)
    if row.height == 0:
        return None, "The store's inputs do not say how many centroids this scope has."
    n, n_langs, n_concepts, hidden = (row[col][0] for col in ("n_points", "n_langs", "n_concepts", "hidden_size"))
    if name == "participation":
        top = min(n - 1, hidden) if hidden else n - 1
        iso = isotropic_pr(n, hidden)
        iso_text = (
            "" if iso is None else f"; a structureless (isotropic) cloud of {n} points would give about {iso:.3g}"
        )
        return iso, f"Range: 1 to min(points - 1, width) = {top} ({n} centroids, width {hidden}){iso_text}."
    if name == "pr_ratio":
        per_lang = sizes.filter(pl.col("scope") != "all")
        iso_all = isotropic_pr(n, hidden)
        iso_langs = [isotropic_pr(int(k), hidden) for k in per_lang["n_points"].to_list()]
        iso_langs = [v for v in iso_langs if v is not None]
        if iso_all is None or not iso_langs:
            return None, "1 means a shared geometry; no structureless reference without the residual width."
        ratio = iso_all / (sum(iso_langs) / len(iso_langs))
        return ratio, f"Structureless (isotropic) clouds of the same sizes would give about {ratio:.3g}; 1 is shared."
    if name == "language_share" and n > 1:
        value = (n_langs - 1) / (n - 1)
        return value, f"Chance: ({n_langs} - 1)/({n} - 1) = {value:.3g} for {n} structureless centroids."
    if name == "concept_share" and n > 1:
        value = (n_concepts - 1) / (n - 1)
        return value, f"Chance: ({n_concepts} - 1)/({n} - 1) = {value:.3g} for {n} structureless centroids."
    return None, ""


def similarity_chance(name: str, pair_sizes: pl.DataFrame) -> float | None:
    """The baseline of a similarity measure computed from the concepts each language pair shares (mean over
    the pairs), or 0 for the gap; None where it has none."""
    if name == "zero":
        return 0.0
    if pair_sizes.height == 0:
        return None
    k = pair_sizes["n_concepts"].cast(pl.Float64)
    if name == "retrieval":
        return float((1.0 / k).mean())
    if name == "mismatched":
        return float((-1.0 / (k - 1.0)).mean())
    return None


def describe(name: str, measure: Measure | None) -> None:
    """What the measure means, its direction and its baseline, as one block of text."""
    if measure is None:
        st.caption(f"No description of {md(name)} in this explorer version: read it with its own documentation.")
        return
    st.markdown(
        f"**{md(name)}**: {measure.meaning}.  \n**Which way:** {measure.direction}.  \n"
        f"**Baseline:** {measure.baseline}."
    )


c = ctx()
order = checkpoint_order()

st.title("Compression")
st.caption(
    "Cross-language similarity of parallel representations, and effective dimensionality of the "
    "representation space, per layer (0 = embeddings) and checkpoint. Every measure is computed from concept "
    "centroids (the mean of one language's contexts of one concept)."
)

st.subheader("Cross-language similarity")
metrics = q(Q.similarity_metrics, c.run_id)
if not metrics:
    empty("This store has no similarity measurements (the similarity stage did not run).")
else:
    metric = url_select("Similarity measure", metrics, param="sim", key="compression.sim", what="similarity measure")
    measure = SIMILARITY.get(metric)
    describe(metric, measure)
    by_layer = q(Q.similarity_by_layer, c.run_id, metric)
    left, right = st.columns(2)
    with left:
        chart(
            charts.layer_checkpoint_heatmap(by_layer, order, value="value", title=f"Mean {metric} over language pairs"),
            by_layer,
            f"similarity_{metric}_by_layer",
        )
    with right:
        layers = sorted(set(by_layer["layer"].to_list()))
        ckpt = pick_checkpoint(key="compression.ckpt")
        layer = url_select(
            "Layer",
            layers,
            param="layer",
            key="compression.layer",
            default=layers[len(layers) // 2] if layers else None,
            what="layer",
            slider=True,
        )
        pairs = q(Q.similarity_pairs, c.run_id, ckpt, layer, metric)
        if pairs.height:
            lo = min(0.0, charts.finite_min(pairs["value"]))  # NaN and infinity are not drawn
            chart(
                charts.lang_heatmap(pairs, "value", title=f"{metric} at {ckpt}, layer {layer}", domain=(lo, 1.0)),
                pairs,
                f"similarity_{metric}_{ckpt}_layer{layer}",
            )
        else:
            empty("No pairs at this checkpoint and layer.")

    # The measure against its baseline over layers, at the checkpoint picked above.
    mine = by_layer.filter(pl.col("checkpoint") == ckpt).select("layer", "value")
    base: pl.DataFrame | None = None
    base_name = ""
    if measure is not None and measure.baseline_metric in metrics:
        base_name = measure.baseline_metric
        base = (
            q(Q.similarity_by_layer, c.run_id, base_name).filter(pl.col("checkpoint") == ckpt).select("layer", "value")
        )
    elif measure is not None and measure.chance is not None:
        value = similarity_chance(measure.chance, q(Q.similarity_pair_sizes))
        if value is not None and mine.height:
            base_name = CHANCE_LABELS[measure.chance]
            base = mine.select("layer", pl.lit(value).alias("value"))
    if mine.height and base is not None and base.height:
        here_m = mine.filter(pl.col("layer") == layer)
        here_b = base.filter(pl.col("layer") == layer)
        if here_m.height and here_b.height:
            st.markdown(
                f"At {md(checkpoint_label(ckpt))}, layer {layer}: {md(metric)} = **{here_m['value'][0]:.3f}** "
                f"(mean over language pairs) against its baseline ({md(base_name)}): **{here_b['value'][0]:.3f}**."
            )
        both = pl.concat(
            [
                mine.with_columns(pl.lit(metric).alias("series")),
                base.with_columns(pl.lit(f"baseline: {base_name}").alias("series")),
            ]
        )
        chart(
            charts_counts.lines_with_baseline(
                both,
                measure=metric,
                baseline=f"baseline: {base_name}",
                y_title=f"mean {metric} over language pairs",
                title=f"{metric} and its baseline at {ckpt}, per layer",
            ),
            both,
            f"similarity_{metric}_baseline_{ckpt}",
        )

st.subheader("Effective dimensionality")
comp = q(Q.compression, c.run_id)
if comp.height == 0:
    empty("This store has no compression measurements.")
else:
    cmetrics = sorted(set(comp["metric"].to_list()))
    cmetric = url_select("Measure", cmetrics, param="cm", key="compression.cm", what="compression measure")
    scopes = sorted(set(comp.filter(pl.col("metric") == cmetric)["scope"].to_list()), key=lambda s: (s != "all", s))
    scope = url_select(
        "Scope",
        scopes,
        param="scope",
        key="compression.scope",
        what="scope",
        format_func=lambda s: "all languages pooled" if s == "all" else s,
    )
    cmeasure = COMPRESSION.get(cmetric)
    describe(cmetric, cmeasure)
    if cmeasure is not None and cmeasure.chance is not None:
        _, sentence = compression_chance(cmeasure.chance, scope, q(Q.convergence_sizes, c.run_id))
        if sentence:
            st.markdown(sentence)
    one = comp.filter((pl.col("metric") == cmetric) & (pl.col("scope") == scope))
    chart(
        charts.layer_checkpoint_heatmap(one, order, value="value", title=f"{cmetric} ({scope})", scheme="magma"),
        one,
        f"compression_{cmetric}_{scope}",
    )
    with st.expander("All compression rows"):
        table(comp, "compression")
