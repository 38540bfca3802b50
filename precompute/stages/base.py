"""What a stage is, what it is given, and how a checkpoint's stages run.

A stage is one analysis of one loaded checkpoint: a name, what it needs (artefacts such as the pooled activations,
or tables that an earlier stage made or that the store already holds) and a ``run(context)`` that returns its rows
by table (``{table: frame}``, frames without run_id and checkpoint; the writer adds them). Which tables a stage may
write is declared once, in the store's schema (``precompute.store.schema``: each table names the stage that writes
it); :func:`run_stages` refuses a stage that returns another table, so a new analysis cannot write where its
declaration does not say.

The pipeline (``precompute.pipeline``) owns the order of the stages, the checkpoint loop, the timer and the
writer; a stage never loads a model, opens the store or prints outside its context's ``note``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from precompute.config import RunConfig
from precompute.profiling import StageTimer


class StageError(RuntimeError):
    """A stage was run without what it needs, or returned a table that is not its own."""


@dataclass
class CheckpointContext:
    """Everything the stages of one checkpoint read, and what they leave for the stages after them.

    ``sentences``: the concept set's contexts the analyses use (rows of table ``sentences``, in extraction order),
    aligned with ``prepared.contexts``; ``artefacts``: what a stage hands to later ones without storing it
    (``pooled``: the pooled activations, ``responses``: (contexts, units) unit responses under ``[extract]
    pooling``, ``experts``: the full AP matrix of the experts stage); ``tables``: rows made by earlier stages of
    this checkpoint; ``stored``: this checkpoint's rows as the store already holds them (``precompute steer``
    runs only the steering stage and reads the experts from there).
    """

    cfg: RunConfig
    checkpoint: str
    loaded: Any = None  # precompute.model.LoadedModel
    layout: Any = None  # precompute.model.ModelLayout, built once per loaded checkpoint
    concept_set: Any = None  # precompute.inputs.concepts.ConceptSet
    prepared: Any = None  # precompute.stages.contexts.PreparedContexts
    steering: Any = None  # precompute.steering.stage.SteeringPlan, when the run steers
    label: str = ""
    artefacts: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    stored: dict[str, pl.DataFrame] = field(default_factory=dict)
    task: Callable[[str, int], Callable[..., None]] = lambda _description, _total: lambda *_: None
    note: Callable[[str], None] = lambda _message: None

    @property
    def device(self) -> torch.device:
        return self.loaded.device if self.loaded is not None else torch.device("cpu")

    @property
    def sentences(self) -> pl.DataFrame:
        """The contexts the analyses use: the concept set's, less those ``[extract] on_truncated_span`` dropped."""
        sentences = self.concept_set.sentences
        keep = self.prepared.keep if self.prepared is not None else None
        if keep is not None and len(keep) < sentences.height:
            sentences = sentences[keep]
        return sentences

    @property
    def langs(self) -> np.ndarray:
        """(contexts,) language code of each context."""
        return self.sentences["lang"].to_numpy()

    @property
    def concept_ids(self) -> np.ndarray:
        """(contexts,) concept id of each context."""
        return self.sentences["concept_id"].to_numpy()

    def need(self, name: str) -> Any:
        """An artefact or a table by name: made by an earlier stage, or (tables) stored already."""
        for where in (self.artefacts, self.tables, self.stored):
            if name in where:
                return where[name]
        raise StageError(f"{self.label or self.checkpoint}: nothing has made {name!r} before the stage that needs it")

    def has(self, name: str) -> bool:
        return name in self.artefacts or name in self.tables or name in self.stored


@dataclass(frozen=True)
class Stage:
    """One analysis of a loaded checkpoint.

    ``needs``: the artefacts and tables it reads (checked before it runs); ``run(context) -> {table: frame}``;
    ``enabled(cfg)``: whether the run's settings ask for it (e.g. ``[drilldown] enabled``); ``tokens(context)``:
    how many tokens it processes, for the throughput column of ``stage_timings`` (None: not a token stage).
    """

    name: str
    needs: tuple[str, ...]
    run: Callable[[CheckpointContext], dict[str, pl.DataFrame]]
    enabled: Callable[[RunConfig], bool] = lambda _cfg: True
    tokens: Callable[[CheckpointContext], int] | None = None


def run_stages(stages: Sequence[Stage], ctx: CheckpointContext, timer: StageTimer) -> dict[str, pl.DataFrame]:
    """Run ``stages`` in order on one checkpoint, each timed; returns every table they made.

    Each stage's needs are checked before it runs, and each table it returns must be one the schema says that
    stage writes (``precompute.store.schema``).
    """
    from precompute.store.schema import stage_of

    for stage in stages:
        missing = [name for name in stage.needs if not ctx.has(name)]
        if missing:
            raise StageError(
                f"{ctx.label or ctx.checkpoint}: stage {stage.name!r} needs {', '.join(map(repr, missing))}, which "
                "no earlier stage made and the store does not hold"
            )
        with timer.stage(stage.name, tokens=stage.tokens(ctx) if stage.tokens is not None else None):
            made = stage.run(ctx)
        foreign = sorted(t for t in made if stage_of(t) != stage.name)
        if foreign:
            raise StageError(
                f"stage {stage.name!r} returned table(s) {', '.join(foreign)}, which the store schema assigns to "
                f"{', '.join(sorted({str(stage_of(t)) for t in foreign}))}"
            )
        ctx.tables.update(made)
    return ctx.tables
