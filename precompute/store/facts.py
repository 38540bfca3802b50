"""The facts of one run, read back from its store in one place: its settings, its checkpoints, its emergence.

The report, the explorer's queries and the notebook API all need the same few facts of a run: the K of its
experts, how many languages make a shared expert, the overlap it leads with, its checkpoints in training
order, and from which checkpoint an overlap or a shared unit stays above chance. Each used to parse
``runs.config_json`` and the tables its own way, with its own fallbacks for an older store; here each fact is
read once, by one rule, so "the run's top-K" or "the first checkpoint" cannot mean two things.

Where a stored config lacks a key (a store written before the setting existed), the setting's default is
the one :class:`precompute.config.RunConfig` declares today, never a literal of its own; where the store's
tables say more than a default could (the K its overlaps were computed with, the fewest languages of a shared
expert), the tables decide. A value the config's own declared rule refuses (a store edited by hand) counts as
missing. What one checkpoint's permutation test actually did (its shuffles, level and correction) is in that
checkpoint's ``chance_ap`` and ``overlap_chance`` rows, which the report and the pages read where they show it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from precompute.config import ExpertSpec, Rule, RunConfig
from precompute.store.errors import StoreError
from precompute.store.schema import checkpoint_order

#: The overlap measures a run may lead with (``[experts] overlap_measure``), each with its stored threshold columns.
OVERLAP_MEASURES: tuple[str, ...] = ("jaccard", "over_k")

#: Today's defaults: what a config that lacks a key would be loaded with.
_DEFAULTS = RunConfig()


def _rule(spec: type, name: str) -> Rule | None:
    """The declared :class:`Rule` of one setting (``precompute.config``'s ``setting(...)``); None: it has none."""
    return next(f.metadata.get("rule") for f in dataclasses.fields(spec) if f.name == name)


#: The fewest languages that can make a shared expert (the lower bound ``[experts] min_langs`` declares): what a
#: store that records neither the setting nor any shared expert falls back to.
FEWEST_SHARED_LANGS: int = int(_rule(ExpertSpec, "min_langs").ge)  # type: ignore[union-attr]


@dataclass(frozen=True)
class RunSettings:
    """One run's facts as its store records them (see the module docstring for the fallbacks).

    ``checkpoints`` and ``steps`` are parallel, in training order (:func:`precompute.store.checkpoint_order`:
    by step, unknown steps last, then by name); ``config`` is the stored run config (``{}`` where it is
    missing or not a JSON object), for the settings read too rarely to be named here.
    """

    run_id: str
    model_id: str | None
    model_card: str | None
    #: ``[experts] top_k``: the experts kept per (concept, language); an older store: the largest K of its
    #: overlaps; None where the store records neither.
    top_k: int | None
    #: ``[experts] min_langs``: a shared expert is top-K in at least this many languages; an older store: the
    #: fewest languages of its shared experts, else :data:`FEWEST_SHARED_LANGS`.
    min_langs: int
    #: The K of the overlap: ``[experts] overlap_k``, or ``top_k`` where that is 0 or missing.
    overlap_k: int | None
    #: ``[experts] overlap_measure``, 'jaccard' or 'over_k' (the latter only in a store that stores it).
    overlap_measure: str
    #: ``[extract] pooling``: a unit's response to a context ('max', 'mean' or 'span').
    pooling: str
    #: ``[experts] permutations``: label shuffles of the experts' permutation test (0: no test).
    permutations: int
    #: ``[experts] permutation_quantile``: 1 - the test's level (and the FDR of the correction).
    permutation_quantile: float
    #: ``[experts] correction`` over a checkpoint's cells: 'bh' (Benjamini-Hochberg) or 'none'.
    correction: str
    #: ``[model] device`` and ``dtype`` as the config asked (``runs.device``/``dtype`` say what it ran on).
    model_device: str
    model_dtype: str
    #: The store's languages (table ``languages``), by code, as every reader lists them.
    languages: tuple[str, ...]
    #: ``[data] languages`` as configured, in its order (empty: every language of the concept set).
    config_languages: tuple[str, ...]
    checkpoints: tuple[str, ...]
    steps: tuple[int | None, ...]
    config: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def alpha(self) -> float:
        """The level of the permutation test (and the FDR of the correction): 1 - ``permutation_quantile``."""
        return 1 - self.permutation_quantile

    def position(self, checkpoint: str) -> int:
        """The checkpoint's place in training order, 0 for the first (ValueError for one the run lacks)."""
        return self.checkpoints.index(checkpoint)


def _config(text: Any) -> dict[str, Any]:
    """The stored config as a dict: ``{}`` where it is missing, not JSON, or not a JSON object."""
    try:
        data = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def _setting(config: dict[str, Any], section: str, key: str) -> Any:
    """``[section] key`` of the stored config where it is of the setting's type and passes its declared rule,
    else None (missing, empty where the default is not, or refused: the caller falls back)."""
    spec = getattr(_DEFAULTS, section)
    default = getattr(spec, key)
    value = _section(config, section).get(key)
    if value is None or isinstance(value, bool) != isinstance(default, bool) or (value == "" and default != ""):
        return None
    if isinstance(default, float) and isinstance(value, int):
        value = float(value)
    if not isinstance(value, type(default)):
        return None
    rule = _rule(type(spec), key)
    return value if rule is None or rule.problem(value) is None else None


def _default(config: dict[str, Any], section: str, key: str) -> Any:
    """``[section] key`` of the stored config, or the default ``RunConfig()`` declares for it."""
    value = _setting(config, section, key)
    return getattr(getattr(_DEFAULTS, section), key) if value is None else value


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """The columns ``table`` has in this store (older stores lack those added since)."""
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def run_settings(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> RunSettings:
    """The facts of run ``run_id`` (None: the store's first run, oldest first, as every reader picks it).

    ``con``: a read-only connection (or cursor) whose default database is the store. A store that holds no
    run, or not ``run_id``, is refused with a :class:`StoreError`.
    """
    runs = con.execute(
        "SELECT run_id, model_id, model_card, config_json FROM runs ORDER BY started_at NULLS LAST, run_id"
    ).fetchall()
    row = next((r for r in runs if run_id is None or r[0] == run_id), None)
    if row is None:
        raise StoreError(f"no run {run_id!r} in the store" if runs else "the store holds no run yet")
    run_id, model_id, model_card, config_json = row
    config = _config(config_json)

    top_k = _setting(config, "experts", "top_k")
    if top_k is None:
        (top_k,) = con.execute("SELECT max(k) FROM expert_overlap WHERE run_id = ?", [run_id]).fetchone()
        top_k = None if top_k is None else int(top_k)
    min_langs = _setting(config, "experts", "min_langs")
    if min_langs is None:
        (fewest,) = con.execute("SELECT min(n_langs_topk) FROM shared_experts WHERE run_id = ?", [run_id]).fetchone()
        min_langs = FEWEST_SHARED_LANGS if fewest is None else int(fewest)
    measure = _default(config, "experts", "overlap_measure")
    if measure != "jaccard" and measure not in _columns(con, "expert_overlap"):
        measure = _DEFAULTS.experts.overlap_measure  # a store from before the measure was stored
    overlap_k = _default(config, "experts", "overlap_k") or top_k

    checkpoints = con.execute(
        f"SELECT checkpoint, step FROM checkpoints WHERE run_id = ? ORDER BY {checkpoint_order()}", [run_id]
    ).fetchall()
    languages = [r[0] for r in con.execute("SELECT lang FROM languages ORDER BY lang").fetchall()]
    config_languages = _section(config, "data").get("languages")
    return RunSettings(
        run_id=run_id,
        model_id=model_id,
        model_card=model_card,
        top_k=top_k,
        min_langs=min_langs,
        overlap_k=overlap_k,
        overlap_measure=measure,
        pooling=_default(config, "extract", "pooling"),
        permutations=_default(config, "experts", "permutations"),
        permutation_quantile=_default(config, "experts", "permutation_quantile"),
        correction=_default(config, "experts", "correction"),
        model_device=_default(config, "model", "device"),
        model_dtype=_default(config, "model", "dtype"),
        languages=tuple(languages),
        config_languages=tuple(str(x) for x in config_languages) if isinstance(config_languages, list) else (),
        checkpoints=tuple(r[0] for r in checkpoints),
        steps=tuple(r[1] for r in checkpoints),
        config=config,
    )


# --- emergence: from which checkpoint a fact stays true at every later one -----------------------------------
# Both read the checkpoints in training order with their position (``ck``) and keep, per key, the run of
# consecutive positions that ends at the last checkpoint (gaps and islands: pos - row_number() is constant
# along a run). The report counts these frames; the explorer's pages show them.

# The run's checkpoints with their position in training order: what emergence counts along.
_CK_POS = f"""ck AS (SELECT c.checkpoint, c.step,
                         (row_number() OVER (ORDER BY {checkpoint_order("c")}) - 1)::INTEGER AS pos
                  FROM checkpoints c WHERE c.run_id = ?)"""

#: The tables a shared unit's top-K rows can be read from: ``neuron_ap`` (laid out by concept) or its copy laid
#: out by unit.
EXPERT_TABLES = ("neuron_ap", "neuron_ap_by_unit")


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> pl.DataFrame:
    return con.sql(sql, params=params).pl()


def _overlap_threshold(con: duckdb.DuckDBPyConnection, measure: str) -> str:
    """The SQL of the threshold a pair's overlap must exceed: after the run's correction over the checkpoint's
    pairs where the store has it, else the uncorrected random-set threshold (a store from before the correction)."""
    if f"{measure}_threshold_corrected" in _columns(con, "overlap_chance"):
        return f"coalesce(ch.{measure}_threshold_corrected, ch.{measure}_threshold)"
    return f"ch.{measure}_threshold"


def pair_emergence(
    con: duckdb.DuckDBPyConnection, settings: RunSettings, concept_id: str | None = None, measure: str | None = None
) -> pl.DataFrame:
    """Per (concept, language pair) of the run: the first checkpoint from which its top-K overlap (``measure``,
    default the run's: Jaccard or |A ∩ B| / k) stays above the random-set threshold, corrected over the
    checkpoint's pairs (``overlap_chance``), at every later checkpoint.

    Columns concept_id, lang_a, lang_b (lang_a < lang_b), pair ('a-b'), emerged_at, emerged_step (null where
    it does not, yet); emerged pairs first, by checkpoint. One concept, or all (``concept_id`` None).
    """
    measure = settings.overlap_measure if measure is None else measure
    if measure not in OVERLAP_MEASURES:
        raise ValueError(f"measure must be one of {OVERLAP_MEASURES}, got {measure!r}")
    run_id = settings.run_id
    return _frame(
        con,
        f"""WITH {_CK_POS},
            pairs AS (SELECT DISTINCT concept_id, least(lang_a, lang_b) AS lang_a, greatest(lang_a, lang_b) AS lang_b
                      FROM expert_overlap WHERE run_id = ? AND (?::VARCHAR IS NULL OR concept_id = ?)
                        AND lang_a <> lang_b),
            above AS (SELECT DISTINCT o.concept_id, least(o.lang_a, o.lang_b) AS lang_a,
                             greatest(o.lang_a, o.lang_b) AS lang_b, ck.pos
                      FROM expert_overlap o JOIN ck ON ck.checkpoint = o.checkpoint
                      JOIN overlap_chance ch ON ch.run_id = o.run_id AND ch.checkpoint = o.checkpoint
                      WHERE o.run_id = ? AND (?::VARCHAR IS NULL OR o.concept_id = ?) AND o.lang_a <> o.lang_b
                        AND o.{measure} > {_overlap_threshold(con, measure)}),
            runs AS (SELECT concept_id, lang_a, lang_b, min(pos) AS first_pos, max(pos) AS last_pos
                     FROM (SELECT *, pos - row_number() OVER (PARTITION BY concept_id, lang_a, lang_b ORDER BY pos)
                                  AS grp FROM above)
                     GROUP BY concept_id, lang_a, lang_b, grp),
            stay AS (SELECT * FROM runs WHERE last_pos = (SELECT max(pos) FROM ck))
            SELECT p.concept_id, p.lang_a, p.lang_b, p.lang_a || '-' || p.lang_b AS pair,
                   ck.checkpoint AS emerged_at, ck.step AS emerged_step
            FROM pairs p LEFT JOIN stay s USING (concept_id, lang_a, lang_b)
            LEFT JOIN ck ON ck.pos = s.first_pos
            ORDER BY s.first_pos NULLS LAST, p.concept_id, p.lang_a, p.lang_b""",
        [run_id, run_id, concept_id, concept_id, run_id, concept_id, concept_id],
    )


def unit_emergence(
    con: duckdb.DuckDBPyConnection,
    settings: RunSettings,
    min_langs: int | None = None,
    concept_id: str | None = None,
    layer: int | None = None,
    unit: int | None = None,
    *,
    experts_table: str = "neuron_ap",
) -> pl.DataFrame:
    """Shared units that emerge: per (concept, layer, unit), the first checkpoint from which the unit's AP beats
    the permutation threshold (``chance_ap.threshold``, after the run's correction) as a top-K expert in at
    least ``min_langs`` languages (default: the run's) at every later checkpoint.

    Columns concept_id, layer, unit, emerged_at, emerged_step, n_langs_last (in how many languages it does at
    the last checkpoint); only units that emerged, earliest first. Filtered by concept and/or unit;
    ``experts_table`` (one of :data:`EXPERT_TABLES`) is where the top-K rows are read from.
    """
    if experts_table not in EXPERT_TABLES:
        raise ValueError(f"experts_table must be one of {EXPERT_TABLES}, got {experts_table!r}")
    min_langs = settings.min_langs if min_langs is None else min_langs
    run_id = settings.run_id
    return _frame(
        con,
        f"""WITH {_CK_POS},
            sig AS (SELECT n.checkpoint, n.concept_id, n.layer, n.unit, count(*)::INTEGER AS n_langs
                    FROM {experts_table} n JOIN chance_ap ch
                      ON ch.run_id = n.run_id AND ch.checkpoint = n.checkpoint AND ch.lang = n.lang
                     AND ch.concept_id = n.concept_id
                    WHERE n.run_id = ? AND (?::VARCHAR IS NULL OR n.concept_id = ?)
                      AND (?::INTEGER IS NULL OR n.layer = ?) AND (?::INTEGER IS NULL OR n.unit = ?)
                      AND n.ap > ch.threshold
                    GROUP BY ALL HAVING count(*) >= ?),
            above AS (SELECT s.concept_id, s.layer, s.unit, s.n_langs, ck.pos FROM sig s JOIN ck USING (checkpoint)),
            runs AS (SELECT concept_id, layer, unit, min(pos) AS first_pos, max(pos) AS last_pos,
                            arg_max(n_langs, pos) AS n_langs_last
                     FROM (SELECT *, pos - row_number() OVER (PARTITION BY concept_id, layer, unit ORDER BY pos)
                                  AS grp FROM above)
                     GROUP BY concept_id, layer, unit, grp)
            SELECT r.concept_id, r.layer, r.unit, ck.checkpoint AS emerged_at, ck.step AS emerged_step,
                   r.n_langs_last
            FROM runs r JOIN ck ON ck.pos = r.first_pos
            WHERE r.last_pos = (SELECT max(pos) FROM ck)
            ORDER BY r.first_pos, r.n_langs_last DESC, r.concept_id, r.layer, r.unit""",
        [run_id, run_id, concept_id, concept_id, layer, layer, unit, unit, min_langs],
    )
