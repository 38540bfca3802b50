"""Synthetic crossling stores for tests, benchmarks and screenshots, written through the real ``StoreWriter``.

A helper of the source tree, not of the installed package: the tests, ``benchmarks/bench_explorer_queries.py``
and the docs scripts build stores with it, without a model. Every frame it hands the writer has its table's
columns and types as the store schema declares them (``precompute.store.schema.polars_schema``), so a change to
the schema that the builder does not follow fails here, not in a test far from it.

``build_synthetic_store`` fills every table of the schema with plausible random rows shaped like a
real run: LID probes that are near-perfect everywhere early and lose accuracy in the middle layers
later, concept experts that start language-specific and become shared over training, and so on. The
numbers are random (seeded); they exercise the explorer, they do not describe any model.

All bulk rows are generated per (checkpoint, language, concept) group with numpy, and the frames are
handed to the writer whole, so the same function builds a 10M-row paper-scale store for
``benchmarks/bench_explorer_queries.py`` in a few minutes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from precompute.analysis.alignment import expert_sharing
from precompute.analysis.chance import headline_intervals, overlap_chance, random_ap
from precompute.analysis.units import UnitAxis
from precompute.store import CheckpointRows, StoreWriter, json_dumps
from precompute.store.schema import TABLES, polars_schema

RUN_ID = "synthetic-run"
MODEL_ID = "synthetic/tiny-multilingual"

_LANG_INFO = {
    "en": ("English", "Latn", "Indo-European"),
    "de": ("German", "Latn", "Indo-European"),
    "fr": ("French", "Latn", "Indo-European"),
    "es": ("Spanish", "Latn", "Indo-European"),
    "it": ("Italian", "Latn", "Indo-European"),
    "pt": ("Portuguese", "Latn", "Indo-European"),
    "ru": ("Russian", "Cyrl", "Indo-European"),
    "ar": ("Arabic", "Arab", "Afro-Asiatic"),
    "hi": ("Hindi", "Deva", "Indo-European"),
    "zh": ("Chinese", "Hans", "Sino-Tibetan"),
    "ja": ("Japanese", "Jpan", "Japonic"),
    "fi": ("Finnish", "Latn", "Uralic"),
    "tr": ("Turkish", "Latn", "Turkic"),
    "vi": ("Vietnamese", "Latn", "Austroasiatic"),
    "sw": ("Swahili", "Latn", "Niger-Congo"),
}

PAPER_SCALE = {
    "n_layers": 24,
    "n_units": 4096,
    "checkpoints": 10,
    "languages": ("en", "de", "fr", "es", "it", "pt", "ru", "ar", "hi", "zh", "ja", "fi"),
    "concepts": tuple(f"concept_{i:03d}" for i in range(100)),
    "k": 1000,
}


def typed(table: str, frame: pl.DataFrame, *, without: Sequence[str] = ("run_id", "checkpoint")) -> pl.DataFrame:
    """``frame`` as a frame of ``table``: its declared columns (less ``without``) in the declared order and types,
    a nullable column it lacks as NULL. A column the table does not have, or a NOT NULL one it lacks, is an error:
    the builder and the schema disagree."""
    schema = polars_schema(table, without=without)
    unknown = [c for c in frame.columns if c not in schema]
    if unknown:
        raise ValueError(f"synthetic {table}: columns {unknown} that the schema does not declare")
    not_null = {c.name for c in TABLES[table].columns if c.not_null or c.name in TABLES[table].key}
    missing = [c for c in schema if c not in frame.columns and c in not_null]
    if missing:
        raise ValueError(f"synthetic {table}: no column {missing}, which the schema declares NOT NULL")
    return frame.select(
        pl.col(c).cast(t, strict=True) if c in frame.columns else pl.lit(None, dtype=t).alias(c)
        for c, t in schema.items()
    )


def checkpoint_steps(n: int) -> list[int]:
    """Training steps of ``n`` checkpoints: 0, then powers of two times 1000, like a real schedule."""
    return [0] + [1000 * 2**i for i in range(n - 1)]


def build_synthetic_store(
    path: str | Path,
    *,
    n_layers: int = 2,
    n_units: int = 64,
    checkpoints: int = 3,
    languages: Sequence[str] = ("en", "de", "fr"),
    concepts: Sequence[str] = ("monday", "tuesday", "march"),
    k: int = 10,
    seed: int = 0,
    min_langs: int = 2,
    run_id: str = RUN_ID,
    steering: bool = True,
    optional_tables: bool = True,
    progress: bool = False,
) -> Path:
    """Write a complete synthetic store at ``path`` (which must not exist yet) and return the path.

    ``optional_tables=False`` leaves the tables of the later stages empty (similarity, compression,
    language_neurons, neuron_counts, steering), like a run that skipped them. The writer lays every table out
    (:mod:`precompute.store.layout`) and derives ``neuron_ap_by_unit``, as for a real run.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: already exists")
    if k > n_layers * n_units:
        raise ValueError("k must not exceed the number of neurons")
    rng = np.random.default_rng(seed)
    languages = list(languages)
    concepts = list(concepts)
    steps = checkpoint_steps(checkpoints)
    names = [f"global_step{s}" for s in steps]
    n_neurons = n_layers * n_units
    started = datetime(2025, 1, 1, 12, 0, 0)

    config = {
        "model": {"id": MODEL_ID, "card": "synthetic"},
        "experts": {"top_k": k, "min_langs": min_langs},
        "data": {"languages": languages, "concept_ids": concepts},
        "checkpoints": [{"name": n, "step": s} for n, s in zip(names, steps)],
    }
    concept_sha = hashlib.sha256("\n".join(concepts).encode()).hexdigest()
    run = {
        "run_id": run_id,
        "model_id": MODEL_ID,
        "model_card": (
            "Synthetic store: seeded random numbers shaped like a crossling run, for tests and "
            "benchmarks. Not a model; no trend in it is a finding."
        ),
        "config_json": json_dumps(config),
        "concept_set_sha256": concept_sha,
        "packages_json": json_dumps({"numpy": np.__version__, "polars": pl.__version__}),
        "device": "cpu",
        "dtype": "float32",
        "started_at": started,
        "finished_at": started,  # a whole (synthetic) run: finished
    }
    lang_frame = typed(
        "languages",
        pl.DataFrame(
            {
                "lang": languages,
                "name": [_LANG_INFO.get(x, (x.upper(), "Latn", "unknown"))[0] for x in languages],
                "script": [_LANG_INFO.get(x, (x.upper(), "Latn", "unknown"))[1] for x in languages],
                "family": [_LANG_INFO.get(x, (x.upper(), "Latn", "unknown"))[2] for x in languages],
            }
        ),
    )
    concept_frame = typed(
        "concepts",
        pl.DataFrame(
            {
                "concept_id": concepts,
                "label": [c.replace("_", " ") for c in concepts],
                "category": ["weekday" if c.endswith("day") else "month" if c in _MONTHS else "misc" for c in concepts],
            }
        ),
    )
    sent_rows = [
        (c, lang, f"[{lang}] sentence {i} about {c.replace('_', ' ')}: {_word(c, lang)}.")
        for c in concepts
        for lang in languages
        for i in range(2)
    ]
    sentences = typed(
        "sentences",
        pl.DataFrame(
            {
                "sentence_id": np.arange(len(sent_rows), dtype=np.int64),
                "concept_id": [r[0] for r in sent_rows],
                "lang": [r[1] for r in sent_rows],
                "text": [r[2] for r in sent_rows],
            }
        ).with_columns(
            span_start=pl.col("text").str.find(": ").cast(pl.Int32) + 2,  # the concept's word in the language
            span_end=(pl.col("text").str.len_chars() - 1).cast(pl.Int32),
        ),
    )
    layer_frame = typed(
        "layers",
        pl.DataFrame(
            {
                "layer": np.arange(n_layers, dtype=np.int32),
                "n_neurons": np.full(n_layers, n_units, dtype=np.int32),
                "hidden_size": np.full(n_layers, max(1, n_units // 4), dtype=np.int32),
                "module_path": [f"transformer.h.{i}.mlp.gelu_impl" for i in range(n_layers)],
            }
        ),
    )
    meta = {"crossling_version": "0.1.0", "created_at": started.isoformat(), "synthetic": "true"}

    # Each concept has a pool of k "universal" units; over training a growing share of every
    # language's top-K is drawn from it, so cross-lingual overlap rises.
    pools = [rng.choice(n_neurons, size=k, replace=False) for _ in concepts]

    with StoreWriter(path) as writer:
        writer.ensure_run(
            run=run,
            languages=lang_frame,
            concepts=concept_frame,
            sentences=sentences,
            layers=layer_frame,
            meta=meta,
        )
        for t, (name, step) in enumerate(zip(names, steps)):
            frac = t / max(1, checkpoints - 1)
            tables = _checkpoint_tables(rng, frac, languages, concepts, pools, n_layers, n_units, k, min_langs)
            # Drill-downs from their own seeded stream, so the other tables' numbers stay as they were.
            tables.update(_drilldown_tables(np.random.default_rng([seed, t]), tables, sentences, n_units, languages))
            if not optional_tables:
                for name_ in ("similarity", "compression", "language_neurons", "neuron_counts"):
                    tables[name_] = tables[name_].clear()
            tables = {table: typed(table, frame) for table, frame in tables.items()}
            writer.write_checkpoint(
                run_id,
                CheckpointRows(
                    checkpoint=name,
                    step=step,
                    revision=name,
                    source="synthetic",
                    # Unknown past BIGINT: 40 doubling checkpoints (bench_explorer_queries --bloom7b1) overflow it.
                    tokens_seen=step * 2048 * 256 if step * 2048 * 256 < 2**63 else None,
                    tables=tables,
                ),
            )
            if progress:
                print(f"  wrote {name} ({t + 1}/{checkpoints})", flush=True)
        if steering and optional_tables:
            writer.append_rows(
                "steering",
                typed("steering", _steering_rows(run_id, names, languages, concepts, k), without=()),
                replace_where={"run_id": run_id},
            )
        writer.finish_run(run_id)
    return path


# The concepts' words in a few languages (CLDR's weekday and month names), so that a search in any language
# finds them; other (concept, language) pairs fall back to the concept's label.
_WORDS = {
    "monday": {
        "en": "Monday",
        "de": "Montag",
        "fr": "lundi",
        "es": "lunes",
        "it": "lunedì",
        "ru": "понедельник",
        "zh": "星期一",
        "ja": "月曜日",
        "fi": "maanantai",
    },
    "tuesday": {
        "en": "Tuesday",
        "de": "Dienstag",
        "fr": "mardi",
        "es": "martes",
        "it": "martedì",
        "ru": "вторник",
        "zh": "星期二",
        "ja": "火曜日",
        "fi": "tiistai",
    },
    "march": {
        "en": "March",
        "de": "März",
        "fr": "mars",
        "es": "marzo",
        "it": "marzo",
        "ru": "март",
        "zh": "三月",
        "ja": "3月",
        "fi": "maaliskuu",
    },
}


def _word(concept: str, lang: str) -> str:
    return _WORDS.get(concept, {}).get(lang, concept.replace("_", " "))


#: Drill-down sizes of synthetic stores: [drilldown] defaults (top_contexts, top_tokens, max_units), fewer bins.
DRILLDOWN = {"top_contexts": 10, "top_tokens": 10, "hist_bins": 12, "max_units": 2048}


def _drilldown_tables(
    rng: np.random.Generator,
    tables: dict[str, pl.DataFrame],
    sentences: pl.DataFrame,
    n_units: int,
    languages: list[str],
) -> dict[str, pl.DataFrame]:
    """unit_top_contexts, unit_response_hist, unit_output_tokens, unit_language_profile and unit_sample_contexts
    for the units precompute would pick
    (`precompute.analysis.drilldown.select_units`), computed by its own functions from synthetic responses:
    a unit responds more to the contexts of the concepts it is a top-K expert for in that language; it peaks on
    the concept's word and promotes those words."""
    import torch

    from precompute.analysis import drilldown as dd

    cpu = torch.device("cpu")
    n_layers = int(tables["neuron_summary"]["layer"].max()) + 1
    axis = UnitAxis.contiguous([i * n_units for i in range(n_layers + 1)])
    units = dd.select_units(tables["neuron_ap"], tables["language_neurons"], axis, max_units=DRILLDOWN["max_units"])
    experts = tables["neuron_ap"].with_columns(col=pl.Series(dd.global_columns(tables["neuron_ap"], axis)))
    experts = experts.join(pl.DataFrame({"col": units}), on="col", how="semi")
    # Responses of the selected units only: (contexts, U), a unit's expert (concept, lang) contexts lifted.
    langs = sentences["lang"].to_numpy()
    concept_ids = sentences["concept_id"].to_numpy()
    acts = rng.gamma(2.0, 0.5, size=(sentences.height, len(units))).astype(np.float32)
    ctx_key = pl.DataFrame({"row": np.arange(sentences.height), "lang": langs, "concept_id": concept_ids})
    lifted = experts.select("lang", "concept_id", "col", "ap").join(ctx_key, on=["lang", "concept_id"])
    acts[lifted["row"].to_numpy(), np.searchsorted(units, lifted["col"].to_numpy())] += 4.0 * lifted[
        "ap"
    ].to_numpy().astype(np.float32)
    compact = torch.from_numpy(acts)
    best = dd.top_contexts(compact, langs, np.arange(len(units)), n_top=DRILLDOWN["top_contexts"], device=cpu)
    best = best.with_columns(col=pl.Series(units[best["col"].to_numpy()]))
    rows = best["row"].to_numpy()
    top = dd.top_context_rows(
        best,
        sentences["sentence_id"].to_numpy(),
        axis,
        sentences["span_start"].to_numpy()[rows],
        sentences["span_end"].to_numpy()[rows],
        best["response"].to_numpy(),
    )
    compact_experts = experts.with_columns(layer=pl.lit(0), unit=pl.Series(np.searchsorted(units, experts["col"])))
    hist = dd.response_histograms(
        compact,
        langs,
        concept_ids,
        compact_experts,
        UnitAxis.contiguous([0, len(units)]),
        n_bins=DRILLDOWN["hist_bins"],
        device=cpu,
    )
    layer, unit = np.divmod(units[hist["unit"].to_numpy()], n_units)
    hist = hist.with_columns(layer=pl.Series(layer.astype(np.int32)), unit=pl.Series(unit.astype(np.int32)))
    # Output tokens: a small vocabulary (filler tokens and every concept word); a unit's expert concepts'
    # words get a large direct effect, in every language it is an expert in.
    vocab = [f"tok{i}" for i in range(200)] + sorted({_word(c, lang) for c in set(concept_ids) for lang in languages})
    word_id = {w: i for i, w in enumerate(vocab)}
    effects = rng.normal(0, 1.0, size=(len(vocab), len(units))).astype(np.float32)
    pairs = experts.select("lang", "concept_id", "col").unique()
    ids = np.array([word_id[_word(c, lang)] for lang, c in zip(pairs["lang"], pairs["concept_id"])], dtype=np.int64)
    effects[ids, np.searchsorted(units, pairs["col"].to_numpy())] += 6.0
    out = dd.output_token_rows(
        torch.from_numpy(effects),
        0,
        np.arange(len(units)),
        n_tokens=DRILLDOWN["top_tokens"],
        vocab_size=len(vocab),
        decode=lambda i: [vocab[x] for x in i],
    )
    layer, unit = np.divmod(units[out["unit"].to_numpy()], n_units)
    out = out.with_columns(layer=pl.Series(layer.astype(np.int32)), unit=pl.Series(unit.astype(np.int32)))
    top = top.hstack(_context_tokens(rng, top, sentences))
    # Beyond the top: a unit is active on a context where its synthetic response passes 1 (on a share of the
    # tokens that grows with it), and its decile and random samples are drawn as precompute draws them.
    active = torch.from_numpy(np.where(acts > 1.0, np.clip((acts - 1.0) / 3.0, 0.05, 1.0), 0.0).astype(np.float32))
    profile = dd.language_profiles(
        compact, active, langs, np.arange(len(units)), UnitAxis.contiguous([0, len(units)]), device=cpu
    )
    layer, unit = np.divmod(units[profile["unit"].to_numpy()], n_units)
    profile = profile.with_columns(layer=pl.Series(layer.astype(np.int32)), unit=pl.Series(unit.astype(np.int32)))
    picked = dd.sample_contexts(compact, langs, np.arange(len(units)), device=cpu)
    picked = picked.with_columns(col=pl.Series(units[picked["col"].to_numpy()]))
    rows = picked["row"].to_numpy()
    samples = dd.top_context_rows(
        picked,
        sentences["sentence_id"].to_numpy(),
        axis,
        sentences["span_start"].to_numpy()[rows],
        sentences["span_end"].to_numpy()[rows],
        picked["response"].to_numpy(),
    )
    samples = samples.hstack(_context_tokens(rng, samples, sentences)).insert_column(3, picked["sample"])
    return {
        "unit_top_contexts": top,
        "unit_response_hist": hist,
        "unit_output_tokens": out,
        "unit_language_profile": profile,
        "unit_sample_contexts": samples,
    }


def _word_offsets(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Character offsets of a synthetic tokenization of ``text``: words with their leading space (as byte-level
    BPE cuts them), and the span ``start:end`` one token whatever it holds (the concept's word, where the
    synthetic peak is)."""
    start, end = max(0, min(start, len(text))), max(0, min(end, len(text)))

    def words(a: int, b: int) -> list[tuple[int, int]]:
        return [(m.start() + a, m.end() + a) for m in re.finditer(r"\s*\S+|\s+$", text[a:b])]

    return [*words(0, start), *([(start, end)] if end > start else []), *words(end, len(text))]


def _context_tokens(rng: np.random.Generator, top: pl.DataFrame, sentences: pl.DataFrame) -> pl.DataFrame:
    """unit_top_contexts' per-token columns for synthetic top contexts: each token of the context an activation
    drawn below the row's peak, the peak token (the span, `_word_offsets`) exactly the row's peak_act, as a real
    pass stores them."""
    texts = dict(zip(sentences["sentence_id"].to_list(), sentences["text"].to_list()))
    tokenized: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}  # a context is many units' top one
    starts, ends, acts = [], [], []
    for sentence_id, p_start, p_end, peak in top.select("sentence_id", "peak_start", "peak_end", "peak_act").rows():
        key = (sentence_id, p_start, p_end)
        if key not in tokenized:
            offsets = _word_offsets(texts[sentence_id], p_start, p_end)
            tokenized[key] = (
                np.array([a for a, _ in offsets], dtype=np.int32),
                np.array([b for _, b in offsets], dtype=np.int32),
            )
        begin, stop = tokenized[key]
        values = (peak * rng.uniform(0.0, 0.9, size=len(begin))).astype(np.float32)
        values[(begin == p_start) & (stop == p_end)] = np.float32(peak)
        starts.append(begin)
        ends.append(stop)
        acts.append(values)
    return pl.DataFrame(
        {"token_start": starts, "token_end": ends, "token_act": acts},
        schema={"token_start": pl.List(pl.Int32), "token_end": pl.List(pl.Int32), "token_act": pl.List(pl.Float32)},
    )


_MONTHS = {
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
}


def _checkpoint_tables(
    rng: np.random.Generator,
    frac: float,
    languages: list[str],
    concepts: list[str],
    pools: list[np.ndarray],
    n_layers: int,
    n_units: int,
    k: int,
    min_langs: int,
) -> dict[str, pl.DataFrame]:
    n_neurons = n_layers * n_units
    n_lang, n_con = len(languages), len(concepts)
    share = 0.85 * frac
    quality = 0.55 + 0.35 * frac

    # --- neuron_ap: top-k per (lang, concept) -----------------------------------------------
    members = np.empty((n_lang, n_con, k), dtype=np.int64)
    for li, ci in itertools.product(range(n_lang), range(n_con)):
        m = round(share * k)
        shared = rng.choice(pools[ci], size=m, replace=False) if m else np.empty(0, np.int64)
        need = k - m
        own = np.empty(0, np.int64)
        while own.size < need:
            cand = rng.integers(0, n_neurons, size=2 * need + 8)
            cand = np.setdiff1d(np.unique(cand), shared, assume_unique=True)
            own = np.union1d(own, cand) if own.size else cand
        own = rng.permutation(own)[:need]
        chosen = np.concatenate([shared, own])
        members[li, ci] = rng.permutation(chosen)
    ranks = np.arange(1, k + 1)
    ap = quality * np.exp(-1.5 * (ranks - 1) / max(k, 1)) + 0.1
    ap = np.sort(ap[None, None, :] + rng.normal(0, 0.01, size=(n_lang, n_con, k)), axis=2)[:, :, ::-1]
    ap = np.clip(ap, 0.01, 0.999)
    flat = members.reshape(-1)
    neuron_ap = pl.DataFrame(
        {
            "lang": np.repeat(np.array(languages, dtype=object), n_con * k),
            "concept_id": np.tile(np.repeat(np.array(concepts, dtype=object), k), n_lang),
            "layer": (flat // n_units).astype(np.int32),
            "unit": (flat % n_units).astype(np.int32),
            "ap": ap.reshape(-1),
            "rank": np.tile(ranks, n_lang * n_con).astype(np.int32),
            "median_pos_act": rng.gamma(2.0, 0.5, size=flat.size),
        },
        schema_overrides={"lang": pl.Utf8, "concept_id": pl.Utf8},
    )

    # --- neuron_summary: every neuron ------------------------------------------------------------
    best = (
        neuron_ap.sort("ap", descending=True)
        .group_by(["layer", "unit"], maintain_order=True)
        .first()
        .select("layer", "unit", pl.col("ap").alias("best_ap"), "concept_id", "lang")
    )
    all_layer = np.repeat(np.arange(n_layers, dtype=np.int32), n_units)
    all_unit = np.tile(np.arange(n_units, dtype=np.int32), n_layers)
    base_mean = np.clip(rng.normal(1.0 / max(n_con, 2), 0.02, size=n_neurons), 0.001, 0.99)
    base_max = np.clip(base_mean + rng.gamma(2.0, 0.03, size=n_neurons), 0.001, 0.99)
    summary = (
        pl.DataFrame(
            {
                "layer": all_layer,
                "unit": all_unit,
                "mean_ap": base_mean,
                "base_max": base_max,
                "rand_concept": np.array(concepts, dtype=object)[rng.integers(0, n_con, n_neurons)],
                "rand_lang": np.array(languages, dtype=object)[rng.integers(0, n_lang, n_neurons)],
            },
            schema_overrides={"rand_concept": pl.Utf8, "rand_lang": pl.Utf8},
        )
        .join(best, on=["layer", "unit"], how="left")
        .select(
            "layer",
            "unit",
            "mean_ap",
            pl.max_horizontal("base_max", "best_ap").alias("max_ap"),
            pl.coalesce("concept_id", "rand_concept").alias("best_concept_id"),
            pl.coalesce("lang", "rand_lang").alias("best_lang"),
        )
    )

    # --- expert_overlap: each unordered pair once, lang_a < lang_b -------------------------------
    order = sorted(range(n_lang), key=lambda i: languages[i])
    pairs = list(itertools.combinations(order, 2))
    ov_rows: dict[str, list] = {c: [] for c in polars_schema("expert_overlap")}
    for ci, concept in enumerate(concepts):
        sets = [set(members[li, ci].tolist()) for li in range(n_lang)]
        for a, b in pairs:
            inter = len(sets[a] & sets[b])
            jac = inter / (2 * k - inter)
            ov_rows["concept_id"].append(concept)
            ov_rows["lang_a"].append(languages[a])
            ov_rows["lang_b"].append(languages[b])
            ov_rows["k"].append(k)
            ov_rows["jaccard"].append(jac)
            ov_rows["over_k"].append(inter / k)
            ov_rows["spearman_ap"].append(float(np.clip(0.2 + 0.7 * jac + rng.normal(0, 0.03), -1, 1)))
    overlap = pl.DataFrame(ov_rows, schema=polars_schema("expert_overlap"))

    # --- shared_experts: units top-k in >= min_langs languages -----------------------------------
    shared = (
        neuron_ap.group_by(["concept_id", "layer", "unit"])
        .agg(
            pl.col("lang").sort().str.join(",").alias("langs"),
            pl.len().cast(pl.Int32).alias("n_langs_topk"),
            pl.col("ap").min().alias("min_top"),
            pl.col("ap").mean().alias("mean_top"),
        )
        .filter(pl.col("n_langs_topk") >= min_langs)
        .with_columns(
            min_ap=pl.when(pl.col("n_langs_topk") == n_lang).then(pl.col("min_top")).otherwise(pl.col("min_top") * 0.6),
            mean_ap=pl.col("mean_top") * (pl.col("n_langs_topk") / n_lang)
            + 0.1 * (1 - pl.col("n_langs_topk") / n_lang),
        )
        .select("concept_id", "layer", "unit", "n_langs_topk", "langs", "min_ap", "mean_ap")
        .sort(["concept_id", "n_langs_topk", "layer", "unit"], descending=[False, True, False, False])
    )

    # --- chance levels: random-scorer AP, a permutation threshold between the ranks' APs (so
    # early checkpoints have fewer significant experts than late ones), exact random-set overlap, intervals --
    n_ctx = 20 * n_con
    chance_ap = (
        neuron_ap.group_by(["lang", "concept_id"])
        .agg(pl.col("ap").max().alias("best_ap"))
        .sort(["lang", "concept_id"])
        .with_columns(
            n_contexts=pl.lit(n_ctx, pl.Int32),
            n_positive=pl.lit(20, pl.Int32),
            random_ap=pl.lit(float(random_ap(20, n_ctx))),
            positive_rate=pl.lit(20 / n_ctx),
            n_shuffles=pl.lit(999, pl.Int32),
            p_resolution=pl.lit(1 / 1000),
            alpha=pl.lit(0.01),
            correction=pl.lit("bh"),
            n_cells=pl.lit(n_lang * n_con, pl.Int32),
        )
    )
    # A corrected threshold above the uncorrected one; p-values that agree with them (best unit above the
    # corrected threshold: the resolution; else spread up to 1).
    uncorrected = 0.43 + rng.normal(0, 0.02, size=chance_ap.height)
    chance_ap = (
        chance_ap.with_columns(
            threshold=pl.Series(uncorrected + 0.02),
            threshold_uncorrected=pl.Series(uncorrected),
        )
        .with_columns(significant=pl.col("best_ap") > pl.col("threshold"))
        .with_columns(
            p_value=pl.when(pl.col("significant"))
            .then(pl.lit(1 / 1000))
            .when(pl.col("best_ap") > pl.col("threshold_uncorrected"))
            .then(pl.lit(0.008))
            .otherwise(pl.Series(rng.uniform(0.02, 1.0, size=chance_ap.height))),
        )
        .with_columns(p_adjusted=pl.min_horizontal(pl.col("p_value") * 20, pl.lit(1.0)))
    )
    chance = overlap_chance(
        n_neurons,
        n_lang,
        k=k,
        expert_k=k,
        min_langs=min_langs,
        quantile=0.99,
        correction="bh",
        intersections=np.rint(overlap["over_k"].to_numpy() * k).astype(np.int64),
    )
    headline = headline_intervals(overlap, shared, chance, concepts, n_resamples=200)

    # --- probes: layer 0 = embeddings, i = block i ----------------------------------------------
    probe_layers = np.arange(n_layers + 1)
    middle = np.sin(np.pi * probe_layers / max(n_layers, 1))
    pr_rows: dict[str, list] = {c: [] for c in polars_schema("probe_results")}
    ppl_rows: dict[str, list] = {c: [] for c in polars_schema("probe_per_language")}
    for rep, depth in (("mean", 0.45), ("token", 0.6)):
        acc = np.clip(0.99 - depth * frac * middle + rng.normal(0, 0.01, size=probe_layers.size), 1.0 / n_lang, 1.0)
        for layer, a in zip(probe_layers, acc):
            pr_rows["layer"].append(int(layer))
            pr_rows["representation"].append(rep)
            pr_rows["accuracy"].append(float(a))
            pr_rows["accuracy_std"].append(float(abs(rng.normal(0, 0.01))))
            pr_rows["macro_f1"].append(float(np.clip(a - 0.01, 0, 1)))
            pr_rows["n_train"].append(600 * n_lang)
            pr_rows["n_test"].append(200 * n_lang)
            pr_rows["n_seeds"].append(3)
            pr_rows["majority_baseline"].append(1.0 / n_lang)
            control = float(np.clip(1.0 / n_lang + abs(rng.normal(0, 0.02)), 0, 1))
            pr_rows["control_accuracy"].append(control if rep == "token" else None)  # no token type in a mean
            pr_rows["accuracy_lo"].append(float(max(0.0, a - 0.02)))
            pr_rows["accuracy_hi"].append(float(min(1.0, a + 0.02)))
            for lang in languages:
                ppl_rows["layer"].append(int(layer))
                ppl_rows["representation"].append(rep)
                ppl_rows["lang"].append(lang)
                ppl_rows["f1"].append(float(np.clip(a + rng.normal(0, 0.03), 0, 1)))
    probe_results = pl.DataFrame(pr_rows, schema=polars_schema("probe_results"))
    probe_per_language = pl.DataFrame(ppl_rows, schema=polars_schema("probe_per_language"))

    # --- similarity and compression ---------------------------------------------------------------
    sim_rows: dict[str, list] = {c: [] for c in polars_schema("similarity")}
    for layer in probe_layers:
        for a, b in pairs:
            for metric, base in (("matched_cosine", 0.3 + 0.5 * frac * middle[layer]), ("mismatched_cosine", 0.2)):
                sim_rows["layer"].append(int(layer))
                sim_rows["lang_a"].append(languages[a])
                sim_rows["lang_b"].append(languages[b])
                sim_rows["metric"].append(metric)
                sim_rows["value"].append(float(np.clip(base + rng.normal(0, 0.02), -1, 1)))
    similarity = pl.DataFrame(sim_rows, schema=polars_schema("similarity"))
    comp_rows: dict[str, list] = {c: [] for c in polars_schema("compression")}
    for layer in probe_layers:
        for scope in ["all", *languages]:
            comp_rows["layer"].append(int(layer))
            comp_rows["scope"].append(scope)
            comp_rows["metric"].append("effective_dim")
            comp_rows["value"].append(float(max(1.0, 40 * (1 - 0.5 * frac * middle[layer]) + rng.normal(0, 1))))
    compression = pl.DataFrame(comp_rows, schema=polars_schema("compression"))

    # --- language-specific neurons (LAPE) and neuron counts ---------------------------------------
    n_ls = max(1, round(n_neurons * 0.01 * (1.0 - 0.6 * frac)))
    ls = rng.choice(n_neurons, size=n_ls, replace=False)
    language_neurons = pl.DataFrame(
        {
            "layer": (ls // n_units).astype(np.int32),
            "unit": (ls % n_units).astype(np.int32),
            "lape": rng.uniform(0.0, 0.5, size=n_ls),
            "top_lang": np.array(languages, dtype=object)[rng.integers(0, n_lang, n_ls)],
            "top_prob": rng.uniform(0.3, 1.0, size=n_ls),
        },
        schema_overrides={"top_lang": pl.Utf8},
    )
    shared_per_layer = shared.select("layer", "unit").unique().group_by("layer").len()
    counts = (
        pl.DataFrame({"layer": np.arange(n_layers, dtype=np.int32)})
        .join(language_neurons.group_by("layer").len().rename({"len": "language_specific"}), on="layer", how="left")
        .join(shared_per_layer.rename({"len": "shared_expert"}), on="layer", how="left")
        .fill_null(0)
        .unpivot(index="layer", variable_name="kind", value_name="n")
        .with_columns(pl.col("n").cast(pl.Int32))
    )
    timings = pl.DataFrame(
        {
            "stage": ["extract", "probes", "experts", "alignment"],
            "seconds": rng.uniform(0.5, 5.0, size=4),
            "tokens_per_s": [float(rng.uniform(1e3, 1e4)), None, None, None],
            "peak_mem_mb": rng.uniform(100, 500, size=4),
        }
    )
    return {
        "stage_timings": timings,
        "probe_results": probe_results,
        "probe_per_language": probe_per_language,
        "neuron_ap": neuron_ap,
        "neuron_summary": summary,
        "expert_overlap": overlap,
        "shared_experts": shared,
        "expert_sharing": expert_sharing(neuron_ap, shared),
        "chance_ap": chance_ap,
        "overlap_chance": chance,
        "headline_ci": headline,
        "similarity": similarity,
        "compression": compression,
        "language_neurons": language_neurons,
        "neuron_counts": counts,
    }


def _steering_rows(run_id: str, names: list[str], languages: list[str], concepts: list[str], k: int) -> pl.DataFrame:
    source = languages[1] if len(languages) > 1 else languages[0]
    target = languages[0]
    concept = concepts[0]
    rows = []
    for ti, name in ((0, names[0]), (len(names) - 1, names[-1])):
        late = ti == len(names) - 1 and len(names) > 1
        for n_neurons in (0, k):
            for seed in range(3):
                steered = n_neurons > 0
                out_lang = target if (late and steered) else source
                rows.append(
                    {
                        "run_id": run_id,
                        "checkpoint": name,
                        "concept_id": concept,
                        "source_lang": source,
                        "prompt": "",
                        "seed": seed,
                        "n_neurons": n_neurons,
                        "value_mode": "median",
                        "output_text": (
                            f"[{out_lang}] synthetic text {'about ' + concept if steered else ''} (seed {seed})"
                        ),
                        "output_lang": out_lang,
                        "expresses_concept": steered,
                        "concept_lang": out_lang if steered else None,
                    }
                )
    return pl.DataFrame(rows, schema_overrides={"concept_lang": pl.Utf8})


def _main() -> None:  # pragma: no cover - a manual helper
    import argparse

    parser = argparse.ArgumentParser(description="Write a synthetic crossling store.")
    parser.add_argument("out")
    parser.add_argument("--paper-scale", action="store_true")
    args = parser.parse_args()
    kwargs = dict(PAPER_SCALE) if args.paper_scale else {}
    build_synthetic_store(args.out, progress=True, **kwargs)
    print(json.dumps({"store": args.out}))


if __name__ == "__main__":  # pragma: no cover
    _main()
