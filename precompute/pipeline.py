"""The order of the stages, the checkpoint loop, the timer and the writer; nothing else.

For each checkpoint the loop loads the model, builds its layout once (``precompute.model.ModelLayout``), runs the
stages in :data:`STAGES` order (each one module of ``precompute.stages``) and publishes every table of the
checkpoint in one part file (``precompute.store.writer``). Checkpoints already in the store are skipped
(``force=True`` recomputes them), so an interrupted run resumes where it stopped. ``precompute steer`` is the same
loop with only the steering stage, on a finished store: it reads each checkpoint's rows back, adds its own and
publishes the checkpoint again as a part, so its cost does not grow with the store.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from transformers.utils import logging as hf_logging

from precompute import __version__
from precompute.checkpoints.fingerprint import changed_error, fingerprints_differ, source_fingerprint
from precompute.config import CheckpointSpec, RunConfig, SteeringSpec
from precompute.extract import Pooled
from precompute.inputs.concepts import ConceptSet, concept_set_path, load_concept_set
from precompute.model import LoadedModel, ModelLayout, load_checkpoint
from precompute.profiling import StageTimer
from precompute.progress import make_progress
from precompute.provenance import recorded_source, run_record
from precompute.stages import steering
from precompute.stages.base import CheckpointContext, Stage, run_stages
from precompute.stages.contexts import PreparedContexts, prepare_contexts
from precompute.steering.stage import STEERING_SCHEMA, SteeringPlan, plan_for_run, summarise
from precompute.store import CheckpointRows, StoreWriter, json_dumps, schema, utc_now
from precompute.store.read import plan_meta, read_meta, read_runs
from precompute.validate import shape_from_config, shape_of, validate_run

#: The analysis stages, in the order a checkpoint runs them: the store schema's stage order (where each table
#: also names its stage), less the writer's own ``run`` and ``timings``. Stage ``NAME`` is the ``STAGE`` of module
#: ``precompute.stages.NAME``, so a new analysis is its module and its tables' declaration (docs/extending.md).
STAGE_NAMES: tuple[str, ...] = tuple(name for name in schema.STAGES if name not in ("run", "timings"))
STAGES: tuple[Stage, ...] = tuple(importlib.import_module(f"precompute.stages.{name}").STAGE for name in STAGE_NAMES)


def stages_for(cfg: RunConfig, names: Sequence[str] | None = None) -> list[Stage]:
    """The stages a run of ``cfg`` runs (``names``: only these), in :data:`STAGES` order."""
    return [s for s in STAGES if s.enabled(cfg) and (names is None or s.name in names)]


@dataclass
class RunSummary:
    """What a run did."""

    store: Path
    run_id: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class CheckpointJob:
    """One checkpoint to load and publish: where it loads from here, and its ``checkpoints`` row."""

    name: str
    location: str  # a local folder or a hub id, as this machine loads it
    revision: str | None
    step: int | None
    source: str  # as the store records it (portable)
    tokens_seen: int | None
    fingerprint: Callable[[], str | None]  # of the weights, computed when the checkpoint is published

    @property
    def label(self) -> str:
        return f"checkpoint {self.name!r}"


def run_id_for(cfg: RunConfig, concept_set: ConceptSet) -> str:
    """A readable id that changes whenever the analysis would: model, settings and concept set."""
    name = Path(cfg.model.id.rstrip("/")).name or "model"
    return f"{name}-{cfg.fingerprint()[:8]}-{concept_set.sha256[:8]}"


def checkpoint_source(cfg: RunConfig, spec: CheckpointSpec) -> tuple[str, str | None]:
    """Where a checkpoint loads from on this machine: (local dir, None) or (hub id, revision). The store
    records the portable name instead (`precompute.provenance.recorded_source`)."""
    if spec.path is not None:
        return str(cfg.resolve(spec.path)), None
    return cfg.model.id, spec.revision


def _job(cfg: RunConfig, spec: CheckpointSpec) -> CheckpointJob:
    location, revision = checkpoint_source(cfg, spec)
    return CheckpointJob(
        name=spec.name,
        location=location,
        revision=revision,
        step=spec.step,
        source=recorded_source(cfg, spec),
        tokens_seen=spec.tokens_seen,
        fingerprint=lambda: source_fingerprint(location, revision),
    )


def _progress_hooks(progress: Progress | None) -> dict[str, Callable]:
    """A context's ``task`` (a progress bar per stage) and ``note`` (a line above the bars)."""
    if progress is None:
        return {}

    def task(description: str, total: int) -> Callable[..., None]:
        tid = progress.add_task(description, total=total)
        return lambda n=1: progress.advance(tid, n)

    def note(message: str) -> None:
        progress.console.print(f"  [yellow]note:[/] {escape(message)}", soft_wrap=True, highlight=False)

    return {"task": task, "note": note}


def publish_checkpoints(
    writer: StoreWriter,
    run_id: str,
    jobs: Sequence[CheckpointJob],
    stages: Sequence[Stage],
    begin: Callable[[CheckpointJob, LoadedModel, dict[str, Callable]], CheckpointContext],
    *,
    console: Console,
    title: str,
    device: str,
    dtype: str,
    load: Callable[..., Any] = load_checkpoint,
    after: Callable[[CheckpointContext], None] | None = None,
) -> None:
    """The checkpoint loop: load, ``begin`` (checks, layout, context), the stages, one part per checkpoint.

    ``begin`` checks what it must before anything of the checkpoint is written and returns its context, with
    the checkpoint's layout (``ModelLayout.of``, built once, after the checks that name the settings); the
    context's ``stored`` tables (what the store holds of the checkpoint) are published again with the stages'
    tables over them. ``after`` is given each context once its checkpoint is published (before its model and
    artefacts are let go).
    """
    with make_progress(console) as progress:
        overall = progress.add_task(title, total=len(jobs))
        for job in jobs:
            revision = f"@{escape(job.revision)}" if job.revision else ""
            progress.console.print(f"[bold]checkpoint {escape(job.name)}[/] ({escape(job.location)}{revision})")
            load_start = time.perf_counter()
            loaded = load(job.location, job.revision, device=device, dtype=dtype)
            load_seconds = time.perf_counter() - load_start
            ctx = begin(job, loaded, _progress_hooks(progress))
            timer = StageTimer(loaded.device)
            timer.record("load", load_seconds)
            tables = run_stages(stages, ctx, timer)
            timings = timer.frame()
            stored_timings = ctx.stored.get("stage_timings")
            if stored_timings is not None:  # the stages not rerun keep their rows, the run's load row among them
                rerun = timings.filter(pl.col("stage") != "load")
                kept = stored_timings.filter(~pl.col("stage").is_in(rerun["stage"].to_list())).select(timings.columns)
                timings = pl.concat([kept, rerun], how="vertical")
            writer.write_checkpoint(
                run_id,
                CheckpointRows(
                    checkpoint=job.name,
                    step=job.step,
                    revision=job.revision,
                    source=job.source,
                    tokens_seen=job.tokens_seen,
                    tables={**ctx.stored, **tables, "stage_timings": timings},
                    source_fingerprint=job.fingerprint(),
                ),
            )
            if after is not None:
                after(ctx)
            del loaded, ctx
            _drop_finished_tasks(progress, keep=overall)
            progress.advance(overall)


def analyse_checkpoint(
    cfg: RunConfig,
    loaded: LoadedModel,
    concept_set: ConceptSet,
    *,
    progress: Progress | None = None,
    prepared: PreparedContexts | None = None,
    label: str = "",
    names: Sequence[str] | None = None,
) -> tuple[dict[str, pl.DataFrame], Pooled]:
    """The run's stages (less steering) on one loaded checkpoint, without a store: its tables, and the pooled
    activations. For notebooks and tests; ``names`` picks stages (their needs must be among them)."""
    layout = ModelLayout.of(loaded.model, cfg.extract.layers)
    if prepared is None:
        prepared = prepare_contexts(cfg, loaded, concept_set, _progress_hooks(progress).get("note"))
    ctx = CheckpointContext(
        cfg=cfg,
        checkpoint=label or "checkpoint",
        loaded=loaded,
        layout=layout,
        concept_set=concept_set,
        prepared=prepared,
        label=label,
        **_progress_hooks(progress),
    )
    timer = StageTimer(loaded.device)
    stages = [s for s in stages_for(cfg, names) if s.name != "steering"]
    tables = run_stages(stages, ctx, timer)
    return {**tables, "stage_timings": timer.frame()}, ctx.artefacts.get("pooled")


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
    plan_steer = (
        plan_for_run(cfg.steering, concept_set, cfg.data.languages, cfg.where) if cfg.steering.enabled else None
    )
    plan = plan_meta(
        list(planned) if planned is not None else [c.name for c in checkpoints],
        shard,
        [c.name for c in checkpoints] if shard else None,
    )
    summary = RunSummary(store=store, run_id=run_id)
    with StoreWriter(store) as writer:
        finished = set() if force else set(_unchanged_checkpoints(cfg, writer, run_id, checkpoints))
        todo = [c for c in checkpoints if c.name not in finished]
        summary.skipped = [c.name for c in checkpoints if c.name in finished]
        if not todo:
            if not _finished(writer, run_id):  # a run stopped after its last checkpoint: finished now
                _finish_run(writer, run_id, plan)
            console.print(
                f"[green]{escape(str(store))}: all {len(checkpoints)} checkpoints already done; nothing to do",
                soft_wrap=True,
            )
            summary.seconds = time.perf_counter() - started
            return summary
        run_started = utc_now()

        def begin(job: CheckpointJob, loaded: LoadedModel, hooks: dict) -> CheckpointContext:
            validate_run(cfg, concept_set, shape_of(loaded.model, job.label))  # the exact shape, before writing
            layout = ModelLayout.of(loaded.model, cfg.extract.layers)
            # Truncated concept spans refuse the run (or are dropped) before anything is written.
            note = hooks.get("note")
            prepared = prepare_contexts(cfg, loaded, concept_set, note)
            writer.ensure_run(
                run=run_record(cfg, run_id, concept_set, loaded, run_started),
                languages=concept_set.languages,
                concepts=concept_set.concepts,
                sentences=concept_set.sentences,
                layers=layout.layer_frame(),
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
            return CheckpointContext(
                cfg=cfg,
                checkpoint=job.name,
                loaded=loaded,
                layout=layout,
                concept_set=concept_set,
                prepared=prepared,
                steering=plan_steer,
                label=job.label,
                **hooks,
            )

        publish_checkpoints(
            writer,
            run_id,
            [_job(cfg, spec) for spec in todo],
            stages_for(cfg),
            begin,
            console=console,
            title=f"checkpoints of {run_id}",
            device=cfg.model.device,
            dtype=cfg.model.dtype,
        )
        summary.done = [c.name for c in todo]
        _finish_run(writer, run_id, plan)  # the plan as this run saw it, and finished_at
    summary.seconds = time.perf_counter() - started
    return summary


def steer(
    store_path: str | Path,
    *,
    checkpoints: Sequence[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    console: Any = None,
    load: Callable[..., Any] | None = None,
    options: Mapping[str, str] | None = None,
    config_dir: str | Path | None = None,
    **overrides: Any,
) -> pl.DataFrame:
    """``precompute steer``: the steering stage alone on a finished store's checkpoints; returns ``summarise``.

    ``overrides``: ``SteeringSpec`` fields (concepts, source_langs, n_neurons, seeds, prompts, max_new_tokens,
    value_mode, top_k, top_p, temperature); None or absent keeps the run's ``[steering]`` value. Loads each
    checkpoint with ``precompute.model.load.load_checkpoint`` (``load`` overrides it, for tests) on ``device``
    (default: the run's ``[model] device``). Each checkpoint is published as a part file, as a run publishes it
    (its stored rows with the new steering rows over them), and the parts are packed once when the writer ends.
    The store records local checkpoints relative to the run config's folder (`precompute.provenance`):
    ``config_dir`` is that folder (default: the current folder).
    """
    from precompute.provenance import checkpoint_location
    from precompute.steering.stage import default_concepts, plan_steering, steering_config, steering_location
    from precompute.store import StoreError
    from precompute.store.read import steering_inputs, steering_sentences
    from precompute.validate import RunSettingError, steering_problems

    store_path = Path(store_path)
    console = console or Console(stderr=True)
    info = steering_inputs(store_path)
    unknown = sorted(set(overrides) - ({f.name for f in dataclasses.fields(SteeringSpec)} - {"enabled"}))
    if unknown:
        raise TypeError(f"steer: unknown setting {unknown[0]!r}")
    cfg = steering_config(info, overrides, where=str(store_path), options=options)
    spec = cfg.steering
    plan: SteeringPlan = plan_steering(
        spec,
        known_concepts=info["concepts"],
        langs=info["langs"],
        sentences=steering_sentences(store_path, list(spec.concepts or info["concepts"])),
        default=default_concepts(info),
        where=str(store_path),
    )
    ck = info["checkpoints"]
    if ck.height == 0:
        raise StoreError(f"{store_path}: the run has no finished checkpoint yet")
    if checkpoints:
        from precompute.steering.intervene import SteeringError

        missing = [c for c in checkpoints if c not in ck["checkpoint"].to_list()]
        if missing:
            raise SteeringError(
                f"unknown checkpoint {missing[0]!r} in {store_path} (have: {', '.join(ck['checkpoint'].to_list())})"
            )
        ck = ck.filter(pl.col("checkpoint").is_in(list(checkpoints)))
    # Where each checkpoint loads from, and whether the model can honour the settings: all before the first load.
    jobs = []
    for checkpoint, step, revision, source in ck.select("checkpoint", "step", "revision", "source").iter_rows():
        location = steering_location(store_path, checkpoint, source, revision, config_dir, checkpoint_location)
        jobs.append(
            CheckpointJob(
                name=checkpoint,
                location=location,
                revision=revision,
                step=step,
                source=source,
                tokens_seen=None,
                fingerprint=lambda: None,
            )
        )
    shape = shape_from_config(jobs[0].location, jobs[0].revision, jobs[0].label)
    if shape is not None:
        for problem in steering_problems(cfg, shape):
            raise RunSettingError(problem)
    run_id = info["run_id"]

    with StoreWriter(store_path) as writer:

        def begin(job: CheckpointJob, loaded: Any, hooks: dict) -> CheckpointContext:
            tokenizer = getattr(loaded, "tokenizer", None)
            for problem in steering_problems(cfg, shape_of(loaded.model, job.label, tokenizer)):
                raise RunSettingError(problem)  # before this checkpoint generates anything
            layout = ModelLayout.of(loaded.model)  # every block: the stored experts name their own
            row, stored = writer.stored_checkpoint(run_id, job.name)
            job.tokens_seen = row["tokens_seen"]
            recorded = row["source_fingerprint"]
            job.fingerprint = lambda: recorded  # the rows stay those of the weights they were computed from
            return CheckpointContext(
                cfg=cfg,
                checkpoint=job.name,
                loaded=loaded,
                layout=layout,
                steering=plan,
                label=job.label,
                stored=stored,
                **hooks,
            )

        frames: list[pl.DataFrame] = []  # what this steer generated, for its summary
        publish_checkpoints(
            writer,
            run_id,
            jobs,
            [steering.STAGE],
            begin,
            console=console,
            title=f"steer {store_path.name}",
            device=device or info["settings"].model_device,
            dtype=dtype or info["settings"].model_dtype,
            load=load or load_checkpoint,
            after=lambda ctx: frames.append(ctx.artefacts["steering_new"]),
        )
    return summarise(pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=STEERING_SCHEMA))


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
