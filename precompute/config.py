"""A run spec: model, checkpoints, concept set, and the settings of every stage, loadable from TOML.

Every setting has the paper's value (or the closest CPU-friendly one) as default, and declares next to it what
it may hold (``top_k: int = setting(100, ge=1)``: a :class:`Rule` of range, allowed values, uniqueness,
normalisation), whose value the default is and what it does (``source``, ``doc``). One generic checker,
:func:`check_settings`, reads the rules; :mod:`precompute.config_doc` reads all of it to write
``docs/settings.md``, so the settings are documented in one place. Unknown keys, wrong types and values outside
their rule are rejected with one line naming the file, the key and what was expected. What needs the concept
set or the model's shape (``top_k`` against the units, ``min_langs`` against the languages, layers that exist)
is checked by :mod:`precompute.validate` before any compute.
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

#: How a unit's activations over a context's tokens become one response (``precompute.extract`` pools them).
POOLINGS: tuple[str, ...] = ("max", "mean", "span")


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


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    source: str = "",
    doc: str = "",
    paper: Any = dataclasses.MISSING,
    **rule: Any,
) -> Any:
    """A dataclass field with its :class:`Rule` and what the docs say of it: ``top_k: int = setting(100, ge=1)``.

    ``source`` says whose the default is (``"paper (...)"``, ``"ml-selfcond"``, ``"Tang et al. 2024"`` or
    ``"crossling's choice"``), ``doc`` what the setting does, in a sentence or two, and ``paper`` the paper's value
    where it differs from the default (the real-model configs in ``configs/`` set it). They are metadata only,
    read by :mod:`precompute.config_doc` to write ``docs/settings.md``, so the doc cannot drift from the code.
    """
    metadata: dict[str, Any] = {"rule": Rule(**rule), "source": source, "doc": doc}
    if paper is not dataclasses.MISSING:
        metadata["paper"] = paper
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


# The sources the settings cite, written once here and read by ``setting(source=...)``.
PAPER = "paper (Riemenschneider & Frank 2025)"
OURS = "crossling's choice"
OURS_ADDED = "crossling's addition, not the paper's"
SELFCOND = "ml-selfcond"  # Suau et al.'s reference code, apple/ml-selfcond
TANG = "Tang et al. 2024 (`identify.py`), which the paper follows"  # RUCAIBox/Language-Specific-Neurons
WANG = "Wang, Minervini & Ponti (2024)"


@dataclass
class ModelSpec:
    """Which model: a hub id or a local directory, with defaults for loading."""

    id: str = setting(
        "",
        required=True,
        hint="a hub id or a local directory",
        source=f"{PAPER}: BLOOM-560m and -7b1 intermediate checkpoints, an XGLM-architecture model (configs/)",
        doc="A hub id (`bigscience/bloom-560m-intermediate`) or a local model directory; every run names one.",
    )
    revision: str | None = setting(
        None,
        source=OURS,
        doc="A hub revision of `id`, kept with the run's config; each checkpoint loads its own revision.",
    )
    device: str = setting(
        "auto",
        source=OURS,
        doc="`auto`: CUDA, then MPS, then CPU; or `cpu`, `cuda`, `cuda:N`, `mps`. `--device` overrides it.",
    )
    dtype: str = setting(
        "auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        source=f"{OURS} (bfloat16 in the real-model configs)",
        doc="`auto`: bfloat16 on a CUDA card that supports it, else float16; float32 on CPU and MPS.",
    )
    card: str = setting(
        "",
        source=OURS,
        doc="A description of the model, stored with the run and shown by `precompute info` and the explorer.",
    )


@dataclass
class CheckpointSpec:
    """One checkpoint: a local directory (``path``) or a hub revision of ``model.id``."""

    name: str = setting(
        "",
        required=True,
        hint="every checkpoint needs a name",
        source=OURS,
        doc="The checkpoint's name in the store; names are unique within a run.",
    )
    path: str | None = setting(
        None, source=OURS, doc="A local checkpoint directory, relative to the config file's folder."
    )
    revision: str | None = setting(
        None, source=OURS, doc="A hub revision (branch, tag or commit) of `[model] id`; give it or `path`."
    )
    step: int | None = setting(None, ge=0, source=OURS, doc="The training step, which orders the checkpoints.")
    tokens_seen: int | None = setting(None, ge=0, source=OURS, doc="Training tokens seen up to this checkpoint.")

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

    revisions: list[str] = setting(
        factory=list,
        source=f"{OURS} (the branches the BLOOM model cards list, in the BLOOM configs)",
        doc="Hub revisions of `[model] id`, one checkpoint each; they need no branch listing, so work offline.",
    )
    template: str = setting(
        "", source=OURS, doc="Names built from steps, e.g. `global_step{step}`, with `steps` or `start`/`stop`/`every`."
    )
    pattern: str = setting(
        "", source=OURS, doc="Every hub branch of `[model] id` matching a glob (`global_step*`; `re:...` for a regex)."
    )
    paths: list[str] = setting(factory=list, source=OURS, doc="Local checkpoint directories.")
    local: str = setting("", source=OURS, doc="Every local directory matching a glob (`ckpts/step_*`).")
    steps: list[int] = setting(
        factory=list,
        ge=0,
        source=f"{PAPER} for the schedule (XGLM: powers of two, then every 5,000 steps); the BLOOM selection: {OURS}",
        doc="The steps of a template; with another source, keep only the names with these steps.",
    )
    start: int | None = setting(None, ge=0, source=OURS, doc="First step of `start`/`stop`/`every` (default: every).")
    stop: int | None = setting(None, ge=0, source=OURS, doc="Last step of `start`/`stop`/`every`, inclusive.")
    every: int | None = setting(None, ge=1, source=OURS, doc="Steps between two checkpoints of `start`/`stop`/`every`.")
    tokens_per_step: int | None = setting(
        None, ge=1, source=OURS, doc="Fills `tokens_seen` (step x this) where a checkpoint does not record it."
    )

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

    concepts: str = setting(
        "builtin",
        required=True,
        hint="'builtin' or a concept-set file",
        source=f"{OURS}: 45 CLDR concepts x 12 languages (the paper: ~200 concepts, 16 languages)",
        doc="`builtin` (the CLDR set shipped in the package) or a concept-set file (Parquet, TSV, CSV).",
    )
    languages: list[str] = setting(
        factory=list,
        unique=True,
        normalize=canonical_language,
        validate=language_code_problem,
        source=f"{OURS} (BLOOM's training languages among the set's twelve, in the BLOOM configs)",
        doc="The languages to use, as BCP 47 codes in any case; empty: every language of the concept set.",
    )
    concept_ids: list[str] = setting(
        factory=list, unique=True, source=OURS, doc="The concepts to use; empty: every concept of the set."
    )
    max_contexts: int = setting(
        0,
        ge=0,
        hint="0: all",
        source=OURS,
        doc="At most this many contexts per (concept, language), the first in sentence order; 0 keeps all.",
    )


@dataclass
class ExtractSpec:
    """Forward passes and pooling."""

    batch_tokens: int = setting(
        4096,
        ge=1,
        source=OURS,
        doc="Padded tokens per forward pass: the GPU memory of a pass; lower it on an out-of-memory error.",
    )
    max_length: int = setting(64, ge=2, source=OURS, doc="Tokens per context at most; longer contexts are cut.")
    layers: list[int] = setting(
        factory=list,
        ge=0,
        unique=True,
        hint="MLP block indices; empty: all",
        source=OURS,
        doc="The MLP blocks to hook (`--layers 0-5,12`); empty: all. Other layers are another analysis, another run.",
    )
    # See precompute.extract for how each pooling treats padding and a tokenizer-added start token.
    pooling: str = setting(
        "max",
        choices=POOLINGS,
        source=f'{PAPER}; {SELFCOND} `pool_responses(pooling_type="max")`; "mean" and "span": {OURS}',
        doc="A unit's response to a context: its max over the context's own tokens; `mean` over them, `span` "
        "the mean over the concept's span tokens.",
    )
    on_truncated_span: str = setting(
        "error",
        choices=("error", "drop"),
        source=OURS,
        doc="Contexts whose concept span `max_length` cuts off: `error` refuses the run naming them, `drop` leaves "
        "them out of every analysis (counted and reported per concept and language).",
    )
    ram_budget_gb: float = setting(
        0.0,
        ge=0,
        hint="0: half the available RAM",
        source=OURS,
        doc="Pooled activations larger than this many GB (0: half of the RAM available when the checkpoint "
        "starts) are memory-mapped to files in `spill_dir` instead of held in RAM.",
    )
    spill_dir: str = setting(
        "",
        source=OURS,
        doc="Where pooled activations over `ram_budget_gb` are memory-mapped (empty: the temporary folder); the "
        "files are unlinked at once.",
    )


@dataclass
class ProbeSpec:
    """Language-identification probes (logistic regression per layer)."""

    representations: list[str] = setting(
        factory=lambda: ["mean", "token"],
        choices=("mean", "token"),
        unique=True,
        source=f'{PAPER}: token-level hidden states; "mean": {OURS}',
        doc="`token`: one token's hidden state per context, drawn anew for every seed (start and padding tokens "
        "excluded); `mean`: the mean over the context's tokens.",
    )
    seeds: list[int] = setting(
        factory=lambda: [0, 1, 2],
        min_items=1,
        unique=True,
        ge=0,
        le=2**32 - 1,
        source=f"{PAPER}: three seeds",
        doc="One probe per seed: each draws its own tokens and train/test split.",
    )
    test_size: float = setting(0.25, gt=0, lt=1, source=OURS, doc="The share of contexts held out for testing.")
    C: float = setting(
        1.0, gt=0, hint="inverse regularisation strength", source=OURS, doc="The logistic regression's C."
    )
    max_iter: int = setting(100, ge=1, source=OURS, doc="The logistic regression's iterations at most.")
    max_train: int = setting(
        4000, ge=0, hint="0: no cap", source=OURS, doc="Training contexts per probe at most; 0: no cap."
    )
    control: bool = setting(
        True,
        source=f"Hewitt & Liang (2019) control task; {OURS_ADDED}",
        doc="A control task per layer for the token probes (a fixed random language per token type, learnt by the "
        "same probe), so that selectivity (accuracy - control accuracy) is visible; `mean` has no token type "
        "and gets none.",
    )


@dataclass
class ExpertSpec:
    """Expert units (Suau et al.): AP scoring and cross-lingual alignment."""

    top_k: int = setting(
        100,
        ge=1,
        paper=500,
        source=f"{PAPER}: ~500 experts per concept and language; the default 100 is {OURS} for small models",
        doc="The experts of a (concept, language): the units with the highest AP.",
    )
    min_langs: int = setting(
        3, ge=2, source=OURS, doc="A shared expert is a top-K expert of one concept in at least this many languages."
    )
    chunk_neurons: int = setting(8192, ge=1, source=OURS, doc="Units scored per AP chunk on the device.")
    # 999 makes the level 1 - permutation_quantile = 0.01 exact: 0.01 x 1,000 is a whole number of draws.
    permutations: int = setting(
        999,
        ge=0,
        le=1_000_000,
        hint="0: no permutation test",
        source=f"{OURS} (the level is exact because 0.01 x 1,000 is whole)",
        doc="Label shuffles per language and number of positives: the null of the best unit's AP; a cell's "
        "p-value is (1 + exceedances) / (permutations + 1). 0: no test.",
    )
    permutation_quantile: float = setting(
        0.99,
        gt=0,
        lt=1,
        hint="1 - the test's level (and the FDR of the correction)",
        source=OURS,
        doc="1 - the test's level: 0.99 tests at 0.01, which is also the FDR of the correction.",
    )
    correction: str = setting(
        "bh",
        choices=("bh", "none"),
        source=OURS,
        doc="Multiple comparisons over a checkpoint's cells, (concept, language) for the experts' AP and "
        "(concept, language pair) for the overlap: `bh` = Benjamini-Hochberg at FDR 1 - permutation_quantile; "
        "`none` = each cell on its own.",
    )
    overlap_k: int = setting(
        0,
        ge=0,
        hint="0: the experts' top_k",
        source=f"{OURS}; k = 50 with over_k: {WANG}",
        doc="The overlap of two languages' expert sets compares the top overlap_k of each (0: top_k; at most top_k).",
    )
    overlap_measure: str = setting(
        "jaccard",
        choices=("jaccard", "over_k"),
        source=f"Jaccard of the top-K: {OURS}; over_k = |A ∩ B| / k: {WANG}",
        doc="`jaccard` = |A ∩ B| / |A ∪ B|, `over_k` = |A ∩ B| / k. Both are stored; this is the one the report "
        "and the explorer lead with.",
    )

    def check(self, label: str) -> Iterator[str]:
        if self.overlap_k > self.top_k:
            yield f"{label} overlap_k = {self.overlap_k} is more than top_k = {self.top_k} (the experts kept per cell)"

    @property
    def overlap_top(self) -> int:
        """The K of the overlap: ``overlap_k``, or ``top_k`` where it is 0."""
        return self.overlap_k or self.top_k


@dataclass
class AnalysisSpec:
    """Compression, language-specific neurons (LAPE, see ``precompute.analysis.lape``) and the intervals."""

    lape_selection: str = setting(
        "tang",
        choices=("tang", "threshold"),
        source=f'{TANG}; "threshold": {OURS}',
        doc="`tang`: keep units with some p above the lape_filter_rate quantile of all probabilities, take the "
        "lape_quantile share of all units with the lowest entropy, assign each to every language whose p exceeds "
        "the lape_bar_ratio quantile. `threshold`: an absolute cut (lape_min_prob), one language per unit.",
    )
    lape_quantile: float = setting(
        0.01, gt=0, le=1, source=TANG, doc="Tang et al.'s top_rate: the share of all units, lowest entropy first."
    )
    lape_filter_rate: float = setting(
        0.95,
        ge=0,
        le=1,
        source=TANG,
        doc="Keep a unit only if some language's probability exceeds this quantile of all (unit, language) "
        "probabilities.",
    )
    lape_bar_ratio: float = setting(
        0.95,
        ge=0,
        le=1,
        source=TANG,
        doc="A selected unit belongs to every language whose probability exceeds this quantile.",
    )
    lape_min_prob: float = setting(
        0.05, ge=0, le=1, source=OURS, doc="`threshold` only: the activation probability a unit needs at least."
    )
    lape_max: float | None = setting(
        None,
        ge=0,
        le=1,
        source=OURS,
        doc="`threshold` only: if set, language-specific = normalised LAPE (LAPE / log L) <= this, instead of the "
        "lowest lape_quantile of all units, so the count itself can change over training.",
    )
    bootstrap: int = setting(
        1000,
        ge=0,
        le=100000,
        hint="0: no intervals",
        source=OURS_ADDED,
        doc="Bootstrap resamples (fixed seed) of the headline curves' 95 % intervals: over concepts; for probes "
        "over seeds and, within each, test contexts. 0: no intervals.",
    )


@dataclass
class DrilldownSpec:
    """Per-unit drill-downs for the Neuron page (crossling's own, not the paper's): what fires a unit, how it
    responds, what it writes. See ``precompute.analysis.drilldown``.

    The units: every top-K expert of any (concept, language) at the checkpoint plus every LAPE-selected
    unit, at most ``max_units`` of them (by best expert rank, then max AP; LAPE units count as rank 1).
    """

    enabled: bool = setting(True, source=OURS_ADDED, doc="Compute the Neuron page's drill-downs.")
    top_contexts: int = setting(
        10, ge=1, le=1000, hint="contexts per (unit, language)", source=OURS, doc="Top contexts per (unit, language)."
    )
    top_tokens: int = setting(
        10,
        ge=1,
        le=1000,
        hint="promoted and suppressed tokens per unit",
        source=OURS,
        doc="Output tokens a unit promotes, and as many it suppresses.",
    )
    hist_bins: int = setting(20, ge=2, le=200, source=OURS, doc="Bins of a unit's response histograms.")
    max_units: int = setting(
        2048, ge=0, hint="0: no cap", source=OURS, doc="Units drilled down per checkpoint at most; 0: no cap."
    )


@dataclass
class SteeringSpec:
    """Steering by concept neurons (Suau et al.'s self-conditioning); see ``precompute.steering.stage``.

    ``precompute run`` steers each checkpoint when ``enabled``; ``precompute steer STORE`` reads this section
    back from the store (``runs.config_json``) and lets its options override only what they name.
    """

    enabled: bool = setting(
        False, source=OURS, doc="Steer at every checkpoint of `precompute run` (`precompute steer` runs it later)."
    )
    concepts: list[str] = setting(
        factory=list,
        unique=True,
        source=f'{OURS} (the paper\'s Spanish "earthquake" is not in the CLDR concept set)',
        doc="The concepts to steer; empty: `run` steers the run's first three concepts, `steer` the three with "
        "most shared experts at the last checkpoint.",
    )
    source_langs: list[str] = setting(
        factory=list,
        unique=True,
        normalize=canonical_language,
        validate=language_code_problem,
        paper=["es"],
        source=f"{PAPER}: experts found in Spanish",
        doc="The languages whose experts are fixed; empty: the run's first language that is not English.",
    )
    n_neurons: list[int] = setting(
        factory=lambda: [0, 50],
        ge=0,
        min_items=1,
        unique=True,
        paper=[0, 500],
        source=f"{PAPER}: 500 units, with 0 as the unsteered control; the default 50 is {OURS} for small models",
        doc="How many of a concept's top experts are fixed, one run each; 0 is the unsteered control.",
    )
    seeds: list[int] = setting(
        factory=lambda: [0, 1, 2],
        min_items=1,
        unique=True,
        ge=0,
        le=2**32 - 1,
        paper=list(range(100)),
        source=f"{PAPER}: 100 seeds; the default three is {OURS}",
        doc="One generation per seed (and prompt, concept, source language and n_neurons).",
    )
    prompts: list[str] = setting(
        factory=lambda: [""],
        min_items=1,
        source=f"{PAPER}: generation from the start token",
        doc='The prompts generation continues; `""` is the start token alone.',
    )
    max_new_tokens: int = setting(24, ge=1, source=OURS, doc="Tokens generated per output.")
    value_mode: str = setting(
        "median",
        choices=("median", "zero"),
        source=f'{PAPER}; {SELFCOND} `on_p50`; "zero": {OURS}',
        doc="What the fixed units hold: `median`, the interpolated median of their pooled response on the concept's "
        "contexts (`neuron_ap.median_pos_act`); `zero`, 0.",
    )
    top_k: int = setting(
        0, ge=0, hint="0: no top-k cut", source=f"{SELFCOND} `generate_seq`", doc="Sampling's top-k cut; 0: none."
    )
    top_p: float = setting(0.9, gt=0, le=1, source=f"{PAPER}; {SELFCOND} `generate_seq`", doc="Nucleus sampling's p.")
    # Below 0.01, exp(logit / temperature) overflows float32 (the sampler's precision) for any logit above 0.89,
    # and far below it logit / temperature is infinite itself, so sampling ends in an error at the first
    # checkpoint; such a temperature is greedy decoding in all but name anyway.
    temperature: float = setting(
        0.8,
        gt=0,
        floor=0.01,
        floor_why="below it exp(logit / temperature) overflows float32 and sampling fails; it is greedy anyway",
        source=f"{PAPER}; {SELFCOND} `generate_seq`",
        doc="Sampling temperature.",
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

        The rule (which keys count) is ``precompute.run_identity``'s, shared with the writer and the merge.
        """
        from precompute.inputs.concepts import concept_set_path
        from precompute.run_identity import config_fingerprint

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
