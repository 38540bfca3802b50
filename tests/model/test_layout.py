"""precompute.model.layout: one layout per loaded checkpoint (the hooked sites, their unit axis, the widths) and
`mlp_hooks`, the one way to hook the MLPs.

The layout must say exactly what `find_mlp_sites` finds, for every architecture of tests/support/tiny_models.py, with
or without ``[extract] layers``; the hooks must see (batch, tokens, units), change the model only when asked to,
and leave no hook behind, even when a hook raises.
"""

from __future__ import annotations

import dataclasses
import re

import polars as pl
import pytest
import torch
from torch import nn

from precompute.analysis.units import UnitAxis
from precompute.model import ModelLayout, find_mlp_sites, load_checkpoint, mlp_hooks
from tests.support.tiny_models import HIDDEN, N_LAYERS, TINY_ARCHS, intermediate_size, tiny_config

VOCAB = 64
IDS = torch.tensor([[5, 9, 17, 3, 22], [7, 7, 40, 1, 2]])  # (batch 2, tokens 5)
GATED = ("llama", "mistral", "qwen2", "olmo", "olmo2")


def _model(arch: str) -> nn.Module:
    """A tiny random ``arch`` in memory (no tokenizer, nothing saved)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(arch, vocab_size=VOCAB)).eval()


def _hook_counts(layout: ModelLayout) -> list[tuple[int, int]]:
    """(pre-hooks on the down projection, forward hooks on the gate) of every site."""
    return [
        (len(s.module._forward_pre_hooks), len(s.gate._forward_hooks) if s.gate is not None else 0)
        for s in layout.sites
    ]


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {arch: _model(arch) for arch in TINY_ARCHS}


# ---- the layout ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_layout_is_what_find_mlp_sites_finds(arch, models):
    model = models[arch]
    layout = ModelLayout.of(model)
    found = find_mlp_sites(model)
    width = intermediate_size(arch)
    assert [(s.layer, s.path, s.n_neurons) for s in layout.sites] == [(s.layer, s.path, s.n_neurons) for s in found]
    assert all(a.module is b.module and a.gate is b.gate for a, b in zip(layout.sites, found))
    assert (layout.n_blocks, layout.hidden_size) == (N_LAYERS, HIDDEN)
    assert layout.units == UnitAxis(tuple(range(N_LAYERS)), tuple(range(0, (N_LAYERS + 1) * width, width)))
    for site in found:
        assert layout.site(site.layer).module is site.module
    assert (arch in GATED) == all(s.gate is not None for s in layout.sites)


def test_a_subset_of_layers_hooks_only_those_blocks(models):
    model = models["llama"]
    layout = ModelLayout.of(model, [1])
    width = intermediate_size("llama")
    assert [s.layer for s in layout.sites] == [1]
    assert layout.units.layer_ids == (1,) and layout.units.offsets == (0, width)
    assert layout.n_blocks == N_LAYERS  # every block still counts for the residual stream
    assert layout.site(1).path == "model.layers.1.mlp.down_proj"
    with pytest.raises(KeyError, match="layer 0 is not hooked"):
        layout.site(0)
    assert [s.layer for s in ModelLayout.of(model, [1, 0, 1]).sites] == [0, 1]  # block order, once each


def test_an_unknown_layer_is_refused_naming_it(models):
    message = f"layers [5, 7] do not exist (model has {N_LAYERS} MLP layers)"
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelLayout.of(models["gpt2"], [7, 0, 5])


def test_layer_frame_is_the_table_the_pipeline_wrote(tiny_gpt2_dir):
    """The rows of table ``layers`` as the pipeline built them from the sites and the loaded model's width."""
    loaded = load_checkpoint(str(tiny_gpt2_dir), device="cpu", dtype="float32")
    schema = {"layer": pl.Int32, "n_neurons": pl.Int32, "hidden_size": pl.Int32, "module_path": pl.Utf8}
    for layers in ([], [1]):
        sites = [s for s in find_mlp_sites(loaded.model) if not layers or s.layer in set(layers)]
        expected = pl.DataFrame(
            {
                "layer": [s.layer for s in sites],
                "n_neurons": [s.n_neurons for s in sites],
                "hidden_size": [loaded.hidden_size] * len(sites),
                "module_path": [s.path for s in sites],
            },
            schema=schema,
        )
        frame = ModelLayout.of(loaded.model, layers).layer_frame()
        assert dict(frame.schema) == schema
        assert frame.equals(expected), layers
    assert frame["module_path"].to_list() == ["transformer.h.1.mlp.c_proj"]


# ---- the hooks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "opt", "llama"])
def test_hooks_see_batch_tokens_units_and_only_a_returned_tensor_changes_the_model(arch, models):
    model = models[arch]
    layout = ModelLayout.of(model)
    with torch.no_grad():
        plain = model(input_ids=IDS).logits
    seen: dict[str, list] = {"input": [], "gate": []}

    def watch(position, site, acts):
        seen["input"].append((position, site.layer, tuple(acts.shape)))  # returns None: nothing replaced

    def gate(position, site, output):
        seen["gate"].append((position, site.layer, tuple(output.shape)))

    with mlp_hooks(layout, on_input=watch, on_gate=gate), torch.no_grad():
        watched = model(input_ids=IDS).logits
    assert torch.equal(watched, plain)
    width = intermediate_size(arch)
    expected = [(i, i, (2, 5, width)) for i in range(N_LAYERS)]  # OPT flattens tokens; the hooks never see it
    assert seen["input"] == expected
    assert seen["gate"] == (expected if arch in GATED else [])

    def zero_last_layer(position, _site, acts):
        return torch.zeros_like(acts) if position == N_LAYERS - 1 else None

    with mlp_hooks(layout, on_input=zero_last_layer), torch.no_grad():
        replaced = model(input_ids=IDS).logits
    assert not torch.allclose(replaced, plain)
    down = layout.sites[-1].module
    weight = down.weight.detach().clone()
    with torch.no_grad():  # a zero input is a zero weight: the last MLP writes only its bias
        down.weight.zero_()
        try:
            without = model(input_ids=IDS).logits
        finally:
            down.weight.copy_(weight)
    torch.testing.assert_close(replaced, without, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, plain)  # nothing left behind


def test_hooks_are_removed_after_an_exception(models):
    model = models["llama"]
    layout = ModelLayout.of(model)
    before = _hook_counts(layout)
    calls = []

    def fail_in_gate(position, _site, _output):
        calls.append(position)
        raise RuntimeError("a hook that fails")

    with pytest.raises(RuntimeError, match="a hook that fails"), torch.no_grad():
        with mlp_hooks(layout, on_input=lambda *_: None, on_gate=fail_in_gate):
            assert _hook_counts(layout) == [(n + 1, g + 1) for n, g in before]
            model(input_ids=IDS)
    assert calls == [0]
    assert _hook_counts(layout) == before
    with pytest.raises(KeyError), mlp_hooks(layout, on_input=lambda *_: None):
        raise KeyError("raised in the block, not in a hook")
    assert _hook_counts(layout) == before


class _FlatGatedBlock(nn.Module):
    """A gated MLP block that flattens tokens before its MLP (as OPT does with its ungated one)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.gate_proj, self.mlp.up_proj = nn.Linear(8, 16), nn.Linear(8, 16)
        self.mlp.act_fn, self.mlp.down_proj = nn.SiLU(), nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (batch * tokens, 8)
        mlp = self.mlp
        return x + mlp.down_proj(mlp.act_fn(mlp.gate_proj(flat)) * mlp.up_proj(flat)).view_as(x)


class _FlatGatedToy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"num_hidden_layers": 2, "hidden_size": 8, "intermediate_size": 16})()
        self.layers = nn.ModuleList([_FlatGatedBlock(), _FlatGatedBlock()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = block(x)
        return x


def test_a_flattened_gate_output_is_seen_with_its_token_axis():
    torch.manual_seed(0)
    model = _FlatGatedToy()
    layout = ModelLayout.of(model)
    assert all(s.gate_path.endswith("mlp.act_fn") for s in layout.sites)
    x = torch.randn(3, 4, 8)
    got = {}

    def gate(position, site, output):
        got[position] = output.clone()

    with mlp_hooks(layout, on_gate=gate), torch.no_grad():
        model(x)
    assert sorted(got) == [0, 1]
    with torch.no_grad():
        expected = torch.nn.functional.silu(model.layers[0].mlp.gate_proj(x))  # (3, 4, 16)
    assert got[0].shape == (3, 4, 16)
    torch.testing.assert_close(got[0], expected)


def test_a_gate_of_another_width_is_refused():
    model = _FlatGatedToy()
    site = ModelLayout.of(model).sites[0]
    narrow = dataclasses.replace(site, n_neurons=12)  # a site whose units do not match its gate's output
    layout = ModelLayout((narrow,), UnitAxis.from_sizes([0], [12]), hidden_size=8, n_blocks=2)
    calls = []
    with pytest.raises(RuntimeError, match=r"layers\.0\.mlp\.act_fn: output width 16, expected 12"):
        with mlp_hooks(layout, on_gate=lambda *args: calls.append(args)), torch.no_grad():
            model(torch.randn(1, 2, 8))
    assert calls == [] and len(site.gate._forward_hooks) == 0
