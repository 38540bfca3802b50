"""Publish cost of one checkpoint as a store grows at paper scale: does checkpoint 40 cost more than checkpoint 1?

    .venv/bin/python benchmarks/bench_publish.py                       # 40 checkpoints, BLOOM-560m paper scale
    .venv/bin/python benchmarks/bench_publish.py --checkpoints 4 --units 4096 --concepts 20

Each checkpoint adds what the pipeline adds at BLOOM-560m scale with the paper's data size: ``neuron_ap`` rows for
K = 500 experts of 200 concepts in 16 languages (1.6 M rows) and a ``neuron_summary`` row for each of the 98,304
units, written through the real `precompute.store.StoreWriter` in one writer session, as ``precompute run`` does:
each checkpoint is one transaction published as a part file, and the writer packs the parts into the store file
once when it ends. For checkpoints 1, 10, 20 and 40 it prints the publish time, the size of the part and of
everything published so far, what a reader pays to open the store (the file plus every part, as views) and to run
one query over all checkpoints, and how long a whole-file copy of everything published would take (what each
publish cost before parts). Then the one pack at the end. The store goes to a temporary folder on the same file
system as benchmarks/out/ and is deleted afterwards.
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

from precompute.store import CheckpointRows, StoreWriter, open_readonly, parts


def inputs(langs: list[str], concepts: list[str], layers: int, units: int) -> dict[str, pl.DataFrame]:
    return {
        "languages": pl.DataFrame({"lang": langs, "name": langs}),
        "concepts": pl.DataFrame({"concept_id": concepts, "label": concepts}),
        "sentences": pl.DataFrame(
            {
                "sentence_id": np.arange(len(langs) * len(concepts), dtype=np.int64),
                "concept_id": [c for _ in langs for c in concepts],
                "lang": [lang for lang in langs for _ in concepts],
                "text": ["x"] * (len(langs) * len(concepts)),
            }
        ),
        "layers": pl.DataFrame(
            {
                "layer": np.arange(layers, dtype=np.int32),
                "n_neurons": [units] * layers,
                "hidden_size": [1024] * layers,
                "module_path": [f"h.{i}.mlp" for i in range(layers)],
            }
        ),
    }


def checkpoint_tables(rng: np.random.Generator, langs, concepts, layers: int, units: int, k: int) -> dict:
    pairs = len(langs) * len(concepts)
    n = pairs * k
    neuron_ap = pl.DataFrame(
        {
            "lang": np.repeat(langs, len(concepts) * k),
            "concept_id": np.tile(np.repeat(concepts, k), len(langs)),
            "layer": rng.integers(0, layers, n, dtype=np.int32),
            "unit": rng.integers(0, units, n, dtype=np.int32),
            "ap": rng.random(n),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), pairs),
            "median_pos_act": rng.random(n),
        }
    )
    total = layers * units
    summary = pl.DataFrame(
        {
            "layer": np.repeat(np.arange(layers, dtype=np.int32), units),
            "unit": np.tile(np.arange(units, dtype=np.int32), layers),
            "mean_ap": rng.random(total),
            "max_ap": rng.random(total),
            "best_concept_id": rng.choice(concepts, total),
            "best_lang": rng.choice(langs, total),
        }
    )
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
        writer = StoreWriter(store).__enter__()
        run_id = "bench"
        writer.ensure_run(
            run={
                "run_id": run_id,
                "model_id": "synthetic",
                "config_json": "{}",
                "concept_set_sha256": "0",
                "packages_json": "{}",
            },
            meta={},
            **inputs(langs, concepts, args.layers, args.units),
        )
        for i in range(1, args.checkpoints + 1):
            tables = checkpoint_tables(rng, langs, concepts, args.layers, args.units, args.k)
            start = time.perf_counter()
            writer.write_checkpoint(run_id, CheckpointRows(f"step{i}", i, None, "synthetic", None, tables))
            seconds = time.perf_counter() - start
            if i in report:
                part = parts.part_path(store, parts.newest_seq(store)).stat().st_size / 2**20
                published = (
                    store.stat().st_size / 2**20
                    + sum(p.stat().st_size for p in parts.listed_parts(store).values()) / 2**20
                )
                start = time.perf_counter()
                con = open_readonly(store)
                open_s = time.perf_counter() - start
                start = time.perf_counter()
                n = con.execute("SELECT count(*) FROM neuron_ap WHERE layer = 3 AND unit = 7").fetchall()[0][0]
                query_s = time.perf_counter() - start
                con.close()
                copy_s = whole_file_copy_seconds(store)
                rows.append((i, seconds))
                print(
                    f"checkpoint {i:3d}: publish {seconds:6.2f} s   part {part:6,.0f} MiB   "
                    f"published {published:7,.0f} "
                    f"MiB   reader: open {open_s * 1000:5.0f} ms, one unit over all checkpoints {query_s * 1000:5.0f} "
                    f"ms ({n} rows)   a whole-file copy + fsync of it all: {copy_s:5.2f} s   "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        start = time.perf_counter()
        writer.__exit__(None, None, None)  # the pack: one copy of the store file, the parts folded in
        pack_s = time.perf_counter() - start
        print(
            f"pack at the end (one writer session): {pack_s:6.2f} s, store {store.stat().st_size / 2**20:,.0f} MiB, "
            f"parts left: {len(parts.listed_parts(store))}",
            flush=True,
        )
    first, last = rows[0], rows[-1]
    print(f"checkpoint {last[0]} / checkpoint {first[0]} publish time: {last[1] / first[1]:.2f}x (goal <= 2x)")


def whole_file_copy_seconds(store: Path) -> float:
    """A copy + fsync of everything published (the store file and its parts) into one scratch file: what every
    publish cost when each checkpoint rewrote the whole store."""
    scratch = store.with_suffix(".copy")
    start = time.perf_counter()
    with open(scratch, "wb") as out:
        for source in [store, *parts.listed_parts(store).values()]:
            with open(source, "rb") as handle:
                shutil.copyfileobj(handle, out, 16 * 2**20)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - start
    scratch.unlink()
    return seconds


if __name__ == "__main__":
    main()
