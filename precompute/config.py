"""A run spec: model, checkpoints, concept set, and the settings of every stage, loadable from TOML.

Every setting has the paper's value (or the closest CPU-friendly one) as default. Unknown keys and
wrong types are rejected with one line naming the file, the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A run config that cannot be used, with a one-line reason naming the file and key."""


@dataclass
class ModelSpec:
    """Which model: a hub id or a local directory, with defaults for loading."""

    id: str = ""
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    card: str = ""


@dataclass
class CheckpointSpec:
    """One checkpoint: a local directory (``path``) or a hub revision of ``model.id``."""

    name: str = ""
    path: str | None = None
    revision: str | None = None
    step: int | None = None
    tokens_seen: int | None = None


@dataclass
class CheckpointSetSpec:
    """Many checkpoints named at once; ``precompute.checkpoints.resolve.resolve_checkpoints`` turns it into a list.

    One source: ``revisions`` (hub revisions of ``model.id``), ``template`` (e.g. ``global_step{step}``, with
    ``steps`` or ``start``/``stop``/``every``), ``pattern`` (hub branches of ``model.id`` matching a glob, or a
    regex after ``re:``), ``paths`` (local checkpoint directories) or ``local`` (a glob of directories, relative
    to the config file). ``steps``/``start``/``stop``/``every`` also filter what a source lists, by the step
    parsed from each name. ``tokens_per_step`` fills ``tokens_seen`` where a checkpoint does not record it.
    """

    revisions: list[str] = field(default_factory=list)
    template: str = ""
    pattern: str = ""
    paths: list[str] = field(default_factory=list)
    local: str = ""
    steps: list[int] = field(default_factory=list)
    start: int | None = None
    stop: int | None = None
    every: int | None = None
    tokens_per_step: int | None = None

    def sources(self) -> list[str]:
        """The source keys that are set (valid configs set at most one)."""
        return [k for k in ("revisions", "template", "pattern", "paths", "local") if getattr(self, k)]


@dataclass
class DataSpec:
    """The concept set and which part of it to use."""

    concepts: str = "data/concepts.parquet"
    languages: list[str] = field(default_factory=list)
    concept_ids: list[str] = field(default_factory=list)
    max_contexts: int = 0


@dataclass
class ExtractSpec:
    """Forward passes and pooling."""

    batch_tokens: int = 4096
    max_length: int = 64
    layers: list[int] = field(default_factory=list)
    pooling: str = "span"
    # Operational (not part of the run's fingerprint): pooled activations larger than this many GB
    # (0: half of the RAM available when the run starts) are memory-mapped to files in spill_dir
    # (default: the system's temporary folder) instead of being held in RAM.
    ram_budget_gb: float = 0.0
    spill_dir: str = ""


@dataclass
class ProbeSpec:
    """Language-identification probes (logistic regression per layer)."""

    representations: list[str] = field(default_factory=lambda: ["mean", "token"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    test_size: float = 0.25
    C: float = 1.0
    max_iter: int = 100
    max_train: int = 4000


@dataclass
class ExpertSpec:
    """Expert units (Suau et al.): AP scoring and cross-lingual alignment."""

    top_k: int = 100
    min_langs: int = 3
    chunk_neurons: int = 8192


@dataclass
class AnalysisSpec:
    """Compression and language-specific neurons (issue: the rest of the paper)."""

    lape_quantile: float = 0.01
    lape_min_prob: float = 0.05
    # If set, language-specific = normalised LAPE (LAPE / log L) <= this, instead of the lowest
    # lape_quantile of all neurons (Tang et al.), so the count itself can change over training.
    lape_max: float | None = None


@dataclass
class SteeringSpec:
    """Steering by concept neurons (Suau et al.'s self-conditioning)."""

    concepts: list[str] = field(default_factory=list)
    source_langs: list[str] = field(default_factory=list)
    n_neurons: list[int] = field(default_factory=lambda: [0, 50])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    prompts: list[str] = field(default_factory=lambda: [""])
    max_new_tokens: int = 24
    value_mode: str = "median"
    # Sampling, as Suau et al.'s generate_seq: nucleus 0.9, no top-k cut, temperature 0.8.
    top_k: int = 0
    top_p: float = 0.9
    temperature: float = 0.8


@dataclass
class RunConfig:
    """A whole run."""

    model: ModelSpec = field(default_factory=ModelSpec)
    checkpoints: list[CheckpointSpec] = field(default_factory=list)
    checkpoint_set: CheckpointSetSpec = field(default_factory=CheckpointSetSpec)
    data: DataSpec = field(default_factory=DataSpec)
    extract: ExtractSpec = field(default_factory=ExtractSpec)
    probes: ProbeSpec = field(default_factory=ProbeSpec)
    experts: ExpertSpec = field(default_factory=ExpertSpec)
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    steering: SteeringSpec = field(default_factory=SteeringSpec)
    base_dir: str = "."

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for provenance), without the base_dir used to resolve paths."""
        data = dataclasses.asdict(self)
        data.pop("base_dir")
        return data

    def fingerprint(self) -> str:
        """What makes two runs the same analysis: every setting but the checkpoint list and device."""
        data = self.to_dict()
        data.pop("checkpoints")
        data.pop("checkpoint_set", None)
        data["model"].pop("device")
        for operational in ("ram_budget_gb", "spill_dir"):
            data["extract"].pop(operational, None)
        data["data"]["concepts"] = Path(data["data"]["concepts"]).name
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def validate(self, where: str = "config") -> None:
        """Semantic checks that types alone do not catch."""
        if not self.model.id:
            raise ConfigError(f"{where}: [model] id is required (a hub id or a local directory)")
        if self.extract.pooling not in ("span", "mean"):
            raise ConfigError(f"{where}: [extract] pooling must be 'span' or 'mean', got {self.extract.pooling!r}")
        for rep in self.probes.representations:
            if rep not in ("mean", "token"):
                raise ConfigError(f"{where}: [probes] representations: unknown {rep!r} (use 'mean', 'token')")
        if not 0 < self.probes.test_size < 1:
            raise ConfigError(f"{where}: [probes] test_size must be in (0, 1), got {self.probes.test_size}")
        if self.experts.top_k < 1:
            raise ConfigError(f"{where}: [experts] top_k must be >= 1, got {self.experts.top_k}")
        if self.experts.min_langs < 2:
            raise ConfigError(f"{where}: [experts] min_langs must be >= 2, got {self.experts.min_langs}")
        if self.extract.batch_tokens < 1 or self.extract.max_length < 2:
            raise ConfigError(f"{where}: [extract] batch_tokens and max_length must be positive")
        if self.model.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"{where}: [model] dtype must be auto, float32, bfloat16 or float16")
        if not 0 < self.analysis.lape_quantile <= 1:
            raise ConfigError(f"{where}: [analysis] lape_quantile must be in (0, 1], got {self.analysis.lape_quantile}")
        if self.analysis.lape_max is not None and not 0 <= self.analysis.lape_max <= 1:
            raise ConfigError(f"{where}: [analysis] lape_max must be in [0, 1], got {self.analysis.lape_max}")
        if self.steering.value_mode not in ("median", "zero"):
            raise ConfigError(f"{where}: [steering] value_mode must be 'median' or 'zero', got {self.steering.value_mode!r}")
        if not 0 < self.steering.top_p <= 1 or self.steering.temperature <= 0 or self.steering.top_k < 0:
            raise ConfigError(f"{where}: [steering] needs 0 < top_p <= 1, temperature > 0 and top_k >= 0")
        for key, values in (("languages", self.data.languages), ("concept_ids", self.data.concept_ids)):
            seen: set[str] = set()
            repeated = sorted({v for v in values if v in seen or seen.add(v)})
            if repeated:
                raise ConfigError(f"{where}: [data] {key} lists {repeated[0]!r} more than once")
        names = [c.name for c in self.checkpoints]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"{where}: [[checkpoints]] duplicate names {dup}")
        for c in self.checkpoints:
            if not c.name:
                raise ConfigError(f"{where}: [[checkpoints]] every checkpoint needs a name")
            if c.path is None and c.revision is None:
                raise ConfigError(f"{where}: checkpoint {c.name!r} needs a path or a revision")
        self._validate_checkpoint_set(where)

    def _validate_checkpoint_set(self, where: str) -> None:
        s = self.checkpoint_set
        sources = s.sources()
        if len(sources) > 1:
            raise ConfigError(
                f"{where}: [checkpoint_set] names several sources ({', '.join(sources)}); use one"
            )
        if s.every is not None and s.every < 1:
            raise ConfigError(f"{where}: [checkpoint_set] every must be >= 1, got {s.every}")
        if s.start is not None and s.stop is not None and s.start > s.stop:
            raise ConfigError(f"{where}: [checkpoint_set] start {s.start} is after stop {s.stop}")
        if any(step < 0 for step in s.steps) or (s.start is not None and s.start < 0):
            raise ConfigError(f"{where}: [checkpoint_set] steps must be >= 0")
        if s.tokens_per_step is not None and s.tokens_per_step < 1:
            raise ConfigError(f"{where}: [checkpoint_set] tokens_per_step must be >= 1")
        if s.template:
            if "{step" not in s.template:
                raise ConfigError(
                    f"{where}: [checkpoint_set] template {s.template!r} needs a {{step}} field, "
                    "e.g. 'global_step{step}'"
                )
            if not s.steps and (s.stop is None or s.every is None):
                raise ConfigError(
                    f"{where}: [checkpoint_set] template needs steps = [...] or stop and every "
                    "(start defaults to every)"
                )
        elif not sources and (s.steps or s.start is not None or s.stop is not None or s.every):
            raise ConfigError(
                f"{where}: [checkpoint_set] steps/start/stop/every need a source "
                "(revisions, template, pattern, paths or local)"
            )
        if self.extract.ram_budget_gb < 0:
            raise ConfigError(f"{where}: [extract] ram_budget_gb must be >= 0 (0: half the available RAM)")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {type(value).__name__}")
        return [_convert(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a table, got {type(value).__name__}")
        return _from_dict(tp, value, key, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be int, got bool")
    if not isinstance(value, tp):
        raise ConfigError(
            f"{where}: {key} must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "base_dir"}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key {full!r} (known: {', '.join(sorted(known))})"
            )
        kwargs[key] = _convert(value, hints[key], full, where)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], *, base_dir: str | Path = ".", where: str = "config") -> RunConfig:
    """Build and validate a RunConfig from a plain dict (as parsed from TOML)."""
    cfg = _from_dict(RunConfig, data, "", where)
    cfg.base_dir = str(base_dir)
    cfg.validate(where)
    return cfg


def load_config(path: str | Path) -> RunConfig:
    """Load a run config from TOML; paths inside are relative to the file's folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    return config_from_dict(data, base_dir=path.parent.resolve(), where=str(path))
