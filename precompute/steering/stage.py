"""Steering by concept neurons (Suau et al.'s self-conditioning), and labelling what comes out.

For a concept c, a source language s and a checkpoint, the intervention takes the top-N expert units
of c found in s (rows of ``neuron_ap``, by rank: the highest average precision over all layers) and
**fixes** each unit's activation -- the input of its layer's MLP down projection, see
``precompute.model.load`` -- to a value at every position of the sequence (prompt and generated tokens),
as Suau et al.'s ``force_units_hooks`` does by default. ``value_mode='median'`` fixes a unit to its
median pooled activation on c's contexts in s (``neuron_ap.median_pos_act``, pooling as configured
for the run); ``'zero'`` silences the units instead (an ablation).

Generation samples (``do_sample=True``) with the nucleus settings of Suau et al.'s ``generate_seq``
(top_p 0.9, no top-k cut, temperature 0.8) unless told otherwise, one sequence at a time with
``torch.manual_seed(seed)`` before each, so one (prompt, seed) gives the same text with and without
N = 0 units, and the steered and unsteered outputs differ only by the intervention. An empty prompt
starts from the beginning-of-sequence token (BOS, else EOS as GPT-2 does); a non-empty prompt is
prefixed with it too (when the tokenizer has one and did not add it).

Each output is labelled with

- ``output_lang``: its language by lingua-language-detector, restricted to the run's languages
  (None for an empty or letter-less output);
- ``expresses_concept`` / ``concept_lang``: whether one of the concept's surface forms in any of the
  run's languages occurs in it, and in which language. Surface forms are the concept's span texts
  in the concept set (``sentences.text[span_start:span_end]``). A form matches case-sensitively as
  written, or with its first letter upper-cased (sentence starts); a word-script form must stand
  between non-letters, a form that starts/ends with a digit must not touch another digit, and forms
  in scripts written without spaces (Han, kana, Thai, ...) and in Hangul match as substrings. Where forms of
  several languages match, the output's own language wins, then the longest form. Inflected forms
  that the concept set never used are not recognised (precision over recall).

``precompute steer STORE`` (``run_steering``) runs this for chosen concepts over the run's
checkpoints and writes the table ``steering``; a rerun replaces the rows of the same (checkpoint,
concept, source language, n_neurons, value mode, prompt, seed) and keeps every other row. Unsteered
outputs (N = 0) do not depend on the concept: they are generated once per checkpoint and stored
under every (concept, source language) of the run, each labelled for its concept.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch

DEFAULT_TOP_K = 0
DEFAULT_TOP_P = 0.9
DEFAULT_TEMPERATURE = 0.8
VALUE_MODES = ("median", "zero")

STEERING_SCHEMA = {
    "checkpoint": pl.Utf8,
    "concept_id": pl.Utf8,
    "source_lang": pl.Utf8,
    "prompt": pl.Utf8,
    "seed": pl.Int32,
    "n_neurons": pl.Int32,
    "value_mode": pl.Utf8,
    "output_text": pl.Utf8,
    "output_lang": pl.Utf8,
    "expresses_concept": pl.Boolean,
    "concept_lang": pl.Utf8,
}
REPLACE_KEYS = ["concept_id", "source_lang", "n_neurons", "value_mode", "prompt", "seed"]


class SteeringError(ValueError):
    """A steering request that cannot be run, with a one-line reason."""


# --------------------------------------------------------------------------------------------------
# The intervention


@contextlib.contextmanager
def fixed_unit_hooks(sites: Sequence[Any], units: Sequence[tuple[int, int, float]]) -> Iterator[None]:
    """Within the block, fix MLP units to values: ``units`` are (layer, unit, value) triples.

    ``sites`` are ``precompute.model.load.MLPSite`` objects (``layer``, ``module``, ``n_neurons``); a
    forward pre-hook on each involved site module replaces ``args[0][..., unit]`` by the value at every
    position (out of place, in the activation's dtype). With no units, nothing is hooked at all.
    Hooks are removed on exit, also after an exception.
    """
    by_site = {int(s.layer): s for s in sites}
    per_layer: dict[int, dict[int, float]] = defaultdict(dict)
    for layer, unit, value in units:
        layer, unit = int(layer), int(unit)
        site = by_site.get(layer)
        if site is None:
            raise SteeringError(f"layer {layer} has no MLP site (model has layers {sorted(by_site)})")
        if not 0 <= unit < int(site.n_neurons):
            raise SteeringError(f"unit {unit} is out of range for layer {layer} ({site.n_neurons} neurons)")
        per_layer[layer][unit] = float(value)

    handles = []
    try:
        for layer, fixed in sorted(per_layer.items()):
            idx = torch.tensor(sorted(fixed), dtype=torch.long)
            vals = torch.tensor([fixed[u] for u in sorted(fixed)], dtype=torch.float32)
            handles.append(by_site[layer].module.register_forward_pre_hook(_fixing_hook(idx, vals)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _fixing_hook(idx: torch.Tensor, vals: torch.Tensor) -> Callable:
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(_module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        key = (x.device, x.dtype)
        if key not in cache:
            cache[key] = (idx.to(x.device), vals.to(device=x.device, dtype=x.dtype))
        i, v = cache[key]
        x = x.index_copy(-1, i, v.expand(*x.shape[:-1], len(i)))
        return (x, *args[1:])

    return hook


# --------------------------------------------------------------------------------------------------
# Generation


def _start_ids(tokenizer: Any, prompt: str) -> list[int]:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = tokenizer(prompt)["input_ids"] if prompt else []
    if start is not None and (not ids or ids[0] != start):
        ids = [start] + list(ids)
    if not ids:
        raise SteeringError("the tokenizer has neither a BOS nor an EOS token: give a non-empty prompt")
    return list(ids)


def generate(
    loaded: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    max_new_tokens: int,
    units: Sequence[tuple[int, int, float]] = (),
    *,
    sites: Sequence[Any] | None = None,
    top_k: int = DEFAULT_TOP_K,
    top_p: float = DEFAULT_TOP_P,
    temperature: float = DEFAULT_TEMPERATURE,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Sample one continuation per (prompt, seed), with ``units`` fixed (none: plain generation).

    ``loaded``: a ``precompute.model.load.LoadedModel`` (model, tokenizer, device). Returns dicts with
    prompt, seed, output_text (the new tokens only, special tokens dropped) and n_new_tokens, in the
    order prompts x seeds. ``sites`` defaults to ``precompute.model.load.find_mlp_sites(model)``.
    """
    if max_new_tokens < 1:
        raise SteeringError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    model, tok = loaded.model, loaded.tokenizer
    device = getattr(loaded, "device", None) or next(model.parameters()).device
    if units and sites is None:
        from precompute.model import find_mlp_sites

        sites = find_mlp_sites(model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    settings = dict(
        do_sample=True,
        top_k=int(top_k),
        top_p=float(top_p),
        temperature=float(temperature),
        max_new_tokens=int(max_new_tokens),
        pad_token_id=pad_id,
    )
    out: list[dict[str, Any]] = []
    with fixed_unit_hooks(sites or [], units), torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([_start_ids(tok, prompt)], dtype=torch.long, device=device)
            mask = torch.ones_like(ids)
            for seed in seeds:
                torch.manual_seed(int(seed))
                seq = model.generate(input_ids=ids, attention_mask=mask, **settings)
                new = seq[0, ids.shape[1]:].tolist()
                out.append(
                    {
                        "prompt": prompt,
                        "seed": int(seed),
                        "output_text": tok.decode(new, skip_special_tokens=True),
                        "n_new_tokens": len(new),
                    }
                )
                if progress is not None:
                    progress(1)
    return out


# --------------------------------------------------------------------------------------------------
# Labelling


_LANG_ALIASES = {"no": "nb", "iw": "he", "in": "id", "tl": "tl"}


def _primary(code: str) -> str:
    return re.split(r"[-_]", code.strip())[0].lower()


class LanguageLabeler:
    """lingua-language-detector restricted to a run's languages, built once; labels as the run's codes.

    Codes are matched to lingua by their primary ISO 639-1 subtag ('pt-BR' -> 'pt', 'no' -> 'nb');
    languages lingua does not know are listed in ``unsupported`` and never returned.
    """

    def __init__(self, langs: Sequence[str]):
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        self.to_run: dict[str, str] = {}
        self.unsupported: list[str] = []
        chosen = []
        for code in langs:
            primary = _LANG_ALIASES.get(_primary(code), _primary(code))
            try:
                language = Language.from_iso_code_639_1(IsoCode639_1.from_str(primary))
            except (ValueError, AttributeError):
                self.unsupported.append(code)
                continue
            key = language.iso_code_639_1.name.lower()
            if key not in self.to_run:
                self.to_run[key] = code
                chosen.append(language)
        self.detector = LanguageDetectorBuilder.from_languages(*chosen).build() if chosen else None

    def __call__(self, texts: Sequence[str]) -> list[str | None]:
        results: list[str | None] = [None] * len(texts)
        todo = [i for i, t in enumerate(texts) if any(ch.isalpha() for ch in t)]
        if self.detector is None or not todo:
            return results
        found = self.detector.detect_languages_in_parallel_of([texts[i] for i in todo])
        for i, language in zip(todo, found):
            if language is not None:
                results[i] = self.to_run.get(language.iso_code_639_1.name.lower())
        return results


@functools.lru_cache(maxsize=8)
def _labeler(langs: tuple[str, ...]) -> LanguageLabeler:
    return LanguageLabeler(langs)


def label_language(texts: Sequence[str], langs: Sequence[str]) -> list[str | None]:
    """The language of each text among ``langs`` (codes as given), None where lingua cannot tell."""
    return _labeler(tuple(langs))(list(texts))


# Scripts written without spaces between words, and Hangul, whose particles attach to the noun.
_NO_SPACE_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def _no_space_char(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(_NO_SPACE_SCRIPTS)


def _edge(ch: str, side: str) -> str:
    if ch.isdigit():
        return r"(?<!\d)" if side == "left" else r"(?!\d)"
    if ch.isalnum() and not _no_space_char(ch):
        return r"(?<!\w)" if side == "left" else r"(?!\w)"
    return ""


def _form_pattern(form: str) -> str:
    body = re.escape(form)
    return _edge(form[0], "left") + body + _edge(form[-1], "right")


class ConceptMatcher:
    """Compiled surface forms of one concept, per language (see the module docstring for the rules)."""

    def __init__(self, surface_forms: Mapping[str, Sequence[str] | set[str]]):
        self.patterns: list[tuple[str, int, re.Pattern]] = []
        for lang, forms in surface_forms.items():
            variants = set()
            for form in forms:
                form = form.strip()
                if not form:
                    continue
                variants.add(form)
                variants.add(form[0].upper() + form[1:])
            for form in sorted(variants, key=lambda f: (-len(f), f)):
                self.patterns.append((lang, len(form), re.compile(_form_pattern(form))))

    def __call__(self, text: str, prefer: str | None = None) -> tuple[bool, str | None]:
        best: tuple[str, int] | None = None
        for lang, length, pattern in self.patterns:
            if pattern.search(text):
                if lang == prefer:
                    return True, lang
                if best is None or length > best[1]:
                    best = (lang, length)
        return (True, best[0]) if best else (False, None)


def expresses_concept(
    text: str, surface_forms: Mapping[str, Sequence[str] | set[str]], prefer: str | None = None
) -> tuple[bool, str | None]:
    """Whether ``text`` contains a surface form of the concept, and the language of the form found.

    ``surface_forms``: {lang: forms}. ``prefer`` (e.g. the text's detected language) wins ties.
    """
    return ConceptMatcher(surface_forms)(text, prefer)


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
    """Rows of table ``steering`` (without run_id) for one batch of generations and their language labels."""
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
    return pl.DataFrame(rows, schema=STEERING_SCHEMA)


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
                **{k: STEERING_SCHEMA[k] for k in keys},
                "n_outputs": pl.UInt32, "share_concept": pl.Float64, "output_lang": pl.Utf8,
                "share_outputs": pl.Float64, "share_concept_outputs": pl.Float64,
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
        *keys, "n_outputs", "share_concept", "output_lang", "share_outputs", "share_concept_outputs",
        "concept_lang_share",
    ).sort([*keys, "output_lang"], nulls_last=True)


# --------------------------------------------------------------------------------------------------
# The stage


def _query(con: Any, sql: str, params: list, schema: Mapping[str, Any]) -> pl.DataFrame:
    """A query's rows as a polars frame of the given schema (independent of duckdb's arrow/polars API)."""
    rows = con.execute(sql, params).fetchall()
    return pl.DataFrame(rows, schema=dict(schema), orient="row")


def _read_store(store_path: Path) -> dict[str, Any]:
    from precompute.store import StoreError, checkpoint_order, open_readonly

    con = open_readonly(store_path)
    try:
        runs = con.execute("SELECT run_id, config_json FROM runs ORDER BY run_id").fetchall()
        if not runs:
            raise StoreError(f"{store_path}: holds no run yet (run `precompute run` first)")
        if len(runs) > 1:
            raise StoreError(f"{store_path}: holds several runs ({', '.join(r[0] for r in runs)})")
        run_id, config_json = runs[0]
        checkpoints = _query(
            con,
            "SELECT checkpoint, step, revision, source FROM checkpoints WHERE run_id = ? "
            f"ORDER BY {checkpoint_order()}",
            [run_id],
            {"checkpoint": pl.Utf8, "step": pl.Int64, "revision": pl.Utf8, "source": pl.Utf8},
        )
        sentence_langs = [r[0] for r in con.execute("SELECT DISTINCT lang FROM sentences ORDER BY lang").fetchall()]
        concepts = [r[0] for r in con.execute("SELECT concept_id FROM concepts ORDER BY concept_id").fetchall()]
        shared_counts = _query(
            con,
            "SELECT checkpoint, concept_id, count(*) AS n FROM shared_experts WHERE run_id = ? "
            "GROUP BY checkpoint, concept_id",
            [run_id],
            {"checkpoint": pl.Utf8, "concept_id": pl.Utf8, "n": pl.Int64},
        )
    finally:
        con.close()
    config = json.loads(config_json) if config_json else {}
    cfg_langs = list((config.get("data") or {}).get("languages") or [])
    langs = [x for x in cfg_langs if x in sentence_langs] or sentence_langs
    return {
        "run_id": run_id,
        "config": config,
        "checkpoints": checkpoints,
        "langs": langs,
        "concepts": concepts,
        "shared_counts": shared_counts,
    }


def surface_forms_from_store(store_path: Path, concept_ids: Sequence[str]) -> dict[str, dict[str, set[str]]]:
    """{concept: {lang: span texts}} from the store's sentences."""
    from precompute.store import open_readonly

    con = open_readonly(store_path)
    try:
        rows = con.execute(
            "SELECT concept_id, lang, text, span_start, span_end FROM sentences "
            "WHERE span_start IS NOT NULL AND span_end IS NOT NULL AND list_contains(?, concept_id)",
            [list(concept_ids)],
        ).fetchall()
    finally:
        con.close()
    forms: dict[str, dict[str, set[str]]] = {c: defaultdict(set) for c in concept_ids}
    for concept, lang, text, start, end in rows:
        form = text[start:end].strip()
        if form:
            forms[concept][lang].add(form)
    return {c: dict(v) for c, v in forms.items()}


def default_concepts(info: dict[str, Any], n: int = 3) -> list[str]:
    """The n concepts with the most shared experts at the last checkpoint (else the first n)."""
    counts = info["shared_counts"]
    ckpts = info["checkpoints"]["checkpoint"].to_list()
    if counts.height and ckpts:
        last = counts.filter(pl.col("checkpoint") == ckpts[-1]).sort(["n", "concept_id"], descending=[True, False])
        picked = last["concept_id"].to_list()[:n]
        if picked:
            return picked
    return info["concepts"][:n]


def default_source_lang(langs: Sequence[str]) -> str:
    """The first language of the run that is not English."""
    for lang in langs:
        if _primary(lang) != "en":
            return lang
    if not langs:
        raise SteeringError("the store has no languages")
    return langs[0]


def _experts(
    store_path: Path, run_id: str, checkpoint: str, lang: str, concept: str, n: int
) -> pl.DataFrame:
    from precompute.store import open_readonly

    con = open_readonly(store_path)
    try:
        return _query(
            con,
            "SELECT layer, unit, median_pos_act, ap, rank FROM neuron_ap WHERE run_id = ? AND checkpoint = ? "
            "AND lang = ? AND concept_id = ? ORDER BY rank, layer, unit LIMIT ?",
            [run_id, checkpoint, lang, concept, int(n)],
            {"layer": pl.Int32, "unit": pl.Int32, "median_pos_act": pl.Float64, "ap": pl.Float64, "rank": pl.Int32},
        )
    finally:
        con.close()


def unit_values(experts: pl.DataFrame, value_mode: str) -> list[tuple[int, int, float]]:
    """(layer, unit, value) triples for ``fixed_unit_hooks`` from neuron_ap rows."""
    if value_mode not in VALUE_MODES:
        raise SteeringError(f"value mode must be one of {', '.join(VALUE_MODES)}, got {value_mode!r}")
    values = experts["median_pos_act"].to_list() if value_mode == "median" else [0.0] * experts.height
    return [(int(a), int(b), float(v)) for a, b, v in zip(experts["layer"], experts["unit"], values)]


def _merge_existing(store_path: Path, run_id: str, checkpoint: str, new: pl.DataFrame) -> pl.DataFrame:
    from precompute.store import open_readonly

    con = open_readonly(store_path)
    try:
        old = _query(
            con,
            f"SELECT {', '.join(STEERING_SCHEMA)} FROM steering WHERE run_id = ? AND checkpoint = ?",
            [run_id, checkpoint],
            STEERING_SCHEMA,
        )
    finally:
        con.close()
    if old.height:
        old = old.join(new.select(REPLACE_KEYS).unique(), on=REPLACE_KEYS, how="anti", nulls_equal=True)
        new = pl.concat([old, new], how="vertical")
    return new


def run_steering(
    store_path: str | Path,
    *,
    concepts: Sequence[str] | None = None,
    source_langs: Sequence[str] | None = None,
    n_neurons: Sequence[int] = (0, 50),
    seeds: Sequence[int] = (0, 1, 2),
    prompts: Sequence[str] = ("",),
    max_new_tokens: int = 24,
    checkpoints: Sequence[str] | None = None,
    device: str = "auto",
    dtype: str | None = None,
    value_mode: str = "median",
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float | None = None,
    console: Any = None,
    load: Callable[..., Any] | None = None,
) -> pl.DataFrame:
    """Steer every chosen checkpoint of the store's run and write table ``steering``; returns ``summarise``.

    Reads the run's checkpoints (source = local dir or hub id, revision), experts (neuron_ap) and
    sentences (surface forms) read-only; loads each checkpoint with ``precompute.model.load.load_checkpoint``
    (``load`` overrides it, for tests); publishes each checkpoint's rows in one transaction. Concepts
    default to the run config's ``[steering] concepts``, else the 3 with most shared experts at the last
    checkpoint; source languages to ``[steering] source_langs``, else the first non-English language;
    sampling settings (top_k, top_p, temperature) left as None to the run config's ``[steering]``,
    else Suau et al.'s values.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from precompute.store import StoreError, StoreWriter

    store_path = Path(store_path)
    console = console or Console(stderr=True)
    info = _read_store(store_path)
    run_id, langs = info["run_id"], info["langs"]
    steer_cfg = info["config"].get("steering") or {}

    concepts = list(concepts or steer_cfg.get("concepts") or default_concepts(info))
    unknown = [c for c in concepts if c not in info["concepts"]]
    if unknown:
        shown = ", ".join(info["concepts"][:8]) + (", ..." if len(info["concepts"]) > 8 else "")
        raise SteeringError(f"unknown concept {unknown[0]!r} in {store_path} (known: {shown})")
    source_langs = list(source_langs or steer_cfg.get("source_langs") or [default_source_lang(langs)])
    bad = [x for x in source_langs if x not in langs]
    if bad:
        raise SteeringError(f"unknown source language {bad[0]!r} in {store_path} (run languages: {', '.join(langs)})")
    n_list = sorted({int(x) for x in n_neurons})
    if not n_list or n_list[0] < 0:
        raise SteeringError(f"n_neurons must be non-negative integers, got {list(n_neurons)}")
    seeds, prompts = [int(s) for s in seeds], [str(p) for p in prompts]
    if not seeds:
        raise SteeringError("at least one seed is needed")
    if not prompts:
        raise SteeringError("at least one prompt is needed (an empty prompt starts from BOS)")
    if value_mode not in VALUE_MODES:
        raise SteeringError(f"value mode must be one of {', '.join(VALUE_MODES)}, got {value_mode!r}")
    ck = info["checkpoints"]
    if ck.height == 0:
        raise StoreError(f"{store_path}: the run has no finished checkpoint yet")
    if checkpoints:
        missing = [c for c in checkpoints if c not in ck["checkpoint"].to_list()]
        if missing:
            raise SteeringError(
                f"unknown checkpoint {missing[0]!r} in {store_path} (have: {', '.join(ck['checkpoint'].to_list())})"
            )
        ck = ck.filter(pl.col("checkpoint").is_in(list(checkpoints)))
    if dtype is None:
        dtype = (info["config"].get("model") or {}).get("dtype") or "auto"
    if load is None:
        from precompute.model import load_checkpoint as load

    forms = surface_forms_from_store(store_path, concepts)
    matchers = {c: ConceptMatcher(forms.get(c, {})) for c in concepts}
    labeler = _labeler(tuple(langs))
    if labeler.unsupported:
        console.print(f"[yellow]note:[/] lingua cannot label {', '.join(labeler.unsupported)}; never reported")
    per_gen = len(prompts) * len(seeds)
    n_steered = sum(1 for n in n_list if n > 0)
    total = ck.height * per_gen * ((1 if 0 in n_list else 0) + n_steered * len(concepts) * len(source_langs))
    gen_kw = dict(
        top_k=int(top_k if top_k is not None else steer_cfg.get("top_k", DEFAULT_TOP_K)),
        top_p=float(top_p if top_p is not None else steer_cfg.get("top_p", DEFAULT_TOP_P)),
        temperature=float(
            temperature if temperature is not None else steer_cfg.get("temperature", DEFAULT_TEMPERATURE)
        ),
    )

    frames = []
    with Progress(
        TextColumn("[bold]steer[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as bar:
        task = bar.add_task("", total=total)
        tick = functools.partial(bar.advance, task)
        for checkpoint, _step, revision, source in ck.iter_rows():
            bar.update(task, description=checkpoint)
            loaded = load(source, revision, device=device, dtype=dtype)
            from precompute.model import find_mlp_sites

            sites = find_mlp_sites(loaded.model)
            parts = []
            if 0 in n_list:
                plain = generate(loaded, prompts, seeds, max_new_tokens, sites=sites, progress=tick, **gen_kw)
                labels = labeler([g["output_text"] for g in plain])
                for concept in concepts:
                    for src in source_langs:
                        parts.append(
                            steering_rows(
                                plain, labels, checkpoint=checkpoint, concept_id=concept, source_lang=src,
                                n_neurons=0, value_mode=value_mode, surface_forms=matchers[concept],
                            )
                        )
            for concept in concepts:
                for src in source_langs:
                    wanted = [n for n in n_list if n > 0]
                    if not wanted:
                        continue
                    experts = _experts(store_path, run_id, checkpoint, src, concept, max(wanted))
                    if experts.height == 0:
                        console.print(
                            f"[yellow]skip:[/] no experts for {concept!r} in {src!r} at {checkpoint}"
                        )
                        bar.advance(task, per_gen * len(wanted))
                        continue
                    for n in wanted:
                        if n > experts.height:
                            console.print(
                                f"[yellow]note:[/] {checkpoint}: only {experts.height} experts stored for "
                                f"{concept!r}/{src!r} (top_k); steering with {experts.height}, not {n}"
                            )
                        chosen = experts.head(n)
                        units = unit_values(chosen, value_mode)
                        outs = generate(
                            loaded, prompts, seeds, max_new_tokens, units, sites=sites, progress=tick, **gen_kw
                        )
                        parts.append(
                            steering_rows(
                                outs, labeler([g["output_text"] for g in outs]), checkpoint=checkpoint,
                                concept_id=concept, source_lang=src, n_neurons=chosen.height,
                                value_mode=value_mode, surface_forms=matchers[concept],
                            )
                        )
            del loaded, sites
            new = pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=STEERING_SCHEMA)
            new = new.unique(subset=REPLACE_KEYS, keep="last", maintain_order=True)
            with StoreWriter(store_path) as writer:
                merged = _merge_existing(store_path, run_id, checkpoint, new)
                writer.append_rows(
                    "steering",
                    merged.with_columns(pl.lit(run_id).alias("run_id")),
                    replace_where={"run_id": run_id, "checkpoint": checkpoint},
                )
            frames.append(new)
    return summarise(pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=STEERING_SCHEMA))
