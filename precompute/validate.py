"""The whole run, checked before any compute: settings against the concept set and the model's real shape.

What one setting may hold (type, range, allowed values) is declared next to it in :mod:`precompute.config`.
What only the run can say is checked here, once the concept set is loaded and the model's shape is known:
``top_k`` against the units it ranks, ``min_langs`` and the probes' splits against the languages and
contexts, ``[extract] layers`` against the model's blocks. Each of these would otherwise give a silent wrong
number (every unit an expert, every Jaccard 1.0; no shared expert; probes at chance) or a raw error deep in
the run. A refusal is one :class:`RunSettingError` line naming the config file and key (or the command-line
option that set it); the pipeline raises it before the store is created or changed, so the corrected config
can still use the same ``--out``.

Also here: :func:`check_finite`, the check after extraction that a checkpoint's activations are numbers
(NaN weights give NaN activations, and the probes would fail with sklearn's ``Input X contains NaN``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from precompute.config import ConfigError, RunConfig
from precompute.inputs.concepts import ConceptSet
from precompute.model import ModelLayout, ModelLoadError
from precompute.model.tokens import NO_START_TOKEN, sequence_ids


class RunSettingError(ConfigError):
    """A setting that this run (its concept set, its model) cannot use; one line naming file and key."""


class NonFiniteActivationsError(ModelLoadError):
    """A checkpoint whose activations hold NaN or infinity; the message names the checkpoint."""


@dataclass(frozen=True)
class ModelShape:
    """What the settings are checked against: MLP blocks and their units.

    ``units`` is None where it is not known yet (config.json read without weights, without a stated MLP
    width); the check then waits for the loaded model.
    """

    n_layers: int
    units: tuple[int, ...] | None
    label: str  # the checkpoint it was read from, for messages
    # The most positions (tokens) one sequence may have, where config.json states it (learned position
    # embeddings end there: GPT-2's n_positions, OPT's max_position_embeddings); None: no stated limit.
    positions: int | None = None
    # Where the tokenizer is read from (source, revision), to count the steering prompts' tokens; None: unknown.
    tokenizer_from: tuple[str, str | None] | None = None
    tokenizer: Any = field(default=None, compare=False, repr=False)  # a loaded model's own tokenizer


#: config.json keys that state a model's context length (the first one set wins).
POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length", "max_sequence_length")


def shape_from_config(source: str, revision: str | None, label: str) -> ModelShape | None:
    """The shape from config.json alone (no weights, no network: a local folder or the hub cache).

    None where config.json cannot be read so (the checkpoint's loading reports why, in its own words).
    """
    try:
        from transformers import AutoConfig

        from precompute.model.sites import (
            _INTERMEDIATE_KEYS,
            _LAYER_KEYS,
            _config_value,
            _text_config,
        )

        local = Path(source).expanduser()
        kwargs = {} if local.is_dir() or not revision else {"revision": revision}
        config = _text_config(
            AutoConfig.from_pretrained(
                str(local) if local.is_dir() else source, local_files_only=True, trust_remote_code=False, **kwargs
            )
        )
        n_layers = _config_value(config, _LAYER_KEYS)
        positions = _config_value(config, POSITION_KEYS)
    except Exception:  # noqa: BLE001 - unreadable here: checked after loading instead
        return None
    if n_layers is None:
        return None
    width = _config_value(config, _INTERMEDIATE_KEYS)  # only where stated: defaults differ by family
    where = str(local) if local.is_dir() else source
    return ModelShape(
        n_layers,
        (width,) * n_layers if width else None,
        label,
        positions,
        (where, None if local.is_dir() else revision),
    )


def shape_of(model: torch.nn.Module, label: str, tokenizer: Any = None) -> ModelShape:
    """The exact shape of a loaded model: one MLP site per block, with its units (and its context length).

    Every block's, whatever ``[extract] layers`` hooks: the settings are checked against the whole model, so
    that a layer it lacks is refused in the config's words. Check before building the run's
    ``ModelLayout.of(model, layers)``, which refuses an unknown layer with a plain ValueError.
    """
    from precompute.model.sites import _config_value, _text_config

    layout = ModelLayout.of(model)
    config = getattr(model, "config", None)
    positions = _config_value(_text_config(config), POSITION_KEYS) if config is not None else None
    return ModelShape(layout.n_blocks, tuple(int(n) for n in layout.units.sizes), label, positions, tokenizer=tokenizer)


def _tokenizer(shape: ModelShape) -> Any:
    """The tokenizer the steering prompts are counted with (None where it cannot be read without network)."""
    if shape.tokenizer is not None:
        return shape.tokenizer
    if shape.tokenizer_from is None:
        return None
    return _read_tokenizer(*shape.tokenizer_from)


@functools.lru_cache(maxsize=8)
def _read_tokenizer(source: str, revision: str | None) -> Any:
    try:
        from transformers import AutoTokenizer

        kwargs = {"revision": revision} if revision else {}
        return AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=False, **kwargs)
    except Exception:  # noqa: BLE001 - unreadable here: the checkpoint's loading reports why
        return None


def validate_run(cfg: RunConfig, concept_set: ConceptSet, shape: ModelShape | None = None) -> None:
    """Refuse, in one line naming file and key, every setting that this run would make meaningless.

    Concept-set checks always run; the model checks run when ``shape`` is given (and the unit checks when
    its units are known).
    """
    for problem in _concept_set_problems(cfg, concept_set):
        raise RunSettingError(problem)
    if shape is not None:
        for problem in _model_problems(cfg, shape):
            raise RunSettingError(problem)
        if cfg.steering.enabled:
            for problem in steering_problems(cfg, shape):
                raise RunSettingError(problem)


def steering_problems(cfg: RunConfig, shape: ModelShape, tokenizer: Any = None) -> Iterator[str]:
    """``[steering]`` settings the model cannot honour: a prompt plus ``max_new_tokens`` past its positions
    (learned position embeddings end there: generation would stop with an IndexError after the first
    checkpoint's other stages). The prompts are counted with ``tokenizer`` (else the one the shape names)
    as generation tokenizes them, start token included; without a tokenizer every sequence counts as at least
    one token (the start token) plus ``max_new_tokens``."""
    positions = shape.positions
    if positions is None:
        return
    spec = cfg.steering
    new = int(spec.max_new_tokens)
    tok = tokenizer if tokenizer is not None else _tokenizer(shape)
    if tok is None:
        lengths = dict.fromkeys(spec.prompts, 1)
    else:
        lengths = {}
        for prompt in spec.prompts:
            lengths[prompt] = len(sequence_ids(tok, prompt))
            if not lengths[prompt]:
                yield f"{_key(cfg, 'steering.prompts')}: prompt {prompt!r}: {NO_START_TOKEN}"
                return
    if not lengths:
        return
    prompt, longest = max(lengths.items(), key=lambda item: item[1])
    counted = "" if tok is None else f" (prompt {_short(prompt)} is {longest} token(s), start token included)"
    if longest >= positions:
        yield (
            f"{_key(cfg, 'steering.prompts')}: prompt {_short(prompt)} is {longest} tokens, start token included; "
            f"{shape.label} reads at most {positions} positions (config.json), and nothing is left to generate: "
            "shorten the prompt"
        )
    elif longest + new > positions:
        yield (
            f"{_key(cfg, 'steering.max_new_tokens')} = {new} does not fit: {shape.label} reads at most {positions} "
            f"positions (config.json){counted}; use max_new_tokens <= {positions - longest}"
        )


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _key(cfg: RunConfig, dotted: str) -> str:
    """How a message names a setting: the option that set it, else ``FILE: [section] key``."""
    if dotted in cfg.overridden:
        return cfg.overridden[dotted]
    section, key = dotted.split(".", 1)
    return f"{cfg.where}: [{section}] {key}"


def _concept_set_problems(cfg: RunConfig, concept_set: ConceptSet):
    langs = sorted(concept_set.languages["lang"].to_list())
    n_langs = len(langs)
    shown = ", ".join(langs[:12]) + (f", ... ({n_langs} in all)" if n_langs > 12 else "")
    if n_langs < 2:
        key = "data.languages" if cfg.data.languages else "data.concepts"
        yield (
            f"{_key(cfg, key)}: the run has {n_langs} language ({shown}); language probes, expert overlap and "
            "shared experts compare languages: give at least 2"
        )
        return
    if cfg.experts.min_langs > n_langs:
        yield (
            f"{_key(cfg, 'experts.min_langs')} = {cfg.experts.min_langs} is more than the run's {n_langs} "
            f"languages ({shown}): no unit could be a shared expert; use at most {n_langs}"
        )
    if cfg.probes.representations:
        yield from _probe_split_problems(cfg, concept_set.sentences.height, n_langs)


def _probe_split_problems(cfg: RunConfig, n: int, n_langs: int):
    """A stratified split needs at least one context of every language on each side (as sklearn's does)."""
    n_test = math.ceil(cfg.probes.test_size * n)
    n_train = n - n_test
    if n_test < n_langs or n_train < n_langs:
        yield (
            f"{_key(cfg, 'probes.test_size')} = {cfg.probes.test_size} splits the run's {n} contexts into "
            f"{n_train} for training and {n_test} for testing; each side needs at least one context of each of "
            f"the {n_langs} languages"
        )
        return
    cap = cfg.probes.max_train
    if cap and n_train > cap and (cap < n_langs or n_train - cap < n_langs):
        yield (
            f"{_key(cfg, 'probes.max_train')} = {cap} cannot sample the {n_train} training contexts by language "
            f"({n_langs} languages): use 0 (no cap), at least {n_langs}, or at most {n_train - n_langs}"
        )


def _model_problems(cfg: RunConfig, shape: ModelShape):
    layers = cfg.extract.layers
    missing = [layer for layer in layers if layer >= shape.n_layers]
    if missing:
        listed = ", ".join(map(str, missing[:10])) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        yield (
            f"{_key(cfg, 'extract.layers')}: layer{'s' if len(missing) > 1 else ''} {listed} "
            f"{'do' if len(missing) > 1 else 'does'} not exist: {shape.label} has {shape.n_layers} MLP layers "
            f"(0-{shape.n_layers - 1})"
        )
        return
    if shape.units is None:
        return
    hooked = [shape.units[i] for i in (layers or range(shape.n_layers))]
    total = sum(hooked)
    if cfg.experts.top_k >= total:
        where = f"layers {', '.join(map(str, layers))}" if layers else "all layers"
        yield (
            f"{_key(cfg, 'experts.top_k')} = {cfg.experts.top_k} is not below the {total} MLP units it ranks "
            f"({where} of {shape.label}): every unit would be an expert and every overlap 1.0; "
            f"use a top_k below {total}"
        )


def check_finite(
    tensors: dict[str, torch.Tensor],
    label: str,
    layer_offsets: list[int] | None = None,
    layer_ids: list[int] | None = None,
) -> None:
    """Refuse a checkpoint whose pooled activations hold NaN or infinity, naming it and where.

    ``tensors`` maps a description to a (contexts, units) or (..., layers, contexts, d) tensor; ``layer_offsets``
    (the column range of each hooked layer) and ``layer_ids`` (their block indices) let a message name the MLP
    layer. Checked a slice at a time, so a memory-mapped tensor is never copied whole.
    """
    for what, tensor in tensors.items():
        if tensor.ndim >= 3:  # (..., layers, contexts, d)
            slices = [(f"residual layer {i}", tensor[..., i, :, :]) for i in range(tensor.shape[-3])]
        elif layer_offsets and len(layer_offsets) > 1:
            ids = layer_ids or list(range(len(layer_offsets) - 1))
            slices = [(f"MLP layer {ids[i]}", tensor[:, a:b]) for i, (a, b) in enumerate(pairwise(layer_offsets))]
        else:
            slices = [("", tensor)]
        for where, part in slices:
            if part.numel() and not bool(torch.isfinite(part).all()):
                at = f", {where}" if where else ""
                raise NonFiniteActivationsError(
                    f"{label}: its activations hold NaN or infinite values ({what}{at}); the checkpoint's weights "
                    "are probably corrupt (check or re-download it, or leave it out of the run)"
                )
