"""The steering stage: choose a concept's experts, fix them during generation, label and keep every output.

For a concept c, a source language s and a checkpoint, the intervention takes the top-N expert units of c
found in s (rows of ``neuron_ap`` by rank: the highest average precision over all layers) and fixes them
(``precompute.steering.intervene``). ``value_mode='median'`` fixes a unit to ``neuron_ap.median_pos_act``,
the median of its pooled response on c's contexts in s (ml-selfcond's ``on_p50``); ``'zero'`` silences the
units instead (an ablation). N = 0 is the unsteered control: plain generation, which does not depend on the
concept, so it is generated once per checkpoint and stored under every (concept, source language), each
labelled for its concept (``precompute.steering.labels``).

One stage, two ways in, one set of settings (``precompute.config.SteeringSpec``, the run's ``[steering]``):

- ``precompute run`` with ``[steering] enabled = true``: the steering stage (``precompute.stages.steering``)
  calls :func:`steer_checkpoint` for each checkpoint with the model the loop has loaded and the experts the
  experts stage has just scored, and the rows are published with the checkpoint's other tables;
- ``precompute steer STORE`` (``precompute.pipeline.steer``): later, on a finished store, the same checkpoint
  loop with only the steering stage. It reads the run's ``[steering]`` back from ``runs.config_json``; an
  option overrides only what it names. A rerun replaces the rows of the same (checkpoint, concept, source
  language, n_neurons, value mode, prompt, seed) and keeps every other row.

Concepts default to the section's ``concepts``; where it names none, ``run`` steers the first three concepts of
the run (by id: stable over checkpoints and shards) and ``steer`` the three with most shared experts at the
last checkpoint (a finished store knows it). Source languages default to the first non-English language.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from precompute.config import SteeringSpec
from precompute.steering.intervene import Sampling, SteeringError, generate
from precompute.steering.labels import ConceptMatcher, output_languages, primary
from precompute.store.schema import polars_schema

__all__ = [
    "LABEL_SCHEMA",
    "REPLACE_KEYS",
    "STEERING_SCHEMA",
    "VALUE_MODES",
    "SteeringError",
    "SteeringPlan",
    "default_concepts",
    "default_source_lang",
    "plan_for_run",
    "plan_steering",
    "settings_from_store",
    "steering_config",
    "steering_location",
    "steer_checkpoint",
    "steering_rows",
    "summarise",
    "surface_forms",
    "unit_values",
]

#: The value modes a unit can be fixed with; declared once, in ``SteeringSpec.value_mode``.
VALUE_MODES: tuple[str, ...] = next(
    f.metadata["rule"].choices for f in dataclasses.fields(SteeringSpec) if f.name == "value_mode"
)

#: A row of table ``steering`` (without run_id): the labelled output, lingua's confidence, how it was sampled; the
#: columns and types are the store schema's (``precompute.store.schema``, declared once).
STEERING_SCHEMA = polars_schema("steering", without=("run_id",))
#: What :func:`steering_rows` gives for one batch of labelled outputs: the row up to its labels (the stage adds
#: lingua's confidence and the sampling settings).
LABEL_SCHEMA = dict(itertools.takewhile(lambda kv: kv[0] != "output_lang_confidence", STEERING_SCHEMA.items()))
REPLACE_KEYS = ["concept_id", "source_lang", "n_neurons", "value_mode", "prompt", "seed"]


# --------------------------------------------------------------------------------------------------
# Rows and summaries


def steering_rows(
    generations: Sequence[Mapping[str, Any]],
    labels: Sequence[str | None],
    *,
    checkpoint: str,
    concept_id: str,
    source_lang: str,
    n_neurons: int,
    value_mode: str,
    surface_forms: Mapping[str, Sequence[str] | set[str]] | ConceptMatcher,
) -> pl.DataFrame:
    """The labelled outputs of one batch of generations (``LABEL_SCHEMA``); the stage adds the rest."""
    if len(labels) != len(generations):
        raise ValueError(f"{len(generations)} generations but {len(labels)} language labels")
    matcher = surface_forms if isinstance(surface_forms, ConceptMatcher) else ConceptMatcher(surface_forms)
    rows = []
    for gen, lang in zip(generations, labels):
        hit, concept_lang = matcher(gen["output_text"], prefer=lang)
        rows.append(
            {
                "checkpoint": checkpoint,
                "concept_id": concept_id,
                "source_lang": source_lang,
                "prompt": gen["prompt"],
                "seed": int(gen["seed"]),
                "n_neurons": int(n_neurons),
                "value_mode": value_mode,
                "output_text": gen["output_text"],
                "output_lang": lang,
                "expresses_concept": hit,
                "concept_lang": concept_lang,
            }
        )
    return pl.DataFrame(rows, schema=LABEL_SCHEMA)


def summarise(frame: pl.DataFrame) -> pl.DataFrame:
    """Per (checkpoint, concept_id, source_lang, n_neurons) and output language, in long format.

    Columns: the four keys, n_outputs and share_concept (share of the group's outputs expressing the
    concept, any language), then per output_lang (null: undetected): share_outputs (share of the
    group's outputs in that language) and share_concept_outputs (share of the group's outputs that are
    in that language *and* express the concept). concept_lang_share: share of the group's outputs
    whose concept form was in that language.
    """
    keys = ["checkpoint", "concept_id", "source_lang", "n_neurons"]
    if frame.height == 0:
        return pl.DataFrame(
            schema={
                **{k: LABEL_SCHEMA[k] for k in keys},
                "n_outputs": pl.UInt32,
                "share_concept": pl.Float64,
                "output_lang": pl.Utf8,
                "share_outputs": pl.Float64,
                "share_concept_outputs": pl.Float64,
                "concept_lang_share": pl.Float64,
            }
        )
    groups = frame.group_by(keys).agg(
        pl.len().alias("n_outputs"), pl.col("expresses_concept").mean().alias("share_concept")
    )
    by_lang = frame.group_by([*keys, "output_lang"]).agg(
        pl.len().alias("_n"), pl.col("expresses_concept").sum().alias("_n_concept")
    )
    by_concept_lang = (
        frame.filter(pl.col("concept_lang").is_not_null())
        .group_by([*keys, "concept_lang"])
        .agg(pl.len().alias("_n_cl"))
        .rename({"concept_lang": "output_lang"})
    )
    out = (
        by_lang.join(by_concept_lang, on=[*keys, "output_lang"], how="full", coalesce=True, nulls_equal=True)
        .join(groups, on=keys, how="left")
        .with_columns(
            (pl.col("_n").fill_null(0) / pl.col("n_outputs")).alias("share_outputs"),
            (pl.col("_n_concept").fill_null(0) / pl.col("n_outputs")).alias("share_concept_outputs"),
            (pl.col("_n_cl").fill_null(0) / pl.col("n_outputs")).alias("concept_lang_share"),
        )
    )
    return out.select(
        *keys,
        "n_outputs",
        "share_concept",
        "output_lang",
        "share_outputs",
        "share_concept_outputs",
        "concept_lang_share",
    ).sort([*keys, "output_lang"], nulls_last=True)


# --------------------------------------------------------------------------------------------------
# Choosing what to steer


def surface_forms(sentences: pl.DataFrame, concept_ids: Sequence[str]) -> dict[str, dict[str, set[str]]]:
    """{concept: {lang: span texts}} from sentences (concept_id, lang, text, span_start, span_end)."""
    forms: dict[str, dict[str, set[str]]] = {c: {} for c in concept_ids}
    wanted = set(concept_ids)
    for concept, lang, text, start, end in sentences.select(
        "concept_id", "lang", "text", "span_start", "span_end"
    ).iter_rows():
        if concept in wanted and start is not None and end is not None:
            form = text[start:end].strip()
            if form:
                forms[concept].setdefault(lang, set()).add(form)
    return forms


def default_concepts(info: Mapping[str, Any], n: int = 3) -> list[str]:
    """The n concepts with the most shared experts at the last checkpoint (else the first n)."""
    counts = info["shared_counts"]
    ckpts = list(info["settings"].checkpoints) if "settings" in info else info["checkpoints"]["checkpoint"].to_list()
    if counts.height and ckpts:
        last = counts.filter(pl.col("checkpoint") == ckpts[-1]).sort(["n", "concept_id"], descending=[True, False])
        picked = last["concept_id"].to_list()[:n]
        if picked:
            return picked
    return list(info["concepts"])[:n]


def default_source_lang(langs: Sequence[str]) -> str:
    """The first language of the run that is not English."""
    for lang in langs:
        if primary(lang) != "en":
            return lang
    if not langs:
        raise SteeringError("the store has no languages")
    return langs[0]


@dataclass
class SteeringPlan:
    """What one steering pass does at each checkpoint (settings checked, forms compiled)."""

    concepts: list[str]
    source_langs: list[str]
    n_neurons: list[int]  # sorted, unique; 0 = the unsteered control
    seeds: list[int]
    prompts: list[str]
    value_mode: str
    sampling: Sampling
    matchers: dict[str, ConceptMatcher]

    @property
    def steered(self) -> list[int]:
        return [n for n in self.n_neurons if n > 0]

    @property
    def n_generations(self) -> int:
        """Generations per checkpoint (the progress total)."""
        per = len(self.prompts) * len(self.seeds)
        return per * ((0 in self.n_neurons) + len(self.steered) * len(self.concepts) * len(self.source_langs))


def plan_steering(
    spec: SteeringSpec,
    *,
    known_concepts: Sequence[str],
    langs: Sequence[str],
    sentences: pl.DataFrame,
    default: Sequence[str],
    where: str,
) -> SteeringPlan:
    """The plan for a checked ``SteeringSpec``; refuses concepts and source languages the run does not have.

    ``default``: the concepts to steer when the section names none (see the module docstring).
    """
    concepts = list(spec.concepts or default)
    unknown = [c for c in concepts if c not in set(known_concepts)]
    if unknown:
        shown = ", ".join(list(known_concepts)[:8]) + (", ..." if len(known_concepts) > 8 else "")
        raise SteeringError(f"unknown concept {unknown[0]!r} in {where} (known: {shown})")
    source_langs = list(spec.source_langs or [default_source_lang(langs)])
    bad = [x for x in source_langs if x not in set(langs)]
    if bad:
        raise SteeringError(f"unknown source language {bad[0]!r} in {where} (run languages: {', '.join(langs)})")
    forms = surface_forms(sentences, concepts)
    return SteeringPlan(
        concepts=concepts,
        source_langs=source_langs,
        n_neurons=sorted({int(n) for n in spec.n_neurons}),
        seeds=[int(s) for s in spec.seeds],
        prompts=[str(p) for p in spec.prompts],
        value_mode=spec.value_mode,
        sampling=Sampling.from_spec(spec),
        matchers={c: ConceptMatcher(forms.get(c, {})) for c in concepts},
    )


def plan_for_run(
    spec: SteeringSpec, concept_set: Any, languages: Sequence[str] = (), where: str = "config"
) -> SteeringPlan:
    """The plan ``precompute run`` follows at every checkpoint (``concept_set``: the run's ``ConceptSet``).

    ``languages``: the run's ``[data] languages`` (their order decides the default source language).
    """
    have = concept_set.languages["lang"].to_list()
    langs = [x for x in languages if x in have] or have
    known = sorted(concept_set.concepts["concept_id"].to_list())
    return plan_steering(
        spec, known_concepts=known, langs=langs, sentences=concept_set.sentences, default=known[:3], where=where
    )


def unit_values(experts: pl.DataFrame, value_mode: str) -> list[tuple[int, int, float]]:
    """(layer, unit, value) triples for ``fixed_unit_hooks`` from neuron_ap rows."""
    if value_mode not in VALUE_MODES:
        raise SteeringError(f"value mode must be one of {', '.join(VALUE_MODES)}, got {value_mode!r}")
    values = experts["median_pos_act"].to_list() if value_mode == "median" else [0.0] * experts.height
    return [(int(a), int(b), float(v)) for a, b, v in zip(experts["layer"], experts["unit"], values)]


# --------------------------------------------------------------------------------------------------
# One checkpoint


def _rows(generations: list[dict[str, Any]], plan: SteeringPlan, concept: str, **keys: Any) -> pl.DataFrame:
    labels = output_languages([g["output_text"] for g in generations])
    frame = steering_rows(
        generations,
        [code for code, _ in labels],
        concept_id=concept,
        value_mode=plan.value_mode,
        surface_forms=plan.matchers[concept],
        **keys,
    )
    s = plan.sampling
    return frame.with_columns(
        pl.Series("output_lang_confidence", [conf for _, conf in labels], dtype=pl.Float64),
        pl.lit(s.top_k, dtype=pl.Int32).alias("top_k"),
        pl.lit(s.top_p, dtype=pl.Float64).alias("top_p"),
        pl.lit(s.temperature, dtype=pl.Float64).alias("temperature"),
        pl.lit(s.max_new_tokens, dtype=pl.Int32).alias("max_new_tokens"),
    ).select(list(STEERING_SCHEMA))


def _check_fits(loaded: Any, plan: SteeringPlan, checkpoint: str) -> None:
    """The last guard before generating: every prompt plus ``max_new_tokens`` fits the model's positions (the
    callers check it first, naming the setting; this catches a checkpoint whose context is shorter)."""
    from precompute.config import RunConfig, SteeringSpec
    from precompute.validate import shape_of, steering_problems

    cfg = RunConfig(steering=SteeringSpec(prompts=list(plan.prompts), max_new_tokens=plan.sampling.max_new_tokens))
    cfg.where = "steering"
    shape = shape_of(loaded.model, f"checkpoint {checkpoint!r}", getattr(loaded, "tokenizer", None))
    for problem in steering_problems(cfg, shape):
        raise SteeringError(problem)


def steer_checkpoint(
    loaded: Any,
    layout: Any,
    plan: SteeringPlan,
    experts: pl.DataFrame,
    *,
    checkpoint: str,
    progress: Callable[[int], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """Every generation of ``plan`` at one loaded checkpoint, as rows of table ``steering`` (``STEERING_SCHEMA``).

    ``experts``: neuron_ap rows of this checkpoint (lang, concept_id, layer, unit, rank, median_pos_act; layer
    is the model's block index). ``layout``: the checkpoint's ``precompute.model.ModelLayout`` (where the units
    are hooked). A (concept, source) without experts is skipped with a note; N larger than the experts stored
    (``[experts] top_k``) steers with all of them, and the row says how many.
    """
    note = note or (lambda _message: None)
    tick = progress or (lambda _n=1: None)
    _check_fits(loaded, plan, checkpoint)
    per_gen = len(plan.prompts) * len(plan.seeds)
    parts = []
    if 0 in plan.n_neurons:
        plain = generate(loaded, plan.prompts, plan.seeds, plan.sampling, layout=layout, progress=tick)
        for concept in plan.concepts:
            for src in plan.source_langs:
                parts.append(_rows(plain, plan, concept, checkpoint=checkpoint, source_lang=src, n_neurons=0))
    for concept in plan.concepts:
        for src in plan.source_langs:
            if not plan.steered:
                continue
            mine = experts.filter((pl.col("concept_id") == concept) & (pl.col("lang") == src))
            mine = mine.sort(["rank", "layer", "unit"]).head(max(plan.steered))
            if mine.height == 0:
                note(f"no experts for {concept!r} in {src!r} at {checkpoint}; skipped")
                tick(per_gen * len(plan.steered))
                continue
            for n in plan.steered:
                if n > mine.height:
                    note(
                        f"{checkpoint}: only {mine.height} experts stored for {concept!r}/{src!r} "
                        f"([experts] top_k); steering with {mine.height}, not {n}"
                    )
                chosen = mine.head(n)
                outs = generate(
                    loaded,
                    plan.prompts,
                    plan.seeds,
                    plan.sampling,
                    unit_values(chosen, plan.value_mode),
                    layout=layout,
                    progress=tick,
                )
                parts.append(
                    _rows(outs, plan, concept, checkpoint=checkpoint, source_lang=src, n_neurons=chosen.height)
                )
    new = pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=STEERING_SCHEMA)
    return new.unique(subset=REPLACE_KEYS, keep="last", maintain_order=True)


# --------------------------------------------------------------------------------------------------
# ``precompute steer STORE``: the stage on a finished store


def settings_from_store(
    info: Mapping[str, Any], overrides: Mapping[str, Any], *, where: str, options: Mapping[str, str] | None = None
) -> SteeringSpec:
    """The run's ``[steering]`` (from ``runs.config_json``) with ``overrides`` (key -> value) applied, checked.

    Checked by the config's own declared rules, so a bad option fails exactly as a bad config key does;
    ``options`` (key -> the option as typed, e.g. ``'--n-neurons'``) names the option in the message.
    """
    return steering_config(info, overrides, where=where, options=options).steering


def steering_config(
    info: Mapping[str, Any], overrides: Mapping[str, Any], *, where: str, options: Mapping[str, str] | None = None
) -> Any:
    """The ``RunConfig`` that ``precompute steer`` runs with: the run's ``[steering]`` with ``overrides``, checked
    (its ``where`` and ``overridden`` name the settings in later messages)."""
    from precompute.config import config_from_dict

    stored = dict((info["config"] or {}).get("steering") or {})
    model = {"id": info.get("model_id") or "model"}
    cfg = config_from_dict({"model": model, "steering": stored}, where=f"{where} (runs.config_json)")
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg.steering, key, list(value) if isinstance(value, (tuple, range)) else value)
    cfg.where = where
    cfg.overridden = {f"steering.{k}": v for k, v in (options or {}).items()}
    cfg.validate()
    return cfg


def steering_location(
    store: Path,
    checkpoint: str,
    source: str,
    revision: str | None,
    config_dir: str | Path | None,
    locate: Callable[[str, str | None, str | Path | None], str],
) -> str:
    """Where a recorded checkpoint loads from. A local one (recorded without a revision) must be a folder here:
    one that is not found is refused, saying where it was looked for and how to point at it, and is never
    asked of the hub (a relative path such as ``ckpts/step_3`` looks like a hub id ``owner/name``)."""
    location = locate(source, revision, config_dir)
    if revision is not None:
        from precompute.checkpoints.resolve import looks_like_local_path

        if looks_like_local_path(source) and not Path(location).expanduser().is_dir():
            raise SteeringError(
                f"{store}: checkpoint {checkpoint!r}: {source!r} is not a hub id (owner/name) and no such local "
                f"folder exists ({Path(location).expanduser().resolve()}); the hub was not asked"
            )
        return location
    if Path(location).expanduser().is_dir():
        return location
    base = Path(config_dir) if config_dir is not None else Path.cwd()
    tried = [Path(source).expanduser()] if Path(source).expanduser().is_absolute() else [base / source]
    if config_dir is not None and not Path(source).is_absolute():
        tried.append(Path.cwd() / source)  # checkpoint_location falls back to the current folder
    looked = " and ".join(str(p.resolve()) for p in dict.fromkeys(tried))
    hint = (
        "the store records local checkpoints relative to the run config's folder: pass --config-dir with that folder"
        if not Path(source).is_absolute()
        else "the folder has moved or was deleted"
    )
    raise SteeringError(
        f"{store}: checkpoint {checkpoint!r}: local checkpoint folder {source!r} not found (looked in {looked}); "
        f"{hint} (the hub was not asked)"
    )
