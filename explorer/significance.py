"""How a page says which test decided "significant": the permutation test, its number of shuffles,
its Monte-Carlo resolution and the correction over cells, read from the ``chance_ap`` rows shown."""

from __future__ import annotations

import polars as pl

from precompute.store.report import permutation_test_text


def significance_text(rows: pl.DataFrame) -> str:
    """One sentence naming the test behind the ``significant`` column of ``rows`` (`explorer.queries`'
    ``expert_significance`` or ``concept_chance_history`` rows); says so where no test was stored."""
    if rows.height == 0 or "n_shuffles" not in rows.columns or not (rows["n_shuffles"].max() or 0):
        return "No permutation test was stored for these cells ([experts] permutations = 0), so none is marked."
    first = rows.row(0, named=True)
    n_shuffles, alpha = int(first["n_shuffles"]), first.get("alpha")
    if alpha is None or first.get("correction") is None:  # a store from before p-values
        return (
            f"Significant: AP above the 99th percentile of the best unit's AP over {n_shuffles} label "
            "shuffles, uncorrected (this store predates the corrected test; recompute it)."
        )
    test = permutation_test_text(n_shuffles, first["p_resolution"], alpha, first["correction"], first.get("n_cells"))
    return f"Significant: AP above the corrected permutation threshold, by a {test}."
