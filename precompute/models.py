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
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from precompute.hub import exception_chain, hub_offline

log = logging.getLogger(__name__)

__all__ = [
    "ModelLoadError",
    "UnsupportedModelError",
    "DeviceError",
    "MLPSite",
    "LoadedModel",
    "resolve_device",
    "resolve_dtype",
    "load_checkpoint",
    "find_mlp_sites",
    "count_parameters",
    "module_tree",
]


class ModelLoadError(Exception):
    """A checkpoint could not be loaded; the message is one line naming the model (and revision)."""


class UnsupportedModelError(Exception):
    """No MLP down projection could be found; the message names the model class and its first block's tree."""


class DeviceError(ModelLoadError, ValueError):
    """A requested device (or dtype) is not available on this machine."""


@dataclass
class MLPSite:
    layer: int  # 0-based block index
    path: str  # dotted module path of the down projection, e.g. "transformer.h.3.mlp.c_proj"
    module: nn.Module  # register_forward_pre_hook on it; args[0] is (batch, tokens, n_neurons)
    n_neurons: int


@dataclass
class LoadedModel:
    model: "PreTrainedModel"  # noqa: F821  (eval mode, on device, requires_grad False)
    tokenizer: "PreTrainedTokenizerBase"  # noqa: F821  (fast tokenizer; pad token set)
    device: torch.device
    dtype: torch.dtype
    n_layers: int
    hidden_size: int


# --------------------------------------------------------------------------------------------------------------
# device and dtype


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


# --------------------------------------------------------------------------------------------------------------
# loading

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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


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
        raise ModelLoadError(f"{label}: weights file {file.name} is truncated or corrupt ({_first_line(exc)})") from None


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

    def fail(exc: BaseException, what: str) -> ModelLoadError:
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
                f"{label}: config.json names no model type known to this transformers "
                f"({_installed('transformers')})"
            ) from None
        raise fail(exc, "cannot read config.json") from None
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
        raise fail(exc, "cannot load the weights") from None
    missing = list(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing:
        shown = ", ".join(sorted(missing)[:3]) + (", ..." if len(missing) > 3 else "")
        raise ModelLoadError(
            f"{label}: weights do not cover the model ({len(missing)} tensors missing: {shown}); "
            "they would be random"
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
        raise fail(exc, f"cannot load the tokenizer from {tok_label}") from None
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


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# --------------------------------------------------------------------------------------------------------------
# MLP sites

_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
_INTERMEDIATE_KEYS = ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", "d_ff")
_DOWN_NAMES = {"down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2", "fc_out", "wo", "proj_out", "dense_out"}
_MLP_PARENTS = {"mlp", "ffn", "feed_forward", "feedforward", "ff", "ffw", "fc", "mlp_block"}


def _text_config(config):
    getter = getattr(config, "get_text_config", None)
    if getter is not None:
        try:
            return getter()
        except TypeError:  # pragma: no cover
            pass
    return config


def _config_value(config, keys) -> int | None:
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _io_features(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) widths of a Linear or a GPT-2 style Conv1D, else None."""
    if isinstance(module, nn.Linear):
        return int(module.in_features), int(module.out_features)
    nx, nf = getattr(module, "nx", None), getattr(module, "nf", None)
    if type(module).__name__ == "Conv1D" and isinstance(nx, int) and isinstance(nf, int):
        return nx, nf
    return None


def _in_attention(rel_path: str) -> bool:
    return any("attn" in part or "attention" in part for part in rel_path.lower().split("."))


def _name_score(rel_path: str) -> int:
    parts = rel_path.lower().split(".")
    return 2 * any(p in _MLP_PARENTS for p in parts[:-1]) + (parts[-1] in _DOWN_NAMES)


def _block_candidates(block: nn.Module, hidden: int, intermediate: int | None):
    """Linear/Conv1D modules of a block outside attention mapping ``intermediate`` (or anything but hidden) -> hidden."""
    out = []
    for rel, module in block.named_modules():
        io = _io_features(module)
        if io is None or rel == "" or _in_attention(rel):
            continue
        n_in, n_out = io
        if n_out != hidden:
            continue
        if (intermediate is not None and n_in == intermediate) or (intermediate is None and n_in != hidden):
            out.append((rel, module, n_in))
    return out


def _pick(cands):
    """The one candidate, or the unique best by name; None when there is none or a tie."""
    if len(cands) == 1:
        return cands[0]
    if not cands:
        return None
    scored = sorted(cands, key=lambda c: _name_score(c[0]), reverse=True)
    if _name_score(scored[0][0]) > _name_score(scored[1][0]):
        return scored[0]
    return None


def module_tree(module: nn.Module, max_depth: int = 3, max_lines: int = 40) -> str:
    """A compact, indented module tree (Linear/Conv1D with their in -> out widths)."""
    lines: list[str] = []

    def describe(m: nn.Module) -> str:
        io = _io_features(m)
        name = type(m).__name__
        if io is not None:
            return f"{name}({io[0]} -> {io[1]})"
        if isinstance(m, nn.ModuleList):
            return f"ModuleList[{len(m)}]"
        return name

    def walk(m: nn.Module, name: str, depth: int) -> None:
        if len(lines) >= max_lines:
            return
        lines.append("  " * depth + (f"{name}: " if name else "") + describe(m))
        if depth >= max_depth:
            return
        children = list(m.named_children())
        if isinstance(m, nn.ModuleList) and len(children) > 1:
            children = children[:1]  # the first of identical blocks is enough
        for child_name, child in children:
            walk(child, child_name, depth + 1)

    walk(module, "", 0)
    if len(lines) >= max_lines:
        lines.append("  ...")
    return "\n".join(lines)


def find_mlp_sites(model: nn.Module) -> list[MLPSite]:
    """One `MLPSite` per decoder block: the MLP down projection, whose input is the layer's neuron activations."""
    cls = type(model).__name__
    config = _text_config(getattr(model, "config", None))
    n_layers = _config_value(config, _LAYER_KEYS) if config is not None else None
    hidden = _config_value(config, _HIDDEN_KEYS) if config is not None else None
    intermediate = _config_value(config, _INTERMEDIATE_KEYS) if config is not None else None

    lists = [
        (path, ml)
        for path, ml in model.named_modules()
        if isinstance(ml, nn.ModuleList) and len(ml) > 0 and (n_layers is None or len(ml) == n_layers)
    ]
    if not lists:
        expected = f"{n_layers} blocks" if n_layers else "decoder blocks"
        raise UnsupportedModelError(
            f"{cls}: no ModuleList of {expected} found; crossling cannot locate its MLP neurons.\n"
            f"Module tree:\n{module_tree(model, max_depth=2)}"
        )

    results: list[tuple[str, list[MLPSite]]] = []
    first_failure: tuple[str, nn.Module, str] | None = None
    for list_path, blocks in lists:
        sites, problem = _sites_in(list_path, blocks, hidden, intermediate)
        if problem is None:
            results.append((list_path, sites))
        elif first_failure is None:
            first_failure = (list_path, blocks[0], problem)
    if len(results) > 1:  # e.g. an encoder and a decoder stack: prefer the decoder
        decoders = [r for r in results if "decoder" in r[0].lower()]
        results = decoders if len(decoders) == 1 else results
    if len(results) == 1:
        list_path, sites = results[0]
        _disable_sliced_bloom_mlp(model)
        blocks = model.get_submodule(list_path)
        for site in sites:
            _keep_token_axis(blocks[site.layer], site.module)
        return sites
    if len(results) > 1:
        raise UnsupportedModelError(
            f"{cls}: several block lists have an MLP down projection ({', '.join(r[0] for r in results)}); "
            "crossling cannot tell which one is the decoder."
        )
    list_path, block, problem = first_failure
    raise UnsupportedModelError(
        f"{cls}: cannot find the MLP down projection in {list_path}.0 ({problem}); crossling hooks the input of "
        "the module mapping intermediate -> hidden size (e.g. mlp.down_proj, mlp.c_proj, dense_4h_to_h, fc2).\n"
        f"First block ({list_path}.0):\n{module_tree(block)}"
    )


def _sites_in(list_path: str, blocks: nn.ModuleList, hidden: int | None, intermediate: int | None):
    """Sites for every block of one ModuleList, or (None, reason)."""
    if hidden is None:
        return None, "the config names no hidden size"
    sites: list[MLPSite] = []
    rels: set[str] = set()
    for i, block in enumerate(blocks):
        cands = _block_candidates(block, hidden, intermediate)
        if not cands and intermediate is not None:
            # The config's intermediate size may not be this MLP's width (e.g. a fused variant): infer it.
            cands = _block_candidates(block, hidden, None)
        chosen = _pick(cands)
        if chosen is None:
            width = f"{intermediate} -> {hidden}" if intermediate else f"? -> {hidden}"
            if not cands:
                return None, f"no Linear/Conv1D outside attention maps {width}"
            names = ", ".join(c[0] for c in cands[:6])
            return None, f"{len(cands)} candidates map to the hidden size and names do not decide: {names}"
        rel, module, n_in = chosen
        rels.add(rel)
        sites.append(MLPSite(layer=i, path=f"{list_path}.{i}.{rel}", module=module, n_neurons=n_in))
    if len(rels) > 1:
        return None, f"blocks disagree on the down projection ({', '.join(sorted(rels))})"
    return sites, None


def _keep_token_axis(block: nn.Module, proj: nn.Module) -> None:
    """Make the down projection's input ``(batch, tokens, n)`` even where the block flattens it (OPT reshapes
    the residual stream to ``(batch * tokens, hidden)`` before its MLP).

    A pre-hook on the block records its input's leading shape; a pre-hook on the projection, registered first
    (``prepend``), views a flattened ``(batch * tokens, n)`` input as ``(batch, tokens, n)``, and a forward hook
    flattens the output back, so the model computes exactly what it did. Hooks registered later (without
    ``prepend``) see the 3-D tensor. Idempotent: `find_mlp_sites` may be called many times.
    """
    if getattr(proj, "_crossling_token_axis", False):
        return
    state: dict[str, object] = {}

    def record(_module, args, kwargs):
        hidden = next((a for a in args if isinstance(a, torch.Tensor)), kwargs.get("hidden_states"))
        state["lead"] = tuple(hidden.shape[:-1]) if isinstance(hidden, torch.Tensor) and hidden.dim() >= 3 else None

    def unflatten(_module, args):
        lead = state.get("lead")
        state["flat"] = False
        if not args or lead is None:
            return None
        x = args[0]
        if isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[0] == math.prod(lead):
            state["flat"] = True
            return (x.view(*lead, x.shape[-1]), *args[1:])
        return None

    def flatten(_module, _args, output):
        if state.pop("flat", False) and isinstance(output, torch.Tensor):
            return output.reshape(-1, output.shape[-1])
        return None

    block.register_forward_pre_hook(record, with_kwargs=True)
    proj.register_forward_pre_hook(unflatten, prepend=True)
    proj.register_forward_hook(flatten, prepend=True)
    proj._crossling_token_axis = True


def _disable_sliced_bloom_mlp(model: nn.Module) -> None:
    """BLOOM with ``pretraining_tp > 1`` and ``slow_but_exact`` calls F.linear on slices of dense_4h_to_h's
    weight, bypassing the module (and so any hook). Switch those MLPs to the ordinary call (same maths, another
    summation order) so the hooks fire."""
    for _, module in model.named_modules():
        if getattr(module, "slow_but_exact", False) and getattr(module, "pretraining_tp", 1) > 1:
            module.slow_but_exact = False
            log.info("BLOOM MLP: slow_but_exact disabled so the dense_4h_to_h hook fires")
