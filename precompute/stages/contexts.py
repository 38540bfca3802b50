"""The concept set's contexts as one checkpoint's tokenizer cuts them, and the truncation policy.

Tokenizing is cheap (one fast-tokenizer pass), so the checkpoint loop does it before writing anything for a
checkpoint: a concept span that ``[extract] max_length`` cuts off refuses the run (or is dropped, as the config
says) before any row is published.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from precompute.config import ConfigError, RunConfig
from precompute.extract import TokenizedContexts, max_positions, tokenize_contexts
from precompute.inputs.concepts import ConceptSet
from precompute.model import LoadedModel


@dataclass
class PreparedContexts:
    """The concept set's contexts tokenized for one checkpoint, and which of them the analyses use.

    keep: (n_kept,) indices into ``concept_set.sentences``; truncated: per (concept_id, lang), how many
    contexts have their concept span cut off by ``max_length`` (``n_truncated``) of how many (``n_contexts``);
    empty when none is.
    """

    contexts: TokenizedContexts
    keep: np.ndarray
    truncated: pl.DataFrame


def prepare_contexts(
    cfg: RunConfig, loaded: LoadedModel, concept_set: ConceptSet, say: Callable[[str], None] | None = None
) -> PreparedContexts:
    """Tokenize every context and apply ``[extract] on_truncated_span``: a context is never pooled over other
    tokens than its concept's without saying so.

    A context whose concept span ``max_length`` cuts off (wholly or partly) would be pooled over other tokens
    than its concept's: by default (``"error"``) the run refuses in one line naming the affected (concept,
    language) pairs; with ``"drop"`` they are left out of every analysis and reported to ``say``. Span
    pooling also refuses contexts that have no span at all (it would fall back to their mean). Cheap (one
    fast-tokenizer pass), so `run` calls it before writing anything for a checkpoint.
    """
    sentences = concept_set.sentences
    spans = list(zip(sentences["span_start"].to_list(), sentences["span_end"].to_list()))
    max_length = max_positions(loaded.model, cfg.extract.max_length)
    contexts = tokenize_contexts(loaded.tokenizer, sentences["text"].to_list(), spans, max_length)
    if cfg.extract.pooling == "span":
        no_span = sentences["span_start"].is_null() | sentences["span_end"].is_null()
        if no_span.any():
            first = sentences.filter(no_span).row(0, named=True)
            raise ConfigError(
                f'[extract] pooling = "span" needs the concept\'s span in every context; {int(no_span.sum())} '
                f'have none (first: {first["concept_id"]}/{first["lang"]}); use pooling = "max" or add '
                "span_start/span_end to the concept set"
            )
    cut = np.asarray(contexts.span_cut, dtype=bool)
    frame = sentences.select("concept_id", "lang").with_columns(pl.Series("cut", cut))
    truncated = (
        frame.group_by("concept_id", "lang")
        .agg(pl.col("cut").sum().cast(pl.Int64).alias("n_truncated"), pl.len().cast(pl.Int64).alias("n_contexts"))
        .filter(pl.col("n_truncated") > 0)
        .sort("concept_id", "lang")
    )
    if truncated.height:
        pairs = [f"{c}/{lang} {k} of {m}" for c, lang, k, m in truncated.iter_rows()]
        named = ", ".join(pairs[:8]) + (f" and {len(pairs) - 8} more pairs" if len(pairs) > 8 else "")
        what = (
            f"[extract] max_length = {max_length} tokens cuts off the concept span of {int(cut.sum())} "
            f"context(s) ({named})"
        )
        if cfg.extract.on_truncated_span == "error":
            raise ConfigError(f'{what}; raise max_length or set [extract] on_truncated_span = "drop"')
        if say is not None:
            say(f'{what}: dropped (on_truncated_span = "drop")')
    keep = np.flatnonzero(~cut)
    if len(keep) < len(cut):
        contexts = contexts.subset(keep)
    return PreparedContexts(contexts=contexts, keep=keep, truncated=truncated)
