"""Headline figures of a store, first vs last checkpoint, as plain text (quoted by the README)."""

from __future__ import annotations

from pathlib import Path

from precompute.store import checkpoint_order, open_readonly, printable


def _fmt_row(values: list[float], width: int = 6) -> str:
    return " ".join(f"{v:>{width}.3f}" for v in values)


def headline_report(path: str | Path) -> str:
    """LID accuracy per layer, expert overlap, compression, language-specific neurons, steering."""
    con = open_readonly(path)
    try:
        cks = con.execute(
            f"SELECT checkpoint, step FROM checkpoints ORDER BY {checkpoint_order()}"
        ).fetchall()
        if not cks:
            return f"{path}: no finished checkpoint yet"
        first, last = cks[0][0], cks[-1][0]
        lines = [
            f"store {path}: {len(cks)} checkpoints; first = {first} (step {cks[0][1]}), "
            f"last = {last} (step {cks[-1][1]})",
            "",
            "LID probe accuracy per layer (layer 0 = embeddings):",
        ]
        reps = [r[0] for r in con.execute(
            "SELECT DISTINCT representation FROM probe_results ORDER BY representation DESC").fetchall()]
        for rep in reps:
            for label, ck in (("first", first), ("last", last)):
                acc = [r[0] for r in con.execute(
                    "SELECT accuracy FROM probe_results WHERE checkpoint = ? AND representation = ? "
                    "ORDER BY layer", [ck, rep]).fetchall()]
                lines.append(f"  {rep:>5} {label:>5}: {_fmt_row(acc)}")
        lines += ["", "Cross-lingual expert overlap (mean over concepts and language pairs):"]
        for label, ck in (("first", first), ("last", last)):
            row = con.execute(
                "SELECT avg(jaccard), avg(spearman_ap), any_value(k) FROM expert_overlap WHERE checkpoint = ?",
                [ck]).fetchone()
            shared = con.execute(
                "SELECT count(*), count(DISTINCT (layer, unit)) FROM shared_experts WHERE checkpoint = ?",
                [ck]).fetchone()
            if row[0] is not None:
                lines.append(
                    f"  {label:>5}: top-{row[2]} Jaccard {row[0]:.4f}, Spearman of AP {row[1]:.4f}, "
                    f"shared experts {shared[0]} ({shared[1]} distinct units)"
                )
        sim = con.execute(
            "SELECT checkpoint, metric, avg(value) FROM similarity WHERE checkpoint IN (?, ?) "
            "GROUP BY ALL ORDER BY metric, checkpoint", [first, last]).fetchall()
        if sim:
            lines += ["", "Representation convergence (mean over layers and language pairs):"]
            for metric in sorted({r[1] for r in sim}):
                vals = {r[0]: r[2] for r in sim if r[1] == metric}
                lines.append(f"  {metric:>20}: first {vals.get(first, float('nan')):.4f}  last {vals.get(last, float('nan')):.4f}")
        comp = con.execute(
            "SELECT checkpoint, CASE WHEN scope = 'all' THEN 'all' ELSE 'per-language mean' END AS s, "
            "metric, avg(value) FROM compression WHERE checkpoint IN (?, ?) GROUP BY ALL ORDER BY metric, s",
            [first, last]).fetchall()
        if comp:
            lines += ["", "Effective dimensionality (mean over layers):"]
            for metric, scope in sorted({(r[2], r[1]) for r in comp}):
                vals = {r[0]: r[3] for r in comp if r[2] == metric and r[1] == scope}
                lines.append(f"  {metric} [{scope}]: first {vals.get(first, float('nan')):.3f}  last {vals.get(last, float('nan')):.3f}")
        counts = con.execute(
            "SELECT checkpoint, kind, sum(n) FROM neuron_counts WHERE checkpoint IN (?, ?) GROUP BY ALL",
            [first, last]).fetchall()
        if counts:
            lines += ["", "Neurons by kind (sum over layers):"]
            for kind in sorted({r[1] for r in counts}):
                vals = {r[0]: r[2] for r in counts if r[1] == kind}
                lines.append(f"  {kind:>18}: first {vals.get(first, 0)}  last {vals.get(last, 0)}")
        steer = con.execute(
            "SELECT checkpoint, n_neurons, count(*), avg(expresses_concept::INT), "
            "mode(output_lang) FROM steering GROUP BY ALL ORDER BY checkpoint, n_neurons").fetchall()
        if steer:
            lines += ["", "Steering (share of outputs expressing the concept; most frequent output language):"]
            for ck, n_neurons, n, share, lang in steer:
                lines.append(f"  {ck} N={n_neurons}: {share:.2f} of {n} outputs, mostly {lang}")
        return printable("\n".join(lines))  # store strings are data, not terminal control codes
    finally:
        con.close()
