"""A run spec: model, checkpoints, concept set, and the settings of every stage, loadable from TOML.

Every setting has the paper's value (or the closest CPU-friendly one) as default, and declares what it may
hold next to it (``top_k: int = setting(100, ge=1)``: a :class:`Rule` of range, allowed values, uniqueness,
normalisation), read by one generic checker, :func:`check_settings`. Unknown keys, wrong types and values
outside their rule are rejected with one line naming the file, the key and what was expected. What needs the
concept set or the model's shape (``top_k`` against the units, ``min_langs`` against the languages, layers
that exist) is checked by :mod:`precompute.validate` before any compute.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precompute.inputs.langcodes import canonical_language, language_code_problem


class ConfigError(Exception):
    """A run config that cannot be used, with a one-line reason naming the file and key."""


# --- declared settings: each field states what it may hold; one generic checker reads the declarations ---


@dataclass(frozen=True)
class Rule:
    """What one setting may hold, declared next to it (``setting(...)``) and checked by :func:`check_settings`.

    Bounds (``ge``/``gt``/``le``/``lt``) and ``choices`` apply to the value, or to each item of a list;
    ``unique`` and ``min_items`` to a list; ``required`` asks for a non-empty string; ``normalize`` rewrites
    the value (each item of a list) before it is checked, e.g. language codes to one spelling. ``None`` (an
    optional setting left unset) always passes. ``hint`` says what a refused value should have been.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    required: bool = False
    unique: bool = False
    min_items: int = 0
    normalize: Callable[[Any], Any] | None = None
    # Why one value (each item of a list) cannot be used, or None: a check no bound can express (a language code
    # with spaces, or one that names no language).
    validate: Callable[[Any], str | None] | None = None
    hint: str = ""
    # A lower bound below which a value is allowed by type but cannot work (checked after ge/gt): refused as
    # "must be >= floor, got x (floor_why)".
    floor: float | None = None
    floor_why: str = ""

    def normalized(self, value: Any) -> Any:
        if self.normalize is None or value is None:
            return value
        if isinstance(value, list):
            return [self.normalize(v) for v in value]
        return self.normalize(value)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (the text after the key), or None."""
        hint = f" ({self.hint})" if self.hint else ""
        if value is None:
            return None
        if self.required and value in ("", []):
            return f"is required{hint}"
        if isinstance(value, list):
            if len(value) < self.min_items:
                return f"must list at least {self.min_items} value(s), got {len(value)}{hint}"
            if self.unique:
                seen: list[Any] = []
                for item in value:
                    if item in seen:
                        return f"lists {item!r} more than once"
                    seen.append(item)
            return next((p for p in map(self._item_problem, value) if p), None)
        return self._item_problem(value)

    def _item_problem(self, value: Any) -> str | None:
        hint = f" ({self.hint})" if self.hint else ""
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
        if self.validate is not None and (why := self.validate(value)):
            return f"has a bad value: {why}"
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not self._in_range(value):
            return f"must be {self._range_text()}, got {value!r}{hint}"
        if (
            self.floor is not None
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and not value >= self.floor
        ):
            return f"must be >= {self.floor}, got {value!r} ({self.floor_why or 'too small to work'})"
        return None

    def _in_range(self, x: float) -> bool:
        return not (
            (self.ge is not None and not x >= self.ge)
            or (self.gt is not None and not x > self.gt)
            or (self.le is not None and not x <= self.le)
            or (self.lt is not None and not x < self.lt)
        )

    def _range_text(self) -> str:
        low = f"[{self.ge}" if self.ge is not None else f"({self.gt}" if self.gt is not None else None
        high = f"{self.le}]" if self.le is not None else f"{self.lt})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {self.ge}" if self.ge is not None else f"> {self.gt}"
        return f"<= {self.le}" if self.le is not None else f"< {self.lt}"


#: The most values one range of integers may expand to (``0-99`` is 100 values), and the most checkpoints a
#: ``[checkpoint_set]`` template may build: checked *before* anything is built, so ``0-99999999999`` is one
#: refusal instead of a list that fills the memory.
MAX_RANGE_VALUES = 100_000
MAX_TEMPLATE_CHECKPOINTS = 100_000


def parse_int_ranges(text: str, option: str, *, max_values: int = MAX_RANGE_VALUES) -> list[int]:
    """'0,50' -> [0, 50]; '0-99' -> 0..99 (inclusive); '-1' -> [-1] (left to the setting's rule).

    Each range is checked before it is expanded: one that runs backwards (``5-1``) or would hold more than
    ``max_values`` values in all is refused with a :class:`ConfigError` naming ``option``, as is text that is
    not integers and ranges.
    """
    values: list[int] = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        low_text, sep, high_text = part[1:].partition("-") if part.startswith("-") else part.partition("-")
        if part.startswith("-"):
            low_text = "-" + low_text
        try:
            low = int(low_text)
            high = int(high_text) if sep else low
        except ValueError:
            raise ConfigError(
                f"{option}: expected comma-separated integers or ranges such as 0-99, got {text!r}"
            ) from None
        if high < low:
            raise ConfigError(
                f"{option} {text!r}: range {part} runs backwards (from {low} down to {high}); "
                f"write it low to high, {high}-{low}"
            )
        count = high - low + 1
        if len(values) + count > max_values:
            raise ConfigError(
                f"{option} {text!r}: {'range ' + part + ' holds ' if sep else ''}{len(values) + count:,} values "
                f"in all; at most {max_values:,} are allowed"
            )
        values.extend(range(low, high + 1))
    return values


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, **rule: Any) -> Any:
    """A dataclass field with its :class:`Rule`: ``top_k: int = setting(100, ge=1)``."""
    metadata = {"rule": Rule(**rule)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _label(path: tuple[str | int, ...]) -> str:
    """('experts', 'top_k') -> '[experts] top_k'; ('checkpoints', 1, 'step') -> '[[checkpoints]] #2 step'."""
    if not path:
        return ""
    head, rest = str(path[0]), list(path[1:])
    section = f"[{head}]"
    if rest and isinstance(rest[0], int):
        section = f"[[{head}]] #{rest.pop(0) + 1}"
    return " ".join([section, ".".join(map(str, rest))]) if rest else section


def check_settings(
    obj: Any, where: str, path: tuple[str | int, ...] = (), overridden: dict[str, str] | None = None
) -> None:
    """Normalise and check every declared setting of a (nested) settings dataclass, then its ``check``.

    Raises :class:`ConfigError` with one line: ``WHERE: [section] key must be ..., got ...``. A key that a
    command-line option set (``overridden``, dotted key -> the option as typed) is named by that option.
    """
    overridden = overridden or {}
    for f in dataclasses.fields(obj):
        here = (*path, f.name)
        value = getattr(obj, f.name)
        rule = f.metadata.get("rule")
        if rule is not None:
            value = rule.normalized(value)
            setattr(obj, f.name, value)
            problem = rule.problem(value)
            if problem:
                dotted = ".".join(map(str, here))
                label = overridden.get(dotted)
                raise ConfigError(f"{label}: {problem}" if label else f"{where}: {_label(here)} {problem}")
        if dataclasses.is_dataclass(value):
            check_settings(value, where, here, overridden)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    check_settings(item, where, (*here, i), overridden)
    extra = getattr(obj, "check", None)
    if extra is not None:
        for message in extra(_label(path)):
            raise ConfigError(f"{where}: {message}")


@dataclass
class ModelSpec:
    """Which model: a hub id or a local directory, with defaults for loading."""

    id: str = setting("", required=True, hint="a hub id or a local directory")
    revision: str | None = None
    device: str = "auto"
    dtype: str = setting("auto", choices=("auto", "float32", "bfloat16", "float16"))
    card: str = ""


@dataclass
class CheckpointSpec:
    """One checkpoint: a local directory (``path``) or a hub revision of ``model.id``."""

    name: str = setting("", required=True, hint="every checkpoint needs a name")
    path: str | None = None
    revision: str | None = None
    step: int | None = setting(None, ge=0)
    tokens_seen: int | None = setting(None, ge=0)

    def check(self, label: str) -> Iterator[str]:
        if self.path is None and self.revision is None:
            yield f"{label}: checkpoint {self.name!r} needs a path or a revision"


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
    steps: list[int] = setting(factory=list, ge=0)
    start: int | None = setting(None, ge=0)
    stop: int | None = setting(None, ge=0)
    every: int | None = setting(None, ge=1)
    tokens_per_step: int | None = setting(None, ge=1)

    def template_steps(self) -> Sequence[int]:
        """The steps a template builds names for: ``steps``, else ``range(start, stop + 1, every)`` (lazy)."""
        if self.steps:
            return list(self.steps)
        if self.stop is None or not self.every:
            return []
        start = self.start if self.start is not None else self.every
        return range(start, self.stop + 1, self.every)

    def sources(self) -> list[str]:
        """The source keys that are set (valid configs set at most one)."""
        return [k for k in ("revisions", "template", "pattern", "paths", "local") if getattr(self, k)]

    def check(self, label: str) -> Iterator[str]:
        """How the keys combine: one source; start before stop; a template with its steps."""
        sources = self.sources()
        if len(sources) > 1:
            yield f"{label} names several sources ({', '.join(sources)}); use one"
        if self.start is not None and self.stop is not None and self.start > self.stop:
            yield f"{label} start {self.start} is after stop {self.stop}"
        if self.template:
            if "{step" not in self.template:
                yield f"{label} template {self.template!r} needs a {{step}} field, e.g. 'global_step{{step}}'"
            if not self.steps and (self.stop is None or self.every is None):
                yield f"{label} template needs steps = [...] or stop and every (start defaults to every)"
            elif not self.steps and self.every:
                n = len(self.template_steps())  # a range object: its length is known without building it
                if n > MAX_TEMPLATE_CHECKPOINTS:
                    yield (
                        f"{label} start/stop/every select {n:,} checkpoints for the template; at most "
                        f"{MAX_TEMPLATE_CHECKPOINTS:,} are allowed (raise every, or narrow start and stop)"
                    )
        elif not sources and (self.steps or self.start is not None or self.stop is not None or self.every):
            yield f"{label} steps/start/stop/every need a source (revisions, template, pattern, paths or local)"


@dataclass
class DataSpec:
    """The concept set and which part of it to use."""

    concepts: str = setting("builtin", required=True, hint="'builtin' or a concept-set file")
    languages: list[str] = setting(
        factory=list, unique=True, normalize=canonical_language, validate=language_code_problem
    )
    concept_ids: list[str] = setting(factory=list, unique=True)
    max_contexts: int = setting(0, ge=0, hint="0: all")


@dataclass
class ExtractSpec:
    """Forward passes and pooling."""

    batch_tokens: int = setting(4096, ge=1)
    max_length: int = setting(64, ge=2)
    layers: list[int] = setting(factory=list, ge=0, unique=True, hint="MLP block indices; empty: all")
    # A unit's response to a context: "max" over its real tokens (the paper's, apple/ml-selfcond pool_responses),
    # "mean" over them or "span" (mean over the concept's tokens): crossling's choices. See precompute.extract.
    pooling: str = setting("max", choices=("max", "mean", "span"))
    # Contexts whose concept span max_length cuts off: "error" refuses the run naming them (crossling's choice),
    # "drop" leaves them out of every analysis (they are counted and reported per concept and language).
    on_truncated_span: str = setting("error", choices=("error", "drop"))
    # Operational (not part of the run's fingerprint): pooled activations larger than this many GB
    # (0: half of the RAM available when the run starts) are memory-mapped to files in spill_dir
    # (default: the system's temporary folder) instead of being held in RAM.
    ram_budget_gb: float = setting(0.0, ge=0, hint="0: half the available RAM")
    spill_dir: str = ""


@dataclass
class ProbeSpec:
    """Language-identification probes (logistic regression per layer)."""

    representations: list[str] = setting(factory=lambda: ["mean", "token"], choices=("mean", "token"), unique=True)
    seeds: list[int] = setting(factory=lambda: [0, 1, 2], min_items=1, unique=True, ge=0, le=2**32 - 1)
    test_size: float = setting(0.25, gt=0, lt=1)
    C: float = setting(1.0, gt=0, hint="inverse regularisation strength")
    max_iter: int = setting(100, ge=1)
    max_train: int = setting(4000, ge=0, hint="0: no cap")
    # A control task per layer for token probes (Hewitt & Liang 2019: a fixed random language per token type,
    # learnt by the same probe), so selectivity (accuracy - control accuracy) is visible; the mean
    # representation has no token type and gets none. Crossling's addition, not the paper's.
    control: bool = setting(True)


@dataclass
class ExpertSpec:
    """Expert units (Suau et al.): AP scoring and cross-lingual alignment."""

    top_k: int = setting(100, ge=1)
    min_langs: int = setting(3, ge=2)
    chunk_neurons: int = setting(8192, ge=1)
    # Chance of an expert's AP (crossling's addition, issue 19): per language and number of positives, this many
    # shuffles of the labels give the null of the best unit's AP; a (concept, language) cell's p-value is
    # (1 + exceedances) / (permutations + 1), so its resolution is 1 / (permutations + 1). 999 makes the level
    # 1 - permutation_quantile = 0.01 exact (0.01 x 1,000 is a whole number of draws). 0: no test.
    permutations: int = setting(999, ge=0, le=1_000_000, hint="0: no permutation test")
    permutation_quantile: float = setting(0.99, gt=0, lt=1, hint="1 - the test's level (and the FDR of the correction)")
    # Multiple comparisons over the cells of a checkpoint, the (concept, language) cells of the experts' AP and
    # the (concept, language pair) cells of the overlap: "bh" = Benjamini-Hochberg at FDR 1 - permutation_quantile
    # (crossling's choice); "none" = every cell at that level on its own.
    correction: str = setting("bh", choices=("bh", "none"))
    # The overlap of two languages' expert sets: the top overlap_k of each (0: top_k; at most top_k), as
    # "jaccard" |A ∩ B| / |A ∪ B| or "over_k" |A ∩ B| / k (Wang, Minervini & Ponti 2024, k = 50 over BLOOM
    # checkpoints). Both are stored; overlap_measure is the one the report and the explorer lead with.
    overlap_k: int = setting(0, ge=0, hint="0: the experts' top_k")
    overlap_measure: str = setting("jaccard", choices=("jaccard", "over_k"))

    def check(self, label: str) -> Iterator[str]:
        if self.overlap_k > self.top_k:
            yield f"{label} overlap_k = {self.overlap_k} is more than top_k = {self.top_k} (the experts kept per cell)"

    @property
    def overlap_top(self) -> int:
        """The K of the overlap: ``overlap_k``, or ``top_k`` where it is 0."""
        return self.overlap_k or self.top_k


@dataclass
class AnalysisSpec:
    """Compression and language-specific neurons (issue: the rest of the paper)."""

    # Language-specific neurons (precompute.analysis.lape). "tang": Tang et al.'s identify.py (the paper's):
    # keep units with some p > the lape_filter_rate quantile of all probabilities, take the lape_quantile
    # (their top_rate) share of all units with the lowest entropy, assign each to every language whose p
    # exceeds the lape_bar_ratio quantile. "threshold": crossling's earlier rule (absolute lape_min_prob,
    # one language per unit; lape_max for a cut on LAPE / log L).
    lape_selection: str = setting("tang", choices=("tang", "threshold"))
    lape_quantile: float = setting(0.01, gt=0, le=1)
    lape_filter_rate: float = setting(0.95, ge=0, le=1)
    lape_bar_ratio: float = setting(0.95, ge=0, le=1)
    lape_min_prob: float = setting(0.05, ge=0, le=1)
    # "threshold" only: if set, language-specific = normalised LAPE (LAPE / log L) <= this, instead of the
    # lowest lape_quantile of all neurons, so the count itself can change over training.
    lape_max: float | None = setting(None, ge=0, le=1)
    # Bootstrap resamples (over concepts; over test contexts for probes; fixed seed) of the 95 % intervals of
    # the headline curves: crossling's addition. 0: no intervals.
    bootstrap: int = setting(1000, ge=0, le=100000, hint="0: no intervals")


@dataclass
class DrilldownSpec:
    """Per-unit drill-downs for the Neuron page (issue 14; crossling's own, not the paper's): what fires a
    unit, how it responds, what it writes. See ``precompute.analysis.drilldown``.

    The units: every top-K expert of any (concept, language) at the checkpoint plus every LAPE-selected
    unit, at most ``max_units`` of them (by best expert rank, then max AP; LAPE units count as rank 1).
    """

    enabled: bool = setting(True)
    top_contexts: int = setting(10, ge=1, le=1000, hint="contexts per (unit, language)")
    top_tokens: int = setting(10, ge=1, le=1000, hint="promoted and suppressed tokens per unit")
    hist_bins: int = setting(20, ge=2, le=200)
    max_units: int = setting(2048, ge=0, hint="0: no cap")


@dataclass
class SteeringSpec:
    """Steering by concept neurons (Suau et al.'s self-conditioning); see ``precompute.steering.stage``.

    ``precompute run`` steers each checkpoint when ``enabled``; ``precompute steer STORE`` reads this section
    back from the store (``runs.config_json``) and lets its options override only what they name.
    """

    enabled: bool = setting(False)
    concepts: list[str] = setting(factory=list, unique=True)
    source_langs: list[str] = setting(
        factory=list, unique=True, normalize=canonical_language, validate=language_code_problem
    )
    n_neurons: list[int] = setting(factory=lambda: [0, 50], ge=0, min_items=1, unique=True)
    seeds: list[int] = setting(factory=lambda: [0, 1, 2], min_items=1, unique=True, ge=0, le=2**32 - 1)
    prompts: list[str] = setting(factory=lambda: [""], min_items=1)
    max_new_tokens: int = setting(24, ge=1)
    value_mode: str = setting("median", choices=("median", "zero"))
    # Sampling, as Suau et al.'s generate_seq: nucleus 0.9, no top-k cut, temperature 0.8.
    top_k: int = setting(0, ge=0, hint="0: no top-k cut")
    top_p: float = setting(0.9, gt=0, le=1)
    # Below 0.01, exp(logit / temperature) overflows float32 (the sampler's precision) for any logit above 0.89,
    # and far below it logit / temperature is infinite itself, so sampling ends in an error at the first
    # checkpoint; such a temperature is greedy decoding in all but name anyway.
    temperature: float = setting(
        0.8,
        gt=0,
        floor=0.01,
        floor_why="below it exp(logit / temperature) overflows float32 and sampling fails; it is greedy anyway",
    )


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
    drilldown: DrilldownSpec = field(default_factory=DrilldownSpec)
    steering: SteeringSpec = field(default_factory=SteeringSpec)
    # Not settings (never read from TOML, never stored): where the config came from, for messages.
    base_dir: str = "."  # the config file's folder: relative paths are resolved against it
    where: str = "config"  # the config file, as every message names it
    overridden: dict[str, str] = field(default_factory=dict)  # dotted key -> the command-line option that set it

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for provenance), without base_dir, where and overridden (they say where, not what)."""
        data = dataclasses.asdict(self)
        for name in _NOT_SETTINGS:
            data.pop(name)
        return data

    def fingerprint(self) -> str:
        """What makes two runs the same analysis: every setting but the checkpoint list and device.

        The rule (which keys count) is the store's, shared with the writer and the merge.
        """
        from precompute.inputs.concepts import concept_set_path
        from precompute.store.identity import config_fingerprint

        # the file name only (where it lies is not the analysis); 'builtin' counts as the built-in file's name
        return config_fingerprint(self.to_dict(), concepts_name=lambda name: concept_set_path(name).name)

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def validate(self, where: str | None = None) -> None:
        """Normalise and check every declared setting (after a command-line option changed one, too)."""
        check_settings(self, where or self.where, overridden=self.overridden)

    def check(self, label: str) -> Iterator[str]:
        """What no single setting can say: checkpoint names are unique."""
        names = [c.name for c in self.checkpoints]
        if len(set(names)) != len(names):
            yield f"[[checkpoints]] duplicate names {sorted({n for n in names if names.count(n) > 1})}"


_NOT_SETTINGS = ("base_dir", "where", "overridden")


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
        raise ConfigError(f"{where}: {key} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name not in _NOT_SETTINGS}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in known:
            raise ConfigError(f"{where}: unknown key {full!r} (known: {', '.join(sorted(known))})")
        kwargs[key] = _convert(value, hints[key], full, where)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], *, base_dir: str | Path = ".", where: str = "config") -> RunConfig:
    """Build and validate a RunConfig from a plain dict (as parsed from TOML)."""
    cfg = _from_dict(RunConfig, data, "", where)
    cfg.base_dir = str(base_dir)
    cfg.where = where
    cfg.validate()
    return cfg


def load_config(path: str | Path) -> RunConfig:
    """Load a run config from TOML; paths inside are relative to the file's folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file (give the run's .toml file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or type(exc).__name__})") from None
    return config_from_dict(data, base_dir=path.parent.resolve(), where=str(path))
