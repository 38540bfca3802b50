"""Load any causal LM checkpoint through one code path, and find its MLP neurons.

Loading
-------
`load_checkpoint(source, revision)` is the only way crossling loads a model. ``source`` is either an existing
local directory (a `save_pretrained` layout: ``config.json``, weights, tokenizer files; ``revision`` is then
ignored) or a hub id, loaded at ``revision`` (a branch such as ``global_step1000``, a tag or a commit), through
``AutoConfig`` / ``AutoModelForCausalLM`` / ``AutoTokenizer``. ``trust_remote_code`` is never enabled: a checkpoint
is data, not code. Every failure (no such directory, no config, missing or truncated weights, weights that do not
cover the model, no usable tokenizer, offline and not cached, unknown revision, gated or missing repository)
becomes one `ModelLoadError` line that names the model and revision, e.g.
``bigscience/bloom-560m-intermediate@global_step1000: cannot be loaded (offline and not in the local cache)``.

Offline mode: ``local_files_only=None`` follows ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` as set *at call
time* (huggingface_hub reads them only at import), so an offline run fails at once instead of retrying the network.

The returned model is in eval mode, has gradients disabled, and sits on the resolved device in the resolved dtype
(``auto``: bfloat16 on a CUDA card that supports it, else float16 on CUDA; float32 on CPU and MPS). The tokenizer
is a fast (Rust) tokenizer, since extraction needs offset mappings; if it has no pad token (GPT-2, Pythia, ...),
or its pad id lies outside the model's embedding matrix, the pad token becomes EOS (then BOS, UNK, or the token of
id 0). Padding positions are always masked out, so which id pads does not change any result. Padding side is
set to ``right``.

MLP neurons
-----------
crossling's neuron is a unit of the MLP's hidden layer, and its activation is the *input of the MLP's down
projection* (the module mapping intermediate size -> hidden size): the value after the non-linearity, and after
gating in gated MLPs (``act(gate_proj(x)) * up_proj(x)`` in Llama/Mistral/Qwen/OLMo). Known instances:

=====================  ================================  ======================
family                 down projection (per block)        module type
=====================  ================================  ======================
GPT-2                  ``transformer.h.N.mlp.c_proj``     ``Conv1D`` (nx -> nf)
BLOOM                  ``transformer.h.N.mlp.dense_4h_to_h``  ``Linear``
GPT-NeoX / Pythia      ``gpt_neox.layers.N.mlp.dense_4h_to_h`` ``Linear``
Llama-style (gated)    ``model.layers.N.mlp.down_proj``   ``Linear``
XGLM                   ``model.layers.N.fc2``             ``Linear``
OPT                    ``model.decoder.layers.N.fc2``     ``Linear``
=====================  ================================  ======================

`find_mlp_sites` finds them without a per-checkpoint table: it locates the ``ModuleList`` of decoder blocks (its
length is the config's layer count), and in each block the single ``Linear``/``Conv1D`` outside attention whose
input width is the config's intermediate size (``intermediate_size``, ``n_inner``, ``ffn_dim``, ...; inferred
from the block when the config has none, as in BLOOM) and whose output width is the hidden size. Names only break
ties (``down_proj``, ``c_proj``, ``dense_4h_to_h``, ``fc2``, ``w2`` under ``mlp``/``ffn``/``feed_forward``). If no
such module exists, or several remain (mixture-of-experts), it raises `UnsupportedModelError` naming the model
class and printing the first block's module tree. Hook a site with ``site.module.register_forward_pre_hook``;
``args[0]`` is ``(batch, tokens, n_neurons)``. That holds for OPT too, whose layers flatten the tokens to
``(batch * tokens, hidden)`` before the MLP: `find_mlp_sites` installs (once per module) shape-restoring hooks that
give later hooks the 3-D view, so register yours without ``prepend=True``. For BLOOM checkpoints configured with
``pretraining_tp > 1`` and ``slow_but_exact``, whose MLP bypasses ``dense_4h_to_h`` as a module, it switches
``slow_but_exact`` off (same maths, another summation order) so the hook fires.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from precompute.checkpoints.hub import exception_chain, hub_offline
from precompute.model.sites import (
    _HIDDEN_KEYS,
    _LAYER_KEYS,
    _config_value,
    _text_config,
)
from precompute.text import first_line as _first_line

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A checkpoint could not be loaded; the message is one line naming the model (and revision)."""


class DeviceError(ModelLoadError, ValueError):
    """A requested device (or dtype) is not available on this machine."""


@dataclass
class LoadedModel:
    model: PreTrainedModel  # noqa: F821  (eval mode, on device, requires_grad False)
    tokenizer: PreTrainedTokenizerBase  # noqa: F821  (fast tokenizer; pad token set)
    device: torch.device
    dtype: torch.dtype
    n_layers: int
    hidden_size: int


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then CPU. An explicit device that this machine lacks raises `DeviceError`."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
            raise DeviceError(f"device {name!r} requested but no CUDA device is available ({build})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        return device
    if device.type == "mps":
        if not _mps_available():
            raise DeviceError(f"device {name!r} requested but Apple MPS is not available on this machine")
        return device
    raise DeviceError(f"unsupported device {name!r} (use auto, cpu, cuda, cuda:N or mps)")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA if the card supports it, else float16 on CUDA; float32 on CPU and MPS."""
    name = (name or "auto").strip().lower().removeprefix("torch.")
    device = torch.device(device)
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in _DTYPES:
        raise DeviceError(f"unknown dtype {name!r} (use auto, float32, float16 or bfloat16)")
    dtype = _DTYPES[name]
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"dtype bfloat16 requested but {torch.cuda.get_device_name(device)} does not support it")
    return dtype


_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.txt",
    "tekken.json",
)


def _looks_like_path(source: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else (absolute, ./, ~, deeper, backslashes) is a path."""
    if source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1:
        return True
    return not re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", source)


def _hub_reason(exc: BaseException, revision: str | None, offline: bool) -> str | None:
    """Translate a hub/transformers failure into a short reason, or None when it is not a hub problem."""
    names = {type(e).__name__ for e in exception_chain(exc)}
    text = " ".join(str(e) for e in exception_chain(exc)).lower()
    if "RevisionNotFoundError" in names or "is not a valid git identifier" in text or "invalid rev id" in text:
        return f"unknown revision {revision!r} (no such branch, tag or commit on the hub)"
    if "GatedRepoError" in names or "gated repo" in text:
        return "gated repository (accept its terms on the hub, then log in with `hf auth login`)"
    if "RepositoryNotFoundError" in names or "is not a local folder and is not a valid model identifier" in text:
        return "no such model on the hub (or it is private: log in with `hf auth login`), and no such local directory"
    if (
        offline
        or "OfflineModeIsEnabled" in names
        or "LocalEntryNotFoundError" in names
        or "couldn't connect" in text
        or "offline mode" in text
    ):
        if offline:
            return "cannot be loaded (offline and not in the local cache)"
        return "cannot be loaded (hub unreachable and not in the local cache)"
    if "EntryNotFoundError" in names or "does not appear to have a file named" in text:
        return f"the repository has no such file ({_first_line(exc)})"
    return None


def _check_local_dir(path: Path, label: str) -> None:
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{label}: no config.json (not a transformers checkpoint directory)")
    present = [name for name in _WEIGHT_FILES if (path / name).is_file()]
    if not present:
        raise ModelLoadError(f"{label}: no weights file ({' or '.join(_WEIGHT_FILES[::2])})")
    if "model.safetensors" in present:
        shards = ["model.safetensors"]
    elif "model.safetensors.index.json" in present:
        try:
            index = json.loads((path / "model.safetensors.index.json").read_text())
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ModelLoadError(f"{label}: model.safetensors.index.json is unreadable ({_first_line(exc)})") from None
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise ModelLoadError(f"{label}: weights shard {missing[0]} listed in the index is missing")
    else:
        shards = []
    for shard in shards:
        _check_safetensors(path / shard, label)


def _check_safetensors(file: Path, label: str) -> None:
    """Open the header (cheap: no tensor is read) so a truncated download is named precisely."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            handle.keys()
    except Exception as exc:
        raise ModelLoadError(
            f"{label}: weights file {file.name} is truncated or corrupt ({_first_line(exc)})"
        ) from None


def _has_tokenizer_files(path: Path) -> bool:
    return any((path / name).is_file() for name in _TOKENIZER_FILES)


def _dtype_kwarg() -> str:
    """transformers >= 4.56 takes ``dtype=``; older versions only ``torch_dtype=``."""
    import transformers

    major, minor = (int(p) for p in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_checkpoint(
    source: str,
    revision: str | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    local_files_only: bool | None = None,
    tokenizer: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a local directory or a hub id at ``revision``.

    ``tokenizer`` optionally names another directory or hub id to take the tokenizer from (for checkpoint
    directories saved without one; a hub id is read at its default branch); by default the tokenizer comes from
    ``source`` at the same revision.
    Raises `ModelLoadError` (one line naming ``source@revision``) on any failure, and `DeviceError` (a
    ModelLoadError) for an unavailable device or dtype.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = str(source)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)

    local = Path(source).expanduser()
    is_local = local.is_dir()
    if is_local:
        label = source
        revision_kw: dict = {}
        _check_local_dir(local, label)
        if revision:
            log.info("%s is a local directory: revision %r ignored", source, revision)
        offline = True
        where = str(local)
    else:
        label = f"{source}@{revision}" if revision else source
        if local.exists():
            raise ModelLoadError(f"{label}: is a file, not a checkpoint directory")
        parent = local.parent
        if _looks_like_path(source) or (str(parent) not in ("", ".") and parent.is_dir()):
            raise ModelLoadError(f"{label}: no such directory")
        offline = hub_offline() if local_files_only is None else bool(local_files_only)
        revision_kw = {"revision": revision} if revision else {}
        where = source
    common = dict(trust_remote_code=False, local_files_only=offline, **revision_kw)

    def load_error(exc: BaseException, what: str) -> ModelLoadError:
        reason = None if is_local else _hub_reason(exc, revision, offline)
        return ModelLoadError(f"{label}: {reason or f'{what} ({type(exc).__name__}: {_first_line(exc)})'}")

    # 1. config: the architecture, without touching weights.
    try:
        config = AutoConfig.from_pretrained(where, **common)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        text = str(exc)
        if "trust_remote_code" in text or "custom code" in text:
            raise ModelLoadError(
                f"{label}: the checkpoint needs custom code (trust_remote_code), which crossling never runs"
            ) from None
        if "model_type" in text or "Unrecognized model" in text:
            raise ModelLoadError(
                f"{label}: config.json names no model type known to this transformers ({_installed('transformers')})"
            ) from None
        raise load_error(exc, "cannot read config.json") from None
    if type(config) not in AutoModelForCausalLM._model_mapping:
        raise ModelLoadError(f"{label}: model type {config.model_type!r} has no causal-LM head in transformers")

    # 2. weights.
    kwargs = {_dtype_kwarg(): torch_dtype}
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            where, config=config, output_loading_info=True, **kwargs, **common
        )
    except Exception as exc:  # noqa: BLE001
        names = {type(e).__name__ for e in exception_chain(exc)}
        if "SafetensorError" in names or "HeaderTooLarge" in str(exc):
            raise ModelLoadError(f"{label}: weights file is truncated or corrupt ({_first_line(exc)})") from None
        if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
            raise ModelLoadError(f"{label}: out of memory while loading in {_dtype_name(torch_dtype)}") from None
        raise load_error(exc, "cannot load the weights") from None
    missing = list(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing:
        shown = ", ".join(sorted(missing)[:3]) + (", ..." if len(missing) > 3 else "")
        raise ModelLoadError(
            f"{label}: weights do not cover the model ({len(missing)} tensors missing: {shown}); they would be random"
        )
    if mismatched:
        raise ModelLoadError(f"{label}: {len(mismatched)} weight tensors have the wrong shape ({mismatched[0]})")

    # 3. tokenizer (fast, for offset mappings).
    tok_where, tok_common, tok_label = where, common, label
    if tokenizer is not None:
        tok_path = Path(tokenizer).expanduser()
        tok_label = tokenizer
        if tok_path.is_dir():
            tok_where, tok_common = str(tok_path), dict(trust_remote_code=False, local_files_only=True)
        else:
            tok_where = tokenizer
            tok_offline = hub_offline() if local_files_only is None else bool(local_files_only)
            tok_common = dict(trust_remote_code=False, local_files_only=tok_offline)
    elif is_local and not _has_tokenizer_files(local):
        raise ModelLoadError(
            f"{label}: no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}, ...); "
            "save the tokenizer into the checkpoint directory"
        )
    try:
        tok = AutoTokenizer.from_pretrained(tok_where, **tok_common)
    except Exception as exc:  # noqa: BLE001
        raise load_error(exc, f"cannot load the tokenizer from {tok_label}") from None
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(
            f"{label}: tokenizer {type(tok).__name__} is not a fast tokenizer (offset mappings are needed)"
        )
    try:
        probe = tok("hello world", add_special_tokens=False)["input_ids"]
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{label}: tokenizer does not work ({_first_line(exc)})") from None
    if len(tok) < 2 or not probe:
        raise ModelLoadError(f"{label}: the tokenizer is empty (no vocabulary found)")
    n_embeddings = model.get_input_embeddings().weight.shape[0]
    _set_pad_token(tok, n_embeddings)
    tok.padding_side = "right"

    # 4. device, eval mode, no gradients.
    model.eval()
    model.requires_grad_(False)
    try:
        model.to(torch_device)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{label}: cannot move the model to {torch_device} ({_first_line(exc)})") from None

    text_config = _text_config(model.config)
    return LoadedModel(
        model=model,
        tokenizer=tok,
        device=torch_device,
        dtype=torch_dtype,
        n_layers=int(_config_value(text_config, _LAYER_KEYS)),
        hidden_size=int(_config_value(text_config, _HIDDEN_KEYS)),
    )


def _set_pad_token(tok, n_embeddings: int) -> None:
    """Pad with the tokenizer's pad token when it is a real row of the embedding matrix, else EOS/BOS/UNK/id 0."""
    pad_id = tok.pad_token_id
    if pad_id is not None and 0 <= pad_id < n_embeddings:
        return
    for name in ("eos_token", "bos_token", "unk_token"):
        token = getattr(tok, name, None)
        token_id = tok.convert_tokens_to_ids(token) if token is not None else None
        if token_id is not None and 0 <= token_id < n_embeddings:
            tok.pad_token = token
            return
    tok.pad_token = tok.convert_ids_to_tokens(0)


def _installed(package: str) -> str:
    from importlib.metadata import version

    try:
        return f"{package} {version(package)}"
    except Exception:  # pragma: no cover
        return package


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
