"""Every post-forward stage of ONE checkpoint at BLOOM shape and paper data size, through the real code.

    .venv/bin/python benchmarks/bench_scale.py --quick          # 4 languages x 20 concepts: checks the script (~30 s)
    .venv/bin/python benchmarks/bench_scale.py                  # growth law + extrapolation (see --help)
    .venv/bin/python benchmarks/bench_scale.py --point 98304 4000   # one measured point: units, contexts/language
    .venv/bin/python benchmarks/bench_scale.py --one-language 98304 4000   # the AP-bound stages, one language

Synthetic pooled activations (seed 0) shaped like BLOOM-560m's: 24 layers x 4,096 MLP units, residual d = 1,024
(25 residual layers with the embeddings), 16 languages x 200 concepts; the contexts of each language are split
evenly over the concepts (4,000 per language = the paper's 20 contexts per concept). Unit responses are sparse
and post-GELU-like (GELU of a shifted normal, float16 as the pipeline stores them); 20 units per concept are
concept-selective (half of them in every language, half in one language), 1 % of the units are language-selective
(what LAPE should find); the residual features carry a language and a concept offset.

Stages: the pipeline's own list (``precompute.pipeline.STAGES``, run by ``precompute.stages.run_stages`` with
the pipeline's ``StageTimer``: seconds, peak RSS of this process during the stage) on a context that holds the
synthetic pooled activations, less the stages that need the model itself (extract, drilldown, steering):
probes (mean + token representations, the default seeds, the control task), experts, alignment, chance
(permutation p-values of the experts' AP, overlap chance, bootstrap intervals), convergence, lape; then drilldown
by hand (its post-forward parts: ``select_units``, ``top_contexts``, ``response_histograms``; its peak tokens need a
second forward pass and its output tokens the unembedding, so they are not here), and store
(``StoreWriter.write_checkpoint`` of every table into a fresh store).

Memory note: the residual stream is given to the probes and the similarity stage as a broadcast view (one
(contexts, d) float32 matrix shared by every layer and token seed), so their cost is measured without holding
(L+1) x (1+S) copies; the pipeline itself holds (or spills, ``[extract] ram_budget_gb``) all of them, and the
report prints what that costs at each size (``pooled_nbytes``' formula).

Growth law: every stage at units in {12k, 25k, 49k, 98k} (contexts per language fixed, ``--law-contexts``) and at
contexts per language in {1k, 2k, 4k} (units fixed, ``--law-units``); the fitted exponent of each (log-log least
squares) and the extrapolation to BLOOM-560m (98,304 units x 4,000 contexts per language) and BLOOM-7b1
(491,520 units). Goals on the project's 2-core machine: the stages of one checkpoint <= 5 min, peak RSS <= 16 GB.

``--one-language UNITS PER_LANG``: the stages whose cost grows with the contexts (expert AP with top-K, and the
chance stage's permutation AP, timed before and after the max-over-units permutation test on the same responses),
for ONE language at full size, times the number of languages: the paper's full
point (98,304 units x 64,000 contexts) holds 12.6 GB of float16 responses plus as much activity, more than this
23 GiB machine can hold next to the stages' own memory, while one language (786 MB) fits.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from precompute.analysis import drilldown as dd
from precompute.analysis.units import UnitAxis
from precompute.config import RunConfig
from precompute.pipeline import stages_for
from precompute.profiling import StageTimer
from precompute.stages import CheckpointContext, run_stages
from precompute.store import CheckpointRows, StoreWriter

LAYERS, UNITS_PER_LAYER, D_MODEL = 24, 4096, 1024
N_LANGS, N_CONCEPTS = 16, 200
BLOOM_560M_UNITS, BLOOM_7B1_UNITS = 24 * 4096, 30 * 16384
PAPER_CONTEXTS_PER_LANG = 4000
GOAL_SECONDS, GOAL_RSS_GB = 300.0, 16.0
STAGES = ("probes", "experts", "alignment", "chance", "convergence", "lape", "drilldown", "store")
#: Stages of the pipeline that need the model itself (a forward pass, generation): not run on synthetic activations.
NEEDS_MODEL = ("extract", "drilldown", "steering")


def synthetic(units: int, per_lang: int, seed: int = 0) -> dict:
    """Pooled activations of one checkpoint: responses, activity fractions, residual views, labels."""
    rng = np.random.default_rng(seed)
    langs = [f"l{i:02d}" for i in range(N_LANGS)]
    concepts = [f"c{i:03d}" for i in range(N_CONCEPTS)]
    n = N_LANGS * per_lang
    lang_codes = np.repeat(np.arange(N_LANGS), per_lang)
    concept_codes = np.tile(np.arange(per_lang) % N_CONCEPTS, N_LANGS)
    responses = np.empty((n, units), dtype=np.float16)
    active = np.empty((n, units), dtype=np.float16)
    step = 2048
    for start in range(0, n, step):  # row blocks: float32 temporaries stay small
        stop = min(n, start + step)
        z = rng.standard_normal((stop - start, units), dtype=np.float32) - 1.0
        # GELU (tanh form): sparse, mostly small negative values, a few large positive ones.
        g = 0.5 * z * (1.0 + np.tanh(0.7978846 * (z + 0.044715 * z * z * z)))
        responses[start:stop] = g
        active[start:stop] = np.clip(0.15 + 0.5 * g, 0.0, 1.0)
    # Concept-selective units: 20 per concept, half shared by every language, half in one language only.
    for c in range(N_CONCEPTS):
        picked = rng.choice(units, size=20, replace=False)
        rows = np.flatnonzero(concept_codes == c)
        responses[np.ix_(rows, picked[:10])] += np.float16(2.0)
        own = rows[lang_codes[rows] == c % N_LANGS]
        responses[np.ix_(own, picked[10:])] += np.float16(2.0)
    # Language-selective units (LAPE): 1 % of the units fire far more often in one language.
    picked = rng.choice(units, size=max(N_LANGS, units // 100), replace=False)
    for li in range(N_LANGS):
        rows = np.flatnonzero(lang_codes == li)
        cols = picked[li::N_LANGS]
        active[np.ix_(rows, cols)] = np.clip(active[np.ix_(rows, cols)] + np.float16(0.6), 0, 1)
    # Residual stream: one (contexts, d) matrix, broadcast over layers (and token seeds): see the docstring.
    resid = rng.standard_normal((n, D_MODEL), dtype=np.float32)
    resid += rng.standard_normal((N_LANGS, D_MODEL), dtype=np.float32)[lang_codes] * 0.5
    resid += rng.standard_normal((N_CONCEPTS, D_MODEL), dtype=np.float32)[concept_codes] * 0.5
    return {
        "responses": torch.from_numpy(responses),
        "active": torch.from_numpy(active),
        "resid": torch.from_numpy(resid),
        "langs": np.array(langs)[lang_codes],
        "concept_ids": np.array(concepts)[concept_codes],
        "lang_list": langs,
        "concept_list": concepts,
        "token_counts": rng.integers(8, 64, n),
    }


def layer_offsets(units: int) -> list[int]:
    per = units // LAYERS
    return [i * per for i in range(LAYERS)] + [units]


def pipeline_nbytes(units: int, n: int, seeds: int) -> int:
    """What the pipeline holds or spills for one checkpoint (``pooled_nbytes``: 1 pooling + activity, float16)."""
    return 2 * n * units * 2 + (1 + seeds) * (LAYERS + 1) * n * D_MODEL * 4


def run_point(units: int, per_lang: int, cfg: RunConfig, store_dir: Path) -> dict[str, tuple[float, float]]:
    """Every stage once at one size; returns stage -> (seconds, peak RSS MiB)."""
    t0 = time.perf_counter()
    data = synthetic(units, per_lang)
    gen_s = time.perf_counter() - t0
    n = len(data["langs"])
    offsets = layer_offsets(units)
    seeds = cfg.probes.seeds
    resid = data["resid"]
    langs, concept_ids = data["langs"], data["concept_ids"]
    axis = UnitAxis.contiguous(offsets)
    # What the extract stage would leave: the pooled activations (residual views broadcast, see the docstring).
    pooled = SimpleNamespace(
        resid_mean=resid.expand(LAYERS + 1, n, D_MODEL),
        resid_token=resid.expand(len(seeds), LAYERS + 1, n, D_MODEL),
        token_ids=np.random.default_rng(1).integers(0, 50_000, (len(seeds), n)),
        mlp_active=data["active"],
        token_counts=data["token_counts"],
    )
    sentences = pl.DataFrame({"sentence_id": np.arange(n, dtype=np.int64), "concept_id": concept_ids, "lang": langs})
    ctx = CheckpointContext(
        cfg=cfg,
        checkpoint="step1",
        layout=SimpleNamespace(units=axis),
        concept_set=SimpleNamespace(sentences=sentences),
        artefacts={"pooled": pooled, "responses": data["responses"]},
    )
    timer = StageTimer(torch.device("cpu"))
    # The pipeline's own stages, in its order; those that need the model itself are left out (see the docstring).
    run_stages([s for s in stages_for(cfg) if s.name not in NEEDS_MODEL], ctx, timer)
    tables = ctx.tables
    ctx.artefacts.pop("experts", None)  # the full AP matrix: no later stage here reads it
    # Drilldown, its post-forward parts: the peak tokens and output tokens need the model itself.
    drilldown = "post-forward parts only (no second forward pass, no unembedding)"
    with timer.stage("drilldown"):
        spec = cfg.drilldown
        units_sel = dd.select_units(tables["neuron_ap"], tables["language_neurons"], axis, max_units=spec.max_units)
        best = dd.top_contexts(data["responses"], langs, units_sel, n_top=spec.top_contexts, device=torch.device("cpu"))
        chosen = pl.DataFrame({"col": units_sel})
        top = tables["neuron_ap"]
        picked = top.with_columns(col=pl.Series(dd.global_columns(top, axis))).join(chosen, on="col", how="semi")
        tables["unit_response_hist"] = dd.response_histograms(
            data["responses"], langs, concept_ids, picked, axis, n_bins=spec.hist_bins, device=torch.device("cpu")
        )
        drilldown += f"; {len(units_sel):,} units, {best.height:,} top-context rows"
    with tempfile.TemporaryDirectory(dir=store_dir) as tmp, StoreWriter(Path(tmp) / "scale.duckdb") as writer:
        run_id = "bench-scale"
        writer.ensure_run(
            run={
                "run_id": run_id,
                "model_id": "synthetic",
                "config_json": "{}",
                "concept_set_sha256": "0",
                "packages_json": "{}",
            },
            meta={},
            languages=pl.DataFrame({"lang": data["lang_list"], "name": data["lang_list"]}),
            concepts=pl.DataFrame({"concept_id": data["concept_list"], "label": data["concept_list"]}),
            sentences=pl.DataFrame(
                {
                    "sentence_id": np.arange(n, dtype=np.int64),
                    "concept_id": concept_ids,
                    "lang": langs,
                    "text": ["x"] * n,
                }
            ),
            layers=pl.DataFrame(
                {
                    "layer": np.arange(LAYERS, dtype=np.int32),
                    "n_neurons": np.diff(offsets).astype(np.int32),
                    "hidden_size": np.full(LAYERS, D_MODEL, dtype=np.int32),
                    "module_path": [f"h.{i}.mlp" for i in range(LAYERS)],
                }
            ),
        )
        tables["stage_timings"] = timer.frame()
        with timer.stage("store"):
            writer.write_checkpoint(run_id, CheckpointRows("step1", 1, None, "synthetic", None, tables))
    out = {row["stage"]: (row["seconds"], row["peak_mem_mb"] or float("nan")) for row in timer.rows}
    out["_generate"] = (gen_s, float("nan"))
    out["_drilldown"] = drilldown
    out["_rows"] = {k: v.height for k, v in tables.items()}
    return out


def one_language(units: int, per_lang: int, cfg: RunConfig) -> None:
    """AP (+ top-K) and the chance stage's permutation AP of one language at full size, extrapolated to N_LANGS.

    The chance stage is timed twice on the same responses: *before* the max-over-units test (5 label shuffles of
    every concept, the 0.99 quantile of their best AP: 5 x concepts AP columns, the work the old
    ``permutation_thresholds`` did, done here with the same kernel calls) and *after*
    (``cfg.experts.permutations`` shuffles per distinct number of positives, `max_ap_null`, what
    ``chance_ap_table`` does per language).
    """
    from precompute.analysis.chance import max_ap_null, shuffled_labels
    from precompute.analysis.experts import average_precision_multi, top_k_experts

    rng = np.random.default_rng(0)
    responses = np.empty((per_lang, units), dtype=np.float16)
    for start in range(0, per_lang, 2048):  # the same sparse post-GELU responses as `synthetic`
        z = rng.standard_normal((min(per_lang, start + 2048) - start, units), dtype=np.float32) - 1.0
        responses[start : start + len(z)] = 0.5 * z * (1.0 + np.tanh(0.7978846 * (z + 0.044715 * z * z * z)))
    concept_codes = np.arange(per_lang) % N_CONCEPTS
    labels = np.stack([concept_codes == c for c in range(N_CONCEPTS)], axis=1)
    scores = torch.from_numpy(responses)
    chunk = cfg.experts.chunk_neurons
    print(f"\n== one language: {units:,} units x {per_lang:,} contexts x {N_CONCEPTS} concepts ({load()})")
    start = time.perf_counter()
    ap = average_precision_multi(scores, torch.from_numpy(labels), chunk_neurons=chunk)
    top_k_experts(ap, cfg.experts.top_k)
    experts_s = time.perf_counter() - start
    start = time.perf_counter()  # before: 5 shuffles of each concept, the best unit's AP of each
    shuffled = torch.from_numpy(shuffled_labels(labels, 5, np.random.default_rng(0)))
    for first in range(0, units, chunk):
        average_precision_multi(scores[:, first : first + chunk], shuffled, chunk_neurons=chunk).max(dim=1)
    before_s = time.perf_counter() - start
    start = time.perf_counter()  # after: one null per distinct number of positives
    sizes = sorted(set(labels.sum(axis=0).tolist()))
    gen = np.random.default_rng(0)
    for n_pos in sizes:
        max_ap_null(scores, n_pos, n_shuffles=cfg.experts.permutations, rng=gen, chunk_neurons=chunk)
    chance_s = time.perf_counter() - start
    print(f"expert AP + top-K {experts_s:7.1f} s   x {N_LANGS} languages = {N_LANGS * experts_s:7.0f} s")
    print(
        f"chance before (5 shuffles x {N_CONCEPTS} concepts = {5 * N_CONCEPTS} AP columns, 0.99 quantile of 5 "
        f"draws) {before_s:7.1f} s   x {N_LANGS} languages = {N_LANGS * before_s:7.0f} s"
    )
    print(
        f"chance after ({cfg.experts.permutations} shuffles x {len(sizes)} distinct positive count(s) = "
        f"{cfg.experts.permutations * len(sizes)} AP columns, exact Monte-Carlo p-values) {chance_s:7.1f} s   "
        f"x {N_LANGS} languages = {N_LANGS * chance_s:7.0f} s   (after / before = {chance_s / before_s:.2f}x)"
    )
    print(
        f"expert AP + chance after, all languages: {N_LANGS * (experts_s + chance_s):.0f} s of the "
        f"{GOAL_SECONDS:.0f} s goal for every stage of one checkpoint ({load()})"
    )


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


def print_point(units: int, per_lang: int, result: dict, seeds: int) -> None:
    n = N_LANGS * per_lang
    print(
        f"\n== {units:,} units x {n:,} contexts ({per_lang:,} per language)  "
        f"(synthetic data generated in {result['_generate'][0]:.1f} s; {load()})"
    )
    print(f"{'stage':12s} {'seconds':>9s} {'peak RSS GiB':>13s}")
    total = 0.0
    peak = 0.0
    for stage in STAGES:
        if stage not in result:
            print(f"{stage:12s} {'-':>9s} {'-':>13s}   (not in the code yet)")
            continue
        s, rss = result[stage]
        total += s
        peak = max(peak, rss)
        note = f"   ({result['_drilldown']})" if stage == "drilldown" else ""
        print(f"{stage:12s} {s:9.2f} {rss / 1024:13.2f}{note}")
    print(
        f"{'all stages':12s} {total:9.2f} {peak / 1024:13.2f}   "
        f"(goal <= {GOAL_SECONDS:.0f} s, <= {GOAL_RSS_GB:.0f} GiB)"
    )
    print(
        f"pipeline's pooled activations at this size (held in RAM or spilled): "
        f"{pipeline_nbytes(units, n, seeds) / 2**30:.1f} GiB"
    )


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """log y = a log x + b by least squares: (a, b)."""
    lx, ly = np.log(xs), np.log(np.maximum(ys, 1e-6))
    a, b = np.polyfit(lx, ly, 1)
    return float(a), float(b)


def main() -> int:
    global N_LANGS, N_CONCEPTS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    p.add_argument("--point", nargs=2, type=int, metavar=("UNITS", "PER_LANG"), help="measure one size only")
    p.add_argument(
        "--one-language",
        nargs=2,
        type=int,
        metavar=("UNITS", "PER_LANG"),
        help="the AP-bound stages for one language at this size, extrapolated to all languages",
    )
    p.add_argument("--units", type=int, nargs="+", default=[12288, 24576, 49152, 98304])
    p.add_argument("--contexts", type=int, nargs="+", default=[1000, 2000, 4000], help="contexts per language")
    p.add_argument("--law-contexts", type=int, default=1000, help="contexts per language of the units sweep")
    p.add_argument("--law-units", type=int, default=12288, help="units of the contexts sweep")
    p.add_argument("--store-dir", type=Path, default=ROOT / "benchmarks" / "out")
    args = p.parse_args()
    cfg = RunConfig()
    seeds = len(cfg.probes.seeds)
    args.store_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:  # 4 languages x 20 concepts: checks the script, measures nothing
        N_LANGS, N_CONCEPTS = 4, 20
        args.units, args.contexts, args.law_contexts, args.law_units = [1536, 3072], [40, 80], 40, 1536
    print(
        f"{N_LANGS} languages x {N_CONCEPTS} concepts; machine: {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, {load()}; "
        f"K = {cfg.experts.top_k}, probe seeds {cfg.probes.seeds}, max_train {cfg.probes.max_train}"
    )
    if args.one_language:
        one_language(*args.one_language, cfg)
        return 0
    if args.point:
        units, per_lang = args.point
        print_point(units, per_lang, run_point(units, per_lang, cfg, args.store_dir), seeds)
        return 0
    by_units, by_contexts = {}, {}
    for units in args.units:
        by_units[units] = run_point(units, args.law_contexts, cfg, args.store_dir)
        print_point(units, args.law_contexts, by_units[units], seeds)
    for per_lang in args.contexts:
        if per_lang == args.law_contexts and args.law_units in by_units:
            by_contexts[per_lang] = by_units[args.law_units]
        else:
            by_contexts[per_lang] = run_point(args.law_units, per_lang, cfg, args.store_dir)
        print_point(args.law_units, per_lang, by_contexts[per_lang], seeds)

    print(
        f"\n== growth law ({load()}): t ~ units^a (at {args.law_contexts} contexts/language), "
        f"t ~ contexts^b (at {args.law_units:,} units)"
    )
    ref_c = max(args.contexts)
    print(
        f"extrapolation: t(U, C) = t({args.law_units:,}, {ref_c}) x (U / {args.law_units:,})^a x "
        f"(C / {ref_c})^b, C = {PAPER_CONTEXTS_PER_LANG} contexts per language"
    )
    print(f"{'stage':12s} {'a (units)':>9s} {'b (ctx)':>8s} {'BLOOM-560m s':>13s} {'BLOOM-7b1 s':>12s}")
    totals = [0.0, 0.0]
    for stage in STAGES:
        if stage not in by_units[args.units[0]]:
            continue
        a, _ = fit(args.units, [by_units[u][stage][0] for u in args.units])
        b, _ = fit(args.contexts, [by_contexts[c][stage][0] for c in args.contexts])
        base = by_contexts[ref_c][stage][0]
        ctx_factor = (PAPER_CONTEXTS_PER_LANG / ref_c) ** b
        est = [base * (u / args.law_units) ** max(a, 0.0) * ctx_factor for u in (BLOOM_560M_UNITS, BLOOM_7B1_UNITS)]
        totals = [totals[0] + est[0], totals[1] + est[1]]
        print(f"{stage:12s} {a:9.2f} {b:8.2f} {est[0]:13.1f} {est[1]:12.1f}")
    print(f"{'all stages':12s} {'':9s} {'':8s} {totals[0]:13.1f} {totals[1]:12.1f}   (goal <= {GOAL_SECONDS:.0f} s)")
    n_full = N_LANGS * PAPER_CONTEXTS_PER_LANG
    for name, u in (("BLOOM-560m", BLOOM_560M_UNITS), ("BLOOM-7b1", BLOOM_7B1_UNITS)):
        print(
            f"{name}: the pipeline's pooled activations {pipeline_nbytes(u, n_full, seeds) / 2**30:.0f} GiB "
            f"(responses + activity {2 * n_full * u * 2 / 2**30:.0f} GiB float16) for {n_full:,} contexts"
        )
    peak = max(r[s][1] for r in list(by_units.values()) + list(by_contexts.values()) for s in STAGES if s in r)
    print(f"largest stage peak RSS measured: {peak / 1024:.2f} GiB; {load()}")
    return 0 if math.isfinite(peak) else 1


if __name__ == "__main__":
    sys.exit(main())
