"""Where a model's MLP neurons are: one site (the down projection's input) per decoder block, found generically.

A neuron is a unit of the MLP's hidden layer; its activation is the input of the down projection (after the
non-linearity, and after gating in gated MLPs). See :mod:`precompute.model.load` for the table of known families.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


class UnsupportedModelError(Exception):
    """No MLP down projection could be found; the message names the model class and its first block's tree."""


@dataclass
class MLPSite:
    layer: int  # 0-based block index
    path: str  # dotted module path of the down projection, e.g. "transformer.h.3.mlp.c_proj"
    module: nn.Module  # register_forward_pre_hook on it; args[0] is (batch, tokens, n_neurons)
    n_neurons: int
    # Gated MLPs (down(act(gate(x)) * up(x)): Llama, Mistral, Qwen2, OLMo): the module whose forward *output* is
    # act(gate(x)), (batch, tokens, n_neurons): the MLP's activation module where it is a child module, else the
    # gate projection itself (its output is the pre-activation; act(g) > 0 iff g > 0 for SiLU, GELU and ReLU).
    # LAPE's activation event is act(gate) > 0 there (Tang et al., activation.py). None for ungated MLPs.
    gate: nn.Module | None = None
    gate_path: str | None = None


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim")


_INTERMEDIATE_KEYS = ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", "d_ff")


_DOWN_NAMES = {"down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2", "fc_out", "wo", "proj_out", "dense_out"}


_GATE_NAMES = ("gate_proj", "w1", "gate", "wi_0", "fc_gate")


_UP_NAMES = ("up_proj", "w3", "up", "wi_1", "fc_up")


_ACT_NAMES = ("act_fn", "act", "activation_fn", "activation", "act_func")


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
    """Linear/Conv1D modules of a block outside attention mapping ``intermediate`` (or anything but hidden) to
    hidden."""
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
        gate_rel, gate = _find_gate(block, rel, n_in)
        sites.append(
            MLPSite(
                layer=i,
                path=f"{list_path}.{i}.{rel}",
                module=module,
                n_neurons=n_in,
                gate=gate,
                gate_path=f"{list_path}.{i}.{gate_rel}" if gate_rel else None,
            )
        )
    if len(rels) > 1:
        return None, f"blocks disagree on the down projection ({', '.join(sorted(rels))})"
    return sites, None


def _find_gate(block: nn.Module, down_rel: str, n_neurons: int) -> tuple[str | None, nn.Module | None]:
    """The module whose output is act(gate) in a gated MLP, as (relative path, module); (None, None) if ungated.

    Gated means: next to the down projection sit a gate and an up projection (named as in ``_GATE_NAMES`` and
    ``_UP_NAMES``), both mapping to the MLP's ``n_neurons``. The activation module (``act_fn`` ...) is preferred,
    so that the hook sees act(gate) itself; without one, the gate projection (pre-activation) is returned.
    """
    parent_rel = down_rel.rsplit(".", 1)[0] if "." in down_rel else ""
    parent = block.get_submodule(parent_rel) if parent_rel else block
    children = dict(parent.named_children())

    def widens(name: str) -> bool:
        io = _io_features(children[name]) if name in children else None
        return io is not None and io[1] == n_neurons

    gate_name = next((n for n in _GATE_NAMES if widens(n)), None)
    if gate_name is None or not any(widens(n) for n in _UP_NAMES if n != gate_name):
        return None, None
    act_name = next((n for n in _ACT_NAMES if isinstance(children.get(n), nn.Module)), None)
    name = act_name or gate_name
    return (f"{parent_rel}.{name}" if parent_rel else name), children[name]


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
    proj._crossling_token_state = state


def token_shape(site: MLPSite) -> tuple[int, ...] | None:
    """The leading shape, (batch, tokens), of the input of ``site``'s block in the forward pass now running.

    Recorded by the block pre-hook that `find_mlp_sites` installs, so that a hook on a module inside the block
    (the gate of a gated MLP) can view a flattened ``(batch * tokens, n)`` tensor as ``(batch, tokens, n)``.
    None where the block's input has no token axis, or outside a forward pass of a found site's model.
    """
    state = getattr(site.module, "_crossling_token_state", None)
    return state.get("lead") if isinstance(state, dict) else None


def _disable_sliced_bloom_mlp(model: nn.Module) -> None:
    """BLOOM with ``pretraining_tp > 1`` and ``slow_but_exact`` calls F.linear on slices of dense_4h_to_h's
    weight, bypassing the module (and so any hook). Switch those MLPs to the ordinary call (same maths, another
    summation order) so the hooks fire."""
    for _, module in model.named_modules():
        if getattr(module, "slow_but_exact", False) and getattr(module, "pretraining_tp", 1) > 1:
            module.slow_but_exact = False
            log.info("BLOOM MLP: slow_but_exact disabled so the dense_4h_to_h hook fires")
