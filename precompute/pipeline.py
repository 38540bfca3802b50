"""One run: for each checkpoint, extract -> probe -> score experts -> align -> analyse -> publish.

Each checkpoint is published to the store in one transaction; checkpoints already in the store are
skipped (``force=True`` recomputes them), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    Progress,
)
from transformers.utils import logging as hf_logging

from precompute import __version__
from precompute.analysis.alignment import expert_overlap, expert_sharing, shared_experts
from precompute.analysis.chance import chance_ap_table, headline_intervals, overlap_chance
from precompute.analysis.experts import ExpertResult, neuron_summary, score_experts
from precompute.analysis.lape import language_neuron_tables
from precompute.analysis.probes import probe_tables
from precompute.analysis.similarity import convergence_tables
from precompute.checkpoints.fingerprint import changed_error, fingerprints_differ, source_fingerprint
from precompute.config import CheckpointSpec, ConfigError, RunConfig
from precompute.extract import (
    Pooled,
    TokenizedContexts,
    available_ram_bytes,
    extract,
    max_positions,
    pooled_nbytes,
    token_offsets,
    tokenize_contexts,
    unit_peaks,
)
from precompute.faults import with_fault_point
from precompute.inputs.concepts import ConceptSet, concept_set_path, load_concept_set
from precompute.model import LoadedModel, find_mlp_sites, load_checkpoint
from precompute.progress import make_progress
from precompute.provenance import portable_config, portable_path, recorded_source
from precompute.steering.stage import SteeringPlan, plan_for_run, steer_checkpoint
from precompute.store import (
    MLP_LAYER_TABLES,
    CheckpointRows,
    StoreWriter,
    json_dumps,
    utc_now,
)
from precompute.store.read import plan_meta, read_meta, read_runs
from precompute.validate import check_finite, shape_from_config, shape_of, validate_run

PROVENANCE_PACKAGES = [
    "torch",
    "transformers",
    "tokenizers",
    "duckdb",
    "polars",
    "scikit-learn",
    "numpy",
    "babel",
]


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers, plus Python and crossling."""
    versions = {"crossling": __version__, "python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@dataclass
class RunSummary:
    """What a run did."""

    store: Path
    run_id: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_id_for(cfg: RunConfig, concept_set: ConceptSet) -> str:
    """A readable id that changes whenever the analysis would: model, settings and concept set."""
    name = Path(cfg.model.id.rstrip("/")).name or "model"
    return f"{name}-{cfg.fingerprint()[:8]}-{concept_set.sha256[:8]}"


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (Linux: VmHWM via /proc/self/clear_refs); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float | None:
    """Peak resident memory of this process since the last reset (VmHWM), in MiB; None where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class StageTimer:
    """Wall time, throughput and peak memory of each stage of one checkpoint.

    Peak memory is the device's: CUDA memory allocated by torch on a GPU; on the CPU, the process's peak
    resident memory during the stage (Linux; None elsewhere).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.rows: list[dict] = []

    @contextmanager
    def stage(self, name: str, tokens: int | None = None) -> Iterator[None]:
        host = self.device.type == "cpu" and _reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = _peak_rss_mib() if host else None
        self.rows.append(
            {
                "stage": name,
                "seconds": seconds,
                "tokens_per_s": tokens / seconds if tokens and seconds > 0 else None,
                "peak_mem_mb": peak,
            }
        )

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            self.rows,
            schema={"stage": pl.Utf8, "seconds": pl.Float64, "tokens_per_s": pl.Float64, "peak_mem_mb": pl.Float64},
        )


def spill_directory(cfg: RunConfig, nbytes: int, progress: Progress | None = None) -> str | None:
    """Where to memory-map the pooled activations, or None to keep them in RAM.

    They spill when they need more than ``[extract] ram_budget_gb`` (0: half the RAM available now), into
    ``[extract] spill_dir`` (default: the system's temporary folder).
    """
    budget = cfg.extract.ram_budget_gb * 2**30 if cfg.extract.ram_budget_gb > 0 else available_ram_bytes() / 2
    if nbytes <= budget:
        return None
    import tempfile

    where = str(cfg.resolve(cfg.extract.spill_dir)) if cfg.extract.spill_dir else tempfile.gettempdir()
    if progress is not None:
        progress.console.print(
            f"  pooled activations need {nbytes / 2**30:.1f} GB > RAM budget {budget / 2**30:.1f} GB: "
            f"memory-mapped in {escape(where)}",
            soft_wrap=True,
        )
    return where


@dataclass
class PreparedContexts:
    """The concept set's contexts tokenized for one checkpoint, and which of them the analyses use.

    keep: (n_kept,) indices into ``concept_set.sentences``; truncated: per (concept_id, lang), how many
    contexts have their concept span cut off by ``max_length`` (``n_truncated``) of how many (``n_contexts``);
    empty when none is.
    """

    contexts: TokenizedContexts
    keep: np.ndarray
    truncated: pl.DataFrame


def prepare_contexts(
    cfg: RunConfig, loaded: LoadedModel, concept_set: ConceptSet, console: Console | None = None
) -> PreparedContexts:
    """Tokenize every context and apply ``[extract] on_truncated_span`` (issue 12.3: never pool silently otherwise).

    A context whose concept span ``max_length`` cuts off (wholly or partly) would be pooled over other tokens
    than its concept's: by default (``"error"``) the run refuses in one line naming the affected (concept,
    language) pairs; with ``"drop"`` they are left out of every analysis and reported on ``console``. Span
    pooling also refuses contexts that have no span at all (it would fall back to their mean). Cheap (one
    fast-tokenizer pass), so `run` calls it before writing anything for a checkpoint.
    """
    sentences = concept_set.sentences
    spans = list(zip(sentences["span_start"].to_list(), sentences["span_end"].to_list()))
    max_length = max_positions(loaded.model, cfg.extract.max_length)
    contexts = tokenize_contexts(loaded.tokenizer, sentences["text"].to_list(), spans, max_length)
    if cfg.extract.pooling == "span":
        no_span = sentences["span_start"].is_null() | sentences["span_end"].is_null()
        if no_span.any():
            first = sentences.filter(no_span).row(0, named=True)
            raise ConfigError(
                f'[extract] pooling = "span" needs the concept\'s span in every context; {int(no_span.sum())} '
                f'have none (first: {first["concept_id"]}/{first["lang"]}); use pooling = "max" or add '
                "span_start/span_end to the concept set"
            )
    cut = np.asarray(contexts.span_cut, dtype=bool)
    frame = sentences.select("concept_id", "lang").with_columns(pl.Series("cut", cut))
    truncated = (
        frame.group_by("concept_id", "lang")
        .agg(pl.col("cut").sum().cast(pl.Int64).alias("n_truncated"), pl.len().cast(pl.Int64).alias("n_contexts"))
        .filter(pl.col("n_truncated") > 0)
        .sort("concept_id", "lang")
    )
    if truncated.height:
        pairs = [f"{c}/{lang} {k} of {m}" for c, lang, k, m in truncated.iter_rows()]
        named = ", ".join(pairs[:8]) + (f" and {len(pairs) - 8} more pairs" if len(pairs) > 8 else "")
        what = (
            f"[extract] max_length = {max_length} tokens cuts off the concept span of {int(cut.sum())} "
            f"context(s) ({named})"
        )
        if cfg.extract.on_truncated_span == "error":
            raise ConfigError(f'{what}; raise max_length or set [extract] on_truncated_span = "drop"')
        if console is not None:
            console.print(f'  {escape(what)}: dropped (on_truncated_span = "drop")', soft_wrap=True)
    keep = np.flatnonzero(~cut)
    if len(keep) < len(cut):
        contexts = contexts.subset(keep)
    return PreparedContexts(contexts=contexts, keep=keep, truncated=truncated)


def analyse_checkpoint(
    cfg: RunConfig,
    loaded: LoadedModel,
    concept_set: ConceptSet,
    *,
    progress: Progress | None = None,
    prepared: PreparedContexts | None = None,
    label: str = "",
) -> tuple[dict[str, pl.DataFrame], Pooled]:
    """Every stage for one loaded checkpoint; returns the store rows by table, and the pooled activations.

    ``prepared``: the result of `prepare_contexts` when the caller already has it. ``label`` names the
    checkpoint when its activations are refused (NaN or infinite, e.g. from NaN weights).
    """
    if prepared is None:
        prepared = prepare_contexts(cfg, loaded, concept_set, progress.console if progress is not None else None)
    sentences = concept_set.sentences
    if len(prepared.keep) < sentences.height:  # on_truncated_span = "drop" left some out
        sentences = sentences[prepared.keep]
    contexts = prepared.contexts
    timer = StageTimer(loaded.device)
    langs = sentences["lang"].to_numpy()
    concept_ids = sentences["concept_id"].to_numpy()

    def task(description: str, total: int) -> Callable[[int], None]:
        if progress is None:
            return lambda _=1: None
        tid = progress.add_task(description, total=total)
        return lambda n=1: progress.advance(tid, n)

    n_tokens = int(contexts.lengths.sum())
    storage = torch.float16 if loaded.dtype in (torch.float16, torch.bfloat16) else torch.float32
    # Only the configured pooling is kept (each costs contexts x units of host memory); token probes draw
    # their own token per context for every probe seed.
    poolings = (cfg.extract.pooling,)
    token_seeds = cfg.probes.seeds if "token" in cfg.probes.representations else []
    nbytes = pooled_nbytes(loaded, sentences.height, cfg.extract.layers, storage, poolings, len(token_seeds))
    spill_dir = spill_directory(cfg, nbytes, progress)
    with timer.stage("extract", tokens=n_tokens):
        pooled = extract(
            loaded,
            contexts,
            batch_tokens=cfg.extract.batch_tokens,
            layers=cfg.extract.layers,
            poolings=poolings,
            token_seeds=token_seeds,
            storage_dtype=storage,
            progress=task("  extract", sentences.height),
            spill_dir=spill_dir,
        )
    check_finite(
        {
            **{f"MLP activations ({name} pooling)": t for name, t in pooled.mlp.items()},
            "residual stream (mean)": pooled.resid_mean,
            "residual stream (token)": pooled.resid_token,
        },
        label or "checkpoint",
        pooled.layer_offsets,
        pooled.layer_ids,
    )
    representations = {
        "mean": pooled.resid_mean,
        "token": pooled.resid_token,
    }
    representations = {k: v for k, v in representations.items() if k in cfg.probes.representations}
    with timer.stage("probes"):
        n_fits = sum(t.shape[-3] for t in representations.values())  # layers
        probe_rows, probe_lang_rows = probe_tables(
            representations,
            langs,
            seeds=cfg.probes.seeds,
            test_size=cfg.probes.test_size,
            C=cfg.probes.C,
            max_iter=cfg.probes.max_iter,
            max_train=cfg.probes.max_train,
            control=cfg.probes.control,
            token_types={"token": pooled.token_ids},
            n_resamples=cfg.analysis.bootstrap,
            progress=task("  probes", n_fits),
        )
    activations = pooled.responses(cfg.extract.pooling)  # (contexts, units): AP and the steering value
    with timer.stage("experts"):
        experts = score_experts(
            activations,
            langs,
            concept_ids,
            pooled.layer_offsets,
            top_k=cfg.experts.top_k,
            chunk_neurons=cfg.experts.chunk_neurons,
            device=loaded.device,
            progress=with_fault_point(task("  experts", len(set(langs.tolist()))), "experts.lang"),
        )
        summary = neuron_summary(experts, pooled.layer_offsets)
    with timer.stage("alignment"):
        overlap = expert_overlap(experts, cfg.experts.overlap_top)
        shared = shared_experts(experts, pooled.layer_offsets, cfg.experts.min_langs)
    tables = {
        "probe_results": probe_rows,
        "probe_per_language": probe_lang_rows,
        "neuron_ap": experts.top,
        "neuron_summary": summary,
        "expert_overlap": overlap,
        "shared_experts": shared,
        "expert_sharing": expert_sharing(experts.top, shared),
    }
    with timer.stage("chance"):
        tables.update(chance_tables(cfg, activations, langs, concept_ids, experts, overlap, shared, loaded.device))
    with timer.stage("analysis"):
        tables.update(analysis_tables(cfg, pooled, langs, concept_ids, shared, loaded.device))
    if cfg.drilldown.enabled:
        with timer.stage("drilldown"):
            tables.update(
                drilldown_stage(
                    cfg, loaded, pooled, activations, sentences, contexts, experts.top, tables["language_neurons"]
                )
            )
    if pooled.layer_ids != list(range(len(pooled.layer_ids))):
        # Scoring numbers hooked layers by position; store the model's own block indices.
        mapping = dict(enumerate(pooled.layer_ids))
        for name in MLP_LAYER_TABLES:
            if name in tables and tables[name].height:
                tables[name] = tables[name].with_columns(pl.col("layer").replace_strict(mapping, return_dtype=pl.Int32))
    tables["stage_timings"] = timer.frame()
    return tables, pooled


# Tables whose `layer` indexes MLP blocks (the others index the residual stream, 0 = embeddings).


def chance_tables(
    cfg: RunConfig,
    activations: torch.Tensor,
    langs: np.ndarray,
    concept_ids: np.ndarray,
    experts: ExpertResult,
    overlap: pl.DataFrame,
    shared: pl.DataFrame,
    device: torch.device,
) -> dict[str, pl.DataFrame]:
    """Chance levels and intervals of one checkpoint (issue 14.5): ``chance_ap`` (random-scorer AP and the
    permutation threshold per lang x concept), ``overlap_chance`` (exact random-set Jaccard, Spearman and
    shared-expert chance for K of the (contexts, N) ``activations``' N units; the overlap thresholds also after
    the correction over the checkpoint's (concept, language pair) cells) and ``headline_ci`` (bootstrap
    over concepts of the overlap and sharing headlines)."""
    n_units = int(activations.shape[1])
    spec = cfg.experts
    pairs = overlap.filter(pl.col("lang_a") != pl.col("lang_b"))
    chance = overlap_chance(
        spec.overlap_top,
        n_units,
        len(experts.full_ap),
        spec.min_langs,
        spec.permutation_quantile,
        expert_k=spec.top_k,
        correction=spec.correction,
        intersections=np.rint(pairs["over_k"].to_numpy() * min(spec.overlap_top, n_units)).astype(np.int64),
    )
    return {
        "chance_ap": chance_ap_table(
            activations,
            langs,
            concept_ids,
            experts.top,
            n_shuffles=spec.permutations,
            quantile=spec.permutation_quantile,
            correction=spec.correction,
            chunk_neurons=spec.chunk_neurons,
            device=device,
        ),
        "overlap_chance": chance,
        "headline_ci": headline_intervals(
            overlap, shared, chance, experts.concept_ids, n_resamples=cfg.analysis.bootstrap
        ),
    }


def drilldown_stage(
    cfg: RunConfig,
    loaded: LoadedModel,
    pooled: Pooled,
    activations: torch.Tensor,
    sentences: pl.DataFrame,
    contexts: TokenizedContexts,
    top: pl.DataFrame,
    language_neurons: pl.DataFrame,
) -> dict[str, pl.DataFrame]:
    """The Neuron page's drill-downs (issue 14; precompute.analysis.drilldown) for the selected units.

    ``activations``: (contexts, neurons) responses under ``[extract] pooling``; ``sentences``: the contexts'
    rows (kept ones only), aligned with it; ``top`` and ``language_neurons``: this checkpoint's expert and LAPE
    rows with layer positions. The peak token of each top context comes from a second forward pass over only
    the union of the top contexts (`precompute.extract.unit_peaks`); its character offsets from re-tokenizing
    those texts exactly as the extraction did.
    """
    from precompute.analysis import drilldown as dd
    from precompute.model.unembed import direct_effects

    spec = cfg.drilldown
    offsets = pooled.layer_offsets
    units = dd.select_units(top, language_neurons, offsets, spec.max_units)
    langs = sentences["lang"].to_numpy()
    best = dd.top_contexts(activations, langs, units, spec.top_contexts, loaded.device)
    rows = best["row"].to_numpy()
    positions, peak_act = unit_peaks(
        loaded,
        contexts,
        rows,
        best["col"].to_numpy(),
        batch_tokens=cfg.extract.batch_tokens,
        layers=cfg.extract.layers,
    )
    union = np.unique(rows)
    token_offs = token_offsets(
        loaded.tokenizer, sentences["text"].gather(union).to_list(), max_positions(loaded.model, cfg.extract.max_length)
    )
    start, end = dd.peak_offsets(token_offs, np.searchsorted(union, rows), positions)
    contexts_rows = dd.top_context_rows(best, sentences["sentence_id"].to_numpy(), offsets, start, end, peak_act)
    chosen = pl.DataFrame({"col": units})
    experts = top.with_columns(col=pl.Series(dd.global_columns(top, offsets))).join(chosen, on="col", how="semi")
    hist = dd.response_histograms(
        activations, langs, sentences["concept_id"].to_numpy(), experts, offsets, spec.hist_bins, loaded.device
    )
    sites = [s for s in find_mlp_sites(loaded.model) if not cfg.extract.layers or s.layer in set(cfg.extract.layers)]
    layer_pos = np.searchsorted(offsets, units, side="right") - 1
    unit_in = units - np.asarray(offsets)[layer_pos]
    tokenizer = loaded.tokenizer
    out_rows = []
    for i, site in enumerate(sites):  # one matmul per layer, over all its selected units
        mine = unit_in[layer_pos == i]
        if len(mine):
            effects = direct_effects(loaded.model, site, torch.from_numpy(mine))
            out_rows.append(
                dd.output_token_rows(
                    effects,
                    i,
                    mine,
                    spec.top_tokens,
                    len(tokenizer),
                    lambda ids: tokenizer.batch_decode([[t] for t in ids]),
                )
            )
    tokens = pl.concat(out_rows) if out_rows else None
    return {
        "unit_top_contexts": contexts_rows,
        "unit_response_hist": hist,
        **({"unit_output_tokens": tokens} if tokens is not None else {}),
    }


def analysis_tables(
    cfg: RunConfig,
    pooled: Pooled,
    langs: np.ndarray,
    concept_ids: np.ndarray,
    shared: pl.DataFrame,
    device: torch.device,
) -> dict[str, pl.DataFrame]:
    """Compression (representation convergence) and language-specific neurons (LAPE)."""
    similarity, compression = convergence_tables(pooled.resid_mean, langs.tolist(), concept_ids.tolist(), device=device)
    language_neurons, counts = language_neuron_tables(
        pooled.mlp_active,
        langs.tolist(),
        pooled.layer_offsets,
        selection=cfg.analysis.lape_selection,
        quantile=cfg.analysis.lape_quantile,
        filter_rate=cfg.analysis.lape_filter_rate,
        bar_ratio=cfg.analysis.lape_bar_ratio,
        min_prob=cfg.analysis.lape_min_prob,
        max_lape=cfg.analysis.lape_max,
        shared_experts=shared,
        n_tokens=torch.from_numpy(pooled.token_counts),  # real tokens per context: Tang's token-weighted p
        device=device,
    )
    return {
        "similarity": similarity,
        "compression": compression,
        "language_neurons": language_neurons,
        "neuron_counts": counts,
    }


def steering_stage(
    plan: SteeringPlan, loaded: LoadedModel, tables: dict[str, pl.DataFrame], checkpoint: str, progress: Progress
) -> None:
    """Steer one checkpoint with the experts just scored (``tables["neuron_ap"]``, model layer ids).

    Adds table ``steering`` and a ``steering`` row of ``stage_timings`` to ``tables``, so the rows are published
    in the checkpoint's own transaction.
    """
    timer = StageTimer(loaded.device)
    tid = progress.add_task("  steering", total=plan.n_generations)
    with timer.stage("steering"):
        tables["steering"] = steer_checkpoint(
            loaded,
            plan,
            tables["neuron_ap"],
            checkpoint=checkpoint,
            progress=lambda n=1: progress.advance(tid, n),
            note=lambda message: progress.console.print(f"  [yellow]note:[/] {escape(message)}", soft_wrap=True),
        )
    tables["stage_timings"] = pl.concat([tables["stage_timings"], timer.frame()], how="vertical")


def checkpoint_source(cfg: RunConfig, spec: CheckpointSpec) -> tuple[str, str | None]:
    """Where a checkpoint loads from on this machine: (local dir, None) or (hub id, revision). The store
    records the portable name instead (`precompute.provenance.recorded_source`)."""
    if spec.path is not None:
        return str(cfg.resolve(spec.path)), None
    return cfg.model.id, spec.revision


def run(
    cfg: RunConfig,
    store: Path,
    *,
    force: bool = False,
    console: Console | None = None,
    checkpoints: list[CheckpointSpec] | None = None,
    planned: list[str] | None = None,
    shard: str | None = None,
) -> RunSummary:
    """Run every stage for every checkpoint not yet in the store, publishing one checkpoint at a time.

    ``planned`` names every checkpoint of the run (default: ``checkpoints``'); ``shard`` ("I/N") says that
    ``checkpoints`` are one shard's. Both are recorded in the store's meta when the run starts, so a store whose
    run stopped says what it lacks (`precompute.store.read.RunProgress`).
    """
    console = console or Console(stderr=True)
    started = time.perf_counter()
    hf_logging.disable_progress_bar()  # our own progress display covers loading
    concept_set = load_concept_set(concept_set_path(cfg.data.concepts, cfg.base_dir)).subset(
        cfg.data.languages or None, cfg.data.concept_ids or None, cfg.data.max_contexts
    )
    run_id = run_id_for(cfg, concept_set)
    if checkpoints is None:  # every checkpoint of the config ([[checkpoints]] and [checkpoint_set])
        from precompute.checkpoints import resolve_checkpoints

        checkpoints = resolve_checkpoints(cfg)
    # Every setting checked against the concept set and the model's shape (config.json, no weights) before
    # the store is opened: a refused run leaves no store behind, and the corrected config can use it.
    first = checkpoints[0] if checkpoints else None
    validate_run(cfg, concept_set, shape_from_config(*checkpoint_source(cfg, first), _label(first)) if first else None)
    # Steering, when [steering] enabled: its concepts and languages are checked before anything is written.
    steering = plan_for_run(cfg.steering, concept_set, cfg.data.languages, cfg.where) if cfg.steering.enabled else None
    todo_specs = checkpoints
    plan = plan_meta(
        list(planned) if planned is not None else [c.name for c in checkpoints],
        shard,
        [c.name for c in checkpoints] if shard else None,
    )
    summary = RunSummary(store=store, run_id=run_id)
    with StoreWriter(store) as writer:
        finished = set() if force else set(_unchanged_checkpoints(cfg, writer, run_id, todo_specs))
        todo = [c for c in todo_specs if c.name not in finished]
        summary.skipped = [c.name for c in todo_specs if c.name in finished]
        if not todo:
            if not _finished(writer, run_id):  # a run stopped after its last checkpoint: finished now
                _finish_run(writer, run_id, plan)
            console.print(
                f"[green]{escape(str(store))}: all {len(todo_specs)} checkpoints already done; nothing to do",
                soft_wrap=True,
            )
            summary.seconds = time.perf_counter() - started
            return summary
        run_started = utc_now()
        with make_progress(console) as progress:
            overall = progress.add_task(f"checkpoints of {run_id}", total=len(todo))
            for spec in todo:
                source, revision = checkpoint_source(cfg, spec)
                progress.console.print(
                    f"[bold]checkpoint {escape(spec.name)}[/] "
                    f"({escape(source)}{'@' + escape(revision) if revision else ''})"
                )
                load_start = time.perf_counter()
                loaded = load_checkpoint(source, revision, device=cfg.model.device, dtype=cfg.model.dtype)
                load_seconds = time.perf_counter() - load_start
                validate_run(cfg, concept_set, shape_of(loaded.model, _label(spec)))  # the exact shape, before writing
                # Truncated concept spans refuse the run (or are dropped) before anything is written.
                prepared = prepare_contexts(cfg, loaded, concept_set, progress.console)
                writer.ensure_run(
                    run=run_record(cfg, run_id, concept_set, loaded, run_started),
                    languages=concept_set.languages,
                    concepts=concept_set.concepts,
                    sentences=concept_set.sentences,
                    layers=layer_frame(loaded, cfg.extract.layers),
                    meta={
                        "crossling_version": __version__,
                        "created_at": str(run_started),
                        "model_card": cfg.model.card,
                        # Where the concept set comes from (its files' names and hashes, licence, builder):
                        # `precompute info` shows it, so a shared store says what its sentences are.
                        "concept_set_provenance": json_dumps(concept_set.provenance),
                        **{k: v for k, v in plan.items() if v is not None},
                    },
                )
                tables, _ = analyse_checkpoint(
                    cfg, loaded, concept_set, progress=progress, label=_label(spec), prepared=prepared
                )
                if steering is not None:
                    steering_stage(steering, loaded, tables, spec.name, progress)
                tables["stage_timings"] = pl.concat(
                    [
                        pl.DataFrame(
                            [{"stage": "load", "seconds": load_seconds, "tokens_per_s": None, "peak_mem_mb": None}],
                            schema=tables["stage_timings"].schema,
                        ),
                        tables["stage_timings"],
                    ]
                )
                writer.write_checkpoint(
                    run_id,
                    CheckpointRows(
                        checkpoint=spec.name,
                        step=spec.step,
                        revision=revision,
                        source=recorded_source(cfg, spec),
                        tokens_seen=spec.tokens_seen,
                        tables=tables,
                        source_fingerprint=source_fingerprint(source, revision),
                    ),
                )
                summary.done.append(spec.name)
                del loaded
                _drop_finished_tasks(progress, keep=overall)
                progress.advance(overall)
        _finish_run(writer, run_id, plan)  # the plan as this run saw it, and finished_at
    summary.seconds = time.perf_counter() - started
    return summary


def _finished(writer: StoreWriter, run_id: str) -> bool:
    """Whether the store's run is stamped finished (a store without the run counts as finished: nothing to do)."""
    if not writer.target.exists():
        return True
    runs = [r for r in read_runs(writer.path) if r["run_id"] == run_id]
    return not runs or runs[0].get("finished_at") is not None


def _finish_run(writer: StoreWriter, run_id: str, plan: dict[str, str | None]) -> None:
    """Stamp the run finished and record its plan in meta, in one transaction (the one that ends the run).

    A new store gets its plan with its first write (`StoreWriter.ensure_run`'s meta), so a run stopped before
    its end says what it lacks; an existing store's plan changes only here, when the run ends (a run that is
    stopped or refused leaves the published store file as it was).
    """
    meta = read_meta(writer.path) if writer.target.exists() else {}
    with writer.transaction() as con:
        for key, value in plan.items():
            if value is None:
                if key in meta:
                    con.execute("DELETE FROM meta WHERE key = ?", [key])
            elif meta.get(key) != value:
                con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])
        con.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", [utc_now(), run_id])


def _label(spec: CheckpointSpec) -> str:
    """How messages name a checkpoint."""
    return f"checkpoint {spec.name!r}"


def _unchanged_checkpoints(cfg: RunConfig, writer: StoreWriter, run_id: str, specs: list[CheckpointSpec]) -> list[str]:
    """The checkpoints of ``specs`` already in the store, computed from the weights they have now.

    A checkpoint whose weights changed under its name (another fingerprint than the one recorded) stops the
    run with one line: its stored rows describe weights that are no longer there (``--force`` recomputes).
    """
    recorded = writer.checkpoint_fingerprints(run_id)
    done = []
    for spec in specs:
        if spec.name not in recorded:
            continue
        current = source_fingerprint(*checkpoint_source(cfg, spec))
        if fingerprints_differ(recorded[spec.name], current):
            raise changed_error(spec.name, writer.path, recorded[spec.name], current)
        done.append(spec.name)
    return done


def _drop_finished_tasks(progress: Progress, keep) -> None:
    for task in list(progress.tasks):
        if task.id != keep:
            progress.remove_task(task.id)


def layer_frame(loaded: LoadedModel, layers: list[int]) -> pl.DataFrame:
    """The MLP layout of the model: one row per hooked layer."""
    sites = [s for s in find_mlp_sites(loaded.model) if not layers or s.layer in set(layers)]
    return pl.DataFrame(
        {
            "layer": [s.layer for s in sites],
            "n_neurons": [s.n_neurons for s in sites],
            "hidden_size": [loaded.hidden_size] * len(sites),
            "module_path": [s.path for s in sites],
        },
        schema={"layer": pl.Int32, "n_neurons": pl.Int32, "hidden_size": pl.Int32, "module_path": pl.Utf8},
    )


def run_record(cfg: RunConfig, run_id: str, concept_set: ConceptSet, loaded: LoadedModel, started) -> dict:
    """The runs-table row: model, full config, concept-set hash, package versions, device."""
    return {
        "run_id": run_id,
        "model_id": portable_path(cfg.model.id, cfg.base_dir),
        "model_card": cfg.model.card,
        "config_json": json_dumps(portable_config(cfg)),  # no path of this machine: the store travels
        "concept_set_sha256": concept_set.sha256,
        "packages_json": json_dumps(package_versions()),
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).replace("torch.", ""),
        "started_at": started,
        "finished_at": None,
    }
