"""Cross-lingual alignment of expert units: do the same neurons predict a concept in every language?

Per checkpoint and concept: the overlap of the top-k expert sets of every language pair, as Jaccard
|A ∩ B| / |A ∪ B| and as |A ∩ B| / k (Wang, Minervini & Ponti 2024, top k = 50 over BLOOM checkpoints), the
Spearman correlation of the full AP vectors (all neurons), and the "shared experts": units in the
top-K of at least ``min_langs`` languages, with their min and mean AP over all languages.
"""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import torch
from scipy.stats import rankdata

from precompute.analysis.experts import ExpertResult
from precompute.analysis.units import UnitAxis


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|, the overlap of two expert sets.

    Parameters
    ----------
    a, b : set
        Two sets of units.

    Returns
    -------
    float
        In [0, 1]; 1.0 for two empty sets.
    """
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def spearman_rows(matrix: np.ndarray) -> np.ndarray:
    """Spearman correlation between every pair of rows (average ranks for ties).

    Parameters
    ----------
    matrix : ndarray of float, (rows, units)
        E.g. one language's AP of every unit per row.

    Returns
    -------
    ndarray of float64, (rows, rows)
        NaN where a row is constant.
    """
    ranks = rankdata(matrix, axis=1)
    ranks = ranks - ranks.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ranks, axis=1)
    norms[norms == 0] = np.nan
    return (ranks @ ranks.T) / np.outer(norms, norms)


def expert_overlap(result: ExpertResult, *, k: int) -> pl.DataFrame:
    """How alike two languages' experts of a concept are, for every concept and unordered language pair.

    Parameters
    ----------
    result : ExpertResult
        From `precompute.analysis.experts.score_experts`.
    k : int
        The overlap's K (``[experts] overlap_k``, or ``top_k`` where that is 0: ``ExpertSpec.overlap_top``), at
        most the experts' K (the rows ``result.top`` holds).

    Returns
    -------
    DataFrame
        ``expert_overlap`` rows (concept_id, lang_a, lang_b, k, jaccard, spearman_ap, over_k), lang_a < lang_b:
        the Jaccard and |A ∩ B| / k of the two top-k sets and the Spearman correlation of the two (units,) AP
        vectors (0 where undefined); concepts fewer than two languages have are left out.
    """
    langs = sorted(result.full_ap)
    top = result.top.filter(pl.col("rank") <= k)
    sets: dict[tuple[str, str], set[tuple[int, int]]] = {
        (lang, concept): set(zip(g["layer"].to_list(), g["unit"].to_list()))
        for (lang, concept), g in top.group_by(["lang", "concept_id"])
    }
    rows = []
    for ci, concept in enumerate(result.concept_ids):
        present = [lang for lang in langs if (lang, concept) in sets]
        if len(present) < 2:
            continue
        ap = np.stack([result.full_ap[lang][ci].numpy() for lang in present])
        rho = spearman_rows(ap)
        for (i, a), (j, b) in itertools.combinations(enumerate(present), 2):
            rows.append(
                {
                    "concept_id": concept,
                    "lang_a": a,
                    "lang_b": b,
                    "k": k,
                    "jaccard": jaccard(sets[(a, concept)], sets[(b, concept)]),
                    "spearman_ap": float(rho[i, j]) if np.isfinite(rho[i, j]) else 0.0,
                    "over_k": len(sets[(a, concept)] & sets[(b, concept)]) / k,
                }
            )
    schema = {
        "concept_id": pl.Utf8,
        "lang_a": pl.Utf8,
        "lang_b": pl.Utf8,
        "k": pl.Int32,
        "jaccard": pl.Float64,
        "spearman_ap": pl.Float64,
        "over_k": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def shared_experts(result: ExpertResult, units: UnitAxis, *, min_langs: int) -> pl.DataFrame:
    """Units in the top-K of one concept in at least ``min_langs`` languages.

    min_ap and mean_ap are taken over every language of the run (not only those where the unit is top-K), so a
    high min_ap means the unit is a reliable predictor of the concept everywhere.

    Parameters
    ----------
    result : ExpertResult
        From `precompute.analysis.experts.score_experts` (its ``top`` names units by block id).
    units : UnitAxis
        The unit axis of ``result.full_ap``'s columns.
    min_langs : int
        Languages a unit must be a top-K expert in (``[experts] min_langs``).

    Returns
    -------
    DataFrame
        ``shared_experts`` rows (concept_id, layer, unit, n_langs_topk, langs, min_ap, mean_ap), by concept, then
        most languages first.
    """
    langs = sorted(result.full_ap)
    grouped = (
        result.top.group_by(["concept_id", "layer", "unit"])
        .agg(pl.col("lang").sort().alias("lang_list"), pl.len().alias("n_langs_topk"))
        .filter(pl.col("n_langs_topk") >= min_langs)
        .sort(["concept_id", "n_langs_topk", "layer", "unit"], descending=[False, True, False, False])
    )
    schema = {
        "concept_id": pl.Utf8,
        "layer": pl.Int32,
        "unit": pl.Int32,
        "n_langs_topk": pl.Int32,
        "langs": pl.Utf8,
        "min_ap": pl.Float64,
        "mean_ap": pl.Float64,
    }
    if grouped.height == 0:
        return pl.DataFrame(schema=schema)
    stacked = torch.stack([result.full_ap[lang] for lang in langs]).numpy()  # (languages, concepts, units)
    concept_index = {c: i for i, c in enumerate(result.concept_ids)}
    ci = np.array([concept_index[c] for c in grouped["concept_id"].to_list()])
    neuron = units.columns(grouped["layer"].to_numpy(), grouped["unit"].to_numpy())
    per_lang = stacked[:, ci, neuron]  # (languages, rows)
    return pl.DataFrame(
        {
            "concept_id": grouped["concept_id"],
            "layer": grouped["layer"].cast(pl.Int32),
            "unit": grouped["unit"].cast(pl.Int32),
            "n_langs_topk": grouped["n_langs_topk"].cast(pl.Int32),
            "langs": grouped["lang_list"].list.join(","),
            "min_ap": np.nanmin(per_lang, axis=0),
            "mean_ap": np.nanmean(per_lang, axis=0),
        },
        schema=schema,
    )


def expert_sharing(top: pl.DataFrame, shared: pl.DataFrame) -> pl.DataFrame:
    """Per (lang, concept): the number of top-K experts, and how many of them are shared experts.

    Parameters
    ----------
    top : DataFrame
        ``neuron_ap`` rows (lang, concept_id, layer, unit, ...).
    shared : DataFrame
        `shared_experts` rows of the same checkpoint.

    Returns
    -------
    DataFrame
        (lang, concept_id, n_experts, n_shared), sorted by lang and concept.
    """
    shared_units = shared.select("concept_id", "layer", "unit").with_columns(pl.lit(1).alias("is_shared"))
    return (
        top.join(shared_units, on=["concept_id", "layer", "unit"], how="left")
        .group_by(["lang", "concept_id"])
        .agg(
            pl.len().cast(pl.Int32).alias("n_experts"),
            pl.col("is_shared").fill_null(0).sum().cast(pl.Int32).alias("n_shared"),
        )
        .sort(["lang", "concept_id"])
    )
