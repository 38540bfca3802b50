"""The store's schema: DDL of every table, indexes, the schema version and the table lists.

One module owns what a crossling store contains; writers, readers, the merge and the explorer all ask it.
"""

from __future__ import annotations

import duckdb

SCHEMA_VERSION = 1

# The DuckDB storage format every file crossling writes is in (store files and checkpoint parts): the oldest the
# schema needs, so that a collaborator opens a store with the DuckDB they have (every version since 1.1, the
# oldest pyproject allows), not only with the one that wrote it. Recorded in ``meta`` (key ``storage_version``)
# at every write; the file's header says it too (storage number 64). Measured: DuckDB 1.1.3 reads a store and its
# parts (tests/test_hostile_parts.py); DuckDB 1.0.0 cannot read the primary keys, written as 'v1.0.0' or older.
STORAGE_VERSION = "v1.1.0"
STORAGE_NUMBER = 64
OPENS_IN_DUCKDB = "1.1.0"


# Tables in dependency order. Every statement is idempotent (IF NOT EXISTS).
DDL: dict[str, str] = {
    "meta": """
        CREATE TABLE IF NOT EXISTS meta (
            key VARCHAR PRIMARY KEY,
            value VARCHAR NOT NULL
        )""",
    "runs": """
        CREATE TABLE IF NOT EXISTS runs (
            run_id VARCHAR PRIMARY KEY,
            model_id VARCHAR NOT NULL,
            model_card VARCHAR,
            config_json VARCHAR NOT NULL,
            concept_set_sha256 VARCHAR NOT NULL,
            packages_json VARCHAR NOT NULL,
            device VARCHAR,
            dtype VARCHAR,
            started_at TIMESTAMP,
            finished_at TIMESTAMP
        )""",
    "checkpoints": """
        CREATE TABLE IF NOT EXISTS checkpoints (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            step BIGINT,
            revision VARCHAR,
            source VARCHAR NOT NULL,
            tokens_seen BIGINT,
            completed_at TIMESTAMP NOT NULL,
            source_fingerprint VARCHAR,
            PRIMARY KEY (run_id, checkpoint)
        )""",
    "stage_timings": """
        CREATE TABLE IF NOT EXISTS stage_timings (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            stage VARCHAR NOT NULL,
            seconds DOUBLE NOT NULL,
            tokens_per_s DOUBLE,
            peak_mem_mb DOUBLE
        )""",
    "languages": """
        CREATE TABLE IF NOT EXISTS languages (
            lang VARCHAR PRIMARY KEY,
            name VARCHAR,
            script VARCHAR,
            family VARCHAR
        )""",
    "concepts": """
        CREATE TABLE IF NOT EXISTS concepts (
            concept_id VARCHAR PRIMARY KEY,
            label VARCHAR,
            category VARCHAR
        )""",
    "sentences": """
        CREATE TABLE IF NOT EXISTS sentences (
            sentence_id BIGINT PRIMARY KEY,
            concept_id VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            span_start INTEGER,
            span_end INTEGER
        )""",
    "layers": """
        CREATE TABLE IF NOT EXISTS layers (
            run_id VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            n_neurons INTEGER NOT NULL,
            hidden_size INTEGER NOT NULL,
            module_path VARCHAR NOT NULL,
            PRIMARY KEY (run_id, layer)
        )""",
    # representation: 'mean' (sentence-pooled residual) or 'token' (sampled single tokens).
    # layer 0 is the embedding output; layer i the output of block i.
    "probe_results": """
        CREATE TABLE IF NOT EXISTS probe_results (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            representation VARCHAR NOT NULL,
            accuracy DOUBLE NOT NULL,
            accuracy_std DOUBLE NOT NULL,
            macro_f1 DOUBLE NOT NULL,
            n_train INTEGER NOT NULL,
            n_test INTEGER NOT NULL,
            n_seeds INTEGER NOT NULL,
            majority_baseline DOUBLE,
            control_accuracy DOUBLE,
            accuracy_lo DOUBLE,
            accuracy_hi DOUBLE
        )""",
    "probe_per_language": """
        CREATE TABLE IF NOT EXISTS probe_per_language (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            representation VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            f1 DOUBLE NOT NULL
        )""",
    # Top-K expert units per (checkpoint, lang, concept); layer indexes MLP blocks from 0.
    "neuron_ap": """
        CREATE TABLE IF NOT EXISTS neuron_ap (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            ap DOUBLE NOT NULL,
            rank INTEGER NOT NULL,
            median_pos_act DOUBLE NOT NULL
        )""",
    # neuron_ap again (without median_pos_act), laid out by unit instead of by concept (precompute.store.layout):
    # the explorer's reads of one unit over training; the writer derives it (precompute.store.layout).
    "neuron_ap_by_unit": """
        CREATE TABLE IF NOT EXISTS neuron_ap_by_unit (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            lang VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            rank INTEGER NOT NULL,
            ap DOUBLE NOT NULL
        )""",
    # Every neuron, every checkpoint: AP summarised over all (lang, concept) pairs.
    "neuron_summary": """
        CREATE TABLE IF NOT EXISTS neuron_summary (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            mean_ap DOUBLE NOT NULL,
            max_ap DOUBLE NOT NULL,
            best_concept_id VARCHAR NOT NULL,
            best_lang VARCHAR NOT NULL
        )""",
    "expert_overlap": """
        CREATE TABLE IF NOT EXISTS expert_overlap (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            lang_a VARCHAR NOT NULL,
            lang_b VARCHAR NOT NULL,
            k INTEGER NOT NULL,
            jaccard DOUBLE NOT NULL,
            spearman_ap DOUBLE NOT NULL
        )""",
    "shared_experts": """
        CREATE TABLE IF NOT EXISTS shared_experts (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            n_langs_topk INTEGER NOT NULL,
            langs VARCHAR NOT NULL,
            min_ap DOUBLE NOT NULL,
            mean_ap DOUBLE NOT NULL
        )""",
    # Pre-aggregated for the explorer: per (checkpoint, lang, concept) how many of the top-K experts
    # are shared experts of that concept (top-K in >= min_langs languages).
    "expert_sharing": """
        CREATE TABLE IF NOT EXISTS expert_sharing (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            n_experts INTEGER NOT NULL,
            n_shared INTEGER NOT NULL
        )""",
    # Chance of an expert's AP per (checkpoint, lang, concept) (issues 14.5, 19; precompute.analysis.chance):
    # random_ap = E[AP] of a random continuous scorer (H_n formula; the positive rate n_positive / n_contexts,
    # a constant scorer's AP, is positive_rate); best_ap: the observed best unit's AP; p_value its Monte-Carlo
    # permutation p-value (1 + exceedances) / (n_shuffles + 1) against the best unit's AP under n_shuffles label
    # shuffles (resolution p_resolution = 1 / (n_shuffles + 1)); correction ('bh': Benjamini-Hochberg at FDR
    # alpha over the n_cells (concept, language) cells of the checkpoint, p_adjusted its q-values; 'none');
    # threshold = the AP a unit must exceed to be significant after the correction (1.0: nothing of the
    # checkpoint is), threshold_uncorrected the same for the cell alone at level alpha; significant = best_ap >
    # threshold. Thresholds and p-values are NULL where no shuffles were run. A neuron_ap row is significant
    # where ap > threshold.
    "chance_ap": """
        CREATE TABLE IF NOT EXISTS chance_ap (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            n_contexts INTEGER NOT NULL,
            n_positive INTEGER NOT NULL,
            random_ap DOUBLE NOT NULL,
            threshold DOUBLE,
            best_ap DOUBLE,
            n_shuffles INTEGER NOT NULL
        )""",
    # Chance of the overlap measures of one checkpoint, exact for random top-k sets out of n_units (k: the
    # overlap's K, [experts] overlap_k): jaccard_mean = E[Jaccard] (hypergeometric), over_k_mean = E[|A ∩ B| / k]
    # = k / n_units, jaccard_threshold / over_k_threshold / spearman_threshold = their null_quantile quantiles,
    # shared_expected = expected shared experts of one concept (top-expert_k in >= min_langs of n_langs).
    "overlap_chance": """
        CREATE TABLE IF NOT EXISTS overlap_chance (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            k INTEGER NOT NULL,
            n_units INTEGER NOT NULL,
            n_langs INTEGER NOT NULL,
            null_quantile DOUBLE NOT NULL,
            jaccard_mean DOUBLE NOT NULL,
            jaccard_threshold DOUBLE NOT NULL,
            spearman_threshold DOUBLE NOT NULL,
            shared_expected DOUBLE NOT NULL
        )""",
    # Headline figures with a percentile bootstrap interval over concepts (level, n_resamples; NULL bounds
    # where none) and their chance level: measure in ('mean_jaccard', 'mean_over_k', 'mean_spearman_ap',
    # 'n_shared').
    "headline_ci": """
        CREATE TABLE IF NOT EXISTS headline_ci (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            measure VARCHAR NOT NULL,
            estimate DOUBLE,
            lo DOUBLE,
            hi DOUBLE,
            chance DOUBLE,
            n_concepts INTEGER NOT NULL,
            n_resamples INTEGER NOT NULL,
            level DOUBLE NOT NULL
        )""",
    # Representation convergence: metric in ('matched_cosine', 'mismatched_cosine', 'cka', ...).
    "similarity": """
        CREATE TABLE IF NOT EXISTS similarity (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            lang_a VARCHAR NOT NULL,
            lang_b VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            value DOUBLE NOT NULL
        )""",
    # Effective dimensionality; scope is 'all' (pooled over languages) or a language code.
    "compression": """
        CREATE TABLE IF NOT EXISTS compression (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            scope VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            value DOUBLE NOT NULL
        )""",
    # Language selectivity of MLP neurons (LAPE, Tang et al. 2024): only the language-specific ones.
    "language_neurons": """
        CREATE TABLE IF NOT EXISTS language_neurons (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            lape DOUBLE NOT NULL,
            top_lang VARCHAR NOT NULL,
            top_prob DOUBLE NOT NULL
        )""",
    # Per checkpoint and layer: how many neurons are of each kind ('language_specific', 'shared_expert').
    "neuron_counts": """
        CREATE TABLE IF NOT EXISTS neuron_counts (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            kind VARCHAR NOT NULL,
            n INTEGER NOT NULL
        )""",
    # Drill-downs (issue 14; precompute.analysis.drilldown) for the selected units of a checkpoint: the top
    # experts of any (concept, lang) and the LAPE units, at most [drilldown] max_units. layer: MLP block.
    # What fires the unit: its top-N contexts per language by pooled response (rank 1 the highest); peak_start
    # / peak_end: character offsets in sentences.text of the token where the unit peaks (its largest
    # activation over the context's real tokens), peak_act that activation.
    "unit_top_contexts": """
        CREATE TABLE IF NOT EXISTS unit_top_contexts (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            lang VARCHAR NOT NULL,
            rank INTEGER NOT NULL,
            sentence_id BIGINT NOT NULL,
            response DOUBLE NOT NULL,
            peak_start INTEGER,
            peak_end INTEGER,
            peak_act DOUBLE
        )""",
    # How it responds, per (unit, concept, lang) where the unit is a top-K expert: histograms of its pooled
    # response on the concept's contexts and on the language's other contexts, over the same equal-width
    # bins from lo to hi (the unit's range in that language); counts lists have one entry per bin.
    "unit_response_hist": """
        CREATE TABLE IF NOT EXISTS unit_response_hist (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            concept_id VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            lo DOUBLE NOT NULL,
            hi DOUBLE NOT NULL,
            concept_counts INTEGER[] NOT NULL,
            other_counts INTEGER[] NOT NULL
        )""",
    # What it writes: the exact direct effect on the output logits of one unit of activation (its down-projection
    # column, mean-centred for LayerNorm models, through the final norm's scale and the unembedding, centred over
    # the vocabulary: precompute.model.unembed); direction 'promoted'
    # (largest, rank 1 first) or 'suppressed' (most negative); token decoded with the checkpoint's tokenizer.
    "unit_output_tokens": """
        CREATE TABLE IF NOT EXISTS unit_output_tokens (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            layer INTEGER NOT NULL,
            unit INTEGER NOT NULL,
            direction VARCHAR NOT NULL,
            rank INTEGER NOT NULL,
            token_id INTEGER NOT NULL,
            token VARCHAR NOT NULL,
            logit DOUBLE NOT NULL
        )""",
    # One generation per row. output_lang: ISO 639-1 (else 639-3) code among all languages lingua knows,
    # 'und' where it cannot tell; output_lang_confidence: lingua's confidence in it (NULL for 'und').
    # concept_lang: the language of the concept form found in the output. top_k ... max_new_tokens: how
    # the row was sampled. Written with its checkpoint by `precompute run` ([steering] enabled) or later
    # by `precompute steer`.
    "steering": """
        CREATE TABLE IF NOT EXISTS steering (
            run_id VARCHAR NOT NULL,
            checkpoint VARCHAR NOT NULL,
            concept_id VARCHAR NOT NULL,
            source_lang VARCHAR NOT NULL,
            prompt VARCHAR NOT NULL,
            seed INTEGER NOT NULL,
            n_neurons INTEGER NOT NULL,
            value_mode VARCHAR NOT NULL,
            output_text VARCHAR NOT NULL,
            output_lang VARCHAR,
            expresses_concept BOOLEAN NOT NULL,
            concept_lang VARCHAR,
            output_lang_confidence DOUBLE,
            top_k INTEGER,
            top_p DOUBLE,
            temperature DOUBLE,
            max_new_tokens INTEGER
        )""",
}


# Columns added to a table after stores of this schema version were written: nullable, so older stores stay
# readable as they are and gain the column (as NULL) on their next write. (table, column, type)
ADDED_COLUMNS: list[tuple[str, str, str]] = [
    # What the checkpoint's weights were when computed: "sha256:..." (local folder), "commit:..." or
    # "revision:..." (hub); see precompute.checkpoints.fingerprint.
    ("checkpoints", "source_fingerprint", "VARCHAR"),
    # Chance and uncertainty of the LID probes (issue 14.5): the majority-class accuracy of the test split, the
    # accuracy of the control task (random language per token type, Hewitt & Liang; token probes only, NULL for
    # the sentence mean), the hierarchical bootstrap interval (seeds, then test contexts) of the accuracy.
    ("probe_results", "majority_baseline", "DOUBLE"),
    ("probe_results", "control_accuracy", "DOUBLE"),
    ("probe_results", "accuracy_lo", "DOUBLE"),
    ("probe_results", "accuracy_hi", "DOUBLE"),
    # Permutation tests that hold their level (issue 19): see the comment on chance_ap's DDL.
    ("chance_ap", "positive_rate", "DOUBLE"),
    ("chance_ap", "p_value", "DOUBLE"),
    ("chance_ap", "p_adjusted", "DOUBLE"),
    ("chance_ap", "threshold_uncorrected", "DOUBLE"),
    ("chance_ap", "significant", "BOOLEAN"),
    ("chance_ap", "p_resolution", "DOUBLE"),
    ("chance_ap", "alpha", "DOUBLE"),
    ("chance_ap", "correction", "VARCHAR"),
    ("chance_ap", "n_cells", "INTEGER"),
    # The overlap |A ∩ B| / k (Wang, Minervini & Ponti 2024) and its chance; the experts' K of shared_expected.
    ("expert_overlap", "over_k", "DOUBLE"),
    ("overlap_chance", "over_k_mean", "DOUBLE"),
    ("overlap_chance", "over_k_threshold", "DOUBLE"),
    ("overlap_chance", "expert_k", "INTEGER"),
    # The overlap thresholds after [experts] correction over the checkpoint's n_cells (concept, language pair)
    # cells ('bh': Benjamini-Hochberg on the exact hypergeometric p-values; 1.0 where no cell survives).
    ("overlap_chance", "jaccard_threshold_corrected", "DOUBLE"),
    ("overlap_chance", "over_k_threshold_corrected", "DOUBLE"),
    ("overlap_chance", "correction", "VARCHAR"),
    ("overlap_chance", "n_cells", "INTEGER"),
]


# Tables derived from other tables for the explorer's speed only: a store written before one was added lacks it
# (or lacks some checkpoints' rows), and the explorer then reads the table it derives from.
DERIVED_TABLES: dict[str, str] = {"neuron_ap_by_unit": "neuron_ap"}


# Indexes that make the explorer's drill-downs fast on paper-scale stores.
INDEXES: list[str] = []


# Tables whose rows belong to one (run_id, checkpoint): written together in one transaction.
CHECKPOINT_TABLES = [
    "stage_timings",
    "probe_results",
    "probe_per_language",
    "neuron_ap",
    "neuron_ap_by_unit",
    "neuron_summary",
    "expert_overlap",
    "shared_experts",
    "expert_sharing",
    "chance_ap",
    "overlap_chance",
    "headline_ci",
    "similarity",
    "compression",
    "language_neurons",
    "neuron_counts",
    "steering",
    "unit_top_contexts",
    "unit_response_hist",
    "unit_output_tokens",
]


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table and every column added since (idempotent) and record the schema version."""
    for ddl in DDL.values():
        con.execute(ddl)
    for table, column, sql_type in ADDED_COLUMNS:
        con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type}")
    for index in INDEXES:
        con.execute(index)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])


def schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The schema version a store declares, or None where it has no meta table."""
    try:
        rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    except duckdb.CatalogException:
        return None
    return int(rows[0][0]) if rows else None


# Tables with an MLP ``layer`` column: their layer ids are the model's, kept when a run hooks only some layers.
MLP_LAYER_TABLES = [
    "neuron_ap",
    "neuron_ap_by_unit",
    "neuron_summary",
    "shared_experts",
    "language_neurons",
    "neuron_counts",
    "unit_top_contexts",
    "unit_response_hist",
    "unit_output_tokens",
]


def checkpoint_order(alias: str = "") -> str:
    """The ORDER BY expression for training order: by step (unknown steps last), then by name.

    Every reader that lists checkpoints (info, report, steering, merge, the explorer) orders them with this,
    so that "first" and "last" checkpoint mean the same everywhere. ``alias``: the checkpoints table's alias.
    """
    prefix = f"{alias}." if alias else ""
    return f"{prefix}step NULLS LAST, {prefix}checkpoint"
