"""The store's schema, declared once: every table's columns, key, scope, writer and meaning, and what follows.

One module owns what a crossling store contains; writers, readers, the merge and the explorer all ask it. Each
table is one :class:`Table` in :data:`TABLES`; everything else here is derived from those declarations: the DDL
(:data:`DDL`, :func:`create_schema`), the columns added since stores of this schema version were first written
(:data:`ADDED_COLUMNS`), the table lists (:data:`CHECKPOINT_TABLES`, :data:`REQUIRED_TABLES`,
:data:`MLP_LAYER_TABLES`, :data:`DERIVED_TABLES`), the polars types of a table's frames (:func:`polars_schema`),
the stage that writes a table (:func:`stage_of`) and the reference page ``docs/store.md``
(:func:`schema_markdown`; ``python docs/store_schema.py`` writes it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl

SCHEMA_VERSION = 1

# The DuckDB storage format every file crossling writes is in (store files and checkpoint parts): the oldest the
# schema needs, so that a collaborator opens a store with the DuckDB they have (every version since 1.1, the
# oldest pyproject allows), not only with the one that wrote it. Recorded in ``meta`` (key ``storage_version``)
# at every write; the file's header says it too (storage number 64). Measured: DuckDB 1.1.3 reads a store and its
# parts (tests/reliability/test_foreign_parts_and_store_paths.py); DuckDB 1.0.0 cannot read the primary keys,
# written as 'v1.0.0' or older.
STORAGE_VERSION = "v1.1.0"
STORAGE_NUMBER = 64
OPENS_IN_DUCKDB = "1.1.0"

#: Where a table's rows belong: to the run as a whole, or to one (run_id, checkpoint).
Scope = Literal["run", "checkpoint"]

#: The stage names a table can be written by: ``run`` for the run's inputs and bookkeeping (the writer records
#: them), ``timings`` for the pipeline's own timings, then the analysis stages, one module of ``precompute.stages``
#: each, in the order a checkpoint runs them (``precompute.pipeline.STAGES`` is built from this order; ``extract``
#: writes no table: it pools the activations the others read).
STAGES: tuple[str, ...] = (
    "run",
    "timings",
    "extract",
    "probes",
    "experts",
    "alignment",
    "chance",
    "convergence",
    "lape",
    "drilldown",
    "steering",
)

#: The polars type of each DuckDB type the schema uses: what a frame for the table holds before the writer
#: inserts it, and what a reader's frame of the table holds.
POLARS_TYPES: dict[str, pl.DataType] = {
    "VARCHAR": pl.Utf8(),
    "BIGINT": pl.Int64(),
    "INTEGER": pl.Int32(),
    "DOUBLE": pl.Float64(),
    "BOOLEAN": pl.Boolean(),
    "TIMESTAMP": pl.Datetime("us"),
    "INTEGER[]": pl.List(pl.Int32()),
    "FLOAT[]": pl.List(pl.Float32()),
}


@dataclass(frozen=True)
class Column:
    """One column: its name, its DuckDB type (as ``duckdb_columns()`` spells it) and whether it may be NULL.

    ``added``: the column was added after stores of this schema version were first written; it is nullable, an
    older store may lack it (it is read as it is, and gains the column, as NULL, on its next write).
    """

    name: str
    sql_type: str
    not_null: bool = False
    added: bool = False

    def __post_init__(self) -> None:
        if self.sql_type not in POLARS_TYPES:
            raise ValueError(f"column {self.name}: no polars type for DuckDB type {self.sql_type}")
        if self.added and self.not_null:
            raise ValueError(f"column {self.name}: a column added later must be nullable (older stores lack it)")


def required(name: str, sql_type: str) -> Column:
    """A NOT NULL column."""
    return Column(name, sql_type, not_null=True)


def nullable(name: str, sql_type: str, *, added: bool = False) -> Column:
    """A column that may be NULL (``added``: one added after stores of this schema version were first written)."""
    return Column(name, sql_type, added=added)


RUN_ID = required("run_id", "VARCHAR")
CHECKPOINT = required("checkpoint", "VARCHAR")


@dataclass(frozen=True)
class Table:
    """One table of the store.

    ``scope``: ``run`` (rows of the run as a whole) or ``checkpoint`` (rows of one (run_id, checkpoint), written
    together in one transaction and replaced together). ``stage``: what writes it (one of :data:`STAGES`).
    ``key``: its PRIMARY KEY columns (empty: none). ``mlp_layer``: its ``layer`` column is an MLP block id (the
    model's numbering, kept when a run hooks only some blocks). ``derived_from``: the table the writer derives
    it from (for the explorer's speed only; a store written before it was added lacks it). ``description``: one
    line; ``notes``: what its columns' values mean, for ``docs/store.md``.
    """

    name: str
    description: str
    scope: Scope
    stage: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    mlp_layer: bool = False
    derived_from: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        names = self.column_names
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: a column is declared twice")
        if self.stage not in STAGES:
            raise ValueError(f"table {self.name}: unknown stage {self.stage!r}")
        if not set(self.key) <= set(names):
            raise ValueError(f"table {self.name}: key {self.key} names a column it does not have")
        if self.scope == "checkpoint" and names[:2] != ("run_id", "checkpoint"):
            raise ValueError(f"table {self.name}: a checkpoint table starts with run_id and checkpoint")
        if self.mlp_layer and "layer" not in names:
            raise ValueError(f"table {self.name}: mlp_layer without a layer column")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def ddl(self) -> str:
        """``CREATE TABLE IF NOT EXISTS`` of the table, every column included (added ones last, where they go).

        A single-column key is written on its column (``key VARCHAR PRIMARY KEY``), a longer one as a table
        constraint, as the stores of this schema version were created.
        """
        inline_key = self.key[0] if len(self.key) == 1 else None
        lines = []
        for column in self.columns:
            line = f"{column.name} {column.sql_type}"
            if column.name == inline_key:
                line += " PRIMARY KEY"
            elif column.not_null:
                line += " NOT NULL"
            lines.append(line)
        if len(self.key) > 1:
            lines.append(f"PRIMARY KEY ({', '.join(self.key)})")
        body = ",\n".join(f"            {line}" for line in lines)
        return f"\n        CREATE TABLE IF NOT EXISTS {self.name} (\n{body}\n        )"


def _run_table(name: str, description: str, columns: Iterable[Column], **kwargs) -> Table:
    return Table(name, description, scope="run", stage="run", columns=tuple(columns), **kwargs)


def _checkpoint_table(name: str, description: str, stage: str, columns: Iterable[Column], **kwargs) -> Table:
    return Table(name, description, scope="checkpoint", stage=stage, columns=(RUN_ID, CHECKPOINT, *columns), **kwargs)


# Tables in dependency order (the order DDL creates them in, and the order readers list them in).
_DECLARED: tuple[Table, ...] = (
    _run_table(
        "meta",
        "Key-value facts about the store itself: its schema and storage version, the run's plan, provenance.",
        [required("key", "VARCHAR"), required("value", "VARCHAR")],
        key=("key",),
        notes="Keys include schema_version, storage_version, planned_checkpoints (the run's checkpoints, a JSON "
        "list) and, in a shard's store, planned_shard.",
    ),
    _run_table(
        "runs",
        "The run: its model, its whole config (JSON), the concept set's hash, the packages, device and times.",
        [
            required("run_id", "VARCHAR"),
            required("model_id", "VARCHAR"),
            nullable("model_card", "VARCHAR"),
            required("config_json", "VARCHAR"),
            required("concept_set_sha256", "VARCHAR"),
            required("packages_json", "VARCHAR"),
            nullable("device", "VARCHAR"),
            nullable("dtype", "VARCHAR"),
            nullable("started_at", "TIMESTAMP"),
            nullable("finished_at", "TIMESTAMP"),
        ],
        key=("run_id",),
        notes="finished_at is NULL until the run has written every checkpoint it planned.",
    ),
    Table(
        "checkpoints",
        "One row per published checkpoint: its training step, revision, source and the fingerprint of its weights.",
        scope="checkpoint",
        stage="run",
        columns=(
            RUN_ID,
            CHECKPOINT,
            nullable("step", "BIGINT"),
            nullable("revision", "VARCHAR"),
            required("source", "VARCHAR"),
            nullable("tokens_seen", "BIGINT"),
            required("completed_at", "TIMESTAMP"),
            nullable("source_fingerprint", "VARCHAR", added=True),
        ),
        key=("run_id", "checkpoint"),
        notes="The writer inserts a checkpoint's row here last, in the transaction that writes its rows of every "
        "checkpoint table: a checkpoint listed here is whole. source_fingerprint: what the checkpoint's weights "
        'were when computed: "sha256:..." (local folder), "commit:..." or "revision:..." (hub); see '
        "precompute.checkpoints.fingerprint.",
    ),
    _checkpoint_table(
        "stage_timings",
        "Wall time, token throughput and peak memory of each pipeline stage on each checkpoint.",
        "timings",
        [
            required("stage", "VARCHAR"),
            required("seconds", "DOUBLE"),
            nullable("tokens_per_s", "DOUBLE"),
            nullable("peak_mem_mb", "DOUBLE"),
        ],
        notes="tokens_per_s is NULL for the stages that process no tokens.",
    ),
    _run_table(
        "languages",
        "The run's languages: code, name, script and top-level family.",
        [
            required("lang", "VARCHAR"),
            nullable("name", "VARCHAR"),
            nullable("script", "VARCHAR"),
            nullable("family", "VARCHAR"),
        ],
        key=("lang",),
    ),
    _run_table(
        "concepts",
        "The concept set's concepts: id, label and category.",
        [required("concept_id", "VARCHAR"), nullable("label", "VARCHAR"), nullable("category", "VARCHAR")],
        key=("concept_id",),
    ),
    _run_table(
        "sentences",
        "Every context of the concept set: its concept, language, text and the concept word's span.",
        [
            required("sentence_id", "BIGINT"),
            required("concept_id", "VARCHAR"),
            required("lang", "VARCHAR"),
            required("text", "VARCHAR"),
            nullable("span_start", "INTEGER"),
            nullable("span_end", "INTEGER"),
        ],
        key=("sentence_id",),
        notes="span_start / span_end: character offsets (Unicode code points) of the concept word in text; NULL "
        "where the concept set gives none.",
    ),
    _run_table(
        "layers",
        "The MLP blocks the run hooks: block id, neuron count, hidden size and module path.",
        [
            RUN_ID,
            required("layer", "INTEGER"),
            required("n_neurons", "INTEGER"),
            required("hidden_size", "INTEGER"),
            required("module_path", "VARCHAR"),
        ],
        key=("run_id", "layer"),
        mlp_layer=True,
    ),
    _checkpoint_table(
        "probe_results",
        "Accuracy of the language-identification probes per layer and representation, with baselines and interval.",
        "probes",
        [
            required("layer", "INTEGER"),
            required("representation", "VARCHAR"),
            required("accuracy", "DOUBLE"),
            required("accuracy_std", "DOUBLE"),
            required("macro_f1", "DOUBLE"),
            required("n_train", "INTEGER"),
            required("n_test", "INTEGER"),
            required("n_seeds", "INTEGER"),
            nullable("majority_baseline", "DOUBLE", added=True),
            nullable("control_accuracy", "DOUBLE", added=True),
            nullable("accuracy_lo", "DOUBLE", added=True),
            nullable("accuracy_hi", "DOUBLE", added=True),
        ],
        notes="representation: 'mean' (sentence-pooled residual) or 'token' (sampled single tokens). layer 0 is "
        "the embedding output; layer i the output of block i. majority_baseline: the majority-class accuracy of "
        "the test split; control_accuracy: the accuracy of the control task (random language per token type, "
        "Hewitt & Liang; token probes only, NULL for the sentence mean); accuracy_lo / accuracy_hi: the "
        "hierarchical bootstrap interval (seeds, then test contexts) of the accuracy.",
    ),
    _checkpoint_table(
        "probe_per_language",
        "F1 of the language-identification probes per language.",
        "probes",
        [
            required("layer", "INTEGER"),
            required("representation", "VARCHAR"),
            required("lang", "VARCHAR"),
            required("f1", "DOUBLE"),
        ],
    ),
    _checkpoint_table(
        "neuron_ap",
        "The top-K expert units of each (language, concept) and their average precision (AP) on its contexts.",
        "experts",
        [
            required("lang", "VARCHAR"),
            required("concept_id", "VARCHAR"),
            required("layer", "INTEGER"),
            required("unit", "INTEGER"),
            required("ap", "DOUBLE"),
            required("rank", "INTEGER"),
            required("median_pos_act", "DOUBLE"),
        ],
        mlp_layer=True,
        notes="rank 1 is the unit with the highest AP; median_pos_act: its median response on the concept's "
        "contexts. Laid out concept-major (precompute.store.layout). A row is significant where ap > the "
        "threshold of its (lang, concept) in chance_ap.",
    ),
    _checkpoint_table(
        "neuron_ap_by_unit",
        "neuron_ap again (without median_pos_act), laid out by unit for the explorer's reads of one unit.",
        "experts",
        [
            required("layer", "INTEGER"),
            required("unit", "INTEGER"),
            required("lang", "VARCHAR"),
            required("concept_id", "VARCHAR"),
            required("rank", "INTEGER"),
            required("ap", "DOUBLE"),
        ],
        mlp_layer=True,
        derived_from="neuron_ap",
        notes="The writer derives it from each checkpoint's neuron_ap (precompute.store.layout); a store written "
        "before it was added lacks it (or some checkpoints' rows), and the explorer then reads neuron_ap.",
    ),
    _checkpoint_table(
        "neuron_summary",
        "Every MLP unit's AP summarised over all (language, concept) pairs: mean, max and where the max is.",
        "experts",
        [
            required("layer", "INTEGER"),
            required("unit", "INTEGER"),
            required("mean_ap", "DOUBLE"),
            required("max_ap", "DOUBLE"),
            required("best_concept_id", "VARCHAR"),
            required("best_lang", "VARCHAR"),
        ],
        mlp_layer=True,
    ),
    _checkpoint_table(
        "expert_overlap",
        "How much two languages' top-K experts of a concept overlap (Jaccard, over_k, Spearman of their APs).",
        "alignment",
        [
            required("concept_id", "VARCHAR"),
            required("lang_a", "VARCHAR"),
            required("lang_b", "VARCHAR"),
            required("k", "INTEGER"),
            required("jaccard", "DOUBLE"),
            required("spearman_ap", "DOUBLE"),
            nullable("over_k", "DOUBLE", added=True),
        ],
        notes="Each unordered language pair once (lang_a < lang_b). over_k: the overlap |A ∩ B| / k (Wang, "
        "Minervini & Ponti 2024).",
    ),
    _checkpoint_table(
        "shared_experts",
        "Units among a concept's top-K experts in at least min_langs languages.",
        "alignment",
        [
            required("concept_id", "VARCHAR"),
            required("layer", "INTEGER"),
            required("unit", "INTEGER"),
            required("n_langs_topk", "INTEGER"),
            required("langs", "VARCHAR"),
            required("min_ap", "DOUBLE"),
            required("mean_ap", "DOUBLE"),
        ],
        mlp_layer=True,
        notes="langs: the languages it is a top-K expert in, comma-separated.",
    ),
    _checkpoint_table(
        "expert_sharing",
        "Per (language, concept): how many of its top-K experts are shared experts of the concept.",
        "alignment",
        [
            required("lang", "VARCHAR"),
            required("concept_id", "VARCHAR"),
            required("n_experts", "INTEGER"),
            required("n_shared", "INTEGER"),
        ],
        notes="Pre-aggregated for the explorer: a shared expert is top-K in at least min_langs languages.",
    ),
    _checkpoint_table(
        "chance_ap",
        "The chance level of an expert's AP and the permutation test of the best unit, per (language, concept).",
        "chance",
        [
            required("lang", "VARCHAR"),
            required("concept_id", "VARCHAR"),
            required("n_contexts", "INTEGER"),
            required("n_positive", "INTEGER"),
            required("random_ap", "DOUBLE"),
            nullable("threshold", "DOUBLE"),
            nullable("best_ap", "DOUBLE"),
            required("n_shuffles", "INTEGER"),
            nullable("positive_rate", "DOUBLE", added=True),
            nullable("p_value", "DOUBLE", added=True),
            nullable("p_adjusted", "DOUBLE", added=True),
            nullable("threshold_uncorrected", "DOUBLE", added=True),
            nullable("significant", "BOOLEAN", added=True),
            nullable("p_resolution", "DOUBLE", added=True),
            nullable("alpha", "DOUBLE", added=True),
            nullable("correction", "VARCHAR", added=True),
            nullable("n_cells", "INTEGER", added=True),
        ],
        notes="See precompute.analysis.chance. random_ap = E[AP] of a random continuous scorer (H_n formula; the "
        "positive rate n_positive / n_contexts, a constant scorer's AP, is positive_rate); best_ap: the observed "
        "best unit's AP; p_value its Monte-Carlo permutation p-value (1 + exceedances) / (n_shuffles + 1) against "
        "the best unit's AP under n_shuffles label shuffles (resolution p_resolution = 1 / (n_shuffles + 1)); "
        "correction ('bh': Benjamini-Hochberg at FDR alpha over the n_cells (concept, language) cells of the "
        "checkpoint, p_adjusted its q-values; 'none'); threshold = the AP a unit must exceed to be significant "
        "after the correction (1.0: nothing of the checkpoint is), threshold_uncorrected the same for the cell "
        "alone at level alpha; significant = best_ap > threshold. Thresholds and p-values are NULL where no "
        "shuffles were run. A neuron_ap row is significant where ap > threshold.",
    ),
    _checkpoint_table(
        "overlap_chance",
        "The exact chance level of the overlap measures for random top-k sets, and their thresholds.",
        "chance",
        [
            required("k", "INTEGER"),
            required("n_units", "INTEGER"),
            required("n_langs", "INTEGER"),
            required("null_quantile", "DOUBLE"),
            required("jaccard_mean", "DOUBLE"),
            required("jaccard_threshold", "DOUBLE"),
            required("spearman_threshold", "DOUBLE"),
            required("shared_expected", "DOUBLE"),
            nullable("over_k_mean", "DOUBLE", added=True),
            nullable("over_k_threshold", "DOUBLE", added=True),
            nullable("expert_k", "INTEGER", added=True),
            nullable("jaccard_threshold_corrected", "DOUBLE", added=True),
            nullable("over_k_threshold_corrected", "DOUBLE", added=True),
            nullable("correction", "VARCHAR", added=True),
            nullable("n_cells", "INTEGER", added=True),
        ],
        notes="Exact for random top-k sets out of n_units (k: the overlap's K, [experts] overlap_k): jaccard_mean "
        "= E[Jaccard] (hypergeometric), over_k_mean = E[|A ∩ B| / k] = k / n_units, jaccard_threshold / "
        "over_k_threshold / spearman_threshold = their null_quantile quantiles, shared_expected = expected shared "
        "experts of one concept (top-expert_k in >= min_langs of n_langs). The corrected thresholds hold after "
        "[experts] correction over the checkpoint's n_cells (concept, language pair) cells ('bh': "
        "Benjamini-Hochberg on the exact hypergeometric p-values; 1.0 where no cell survives).",
    ),
    _checkpoint_table(
        "headline_ci",
        "Headline figures with a percentile bootstrap interval over concepts, and their chance level.",
        "chance",
        [
            required("measure", "VARCHAR"),
            nullable("estimate", "DOUBLE"),
            nullable("lo", "DOUBLE"),
            nullable("hi", "DOUBLE"),
            nullable("chance", "DOUBLE"),
            required("n_concepts", "INTEGER"),
            required("n_resamples", "INTEGER"),
            required("level", "DOUBLE"),
        ],
        notes="measure in ('mean_jaccard', 'mean_over_k', 'mean_spearman_ap', 'n_shared'); lo / hi are NULL "
        "where no interval was computed.",
    ),
    _checkpoint_table(
        "similarity",
        "Cross-lingual similarity of the representations per layer and language pair.",
        "convergence",
        [
            required("layer", "INTEGER"),
            required("lang_a", "VARCHAR"),
            required("lang_b", "VARCHAR"),
            required("metric", "VARCHAR"),
            required("value", "DOUBLE"),
        ],
        notes="metric in ('matched_cosine', 'mismatched_cosine', 'cka', ...).",
    ),
    _checkpoint_table(
        "compression",
        "Effective dimensionality of the representations per layer, pooled over languages or per language.",
        "convergence",
        [
            required("layer", "INTEGER"),
            required("scope", "VARCHAR"),
            required("metric", "VARCHAR"),
            required("value", "DOUBLE"),
        ],
        notes="scope is 'all' (pooled over languages) or a language code.",
    ),
    _checkpoint_table(
        "language_neurons",
        "The language-specific MLP neurons by language activation probability entropy (LAPE, Tang et al. 2024).",
        "lape",
        [
            required("layer", "INTEGER"),
            required("unit", "INTEGER"),
            required("lape", "DOUBLE"),
            required("top_lang", "VARCHAR"),
            required("top_prob", "DOUBLE"),
        ],
        mlp_layer=True,
        notes="Only the language-specific neurons have rows.",
    ),
    _checkpoint_table(
        "neuron_counts",
        "Per MLP block: how many neurons are of each kind.",
        "lape",
        [
            required("layer", "INTEGER"),
            required("kind", "VARCHAR"),
            required("n", "INTEGER"),
        ],
        mlp_layer=True,
        notes="kind in ('language_specific', 'shared_expert').",
    ),
    _checkpoint_table(
        "unit_top_contexts",
        "Drill-down: the contexts that make a selected unit respond most, per language, and its peak token.",
        "drilldown",
        [
            required("layer", "INTEGER"),
            required("unit", "INTEGER"),
            required("lang", "VARCHAR"),
            required("rank", "INTEGER"),
            required("sentence_id", "BIGINT"),
            required("response", "DOUBLE"),
            nullable("peak_start", "INTEGER"),
            nullable("peak_end", "INTEGER"),
            nullable("peak_act", "DOUBLE"),
            nullable("token_start", "INTEGER[]", added=True),
            nullable("token_end", "INTEGER[]", added=True),
            nullable("token_act", "FLOAT[]", added=True),
        ],
        mlp_layer=True,
        notes="Drill-downs (precompute.analysis.drilldown) cover the selected units of a checkpoint: the top "
        "experts of any (concept, lang) and the LAPE units, at most [drilldown] max_units. Here: the unit's top-N "
        "contexts per language by pooled response (rank 1 the highest); peak_start / peak_end: character offsets "
        "in sentences.text of the token where the unit peaks (its largest activation over the context's real "
        "tokens), peak_act that activation. token_start / token_end / token_act: one entry per real token of the "
        "context, in order: its character offsets in sentences.text and the unit's activation there (float32, as "
        "computed; the entry at the peak token is peak_act); NULL in rows written before they were stored.",
    ),
    _checkpoint_table(
        "unit_response_hist",
        "Drill-down: histograms of a unit's response on a concept's contexts and on the language's others.",
        "drilldown",
        [
            required("layer", "INTEGER"),
            required("unit", "INTEGER"),
            required("concept_id", "VARCHAR"),
            required("lang", "VARCHAR"),
            required("lo", "DOUBLE"),
            required("hi", "DOUBLE"),
            required("concept_counts", "INTEGER[]"),
            required("other_counts", "INTEGER[]"),
        ],
        mlp_layer=True,
        notes="One row per (unit, concept, lang) where the unit is a top-K expert; both histograms use the same "
        "equal-width bins from lo to hi (the unit's range in that language); the counts lists have one entry per "
        "bin.",
    ),
    _checkpoint_table(
        "unit_output_tokens",
        "Drill-down: the tokens a unit's direct effect on the output logits promotes and suppresses most.",
        "drilldown",
        [
            required("layer", "INTEGER"),
            required("unit", "INTEGER"),
            required("direction", "VARCHAR"),
            required("rank", "INTEGER"),
            required("token_id", "INTEGER"),
            required("token", "VARCHAR"),
            required("logit", "DOUBLE"),
        ],
        mlp_layer=True,
        notes="The exact direct effect on the output logits of one unit of activation (its down-projection "
        "column, mean-centred for LayerNorm models, through the final norm's scale and the unembedding, centred "
        "over the vocabulary: precompute.model.unembed); direction 'promoted' (largest, rank 1 first) or "
        "'suppressed' (most negative); token decoded alone with the checkpoint's tokenizer, except a token that "
        "is part of a character (decoded alone it is U+FFFD): its bytes, <0xNN> each (a whole character in it "
        "kept), where its vocabulary entry spells them (byte-level BPE, SentencePiece byte fallback).",
    ),
    _checkpoint_table(
        "unit_language_profile",
        "Drill-down: how often a selected unit fires on each language's contexts, and its mean response there.",
        "drilldown",
        [
            required("layer", "INTEGER"),
            required("unit", "INTEGER"),
            required("lang", "VARCHAR"),
            required("n_contexts", "INTEGER"),
            required("firing_rate", "DOUBLE"),
            required("context_rate", "DOUBLE"),
            required("mean_response", "DOUBLE"),
        ],
        mlp_layer=True,
        notes="One row per (selected unit, lang) (precompute.analysis.drilldown.language_profiles). firing_rate: "
        "the unit's mlp_active (per context, the fraction of its real tokens with an activation event: the down "
        "projection's input above 0, a gated MLP's gate) averaged over the language's n_contexts contexts, each "
        "context counted once (LAPE's probability weights them by tokens); context_rate: the share of those "
        "contexts with at least one such token; mean_response: the mean pooled response under [extract] pooling. "
        "A store written before the table was added lacks it.",
    ),
    _checkpoint_table(
        "unit_sample_contexts",
        "Drill-down: contexts beyond a selected unit's top ones, per language: from each decile band and at random.",
        "drilldown",
        [
            required("layer", "INTEGER"),
            required("unit", "INTEGER"),
            required("lang", "VARCHAR"),
            required("sample", "VARCHAR"),
            required("rank", "INTEGER"),
            required("sentence_id", "BIGINT"),
            required("response", "DOUBLE"),
            nullable("peak_start", "INTEGER"),
            nullable("peak_end", "INTEGER"),
            nullable("peak_act", "DOUBLE"),
            nullable("token_start", "INTEGER[]"),
            nullable("token_end", "INTEGER[]"),
            nullable("token_act", "FLOAT[]"),
        ],
        mlp_layer=True,
        notes="sample 'decile_1' ... 'decile_10': contexts drawn from the band of the unit's responses on the "
        "language's contexts between those deciles (decile_1 the lowest tenth), 'random': drawn from all of "
        "them (precompute.analysis.drilldown.sample_contexts: a few per band, seeded, without replacement); "
        "rank 1 ... within the sample by descending response. The other columns as in unit_top_contexts. A "
        "store written before the table was added lacks it.",
    ),
    _checkpoint_table(
        "steering",
        "One steered generation per row: the prompt, the units fixed, the output, its language and concept.",
        "steering",
        [
            required("concept_id", "VARCHAR"),
            required("source_lang", "VARCHAR"),
            required("prompt", "VARCHAR"),
            required("seed", "INTEGER"),
            required("n_neurons", "INTEGER"),
            required("value_mode", "VARCHAR"),
            required("output_text", "VARCHAR"),
            nullable("output_lang", "VARCHAR"),
            required("expresses_concept", "BOOLEAN"),
            nullable("concept_lang", "VARCHAR"),
            nullable("output_lang_confidence", "DOUBLE"),
            nullable("top_k", "INTEGER"),
            nullable("top_p", "DOUBLE"),
            nullable("temperature", "DOUBLE"),
            nullable("max_new_tokens", "INTEGER"),
        ],
        notes="output_lang: ISO 639-1 (else 639-3) code among all languages lingua knows, 'und' where it cannot "
        "tell; output_lang_confidence: lingua's confidence in it (NULL for 'und'). concept_lang: the language of "
        "the concept form found in the output. top_k ... max_new_tokens: how the row was sampled. Written with "
        "its checkpoint by `precompute run` ([steering] enabled) or later by `precompute steer`.",
    ),
)

#: Every table of the schema by name, in dependency order.
TABLES: dict[str, Table] = {t.name: t for t in _DECLARED}


def _check_declaration(tables: dict[str, Table]) -> None:
    """A derived table derives from a declared table of the same scope, and carries only columns it has."""
    for table in tables.values():
        if table.derived_from is None:
            continue
        source = tables.get(table.derived_from)
        if source is None or source.scope != table.scope:
            raise ValueError(f"table {table.name}: derived from {table.derived_from}, not a table of its scope")
        theirs = {c.name: c for c in source.columns}
        if any(theirs.get(c.name) != c for c in table.columns):
            raise ValueError(f"table {table.name}: a column that {source.name} does not have as declared")


_check_declaration(TABLES)

# What follows is derived from TABLES and nothing else.

#: The DDL of every table (``CREATE TABLE IF NOT EXISTS``), in dependency order.
DDL: dict[str, str] = {name: table.ddl() for name, table in TABLES.items()}

#: Columns added to a table after stores of this schema version were written: nullable, so older stores stay
#: readable as they are and gain the column (as NULL) on their next write. (table, column, type)
ADDED_COLUMNS: list[tuple[str, str, str]] = [
    (t.name, c.name, c.sql_type) for t in TABLES.values() for c in t.columns if c.added
]

#: Tables derived from other tables for the explorer's speed only -> the table each derives from: a store written
#: before one was added lacks it (or lacks some checkpoints' rows), and the explorer then reads its source.
DERIVED_TABLES: dict[str, str] = {t.name: t.derived_from for t in TABLES.values() if t.derived_from}

#: Tables whose rows belong to one (run_id, checkpoint) and that a stage writes: written together in one
#: transaction (the checkpoints row, written last, marks them whole).
CHECKPOINT_TABLES: list[str] = [t.name for t in TABLES.values() if t.scope == "checkpoint" and t.stage != "run"]

#: Tables every crossling store has from its first write on (the run, its inputs and its model layout); tables
#: added to the schema later are created by the next write, so an older store may lack them and is still read.
REQUIRED_TABLES: tuple[str, ...] = tuple(t.name for t in TABLES.values() if t.stage == "run")

#: Tables with an MLP ``layer`` column: their layer ids are the model's, kept when a run hooks only some layers.
MLP_LAYER_TABLES: list[str] = [t.name for t in TABLES.values() if t.mlp_layer]


def stage_of(table: str) -> str | None:
    """The stage that writes ``table`` (see :data:`STAGES`; a derived table: its source's stage), None for a
    name the schema does not have."""
    found = TABLES.get(table)
    return found.stage if found else None


def polars_schema(table: str, *, without: Iterable[str] = ("run_id", "checkpoint")) -> dict[str, pl.DataType]:
    """Column -> polars type of ``table``'s frames, in the table's column order, less the columns ``without``
    (by default the run_id and checkpoint that the writer adds to a checkpoint's frames)."""
    if table not in TABLES:
        raise KeyError(f"no table {table!r} in the store schema")
    left_out = set(without)
    return {c.name: POLARS_TYPES[c.sql_type] for c in TABLES[table].columns if c.name not in left_out}


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table and every column added since (idempotent) and record the schema version."""
    for ddl in DDL.values():
        con.execute(ddl)
    for table, column, sql_type in ADDED_COLUMNS:
        con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type}")
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])


def schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The schema version a store declares, or None where it has no meta table."""
    try:
        rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    except duckdb.CatalogException:
        return None
    return int(rows[0][0]) if rows else None


def checkpoint_order(alias: str = "") -> str:
    """The ORDER BY expression for training order: by step (unknown steps last), then by name.

    Every reader that lists checkpoints (info, report, steering, merge, the explorer) orders them with this,
    so that "first" and "last" checkpoint mean the same everywhere. ``alias``: the checkpoints table's alias.
    """
    prefix = f"{alias}." if alias else ""
    return f"{prefix}step NULLS LAST, {prefix}checkpoint"


# --------------------------------------------------------------------------------------------------
# The reference page docs/store.md, generated from the declarations (tests/store/test_schema.py keeps it current).

#: The command, run in the source tree, that writes docs/store.md.
REGENERATE = "python docs/store_schema.py"

_SCOPE_TEXT = {"run": "the run", "checkpoint": "one checkpoint"}


def _cell(text: str) -> str:
    """Text for a Markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|")


def _writer_text(table: Table) -> str:
    if table.derived_from:
        return f"{table.stage} (derived by the writer from {table.derived_from})"
    return table.stage


def schema_markdown() -> str:
    """The text of ``docs/store.md``: every table with what it holds, its scope, writer stage, key and columns."""
    out = [
        "# The store's tables",
        "",
        f"<!-- Generated from precompute/store/schema.py by `{REGENERATE}`; do not edit by hand. -->",
        "",
        f"A crossling store is one DuckDB file of schema version {SCHEMA_VERSION} (storage format "
        f"{STORAGE_VERSION}, readable by DuckDB {OPENS_IN_DUCKDB} and later). Every table is declared once, in "
        "`precompute/store/schema.py`; this page is generated from that declaration.",
        "",
        "- **Scope**: *the run* (rows of the run as a whole) or *one checkpoint* (rows of one `(run_id, "
        "checkpoint)`, written in one transaction with that checkpoint's `checkpoints` row and replaced together).",
        "- **Written by**: `run` for the run's inputs and bookkeeping, `timings` for the pipeline's own timings, "
        "else the analysis stage (`precompute.stages`) that computes it.",
        "- **Added later**: a column added after stores of this schema version were first written; an older store "
        "may lack it (it is read as it is, and gains the column, as NULL, on its next write).",
        "- **MLP block**: where a table's `layer` is an MLP block id (the model's numbering, kept when a run hooks "
        "only some blocks); elsewhere layer 0 is the embedding output and layer i the output of block i.",
        "",
        "| table | scope | written by | holds |",
        "| --- | --- | --- | --- |",
    ]
    for table in TABLES.values():
        out.append(
            f"| [{table.name}](#{table.name}) | {_SCOPE_TEXT[table.scope]} | {_cell(_writer_text(table))} | "
            f"{_cell(table.description)} |"
        )
    for table in TABLES.values():
        key = ", ".join(f"`{c}`" for c in table.key) if table.key else "none"
        out += [
            "",
            f"## {table.name}",
            "",
            table.description,
            "",
            f"- Scope: {_SCOPE_TEXT[table.scope]}",
            f"- Written by: {_writer_text(table)}",
            f"- Primary key: {key}",
        ]
        if table.mlp_layer:
            out.append("- `layer` is an MLP block id")
        if table.notes:
            out += ["", table.notes]
        out += ["", "| column | type | null |", "| --- | --- | --- |"]
        for column in table.columns:
            null = "NOT NULL" if column.not_null or column.name in table.key else "nullable"
            if column.added:
                null += " (added later)"
            out.append(f"| `{column.name}` | {column.sql_type} | {null} |")
    return "\n".join(out) + "\n"


def write_schema_doc(path: str | Path) -> Path:
    """Write :func:`schema_markdown` to ``path`` (``docs/store_schema.py`` writes the source tree's docs/store.md)."""
    path = Path(path)
    path.write_text(schema_markdown(), encoding="utf-8")
    return path
