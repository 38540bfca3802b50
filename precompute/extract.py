"""Batched forward passes that keep only pooled activations.

For every context of the concept set, and every MLP unit of every hooked layer (the input of the MLP's down
projection, see ``precompute.model.sites``; the hooked layers are the checkpoint's
``precompute.model.ModelLayout``), we keep the unit's **response** to the context under each requested pooling
(``POOLINGS``):

- ``max``: the maximum over the context's tokens (Suau et al.'s reference code, apple/ml-selfcond
  ``pool_responses(pooling_type="max")``, and the paper: the paper's setting);
- ``mean``: the mean over the context's tokens (crossling's choice);
- ``span``: the mean over the tokens that overlap the concept's character span (crossling's choice);

plus the fraction of tokens on which the unit is active (for LAPE): the down projection's input > 0, or, in
gated MLPs, act(gate) > 0 (Tang et al.'s activation event). For the residual stream (``hidden_states``:
embeddings + each block's output) we keep the mean over tokens and, for every token-probe seed, the hidden
state at one token position drawn with that seed. No full token tensors survive a batch.

"The context's tokens" are its **real** tokens: padding and the special tokens the tokenizer adds itself (a
start token such as XGLM's ``</s>`` or Llama's ``<s>``; an end token where a tokenizer appends one) are fed to
the model, so it sees the input it was trained on, but never pooled, counted or sampled (crossling's choice:
they carry no text of the context).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from precompute.analysis.drilldown import ragged_take
from precompute.analysis.units import UnitAxis
from precompute.config import POOLINGS
from precompute.faults import maybe_fail
from precompute.model import LoadedModel, MLPSite, ModelLayout, mlp_hooks

# The unit responses ``extract`` can pool are ``precompute.config.POOLINGS``; ``[extract] pooling`` picks the one
# the analyses use.


@dataclass
class TokenizedContexts:
    """Token ids of every context with its masks.

    span_masks: True on tokens overlapping the concept span; real_masks: True on the context's real tokens
    (not padding, not tokenizer-added specials; all True when not given); span_cut: (n,) True where the
    concept's span was given but lies (partly) beyond ``max_length``, i.e. the truncation cut it off.
    """

    input_ids: list[list[int]]
    span_masks: list[np.ndarray]
    real_masks: list[np.ndarray] | None = None
    span_cut: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.real_masks is None:
            self.real_masks = [np.ones(len(ids), dtype=bool) for ids in self.input_ids]
        if self.span_cut is None:
            self.span_cut = np.zeros(len(self.input_ids), dtype=bool)

    @property
    def lengths(self) -> np.ndarray:
        """(n,) tokens fed to the model per context (real tokens plus tokenizer-added specials)."""
        return np.array([len(ids) for ids in self.input_ids])

    @property
    def real_lengths(self) -> np.ndarray:
        """(n,) real tokens per context: what pooling, LAPE's token weights and token probes count."""
        return np.array([int(m.sum()) for m in self.real_masks])

    def subset(self, keep: np.ndarray) -> TokenizedContexts:
        """The contexts at the (sorted) indices ``keep``."""
        keep = np.asarray(keep, dtype=np.int64)
        return TokenizedContexts(
            input_ids=[self.input_ids[i] for i in keep],
            span_masks=[self.span_masks[i] for i in keep],
            real_masks=[self.real_masks[i] for i in keep],
            span_cut=self.span_cut[keep],
        )


@dataclass
class Pooled:
    """Pooled activations of one checkpoint over n contexts (CPU tensors)."""

    mlp: dict[str, torch.Tensor]  # pooling -> (n, N) responses, the hooked layers' units concatenated
    mlp_active: torch.Tensor  # (n, N) fraction of real tokens with an activation event (> 0; gated: act(gate) > 0)
    resid_mean: torch.Tensor  # (L + 1, n, d) mean over real tokens
    resid_token: torch.Tensor  # (S, L + 1, n, d) one real token per context, drawn with token_seeds[s]
    units: UnitAxis  # the (N,) unit axis of ``mlp`` and ``mlp_active``: the hooked layers' units, in block order
    token_counts: np.ndarray  # (n,) real tokens per context
    n_tokens: int  # tokens fed to the model (padding excluded, tokenizer-added specials included)
    seconds: float
    token_seeds: list[int] = field(default_factory=lambda: [0])
    # (S, n) int64: the token id at each context's sampled position per seed (the token type of resid_token[s],
    # for the probes' control task); 8 bytes a context and seed.
    token_ids: np.ndarray | None = None

    @property
    def layer_offsets(self) -> list[int]:
        """(L + 1,) the first column of each hooked layer on the unit axis, then N."""
        return list(self.units.offsets)

    @property
    def layer_ids(self) -> list[int]:
        """(L,) the model's block index of each hooked layer (all blocks unless ``[extract] layers`` says)."""
        return list(self.units.layer_ids)

    def responses(self, pooling: str) -> torch.Tensor:
        """(n, N) unit responses under ``pooling`` (one of ``POOLINGS`` that `extract` was asked for)."""
        if pooling not in self.mlp:
            raise ValueError(f"pooling {pooling!r} was not extracted (have: {', '.join(self.mlp) or 'none'})")
        return self.mlp[pooling]

    @property
    def mlp_max(self) -> torch.Tensor:
        return self.responses("max")

    @property
    def mlp_mean(self) -> torch.Tensor:
        return self.responses("mean")

    @property
    def mlp_span(self) -> torch.Tensor:
        return self.responses("span")


def tokenize_contexts(
    tokenizer, texts: Sequence[str], spans: Sequence[tuple[int | None, int | None]], max_length: int
) -> TokenizedContexts:
    """Tokenize once with offsets; mark each context's span tokens, real tokens and whether truncation cut its span.

    Truncation keeps the first ``max_length`` tokens (specials included, as the tokenizer does it). A span is
    cut off when the encoding was truncated to ``max_length`` and the span ends after the last real token kept.
    """
    enc = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    masks, reals, cut = [], [], np.zeros(len(texts), dtype=bool)
    for i, (offsets, special, (start, end)) in enumerate(zip(enc["offset_mapping"], enc["special_tokens_mask"], spans)):
        offs = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        real = ~np.asarray(special, dtype=bool).reshape(-1)
        if start is None or end is None:
            mask = np.zeros(len(offs), dtype=bool)
        else:
            # Special tokens carry (0, 0) offsets and never overlap a non-empty span.
            mask = (offs[:, 0] < end) & (offs[:, 1] > start) & (offs[:, 1] > offs[:, 0]) & real
            last_end = int(offs[real, 1].max()) if real.any() else 0
            cut[i] = len(offs) >= max_length and end > last_end
        masks.append(mask)
        reals.append(real)
    ids = [list(x) for x in enc["input_ids"]]
    empty = [i for i, r in enumerate(reals) if not r.any()]
    if empty:
        raise ValueError(f"context {empty[0]} tokenizes to no tokens of its text: {texts[empty[0]]!r}")
    return TokenizedContexts(input_ids=ids, span_masks=masks, real_masks=reals, span_cut=cut)


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


def token_budget_batches(lengths: np.ndarray, batch_tokens: int, max_padding: float = 0.2) -> list[np.ndarray]:
    """Group contexts by length (longest first) so that batch_size * padded_length <= batch_tokens.

    Length buckets: a batch also closes before a context shorter than ``(1 - max_padding)`` times the batch's
    longest, so no context carries more than that fraction of padding (a few long contexts would otherwise
    pad a whole batch of short ones to their length).
    """
    order = np.argsort(-lengths, kind="stable")
    batches, current, current_max = [], [], 0
    for idx in order:
        longest = max(current_max, int(lengths[idx]))
        if current and (longest * (len(current) + 1) > batch_tokens or int(lengths[idx]) < (1 - max_padding) * longest):
            batches.append(np.array(current))
            current, longest = [], int(lengths[idx])
        current.append(idx)
        current_max = longest
    if current:
        batches.append(np.array(current))
    return batches


def sample_token_positions(real_masks: Sequence[np.ndarray], seed: int) -> np.ndarray:
    """One real token position per context, uniformly among its real tokens (deterministic in ``seed``).

    real_masks: per context, (T_i,) bool, True on real tokens (padding and tokenizer-added specials excluded).
    Returns (n,) int64 positions into each context's token ids. Each seed draws its own positions, so token
    probes over several seeds see different tokens, not only different splits.
    """
    rng = np.random.default_rng(seed)
    u = rng.random(len(real_masks))
    positions = np.empty(len(real_masks), dtype=np.int64)
    for i, mask in enumerate(real_masks):  # one per context; contexts are short
        real = np.flatnonzero(mask)
        positions[i] = real[min(int(u[i] * len(real)), len(real) - 1)]
    return positions


def pooled_nbytes(
    loaded: LoadedModel,
    layout: ModelLayout,
    n_contexts: int,
    storage_dtype: torch.dtype = torch.float32,
    poolings: Sequence[str] = POOLINGS,
    n_token_seeds: int = 1,
) -> int:
    """Host memory `extract` needs for its pooled arrays: (poolings + 1) x contexts x the layout's units
    (``storage_dtype``) plus (1 + token seeds) x (layers + 1) x contexts x hidden (float32). A 7B model (30 layers
    x 16,384 neurons, d = 4,096) over 12,960 contexts in float16 with one pooling and 3 token seeds: 25 GB + 26 GB."""
    item = torch.empty((), dtype=storage_dtype).element_size()
    resid = (1 + n_token_seeds) * (loaded.n_layers + 1) * n_contexts * loaded.hidden_size * 4
    return (len(poolings) + 1) * n_contexts * layout.units.n_units * item + resid


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
    layout: ModelLayout,
    contexts: TokenizedContexts,
    *,
    batch_tokens: int,
    poolings: Sequence[str] = POOLINGS,
    token_seeds: Sequence[int] = (0,),
    storage_dtype: torch.dtype = torch.float32,
    progress: Callable[[int], None] | None = None,
    spill_dir: str | Path | None = None,
) -> Pooled:
    """Run every context through the model in token-budget batches and pool as described above.

    ``layout`` (`ModelLayout.of` the loaded model) names the MLP layers hooked, whose units make the columns of
    the result (``Pooled.units``); the residual stream keeps every block. ``poolings``: which unit responses to
    keep (a run keeps only the one it analyses: each costs contexts x neurons of host memory). ``token_seeds``:
    one sampled token per context and seed for token-level probes (``resid_token``), whose token ids are kept
    in ``token_ids``.
    A ``span`` response of a context without span tokens is its ``mean`` (a concept set without spans);
    ``precompute.pipeline`` refuses or drops contexts whose span was cut off before they get here.
    ``progress`` is called with the number of contexts finished after each batch.
    ``spill_dir``: hold the pooled arrays in memory-mapped files there instead of RAM (see `pooled_nbytes`).
    """
    unknown_pooling = [p for p in poolings if p not in POOLINGS]
    if unknown_pooling or not poolings:
        raise ValueError(f"poolings must be some of {', '.join(POOLINGS)}, got {list(poolings)}")
    poolings = list(dict.fromkeys(poolings))
    model, device = loaded.model, loaded.device
    offsets = layout.units.offsets
    n, n_neurons = len(contexts.input_ids), layout.units.n_units
    n_resid, hidden = loaded.n_layers + 1, loaded.hidden_size
    seeds = [int(x) for x in token_seeds]
    real_lengths = contexts.real_lengths
    out = Pooled(
        mlp={p: _allocate((n, n_neurons), storage_dtype, spill_dir) for p in poolings},
        mlp_active=_allocate((n, n_neurons), storage_dtype, spill_dir),
        resid_mean=_allocate((n_resid, n, hidden), torch.float32, spill_dir),
        resid_token=_allocate((len(seeds), n_resid, n, hidden), torch.float32, spill_dir),
        units=layout.units,
        token_counts=real_lengths,
        n_tokens=int(contexts.lengths.sum()),
        seconds=0.0,
        token_seeds=seeds,
    )
    token_pos = np.stack([sample_token_positions(contexts.real_masks, s) for s in seeds] or [np.zeros((0, n))])
    token_pos = token_pos.reshape(len(seeds), n).astype(np.int64)  # (S, n)
    out.token_ids = np.array(
        [[contexts.input_ids[i][p] for i, p in enumerate(row)] for row in token_pos.tolist()], dtype=np.int64
    ).reshape(len(seeds), n)
    pad_id = loaded.tokenizer.pad_token_id or 0
    state: dict[str, torch.Tensor] = {}
    # Buffer slots per batch: one per pooling, then the activation fraction.
    slot = {p: i for i, p in enumerate(poolings)}
    active_slot = len(poolings)
    means = [p for p in poolings if p in ("mean", "span")]
    mean_rows = [0 if p == "mean" else 1 for p in means]  # rows of `weights`: 0 real tokens, 1 span tokens

    def store_active(site: MLPSite, col: int, acts: torch.Tensor) -> None:
        """Fraction of each context's real tokens with acts > 0: (B, 1, T) x (B, T, n) -> (B, 1, n)."""
        weights, divisors = state["weights"], state["divisors"]
        active = torch.bmm(weights[:, :1], (acts > 0).to(torch.float32)) / divisors[:, :1]
        state["buffer"][:, active_slot, col : col + site.n_neurons] = active[:, 0].to(storage_dtype)

    def pool(position: int, site: MLPSite, down_input: torch.Tensor) -> None:
        # Means over tokens as one batched matmul: (B, 2, T) 0/1 weights (real tokens, span tokens)
        # x (B, T, n_neurons), divided by the counts; the max over real tokens with padding and specials
        # set to -inf. Results stay on the device until the batch ends.
        acts = down_input.float()  # (B, T, n_neurons)
        col = offsets[position]
        weights, divisors, buffer = state["weights"], state["divisors"], state["buffer"]
        cols = slice(col, col + site.n_neurons)
        if means:
            sums = torch.bmm(weights[:, mean_rows], acts) / divisors[:, mean_rows]  # (B, len(means), n)
            for j, p in enumerate(means):
                buffer[:, slot[p], cols] = sums[:, j].to(storage_dtype)
        if "max" in slot:
            masked = torch.where(state["real"][:, :, None], acts, torch.tensor(float("-inf"), device=acts.device))
            buffer[:, slot["max"], cols] = masked.amax(dim=1).to(storage_dtype)
        if site.gate is None:
            store_active(site, col, acts)

    def gate_active(position: int, site: MLPSite, gate_output: torch.Tensor) -> None:
        # The gate's activation, act(gate(x)) (or its pre-activation): (B, T, n_neurons).
        store_active(site, offsets[position], gate_output.float())

    base = model.base_model
    start = time.perf_counter()
    try:
        with mlp_hooks(layout, on_input=pool, on_gate=gate_active), torch.inference_mode():
            for batch in token_budget_batches(contexts.lengths, batch_tokens):
                width = int(contexts.lengths[batch].max())
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.float32)  # attention: every fed token
                real = torch.zeros((len(batch), width), dtype=torch.float32)  # pooled: the text's tokens
                span = torch.zeros((len(batch), width), dtype=torch.float32)
                for row, idx in enumerate(batch):
                    length = len(contexts.input_ids[idx])
                    ids[row, :length] = torch.tensor(contexts.input_ids[idx])
                    mask[row, :length] = 1.0
                    real[row, :length] = torch.from_numpy(contexts.real_masks[idx].astype(np.float32))
                    span[row, :length] = torch.from_numpy(contexts.span_masks[idx].astype(np.float32))
                rows = torch.from_numpy(batch)
                weights = torch.stack([real, span], dim=1).to(device)  # (B, 2, T)
                count = weights[:, :1].sum(2, keepdim=True).clamp(min=1)
                span_count = weights[:, 1:].sum(2, keepdim=True)
                # A context without span tokens gets its mean as span mean: weights of all real tokens instead.
                no_span = span_count == 0
                weights[:, 1:] = torch.where(no_span, weights[:, :1], weights[:, 1:])
                state.update(
                    weights=weights,
                    real=weights[:, 0] > 0,  # (B, T) bool
                    divisors=torch.cat([count, torch.where(no_span, count, span_count)], dim=1),
                    buffer=torch.empty((len(batch), active_slot + 1, n_neurons), dtype=storage_dtype, device=device),
                )
                result = base(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device, torch.long),
                    output_hidden_states=True,
                    use_cache=False,
                )
                # Residual stream, layer by layer (no (L+1, B, T, d) float32 copy): mean over real tokens and
                # the sampled token of each context for every seed.
                pos = torch.from_numpy(token_pos[:, batch]).to(device)  # (S, B)
                batch_idx = torch.arange(len(batch), device=device)
                resid = torch.stack(
                    [
                        torch.cat(
                            [torch.bmm(weights[:, :1], h.float()) / count]
                            + [h[batch_idx, pos[s]].float()[:, None] for s in range(len(seeds))],
                            1,
                        )
                        for h in result.hidden_states
                    ]
                ).cpu()  # (L+1, B, 1 + S, d)
                host = state["buffer"].cpu()  # one device -> host copy of the batch's pooled neurons
                for p in poolings:
                    out.mlp[p][rows] = host[:, slot[p]]
                out.mlp_active[rows] = host[:, active_slot]
                out.resid_mean[:, rows] = resid[:, :, 0]
                for s in range(len(seeds)):
                    out.resid_token[s][:, rows] = resid[:, :, 1 + s]
                del result, resid, host
                if progress is not None:
                    progress(len(batch))
                maybe_fail("extract.batch")
    finally:
        state.clear()
    out.seconds = time.perf_counter() - start
    return out


def token_offsets(tokenizer, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Per context, (T_i, 2) character offsets of its tokens in the text, tokenized exactly as
    `tokenize_contexts` does (same truncation), so position t here is position t there; specials are (0, 0)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True)
    return [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in enc["offset_mapping"]]


@dataclass
class UnitContextActivations:
    """What `unit_context_activations` finds for P (context, unit) pairs.

    positions: (P,) int64 position of the unit's largest activation over the context's real tokens, an index
    into the context's token ids; values: (P,) float32 that activation. The unit's activation at every token id
    of each pair's context (specials included, padding not), ragged, as one flat array: token_acts (sum of
    token_counts,) float32, pair i's ``token_counts[i]`` values after those of pairs 0 .. i-1 (`tokens`), so
    ``tokens(i)[positions[i]] == values[i]`` exactly. Flat rather than P arrays: P is units x languages x top
    contexts (a quarter million for the demo), and the store's list columns are built from it in one step.
    """

    positions: np.ndarray
    values: np.ndarray
    token_acts: np.ndarray
    token_counts: np.ndarray

    def tokens(self, pair: int) -> np.ndarray:
        """(tokens of the pair's context,) float32: pair ``pair``'s activations, a view into ``token_acts``."""
        start = int(self.token_counts[:pair].sum())
        return self.token_acts[start : start + int(self.token_counts[pair])]


def unit_peaks(
    loaded: LoadedModel,
    layout: ModelLayout,
    contexts: TokenizedContexts,
    pair_rows: np.ndarray,
    pair_units: np.ndarray,
    *,
    batch_tokens: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Where each (context, unit) pair peaks: the real-token position of the unit's largest activation.

    `unit_context_activations` without the per-token activations (nothing but the (B, U) peaks leaves the
    device). Returns (P,) int64 positions into the context's token ids and (P,) float32 activations there.
    """
    found = _unit_pass(loaded, layout, contexts, pair_rows, pair_units, batch_tokens=batch_tokens, keep_tokens=False)
    return found.positions, found.values


def unit_context_activations(
    loaded: LoadedModel,
    layout: ModelLayout,
    contexts: TokenizedContexts,
    pair_rows: np.ndarray,
    pair_units: np.ndarray,
    *,
    batch_tokens: int,
) -> UnitContextActivations:
    """Where each (context, unit) pair peaks, and the unit's activation at every token of the context.

    A second forward pass over only the contexts that some pair names (the union of the selected units' top
    contexts: a few thousand, against the whole concept set for `extract`), with hooks that keep only the
    selected units' columns. Chosen over keeping argmax positions in `extract`'s max pooling, which would cost
    contexts x all neurons more host memory for every run, and would not exist under mean or span pooling. The
    per-token activations come from the same pass: only the pairs' own (unit, context) columns leave the
    device, (pairs of the batch, T) per batch, so the host holds the sum of the pairs' context lengths.

    pair_rows: (P,) indices into ``contexts``; pair_units: (P,) columns of ``layout.units``, the unit axis of
    `extract` called with the same layout (the hooked layers' units concatenated). Only the layers some pair
    names do any work in their hooks. Per batch the device holds (B, T, U_layer) for one layer at a time, a
    (B, U) result and the (pairs of the batch, T) token activations.
    """
    return _unit_pass(loaded, layout, contexts, pair_rows, pair_units, batch_tokens=batch_tokens, keep_tokens=True)


def _unit_pass(
    loaded: LoadedModel,
    layout: ModelLayout,
    contexts: TokenizedContexts,
    pair_rows: np.ndarray,
    pair_units: np.ndarray,
    *,
    batch_tokens: int,
    keep_tokens: bool,
) -> UnitContextActivations:
    """The forward pass of `unit_peaks` and `unit_context_activations`; the token activations are empty unless
    ``keep_tokens``."""
    pair_rows = np.asarray(pair_rows, dtype=np.int64)
    pair_units = np.asarray(pair_units, dtype=np.int64)
    positions = np.zeros(len(pair_rows), dtype=np.int64)
    values = np.zeros(len(pair_rows), dtype=np.float32)
    if len(pair_rows) == 0:
        return UnitContextActivations(positions, values, np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))
    model, device = loaded.model, loaded.device
    offsets = np.asarray(layout.units.offsets, dtype=np.int64)
    units = np.unique(pair_units)  # sorted: per-layer blocks concatenate in this order
    pair_u = np.searchsorted(units, pair_units)  # (P,) index into `units`
    rows = np.unique(pair_rows)
    sub = contexts.subset(rows)
    pair_r = np.searchsorted(rows, pair_rows)  # (P,) index into `sub`
    layer_of = layout.units.position_of(units)  # (U,) position of each unit's layer among the hooked ones
    picks = {
        i: torch.from_numpy(units[layer_of == i] - offsets[i]).to(device)
        for i in range(layout.units.n_layers)
        if (layer_of == i).any()
    }
    starts = {i: int(np.searchsorted(layer_of, i)) for i in picks}
    state: dict[str, torch.Tensor] = {}
    # Per hooked layer, the batch's pairs on it: (which of the batch's pairs, their row in the batch, their column
    # among the layer's picked units); set before each batch's forward when keep_tokens.
    batch_pairs: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def peak(position: int, _site: MLPSite, down_input: torch.Tensor) -> None:
        if position not in picks:  # a layer none of the pairs names
            return
        cols, start = picks[position], starts[position]
        acts = down_input.index_select(-1, cols).float()  # (B, T, U_layer)
        if position in batch_pairs:
            which, r, u = batch_pairs[position]
            state["tokens"][which] = acts[r, :, u]  # (pairs of the batch on this layer, T)
        acts = torch.where(state["real"][:, :, None], acts, torch.tensor(float("-inf"), device=acts.device))
        best, where = acts.max(dim=1)  # (B, U_layer)
        state["value"][:, start : start + len(cols)] = best
        state["pos"][:, start : start + len(cols)] = where

    pad_id = loaded.tokenizer.pad_token_id or 0
    # Pairs grouped by the batch their context falls in, so each batch gathers its own with one index.
    batches = token_budget_batches(sub.lengths, batch_tokens)
    batch_of = np.empty(len(rows), dtype=np.int64)
    row_in_batch = np.empty(len(rows), dtype=np.int64)
    for b, batch in enumerate(batches):
        batch_of[batch] = b
        row_in_batch[batch] = np.arange(len(batch))
    pair_batch = batch_of[pair_r]
    pair_length = sub.lengths[pair_r].astype(np.int64)  # (P,) token ids of each pair's context
    pair_layer = layer_of[pair_u]  # (P,) position of each pair's layer among the hooked ones
    order = np.argsort(pair_batch, kind="stable")
    bounds = np.searchsorted(pair_batch[order], np.arange(len(batches) + 1))
    chunks: list[np.ndarray] = []  # per batch, its pairs' activations flat, the pairs in `order`
    try:
        with mlp_hooks(layout, on_input=peak), torch.inference_mode():
            for b, batch in enumerate(batches):
                width = int(sub.lengths[batch].max())
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                real = torch.zeros((len(batch), width), dtype=torch.bool)
                for row, idx in enumerate(batch):
                    length = len(sub.input_ids[idx])
                    ids[row, :length] = torch.tensor(sub.input_ids[idx])
                    mask[row, :length] = 1
                    real[row, :length] = torch.from_numpy(sub.real_masks[idx])
                state.update(
                    real=real.to(device),
                    value=torch.empty((len(batch), len(units)), device=device),
                    pos=torch.empty((len(batch), len(units)), dtype=torch.long, device=device),
                )
                mine = order[bounds[b] : bounds[b + 1]]
                mine_rows = row_in_batch[pair_r[mine]]
                if keep_tokens:
                    state["tokens"] = torch.empty((len(mine), width), device=device)
                    batch_pairs.clear()
                    for i in picks:
                        on_layer = np.flatnonzero(pair_layer[mine] == i)
                        if len(on_layer):
                            batch_pairs[i] = tuple(
                                torch.from_numpy(x).to(device)
                                for x in (on_layer, mine_rows[on_layer], pair_u[mine[on_layer]] - starts[i])
                            )
                model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                r = torch.from_numpy(mine_rows).to(device)
                u = torch.from_numpy(pair_u[mine]).to(device)
                positions[mine] = state["pos"][r, u].cpu().numpy()
                values[mine] = state["value"][r, u].cpu().numpy()
                if keep_tokens:
                    per_token = state["tokens"].cpu().numpy()  # (pairs of the batch, width)
                    chunks.append(per_token[np.arange(width)[None, :] < pair_length[mine][:, None]])
    finally:
        state.clear()
        batch_pairs.clear()
    if not keep_tokens:
        return UnitContextActivations(positions, values, np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))
    # From the pairs in `order` (batch by batch) back to the pairs' own order.
    in_order = np.concatenate(chunks)
    start_in_order = np.empty(len(pair_rows), dtype=np.int64)
    start_in_order[order] = np.cumsum(pair_length[order]) - pair_length[order]
    return UnitContextActivations(positions, values, ragged_take(in_order, start_in_order, pair_length), pair_length)
