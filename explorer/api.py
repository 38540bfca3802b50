"""Reading a store from a notebook: the questions the explorer's pages ask, as polars frames.

    from explorer.api import open_store

    with open_store("data/demo.duckdb") as store:
        store.checkpoint_names                      # training order
        store.experts("monday")                     # top-K units per language, at every checkpoint
        store.unit_history(layer=3, unit=117)       # where one unit is an expert, over training
        store.overlap_over_training()               # mean cross-lingual overlap per checkpoint
        store.probe_grid()                          # LID accuracy per (checkpoint, layer)

The store is opened read-only as the explorer and ``precompute info`` open it
(:class:`explorer.queries.StoreConnection`, a snapshot through :func:`precompute.store.open_snapshot`: the store
file plus its live checkpoint parts, in a private DuckDB instance, so a run in progress, a killed run's parts or
another connection to the same file in this process change nothing; a file that is not a crossling store of this
schema is refused with a :class:`~precompute.store.StoreError` subclass, and SQL kept in the file never runs), and
every method calls a function of :mod:`explorer.queries`, the SQL the
pages run, so a notebook and the explorer always agree. This module imports no Streamlit, no torch.

A name the store does not hold (a checkpoint, concept, language, layer, unit, representation or metric) and an
argument out of range (``k``, ``limit``, ``min_langs``: integers from 1) raise :class:`ArgumentError`, which
names the argument (``err.argument``) and is both a ``KeyError`` and a ``ValueError``; never an empty frame or
a DuckDB error. A run that did not finish says so: ``store.progress`` and a warning when its checkpoints are read.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import polars as pl

from explorer import queries as Q
from precompute.store import StoreError, listed
from precompute.store.facts import RunSettings, run_settings
from precompute.store.read import RunProgress, run_progress

#: The largest ``k`` or ``limit`` (DuckDB's BIGINT): beyond it an argument is refused, not passed to SQL.
MAX_COUNT = 2**63 - 1


class ArgumentError(KeyError, ValueError):
    """An argument the store cannot answer: a name it does not hold, or a value out of range.

    ``argument`` is the parameter's name (``"checkpoint"``, ``"k"``, ...); the message starts with it. A
    ``KeyError`` (as an unknown checkpoint always was) and a ``ValueError`` (as a bad ``k`` was).
    """

    def __init__(self, argument: str, message: str):
        super().__init__(f"{argument}: {message}")
        self.argument = argument

    def __str__(self) -> str:  # the message as written (KeyError would quote it)
        return str(self.args[0])


def _count(argument: str, value: Any, *, low: int = 1) -> int:
    """An integer argument from ``low`` to MAX_COUNT (bool, float and str refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(argument, f"must be an integer of at least {low}, got {value!r}")
    if value < low:
        raise ArgumentError(argument, f"must be at least {low}, got {value}")
    if value > MAX_COUNT:
        raise ArgumentError(argument, f"must be at most {MAX_COUNT}, got {value}")
    return value


def _shown(names: list[Any], most: int = 12) -> str:
    return listed(names, most) or "none"


class Store:
    """One crossling store, opened read-only, and one run of it (the first, unless ``run_id`` says)."""

    def __init__(self, path: str | Path, run_id: str | None = None):
        self.path = Path(path)
        self._con: Q.StoreConnection = Q.StoreConnection(self.path)
        try:
            run_ids = Q.runs(self._con)["run_id"].to_list()
            if not run_ids:
                raise StoreError(f"{self.path}: holds no run yet")
            if run_id is not None and run_id not in run_ids:
                raise StoreError(f"{self.path}: no run {run_id!r} (it holds {', '.join(map(repr, run_ids))})")
            self.run_id: str = run_id if run_id is not None else run_ids[0]
            self.run_ids: list[str] = run_ids
            with self._con.cursor() as cur:
                settings = run_settings(cur, self.run_id)
        except BaseException:
            self._con.close()
            raise
        #: The run's facts (top-K, min_langs, overlap, checkpoints in training order, ...), read once.
        self.settings: RunSettings = settings
        self.top_k: int | None = settings.top_k
        self.min_langs: int = settings.min_langs
        self.config: dict[str, Any] = settings.config

    # --- lifetime -----------------------------------------------------------------------------------

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, run_id={self.run_id!r})"

    # --- what the store holds ---------------------------------------------------------------------------

    def runs(self) -> pl.DataFrame:
        """Every run in the store, oldest first (model, device, config and package versions as JSON)."""
        return Q.runs(self._con)

    def checkpoints(self) -> pl.DataFrame:
        """The run's completed checkpoints in training order (checkpoint, step, tokens_seen, position, ...).

        A run that did not finish warns once (`UserWarning`): its figures are not those of the whole run."""
        frame = Q.checkpoints(self._con, self.run_id)
        if not getattr(self, "_progress_warned", False):
            self._progress_warned = True
            line = self.progress.summary() if self.progress.unfinished else None
            if line:
                warnings.warn(f"{self.path}: {line}", UserWarning, stacklevel=2)
        return frame

    @property
    def progress(self) -> RunProgress:
        """How far the run got: ``.unfinished`` (``runs.finished_at`` empty or planned checkpoints missing),
        ``.planned`` (every checkpoint the run was meant to hold; None when the store did not record it),
        ``.missing``, ``.summary()`` (one sentence, None for a finished run)."""
        runs = Q.runs(self._con).filter(pl.col("run_id") == self.run_id)
        meta = dict(Q.meta(self._con).iter_rows())
        present = Q.checkpoints(self._con, self.run_id)["checkpoint"].to_list()
        return run_progress(meta if len(self.run_ids) == 1 else {}, runs["finished_at"][0], present)

    @property
    def checkpoint_names(self) -> list[str]:
        """The run's checkpoint names in training order."""
        return self.checkpoints()["checkpoint"].to_list()

    def languages(self) -> pl.DataFrame:
        return Q.languages(self._con)

    def concepts(self) -> pl.DataFrame:
        return Q.concepts(self._con)

    def layers(self) -> pl.DataFrame:
        """layer, n_neurons, hidden_size, module_path of the run's model."""
        return Q.layers(self._con, self.run_id)

    def table_counts(self) -> pl.DataFrame:
        return Q.table_counts(self._con)

    # --- concepts: experts per language and checkpoint -----------------------------------------------------

    def experts(self, concept: str, checkpoint: str | None = None, k: int | None = None) -> pl.DataFrame:
        """A concept's top-``k`` expert units per language (rank 1 = best AP), at one checkpoint or, when
        ``checkpoint`` is None, at every checkpoint (with ``checkpoint`` and ``step`` columns first)."""
        k = self._k(k)
        concept = self._concept(concept)
        if checkpoint is not None:
            return Q.top_units(self._con, self.run_id, self._checkpoint(checkpoint), concept, k)
        self._checkpoint(None)  # a run with no checkpoint is said so, not returned as an empty frame
        ck = self.checkpoints()
        parts = [
            Q.top_units(self._con, self.run_id, name, concept, k).select(
                pl.lit(name).alias("checkpoint"), pl.lit(step, dtype=ck["step"].dtype).alias("step"), pl.all()
            )
            for name, step in zip(ck["checkpoint"].to_list(), ck["step"].to_list())
        ]
        return pl.concat(parts, how="vertical")

    def shared_experts(
        self, concept: str, checkpoint: str | None = None, min_langs: int | None = None, limit: int = 500
    ) -> pl.DataFrame:
        """Units in the top-K of ``concept`` in at least ``min_langs`` languages (default: the run's)
        at one checkpoint (default: the last), most shared first."""
        return Q.shared_experts(
            self._con,
            self.run_id,
            self._checkpoint(checkpoint),
            self._concept(concept),
            self.min_langs if min_langs is None else _count("min_langs", min_langs),
            _count("limit", limit),
        )

    def shared_expert_history(self, concept: str) -> pl.DataFrame:
        """Per checkpoint: how many shared experts ``concept`` has, and the most languages any one has."""
        return Q.shared_expert_history(self._con, self.run_id, self._concept(concept))

    def compare(self, concept: str, checkpoint_a: str, checkpoint_b: str, k: int | None = None) -> pl.DataFrame:
        """Per language, which of the concept's top-``k`` units stayed, entered or left from A to B."""
        return Q.compare_checkpoints(
            self._con,
            self.run_id,
            self._concept(concept),
            self._checkpoint(checkpoint_a, "checkpoint_a"),
            self._checkpoint(checkpoint_b, "checkpoint_b"),
            self._k(k),
        )

    def language_experts(self, lang: str, checkpoint: str | None = None, k: int | None = None) -> pl.DataFrame:
        """One language's top-``k`` experts of every concept, with how many languages share each."""
        return Q.language_experts(self._con, self.run_id, self._lang(lang), self._checkpoint(checkpoint), self._k(k))

    # --- overlap over training ------------------------------------------------------------------------------

    def overlap_over_training(self) -> pl.DataFrame:
        """Mean cross-lingual expert overlap (Jaccard, Spearman of AP) over concepts and pairs, per checkpoint."""
        return Q.overlap_summary(self._con, self.run_id)

    def concept_overlap(self, concept: str, checkpoint: str | None = None) -> pl.DataFrame:
        """One concept's language x language overlap at one checkpoint (mirrored, diagonal 1); when
        ``checkpoint`` is None, each language pair's overlap at every checkpoint instead."""
        concept = self._concept(concept)
        if checkpoint is None:
            return Q.concept_overlap_history(self._con, self.run_id, concept)
        return Q.concept_overlap_matrix(self._con, self.run_id, self._checkpoint(checkpoint), concept)

    # --- one unit ----------------------------------------------------------------------------------------------

    def unit_history(self, layer: int, unit: int) -> pl.DataFrame:
        """Every (checkpoint, language, concept) where the unit is a top-K expert, with its AP and rank."""
        return Q.neuron_ap_history(self._con, self.run_id, *self._unit(layer, unit))

    def unit_summary(self, layer: int, unit: int) -> pl.DataFrame:
        """The unit's mean and max AP over every concept and language, per checkpoint."""
        return Q.neuron_summary_history(self._con, self.run_id, *self._unit(layer, unit))

    def unit_shared_history(self, layer: int, unit: int) -> pl.DataFrame:
        """The checkpoints and concepts for which the unit is a shared expert."""
        return Q.neuron_shared_history(self._con, self.run_id, *self._unit(layer, unit))

    def top_shared_units(self, checkpoint: str | None = None, limit: int = 20) -> pl.DataFrame:
        """The most cross-lingual units at one checkpoint (default: the last)."""
        return Q.top_shared_neurons(self._con, self.run_id, self._checkpoint(checkpoint), _count("limit", limit))

    # --- language identification probes ------------------------------------------------------------------------

    def representations(self) -> list[str]:
        return Q.representations(self._con, self.run_id)

    def probe_grid(self, representation: str = "mean") -> pl.DataFrame:
        """LID probe accuracy (and macro F1) per (checkpoint, layer); layer 0 is the embedding output."""
        return Q.probe_grid(self._con, self.run_id, self._representation(representation))

    def probe_languages(
        self, representation: str = "mean", checkpoint: str | None = None, layer: int | None = None
    ) -> pl.DataFrame:
        """Per-language F1 of the LID probe, for one checkpoint and/or one layer (None = all)."""
        if checkpoint is not None:
            checkpoint = self._checkpoint(checkpoint)
        if layer is not None:
            layer = self._probe_layer(layer)
        return Q.probe_languages(self._con, self.run_id, self._representation(representation), checkpoint, layer)

    # --- the rest of the paper -------------------------------------------------------------------------------------

    def similarity_by_layer(self, metric: str) -> pl.DataFrame:
        metrics = Q.similarity_metrics(self._con, self.run_id)
        if metrics and metric not in metrics:  # a store without the analysis answers with an empty frame
            raise ArgumentError(
                "metric", f"no similarity metric {metric!r} in run {self.run_id!r}; it has {_shown(metrics)}"
            )
        return Q.similarity_by_layer(self._con, self.run_id, metric)

    def compression(self) -> pl.DataFrame:
        return Q.compression(self._con, self.run_id)

    def language_neurons(self, checkpoint: str | None = None, limit: int = 1000) -> pl.DataFrame:
        return Q.language_neurons(self._con, self.run_id, self._checkpoint(checkpoint), _count("limit", limit))

    def steering(self) -> pl.DataFrame:
        return Q.steering(self._con, self.run_id)

    # --- helpers -------------------------------------------------------------------------------------------------

    def _checkpoint(self, name: str | None, argument: str = "checkpoint") -> str:
        """``name`` if the run has it (a typo must not read as 'no rows'), or the last checkpoint for None."""
        names = self.checkpoints()["checkpoint"].to_list()  # (an unfinished run warns, once)
        if not names:
            progress = self.progress
            why = progress.summary() if progress.unfinished else None
            raise StoreError(
                f"{self.path}: run {self.run_id!r} has no completed checkpoint yet" + (f" ({why})" if why else "")
            )
        if name is None:
            return names[-1]
        if not isinstance(name, str) or name not in names:
            raise ArgumentError(argument, f"no checkpoint {name!r} in run {self.run_id!r}; it has {_shown(names)}")
        return name

    def _k(self, k: int | None) -> int:
        if k is None:
            return int(self.top_k or 1)
        return _count("k", k)

    def _concept(self, concept: str) -> str:
        names = Q.concepts(self._con)["concept_id"].to_list()
        if not isinstance(concept, str) or concept not in names:
            raise ArgumentError("concept", f"no concept {concept!r} in the store; it has {_shown(names)}")
        return concept

    def _lang(self, lang: str) -> str:
        names = Q.languages(self._con)["lang"].to_list()
        if not isinstance(lang, str) or lang not in names:
            raise ArgumentError("lang", f"no language {lang!r} in the store; it has {_shown(names)}")
        return lang

    def _representation(self, representation: str) -> str:
        names = Q.representations(self._con, self.run_id)
        if not isinstance(representation, str) or (names and representation not in names):
            raise ArgumentError(
                "representation",
                f"no probe representation {representation!r} in run {self.run_id!r}; it has {_shown(names)}",
            )
        return representation

    def _unit(self, layer: int, unit: int) -> tuple[int, int]:
        """(layer, unit) of the run's model: a layer it hooked, a unit below that layer's width."""
        layers = dict(zip(*(self.layers()[c].to_list() for c in ("layer", "n_neurons")), strict=True))
        if isinstance(layer, bool) or not isinstance(layer, int) or (layers and layer not in layers):
            raise ArgumentError(
                "layer", f"no MLP layer {layer!r} in run {self.run_id!r}; it has {_shown(sorted(layers))}"
            )
        if (
            isinstance(unit, bool)
            or not isinstance(unit, int)
            or unit < 0
            or (layer in layers and unit >= layers[layer])
        ):
            width = f"0-{layers[layer] - 1}" if layer in layers else "from 0"
            raise ArgumentError("unit", f"no unit {unit!r} in layer {layer}; its units are {width}")
        return layer, unit

    def _probe_layer(self, layer: int) -> int:
        """A layer of the probe grid (0 is the embedding output, so not only the hooked MLP layers)."""
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ArgumentError("layer", f"must be a layer number (0 = the embeddings), got {layer!r}")
        return layer


def open_store(path: str | Path, run_id: str | None = None) -> Store:
    """Open a crossling store read-only for reading from Python (use it as a context manager)."""
    return Store(path, run_id)
