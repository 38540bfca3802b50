"""precompute.model.load: one loading path for every causal LM, and its MLP neurons found without a table.

Each architecture is a tiny random model built from its transformers config, saved with a fast tokenizer to a
local directory (tests/support/tiny_models.py) and loaded through `load_checkpoint`, the same call a hub
checkpoint takes. For each we check that one site per block is found, that the neuron count is layers x
intermediate size, and that the values a forward pre-hook sees equal the MLP's hidden layer recomputed by hand
from the weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from precompute.model import (
    DeviceError,
    LoadedModel,
    ModelLoadError,
    UnsupportedModelError,
    count_parameters,
    find_mlp_sites,
    load_checkpoint,
    resolve_device,
    resolve_dtype,
)
from tests.support.tiny_models import (
    HIDDEN,
    N_LAYERS,
    TINY_ARCHS,
    add_start_token,
    intermediate_size,
    save_tiny_model,
)

SENTENCES = ["El terremoto sacudió la casa vieja.", "地震在星期一摇动了老房子。 Joy!"]


# ---- manual recomputation of each family's MLP hidden layer ---------------------------------------------------
# capture: the block submodule whose *input* we record (the residual stream right before the MLP's norm, or the
# MLP input itself where the norm comes after the MLP); recompute: that input -> the (B, T, n_neurons) neurons.


def _layer_norm(ln: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, ln.eps)


def _rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    return norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _gated(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.silu(F.linear(x, mlp.gate_proj.weight)) * F.linear(x, mlp.up_proj.weight)


def _gpt2(block, h):
    x = _layer_norm(block.ln_2, h)
    return F.gelu(x @ block.mlp.c_fc.weight + block.mlp.c_fc.bias, approximate="tanh")  # Conv1D: x W + b


def _bloom(block, h):
    x = _layer_norm(block.post_attention_layernorm, h)
    return F.gelu(F.linear(x, block.mlp.dense_h_to_4h.weight, block.mlp.dense_h_to_4h.bias), approximate="tanh")


def _neox(block, h):
    x = _layer_norm(block.post_attention_layernorm, h)
    return F.gelu(F.linear(x, block.mlp.dense_h_to_4h.weight, block.mlp.dense_h_to_4h.bias))


def _llama(block, h):
    return _gated(block.mlp, _rms_norm(block.post_attention_layernorm, h))


def _olmo(block, h):  # OLMo-1: non-parametric LayerNorm
    return _gated(block.mlp, F.layer_norm(h, (h.shape[-1],), eps=1e-5))


def _olmo2(block, x):  # OLMo-2 normalises after the MLP: its input is the residual stream itself
    return _gated(block.mlp, x)


def _xglm(block, h):
    return F.gelu(F.linear(_layer_norm(block.final_layer_norm, h), block.fc1.weight, block.fc1.bias))


def _opt(block, h):
    return F.relu(F.linear(_layer_norm(block.final_layer_norm, h), block.fc1.weight, block.fc1.bias))


RECIPES = {
    # arch: (captured submodule of the block, recompute, expected down-projection path suffix)
    "gpt2": ("ln_2", _gpt2, "mlp.c_proj"),
    "bloom": ("post_attention_layernorm", _bloom, "mlp.dense_4h_to_h"),
    "gpt_neox": ("post_attention_layernorm", _neox, "mlp.dense_4h_to_h"),
    "llama": ("post_attention_layernorm", _llama, "mlp.down_proj"),
    "mistral": ("post_attention_layernorm", _llama, "mlp.down_proj"),
    "qwen2": ("post_attention_layernorm", _llama, "mlp.down_proj"),
    "olmo": ("post_attention_layernorm", _olmo, "mlp.down_proj"),
    "olmo2": ("mlp", _olmo2, "mlp.down_proj"),
    "xglm": ("final_layer_norm", _xglm, "fc2"),
    "opt": ("final_layer_norm", _opt, "fc2"),
}
EXPECTED_PREFIX = {
    "gpt2": "transformer.h.",
    "bloom": "transformer.h.",
    "gpt_neox": "gpt_neox.layers.",
    "xglm": "model.layers.",
    "opt": "model.decoder.layers.",
}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: save_tiny_model(arch, root / arch) for arch in TINY_ARCHS}


def test_tiny_models_cover_every_family_the_loader_supports():
    for arch in ("gpt2", "bloom", "gpt_neox", "llama", "mistral", "qwen2", "xglm", "opt"):
        assert arch in TINY_ARCHS


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_sites_and_hooked_values(arch, tiny_dirs):
    loaded = load_checkpoint(str(tiny_dirs[arch]))
    assert isinstance(loaded, LoadedModel)
    model, tok = loaded.model, loaded.tokenizer
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    assert (loaded.n_layers, loaded.hidden_size) == (N_LAYERS, HIDDEN)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tok.is_fast and tok.pad_token is not None
    assert 0 <= tok.pad_token_id < model.get_input_embeddings().weight.shape[0]

    find_mlp_sites(model)  # twice: the shape hooks it installs (for OPT) must not stack up
    sites = find_mlp_sites(model)
    capture_name, recompute, suffix = RECIPES[arch]
    width = intermediate_size(arch)
    assert [s.layer for s in sites] == list(range(N_LAYERS))
    assert all(s.n_neurons == width for s in sites)
    assert sum(s.n_neurons for s in sites) == N_LAYERS * width
    for s in sites:
        assert s.path.endswith(f".{s.layer}.{suffix}"), s.path
        assert s.path.startswith(EXPECTED_PREFIX.get(arch, "model.layers."))
        assert model.get_submodule(s.path) is s.module

    batch = tok(SENTENCES, return_tensors="pt", padding=True, return_offsets_mapping=True)
    assert batch["attention_mask"].sum() < batch["attention_mask"].numel()  # padding really happened
    hooked, captured, handles = {}, {}, []
    for s in sites:
        block = model.get_submodule(s.path.removesuffix("." + suffix))
        handles.append(s.module.register_forward_pre_hook(lambda m, a, i=s.layer: hooked.__setitem__(i, a[0])))
        handles.append(
            block.get_submodule(capture_name).register_forward_pre_hook(
                lambda m, a, i=s.layer: captured.__setitem__(i, a[0])
            )
        )
    try:
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for h in handles:
            h.remove()

    n_batch, n_tokens = batch["input_ids"].shape
    assert sorted(hooked) == list(range(N_LAYERS))
    for s in sites:
        block = model.get_submodule(s.path.removesuffix("." + suffix))
        assert hooked[s.layer].shape == (n_batch, n_tokens, width)
        with torch.no_grad():
            expected = recompute(block, captured[s.layer])
        if arch == "opt":  # OPT flattens tokens before its MLP; the site still hands hooks (batch, tokens, n)
            assert expected.shape == (n_batch * n_tokens, width)
            expected = expected.view(n_batch, n_tokens, width)
        torch.testing.assert_close(hooked[s.layer], expected, atol=1e-5, rtol=1e-4)
        assert hooked[s.layer].std() > 0  # not a degenerate all-equal layer


def test_dtype_override_and_parameter_count(tiny_dirs):
    loaded = load_checkpoint(str(tiny_dirs["gpt2"]), device="cpu", dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    model = loaded.model
    # GPT-2 ties its LM head to the token embedding: counted once.
    assert model.lm_head.weight is model.transformer.wte.weight
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert count_parameters(model) < sum(t.numel() for t in model.state_dict().values())


def test_separate_tokenizer_source(tiny_dirs, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dirs["llama"], bare)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    with pytest.raises(ModelLoadError, match="no tokenizer files"):
        load_checkpoint(str(bare))
    loaded = load_checkpoint(str(bare), tokenizer=str(tiny_dirs["llama"]))
    assert loaded.tokenizer.is_fast


def test_bloom_sliced_mlp_still_hooked():
    """BLOOM with pretraining_tp > 1 and slow_but_exact bypasses dense_4h_to_h; find_mlp_sites switches it back."""
    from transformers import AutoModelForCausalLM, BloomConfig

    config = BloomConfig(vocab_size=50, hidden_size=HIDDEN, n_layer=2, n_head=2, pretraining_tp=2, slow_but_exact=True)
    model = AutoModelForCausalLM.from_config(config).eval()
    sites = find_mlp_sites(model)
    seen = []
    handles = [s.module.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape)) for s in sites]
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    for h in handles:
        h.remove()
    assert seen == [(1, 3, 4 * HIDDEN)] * 2


# ---- unknown architectures -------------------------------------------------------------------------------------


def test_model_without_mlp_names_its_tree():
    from transformers import AutoModelForCausalLM, GPT2Config

    model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=50, n_embd=HIDDEN, n_layer=2, n_head=2))
    for block in model.transformer.h:
        block.mlp = nn.Identity()
    with pytest.raises(UnsupportedModelError) as info:
        find_mlp_sites(model)
    message = str(info.value)
    assert "GPT2LMHeadModel" in message
    assert "transformer.h.0" in message
    assert "mlp: Identity" in message and "c_attn: Conv1D(32 -> 96)" in message


class _Block(nn.Module):
    def __init__(self, extra: str | None = None):
        super().__init__()
        self.attn_out = nn.Linear(8, 8)
        self.up = nn.Linear(8, 16)
        if extra:
            self.add_module(extra, nn.Linear(16, 8))


class _Toy(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.config = type("Cfg", (), {"num_hidden_layers": len(blocks), "hidden_size": 8, "intermediate_size": 16})()
        self.layers = nn.ModuleList(blocks)


def test_plain_module_tree_without_projection():
    with pytest.raises(UnsupportedModelError, match=r"_Toy: cannot find the MLP down projection") as info:
        find_mlp_sites(_Toy([_Block(), _Block()]))
    assert "up: Linear(8 -> 16)" in str(info.value)


def test_no_block_list():
    model = nn.Sequential(nn.Linear(4, 4))
    model.config = type("Cfg", (), {"num_hidden_layers": 3, "hidden_size": 4})()
    with pytest.raises(UnsupportedModelError, match="no ModuleList of 3 blocks"):
        find_mlp_sites(model)


def test_names_break_ties_and_ambiguity_fails():
    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.down_proj = nn.Linear(16, 8)

    def block(with_mlp: bool):
        b = _Block(extra="adapter")
        if with_mlp:
            b.mlp = Mlp()
        return b

    sites = find_mlp_sites(_Toy([block(True), block(True)]))
    assert [s.path for s in sites] == ["layers.0.mlp.down_proj", "layers.1.mlp.down_proj"]

    def twin():
        b = _Block(extra="proj_a")
        b.add_module("proj_b", nn.Linear(16, 8))
        return b

    with pytest.raises(UnsupportedModelError, match="2 candidates.*proj_a, proj_b"):
        find_mlp_sites(_Toy([twin(), twin()]))


# ---- loading errors ---------------------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_directory(tmp_path):
    missing = tmp_path / "ckpts" / "step_000100"
    with pytest.raises(ModelLoadError, match=rf"^{missing}: no such directory$"):
        load_checkpoint(str(missing))


def test_missing_relative_directory_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    (tmp_path / "ckpts").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"^ckpts/step_000100: no such directory$"):
        load_checkpoint("ckpts/step_000100")


def test_truncated_safetensors(tiny_dirs, tmp_path):
    d = _copy(tiny_dirs["gpt2"], tmp_path / "trunc")
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"trunc: weights file model.safetensors is truncated or corrupt") as e:
        load_checkpoint(str(d))
    assert "\n" not in str(e.value)


def test_missing_weights_and_config(tiny_dirs, tmp_path):
    d = _copy(tiny_dirs["gpt2"], tmp_path / "noweights")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="noweights: no weights file"):
        load_checkpoint(str(d))
    d = _copy(tiny_dirs["gpt2"], tmp_path / "noconfig")
    (d / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="noconfig: no config.json"):
        load_checkpoint(str(d))


def test_weights_not_covering_the_model(tiny_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy(tiny_dirs["llama"], tmp_path / "partial")
    tensors = load_file(d / "model.safetensors")
    dropped = "model.layers.1.mlp.down_proj.weight"
    del tensors[dropped]
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ModelLoadError, match=rf"partial: weights do not cover the model \(1 tensors missing: {dropped}"
    ):
        load_checkpoint(str(d))


def test_unknown_hub_id_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local directory of that name
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint("bigscience/bloom-560m-intermediate", "global_step1000")
    assert str(info.value) == (
        "bigscience/bloom-560m-intermediate@global_step1000: cannot be loaded (offline and not in the local cache)"
    )
    with pytest.raises(ModelLoadError, match=r"^crossling-test/no-such-model: cannot be loaded \(offline"):
        load_checkpoint("crossling-test/no-such-model", local_files_only=True)


@pytest.mark.parametrize(
    ("error", "offline", "reason"),
    [
        (
            OSError("global_step99 is not a valid git identifier (branch name, tag name or commit id)"),
            False,
            "unknown revision 'global_step99' (no such branch, tag or commit on the hub)",
        ),
        (
            OSError("x/y is not a local folder and is not a valid model identifier listed on the hub"),
            False,
            "no such model on the hub",
        ),
        (OSError("You are trying to access a gated repo."), False, "gated repository"),
        (
            OSError("We couldn't connect to 'https://huggingface.co' to load the files"),
            False,
            "cannot be loaded (hub unreachable and not in the local cache)",
        ),
        (
            OSError("We couldn't connect to 'https://huggingface.co' to load the files"),
            True,
            "cannot be loaded (offline and not in the local cache)",
        ),
        (ValueError("something else"), False, None),
    ],
)
def test_hub_failures_become_one_reason(error, offline, reason):
    """The hub is unreachable from tests, so the translation of its failures is checked on their messages."""
    from precompute.model.load import _hub_reason

    got = _hub_reason(error, "global_step99", offline)
    assert got == reason if reason is None else got.startswith(reason)


# ---- device and dtype -------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable_is_a_clear_error():
    with pytest.raises(DeviceError, match=r"device 'cuda' requested but no CUDA device is available"):
        resolve_device("cuda")
    with pytest.raises(ModelLoadError):  # DeviceError is a ModelLoadError: the CLI prints it as one line
        resolve_device("cuda:0")


def test_resolve_device_and_dtype():
    auto = resolve_device("auto")
    if not torch.cuda.is_available():
        assert auto.type in ("cpu", "mps")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", torch.device("mps")) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("float16", cpu) == torch.float16
    with pytest.raises(DeviceError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", cpu)


# ---- gated MLPs: LAPE's activation event is act(gate) > 0 ------------------------------------------------------


@pytest.mark.parametrize("arch", [a for a in TINY_ARCHS if a in ("llama", "mistral", "qwen2", "olmo", "olmo2")])
def test_gated_sites_hook_the_gate_activation(arch, tiny_dirs):
    """The gate module of a gated MLP outputs act(gate(x)) (Tang et al.'s activation event), not the gated
    product the down projection sees; ungated families have no gate."""
    loaded = load_checkpoint(str(tiny_dirs[arch]))
    sites = find_mlp_sites(loaded.model)
    assert all(s.gate is not None and s.gate_path.endswith("mlp.act_fn") for s in sites)
    block = loaded.model.get_submodule(sites[0].path.removesuffix(".mlp.down_proj"))
    got, into_mlp = {}, {}
    handles = [
        sites[0].gate.register_forward_hook(lambda m, a, o: got.__setitem__("gate", o)),
        block.mlp.register_forward_pre_hook(lambda m, a: into_mlp.__setitem__("x", a[0])),
    ]
    try:
        with torch.no_grad():
            loaded.model(input_ids=torch.tensor([[5, 9, 17, 3]]))
    finally:
        for h in handles:
            h.remove()
    expected = F.silu(F.linear(into_mlp["x"], block.mlp.gate_proj.weight))
    torch.testing.assert_close(got["gate"], expected, atol=1e-5, rtol=1e-4)


def test_ungated_sites_have_no_gate(tiny_dirs):
    for arch in ("gpt2", "bloom", "gpt_neox", "xglm", "opt"):
        assert all(s.gate is None for s in find_mlp_sites(load_checkpoint(str(tiny_dirs[arch])).model)), arch


# ---- a tiny XGLM through every stage ----------------------------------------------------------------------------


def test_tiny_xglm_goes_through_every_stage(tmp_path):
    """The paper's third model is an XGLM: a tiny one whose tokenizer prepends </s> runs the whole pipeline
    (max pooling, probes with per-seed tokens, experts, alignment, LAPE) and then steering."""
    import duckdb

    from precompute.config import config_from_dict
    from precompute.extract import tokenize_contexts
    from precompute.inputs.concepts import DEFAULT_CONCEPT_SET
    from precompute.pipeline import run, steer

    model_dir = add_start_token(save_tiny_model("xglm", tmp_path / "xglm" / "step_000004"))
    loaded = load_checkpoint(str(model_dir))
    contexts = tokenize_contexts(loaded.tokenizer, ["El terremoto"], [(3, 12)], 64)
    assert contexts.input_ids[0][0] == loaded.tokenizer.convert_tokens_to_ids("</s>")
    assert not contexts.real_masks[0][0] and contexts.real_masks[0][1:].all()

    cfg = config_from_dict(
        {
            "model": {"id": str(model_dir), "device": "cpu", "dtype": "float32", "card": "tiny random XGLM"},
            "checkpoints": [{"name": "step_000004", "path": str(model_dir), "step": 4}],
            "data": {
                "concepts": str(DEFAULT_CONCEPT_SET),
                "languages": ["en", "es", "ru"],
                "concept_ids": ["monday", "march", "india"],
                "max_contexts": 6,
            },
            "experts": {"top_k": 4, "min_langs": 2},
            "probes": {"seeds": [0, 1], "max_iter": 50},
            "analysis": {"lape_quantile": 0.05},
        },
        base_dir=tmp_path,
    )
    assert cfg.extract.pooling == "max" and cfg.analysis.lape_selection == "tang"
    store = tmp_path / "xglm.duckdb"
    summary = run(cfg, store)
    assert summary.done == ["step_000004"]
    con = duckdb.connect(str(store), read_only=True)
    n = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("probe_results", "neuron_ap", "shared_experts", "expert_overlap", "neuron_counts", "similarity")
    }
    assert n["neuron_ap"] == 3 * 3 * 4 and n["probe_results"] == 2 * (N_LAYERS + 1)
    assert n["expert_overlap"] == 3 * 3 and n["neuron_counts"] >= N_LAYERS
    assert con.execute("SELECT count(*) FROM neuron_ap WHERE NOT isfinite(median_pos_act)").fetchone()[0] == 0
    con.close()

    steered = steer(
        store,
        concepts=["monday"],
        source_langs=["es"],
        n_neurons=[0, 2],
        seeds=[0],
        prompts=[""],
        max_new_tokens=4,
        device="cpu",
        config_dir=tmp_path,
    )
    assert steered.height > 0
    con = duckdb.connect(str(store), read_only=True)
    rows = con.execute("SELECT n_neurons, seed FROM steering ORDER BY n_neurons").fetchall()
    con.close()
    assert rows == [(0, 0), (2, 0)]
