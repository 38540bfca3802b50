"""Chance levels and uncertainty for every headline number: what a random scorer, a random expert
set or a shuffled label would give, and how much a figure moves between concepts.

Pure functions, no I/O. Why each one exists:

- `random_ap`: an expert's AP means little without the AP a random scorer gets: for a random *continuous*
  scorer E[AP] = (H_n + (P - 1)(n - H_n)/(n - 1)) / n, larger than the positive rate P / n (which is the AP of a
  constant scorer, kept as ``positive_rate``).
- `max_ap_null` / `chance_ap_table`: the AP that the *best* of N units reaches by luck grows with N. Its
  permutation null (B label shuffles per language and number of positives) gives each (concept, language) cell a
  Monte-Carlo p-value (1 + #exceedances) / (B + 1), exact in level, whose resolution 1 / (B + 1) is stored;
  Benjamini-Hochberg over the cells of a checkpoint corrects for looking at all of them.
- `random_jaccard`: two random K-sets out of N units share |A∩B| ~ Hypergeom(N, K, K) units, so the expected
  Jaccard |A∩B| / (2K - |A∩B|) is an exact finite sum over the pmf (not K/(2N - K), which is its first-order
  approximation).
- `random_shared_expected`: a unit is in a random top-K of one language with probability K/N, independently
  across languages, so the expected number of "shared experts" (top-K in >= m of L languages) is
  N * P(Binom(L, K/N) >= m).
- `bootstrap_ci`: intervals over concepts (the unit a reader generalises over), percentile method, fixed seed.
- `hierarchical_bootstrap_ci`: a probe's accuracy over seeds x test contexts (seeds, then each seed's contexts).
"""

from __future__ import annotations

import zlib

import numpy as np
import polars as pl
import torch
from scipy.special import digamma
from scipy.stats import binom, hypergeom, norm

from precompute.analysis.experts import average_precision_multi

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
    """E[|A∩B| / |A∪B|] for two independent uniform random K-sets out of N units, summed exactly over the pmf.

    Parameters
    ----------
    k : int
        The sets' size, 0 < k <= n.
    n : int
        The units to draw from.

    Returns
    -------
    float
    """
    support, pmf = _overlap_pmf(k, n)
    return float(np.sum(pmf * support / (2 * k - support)))


def random_jaccard_quantile(k: int, n: int, quantile: float) -> float:
    """A quantile of the random-set Jaccard (Jaccard is increasing in |A∩B|, so it is the pmf's quantile).

    Parameters
    ----------
    k : int
        The sets' size, 0 < k <= n.
    n : int
        The units to draw from.
    quantile : float
        In (0, 1) (``[experts] permutation_quantile``).

    Returns
    -------
    float
    """
    i = _intersection_quantile(k, n, quantile)
    return i / (2 * k - i)


def random_over_k(k: int, n: int) -> float:
    """E[|A∩B| / k] for two independent uniform random K-sets out of N units: E[|A∩B|] = K^2 / N, so K / N.

    The overlap Wang, Minervini & Ponti (2024) report over BLOOM checkpoints (top k = 50 units).

    Parameters
    ----------
    k : int
        The sets' size, 0 < k <= n.
    n : int
        The units to draw from.

    Returns
    -------
    float
    """
    _overlap_pmf(k, n)  # the same argument check
    return k / n


def random_over_k_quantile(k: int, n: int, quantile: float) -> float:
    """A quantile of |A∩B| / k for random K-sets (the hypergeometric quantile, divided by k).

    Parameters
    ----------
    k : int
        The sets' size, 0 < k <= n.
    n : int
        The units to draw from.
    quantile : float
        In (0, 1) (``[experts] permutation_quantile``).

    Returns
    -------
    float
    """
    return _intersection_quantile(k, n, quantile) / k


def _intersection_quantile(k: int, n: int, q: float) -> int:
    """The smallest i with P(|A∩B| <= i) >= q: a measure increasing in |A∩B| exceeds its value at i with
    probability P(|A∩B| > i) <= 1 - q."""
    support, pmf = _overlap_pmf(k, n)
    return int(support[min(int(np.searchsorted(np.cumsum(pmf), q - 1e-12)), support.size - 1)])


def overlap_exceed_probability(k: int, n: int, quantile: float) -> float:
    """P(|A∩B| > its ``quantile`` quantile) for random K-sets: the exact level of "above the random-set
    threshold" (the intersection is discrete, so it is at most 1 - quantile, and can be well below).

    Parameters
    ----------
    k : int
        The sets' size, 0 < k <= n.
    n : int
        The units to draw from.
    quantile : float
        In (0, 1) (``[experts] permutation_quantile``).

    Returns
    -------
    float
    """
    support, pmf = _overlap_pmf(k, n)
    return float(pmf[support > _intersection_quantile(k, n, quantile)].sum())


def random_shared_expected(k: int, n: int, n_langs: int, min_langs: int) -> float:
    """Expected number of units in at least ``min_langs`` of ``n_langs`` independent random top-K sets.

    Parameters
    ----------
    k : int
        The sets' size (the experts' K).
    n : int
        The units to draw from.
    n_langs : int
        The sets, one per language.
    min_langs : int
        The sets a unit must be in.

    Returns
    -------
    float
        N * P(Binom(n_langs, K/N) >= min_langs); 0 when there are fewer languages than ``min_langs``.
    """
    if n_langs < min_langs:
        return 0.0
    return float(n * binom.sf(min_langs - 1, n_langs, k / n))


def spearman_null_quantile(n: int, quantile: float) -> float:
    """Upper quantile of Spearman's rho between two independent length-``n`` vectors (normal approximation,
    rho * sqrt(n - 1) ~ N(0, 1); exact enough for the thousands of units of a model).

    Parameters
    ----------
    n : int
        The vectors' length (units).
    quantile : float
        In (0, 1) (``[experts] permutation_quantile``).

    Returns
    -------
    float
    """
    return float(norm.ppf(quantile) / np.sqrt(max(n - 1, 1)))


def overlap_chance(
    n: int,
    n_langs: int,
    *,
    k: int,
    expert_k: int,
    min_langs: int,
    quantile: float,
    correction: str,
    intersections: np.ndarray | None = None,
) -> pl.DataFrame:
    """The one-row ``overlap_chance`` table of a checkpoint: chance levels of every overlap measure.

    Parameters
    ----------
    n : int
        The units of the checkpoint (the unit axis' width).
    n_langs : int
        The languages of the checkpoint.
    k : int
        The overlap's K (``ExpertSpec.overlap_top``: Jaccard and |A∩B| / k of the top-k sets); at most ``n`` is
        used.
    expert_k : int
        The experts' K (``[experts] top_k``), which makes a shared expert (top-K in >= ``min_langs`` languages).
    min_langs : int
        ``[experts] min_langs``.
    quantile : float
        The null's quantile (``[experts] permutation_quantile``); 1 - quantile is the level and the FDR.
    correction : {"bh", "none"}
        ``[experts] correction``: with ``"bh"`` and ``intersections``, the ``*_threshold_corrected`` columns hold
        the threshold after Benjamini-Hochberg at FDR 1 - ``quantile`` over those cells (`overlap_cutoff`);
        otherwise they equal the uncorrected ones.
    intersections : ndarray of int, (cells,), optional
        |A∩B| of every (concept, language pair) cell of the checkpoint.

    Returns
    -------
    DataFrame
        One row: k, n_units, n_langs, null_quantile, jaccard_mean, jaccard_threshold, spearman_threshold,
        shared_expected, over_k_mean, over_k_threshold, expert_k, jaccard_threshold_corrected,
        over_k_threshold_corrected, correction (``"none"`` without cells), n_cells.
    """
    q = quantile
    k = min(k, n)
    expert_k = min(expert_k, n)
    cells = 0 if intersections is None else int(np.asarray(intersections).size)
    if correction == "bh" and cells:
        i_min = overlap_cutoff(np.asarray(intersections), k, n, 1.0 - q)
        corrected = (1.0, 1.0) if i_min is None else ((i_min - 1) / (2 * k - i_min + 1), (i_min - 1) / k)
    else:
        corrected = (random_jaccard_quantile(k, n, quantile=q), random_over_k_quantile(k, n, quantile=q))
    return pl.DataFrame(
        {
            "k": [k],
            "n_units": [n],
            "n_langs": [n_langs],
            "null_quantile": [q],
            "jaccard_mean": [random_jaccard(k, n)],
            "jaccard_threshold": [random_jaccard_quantile(k, n, quantile=q)],
            "spearman_threshold": [spearman_null_quantile(n, quantile=q)],
            "shared_expected": [random_shared_expected(expert_k, n, n_langs, min_langs)],
            "over_k_mean": [random_over_k(k, n)],
            "over_k_threshold": [random_over_k_quantile(k, n, quantile=q)],
            "expert_k": [expert_k],
            "jaccard_threshold_corrected": [corrected[0]],
            "over_k_threshold_corrected": [corrected[1]],
            "correction": [correction if cells else "none"],
            "n_cells": [cells],
        },
        schema={
            "k": pl.Int32,
            "n_units": pl.Int32,
            "n_langs": pl.Int32,
            "null_quantile": pl.Float64,
            "jaccard_mean": pl.Float64,
            "jaccard_threshold": pl.Float64,
            "spearman_threshold": pl.Float64,
            "shared_expected": pl.Float64,
            "over_k_mean": pl.Float64,
            "over_k_threshold": pl.Float64,
            "expert_k": pl.Int32,
            "jaccard_threshold_corrected": pl.Float64,
            "over_k_threshold_corrected": pl.Float64,
            "correction": pl.Utf8,
            "n_cells": pl.Int32,
        },
    )


def overlap_cutoff(intersections: np.ndarray, k: int, n: int, fdr: float) -> int | None:
    """The smallest |A∩B| that is significant after Benjamini-Hochberg at ``fdr`` over all the given cells, or
    None where none is.

    Each cell's exact p-value is P(|A∩B| >= observed) for random K-sets (the hypergeometric tail). Every cell of a
    checkpoint shares that null, so the BH cutoff p* is one intersection count: a cell is significant exactly when
    its intersection reaches it. Cells of one concept share languages, which makes their p-values positively
    dependent (BH stays valid under such positive regression dependence).

    Parameters
    ----------
    intersections : ndarray of int, (cells,)
        |A∩B| of every (concept, language pair) cell.
    k : int
        The sets' size.
    n : int
        The units to draw from.
    fdr : float
        The false discovery rate.

    Returns
    -------
    int or None
    """
    observed = np.asarray(intersections, dtype=np.int64)
    p_values = hypergeom.sf(observed - 1, n, k, k)
    _, cutoff = benjamini_hochberg(p_values, fdr)
    if cutoff is None:
        return None
    return int(observed[p_values <= cutoff].min())


# --- random scorers and shuffled labels --------------------------------------------------------------------

#: The multiple-comparison corrections `chance_ap_table` offers, as the store names them.
CORRECTIONS = ("bh", "none")


def random_ap(n_positive: int | np.ndarray, n_contexts: int | np.ndarray) -> np.ndarray:
    """E[AP] of a random continuous scorer (every order of the n contexts equally likely) with P positives:

        E[AP] = (H_n + (P - 1) (n - H_n) / (n - 1)) / n,     H_n = 1 + 1/2 + ... + 1/n.

    Why: the positive at rank r has precision (1 + X) / r with E[X | r] = (r - 1)(P - 1)/(n - 1) other positives
    above it, and r is uniform on 1..n. It is larger than the positive rate P / n, which is the AP of a
    *constant* scorer (every context tied) and which the store keeps as ``positive_rate``. (0.00696 against
    0.005 at P = 20, n = 4,000.) n = 1 gives 1.

    Parameters
    ----------
    n_positive : int or ndarray of int, (cells,)
        P, the positive contexts.
    n_contexts : int or ndarray of int, (cells,)
        n, all contexts.

    Returns
    -------
    ndarray of float64, (cells,)
        A 0-d array for scalar arguments.
    """
    p = np.asarray(n_positive, dtype=np.float64)
    n = np.asarray(n_contexts, dtype=np.float64)
    h_n = digamma(n + 1.0) + np.euler_gamma  # the n-th harmonic number, for any n at once
    spread = np.where(n > 1, (p - 1.0) * (n - h_n) / np.maximum(n - 1.0, 1.0), 0.0)
    return (h_n + spread) / n


def shuffled_labels(labels: np.ndarray, n_shuffles: int, rng: np.random.Generator) -> np.ndarray:
    """Every label column shuffled ``n_shuffles`` times independently.

    Each shuffle keeps its column's number of positives, so the null AP has the same positive rate.

    Parameters
    ----------
    labels : ndarray of bool, (contexts, concepts)
    n_shuffles : int
        S, shuffles per column.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of bool, (contexts, concepts * S)
        Column c * S + s is the s-th shuffle of concept c.
    """
    repeated = np.repeat(np.asarray(labels, dtype=bool), n_shuffles, axis=1)
    return rng.permuted(repeated, axis=0)


def max_ap_null(
    scores: torch.Tensor, n_positive: int, *, n_shuffles: int, rng: np.random.Generator, chunk_neurons: int
) -> np.ndarray:
    """The best unit's AP for random label vectors with ``n_positive`` positives.

    Under "a unit's responses do not depend on the concept" every relabelling of a language's contexts is
    equally likely, so this is the permutation null of the *max over units* statistic (it corrects for looking
    at all N units at once). It depends on the labels only through their number of positives: every concept of
    a language with the same P shares one null, which is why B = 999 shuffles per language cost no more than
    five per concept did. All shuffles are label columns of one `average_precision_multi` call per chunk of
    ``chunk_neurons`` units (one sort of the chunk serves every column), reduced to their max at once.

    Parameters
    ----------
    scores : Tensor of float, (contexts, units)
        One language's responses.
    n_positive : int
        Positives of every random label vector.
    n_shuffles : int
        Draws of the null (``[experts] permutations``).
    rng : numpy.random.Generator
        Draws the shuffles (`lang_seed`).
    chunk_neurons : int
        Columns per AP chunk (``[experts] chunk_neurons``).

    Returns
    -------
    ndarray of float64, (shuffles,)
    """
    n_contexts = scores.shape[0]
    column = np.zeros((n_contexts, 1), dtype=bool)
    column[:n_positive] = True
    shuffled = torch.from_numpy(shuffled_labels(column, n_shuffles, rng))
    best = np.full(n_shuffles, -1.0)
    for start in range(0, scores.shape[1], chunk_neurons):
        ap = average_precision_multi(scores[:, start : start + chunk_neurons], shuffled, chunk_neurons=chunk_neurons)
        # numpy's max on the CPU: torch's costs ~6 ms a call on small tensors, most of a small null's time
        chunk_best = ap.numpy().max(axis=1) if ap.device.type == "cpu" else ap.max(dim=1).values.cpu().numpy()
        np.maximum(best, chunk_best, out=best)
    return best


def exceedances(null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """How many null draws are >= each observed value (ties count against the observation).

    Parameters
    ----------
    null : ndarray of float, (shuffles,)
    observed : ndarray of float, (cells,)

    Returns
    -------
    ndarray of int64, (cells,)
    """
    ordered = np.sort(null)
    return (ordered.size - np.searchsorted(ordered, observed, side="left")).astype(np.int64)


def monte_carlo_p(null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """(1 + #{null >= observed}) / (B + 1): the Monte-Carlo permutation p-value, exact in level (P(p <= a) <= a
    under the null for every a; no p is below its resolution 1 / (B + 1)).

    Parameters
    ----------
    null : ndarray of float, (shuffles,)
        The B null draws.
    observed : ndarray of float, (cells,)

    Returns
    -------
    ndarray of float64, (cells,)
    """
    return (1.0 + exceedances(null, observed)) / (null.size + 1.0)


def ap_threshold(null: np.ndarray, max_count: int) -> float:
    """The AP a unit must *exceed* for its p-value's numerator 1 + #{null >= AP} to be at most ``max_count``.

    #{null >= x} <= max_count - 1 holds exactly when x is above the max_count-th largest draw.

    Parameters
    ----------
    null : ndarray of float, (shuffles,)
    max_count : int
        The largest numerator allowed; < 1 (no p-value can be that small: too few shuffles for the level)
        gives 1.0, which no AP exceeds.

    Returns
    -------
    float
    """
    if max_count < 1:
        return 1.0
    descending = np.sort(null)[::-1]
    return float(descending[max_count - 1]) if max_count <= descending.size else 0.0


def benjamini_hochberg(p_values: np.ndarray, q: float) -> tuple[np.ndarray, float | None]:
    """(adjusted p-values, cutoff): Benjamini & Hochberg's step-up procedure at FDR ``q`` over all m values.

    Rejected are the p-values <= cutoff = p_(k*), k* the largest k with p_(k) <= q k / m (None: nothing is
    rejected). The adjusted p-value (q-value) is min over j >= rank of m p_(j) / j, capped at 1, so p_adj <= q
    exactly for the rejected ones. Valid under independence and positive dependence (PRDS): the cells of one
    language share their null draws, which makes their p-values positively dependent.

    Parameters
    ----------
    p_values : ndarray of float, (cells,)
    q : float
        The false discovery rate.

    Returns
    -------
    adjusted : ndarray of float64, (cells,)
    cutoff : float or None
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy(), None
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adjusted
    passed = np.flatnonzero(p[order] <= q * np.arange(1, m + 1) / m)
    return out, (float(p[order][passed[-1]]) if passed.size else None)


def lang_seed(base: int, lang: str) -> np.random.Generator:
    """A generator per language that does not depend on which other languages the run has.

    Parameters
    ----------
    base : int
        The run's seed.
    lang : str
        The language code.

    Returns
    -------
    numpy.random.Generator
    """
    return np.random.default_rng([base, zlib.crc32(lang.encode("utf-8"))])


def chance_ap_table(
    activations: torch.Tensor,
    langs: np.ndarray,
    concept_ids: np.ndarray,
    top: pl.DataFrame,
    *,
    n_shuffles: int,
    quantile: float,
    correction: str,
    chunk_neurons: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> pl.DataFrame:
    """Rows of ``chance_ap``: per (lang, concept) the random scorer's AP, the observed best AP, its permutation
    p-value and the AP thresholds of significance.

    The test, at level a = 1 - ``quantile``:

    - per language and number of positives P, B = ``n_shuffles`` draws of the best unit's AP under shuffled
      labels (`max_ap_null`); a cell's ``p_value`` = (1 + #{null >= best AP}) / (B + 1), resolution 1 / (B + 1);
    - ``correction = "bh"``: Benjamini-Hochberg at FDR a over all m (concept, language) cells of the checkpoint
      (``n_cells``); ``p_adjusted`` its q-values; ``"none"``: every cell at level a on its own.
    - ``threshold``: the AP a unit of the cell must exceed to be significant after the correction (the cell's
      null at the common cutoff p*: the max-statistic test over units at the cells' corrected level; 1.0 where
      no p-value can reach the cutoff, i.e. nothing of the checkpoint is significant), ``threshold_uncorrected``
      the same at level a (the cell alone). ``significant``: the cell's best unit beats ``threshold``.

    Parameters
    ----------
    activations : Tensor of float, (contexts, units)
        The responses the experts were scored on.
    langs : ndarray of str, (contexts,)
    concept_ids : ndarray of str, (contexts,)
    top : DataFrame
        The ``neuron_ap`` rows (lang, concept_id, ap, ...): each cell's best AP.
    n_shuffles : int
        B, draws of each null (``[experts] permutations``); 0 leaves every p-value and threshold NULL
        (significance unknown).
    quantile : float
        ``[experts] permutation_quantile``.
    correction : {"bh", "none"}
        ``[experts] correction``.
    chunk_neurons : int
        Columns per AP chunk (``[experts] chunk_neurons``).
    seed : int
        Base of every language's generator (`lang_seed`).
    device : torch.device or str
        Where the null's AP runs.

    Returns
    -------
    DataFrame
        ``chance_ap`` rows without run_id/checkpoint, columns `CHANCE_AP_COLUMNS`.

    Raises
    ------
    ValueError
        For an unknown correction.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    alpha = 1.0 - quantile
    best = {(r[0], r[1]): r[2] for r in top.group_by(["lang", "concept_id"]).agg(pl.col("ap").max()).iter_rows()}
    cells: list[dict] = []
    nulls: dict[tuple[str, int], np.ndarray] = {}
    concepts = sorted(set(concept_ids.tolist()))
    for lang in sorted(set(langs.tolist())):
        idx = np.flatnonzero(langs == lang)
        lang_concepts = concept_ids[idx]
        present = [c for c in concepts if (lang_concepts == c).any()]
        n_pos = {c: int((lang_concepts == c).sum()) for c in present}
        if n_shuffles > 0:
            scores = activations[torch.from_numpy(idx)].to(device)
            rng = lang_seed(seed, lang)
            for p in sorted(set(n_pos.values())):  # one null per distinct P, drawn in order of P: reproducible
                nulls[(lang, p)] = max_ap_null(scores, p, n_shuffles=n_shuffles, rng=rng, chunk_neurons=chunk_neurons)
        for c in present:
            cells.append(
                {
                    "lang": lang,
                    "concept_id": c,
                    "n_contexts": len(idx),
                    "n_positive": n_pos[c],
                    "best_ap": best.get((lang, c)),
                }
            )
    frame = pl.DataFrame(
        cells,
        schema={
            "lang": pl.Utf8,
            "concept_id": pl.Utf8,
            "n_contexts": pl.Int32,
            "n_positive": pl.Int32,
            "best_ap": pl.Float64,
        },
    )
    n_positive, n_contexts = frame["n_positive"].to_numpy(), frame["n_contexts"].to_numpy()
    frame = frame.with_columns(
        random_ap=pl.Series(random_ap(n_positive, n_contexts)),
        positive_rate=pl.Series(n_positive / np.maximum(n_contexts, 1)),
        n_shuffles=pl.lit(n_shuffles, pl.Int32),
        p_resolution=pl.lit(1.0 / (n_shuffles + 1) if n_shuffles > 0 else None, pl.Float64),
        alpha=pl.lit(alpha, pl.Float64),
        correction=pl.lit(correction, pl.Utf8),
        n_cells=pl.lit(frame.height, pl.Int32),
    )
    if n_shuffles <= 0 or frame.height == 0:
        return frame.with_columns(
            **{c: pl.lit(None, pl.Float64) for c in ("p_value", "p_adjusted", "threshold", "threshold_uncorrected")},
            significant=pl.lit(None, pl.Boolean),
        ).select(CHANCE_AP_COLUMNS)
    keys = list(zip(frame["lang"].to_list(), n_positive.tolist()))
    observed = frame["best_ap"].fill_null(0.0).to_numpy()
    counts = np.array([1 + exceedances(nulls[k], observed[i : i + 1])[0] for i, k in enumerate(keys)])
    p_values = counts / (n_shuffles + 1.0)
    level_count = int(np.floor(alpha * (n_shuffles + 1) + 1e-9))  # p <= a  <=>  1 + #{null >= x} <= this
    if correction == "bh":
        adjusted, cutoff = benjamini_hochberg(p_values, alpha)
        cutoff_count = 0 if cutoff is None else round(cutoff * (n_shuffles + 1))
    else:
        adjusted, cutoff_count = p_values, level_count
    thresholds = [ap_threshold(nulls[k], cutoff_count) for k in keys]
    uncorrected = [ap_threshold(nulls[k], level_count) for k in keys]
    return (
        frame.with_columns(
            p_value=pl.Series(p_values),
            p_adjusted=pl.Series(adjusted),
            threshold=pl.Series(thresholds, dtype=pl.Float64),
            threshold_uncorrected=pl.Series(uncorrected, dtype=pl.Float64),
        )
        .with_columns(significant=pl.col("best_ap") > pl.col("threshold"))
        .select(CHANCE_AP_COLUMNS)
    )


#: Column order of the ``chance_ap`` rows (without run_id, checkpoint), as `precompute.store.schema` declares them.
CHANCE_AP_COLUMNS = [
    "lang",
    "concept_id",
    "n_contexts",
    "n_positive",
    "random_ap",
    "threshold",
    "best_ap",
    "n_shuffles",
    "positive_rate",
    "p_value",
    "p_adjusted",
    "threshold_uncorrected",
    "significant",
    "p_resolution",
    "alpha",
    "correction",
    "n_cells",
]


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
    """A percentile bootstrap over groups (concepts), vectorised: (n_resamples, groups) indices at once.

    Parameters
    ----------
    sums : ndarray of float, (groups,)
        Each group's sum of the measured values.
    counts : ndarray of float, (groups,), optional
        How many values each group holds; default 1 each.
    n_resamples : int
        Resamples of groups with replacement (``[analysis] bootstrap``); 0 gives NaN bounds.
    seed : int
    level : float
        The interval's confidence level.
    statistic : {"mean", "sum"}
        ``"mean"``: the pooled mean sum / count (equal to the mean over every row, as the headline reports it);
        ``"sum"``: the total (e.g. shared-expert counts).

    Returns
    -------
    estimate, lo, hi : float
        NaN bounds with fewer than 2 groups; all NaN with none.
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


def hierarchical_bootstrap_ci(
    correct: list[np.ndarray],
    *,
    n_resamples: int,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """(estimate, lo, hi) of a probe's mean accuracy over seeds: a two-level percentile bootstrap, vectorised.

    correct: one (n_test_s,) bool vector per seed s, which of that seed's test contexts its probe got right.
    The estimate is the mean over seeds of their accuracies (what ``probe_results.accuracy`` reports). Each of
    the ``n_resamples`` resamples draws S seeds with replacement, then for each drawn seed its n_test_s test
    contexts with replacement, and computes

        A* = (1/S) sum_{j=1..S} (1/n_{s_j}) sum_{i=1..n_{s_j}} correct_{s_j}[c*_{j,i}],

    s_j uniform on the seeds, c*_{j,i} uniform on s_j's test contexts; (lo, hi) are the ``(1 - level)/2`` and
    ``(1 + level)/2`` quantiles of A* (``np.quantile``, linear). All draws at once: (n_resamples, S) seed
    indices, then (n_resamples, S, max n_test) context indices from the same generator, so no Python loop.

    Why two levels: the seeds are not independent samples of contexts (each is another random split of the same
    contexts, and for token probes another sampled token), so pooling their test sets and resampling contexts
    counts overlapping contexts as new evidence and ignores how much the accuracy moves from one seed's split
    and fit to the next; that interval is too narrow. Resampling seeds puts the between-seed spread in, resampling
    within a seed the finite test set. With one seed it is the ordinary bootstrap over that seed's test contexts;
    with few seeds (3 by default) the between-seed part rests on 3 values, so read it as rough.

    Parameters
    ----------
    correct : list of ndarray of bool, (seeds,) of (test contexts,)
        Per seed, which of its test contexts its probe got right.
    n_resamples : int
        Resamples (``[analysis] bootstrap``); 0 gives NaN bounds.
    seed : int
    level : float
        The interval's confidence level.

    Returns
    -------
    estimate, lo, hi : float
        NaN bounds for a single seed with fewer than 2 test contexts; all NaN without seeds or test contexts.
    """
    vectors = [np.asarray(c, dtype=bool).reshape(-1) for c in correct]
    if not vectors or any(v.size == 0 for v in vectors):
        return float("nan"), float("nan"), float("nan")
    estimate = float(np.mean([v.mean() for v in vectors]))
    n_seeds, sizes = len(vectors), np.array([v.size for v in vectors], dtype=np.int64)
    if n_resamples <= 0 or (n_seeds == 1 and sizes[0] < 2):
        return estimate, float("nan"), float("nan")
    width = int(sizes.max())
    padded = np.zeros((n_seeds, width), dtype=bool)
    for s, v in enumerate(vectors):
        padded[s, : v.size] = v
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))  # (R, S) seeds
    n_drawn = sizes[drawn]  # (R, S)
    contexts = rng.integers(0, n_drawn[..., None], size=(n_resamples, n_seeds, width), dtype=np.int32)
    hits = padded[drawn[..., None], contexts]  # (R, S, width); a seed with fewer contexts uses its first n_s
    if (sizes != width).any():
        hits &= np.arange(width) < n_drawn[..., None]
    stats = (hits.sum(axis=2) / n_drawn).mean(axis=1)
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
    """Rows of ``headline_ci`` for one checkpoint: mean Jaccard, mean |A ∩ B| / k, mean Spearman of AP and the
    shared-expert count, each with its bootstrap interval over concepts and its chance level (from ``chance``,
    `overlap_chance`).

    Parameters
    ----------
    overlap : DataFrame
        `precompute.analysis.alignment.expert_overlap` rows.
    shared : DataFrame
        `precompute.analysis.alignment.shared_experts` rows.
    chance : DataFrame
        The one `overlap_chance` row.
    concept_ids : list of str, (concepts,)
        Every concept of the run (one with no shared expert counts as 0 in the resampled totals).
    n_resamples : int
        ``[analysis] bootstrap``.
    seed : int
    level : float
        The intervals' confidence level.

    Returns
    -------
    DataFrame
        ``headline_ci`` rows (measure, estimate, lo, hi, chance, n_concepts, n_resamples, level), NaN as NULL.
    """
    ch = chance.row(0, named=True)
    per_concept = (
        overlap.group_by("concept_id")
        .agg(
            pl.col("jaccard").sum().alias("j"),
            pl.col("spearman_ap").sum().alias("s"),
            pl.len().alias("n"),
            (pl.col("over_k").sum() if "over_k" in overlap.columns else pl.lit(None, pl.Float64)).alias("o"),
        )
        .sort("concept_id")
    )
    counts = (
        pl.DataFrame({"concept_id": concept_ids}, schema={"concept_id": pl.Utf8})
        .join(shared.group_by("concept_id").len("n_shared"), on="concept_id", how="left")
        .fill_null(0)
        .sort("concept_id")
    )
    rows = []
    for measure, sums, n, stat, chance_level, n_groups in (
        ("mean_jaccard", per_concept["j"], per_concept["n"], "mean", ch["jaccard_mean"], per_concept.height),
        ("mean_over_k", per_concept["o"], per_concept["n"], "mean", ch.get("over_k_mean"), per_concept.height),
        ("mean_spearman_ap", per_concept["s"], per_concept["n"], "mean", 0.0, per_concept.height),
        ("n_shared", counts["n_shared"], None, "sum", ch["shared_expected"] * len(concept_ids), counts.height),
    ):
        if sums.null_count():  # overlap rows without over_k (a caller's older frame): no such headline
            continue
        estimate, lo, hi = bootstrap_ci(
            sums.to_numpy(),
            None if n is None else n.to_numpy(),
            n_resamples=n_resamples,
            seed=seed,
            level=level,
            statistic=stat,
        )
        rows.append(
            {
                "measure": measure,
                "estimate": estimate,
                "lo": lo,
                "hi": hi,
                "chance": chance_level,
                "n_concepts": n_groups,
                "n_resamples": n_resamples,
                "level": level,
            }
        )
    schema = {
        "measure": pl.Utf8,
        "estimate": pl.Float64,
        "lo": pl.Float64,
        "hi": pl.Float64,
        "chance": pl.Float64,
        "n_concepts": pl.Int32,
        "n_resamples": pl.Int32,
        "level": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema).with_columns(pl.col(["lo", "hi", "estimate"]).fill_nan(None))
