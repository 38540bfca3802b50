"""The intervention and generation: fix MLP units to values while the model samples, from its start token.

A unit's activation is the input of its layer's MLP down projection (see ``precompute.model.load``; the
checkpoint's hooked layers are its ``precompute.model.ModelLayout``); ``fixed_unit_hooks`` **fixes** chosen
units to values at every position of the sequence (prompt and generated tokens), as Suau et al.'s
``force_units_hooks`` (apple/ml-selfcond) does by default.

Generation samples (``do_sample=True``) one sequence at a time with ``torch.manual_seed(seed)`` before each,
so one (prompt, seed) gives the same text with and without the intervention, and steered and unsteered outputs
differ only by the fixed units. The sampling settings are the run's ``[steering]`` section
(``precompute.config.SteeringSpec``: nucleus 0.9, no top-k cut, temperature 0.8 as ml-selfcond's
``generate_seq``); this module has no defaults of its own.

Every sequence starts with the checkpoint's own start token: the token(s) its tokenizer itself prepends to a
text (XGLM ``</s>``, Llama and OPT ``<s>``/``</s>``), or, for a tokenizer that prepends nothing (GPT-2, BLOOM),
its BOS token (else EOS, as GPT-2's ``<|endoftext|>``). The prompt is tokenized without special tokens after
it, so a start token is never doubled. An empty prompt is "generation from the start token".
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from precompute.model.layout import ModelLayout, mlp_hooks
from precompute.model.sites import MLPSite
from precompute.model.tokens import NO_START_TOKEN, sequence_ids


class SteeringError(ValueError):
    """A steering request that cannot be run, with a one-line reason."""


@dataclass(frozen=True)
class Sampling:
    """How each output is sampled; stored with every steering row (columns of the same names)."""

    top_k: int
    top_p: float
    temperature: float
    max_new_tokens: int

    @classmethod
    def from_spec(cls, spec: Any) -> Sampling:
        """The sampling of a ``precompute.config.SteeringSpec`` (the one home of the defaults)."""
        return cls(int(spec.top_k), float(spec.top_p), float(spec.temperature), int(spec.max_new_tokens))


# --------------------------------------------------------------------------------------------------
# The intervention


@contextlib.contextmanager
def fixed_unit_hooks(layout: ModelLayout, units: Sequence[tuple[int, int, float]]) -> Iterator[None]:
    """Within the block, fix MLP units to values: ``units`` are (block id, unit, value) triples.

    ``layout``: the checkpoint's `precompute.model.ModelLayout`; every block a triple names must be one of its
    hooked sites. Through `precompute.model.mlp_hooks`, the input of each involved site's down projection,
    (batch, seq, n_neurons), gets ``[..., unit]`` replaced by the value at every position (out of place, in
    the activation's dtype). The triples are checked before anything is hooked, and with no units nothing is
    hooked at all. Hooks are removed on exit, also after an exception.
    """
    per_position: dict[int, dict[int, float]] = defaultdict(dict)
    for layer, unit, value in units:
        layer, unit = int(layer), int(unit)
        if layer not in layout.units.layer_ids:
            raise SteeringError(f"layer {layer} has no MLP site (model has layers {list(layout.units.layer_ids)})")
        site = layout.site(layer)
        if not 0 <= unit < int(site.n_neurons):
            raise SteeringError(f"unit {unit} is out of range for layer {layer} ({site.n_neurons} neurons)")
        per_position[layout.units.position(layer)][unit] = float(value)
    if not per_position:
        yield
        return
    fixers = {
        position: _Fixer(
            torch.tensor(sorted(fixed), dtype=torch.long),
            torch.tensor([fixed[u] for u in sorted(fixed)], dtype=torch.float32),
        )
        for position, fixed in per_position.items()
    }

    def fix(position: int, _site: MLPSite, acts: torch.Tensor) -> torch.Tensor | None:
        fixer = fixers.get(position)
        return None if fixer is None else fixer(acts)

    with mlp_hooks(layout, on_input=fix):
        yield


class _Fixer:
    """Sets (..., idx) of an activation to ``vals``; the index and values are moved to the activation's
    device and dtype once per (device, dtype), not at every generated token."""

    def __init__(self, idx: torch.Tensor, vals: torch.Tensor) -> None:
        self.idx, self.vals = idx, vals
        self.cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self.cache:
            self.cache[key] = (self.idx.to(x.device), self.vals.to(device=x.device, dtype=x.dtype))
        i, v = self.cache[key]
        return x.index_copy(-1, i, v.expand(*x.shape[:-1], len(i)))


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The start token(s) followed by the prompt's own tokens (`precompute.model.tokens.sequence_ids`); a
    `SteeringError` where there is nothing to start generating from."""
    ids = sequence_ids(tokenizer, prompt)
    if not ids:
        raise SteeringError(NO_START_TOKEN)
    return ids


# --------------------------------------------------------------------------------------------------
# Generation


def generate(
    loaded: Any,
    prompts: Sequence[str],
    seeds: Sequence[int],
    sampling: Sampling,
    units: Sequence[tuple[int, int, float]] = (),
    *,
    layout: ModelLayout | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Sample one continuation per (prompt, seed), with ``units`` fixed (none: plain generation).

    ``loaded``: a ``precompute.model.load.LoadedModel`` (model, tokenizer, device). Returns dicts with
    prompt, seed, output_text (the new tokens only, special tokens dropped) and n_new_tokens, in the
    order prompts x seeds. ``layout``: the checkpoint's `precompute.model.ModelLayout` (pass the one built for
    the loaded checkpoint); where it is None and units are given, the layout of every block is built here.
    """
    if sampling.max_new_tokens < 1:
        raise SteeringError(f"max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
    model, tok = loaded.model, loaded.tokenizer
    device = getattr(loaded, "device", None) or next(model.parameters()).device
    if units and layout is None:
        layout = ModelLayout.of(model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    settings = {
        "do_sample": True,
        "top_k": int(sampling.top_k),
        "top_p": float(sampling.top_p),
        "temperature": float(sampling.temperature),
        "max_new_tokens": int(sampling.max_new_tokens),
        "pad_token_id": pad_id,
    }
    out: list[dict[str, Any]] = []
    fixing = fixed_unit_hooks(layout, units) if units else contextlib.nullcontext()
    with fixing, torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([prompt_ids(tok, prompt)], dtype=torch.long, device=device)
            mask = torch.ones_like(ids)
            for seed in seeds:
                torch.manual_seed(int(seed))
                seq = model.generate(input_ids=ids, attention_mask=mask, **settings)
                new = seq[0, ids.shape[1] :].tolist()
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
