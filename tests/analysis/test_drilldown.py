"""Drill-downs: top contexts, peak tokens, response histograms and a unit's direct output effect.

The direct effect is checked on a tiny model of every architecture tests/support/tiny_models.py builds, against a
matmul written out by hand from each family's own module names (down projection, final norm, LM head), so
that a wrong orientation (GPT-2's Conv1D is transposed), a missed norm scale or an untied head would show.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from precompute.analysis import drilldown as dd
from precompute.analysis.units import UnitAxis
from precompute.extract import token_offsets, tokenize_contexts, unit_peaks
from precompute.model import find_mlp_sites, load_checkpoint
from precompute.model.layout import ModelLayout
from precompute.model.unembed import direct_effects
from tests.support.tiny_models import TINY_ARCHS, save_tiny_model

CPU = torch.device("cpu")

# Per family: (down projection of block i, final norm's scale or None, LM head weight), named by hand.
_MANUAL = {
    "gpt2": (lambda m, i: m.transformer.h[i].mlp.c_proj.weight.T, lambda m: m.transformer.ln_f.weight),
    "bloom": (lambda m, i: m.transformer.h[i].mlp.dense_4h_to_h.weight, lambda m: m.transformer.ln_f.weight),
    "gpt_neox": (
        lambda m, i: m.gpt_neox.layers[i].mlp.dense_4h_to_h.weight,
        lambda m: m.gpt_neox.final_layer_norm.weight,
    ),
    "llama": (lambda m, i: m.model.layers[i].mlp.down_proj.weight, lambda m: m.model.norm.weight),
    "mistral": (lambda m, i: m.model.layers[i].mlp.down_proj.weight, lambda m: m.model.norm.weight),
    "qwen2": (lambda m, i: m.model.layers[i].mlp.down_proj.weight, lambda m: m.model.norm.weight),
    "olmo": (lambda m, i: m.model.layers[i].mlp.down_proj.weight, lambda m: None),  # non-parametric LayerNorm
    "olmo2": (lambda m, i: m.model.layers[i].mlp.down_proj.weight, lambda m: m.model.norm.weight),
    "xglm": (lambda m, i: m.model.layers[i].fc2.weight, lambda m: m.model.layer_norm.weight),
    "opt": (lambda m, i: m.model.decoder.layers[i].fc2.weight, lambda m: m.model.decoder.final_layer_norm.weight),
}
# Families whose final norm is a LayerNorm: its mean subtraction applies to the unit's write (the rest: RMSNorm).
_LAYERNORM = {"gpt2", "bloom", "gpt_neox", "olmo", "xglm", "opt"}


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_direct_effect_is_the_manual_matmul(arch, tmp_path):
    loaded = load_checkpoint(str(save_tiny_model(arch, tmp_path / arch)), device="cpu", dtype="float32")
    model = loaded.model
    down, norm = _MANUAL[arch]
    head = model.lm_head.weight if hasattr(model, "lm_head") else model.embed_out.weight  # (vocab, d)
    sites = find_mlp_sites(model)
    for i, site in enumerate(sites):
        units = torch.tensor([0, 3, site.n_neurons - 1])
        w_out = down(model, i)[:, units]  # (d, 3): column u is what unit u adds to the stream per unit of activation
        if arch in _LAYERNORM:
            w_out = w_out - w_out.mean(dim=0, keepdim=True)
        scale = norm(model)
        expected = head @ (w_out * (scale[:, None] if scale is not None else 1.0))
        expected = expected - expected.mean(dim=0, keepdim=True)  # shift-free over the vocabulary
        got = direct_effects(model, site, units, chunk=2)  # chunked, to cover the chunk seam
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied == bool(getattr(model.config, "tie_word_embeddings", False))


def test_direct_effect_moves_the_logits_as_the_logit_lens_says(tmp_path):
    """On an untied gated model (Llama): adding a * w_out to the final state, with the norm's scale read as
    a linear map, changes the logits by a * effect up to a shift shared by all logits -- the effect is what the
    unit writes, not a transpose."""
    loaded = load_checkpoint(str(save_tiny_model("llama", tmp_path / "llama")), device="cpu", dtype="float32")
    model, site = loaded.model, find_mlp_sites(loaded.model)[1]
    effect = direct_effects(model, site, torch.tensor([5]))[:, 0]
    x = torch.randn(model.config.hidden_size)
    w_out = site.module.weight[:, 5]

    def lens(h):  # the logit lens, scale only
        return model.lm_head(model.model.norm.weight * h)

    change = lens(x + 2.0 * w_out) - lens(x)
    torch.testing.assert_close(change - change.mean(), 2.0 * effect, rtol=1e-4, atol=1e-4)


def test_top_contexts_are_a_sort_of_the_activations():
    rng = np.random.default_rng(0)
    acts = torch.from_numpy(rng.normal(size=(40, 30)).astype(np.float32))
    langs = np.array(["de", "en"] * 20)
    units = np.array([1, 7, 29])
    got = dd.top_contexts(acts, langs, units, n_top=5, device=CPU)
    assert got.height == 2 * 3 * 5
    for lang in ("de", "en"):
        rows = np.flatnonzero(langs == lang)
        for col in units:
            order = rows[np.argsort(-acts[rows, col].numpy(), kind="stable")][:5]
            mine = got.filter((pl.col("lang") == lang) & (pl.col("col") == col)).sort("rank")
            assert mine["row"].to_list() == order.tolist()
            np.testing.assert_allclose(mine["response"].to_numpy(), acts[order, col].numpy())
            assert mine["rank"].to_list() == [1, 2, 3, 4, 5]
    # Fewer contexts than asked for: all of them.
    assert dd.top_contexts(acts, langs, units, n_top=100, device=CPU).height == 2 * 3 * 20


def test_response_histograms_match_numpy():
    rng = np.random.default_rng(1)
    acts = torch.from_numpy(rng.gamma(2.0, size=(60, 16)).astype(np.float32))
    langs = np.array(["en", "fr"] * 30)
    concepts = np.array(["a", "a", "b", "b", "c", "c"] * 10)
    offsets = [0, 8, 16]
    experts = pl.DataFrame(
        {"lang": ["en", "fr", "en"], "concept_id": ["b", "a", "c"], "layer": [0, 1, 1], "unit": [3, 0, 7]}
    )
    got = dd.response_histograms(acts, langs, concepts, experts, UnitAxis.contiguous(offsets), n_bins=6, device=CPU)
    assert got.height == 3
    # Blocks 2 and 5 hooked: the experts name them, the same columns are drawn, the rows carry 2 and 5.
    hooked = UnitAxis.from_sizes([2, 5], [8, 8])
    blocks = pl.col("layer").replace_strict({0: 2, 1: 5}, return_dtype=pl.Int32)
    by_block = dd.response_histograms(acts, langs, concepts, experts.with_columns(blocks), hooked, n_bins=6, device=CPU)
    assert sorted(by_block["layer"].to_list()) == [2, 5, 5]
    assert by_block.equals(got.with_columns(blocks))
    for row in got.iter_rows(named=True):
        col = offsets[row["layer"]] + row["unit"]
        rows = np.flatnonzero(langs == row["lang"])
        values = acts[rows, col].numpy().astype(np.float64)
        assert row["lo"] == pytest.approx(values.min()) and row["hi"] == pytest.approx(values.max())
        edges = np.linspace(values.min(), values.max(), 7)
        is_c = concepts[rows] == row["concept_id"]
        assert row["concept_counts"] == np.histogram(values[is_c], edges)[0].tolist()
        assert row["other_counts"] == np.histogram(values[~is_c], edges)[0].tolist()


def test_select_units_takes_experts_and_lape_units_and_caps_by_rank():
    top = pl.DataFrame({"layer": [0, 0, 1, 1], "unit": [2, 5, 0, 2], "rank": [3, 1, 2, 1], "ap": [0.5, 0.9, 0.7, 0.8]})
    lape = pl.DataFrame({"layer": [1], "unit": [3]})
    units = UnitAxis.contiguous([0, 10, 20])
    assert dd.select_units(top, lape, units, max_units=0).tolist() == [2, 5, 10, 12, 13]
    # Cap 3: rank-1 units first (AP 0.9, 0.8; the LAPE unit has no AP and comes after them).
    assert dd.select_units(top, lape, units, max_units=3).tolist() == [5, 12, 13]
    # Blocks 4 and 7 hooked: the frames name them, and the same columns come back.
    hooked = UnitAxis.from_sizes([4, 7], [10, 10])
    blocks = pl.col("layer").replace_strict({0: 4, 1: 7})
    chosen = dd.select_units(top.with_columns(blocks), lape.with_columns(blocks), hooked, max_units=0)
    assert chosen.tolist() == [2, 5, 10, 12, 13]
    assert dd.global_columns(top.with_columns(blocks), hooked).tolist() == [2, 5, 10, 12]


def test_top_context_rows_name_the_block_of_each_column():
    """The rows of `top_contexts`' columns carry (block id, unit in block); with every block hooked, the positions."""
    best = pl.DataFrame(
        {"lang": ["de", "de", "en"], "col": [1, 6, 6], "rank": [1, 1, 1], "row": [0, 2, 1], "response": [0.5, 2, 3]}
    )
    peaks = (np.array([0, 4, 1]), np.array([3, 9, 2]), np.array([0.5, 2.0, 3.0]))
    sentence_ids = np.array([10, 11, 12])
    hooked = dd.top_context_rows(best, sentence_ids, UnitAxis.from_sizes([1, 3], [4, 5]), *peaks)
    assert hooked.select("layer", "unit", "sentence_id").rows() == [(1, 1, 10), (3, 2, 12), (3, 2, 11)]
    assert hooked.schema["layer"] == pl.Int32 and hooked.schema["unit"] == pl.Int32
    every = dd.top_context_rows(best, sentence_ids, UnitAxis.contiguous([0, 4, 9]), *peaks)
    assert every.equals(hooked.with_columns(pl.col("layer").replace_strict({1: 0, 3: 1}, return_dtype=pl.Int32)))


def test_unit_peaks_find_the_token_of_the_largest_activation(tmp_path):
    loaded = load_checkpoint(str(save_tiny_model("gpt2", tmp_path / "gpt2")), device="cpu", dtype="float32")
    texts = ["El terremoto sacudió la casa vieja.", "地震在星期一摇动了老房子。", "Joy and happiness filled it."]
    contexts = tokenize_contexts(loaded.tokenizer, texts, [(None, None)] * 3, 64)
    sites = find_mlp_sites(loaded.model)
    seen: dict[int, torch.Tensor] = {}
    handles = [
        s.module.register_forward_pre_hook(lambda _m, a, i=i: seen.__setitem__(i, a[0][0].detach()))
        for i, s in enumerate(sites)
    ]
    per_token = []
    with torch.inference_mode():
        for ids in contexts.input_ids:  # one context at a time, unpadded: the reference activations
            loaded.model.base_model(input_ids=torch.tensor([ids]))
            per_token.append(torch.cat([seen[i] for i in range(len(sites))], dim=1))  # (T, all units)
    for h in handles:
        h.remove()
    n = sites[0].n_neurons
    pair_rows = np.array([0, 1, 2, 2, 1])
    pair_units = np.array([3, n + 7, 3, 2 * n - 1, 0])
    pos, val = unit_peaks(loaded, ModelLayout.of(loaded.model), contexts, pair_rows, pair_units, batch_tokens=40)
    for r, u, p, v in zip(pair_rows, pair_units, pos, val):
        acts = per_token[r][:, u]
        assert p == int(acts.argmax())
        assert v == pytest.approx(float(acts.max()), abs=1e-5)
    offs = token_offsets(loaded.tokenizer, texts, 64)
    start, end = dd.peak_offsets(offs, pair_rows, pos)
    for r, p, s, e in zip(pair_rows, pos, start, end):
        assert (s, e) == tuple(offs[r][p]) and 0 <= s < e <= len(texts[r])


def test_output_token_rows_are_the_top_and_bottom_of_the_effect():
    effects = torch.tensor([[0.5, -1.0], [2.0, 0.0], [-3.0, 1.0], [1.0, 4.0], [9.0, 9.0]])  # (vocab 5, 2 units)
    rows = dd.output_token_rows(
        effects, 7, np.array([4, 9]), n_tokens=2, vocab_size=4, decode=lambda ids: [f"t{i}" for i in ids]
    )
    promoted = rows.filter(pl.col("direction") == "promoted").sort("unit", "rank")
    assert promoted["token_id"].to_list() == [1, 3, 3, 2]  # id 4 lies beyond the tokenizer's vocabulary
    assert promoted["token"].to_list() == ["t1", "t3", "t3", "t2"]
    suppressed = rows.filter(pl.col("direction") == "suppressed").sort("unit", "rank")
    assert suppressed["token_id"].to_list() == [2, 0, 0, 1] and suppressed["logit"].to_list()[:2] == [-3.0, 0.5]
    assert set(rows["layer"].to_list()) == {7}  # the block id it was given


def test_analyse_checkpoint_writes_the_drilldown_tables(tmp_path):
    """The pipeline wires the stage: rows for the selected units, their stored response is the pooled one,
    and (max pooling) the peak token's activation equals it and its offsets lie on a token of the text."""
    from precompute.config import config_from_dict
    from precompute.inputs.concepts import DEFAULT_CONCEPT_SET, load_concept_set
    from precompute.pipeline import analyse_checkpoint

    model_dir = save_tiny_model("qwen2", tmp_path / "qwen2")
    cfg = config_from_dict(
        {
            "model": {"id": str(model_dir), "device": "cpu", "dtype": "float32"},
            "data": {
                "concepts": str(DEFAULT_CONCEPT_SET),
                "languages": ["en", "ja"],
                "concept_ids": ["monday", "march"],
                "max_contexts": 5,
            },
            "experts": {"top_k": 3, "min_langs": 2},
            "probes": {"seeds": [0], "max_iter": 20},
            "drilldown": {"top_contexts": 4, "top_tokens": 3, "hist_bins": 5, "max_units": 6},
        },
        base_dir=tmp_path,
    )
    concept_set = load_concept_set(DEFAULT_CONCEPT_SET).subset(["en", "ja"], ["monday", "march"], 5)
    loaded = load_checkpoint(str(model_dir), device="cpu", dtype="float32")
    tables, pooled = analyse_checkpoint(cfg, loaded, concept_set)
    top, hist, out = tables["unit_top_contexts"], tables["unit_response_hist"], tables["unit_output_tokens"]
    units = top.select("layer", "unit").unique()
    assert 0 < units.height <= 6
    assert top.height == units.height * 2 * 4  # 2 languages x 4 contexts
    assert out.height == units.height * 2 * 3
    sentences = concept_set.sentences
    texts = dict(zip(sentences["sentence_id"].to_list(), sentences["text"].to_list()))
    acts = pooled.responses("max")
    for row in top.iter_rows(named=True):
        col = int(pooled.units.columns([row["layer"]], [row["unit"]])[0])
        row_index = sentences["sentence_id"].to_list().index(row["sentence_id"])
        assert row["response"] == pytest.approx(float(acts[row_index, col]), abs=1e-5)
        assert row["peak_act"] == pytest.approx(row["response"], abs=1e-4)
        assert 0 <= row["peak_start"] < row["peak_end"] <= len(texts[row["sentence_id"]])
    experts = tables["neuron_ap"].join(units, on=["layer", "unit"], how="semi")
    assert hist.height == experts.height
    n_lang = sentences.group_by("lang").len()
    for row in hist.iter_rows(named=True):
        total = n_lang.filter(pl.col("lang") == row["lang"])["len"][0]
        assert sum(row["concept_counts"]) + sum(row["other_counts"]) == total
        assert (
            sum(row["concept_counts"])
            == sentences.filter((pl.col("lang") == row["lang"]) & (pl.col("concept_id") == row["concept_id"])).height
        )
    assert "drilldown" in tables["stage_timings"]["stage"].to_list()
