"""Headline figures of a store, first vs last checkpoint, as plain text (quoted by the README)."""

from __future__ import annotations

from pathlib import Path

from precompute.store.errors import StoreError
from precompute.store.facts import RunSettings, pair_emergence, run_settings, unit_emergence
from precompute.store.open import open_readonly
from precompute.store.schema import checkpoint_order
from precompute.text import printable


def _fmt_row(values: list[float], width: int = 6) -> str:
    return " ".join(f"{v:>{width}.3f}" for v in values)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _interval(lo: float | None, hi: float | None) -> str:
    return "      -" if lo is None or hi is None else f"{lo:.3f}-{hi:.3f}"


def _ci_text(row: tuple | None, fmt: str) -> str:
    """' [lo, hi] (chance c)' for a headline_ci row (lo, hi, chance); '' where the store has none."""
    if row is None:
        return ""
    lo, hi, chance = row
    interval = f" [{lo:{fmt}}, {hi:{fmt}}]" if lo is not None and hi is not None else ""
    return interval + (f" (chance {chance:{fmt}})" if chance is not None else "")


def _headline_intervals(con) -> dict[str, dict[str, tuple]]:
    """checkpoint -> measure -> (lo, hi, chance) from headline_ci."""
    out: dict[str, dict[str, tuple]] = {}
    for ck, measure, lo, hi, chance in con.execute(
        "SELECT checkpoint, measure, lo, hi, chance FROM headline_ci"
    ).fetchall():
        out.setdefault(ck, {})[measure] = (lo, hi, chance)
    return out


#: How the report names each overlap measure.
_MEASURE_TEXT = {"jaccard": "Jaccard", "over_k": "|A∩B|/k"}


def _columns(con, table: str) -> set[str]:
    """The columns ``table`` has in this store (older stores lack those added since)."""
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def permutation_test_text(
    n_shuffles: int, resolution: float, alpha: float, correction: str | None, n_cells: int | None = None
) -> str:
    """How the experts' significance was decided, in words: the report and the explorer's pages say the same."""
    cells = f"{n_cells} " if n_cells else ""
    how = (
        f"Benjamini-Hochberg at FDR {alpha:g} over the {cells}(concept, language) cells of each checkpoint"
        if correction == "bh"
        else f"no correction over cells (each at level {alpha:g} alone)"
    )
    return (
        f"permutation test of the max over units, {n_shuffles} label shuffles per language and number of "
        f"positives; Monte-Carlo resolution {resolution:.4g} (no p-value is below 1/({n_shuffles} + 1)); {how}"
    )


def _significance_lines(con, cks: list[tuple]) -> list[str]:
    """How the experts' significance was decided: the test, its shuffles and Monte-Carlo resolution,
    the correction over cells, and how many (concept, language) cells pass at the first and last checkpoint."""
    if "p_value" not in _columns(con, "chance_ap"):
        return [
            (
                "Expert significance: this store predates p-values (threshold = a quantile of the shuffles' best "
                "AP, without correction); recompute it for a test that holds its level"
            )
        ]
    rows = con.execute(
        "SELECT checkpoint, any_value(n_shuffles), any_value(p_resolution), any_value(alpha), any_value(correction), "
        "count(*), count(*) FILTER (WHERE significant), count(*) FILTER (WHERE p_value <= alpha) "
        "FROM chance_ap GROUP BY checkpoint"
    ).fetchall()
    by_ck = {r[0]: r[1:] for r in rows}
    first = by_ck.get(cks[0][0])
    if first is None or not first[0]:
        return ["Expert significance: no permutation test was run ([experts] permutations = 0)"]
    n_shuffles, resolution, alpha, correction = first[:4]
    lines = [
        (
            "Expert significance (a cell = one concept in one language; its best unit's AP against the best of all "
            "units under shuffled labels):"
        ),
        f"  {permutation_test_text(n_shuffles, resolution, alpha, correction)}",
    ]
    for label, (ck, _) in (("first", cks[0]), ("last", cks[-1])):
        if ck in by_ck:
            _, _, _, _, n, sig, raw = by_ck[ck]
            lines.append(
                f"  {label:>5}: {sig} of {n} cells significant after correction ({raw} at p <= {alpha:g} uncorrected)"
            )
    return lines


def _pair_correction_text(con) -> str:
    """How the pairs' threshold was corrected, as the report says it."""
    if "correction" in _columns(con, "overlap_chance"):
        row = con.execute(
            "SELECT any_value(correction), any_value(null_quantile), max(n_cells) FROM overlap_chance "
            "WHERE correction IS NOT NULL"
        ).fetchone()
        if row and row[0] == "bh":
            return (
                f"exact hypergeometric p-values, Benjamini-Hochberg at FDR {1 - row[1]:.2g} over the "
                f"{row[2]} (concept, language pair) cells of each checkpoint"
            )
    return "the 99th percentile of random sets, each cell alone"


def _emergence_lines(con, settings: RunSettings, measure: str) -> list[str]:
    """Emergence: from which checkpoint overlaps and shared units stay above chance (counted from
    :func:`precompute.store.facts.pair_emergence` and ``unit_emergence``, the rule the explorer shows)."""
    cks = settings.checkpoints
    n = len(cks)
    pairs = pair_emergence(con, settings, measure=measure)
    pair_first = [settings.position(ck) for ck in pairs["emerged_at"].drop_nulls().to_list()]
    units = unit_emergence(con, settings)
    unit_first = {
        (r["concept_id"], r["layer"], r["unit"]): settings.position(r["emerged_at"])
        for r in units.iter_rows(named=True)
    }
    lines = ["Emergence (the first checkpoint from which it stays above chance at every later one):"]

    def by_checkpoint(first: list[int]) -> str:
        counts = [sum(1 for p in first if p == i) for i in range(n)]
        return ", ".join(f"{cks[i]} {c}" for i, c in enumerate(counts) if c) or "none"

    lines.append(
        f"  (concept, language pair) top-K {_MEASURE_TEXT[measure]} above the random-set threshold "
        f"({_pair_correction_text(con)}): {len(pair_first)} of {pairs.height}; from {by_checkpoint(pair_first)}"
    )
    lines.append(
        f"  (concept, unit) AP above the corrected permutation threshold in >= {settings.min_langs} languages: "
        f"{len(unit_first)}; from {by_checkpoint(list(unit_first.values()))}"
    )
    earliest = sorted(unit_first.items(), key=lambda kv: (kv[1], kv[0]))[:3]
    for (concept, layer, unit), pos in earliest:
        lines.append(f"    e.g. layer {layer} unit {unit} for {concept}, from {cks[pos]}")
    return lines


def headline_report(path: str | Path) -> str:
    """LID accuracy per layer, expert overlap, compression, language-specific neurons, steering."""
    con = open_readonly(path)
    try:
        try:
            settings = run_settings(con)
        except StoreError:  # no run yet, so no checkpoint either
            return f"{path}: no finished checkpoint yet"
        cks = list(zip(settings.checkpoints, settings.steps))
        if not cks:
            return f"{path}: no finished checkpoint yet"
        first, last = cks[0][0], cks[-1][0]
        lines = [
            (
                f"store {path}: {len(cks)} checkpoints; first = {first} (step {cks[0][1]}), "
                f"last = {last} (step {cks[-1][1]})"
            ),
            "",
            "LID probe accuracy per layer (layer 0 = embeddings):",
        ]
        present = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        probe_columns = _columns(con, "probe_results")
        chance_probes = {"majority_baseline", "control_accuracy", "accuracy_lo", "accuracy_hi"} <= probe_columns
        reps = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT representation FROM probe_results ORDER BY representation DESC"
            ).fetchall()
        ]
        for rep in reps:
            for label, ck in (("first", first), ("last", last)):
                rows = con.execute(
                    "SELECT accuracy, "
                    + (
                        "accuracy_lo, accuracy_hi, control_accuracy, majority_baseline "
                        if chance_probes
                        else "NULL, NULL, NULL, NULL "
                    )
                    + "FROM probe_results WHERE checkpoint = ? AND representation = ? ORDER BY layer",
                    [ck, rep],
                ).fetchall()
                lines.append(f"  {rep:>5} {label:>5}: {_fmt_row([r[0] for r in rows])}")
                if any(r[1] is not None for r in rows):
                    lines.append(f"  {'95% CI':>11}: " + " ".join(_interval(r[1], r[2]) for r in rows))
                if any(r[3] is not None for r in rows):
                    lines.append(
                        f"  {'control':>11}: {_fmt_row([_nan(r[3]) for r in rows])}  (control task "
                        "(random label per token type, Hewitt & Liang); selectivity = accuracy - "
                        f"control accuracy; majority class {_nan(rows[0][4]):.3f})"
                    )
                elif any(r[4] is not None for r in rows):
                    lines.append(
                        f"  {'control':>11}: none (no token type in this representation, so no control task; "
                        f"majority class {_nan(rows[0][4]):.3f})"
                    )
        intervals = _headline_intervals(con) if "headline_ci" in present else {}
        measure = settings.overlap_measure
        lines += [
            "",
            (
                "Cross-lingual expert overlap (mean over concepts and language pairs; 95% bootstrap "
                "interval over concepts; chance = random top-K sets):"
            ),
        ]
        for label, ck in (("first", first), ("last", last)):
            row = con.execute(
                f"SELECT avg({measure}), avg(spearman_ap), any_value(k) FROM expert_overlap WHERE checkpoint = ?", [ck]
            ).fetchone()
            shared = con.execute(
                "SELECT count(*), count(DISTINCT (layer, unit)) FROM shared_experts WHERE checkpoint = ?", [ck]
            ).fetchone()
            if row[0] is not None:
                ci = intervals.get(ck, {})
                lines.append(
                    f"  {label:>5}: top-{row[2]} {_MEASURE_TEXT[measure]} {row[0]:.4f}"
                    f"{_ci_text(ci.get('mean_' + measure), '.4f')}, "
                    f"Spearman of AP {row[1]:.4f}{_ci_text(ci.get('mean_spearman_ap'), '.4f')}, "
                    f"shared experts {shared[0]}{_ci_text(ci.get('n_shared'), '.1f')} ({shared[1]} distinct units)"
                )
        if {"overlap_chance", "chance_ap"} <= present:
            lines += ["", *_significance_lines(con, cks), "", *_emergence_lines(con, settings, measure)]
        sim = con.execute(
            "SELECT checkpoint, metric, avg(value) FROM similarity WHERE checkpoint IN (?, ?) "
            "GROUP BY ALL ORDER BY metric, checkpoint",
            [first, last],
        ).fetchall()
        if sim:
            lines += ["", "Representation convergence (mean over layers and language pairs):"]
            for metric in sorted({r[1] for r in sim}):
                vals = {r[0]: r[2] for r in sim if r[1] == metric}
                lines.append(
                    f"  {metric:>20}: first {vals.get(first, float('nan')):.4f}  "
                    f"last {vals.get(last, float('nan')):.4f}"
                )
        comp = con.execute(
            "SELECT checkpoint, CASE WHEN scope = 'all' THEN 'all' ELSE 'per-language mean' END AS s, "
            "metric, avg(value) FROM compression WHERE checkpoint IN (?, ?) GROUP BY ALL ORDER BY metric, s",
            [first, last],
        ).fetchall()
        if comp:
            lines += ["", "Effective dimensionality (mean over layers):"]
            for metric, scope in sorted({(r[2], r[1]) for r in comp}):
                vals = {r[0]: r[3] for r in comp if r[2] == metric and r[1] == scope}
                lines.append(
                    f"  {metric} [{scope}]: first {vals.get(first, float('nan')):.3f}  "
                    f"last {vals.get(last, float('nan')):.3f}"
                )
        counts = con.execute(
            "SELECT checkpoint, kind, sum(n) FROM neuron_counts WHERE checkpoint IN (?, ?) GROUP BY ALL", [first, last]
        ).fetchall()
        if counts:
            lines += ["", "Neurons by kind (sum over layers):"]
            for kind in sorted({r[1] for r in counts}):
                vals = {r[0]: r[2] for r in counts if r[1] == kind}
                lines.append(f"  {kind:>18}: first {vals.get(first, 0)}  last {vals.get(last, 0)}")
        steer = con.execute(
            # The most frequent output language, ties broken by code, so the report is the same on every run.
            "WITH langs AS (SELECT checkpoint, n_neurons, output_lang, count(*) AS n FROM steering GROUP BY ALL), "
            "top AS (SELECT checkpoint, n_neurons, output_lang FROM langs QUALIFY row_number() OVER "
            "(PARTITION BY checkpoint, n_neurons ORDER BY n DESC, output_lang NULLS LAST) = 1) "
            "SELECT s.checkpoint, s.n_neurons, count(*), avg(s.expresses_concept::INT), any_value(t.output_lang) "
            "FROM steering s JOIN checkpoints c ON c.run_id = s.run_id AND c.checkpoint = s.checkpoint "
            "JOIN top t ON t.checkpoint = s.checkpoint AND t.n_neurons = s.n_neurons "
            f"GROUP BY s.checkpoint, s.n_neurons, c.step, c.checkpoint ORDER BY {checkpoint_order('c')}, s.n_neurons"
        ).fetchall()
        if steer:
            lines += ["", "Steering (share of outputs expressing the concept; most frequent output language):"]
            for ck, n_neurons, n, share, lang in steer:
                lines.append(f"  {ck} N={n_neurons}: {share:.2f} of {n} outputs, mostly {lang}")
        return printable("\n".join(lines))  # store strings are data, not terminal control codes
    finally:
        con.close()
