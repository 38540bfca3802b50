"""Batched forward passes that keep only pooled activations.

For every context of the concept set, and every MLP neuron of every layer (the input of the MLP's
down projection, see ``precompute.model.load``), we keep: the mean over the context's tokens, the mean
over the tokens of the concept's span, and the fraction of tokens on which the neuron is > 0 (for
LAPE). For the residual stream (``hidden_states``: embeddings + each block's output) we keep the
mean over tokens and one sampled token per context (token-level language probes). No full token
tensors survive a batch.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from precompute.faults import maybe_fail
from precompute.model import LoadedModel, MLPSite, find_mlp_sites


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


def token_budget_batches(
    lengths: np.ndarray, batch_tokens: int, max_padding: float = 0.2
) -> list[np.ndarray]:
    """Group contexts by length (longest first) so that batch_size * padded_length <= batch_tokens.

    Length buckets: a batch also closes before a context shorter than ``(1 - max_padding)`` times the batch's
    longest, so no context carries more than that fraction of padding (a few long contexts would otherwise
    pad a whole batch of short ones to their length).
    """
    order = np.argsort(-lengths, kind="stable")
    batches, current, current_max = [], [], 0
    for idx in order:
        longest = max(current_max, int(lengths[idx]))
        if current and (
            longest * (len(current) + 1) > batch_tokens or int(lengths[idx]) < (1 - max_padding) * longest
        ):
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


def pooled_nbytes(
    loaded: LoadedModel, n_contexts: int, layers: Sequence[int] = (), storage_dtype: torch.dtype = torch.float32
) -> int:
    """Host memory `extract` needs for its pooled arrays: 3 x contexts x neurons (``storage_dtype``) plus
    2 x (layers + 1) x contexts x hidden (float32). A 7B model (30 layers x 16,384 neurons, d = 4,096) over
    12,960 contexts in float16: 38 GB + 13 GB."""
    sites = [s for s in find_mlp_sites(loaded.model) if not layers or s.layer in set(layers)]
    n_neurons = sum(s.n_neurons for s in sites)
    item = torch.empty((), dtype=storage_dtype).element_size()
    return 3 * n_contexts * n_neurons * item + 2 * (loaded.n_layers + 1) * n_contexts * loaded.hidden_size * 4


def available_ram_bytes() -> int:
    """RAM available to this process now (Linux MemAvailable; else the physical total)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32}


def _allocate(shape: tuple[int, ...], dtype: torch.dtype, spill_dir: str | Path | None) -> torch.Tensor:
    """An uninitialised tensor: in RAM, or backed by a memory-mapped file in ``spill_dir``.

    The file is unlinked as soon as it is mapped, so its disk space returns when the tensor is freed, even if
    the process is killed.
    """
    if spill_dir is None or dtype not in _NUMPY_DTYPES or 0 in shape:
        return torch.empty(shape, dtype=dtype)
    Path(spill_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=spill_dir, prefix="crossling-pooled-", suffix=".bin") as handle:
        array = np.memmap(handle.name, dtype=_NUMPY_DTYPES[dtype], mode="w+", shape=shape)
    return torch.from_numpy(array)


def extract(
    loaded: LoadedModel,
    contexts: TokenizedContexts,
    *,
    batch_tokens: int,
    layers: Sequence[int] = (),
    seed: int = 0,
    storage_dtype: torch.dtype = torch.float32,
    progress: Callable[[int], None] | None = None,
    spill_dir: str | Path | None = None,
) -> Pooled:
    """Run every context through the model in token-budget batches and pool as described above.

    ``layers`` restricts the MLP layers hooked (default: all); the residual stream keeps every layer.
    ``progress`` is called with the number of contexts finished after each batch.
    ``spill_dir``: hold the pooled arrays in memory-mapped files there instead of RAM (see `pooled_nbytes`).
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
        mlp_mean=_allocate((n, n_neurons), storage_dtype, spill_dir),
        mlp_span=_allocate((n, n_neurons), storage_dtype, spill_dir),
        mlp_active=_allocate((n, n_neurons), storage_dtype, spill_dir),
        resid_mean=_allocate((n_resid, n, hidden), torch.float32, spill_dir),
        resid_token=_allocate((n_resid, n, hidden), torch.float32, spill_dir),
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
            # Sums over tokens as one batched matmul each: (B, 2, T) 0/1 weights (all tokens, span tokens)
            # x (B, T, n_neurons), then divided by the counts; results stay on the device until the batch ends.
            acts = args[0].float()  # (B, T, n_neurons)
            weights, divisors, buffer = state["weights"], state["divisors"], state["buffer"]
            cols = slice(col, col + site.n_neurons)
            sums = torch.bmm(weights, acts) / divisors  # (B, 2, n): mean, span mean
            active = torch.bmm(weights[:, :1], (acts > 0).to(acts.dtype)) / divisors[:, :1]
            buffer[:, :2, cols] = sums.to(storage_dtype)
            buffer[:, 2:, cols] = active.to(storage_dtype)

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
                weights = torch.stack([mask, span], dim=1).to(device)  # (B, 2, T)
                count = weights[:, :1].sum(2, keepdim=True).clamp(min=1)
                span_count = weights[:, 1:].sum(2, keepdim=True)
                # A context without span tokens gets its mean as span mean: weights of all tokens instead.
                no_span = span_count == 0
                weights[:, 1:] = torch.where(no_span, weights[:, :1], weights[:, 1:])
                state.update(
                    weights=weights,
                    divisors=torch.cat([count, torch.where(no_span, count, span_count)], dim=1),
                    buffer=torch.empty((len(batch), 3, n_neurons), dtype=storage_dtype, device=device),
                )
                result = base(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device, torch.long),
                    output_hidden_states=True,
                    use_cache=False,
                )
                # Residual stream, layer by layer (no (L+1, B, T, d) float32 copy): mean over tokens and
                # the sampled token of each context.
                pos = torch.from_numpy(token_pos[batch]).to(device)
                batch_idx = torch.arange(len(batch), device=device)
                resid = torch.stack(
                    [
                        torch.cat([torch.bmm(weights[:, :1], h.float()) / count, h[batch_idx, pos].float()[:, None]], 1)
                        for h in result.hidden_states
                    ]
                ).cpu()  # (L+1, B, 2, d)
                host = state["buffer"].cpu()  # one device -> host copy of the batch's pooled neurons
                out.mlp_mean[rows] = host[:, 0]
                out.mlp_span[rows] = host[:, 1]
                out.mlp_active[rows] = host[:, 2]
                out.resid_mean[:, rows] = resid[:, :, 0]
                out.resid_token[:, rows] = resid[:, :, 1]
                del result, resid, host
                if progress is not None:
                    progress(len(batch))
                maybe_fail("extract.batch")
    finally:
        for handle in handles:
            handle.remove()
        state.clear()
    out.seconds = time.perf_counter() - start
    return out
