"""Average precision of every unit for every concept at paper size, on one device (GPU or CPU).

    .venv/bin/python benchmarks/bench_ap_device.py --device cuda                        # 98,304 x 4,000 x 200
    .venv/bin/python benchmarks/bench_ap_device.py --device cpu --units 2048 --contexts 400 --concepts 8

The paper's BLOOM-560m has 98,304 MLP units; one language of a ~200-concept set with 20 contexts per concept
has 4,000 contexts. This times `precompute.analysis.experts.average_precision_multi` (the code the pipeline runs)
on synthetic sparse post-GELU-like activations (fixed seed, rounded to float16 as the pipeline stores them, so
ties are realistic), checks a sample of units against scikit-learn's ``average_precision_score``, and reports
seconds, AP scores per second and peak device memory. JSON goes to benchmarks/out/bench_ap_device-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from precompute.analysis.experts import average_precision_multi


def synthetic(units: int, contexts: int, concepts: int, device: torch.device, seed: int = 0):
    """(contexts, units) float16 activations, (contexts, concepts) one-hot labels; 2 % of units are selective."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    labels_idx = torch.arange(contexts) % concepts
    labels = torch.nn.functional.one_hot(labels_idx, concepts).bool()
    x = torch.randn(contexts, units, generator=gen)
    selective = torch.randperm(units, generator=gen)[: max(1, units // 50)]
    x[:, selective] += 2.0 * labels[:, torch.arange(len(selective)) % concepts].float()
    acts = torch.nn.functional.gelu(x).to(torch.float16)  # sparse-ish, many near-zero ties
    return acts.to(device), labels.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--units", type=int, default=98_304)
    parser.add_argument("--contexts", type=int, default=4_000)
    parser.add_argument("--concepts", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=8192, help="units per chunk ([experts] chunk_neurons)")
    parser.add_argument("--check", type=int, default=32, help="units checked against scikit-learn")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    acts, labels = synthetic(args.units, args.contexts, args.concepts, device)
    average_precision_multi(acts[:, :256], labels[:, :2], chunk_neurons=args.chunk)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    ap = average_precision_multi(acts, labels, chunk_neurons=args.chunk)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    rng = np.random.default_rng(0)
    cols = rng.choice(args.units, size=min(args.check, args.units), replace=False)
    a_np, l_np, ap_np = acts[:, cols].float().cpu().numpy(), labels.cpu().numpy(), ap[:, cols].cpu().numpy()
    worst = max(
        abs(average_precision_score(l_np[:, c], a_np[:, j]) - ap_np[c, j])
        for c in range(min(args.concepts, 5))
        for j in range(len(cols))
    )
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "units": args.units,
        "contexts": args.contexts,
        "concepts": args.concepts,
        "seconds": seconds,
        "ap_per_s": args.units * args.concepts / seconds,
        "peak_gpu_mib": peak,
        "max_abs_diff_vs_sklearn": worst,
    }
    print(
        f"AP {args.contexts} contexts x {args.units:,} units x {args.concepts} concepts on {result['device']}: "
        f"{seconds:.2f} s ({result['ap_per_s']:,.0f} AP/s), peak GPU {peak or 0:,.0f} MiB, "
        f"max |diff| vs sklearn {worst:.1e}"
    )
    out = args.out or Path(__file__).resolve().parent / "out" / f"bench_ap_device-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
