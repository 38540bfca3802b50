"""Every SQL read the explorer makes, parameterised, one function per question.

Each function takes a DuckDB connection (read-only) and plain values, and returns a polars frame.
Nothing here knows about Streamlit: the app wraps these in ``st.cache_data`` (keyed by the store's
path and modification time, see ``explorer.store_context``), the tests call them on a small store, and
``benchmarks/bench_explorer_queries.py`` times them on a paper-scale one.

Conventions the store guarantees (``precompute.store``): checkpoints order by ``step`` (nullable,
then by name); ``probe_results.layer`` 0 is the embedding output and i the output of block i;
``neuron_ap`` holds the top-K rows per (checkpoint, lang, concept) with rank 1 the best;
``expert_overlap`` holds each unordered language pair once (it is mirrored here for heatmaps);
``shared_experts.langs`` is a comma-separated language list.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from precompute import store as store_module
from precompute.store import DDL, checkpoint_order, facts
from precompute.store.schema import CHECKPOINT_TABLES, DERIVED_TABLES

# Join that attaches a checkpoint's step and orders rows by training progress.
_CKPT_JOIN = "JOIN checkpoints c ON c.run_id = t.run_id AND c.checkpoint = t.checkpoint"
_CKPT_ORDER = checkpoint_order("c")
_T_ORDER = "c.step NULLS LAST, t.checkpoint"  # the same order, for queries that join t to c
# One checkpoint's rows of a large table are selected by ``checkpoint = ? AND strlen(checkpoint) = strlen(?)``
# (the name bound twice). The second test is implied by the first; it is there for DuckDB's zonemaps, which keep
# only a 12-byte prefix of a string column's min and max: names such as global_step1000, global_step16000 and
# global_step128000 share theirs, so the first test alone reads the row groups of every checkpoint with the same
# prefix, while their lengths (kept exactly) tell most of them apart (BLOOM-7b1 scale: 14 instead of 168 of
# neuron_ap's 521 row groups for one checkpoint).


class StoreConnection:
    """A read-only connection to one version of a published store file.

    DuckDB shares one database instance per file path within a process, so a plain
    ``duckdb.connect(path)`` made while an older connection is still open returns the *old* file
    after a precompute has replaced it by atomic rename. Attaching the file to a private in-memory
    instance always reads the file the path names now. ``cursor()`` gives a thread-safe cursor whose
    default database is the store, so every query function works on this and on a plain connection.
    """

    ALIAS = "crossling_store"

    def __init__(self, path: str | Path):
        path = Path(path)
        # The store's own checks and messages (missing, not DuckDB, schema, code), on the files attached now:
        # the store file, and its checkpoint parts while a run is publishing them (as views over all of them).
        self._con = store_module.open_snapshot(path, alias=self.ALIAS)
        self.path = path

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._con.cursor()
        cur.execute(f"USE {self.ALIAS}")
        return cur

    def close(self) -> None:
        self._con.close()


def frame(con: duckdb.DuckDBPyConnection | StoreConnection, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
    """Run one read on a fresh cursor (thread-safe on a shared connection) and return a polars frame."""
    with con.cursor() as cur:
        return cur.sql(sql, params=list(params) if params else None).pl()


# --- the store and its run --------------------------------------------------------------------


def meta(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """key, value: schema version, crossling version, creation time, ..."""
    return frame(con, "SELECT key, value FROM meta ORDER BY key")


def present_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the tables in the store's main schema."""
    df = frame(
        con,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1",
    )
    return df["table_name"].to_list()


def missing_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Schema tables the store lacks (an incomplete or foreign file); not the derived ones (``DERIVED_TABLES``),
    which a store written before they were added lacks: the queries then read the table they derive from; nor
    the ``OPTIONAL_TABLES``, added later, whose queries read an absent table as no rows."""
    present = set(present_tables(con))
    return [name for name in DDL if name not in present and name not in DERIVED_TABLES and name not in OPTIONAL_TABLES]


def _by_unit(con: duckdb.DuckDBPyConnection) -> str:
    """The table to read one unit's top-K rows from: ``neuron_ap_by_unit`` (laid out by unit, so a unit's rows are
    a few row groups per checkpoint) where it holds a copy of every ``neuron_ap`` row, else ``neuron_ap`` itself
    (a store written before the copy was added, or resumed across that change). Two row counts: no scan."""
    try:
        same = frame(con, "SELECT (SELECT count(*) FROM neuron_ap) = (SELECT count(*) FROM neuron_ap_by_unit) AS same")
    except duckdb.CatalogException:
        return "neuron_ap"
    return "neuron_ap_by_unit" if same["same"][0] else "neuron_ap"


def table_counts(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """table, rows for every schema table."""
    present = set(present_tables(con))
    names = [n for n in DDL if n in present]
    if not names:
        return pl.DataFrame(schema={"table": pl.Utf8, "rows": pl.Int64})
    sql = " UNION ALL ".join(f"SELECT '{n}' AS table, count(*)::BIGINT AS rows FROM {n}" for n in names)
    order = {n: i for i, n in enumerate(names)}
    return frame(con, sql).sort(pl.col("table").replace_strict(order, return_dtype=pl.Int32))


def runs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every run in the store, oldest first."""
    return frame(
        con,
        """SELECT run_id, model_id, model_card, device, dtype, started_at, finished_at,
                  concept_set_sha256, config_json, packages_json
           FROM runs ORDER BY started_at NULLS LAST, run_id""",
    )


def run_settings(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """The settings the pages need, as :func:`precompute.store.facts.run_settings` reads them: top_k (K of
    neuron_ap), min_langs (of shared_experts), overlap_measure (the overlap the run leads with: 'jaccard' or
    'over_k') and config (the stored run config). A dict, so the app's cache keeps it as it is."""
    with con.cursor() as cur:
        settings = facts.run_settings(cur, run_id)
    return {
        "top_k": settings.top_k,
        "min_langs": settings.min_langs,
        "overlap_measure": settings.overlap_measure,
        "config": settings.config,
    }


def checkpoints(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """The run's completed checkpoints in training order, with their position 0..n-1."""
    return frame(
        con,
        f"""SELECT checkpoint, step, tokens_seen, revision, source, completed_at,
                   (row_number() OVER (ORDER BY {_CKPT_ORDER}) - 1)::INTEGER AS position
            FROM checkpoints c WHERE run_id = ? ORDER BY {_CKPT_ORDER}""",
        [run_id],
    )


def languages(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """lang, name, script, family."""
    return frame(con, "SELECT lang, name, script, family FROM languages ORDER BY lang")


def concepts(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """concept_id, label, category, and how many input sentences each has."""
    return frame(
        con,
        """SELECT c.concept_id, c.label, c.category, count(s.sentence_id)::INTEGER AS n_sentences
           FROM concepts c LEFT JOIN sentences s USING (concept_id)
           GROUP BY ALL ORDER BY c.concept_id""",
    )


def layers(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """layer, n_neurons, hidden_size, module_path of the run's model."""
    return frame(
        con,
        "SELECT layer, n_neurons, hidden_size, module_path FROM layers WHERE run_id = ? ORDER BY layer",
        [run_id],
    )


def checkpoint_rows(
    con: duckdb.DuckDBPyConnection, table: str, run_id: str, checkpoints: Sequence[str] | None = None
) -> pl.DataFrame:
    """Every row of one checkpoint table of the run (``checkpoints``: only theirs), in training order, with the
    checkpoint's ``step``: the generic reader a new analysis's page starts from before it needs a query of its
    own. ``table`` must be a checkpoint table of the schema (its name is never taken from the user)."""
    if table not in CHECKPOINT_TABLES:
        raise ValueError(f"{table!r} is not a checkpoint table of the store schema")
    where = "" if checkpoints is None else " AND list_contains(?, t.checkpoint)"
    params: list[Any] = [run_id] if checkpoints is None else [run_id, list(checkpoints)]
    return frame(
        con,
        f"""SELECT t.* EXCLUDE (run_id), c.step FROM {table} t
            JOIN checkpoints c ON c.run_id = t.run_id AND c.checkpoint = t.checkpoint
            WHERE t.run_id = ?{where} ORDER BY {checkpoint_order("c")}""",
        params,
    )


def sentence_counts(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """lang, n_sentences, n_concepts: the inputs the store carries."""
    return frame(
        con,
        """SELECT lang, count(*)::INTEGER AS n_sentences, count(DISTINCT concept_id)::INTEGER AS n_concepts
           FROM sentences GROUP BY lang ORDER BY lang""",
    )


def concept_sentences(
    con: duckdb.DuckDBPyConnection, concept_id: str, lang: str | None = None, limit: int = 5
) -> pl.DataFrame:
    """A few input sentences of one concept (per language when ``lang`` is None)."""
    return frame(
        con,
        """SELECT lang, sentence_id, text FROM sentences
           WHERE concept_id = ? AND (? IS NULL OR lang = ?)
           QUALIFY row_number() OVER (PARTITION BY lang ORDER BY sentence_id) <= ?
           ORDER BY lang, sentence_id""",
        [concept_id, lang, lang, limit],
    )


def stage_timings(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Seconds per stage, summed over checkpoints."""
    return frame(
        con,
        """SELECT stage, sum(seconds) AS seconds, count(*)::INTEGER AS n_checkpoints,
                  max(peak_mem_mb) AS peak_mem_mb
           FROM stage_timings WHERE run_id = ? GROUP BY stage ORDER BY seconds DESC""",
        [run_id],
    )


# --- language-identification probes ---------------------------------------------------------------


def representations(con: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    """Representations probed in this run ('mean' first)."""
    df = frame(
        con,
        "SELECT DISTINCT representation FROM probe_results WHERE run_id = ? ORDER BY representation",
        [run_id],
    )
    reps = df["representation"].to_list()
    return sorted(reps, key=lambda r: (r != "mean", r))


def probe_grid(con: duckdb.DuckDBPyConnection, run_id: str, representation: str) -> pl.DataFrame:
    """LID probe accuracy per (checkpoint, layer): the layer x checkpoint heatmap."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.layer, t.accuracy, t.accuracy_std, t.macro_f1,
                   t.n_train, t.n_test, t.n_seeds
            FROM probe_results t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.representation = ?
            ORDER BY {_T_ORDER}, t.layer""",
        [run_id, representation],
    )


def probe_languages(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    representation: str,
    checkpoint: str | None = None,
    layer: int | None = None,
) -> pl.DataFrame:
    """Per-language F1 of the LID probe, for one checkpoint (across layers) and/or one layer."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.layer, t.lang, t.f1
            FROM probe_per_language t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.representation = ?
              AND (?::VARCHAR IS NULL OR t.checkpoint = ?)
              AND (?::INTEGER IS NULL OR t.layer = ?)
            ORDER BY {_T_ORDER}, t.layer, t.lang""",
        [run_id, representation, checkpoint, checkpoint, layer, layer],
    )


# --- cross-lingual expert overlap -----------------------------------------------------------------


def overlap_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Mean cross-lingual expert overlap (over concepts and language pairs) per checkpoint."""
    return frame(
        con,
        # Grouped by checkpoint alone (the run is fixed): a string key less per row of 1 M at BLOOM-7b1 scale.
        f"""WITH t AS (
                SELECT checkpoint, avg(jaccard) AS mean_jaccard, avg(spearman_ap) AS mean_spearman_ap,
                       count(DISTINCT concept_id)::INTEGER AS n_concepts, max(k)::INTEGER AS k
                FROM expert_overlap WHERE run_id = ? AND lang_a <> lang_b GROUP BY checkpoint)
            SELECT t.checkpoint, c.step, t.mean_jaccard, t.mean_spearman_ap, t.n_concepts, t.k
            FROM t JOIN checkpoints c ON c.run_id = ? AND c.checkpoint = t.checkpoint ORDER BY {_T_ORDER}""",
        [run_id, run_id],
    )


def concept_overlap_matrix(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, concept_id: str
) -> pl.DataFrame:
    """Language x language overlap of one concept's experts at one checkpoint, mirrored, diagonal 1."""
    return frame(
        con,
        """WITH o AS (
               SELECT lang_a, lang_b, jaccard, spearman_ap, over_k FROM expert_overlap
               WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?)
                 AND concept_id = ? AND lang_a <> lang_b),
           m AS (
               SELECT lang_a, lang_b, jaccard, spearman_ap, over_k FROM o
               UNION ALL SELECT lang_b, lang_a, jaccard, spearman_ap, over_k FROM o
               UNION ALL SELECT l, l, 1.0, 1.0, 1.0 FROM (SELECT lang_a AS l FROM o UNION SELECT lang_b FROM o))
           SELECT lang_a, lang_b, avg(jaccard) AS jaccard, avg(spearman_ap) AS spearman_ap, avg(over_k) AS over_k
           FROM m GROUP BY lang_a, lang_b ORDER BY lang_a, lang_b""",
        [run_id, checkpoint, checkpoint, concept_id],
    )


def concept_overlap_history(con: duckdb.DuckDBPyConnection, run_id: str, concept_id: str) -> pl.DataFrame:
    """One concept's pairwise overlap at every checkpoint (each unordered pair once)."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, least(t.lang_a, t.lang_b) AS lang_a,
                   greatest(t.lang_a, t.lang_b) AS lang_b,
                   least(t.lang_a, t.lang_b) || '-' || greatest(t.lang_a, t.lang_b) AS pair,
                   avg(t.jaccard) AS jaccard, avg(t.spearman_ap) AS spearman_ap, avg(t.over_k) AS over_k
            FROM expert_overlap t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.concept_id = ? AND t.lang_a <> t.lang_b
            GROUP BY ALL ORDER BY {_T_ORDER}, lang_a, lang_b""",
        [run_id, concept_id],
    )


def concept_overlap_ranking(con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str) -> pl.DataFrame:
    """Every concept's mean pairwise overlap at one checkpoint, most shared first."""
    return frame(
        con,
        """SELECT concept_id, avg(jaccard) AS mean_jaccard, avg(spearman_ap) AS mean_spearman_ap
           FROM expert_overlap WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?)
             AND lang_a <> lang_b
           GROUP BY concept_id ORDER BY mean_jaccard DESC, concept_id""",
        [run_id, checkpoint, checkpoint],
    )


# --- concepts: top-K units and shared experts -----------------------------------------------------


def top_units(con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, concept_id: str, k: int) -> pl.DataFrame:
    """Per language, the concept's top-``k`` units at one checkpoint (rank 1 = best AP)."""
    return frame(
        con,
        """SELECT lang, rank, layer, unit, ap, median_pos_act FROM neuron_ap
           WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?) AND concept_id = ? AND rank <= ?
           ORDER BY lang, rank""",
        [run_id, checkpoint, checkpoint, concept_id, k],
    )


def shared_experts(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    checkpoint: str,
    concept_id: str,
    min_langs: int = 1,
    limit: int = 500,
) -> pl.DataFrame:
    """Units in the top-K of one concept in at least ``min_langs`` languages, most shared first."""
    return frame(
        con,
        """SELECT layer, unit, n_langs_topk, langs, min_ap, mean_ap FROM shared_experts
           WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?)
             AND concept_id = ? AND n_langs_topk >= ?
           ORDER BY n_langs_topk DESC, mean_ap DESC, layer, unit LIMIT ?""",
        [run_id, checkpoint, checkpoint, concept_id, min_langs, limit],
    )


def shared_expert_history(con: duckdb.DuckDBPyConnection, run_id: str, concept_id: str) -> pl.DataFrame:
    """Per checkpoint: how many units are shared experts of one concept, and the most languages any has."""
    return frame(
        con,
        f"""SELECT c.checkpoint, c.step, count(t.unit)::INTEGER AS n_shared,
                   coalesce(max(t.n_langs_topk), 0)::INTEGER AS max_langs
            FROM checkpoints c LEFT JOIN shared_experts t
              ON t.run_id = c.run_id AND t.checkpoint = c.checkpoint AND t.concept_id = ?
            WHERE c.run_id = ?
            GROUP BY c.checkpoint, c.step ORDER BY {_CKPT_ORDER}""",
        [concept_id, run_id],
    )


def compare_checkpoints(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    concept_id: str,
    checkpoint_a: str,
    checkpoint_b: str,
    k: int,
) -> pl.DataFrame:
    """Per language, the top-``k`` units of a concept at two checkpoints: which stayed, entered, left."""
    return frame(
        con,
        """WITH a AS (SELECT lang, layer, unit, rank, ap FROM neuron_ap
                     WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?)
                       AND concept_id = ? AND rank <= ?),
                b AS (SELECT lang, layer, unit, rank, ap FROM neuron_ap
                     WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?)
                       AND concept_id = ? AND rank <= ?)
           SELECT coalesce(a.lang, b.lang) AS lang, coalesce(a.layer, b.layer) AS layer,
                  coalesce(a.unit, b.unit) AS unit, a.rank AS rank_a, b.rank AS rank_b,
                  a.ap AS ap_a, b.ap AS ap_b,
                  CASE WHEN a.unit IS NULL THEN 'entered' WHEN b.unit IS NULL THEN 'left'
                       ELSE 'stayed' END AS status
           FROM a FULL OUTER JOIN b ON a.lang = b.lang AND a.layer = b.layer AND a.unit = b.unit
           ORDER BY lang, status, coalesce(b.rank, a.rank)""",
        [run_id, checkpoint_a, checkpoint_a, concept_id, k, run_id, checkpoint_b, checkpoint_b, concept_id, k],
    )


# --- one neuron --------------------------------------------------------------------------------------


def neuron_ap_history(con: duckdb.DuckDBPyConnection, run_id: str, layer: int, unit: int) -> pl.DataFrame:
    """Every (checkpoint, lang, concept) where the unit is a top-K expert, with its AP and rank."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.lang, t.concept_id, t.ap, t.rank
            FROM {_by_unit(con)} t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.layer = ? AND t.unit = ?
            ORDER BY {_T_ORDER}, t.concept_id, t.lang""",
        [run_id, layer, unit],
    )


def neuron_summary_history(con: duckdb.DuckDBPyConnection, run_id: str, layer: int, unit: int) -> pl.DataFrame:
    """The unit's AP summary (over all concepts and languages) at every checkpoint."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.mean_ap, t.max_ap, t.best_concept_id, t.best_lang
            FROM neuron_summary t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.layer = ? AND t.unit = ?
            ORDER BY {_T_ORDER}""",
        [run_id, layer, unit],
    )


def neuron_shared_history(con: duckdb.DuckDBPyConnection, run_id: str, layer: int, unit: int) -> pl.DataFrame:
    """Checkpoints and concepts for which the unit is a shared expert (top-K in many languages)."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.concept_id, t.n_langs_topk, t.langs, t.min_ap, t.mean_ap
            FROM shared_experts t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.layer = ? AND t.unit = ?
            ORDER BY {_T_ORDER}, t.n_langs_topk DESC, t.concept_id""",
        [run_id, layer, unit],
    )


def top_shared_neurons(con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, limit: int = 20) -> pl.DataFrame:
    """The most cross-lingual units at one checkpoint: most languages, then most concepts."""
    return frame(
        con,
        """SELECT layer, unit, max(n_langs_topk)::INTEGER AS max_langs,
                  count(*)::INTEGER AS n_concepts, arg_max(concept_id, n_langs_topk) AS top_concept,
                  max(mean_ap) AS best_mean_ap
           FROM shared_experts WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?)
           GROUP BY layer, unit
           ORDER BY max_langs DESC, n_concepts DESC, best_mean_ap DESC, layer, unit LIMIT ?""",
        [run_id, checkpoint, checkpoint, limit],
    )


# --- one neuron: drill-downs --------------------------------------------------------------


def unit_top_contexts(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, layer: int, unit: int
) -> pl.DataFrame:
    """The unit's top contexts per language at one checkpoint: rank, response, the context's text and the
    character offsets of the token where the unit peaks (split the text there to highlight it)."""
    return frame(
        con,
        """SELECT t.lang, t.rank, t.sentence_id, s.concept_id, s.text, t.response, t.peak_start, t.peak_end,
                  t.peak_act
           FROM unit_top_contexts t JOIN sentences s ON s.sentence_id = t.sentence_id
           WHERE t.run_id = ? AND t.checkpoint = ? AND strlen(t.checkpoint) = strlen(?) AND t.layer = ? AND t.unit = ?
           ORDER BY t.lang, t.rank""",
        [run_id, checkpoint, checkpoint, layer, unit],
    )


def unit_response_hist(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, layer: int, unit: int
) -> pl.DataFrame:
    """The unit's response histograms at one checkpoint, one row per (concept, lang, group, bin): group
    'concept' (the concept's contexts) or 'other' (the language's other contexts), the bin's edges, its
    count and its share of the group's contexts (the groups differ in size by far)."""
    return frame(
        con,
        """WITH h AS (
               SELECT concept_id, lang, lo, hi, len(concept_counts) AS n_bins,
                      generate_subscripts(concept_counts, 1) AS bin,
                      unnest(concept_counts) AS n_concept, unnest(other_counts) AS n_other
               FROM unit_response_hist
               WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?) AND layer = ? AND unit = ?),
           long AS (
               SELECT concept_id, lang, lo, hi, n_bins, bin, 'concept' AS grp, n_concept AS n FROM h
               UNION ALL
               SELECT concept_id, lang, lo, hi, n_bins, bin, 'other' AS grp, n_other AS n FROM h)
           SELECT concept_id, lang, grp, bin::INTEGER AS bin,
                  lo + (bin - 1) * (hi - lo) / n_bins AS bin_lo, lo + bin * (hi - lo) / n_bins AS bin_hi,
                  n::INTEGER AS n,
                  n / greatest(sum(n) OVER (PARTITION BY concept_id, lang, grp), 1) AS share
           FROM long ORDER BY concept_id, lang, grp, bin""",
        [run_id, checkpoint, checkpoint, layer, unit],
    )


def unit_output_tokens(con: duckdb.DuckDBPyConnection, run_id: str, layer: int, unit: int) -> pl.DataFrame:
    """The unit's top promoted and suppressed output tokens (direct effect on the logits) at every
    checkpoint, in training order."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.direction, t.rank, t.token_id, t.token, t.logit
            FROM unit_output_tokens t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.layer = ? AND t.unit = ?
            ORDER BY {_T_ORDER}, t.direction, t.rank""",
        [run_id, layer, unit],
    )


def similar_units(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, layer: int, unit: int, limit: int = 10
) -> pl.DataFrame:
    """The units whose cross-lingual profile is most like this unit's at one checkpoint: cosine of their AP
    vectors over (concept, lang), from the stored top-K rows (an AP outside a unit's top-K counts as 0, so
    units that are experts for none of the same cells are not listed)."""
    by_unit = _by_unit(con)
    return frame(
        con,
        # Two passes over the checkpoint's rows, never a group-by over all of its units: the units sharing a
        # cell with this one (a hash probe against its few cells, in neuron_ap laid out by concept), then only
        # those units' rows (in the copy laid out by unit, where this unit's own rows are a row group or two).
        f"""WITH me AS (SELECT concept_id, lang, ap FROM {by_unit}
                       WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?)
                         AND layer = ? AND unit = ?),
                my_norm AS (SELECT sqrt(sum(ap * ap)) AS norm FROM me),
                cand AS (SELECT DISTINCT n.layer, n.unit FROM neuron_ap n JOIN me USING (concept_id, lang)
                         WHERE n.run_id = ? AND n.checkpoint = ? AND strlen(n.checkpoint) = strlen(?)
                           AND NOT (n.layer = ? AND n.unit = ?)),
                prof AS (SELECT n.layer, n.unit, n.concept_id, n.lang, n.ap FROM {by_unit} n
                         JOIN cand USING (layer, unit)
                         WHERE n.run_id = ? AND n.checkpoint = ? AND strlen(n.checkpoint) = strlen(?)),
                agg AS (SELECT p.layer, p.unit, sum(p.ap * coalesce(me.ap, 0)) AS dot,
                               count(me.ap)::INTEGER AS n_shared_cells, sqrt(sum(p.ap * p.ap)) AS norm,
                               count(*)::INTEGER AS n_cells
                        FROM prof p LEFT JOIN me USING (concept_id, lang) GROUP BY p.layer, p.unit)
           SELECT a.layer, a.unit, a.dot / (a.norm * m.norm) AS cosine, a.n_shared_cells, a.n_cells
           FROM agg a, my_norm m
           ORDER BY cosine DESC, a.n_shared_cells DESC, a.layer, a.unit LIMIT ?""",
        [
            run_id,
            checkpoint,
            checkpoint,
            layer,
            unit,
            run_id,
            checkpoint,
            checkpoint,
            layer,
            unit,
            run_id,
            checkpoint,
            checkpoint,
            limit,
        ],
    )


# --- search ---------------------------------------------------------------------------------------


def search_concepts(con: duckdb.DuckDBPyConnection, word: str, limit: int = 50) -> pl.DataFrame:
    """The concepts whose contexts contain ``word`` (case-insensitive substring, any language or script):
    how many contexts, in which languages, and one of them."""
    return frame(
        con,
        """SELECT s.concept_id, any_value(c.label) AS label, count(*)::INTEGER AS n_contexts,
                  string_agg(DISTINCT s.lang, ',' ORDER BY s.lang) AS langs, min(s.text) AS example
           FROM sentences s LEFT JOIN concepts c ON c.concept_id = s.concept_id
           WHERE strpos(lower(s.text), lower(?)) > 0
           GROUP BY s.concept_id ORDER BY n_contexts DESC, s.concept_id LIMIT ?""",
        [word, limit],
    )


def search_units(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, word: str, limit: int = 50
) -> pl.DataFrame:
    """The units whose top contexts at one checkpoint contain ``word``: how many of them, in which
    languages, their best rank among them, and one of them."""
    return frame(
        con,
        """SELECT t.layer, t.unit, count(*)::INTEGER AS n_contexts, min(t.rank)::INTEGER AS best_rank,
                  string_agg(DISTINCT t.lang, ',' ORDER BY t.lang) AS langs, arg_min(s.text, t.rank) AS example
           FROM unit_top_contexts t JOIN sentences s ON s.sentence_id = t.sentence_id
           WHERE t.run_id = ? AND t.checkpoint = ? AND strlen(t.checkpoint) = strlen(?)
             AND strpos(lower(s.text), lower(?)) > 0
           GROUP BY t.layer, t.unit ORDER BY n_contexts DESC, best_rank, t.layer, t.unit LIMIT ?""",
        [run_id, checkpoint, checkpoint, word, limit],
    )


# --- one language ------------------------------------------------------------------------------------


def language_experts(con: duckdb.DuckDBPyConnection, run_id: str, lang: str, checkpoint: str, k: int) -> pl.DataFrame:
    """One language's top-``k`` experts of every concept at one checkpoint, with how many languages
    share each (``n_langs_topk`` is null where fewer than the run's ``min_langs`` do)."""
    return frame(
        con,
        """WITH a AS (SELECT concept_id, rank, layer, unit, ap FROM neuron_ap
                     WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?) AND lang = ? AND rank <= ?),
                s AS (SELECT concept_id, layer, unit, n_langs_topk, langs FROM shared_experts
                     WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?) AND contains(langs, ?))
           SELECT a.concept_id, a.rank, a.layer, a.unit, a.ap, s.n_langs_topk, s.langs
           FROM a LEFT JOIN s USING (concept_id, layer, unit)
           ORDER BY a.concept_id, a.rank""",
        [run_id, checkpoint, checkpoint, lang, k, run_id, checkpoint, checkpoint, lang],
    )


def language_sharing(con: duckdb.DuckDBPyConnection, run_id: str, lang: str) -> pl.DataFrame:
    """Per checkpoint and concept: how many of the language's top-K experts are shared experts
    (top-K in at least the run's ``min_langs`` languages, this one included); pre-aggregated by
    precompute in ``expert_sharing``."""
    return frame(
        con,
        f"""SELECT c.checkpoint, c.step, k.concept_id, coalesce(s.n_shared, 0)::INTEGER AS n_shared
            FROM checkpoints c CROSS JOIN (SELECT concept_id FROM concepts) k
            LEFT JOIN expert_sharing s ON s.run_id = c.run_id AND s.checkpoint = c.checkpoint
                 AND s.concept_id = k.concept_id AND s.lang = ?
            WHERE c.run_id = ?
            ORDER BY {_CKPT_ORDER}, k.concept_id""",
        [lang, run_id],
    )


def language_probe_f1(con: duckdb.DuckDBPyConnection, run_id: str, lang: str) -> pl.DataFrame:
    """One language's LID F1 per (checkpoint, layer) for every representation."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.layer, t.representation, t.f1
            FROM probe_per_language t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.lang = ?
            ORDER BY {_T_ORDER}, t.representation, t.layer""",
        [run_id, lang],
    )


# --- the rest of the paper: compression, language neurons, steering ---------------------------------


def similarity_metrics(con: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    """Metrics present in the similarity table."""
    return frame(con, "SELECT DISTINCT metric FROM similarity WHERE run_id = ? ORDER BY metric", [run_id])[
        "metric"
    ].to_list()


def similarity_by_layer(con: duckdb.DuckDBPyConnection, run_id: str, metric: str) -> pl.DataFrame:
    """Mean cross-language similarity per (checkpoint, layer) for one metric."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.layer, avg(t.value) AS value,
                   count(*)::INTEGER AS n_pairs
            FROM similarity t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.metric = ? AND t.lang_a <> t.lang_b
            GROUP BY t.checkpoint, c.step, t.layer ORDER BY {_T_ORDER}, t.layer""",
        [run_id, metric],
    )


def similarity_pairs(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, layer: int, metric: str
) -> pl.DataFrame:
    """Language x language similarity at one checkpoint and layer (mirrored)."""
    return frame(
        con,
        """WITH o AS (SELECT lang_a, lang_b, value FROM similarity
                     WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?)
                       AND layer = ? AND metric = ?)
           SELECT lang_a, lang_b, avg(value) AS value FROM (
               SELECT lang_a, lang_b, value FROM o
               UNION ALL SELECT lang_b, lang_a, value FROM o WHERE lang_a <> lang_b)
           GROUP BY lang_a, lang_b ORDER BY lang_a, lang_b""",
        [run_id, checkpoint, checkpoint, layer, metric],
    )


def compression(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Every compression measurement (checkpoint, layer, scope, metric, value)."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.layer, t.scope, t.metric, t.value
            FROM compression t {_CKPT_JOIN} WHERE t.run_id = ?
            ORDER BY {_T_ORDER}, t.metric, t.scope, t.layer""",
        [run_id],
    )


def neuron_counts(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """How many neurons of each kind per checkpoint and layer."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.layer, t.kind, t.n
            FROM neuron_counts t {_CKPT_JOIN} WHERE t.run_id = ?
            ORDER BY {_T_ORDER}, t.kind, t.layer""",
        [run_id],
    )


def language_neuron_counts(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Language-specific (LAPE) neurons per checkpoint and language."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.top_lang, count(*)::INTEGER AS n
            FROM language_neurons t {_CKPT_JOIN} WHERE t.run_id = ?
            GROUP BY t.checkpoint, c.step, t.top_lang ORDER BY {_T_ORDER}, t.top_lang""",
        [run_id],
    )


def language_neurons(con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, limit: int = 1000) -> pl.DataFrame:
    """The most language-specific neurons at one checkpoint (lowest LAPE first)."""
    return frame(
        con,
        """SELECT layer, unit, top_lang, top_prob, lape FROM language_neurons
           WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?) ORDER BY lape, layer, unit LIMIT ?""",
        [run_id, checkpoint, checkpoint, limit],
    )


def neuron_language_history(con: duckdb.DuckDBPyConnection, run_id: str, layer: int, unit: int) -> pl.DataFrame:
    """The checkpoints at which one unit is language-specific (LAPE), with its language."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.top_lang, t.top_prob, t.lape
            FROM language_neurons t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.layer = ? AND t.unit = ?
            ORDER BY {_T_ORDER}""",
        [run_id, layer, unit],
    )


def steering(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Every steering generation."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.concept_id, t.source_lang, t.n_neurons, t.value_mode,
                   t.seed, t.prompt, t.output_text, t.output_lang, t.output_lang_confidence,
                   t.expresses_concept, t.concept_lang, t.top_k, t.top_p, t.temperature, t.max_new_tokens
            FROM steering t {_CKPT_JOIN} WHERE t.run_id = ?
            ORDER BY {_T_ORDER}, t.concept_id, t.source_lang, t.n_neurons, t.seed""",
        [run_id],
    )


def steering_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per (checkpoint, concept, source language, n_neurons): share of outputs on the concept and
    the language they are written in."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.concept_id, t.source_lang, t.n_neurons,
                   count(*)::INTEGER AS n_outputs,
                   avg(CASE WHEN t.expresses_concept THEN 1.0 ELSE 0.0 END) AS concept_rate,
                   mode(t.output_lang) AS main_output_lang,
                   avg(CASE WHEN t.output_lang = t.source_lang THEN 1.0 ELSE 0.0 END) AS source_lang_rate
            FROM steering t {_CKPT_JOIN} WHERE t.run_id = ?
            GROUP BY ALL ORDER BY {_T_ORDER}, t.concept_id, t.source_lang, t.n_neurons""",
        [run_id],
    )


def steering_language_shares(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per (checkpoint, concept, source language, n_neurons): the share of outputs in the source language,
    in English, in another language, and undetermined (``und`` or unlabelled), by primary language subtag.

    ``language`` is one of 'source language', 'English', 'other', 'undetermined'; every group has all four
    rows (share 0 where none), so lines over training do not break."""
    return frame(
        con,
        f"""WITH labelled AS (
                SELECT t.checkpoint, c.step, t.concept_id, t.source_lang, t.n_neurons,
                       CASE WHEN t.output_lang IS NULL OR t.output_lang = 'und' THEN 'undetermined'
                            WHEN split_part(lower(t.output_lang), '-', 1) = split_part(lower(t.source_lang), '-', 1)
                                THEN 'source language'
                            WHEN split_part(lower(t.output_lang), '-', 1) = 'en' THEN 'English'
                            ELSE 'other' END AS language
                FROM steering t {_CKPT_JOIN} WHERE t.run_id = ?),
            groups AS (
                SELECT checkpoint, step, concept_id, source_lang, n_neurons, count(*)::INTEGER AS n_outputs
                FROM labelled GROUP BY ALL),
            kinds AS (SELECT unnest(['source language', 'English', 'other', 'undetermined']) AS language),
            counts AS (
                SELECT checkpoint, concept_id, source_lang, n_neurons, language, count(*)::INTEGER AS n
                FROM labelled GROUP BY ALL)
            SELECT g.checkpoint, g.step, g.concept_id, g.source_lang, g.n_neurons, k.language,
                   coalesce(n.n, 0)::INTEGER AS n, g.n_outputs, coalesce(n.n, 0) / g.n_outputs AS share
            FROM groups g CROSS JOIN kinds k
            LEFT JOIN counts n ON n.checkpoint = g.checkpoint AND n.concept_id = g.concept_id
                 AND n.source_lang = g.source_lang AND n.n_neurons = g.n_neurons AND n.language = k.language
            ORDER BY g.step NULLS LAST, g.checkpoint, g.concept_id, g.source_lang, g.n_neurons,
                     list_position(['source language', 'English', 'other', 'undetermined'], k.language)""",
        [run_id],
    )


# --- chance, uncertainty and emergence ---------------------------------------------------
# Chance levels come from precompute (precompute.analysis.chance): chance_ap (random-scorer AP and the
# permutation threshold per checkpoint x lang x concept), overlap_chance (exact random-set overlap per
# checkpoint), headline_ci (bootstrap intervals over concepts); probe_results carries the LID baselines.


def probe_chance(con: duckdb.DuckDBPyConnection, run_id: str, representation: str) -> pl.DataFrame:
    """LID accuracy per (checkpoint, layer) with its bootstrap interval (seeds, then test contexts), the
    majority-class baseline, the accuracy of the control task (random label per token type, Hewitt & Liang;
    NULL for the sentence mean, which has no token type) and the selectivity (accuracy - control accuracy)."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.layer, t.accuracy, t.accuracy_lo, t.accuracy_hi,
                   t.majority_baseline, t.control_accuracy, t.accuracy - t.control_accuracy AS selectivity
            FROM probe_results t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.representation = ?
            ORDER BY {_T_ORDER}, t.layer""",
        [run_id, representation],
    )


def overlap_chance(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per checkpoint: the chance levels of the overlap measures for random top-K sets of its N units."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.k, t.n_units, t.n_langs, t.null_quantile, t.jaccard_mean,
                   t.jaccard_threshold, t.spearman_threshold, t.shared_expected, t.over_k_mean, t.over_k_threshold,
                   t.jaccard_threshold_corrected, t.over_k_threshold_corrected, t.correction, t.n_cells
            FROM overlap_chance t {_CKPT_JOIN} WHERE t.run_id = ? ORDER BY {_T_ORDER}""",
        [run_id],
    )


def headline_intervals(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per checkpoint and headline measure ('mean_jaccard', 'mean_spearman_ap', 'n_shared'): the estimate,
    its bootstrap interval over concepts (lo, hi; null where none) and its chance level."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.measure, t.estimate, t.lo, t.hi, t.chance, t.level, t.n_resamples
            FROM headline_ci t {_CKPT_JOIN} WHERE t.run_id = ? ORDER BY {_T_ORDER}, t.measure""",
        [run_id],
    )


def expert_significance(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, concept_id: str, k: int
) -> pl.DataFrame:
    """The concept's top-``k`` units per language at one checkpoint, each with the random scorer's AP, the
    corrected permutation threshold and whether its AP beats it (``significant``; null where no test was run),
    with the test that decided it: the cell's p-value, shuffles, Monte-Carlo resolution, level and correction."""
    return frame(
        con,
        """SELECT n.lang, n.rank, n.layer, n.unit, n.ap, ch.random_ap, ch.threshold,
                  CASE WHEN ch.threshold IS NULL THEN NULL ELSE n.ap > ch.threshold END AS significant,
                  ch.threshold_uncorrected, ch.p_value AS cell_p_value, ch.n_shuffles, ch.p_resolution, ch.alpha,
                  ch.correction, ch.n_cells
           FROM neuron_ap n LEFT JOIN chance_ap ch
             ON ch.run_id = n.run_id AND ch.checkpoint = n.checkpoint AND ch.lang = n.lang
            AND ch.concept_id = n.concept_id
           WHERE n.run_id = ? AND n.checkpoint = ? AND strlen(n.checkpoint) = strlen(?) AND n.concept_id = ?
             AND n.rank <= ?
           ORDER BY n.lang, n.rank""",
        [run_id, checkpoint, checkpoint, concept_id, k],
    )


def concept_chance_history(con: duckdb.DuckDBPyConnection, run_id: str, concept_id: str) -> pl.DataFrame:
    """One concept's chance levels of AP per (checkpoint, lang): the random scorer's and the permutation threshold."""
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.lang, t.random_ap, t.threshold, t.best_ap, t.n_shuffles,
                   t.threshold_uncorrected, t.p_value, t.p_resolution, t.alpha, t.correction, t.n_cells
            FROM chance_ap t {_CKPT_JOIN}
            WHERE t.run_id = ? AND t.concept_id = ? ORDER BY {_T_ORDER}, t.lang""",
        [run_id, concept_id],
    )


#: The overlap measures a reader may lead with ([experts] overlap_measure), each with its stored threshold column.
OVERLAP_MEASURES = facts.OVERLAP_MEASURES


def pair_emergence(
    con: duckdb.DuckDBPyConnection, run_id: str, concept_id: str | None = None, measure: str = "jaccard"
) -> pl.DataFrame:
    """Per (concept, language pair): the first checkpoint from which its top-K overlap (``measure``: Jaccard or
    |A ∩ B| / k) stays above the random-set threshold after the run's correction over the checkpoint's pairs
    (``overlap_chance.jaccard_threshold_corrected`` / ``over_k_threshold_corrected``) at every later checkpoint;
    ``emerged_at`` null where it does not (yet). One concept, or all (``concept_id`` None). The one rule of
    emergence, :func:`precompute.store.facts.pair_emergence`, which the report counts too."""
    if measure not in OVERLAP_MEASURES:
        raise ValueError(f"measure must be one of {OVERLAP_MEASURES}, got {measure!r}")
    with con.cursor() as cur:
        return facts.pair_emergence(cur, facts.run_settings(cur, run_id), concept_id, measure)


def unit_emergence(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    min_langs: int,
    concept_id: str | None = None,
    layer: int | None = None,
    unit: int | None = None,
) -> pl.DataFrame:
    """Shared units that emerge: per (concept, layer, unit), the first checkpoint from which the unit's AP beats
    the permutation threshold (``chance_ap.threshold``) as a top-K expert in at least ``min_langs`` languages
    at every later checkpoint, with in how many languages it does at the last one. Only units that emerged;
    filtered by concept and/or unit. The one rule, :func:`precompute.store.facts.unit_emergence`."""
    # One unit's rows from the copy laid out by unit; one concept's (or all) from neuron_ap, laid out by concept.
    source = _by_unit(con) if layer is not None and unit is not None else "neuron_ap"
    with con.cursor() as cur:
        settings = facts.run_settings(cur, run_id)
        return facts.unit_emergence(cur, settings, min_langs, concept_id, layer, unit, experts_table=source)


# Every function the pages call, for the benchmark and the tests.
PAGE_QUERIES = [
    meta,
    table_counts,
    runs,
    run_settings,
    checkpoints,
    languages,
    concepts,
    layers,
    sentence_counts,
    concept_sentences,
    stage_timings,
    representations,
    probe_grid,
    probe_languages,
    overlap_summary,
    concept_overlap_matrix,
    concept_overlap_history,
    concept_overlap_ranking,
    top_units,
    shared_experts,
    shared_expert_history,
    compare_checkpoints,
    neuron_ap_history,
    neuron_summary_history,
    neuron_shared_history,
    top_shared_neurons,
    language_experts,
    language_sharing,
    language_probe_f1,
    similarity_metrics,
    similarity_by_layer,
    similarity_pairs,
    compression,
    neuron_counts,
    language_neuron_counts,
    language_neurons,
    steering,
    steering_summary,
    steering_language_shares,
    missing_tables,
    probe_chance,
    overlap_chance,
    headline_intervals,
    expert_significance,
    pair_emergence,
    unit_emergence,
    concept_chance_history,
    unit_top_contexts,
    unit_response_hist,
    unit_output_tokens,
    similar_units,
    search_concepts,
    search_units,
]


# --- what a count counts, and the sizes its chance level needs (Language neurons, Steering, Language, Compression)
# ``language_neurons`` holds one row per (unit, language) the LAPE selection assigns (precompute.analysis.lape):
# a unit assigned to two languages has two rows, so a count of rows counts assignments, not units.

#: Two activation probabilities closer than this are a tie (the unit is as active in both languages).
PROB_TIE = 1e-9


def language_neuron_totals(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per checkpoint the LAPE stage ran at: ``n_units`` (distinct language-specific units), ``n_assignments``
    ((unit, language) rows: what a count of rows counts), ``n_multilingual`` (units assigned to more than one
    language) and ``counted_units`` (the ``language_specific`` units of ``neuron_counts``, summed over layers:
    the same units, counted by the stage itself; null where the stage wrote no counts)."""
    return frame(
        con,
        f"""WITH u AS (SELECT checkpoint, layer, unit, count(*) AS n_langs FROM language_neurons
                       WHERE run_id = ? GROUP BY ALL),
                per AS (SELECT checkpoint, count(*)::INTEGER AS n_units, sum(n_langs)::INTEGER AS n_assignments,
                               count(*) FILTER (WHERE n_langs > 1)::INTEGER AS n_multilingual
                        FROM u GROUP BY checkpoint),
                counted AS (SELECT checkpoint, sum(n)::INTEGER AS counted_units FROM neuron_counts
                            WHERE run_id = ? AND kind = 'language_specific' GROUP BY checkpoint)
            SELECT c.checkpoint, c.step, coalesce(per.n_units, 0)::INTEGER AS n_units,
                   coalesce(per.n_assignments, 0)::INTEGER AS n_assignments,
                   coalesce(per.n_multilingual, 0)::INTEGER AS n_multilingual, counted.counted_units
            FROM checkpoints c LEFT JOIN per ON per.checkpoint = c.checkpoint
            LEFT JOIN counted ON counted.checkpoint = c.checkpoint
            WHERE c.run_id = ? AND (per.checkpoint IS NOT NULL OR counted.checkpoint IS NOT NULL)
            ORDER BY {_CKPT_ORDER}""",
        [run_id, run_id, run_id],
    )


# A unit's most active language(s): its assigned languages whose probability ties the unit's largest. The store
# keeps only assigned rows, yet this is the unit's most active language of all: Tang's rule assigns every language
# whose p passes one bar, so the language of the largest p passes it whenever any does, and the threshold rule
# assigns that language alone.
_MOST_ACTIVE = f"""
    WITH t AS (SELECT checkpoint, layer, unit, lape, top_lang, top_prob,
                      max(top_prob) OVER (PARTITION BY checkpoint, layer, unit) AS max_prob,
                      count(*) OVER (PARTITION BY checkpoint, layer, unit) AS n_langs
               FROM language_neurons WHERE run_id = ? {{where}}),
         m AS (SELECT checkpoint, layer, unit,
                      string_agg(top_lang, ',' ORDER BY top_lang) FILTER (WHERE top_prob >= max_prob - {PROB_TIE})
                          AS most_active_lang,
                      count(*) FILTER (WHERE top_prob >= max_prob - {PROB_TIE}) AS n_most_active
               FROM t GROUP BY ALL)"""


def language_neuron_top_languages(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Language-specific units per checkpoint by their most active language (each unit counted once, so the
    counts of a checkpoint sum to its distinct units): ``most_active_lang`` is that language, or 'tied' where the
    unit is as active (within ``PROB_TIE``) in several of its languages, which no tie-break decides."""
    return frame(
        con,
        _MOST_ACTIVE.format(where="")
        + f"""
        SELECT c.checkpoint, c.step,
               CASE WHEN m.n_most_active > 1 THEN 'tied' ELSE m.most_active_lang END AS most_active_lang,
               count(*)::INTEGER AS n_units
        FROM m JOIN checkpoints c ON c.run_id = ? AND c.checkpoint = m.checkpoint
        GROUP BY ALL ORDER BY {_CKPT_ORDER}, most_active_lang""",
        [run_id, run_id],
    )


def language_neuron_assignments(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, limit: int = 1000
) -> pl.DataFrame:
    """The most language-specific units at one checkpoint (lowest LAPE first), one row per (unit, assigned
    language): ``assigned_lang`` and ``assigned_prob`` (the store's ``top_lang`` and ``top_prob``: the language the
    selection assigned and the unit's activation probability in it), ``n_langs_assigned``, and the unit's
    ``most_active_lang`` (its languages of the largest probability, comma-separated where tied)."""
    return frame(
        con,
        _MOST_ACTIVE.format(where="AND checkpoint = ? AND strlen(checkpoint) = strlen(?)")
        + """
        SELECT t.layer, t.unit, t.lape, t.top_lang AS assigned_lang, t.top_prob AS assigned_prob,
               t.n_langs::INTEGER AS n_langs_assigned, m.most_active_lang
        FROM t JOIN m USING (checkpoint, layer, unit)
        ORDER BY t.lape, t.layer, t.unit, t.top_lang LIMIT ?""",
        [run_id, checkpoint, checkpoint, limit],
    )


def steering_output_languages(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per (checkpoint, concept, source language, n_neurons): every output language with its number of outputs
    ``n``, the group's ``n_outputs`` and its ``share`` (the shares of a group sum to 1). ``output_lang`` 'und'
    where the language identifier could not tell (or left it unlabelled)."""
    return frame(
        con,
        f"""WITH t AS (SELECT checkpoint, concept_id, source_lang, n_neurons,
                              coalesce(output_lang, 'und') AS output_lang
                       FROM steering WHERE run_id = ?),
                g AS (SELECT checkpoint, concept_id, source_lang, n_neurons, output_lang, count(*)::INTEGER AS n
                      FROM t GROUP BY ALL)
            SELECT g.checkpoint, c.step, g.concept_id, g.source_lang, g.n_neurons, g.output_lang, g.n,
                   (sum(g.n) OVER (PARTITION BY g.checkpoint, g.concept_id, g.source_lang, g.n_neurons))::INTEGER
                       AS n_outputs,
                   g.n / sum(g.n) OVER (PARTITION BY g.checkpoint, g.concept_id, g.source_lang, g.n_neurons)
                       AS share
            FROM g JOIN checkpoints c ON c.run_id = ? AND c.checkpoint = g.checkpoint
            ORDER BY {_CKPT_ORDER}, g.concept_id, g.source_lang, g.n_neurons, g.n DESC, g.output_lang""",
        [run_id, run_id],
    )


def steering_changes(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per (checkpoint, concept, source language, n_neurons > 0): how many steered outputs differ from the
    unsteered control (n_neurons = 0) of the same prompt and seed (and value mode, which names the control's
    generation). ``n_outputs`` steered outputs, ``n_compared`` of them with a control, ``n_changed`` whose text
    differs from it; ``n_changed = 0`` means the steering changed nothing at that checkpoint."""
    return frame(
        con,
        f"""WITH s AS (SELECT * FROM steering WHERE run_id = ? AND n_neurons > 0),
                z AS (SELECT checkpoint, concept_id, source_lang, value_mode, prompt, seed, output_text
                      FROM steering WHERE run_id = ? AND n_neurons = 0),
                g AS (SELECT s.checkpoint, s.concept_id, s.source_lang, s.n_neurons,
                             count(*)::INTEGER AS n_outputs, count(z.output_text)::INTEGER AS n_compared,
                             count(*) FILTER (WHERE z.output_text IS NOT NULL AND s.output_text <> z.output_text)
                                 ::INTEGER AS n_changed
                      FROM s LEFT JOIN z ON z.checkpoint = s.checkpoint AND z.concept_id = s.concept_id
                           AND z.source_lang = s.source_lang AND z.value_mode = s.value_mode
                           AND z.prompt = s.prompt AND z.seed = s.seed
                      GROUP BY ALL)
            SELECT g.checkpoint, c.step, g.concept_id, g.source_lang, g.n_neurons, g.n_outputs, g.n_compared,
                   g.n_changed
            FROM g JOIN checkpoints c ON c.run_id = ? AND c.checkpoint = g.checkpoint
            ORDER BY {_CKPT_ORDER}, g.concept_id, g.source_lang, g.n_neurons""",
        [run_id, run_id, run_id],
    )


def sharing_chance_sizes(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per checkpoint, what the chance level of "shared experts" is computed from (``overlap_chance``): the
    units ``n_units`` a top-K is drawn from, the languages ``n_langs`` and the experts' K ``expert_k`` (null
    in a store written before it was stored: the run's top_k then)."""
    columns = {r[0] for r in frame(con, "DESCRIBE overlap_chance").iter_rows()}
    expert_k = "t.expert_k" if "expert_k" in columns else "NULL::INTEGER"
    return frame(
        con,
        f"""SELECT t.checkpoint, c.step, t.n_units, t.n_langs, {expert_k} AS expert_k
            FROM overlap_chance t {_CKPT_JOIN} WHERE t.run_id = ? ORDER BY {_T_ORDER}""",
        [run_id],
    )


def convergence_sizes(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per compression scope ('all', or a language): the centroids the measures are computed from
    (``n_points``: one per (language, concept) the inputs have), their ``n_langs`` and ``n_concepts`` groups,
    and the residual stream's width ``hidden_size``: the sizes their ranges and chance levels depend on."""
    return frame(
        con,
        """WITH p AS (SELECT DISTINCT lang, concept_id FROM sentences),
                h AS (SELECT max(hidden_size)::INTEGER AS hidden_size FROM layers WHERE run_id = ?)
           SELECT 'all' AS scope, count(*)::INTEGER AS n_points, count(DISTINCT lang)::INTEGER AS n_langs,
                  count(DISTINCT concept_id)::INTEGER AS n_concepts, any_value(h.hidden_size) AS hidden_size
           FROM p, h
           UNION ALL
           SELECT lang, count(*)::INTEGER, 1, count(*)::INTEGER, any_value(h.hidden_size) FROM p, h GROUP BY lang
           ORDER BY scope <> 'all', scope""",
        [run_id],
    )


def similarity_pair_sizes(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per unordered language pair (lang_a < lang_b): ``n_concepts`` both languages' inputs have, the k that the
    chance levels of the pair's similarity depend on (retrieval 1 / k; mismatched cosine about -1 / (k - 1)).
    Pairs sharing fewer than two concepts are left out, as the similarity stage leaves them out."""
    return frame(
        con,
        """WITH p AS (SELECT DISTINCT lang, concept_id FROM sentences)
           SELECT a.lang AS lang_a, b.lang AS lang_b, count(*)::INTEGER AS n_concepts
           FROM p a JOIN p b ON a.concept_id = b.concept_id AND a.lang < b.lang
           GROUP BY ALL HAVING count(*) >= 2 ORDER BY lang_a, lang_b""",
    )


PAGE_QUERIES += [
    language_neuron_totals,
    language_neuron_top_languages,
    language_neuron_assignments,
    steering_output_languages,
    steering_changes,
    sharing_chance_sizes,
    convergence_sizes,
    similarity_pair_sizes,
]


# --- the Neuron page's tokens: every token of a top context with the unit's activation ----------------------

#: The per-token columns of ``unit_top_contexts`` (added to the schema after stores were first written) and their
#: types, for stores that lack them.
_TOKEN_COLUMNS = (("token_start", "INTEGER[]"), ("token_end", "INTEGER[]"), ("token_act", "FLOAT[]"))


def unit_context_tokens(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, layer: int, unit: int
) -> pl.DataFrame:
    """The unit's top contexts at one checkpoint, as `unit_top_contexts` reads them, plus each context's real
    tokens: their character offsets in the text and the unit's activation there (``token_start``, ``token_end``,
    ``token_act``, lists in token order). The lists are NULL in rows written before they were stored, and in
    every row of a store whose table predates the columns (read as NULL, not as an error)."""
    have = set(frame(con, "SELECT * FROM unit_top_contexts LIMIT 0").columns)
    tokens = ", ".join(f"t.{name}" if name in have else f"NULL::{kind} AS {name}" for name, kind in _TOKEN_COLUMNS)
    return frame(
        con,
        f"""SELECT t.lang, t.rank, t.sentence_id, s.concept_id, s.text, t.response, t.peak_start, t.peak_end,
                   t.peak_act, {tokens}
            FROM unit_top_contexts t JOIN sentences s ON s.sentence_id = t.sentence_id
            WHERE t.run_id = ? AND t.checkpoint = ? AND strlen(t.checkpoint) = strlen(?) AND t.layer = ?
                  AND t.unit = ?
            ORDER BY t.lang, t.rank""",
        [run_id, checkpoint, checkpoint, layer, unit],
    )


PAGE_QUERIES.append(unit_context_tokens)


# --- the K of the stored overlaps (pages state it where they show an overlap) ---------------------------------


def overlap_k(con: duckdb.DuckDBPyConnection, run_id: str) -> int | None:
    """The K of the run's stored overlaps: the size of the top sets whose Jaccard and |A ∩ B| / k
    ``expert_overlap`` holds (``[experts] overlap_k``, else ``top_k``; :func:`precompute.store.facts.run_settings`).
    A page's own Top-K control does not change them, so the page names this K where it shows them."""
    with con.cursor() as cur:
        return facts.run_settings(cur, run_id).overlap_k


PAGE_QUERIES.append(overlap_k)


# --- the Neuron page beyond the top contexts: firing rate per language, decile and random samples, chance ------

#: Tables added to the schema after stores were first written, which the explorer reads as no rows where a store
#: lacks them (`missing_tables` does not count them): the drill-down's per-language profile and samples.
OPTIONAL_TABLES = ("unit_language_profile", "unit_sample_contexts")


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return name in set(present_tables(con))


def unit_language_profile(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, layer: int, unit: int
) -> pl.DataFrame:
    """The unit's firing rate and mean response per language at one checkpoint (``unit_language_profile``), with
    each language's baseline: ``baseline_rate``, the mean firing rate over every drilled-down unit of the
    checkpoint in that language (``n_units`` of them; the firing rate of all units is not stored). No rows where
    the store lacks the table (written before it was added) or the unit has no drill-down there."""
    if not _has_table(con, "unit_language_profile"):
        return pl.DataFrame(
            schema={
                "lang": pl.Utf8,
                "n_contexts": pl.Int32,
                "firing_rate": pl.Float64,
                "context_rate": pl.Float64,
                "mean_response": pl.Float64,
                "baseline_rate": pl.Float64,
                "n_units": pl.Int64,
            }
        )
    return frame(
        con,
        """WITH base AS (
               SELECT lang, avg(firing_rate) AS baseline_rate, count(*) AS n_units
               FROM unit_language_profile
               WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?)
               GROUP BY lang)
           SELECT p.lang, p.n_contexts, p.firing_rate, p.context_rate, p.mean_response, b.baseline_rate,
                  b.n_units
           FROM unit_language_profile p JOIN base b ON b.lang = p.lang
           WHERE p.run_id = ? AND p.checkpoint = ? AND strlen(p.checkpoint) = strlen(?) AND p.layer = ?
                 AND p.unit = ?
           ORDER BY p.lang""",
        [run_id, checkpoint, checkpoint, run_id, checkpoint, checkpoint, layer, unit],
    )


def unit_sample_tokens(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, layer: int, unit: int
) -> pl.DataFrame:
    """The unit's contexts beyond the top at one checkpoint (``unit_sample_contexts``: per language a few from
    each decile band of its responses and a few at random), with their text and tokens as `unit_context_tokens`
    gives them, plus ``sample``; in language, band (decile_1 ... decile_10, random) and rank order. No rows where
    the store lacks the table."""
    if not _has_table(con, "unit_sample_contexts"):
        return pl.DataFrame(
            schema={
                "lang": pl.Utf8,
                "sample": pl.Utf8,
                "rank": pl.Int32,
                "sentence_id": pl.Int64,
                "concept_id": pl.Utf8,
                "text": pl.Utf8,
                "response": pl.Float64,
                "peak_start": pl.Int32,
                "peak_end": pl.Int32,
                "peak_act": pl.Float64,
                "token_start": pl.List(pl.Int32),
                "token_end": pl.List(pl.Int32),
                "token_act": pl.List(pl.Float32),
            }
        )
    return frame(
        con,
        """SELECT t.lang, t.sample, t.rank, t.sentence_id, s.concept_id, s.text, t.response, t.peak_start,
                  t.peak_end, t.peak_act, t.token_start, t.token_end, t.token_act
           FROM unit_sample_contexts t JOIN sentences s ON s.sentence_id = t.sentence_id
           WHERE t.run_id = ? AND t.checkpoint = ? AND strlen(t.checkpoint) = strlen(?) AND t.layer = ?
                 AND t.unit = ?
           ORDER BY t.lang, CASE WHEN t.sample = 'random' THEN 11
                                 ELSE TRY_CAST(replace(t.sample, 'decile_', '') AS INTEGER) END, t.rank""",
        [run_id, checkpoint, checkpoint, layer, unit],
    )


def unit_ap_against_chance(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, layer: int, unit: int
) -> pl.DataFrame:
    """One row (none where the unit has no summary there): the unit's mean AP over every concept x language at
    one checkpoint (``neuron_summary``) beside a random scorer's expected AP averaged over the same cells
    (``chance_ap.random_ap``, the exact E[AP] of each cell; NULL where the chance stage did not run)."""
    return frame(
        con,
        """SELECT n.mean_ap, n.max_ap,
                  (SELECT avg(random_ap) FROM chance_ap
                   WHERE run_id = ? AND checkpoint = ? AND strlen(checkpoint) = strlen(?)) AS random_ap
           FROM neuron_summary n
           WHERE n.run_id = ? AND n.checkpoint = ? AND strlen(n.checkpoint) = strlen(?) AND n.layer = ?
                 AND n.unit = ?""",
        [run_id, checkpoint, checkpoint, run_id, checkpoint, checkpoint, layer, unit],
    )


def unit_expert_chance(
    con: duckdb.DuckDBPyConnection, run_id: str, checkpoint: str, layer: int, unit: int
) -> pl.DataFrame:
    """Per (concept, lang) where the unit is a top-K expert at one checkpoint: its AP and rank, the random
    scorer's expected AP and the corrected permutation threshold (NULL where no test was run), to state beside
    its response histograms."""
    return frame(
        con,
        f"""SELECT n.concept_id, n.lang, n.ap, n.rank, ch.random_ap, ch.threshold
            FROM {_by_unit(con)} n LEFT JOIN chance_ap ch
              ON ch.run_id = n.run_id AND ch.checkpoint = n.checkpoint AND ch.lang = n.lang
             AND ch.concept_id = n.concept_id
            WHERE n.run_id = ? AND n.checkpoint = ? AND strlen(n.checkpoint) = strlen(?) AND n.layer = ?
                  AND n.unit = ?
            ORDER BY n.concept_id, n.lang""",
        [run_id, checkpoint, checkpoint, layer, unit],
    )


PAGE_QUERIES += [unit_language_profile, unit_sample_tokens, unit_ap_against_chance, unit_expert_chance]
