"""The MLP layout of one loaded checkpoint, found once, and the one way to hook its MLPs.

`find_mlp_sites` walks the model's module tree to find each block's MLP down projection (and gate); a run needs
the result in several places (extraction, the peak-token pass, steering, the shape checks, the ``layers`` table),
each with the same ``[extract] layers`` filter. `ModelLayout.of` does that once per loaded checkpoint: the hooked
sites in block order, their concatenated unit axis (`precompute.analysis.units.UnitAxis`) and the model's widths.
`mlp_hooks` registers the hooks every consumer needs on those sites (the down projection's input, read or
replaced; the gate's output) and removes them all on exit, so no caller registers a hook by hand.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import polars as pl
import torch
from torch import nn

from precompute.analysis.units import UnitAxis
from precompute.model.sites import _HIDDEN_KEYS, MLPSite, _config_value, _text_config, find_mlp_sites, token_shape

#: ``on_input(position, site, acts)``: ``position`` is the site's index among the hooked sites (its layer's
#: position on the unit axis), ``acts`` the down projection's input, (batch, tokens, n_neurons). A tensor returned
#: replaces the input (same shape); None leaves it as it is.
InputHook = Callable[[int, MLPSite, torch.Tensor], torch.Tensor | None]

#: ``on_gate(position, site, output)``: ``output`` is the gate module's output, act(gate(x)) (or the gate
#: projection's pre-activation where the MLP has no activation module), (batch, tokens, n_neurons).
GateHook = Callable[[int, MLPSite, torch.Tensor], None]


@dataclass(frozen=True)
class ModelLayout:
    """Where one checkpoint's hooked MLP units are, and how wide the model is.

    sites: the hooked sites (all blocks, or those ``[extract] layers`` names), in block order; units: their
    units side by side, the (N,) axis every pooled (contexts, N) tensor has; hidden_size: d, the residual
    stream's width; n_blocks: the model's decoder blocks, hooked or not (the residual stream has n_blocks + 1
    states).
    """

    sites: tuple[MLPSite, ...]
    units: UnitAxis
    hidden_size: int
    n_blocks: int

    @classmethod
    def of(cls, model: nn.Module, layers: Sequence[int] = ()) -> ModelLayout:
        """The layout of ``model`` hooking the blocks ``layers`` (empty: every block).

        Raises ValueError naming the unknown ones where ``layers`` names a block the model lacks, and
        `precompute.model.sites.UnsupportedModelError` where no MLP can be found.
        """
        found = find_mlp_sites(model)
        wanted = {int(layer) for layer in layers}
        if wanted:
            unknown = sorted(wanted - {s.layer for s in found})
            if unknown:
                raise ValueError(f"layers {unknown} do not exist (model has {len(found)} MLP layers)")
        sites = tuple(s for s in found if not wanted or s.layer in wanted)
        hidden = _config_value(_text_config(model.config), _HIDDEN_KEYS)  # found sites imply a stated width
        return cls(
            sites=sites,
            units=UnitAxis.from_sizes([s.layer for s in sites], [s.n_neurons for s in sites]),
            hidden_size=int(hidden),
            n_blocks=len(found),
        )

    def site(self, block: int) -> MLPSite:
        """The hooked site of block ``block`` (the model's block index); KeyError where it is not hooked."""
        return self.sites[self.units.position(block)]

    def layer_frame(self) -> pl.DataFrame:
        """The rows of table ``layers``: one per hooked block (layer, n_neurons, hidden_size, module_path)."""
        return pl.DataFrame(
            {
                "layer": [s.layer for s in self.sites],
                "n_neurons": [s.n_neurons for s in self.sites],
                "hidden_size": [self.hidden_size] * len(self.sites),
                "module_path": [s.path for s in self.sites],
            },
            schema={"layer": pl.Int32, "n_neurons": pl.Int32, "hidden_size": pl.Int32, "module_path": pl.Utf8},
        )


@contextlib.contextmanager
def mlp_hooks(
    layout: ModelLayout, *, on_input: InputHook | None = None, on_gate: GateHook | None = None
) -> Iterator[None]:
    """Within the block, call ``on_input`` on every hooked site's down projection input and ``on_gate`` on every
    gate's output (see `InputHook`, `GateHook`); every hook is removed on exit, also after an exception.

    ``on_input`` is a forward pre-hook on the down projection: what it returns replaces the projection's
    input (steering fixes units so), None keeps it. ``on_gate`` is a forward hook on the gate module of gated
    MLPs (sites without a gate get none). The down projection's input is (batch, tokens, n_neurons) even in
    blocks that flatten tokens (`find_mlp_sites` restores the token axis there); a gate's output flattened to
    (batch * tokens, n_neurons) so is viewed back as (batch, tokens, n_neurons) here, from the shape of its
    block's input. A gate output of another width than the site's units raises RuntimeError (a gate that is
    not the MLP's: its units would be counted against the wrong columns).
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for position, site in enumerate(layout.sites):
            if on_input is not None:
                handles.append(site.module.register_forward_pre_hook(_input_hook(on_input, position, site)))
            if on_gate is not None and site.gate is not None:
                handles.append(site.gate.register_forward_hook(_gate_hook(on_gate, position, site)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _input_hook(on_input: InputHook, position: int, site: MLPSite) -> Callable:
    def hook(_module: nn.Module, args: tuple) -> tuple | None:
        replaced = on_input(position, site, args[0])
        return None if replaced is None else (replaced, *args[1:])

    return hook


def _gate_hook(on_gate: GateHook, position: int, site: MLPSite) -> Callable:
    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        if output.dim() == 2:  # a block that flattens tokens: (batch * tokens, n) back to (batch, tokens, n)
            lead = token_shape(site)
            if lead is None or math.prod(lead) != output.shape[0]:
                raise RuntimeError(f"{site.gate_path}: output of shape {tuple(output.shape)} has no token axis")
            output = output.view(*lead, output.shape[-1])
        if output.shape[-1] != site.n_neurons:
            raise RuntimeError(f"{site.gate_path}: output width {output.shape[-1]}, expected {site.n_neurons}")
        on_gate(position, site, output)

    return hook
