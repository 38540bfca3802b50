"""Publish cost of one checkpoint as a store grows at paper scale: does checkpoint 40 cost more than checkpoint 1?

    .venv/bin/python benchmarks/bench_publish.py                       # 40 checkpoints, BLOOM-560m paper scale
    .venv/bin/python benchmarks/bench_publish.py --checkpoints 4 --units 4096 --concepts 20

Each checkpoint adds what the pipeline adds at BLOOM-560m scale with the paper's data size: ``neuron_ap`` rows for
K = 500 experts of 200 concepts in 16 languages (1.6 M rows) and a ``neuron_summary`` row for each of the 98,304
units, written through the real `precompute.store.StoreWriter` (one transaction and one atomic publish per
checkpoint). For checkpoints 1, 10, 20 and 40 it prints the publish time, the store's size, and how long the
writer's private copy of the published file alone takes (``shutil.copyfile`` of the store, measured separately
right after), so the share of the publish that grows with the store is visible. The store goes to a temporary
folder on the same file system as benchmarks/out/ and is deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from precompute.store import CheckpointRows, StoreWriter


def inputs(langs: list[str], concepts: list[str], layers: int, units: int) -> dict[str, pl.DataFrame]:
    return {
        "languages": pl.DataFrame({"lang": langs, "name": langs}),
        "concepts": pl.DataFrame({"concept_id": concepts, "label": concepts}),
        "sentences": pl.DataFrame({
            "sentence_id": np.arange(len(langs) * len(concepts), dtype=np.int64),
            "concept_id": [c for _ in langs for c in concepts], "lang": [lang for lang in langs for _ in concepts],
            "text": ["x"] * (len(langs) * len(concepts)),
        }),
        "layers": pl.DataFrame({
            "layer": np.arange(layers, dtype=np.int32), "n_neurons": [units] * layers,
            "hidden_size": [1024] * layers, "module_path": [f"h.{i}.mlp" for i in range(layers)],
        }),
    }


def checkpoint_tables(rng: np.random.Generator, langs, concepts, layers: int, units: int, k: int) -> dict:
    pairs = len(langs) * len(concepts)
    n = pairs * k
    neuron_ap = pl.DataFrame({
        "lang": np.repeat(langs, len(concepts) * k), "concept_id": np.tile(np.repeat(concepts, k), len(langs)),
        "layer": rng.integers(0, layers, n, dtype=np.int32), "unit": rng.integers(0, units, n, dtype=np.int32),
        "ap": rng.random(n), "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), pairs),
        "median_pos_act": rng.random(n),
    })
    total = layers * units
    summary = pl.DataFrame({
        "layer": np.repeat(np.arange(layers, dtype=np.int32), units),
        "unit": np.tile(np.arange(units, dtype=np.int32), layers),
        "mean_ap": rng.random(total), "max_ap": rng.random(total),
        "best_concept_id": rng.choice(concepts, total), "best_lang": rng.choice(langs, total),
    })
    return {"neuron_ap": neuron_ap, "neuron_summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=40)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--units", type=int, default=4096, help="units per layer")
    parser.add_argument("--concepts", type=int, default=200)
    parser.add_argument("--langs", type=int, default=16)
    parser.add_argument("--k", type=int, default=500)
    args = parser.parse_args()
    langs = [f"l{i:02d}" for i in range(args.langs)]
    concepts = [f"c{i:03d}" for i in range(args.concepts)]
    report = sorted({1, 10, 20, args.checkpoints} & set(range(1, args.checkpoints + 1)))
    out_dir = Path(__file__).resolve().parent / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        store = Path(tmp) / "publish.duckdb"
        with StoreWriter(store) as writer:
            run_id = "bench"
            writer.ensure_run(run={"run_id": run_id, "model_id": "synthetic", "config_json": "{}",
                                   "concept_set_sha256": "0", "packages_json": "{}"},
                              meta={}, **inputs(langs, concepts, args.layers, args.units))
            for i in range(1, args.checkpoints + 1):
                tables = checkpoint_tables(rng, langs, concepts, args.layers, args.units, args.k)
                start = time.perf_counter()
                writer.write_checkpoint(run_id, CheckpointRows(f"step{i}", i, None, "synthetic", None, tables))
                seconds = time.perf_counter() - start
                if i in report:
                    start = time.perf_counter()
                    shutil.copyfile(store, store.with_suffix(".copy"))
                    copy_s = time.perf_counter() - start
                    fd = os.open(store.with_suffix(".copy"), os.O_RDONLY)
                    os.fsync(fd)  # the writer fsyncs its copy before the rename: that write grows too
                    os.close(fd)
                    sync_s = time.perf_counter() - start
                    store.with_suffix(".copy").unlink()
                    size = store.stat().st_size / 2**20
                    rows.append((i, seconds, copy_s, size))
                    print(f"checkpoint {i:3d}: publish {seconds:6.2f} s   store {size:8,.0f} MiB   "
                          f"whole-file copy alone {copy_s:5.2f} s, copy + fsync {sync_s:5.2f} s "
                          f"({sync_s / seconds:4.0%} of the publish)   load {os.getloadavg()[0]:.2f}", flush=True)
    first, last = rows[0], rows[-1]
    print(f"checkpoint {last[0]} / checkpoint {first[0]} publish time: {last[1] / first[1]:.2f}x (goal <= 2x)")


if __name__ == "__main__":
    main()
