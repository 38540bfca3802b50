"""Vectorised average precision vs a per-neuron sklearn loop, on one machine in one run.

    .venv/bin/python benchmarks/bench_ap.py [--neurons 10000] [--contexts 2000] [--concepts 1]

Prints both timings, the speed-up ratio and the largest absolute difference of the results.
With --concepts C > 1 the vectorised side sorts once and scores all C concepts (as the pipeline
does for the concepts of one language); the sklearn side loops over neurons x concepts. The vectorised
side is `precompute.analysis.experts` on the CPU: numpy sorts, a compiled (numba) kernel counts, on
every core (CROSSLING_AP_THREADS overrides).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from precompute.analysis.experts import _cpu_workers, average_precision, average_precision_multi
from precompute.config import ExpertSpec

#: The run's ``[experts] chunk_neurons``, as the pipeline passes it.
CHUNK = ExpertSpec().chunk_neurons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=10_000)
    parser.add_argument("--contexts", type=int, default=2_000)
    parser.add_argument("--concepts", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(args.seed)
    # Activations rounded to 3 decimals: realistic ties, as in float16 storage.
    scores = np.round(rng.normal(size=(args.contexts, args.neurons)), 3).astype(np.float32)
    labels = rng.random((args.contexts, args.concepts)) < 0.05
    labels[0] = True
    t_scores, t_labels = torch.from_numpy(scores), torch.from_numpy(labels)

    # Warm-up: both calls of the timed part on 100 neurons (the JIT-compiled kernel is compiled on a first run,
    # then loaded from numba's cache).
    start = time.perf_counter()
    average_precision(t_scores[:, :100], t_labels[:, 0])
    average_precision_multi(t_scores[:, :100], t_labels, chunk_neurons=CHUNK)
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    if args.concepts == 1:
        ours = average_precision(t_scores, t_labels[:, 0]).numpy()[None, :]
    else:
        ours = average_precision_multi(t_scores, t_labels, chunk_neurons=CHUNK).numpy()
    vectorised = time.perf_counter() - start

    start = time.perf_counter()
    ref = np.array(
        [
            [average_precision_score(labels[:, c], scores[:, j]) for j in range(args.neurons)]
            for c in range(args.concepts)
        ]
    )
    loop = time.perf_counter() - start

    print(
        f"threads: AP {min(_cpu_workers(), -(-args.neurons // 1024))} (of {os.cpu_count()} CPUs; "
        f"CROSSLING_AP_THREADS overrides), torch {torch.get_num_threads()}, sklearn loop 1; "
        f"load average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    print(f"{args.contexts} contexts x {args.neurons} neurons x {args.concepts} concept(s)")
    print(f"sklearn per-neuron loop : {loop:8.3f} s")
    print(f"vectorised (numba, cpu) : {vectorised:8.3f} s  (warm-up, JIT compile or cache load: {warm_up:.2f} s)")
    print(f"speed-up                : {loop / vectorised:8.1f}x")
    print(f"max |difference|        : {np.abs(ours - ref).max():.2e}")


if __name__ == "__main__":
    main()
