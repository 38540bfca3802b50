"""The permutation test's level on pure noise, before and after the max-over-units test, at the demo's shape.

    .venv/bin/python benchmarks/bench_chance_level.py                 # 200 noise trials at the demo's shape
    .venv/bin/python benchmarks/bench_chance_level.py --trials 600 --units 2048 --contexts 1080 --concepts 45

Each trial: one language's responses (contexts x units, standard normal, float32) and concept labels (contexts
split evenly over the concepts), with no relation between them. Every (concept) cell is tested twice on the same
data:

- *before*: the old rule, "best unit's AP above the 0.99 quantile of the best AP over 5 label shuffles of that
  concept" (`np.quantile` with linear interpolation of 5 draws, as the old ``permutation_thresholds`` did);
- *after*: ``precompute.analysis.chance.chance_ap_table`` with the run's defaults (999 shuffles per number of
  positives, p = (1 + exceedances) / 1,000; uncorrected p <= 0.01, and after Benjamini-Hochberg at FDR 0.01 over
  the trial's cells).

Printed: the share of noise cells each rule passes (nominal 1 %) with a 95 % binomial interval, the share of
trials with any cell passing after the correction, and the seconds each rule's shuffles take.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from precompute.analysis.chance import chance_ap_table, shuffled_labels
from precompute.analysis.experts import average_precision_multi
from precompute.config import RunConfig


def share(k: int, n: int) -> str:
    ci = binomtest(k, n).proportion_ci(0.95)
    return f"{k / n:7.2%} ({k} of {n}; 95 % CI {ci.low:.2%}-{ci.high:.2%})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--units", type=int, default=2048, help="the demo model's MLP units")
    p.add_argument("--contexts", type=int, default=1080, help="contexts of one language (the demo's)")
    p.add_argument("--concepts", type=int, default=45, help="concepts (the demo's)")
    args = p.parse_args()
    spec = RunConfig().experts
    rng = np.random.default_rng(0)
    codes = np.arange(args.contexts) % args.concepts
    names = np.array([f"c{i:03d}" for i in range(args.concepts)])
    langs = np.array(["xx"] * args.contexts)
    old_pass = new_raw = new_bh = trials_bh = 0
    old_s = new_s = 0.0
    for trial in range(args.trials):
        acts = torch.from_numpy(rng.standard_normal((args.contexts, args.units), dtype=np.float32))
        concepts = names[rng.permutation(codes)]
        labels = np.stack([concepts == c for c in names], axis=1)
        best = average_precision_multi(acts, torch.from_numpy(labels), chunk_neurons=spec.chunk_neurons)
        best = best.max(dim=1).values.numpy()
        start = time.perf_counter()
        shuffled = torch.from_numpy(shuffled_labels(labels, 5, rng))
        null = average_precision_multi(acts, shuffled, chunk_neurons=spec.chunk_neurons).max(dim=1).values.numpy()
        null = null.reshape(args.concepts, 5)
        old_pass += int((best > np.quantile(null, 0.99, axis=1)).sum())
        old_s += time.perf_counter() - start
        top = pl.DataFrame({"lang": ["xx"] * args.concepts, "concept_id": names, "ap": best})
        start = time.perf_counter()
        out = chance_ap_table(
            acts,
            langs,
            concepts,
            top,
            n_shuffles=spec.permutations,
            quantile=spec.permutation_quantile,
            correction=spec.correction,
            chunk_neurons=spec.chunk_neurons,
            seed=trial,
        )
        new_s += time.perf_counter() - start
        new_raw += int((out["p_value"] <= 1 - spec.permutation_quantile).sum())
        new_bh += int(out["significant"].sum())
        trials_bh += bool(out["significant"].any())
    cells = args.trials * args.concepts
    one, five, _ = os.getloadavg()
    print(
        f"{args.trials} noise trials x {args.concepts} concepts, {args.units:,} units x {args.contexts:,} contexts "
        f"({os.cpu_count()} CPUs, load {one:.2f}/{five:.2f}); nominal level 1 %"
    )
    print(
        f"before (0.99 quantile of 5 shuffles per concept):     cells passing {share(old_pass, cells)}; "
        f"{old_s / args.trials:.3f} s a trial"
    )
    print(
        f"after, uncorrected (p <= 0.01, {spec.permutations} shuffles per P):    cells passing "
        f"{share(new_raw, cells)}; {new_s / args.trials:.3f} s a trial"
    )
    print(
        f"after, Benjamini-Hochberg over the {args.concepts} cells:            cells passing {share(new_bh, cells)}; "
        f"trials with any {share(trials_bh, args.trials)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
