"""Batched forward passes that keep only pooled activations.

For every context of the concept set, and every MLP neuron of every layer (the input of the MLP's
down projection, see ``precompute.models``), we keep: the mean over the context's tokens, the mean
over the tokens of the concept's span, and the fraction of tokens on which the neuron is > 0 (for
LAPE). For the residual stream (``hidden_states``: embeddings + each block's output) we keep the
mean over tokens and one sampled token per context (token-level language probes). No full token
tensors survive a batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from precompute.models import LoadedModel, MLPSite, find_mlp_sites


@dataclass
class TokenizedContexts:
    """Token ids of every context with its span mask (True on tokens overlapping the concept span)."""

    input_ids: list[list[int]]
    span_masks: list[np.ndarray]

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.input_ids])


@dataclass
class Pooled:
    """Pooled activations of one checkpoint over n contexts (CPU tensors)."""

    mlp_mean: torch.Tensor  # (n, N) all layers' neurons concatenated
    mlp_span: torch.Tensor  # (n, N)
    mlp_active: torch.Tensor  # (n, N) fraction of tokens with activation > 0
    resid_mean: torch.Tensor  # (L + 1, n, d)
    resid_token: torch.Tensor  # (L + 1, n, d)
    layer_offsets: list[int]  # column ranges of each layer in the neuron axis (length n_layers + 1)
    layer_ids: list[int]  # the model's block index of each hooked layer (all layers unless restricted)
    token_counts: np.ndarray  # (n,) tokens per context
    n_tokens: int
    seconds: float


def tokenize_contexts(
    tokenizer, texts: Sequence[str], spans: Sequence[tuple[int | None, int | None]], max_length: int
) -> TokenizedContexts:
    """Tokenize once with offsets; mark the tokens that overlap each context's character span."""
    enc = tokenizer(
        list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True
    )
    masks = []
    for offsets, (start, end) in zip(enc["offset_mapping"], spans):
        offs = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        if start is None or end is None:
            mask = np.zeros(len(offs), dtype=bool)
        else:
            # Special tokens carry (0, 0) offsets and never overlap a non-empty span.
            mask = (offs[:, 0] < end) & (offs[:, 1] > start) & (offs[:, 1] > offs[:, 0])
        masks.append(mask)
    ids = [list(x) for x in enc["input_ids"]]
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise ValueError(f"context {empty[0]} tokenizes to no tokens: {texts[empty[0]]!r}")
    return TokenizedContexts(input_ids=ids, span_masks=masks)


def max_positions(model, requested: int) -> int:
    """The context length to tokenize to: the request, capped by the model's position table."""
    config = getattr(model, "config", None)
    limit = None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            limit = value
            break
    return min(requested, limit) if limit else requested


def token_budget_batches(lengths: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Group contexts by length (longest first) so that batch_size * padded_length <= batch_tokens."""
    order = np.argsort(-lengths, kind="stable")
    batches, current, current_max = [], [], 0
    for idx in order:
        longest = max(current_max, int(lengths[idx]))
        if current and longest * (len(current) + 1) > batch_tokens:
            batches.append(np.array(current))
            current, longest = [], int(lengths[idx])
        current.append(idx)
        current_max = longest
    if current:
        batches.append(np.array(current))
    return batches


def sample_token_positions(lengths: np.ndarray, seed: int) -> np.ndarray:
    """One token position per context, uniformly at random (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    return np.floor(rng.random(len(lengths)) * lengths).astype(np.int64)


def extract(
    loaded: LoadedModel,
    contexts: TokenizedContexts,
    *,
    batch_tokens: int,
    layers: Sequence[int] = (),
    seed: int = 0,
    storage_dtype: torch.dtype = torch.float32,
    progress: Callable[[int], None] | None = None,
) -> Pooled:
    """Run every context through the model in token-budget batches and pool as described above.

    ``layers`` restricts the MLP layers hooked (default: all); the residual stream keeps every layer.
    ``progress`` is called with the number of contexts finished after each batch.
    """
    model, device = loaded.model, loaded.device
    sites = find_mlp_sites(model)
    if layers:
        unknown = sorted(set(layers) - {s.layer for s in sites})
        if unknown:
            raise ValueError(f"layers {unknown} do not exist (model has {len(sites)} MLP layers)")
        sites = [s for s in sites if s.layer in set(layers)]
    offsets = np.concatenate([[0], np.cumsum([s.n_neurons for s in sites])]).tolist()
    n, n_neurons = len(contexts.input_ids), offsets[-1]
    n_resid, hidden = loaded.n_layers + 1, loaded.hidden_size
    out = Pooled(
        mlp_mean=torch.empty((n, n_neurons), dtype=storage_dtype),
        mlp_span=torch.empty((n, n_neurons), dtype=storage_dtype),
        mlp_active=torch.empty((n, n_neurons), dtype=storage_dtype),
        resid_mean=torch.empty((n_resid, n, hidden), dtype=torch.float32),
        resid_token=torch.empty((n_resid, n, hidden), dtype=torch.float32),
        layer_offsets=offsets,
        layer_ids=[s.layer for s in sites],
        token_counts=contexts.lengths,
        n_tokens=int(contexts.lengths.sum()),
        seconds=0.0,
    )
    token_pos = sample_token_positions(contexts.lengths, seed)
    pad_id = loaded.tokenizer.pad_token_id or 0
    state: dict[str, torch.Tensor] = {}

    def make_hook(site: MLPSite, col: int):
        def hook(_module, args):
            acts = args[0].float()  # (B, T, n_neurons)
            mask, span, rows = state["mask"], state["span"], state["rows"]
            count = mask.sum(1).clamp(min=1)
            span_count = span.sum(1)
            mean = (acts * mask).sum(1) / count
            span_mean = torch.where(
                span_count > 0, (acts * span).sum(1) / span_count.clamp(min=1), mean
            )
            active = ((acts > 0).float() * mask).sum(1) / count
            cols = slice(col, col + site.n_neurons)
            out.mlp_mean[rows, cols] = mean.to("cpu", storage_dtype)
            out.mlp_span[rows, cols] = span_mean.to("cpu", storage_dtype)
            out.mlp_active[rows, cols] = active.to("cpu", storage_dtype)

        return hook

    handles = [
        site.module.register_forward_pre_hook(make_hook(site, offsets[i]))
        for i, site in enumerate(sites)
    ]
    base = model.base_model
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for batch in token_budget_batches(contexts.lengths, batch_tokens):
                width = int(contexts.lengths[batch].max())
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.float32)
                span = torch.zeros((len(batch), width), dtype=torch.float32)
                for row, idx in enumerate(batch):
                    length = len(contexts.input_ids[idx])
                    ids[row, :length] = torch.tensor(contexts.input_ids[idx])
                    mask[row, :length] = 1.0
                    span[row, :length] = torch.from_numpy(contexts.span_masks[idx].astype(np.float32))
                rows = torch.from_numpy(batch)
                state.update(
                    mask=mask.unsqueeze(-1).to(device),
                    span=span.unsqueeze(-1).to(device),
                    rows=rows,
                )
                result = base(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device, torch.long),
                    output_hidden_states=True,
                    use_cache=False,
                )
                hidden_states = torch.stack(result.hidden_states).float()  # (L+1, B, T, d)
                m = state["mask"].unsqueeze(0)
                resid_mean = (hidden_states * m).sum(2) / m.sum(2).clamp(min=1)
                pos = torch.from_numpy(token_pos[batch]).to(device)
                picked = hidden_states[:, torch.arange(len(batch), device=device), pos]
                out.resid_mean[:, rows] = resid_mean.cpu()
                out.resid_token[:, rows] = picked.cpu()
                del result, hidden_states
                if progress is not None:
                    progress(len(batch))
    finally:
        for handle in handles:
            handle.remove()
        state.clear()
    out.seconds = time.perf_counter() - start
    return out
