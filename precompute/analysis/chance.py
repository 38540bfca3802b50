"""Chance levels and uncertainty for every headline number (issue 14.5): what a random scorer, a random expert
set or a shuffled label would give, and how much a figure moves between concepts.

Pure functions, no I/O. Why each one exists:

- ``random_ap`` / `permutation_thresholds`: an expert's AP means little without the AP a random scorer gets
  (its expectation is the positive rate) and without the AP that the *best* of N units reaches by luck, which
  grows with N. The threshold is the ``quantile`` of the best unit's AP over label shuffles (a permutation test
  of the max statistic, so it corrects for looking at every unit at once).
- `random_jaccard`: two random K-sets out of N units share |A∩B| ~ Hypergeom(N, K, K) units, so the expected
  Jaccard |A∩B| / (2K - |A∩B|) is an exact finite sum over the pmf (not K/(2N - K), which is its first-order
  approximation).
- `random_shared_expected`: a unit is in a random top-K of one language with probability K/N, independently
  across languages, so the expected number of "shared experts" (top-K in >= m of L languages) is
  N * P(Binom(L, K/N) >= m).
- `bootstrap_ci`: intervals over concepts (the unit a reader generalises over), percentile method, fixed seed.
"""

from __future__ import annotations

import zlib

import numpy as np
import polars as pl
import torch
from scipy.stats import binom, hypergeom, norm

from precompute.analysis.experts import average_precision_multi

#: The quantile of the null distribution that a result must exceed to count as above chance.
DEFAULT_QUANTILE = 0.99
#: Seed of every bootstrap (the intervals are part of the store, so they must be reproducible).
BOOTSTRAP_SEED = 0
#: Confidence level of every interval.
LEVEL = 0.95


# --- random expert sets ------------------------------------------------------------------------------------


def _overlap_pmf(k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Support and pmf of |A∩B| for two independent uniform K-subsets of N units (hypergeometric)."""
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k <= n, got k={k}, n={n}")
    support = np.arange(max(0, 2 * k - n), k + 1)
    return support, hypergeom.pmf(support, n, k, k)


def random_jaccard(k: int, n: int) -> float:
    """E[|A∩B| / |A∪B|] for two independent uniform random K-sets out of N units, summed exactly over the pmf."""
    support, pmf = _overlap_pmf(k, n)
    return float(np.sum(pmf * support / (2 * k - support)))


def random_jaccard_quantile(k: int, n: int, q: float = DEFAULT_QUANTILE) -> float:
    """The ``q`` quantile of the random-set Jaccard (Jaccard is increasing in |A∩B|, so it is the pmf's quantile)."""
    support, pmf = _overlap_pmf(k, n)
    i = support[min(int(np.searchsorted(np.cumsum(pmf), q - 1e-12)), support.size - 1)]
    return float(i / (2 * k - i))


def random_shared_expected(k: int, n: int, n_langs: int, min_langs: int) -> float:
    """Expected number of units in at least ``min_langs`` of ``n_langs`` independent random top-K sets."""
    if n_langs < min_langs:
        return 0.0
    return float(n * binom.sf(min_langs - 1, n_langs, k / n))


def spearman_null_quantile(n: int, q: float = DEFAULT_QUANTILE) -> float:
    """Upper ``q`` quantile of Spearman's rho between two independent length-``n`` vectors (normal
    approximation, rho * sqrt(n - 1) ~ N(0, 1); exact enough for the thousands of units of a model)."""
    return float(norm.ppf(q) / np.sqrt(max(n - 1, 1)))


def overlap_chance(k: int, n: int, n_langs: int, min_langs: int, q: float = DEFAULT_QUANTILE) -> pl.DataFrame:
    """The one-row ``overlap_chance`` table of a checkpoint: chance levels of every overlap measure."""
    k = min(k, n)
    return pl.DataFrame(
        {
            "k": [k], "n_units": [n], "n_langs": [n_langs], "null_quantile": [q],
            "jaccard_mean": [random_jaccard(k, n)],
            "jaccard_threshold": [random_jaccard_quantile(k, n, q)],
            "spearman_threshold": [spearman_null_quantile(n, q)],
            "shared_expected": [random_shared_expected(k, n, n_langs, min_langs)],
        },
        schema={
            "k": pl.Int32, "n_units": pl.Int32, "n_langs": pl.Int32, "null_quantile": pl.Float64,
            "jaccard_mean": pl.Float64, "jaccard_threshold": pl.Float64, "spearman_threshold": pl.Float64,
            "shared_expected": pl.Float64,
        },
    )


# --- random scorers and shuffled labels --------------------------------------------------------------------


def shuffled_labels(labels: np.ndarray, n_shuffles: int, rng: np.random.Generator) -> np.ndarray:
    """Every label column shuffled ``n_shuffles`` times independently.

    labels: (contexts, concepts) bool. Returns (contexts, concepts * n_shuffles) bool, column c * S + s the
    s-th shuffle of concept c (each keeps its number of positives, so the null AP has the same positive rate).
    """
    repeated = np.repeat(np.asarray(labels, dtype=bool), n_shuffles, axis=1)
    return rng.permuted(repeated, axis=0)


def permutation_thresholds(
    scores: torch.Tensor,
    labels: np.ndarray,
    *,
    n_shuffles: int,
    seed: int | np.random.Generator = 0,
    quantile: float = DEFAULT_QUANTILE,
    chunk_neurons: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """The best unit's AP under label shuffles, and its ``quantile`` over shuffles, per concept.

    scores: (contexts, N) responses of one language's contexts; labels: (contexts, concepts) bool. All
    shuffles of all concepts are scored as label columns of one `average_precision_multi` call per chunk of
    ``chunk_neurons`` units (one sort of the chunk serves every column) and reduced to their max over units
    at once, so memory stays (concepts * n_shuffles, chunk). Returns (best (concepts, n_shuffles) float64,
    thresholds (concepts,) float64, ``np.quantile`` with linear interpolation).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n_concepts = labels.shape[1]
    shuffled = torch.from_numpy(shuffled_labels(labels, n_shuffles, rng))
    best = torch.full((n_concepts * n_shuffles,), -1.0, dtype=torch.float64)
    for start in range(0, scores.shape[1], chunk_neurons):
        ap = average_precision_multi(scores[:, start : start + chunk_neurons], shuffled, chunk_neurons=chunk_neurons)
        best = torch.maximum(best, ap.max(dim=1).values.cpu())
    best_np = best.numpy().reshape(n_concepts, n_shuffles)
    return best_np, np.quantile(best_np, quantile, axis=1)


def lang_seed(base: int, lang: str) -> np.random.Generator:
    """A generator per language that does not depend on which other languages the run has."""
    return np.random.default_rng([base, zlib.crc32(lang.encode("utf-8"))])


def chance_ap_table(
    activations: torch.Tensor,
    langs: np.ndarray,
    concept_ids: np.ndarray,
    top: pl.DataFrame,
    *,
    n_shuffles: int,
    quantile: float = DEFAULT_QUANTILE,
    seed: int = 0,
    chunk_neurons: int = 8192,
    device: torch.device | str = "cpu",
) -> pl.DataFrame:
    """Rows of ``chance_ap``: per (lang, concept) the random scorer's AP, the permutation threshold and the
    observed best AP (from ``top``, the ``neuron_ap`` rows).

    activations: (contexts, N) the responses the experts were scored on. ``n_shuffles = 0`` leaves the
    threshold NULL (significance unknown).
    """
    rows: dict[str, list] = {c: [] for c in ("lang", "concept_id", "n_contexts", "n_positive", "random_ap", "threshold")}
    concepts = sorted(set(concept_ids.tolist()))
    for lang in sorted(set(langs.tolist())):
        idx = np.flatnonzero(langs == lang)
        lang_concepts = concept_ids[idx]
        present = [c for c in concepts if (lang_concepts == c).any()]
        labels = np.stack([lang_concepts == c for c in present], axis=1)  # (contexts, concepts)
        if n_shuffles > 0:
            scores = activations[torch.from_numpy(idx)].to(device)
            _, thresholds = permutation_thresholds(
                scores, labels, n_shuffles=n_shuffles, seed=lang_seed(seed, lang), quantile=quantile,
                chunk_neurons=chunk_neurons,
            )
        else:
            thresholds = np.full(len(present), np.nan)
        n_pos = labels.sum(axis=0)
        rows["lang"] += [lang] * len(present)
        rows["concept_id"] += present
        rows["n_contexts"] += [len(idx)] * len(present)
        rows["n_positive"] += n_pos.tolist()
        rows["random_ap"] += (n_pos / len(idx)).tolist()
        rows["threshold"] += [None if np.isnan(t) else float(t) for t in thresholds]
    out = pl.DataFrame(
        rows,
        schema={"lang": pl.Utf8, "concept_id": pl.Utf8, "n_contexts": pl.Int32, "n_positive": pl.Int32,
                "random_ap": pl.Float64, "threshold": pl.Float64},
    )
    best = top.group_by(["lang", "concept_id"]).agg(pl.col("ap").max().alias("best_ap"))
    return out.join(best, on=["lang", "concept_id"], how="left").with_columns(n_shuffles=pl.lit(n_shuffles, pl.Int32))


# --- bootstrap intervals ------------------------------------------------------------------------------------


def bootstrap_ci(
    sums: np.ndarray,
    counts: np.ndarray | None = None,
    *,
    n_resamples: int,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
    statistic: str = "mean",
) -> tuple[float, float, float]:
    """(estimate, lo, hi): a percentile bootstrap over groups (concepts), vectorised.

    sums: (groups,) each group's sum of the measured values; counts: (groups,) how many values each holds
    (default 1). ``statistic="mean"``: the pooled mean sum / count (equal to the mean over every row, as the
    headline reports it), recomputed on ``n_resamples`` resamples of groups with replacement at once
    ((n_resamples, groups) indices); ``"sum"``: the total (e.g. shared-expert counts). ``n_resamples = 0`` or
    fewer than 2 groups gives NaN bounds.
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.ones_like(sums) if counts is None else np.asarray(counts, dtype=np.float64)
    if statistic not in ("mean", "sum"):
        raise ValueError(f"statistic must be 'mean' or 'sum', got {statistic!r}")
    if sums.size == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = float(sums.sum() / counts.sum()) if statistic == "mean" else float(sums.sum())
    if n_resamples <= 0 or sums.size < 2:
        return estimate, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sums.size, size=(n_resamples, sums.size))
    stats = sums[idx].sum(axis=1)
    if statistic == "mean":
        stats = stats / counts[idx].sum(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return estimate, float(lo), float(hi)


def headline_intervals(
    overlap: pl.DataFrame,
    shared: pl.DataFrame,
    chance: pl.DataFrame,
    concept_ids: list[str],
    *,
    n_resamples: int,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> pl.DataFrame:
    """Rows of ``headline_ci`` for one checkpoint: mean Jaccard, mean Spearman of AP and the shared-expert count,
    each with its bootstrap interval over concepts and its chance level (from ``chance``, `overlap_chance`).

    overlap: ``expert_overlap`` rows; shared: ``shared_experts`` rows; concept_ids: every concept of the run
    (one with no shared expert counts as 0 in the resampled totals).
    """
    ch = chance.row(0, named=True)
    per_concept = overlap.group_by("concept_id").agg(
        pl.col("jaccard").sum().alias("j"), pl.col("spearman_ap").sum().alias("s"), pl.len().alias("n")
    ).sort("concept_id")
    counts = pl.DataFrame({"concept_id": concept_ids}, schema={"concept_id": pl.Utf8}).join(
        shared.group_by("concept_id").len("n_shared"), on="concept_id", how="left"
    ).fill_null(0).sort("concept_id")
    rows = []
    for measure, sums, n, stat, chance_level, n_groups in (
        ("mean_jaccard", per_concept["j"], per_concept["n"], "mean", ch["jaccard_mean"], per_concept.height),
        ("mean_spearman_ap", per_concept["s"], per_concept["n"], "mean", 0.0, per_concept.height),
        ("n_shared", counts["n_shared"], None, "sum", ch["shared_expected"] * len(concept_ids), counts.height),
    ):
        estimate, lo, hi = bootstrap_ci(
            sums.to_numpy(), None if n is None else n.to_numpy(), n_resamples=n_resamples, seed=seed, level=level,
            statistic=stat,
        )
        rows.append({"measure": measure, "estimate": estimate, "lo": lo, "hi": hi, "chance": chance_level,
                     "n_concepts": n_groups, "n_resamples": n_resamples, "level": level})
    schema = {"measure": pl.Utf8, "estimate": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "chance": pl.Float64,
              "n_concepts": pl.Int32, "n_resamples": pl.Int32, "level": pl.Float64}
    return pl.DataFrame(rows, schema=schema).with_columns(pl.col(["lo", "hi", "estimate"]).fill_nan(None))
