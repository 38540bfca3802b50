"""The Spearman null's spread is 1 / sqrt(n - 1): ``spearman_null_quantile`` against Monte Carlo draws.

Rho of independent vectors is the Pearson correlation of a fixed ranking with a uniformly random permutation of
it, so the null is simulated exactly; a scale of 1 / sqrt(n) instead (a plausible slip) shows in its variance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest


def _spearman_null_draws(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Spearman rho of ``draws`` pairs of independent continuous vectors of length n: the Pearson correlation of
    a fixed ranking with a uniformly random permutation of it."""
    b = np.arange(n, dtype=np.float64) - (n - 1) / 2
    out = []
    for start in range(0, draws, max(1, 2_000_000 // n)):  # blocks of ~2M values
        rows = min(draws - start, max(1, 2_000_000 // n))
        ranks = np.argsort(rng.random((rows, n)), axis=1)  # uniformly random permutations of 0..n-1
        out.append((ranks - (n - 1) / 2) @ b / (b @ b))  # equal variances: this is the ranks' Pearson r
    return np.concatenate(out)


def test_spearman_null_draws_are_spearman():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x, y = rng.random((2, 25))
    ours = _spearman_null_draws(25, 1, np.random.default_rng(1))[0]
    perm = np.argsort(np.random.default_rng(1).random((1, 25)), axis=1)[0]
    assert ours == pytest.approx(spearmanr(np.arange(25), perm).statistic)
    assert spearmanr(x, y).statistic == pytest.approx(
        np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1]
    )


@pytest.mark.parametrize("n", [8, 12, 20])
def test_spearman_null_spread_is_one_over_sqrt_n_minus_1(n):
    """The quantile's scale: spearman_null_quantile(n, q) / z_q must be the null's standard deviation,
    1 / sqrt(n - 1) exactly (Var(rho) = 1 / (n - 1) for independent vectors), checked by Monte Carlo.

    At these small n the normal approximation's 0.99 quantile itself overshoots the simulated one (rho is
    bounded, its tails are lighter than a normal's) by about the sqrt(n) vs sqrt(n - 1) difference (n = 10:
    simulated 0.733, z / sqrt(n - 1) = 0.775, z / sqrt(n) = 0.736), so a tail-quantile test cannot tell the
    two apart in favour of sqrt(n - 1); the variance, which is exact, can."""
    from scipy.stats import norm

    from precompute.analysis.chance import spearman_null_quantile

    draws = 60_000
    rho = _spearman_null_draws(n, draws, np.random.default_rng(n))
    var = float(np.mean(rho**2))  # the mean is 0 exactly
    se = float(np.std(rho**2) / math.sqrt(draws))
    scale = spearman_null_quantile(n, 0.99) / norm.ppf(0.99)
    assert abs(var - 1 / (n - 1)) < 4 * se  # the MC agrees with the exact variance
    assert abs(1 / n - 1 / (n - 1)) > 8 * se  # ... and can tell 1 / n from it
    assert abs(scale**2 - var) < 4 * se, (scale**2, var, se)
    assert spearman_null_quantile(n, 0.5) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n", [200, 2000])
def test_spearman_null_quantile_matches_monte_carlo(n):
    """At model-sized n the normal approximation's 0.99 quantile matches the simulated one within MC error."""
    from scipy.stats import norm

    from precompute.analysis.chance import spearman_null_quantile

    draws, q = 20_000, 0.99
    rho = _spearman_null_draws(n, draws, np.random.default_rng(n))
    sd = 1 / math.sqrt(n - 1)
    # Standard error of the q-quantile: sqrt(q (1 - q) / draws) / density at the quantile.
    se = math.sqrt(q * (1 - q) / draws) / (norm.pdf(norm.ppf(q)) / sd)
    assert abs(spearman_null_quantile(n, q) - float(np.quantile(rho, q))) < 4 * se
    assert spearman_null_quantile(n, 0.95) == pytest.approx(norm.ppf(0.95) * sd)
