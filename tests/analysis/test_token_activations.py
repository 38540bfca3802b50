"""Per-token activations of the drill-down's top contexts, and output tokens that keep their bytes.

On tiny models (tests/support/tiny_models.py): the second forward pass gives, for each (context, unit) pair,
the unit's activation at every token, equal to a hook on the down projection read by hand one context at a
time; the drilldown stage, run as the pipeline runs it, stores one entry per real token (a tokenizer's start
token left out) whose value at the peak token is the peak activation and the max-pooled response. Output
tokens that are part of a character are stored as their bytes, which the tokenizer's own byte table confirms.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from precompute.analysis import drilldown as dd
from precompute.config import RunConfig
from precompute.extract import extract, token_offsets, tokenize_contexts, unit_context_activations, unit_peaks
from precompute.model import find_mlp_sites, load_checkpoint
from precompute.model.layout import ModelLayout
from precompute.profiling import StageTimer
from precompute.stages import CheckpointContext, run_stages
from precompute.stages import drilldown as drilldown_stage
from precompute.stages.contexts import PreparedContexts
from tests.support.tiny_models import add_start_token, save_tiny_model

CPU = torch.device("cpu")

TEXTS = [
    "El terremoto sacudió la casa vieja.",
    "地震在星期一摇动了老房子。",
    "Joy and happiness filled it.",
    "Am Montag regnet es in Berlin.",
    "On Monday it rains in London, again and again.",
    "Der März ist kalt.",
    "March is cold and wet.",
    "Dienstag.",
]
LANGS = ["es", "zh", "en", "de", "en", "de", "en", "de"]
CONCEPTS = ["quake", "quake", "joy", "monday", "monday", "march", "march", "tuesday"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, object]:
    """GPT-2 (no special tokens) and XGLM whose tokenizer prepends a start token, loaded on the CPU."""
    root = tmp_path_factory.mktemp("tokens")
    dirs = {
        "gpt2": save_tiny_model("gpt2", root / "gpt2", seed=3),
        "xglm": add_start_token(save_tiny_model("xglm", root / "xglm", seed=6)),
    }
    return {name: load_checkpoint(str(path), device="cpu", dtype="float32") for name, path in dirs.items()}


def _by_hand(loaded, contexts) -> list[torch.Tensor]:
    """Per context, (tokens, all units): the down projections' inputs, one unpadded context at a time."""
    sites = find_mlp_sites(loaded.model)
    seen: dict[int, torch.Tensor] = {}
    handles = [
        s.module.register_forward_pre_hook(lambda _m, a, i=i: seen.__setitem__(i, a[0][0].detach().float()))
        for i, s in enumerate(sites)
    ]
    out = []
    try:
        with torch.inference_mode():
            for ids in contexts.input_ids:
                loaded.model.base_model(input_ids=torch.tensor([ids]))
                out.append(torch.cat([seen[i] for i in range(len(sites))], dim=1))
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("arch", ["gpt2", "xglm"])
def test_token_activations_are_the_hooks_and_hold_the_peak(models, arch):
    loaded = models[arch]
    contexts = tokenize_contexts(loaded.tokenizer, TEXTS, [(None, None)] * len(TEXTS), 64)
    layout = ModelLayout.of(loaded.model)
    n = layout.units.n_units
    rng = np.random.default_rng(0)
    pair_rows = rng.integers(0, len(TEXTS), size=40)
    pair_units = rng.integers(0, n, size=40)
    # A small token budget: many batches, so the pairs come back from several in their own order.
    found = unit_context_activations(loaded, layout, contexts, pair_rows, pair_units, batch_tokens=48)
    hand = _by_hand(loaded, contexts)
    assert found.token_counts.tolist() == [len(contexts.input_ids[r]) for r in pair_rows]
    assert len(found.token_acts) == found.token_counts.sum() and found.token_acts.dtype == np.float32
    for i, (r, u) in enumerate(zip(pair_rows, pair_units)):
        tokens = found.tokens(i)
        np.testing.assert_allclose(tokens, hand[r][:, u].numpy(), rtol=1e-5, atol=1e-5)
        assert tokens[found.positions[i]] == found.values[i]  # the same float32, not a recomputation
        assert contexts.real_masks[r][found.positions[i]]  # the peak is a real token
        assert found.values[i] == tokens[contexts.real_masks[r]].max()
    # The peaks-only pass finds the same peaks, bit for bit.
    positions, values = unit_peaks(loaded, layout, contexts, pair_rows, pair_units, batch_tokens=48)
    assert np.array_equal(positions, found.positions) and np.array_equal(values, found.values)


def test_context_token_rows_keep_real_tokens_in_order():
    offsets = [np.array([[0, 0], [0, 3], [3, 7]]), np.array([[0, 2], [2, 2], [2, 5], [0, 0]])]
    real = [np.array([False, True, True]), np.array([True, True, True, False])]
    # Rows: context 1, context 0, context 1 again (a context is the top context of several units).
    index = np.array([1, 0, 1])
    acts = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0], dtype=np.float32)
    got = dd.context_token_rows(offsets, real, index, acts, np.array([4, 3, 4]))
    assert got.schema == pl.Schema(
        {"token_start": pl.List(pl.Int32), "token_end": pl.List(pl.Int32), "token_act": pl.List(pl.Float32)}
    )
    assert got["token_start"].to_list() == [[0, 2, 2], [0, 3], [0, 2, 2]]
    assert got["token_end"].to_list() == [[2, 2, 5], [3, 7], [2, 2, 5]]
    assert got["token_act"].to_list() == [[1.0, 2.0, 3.0], [6.0, 7.0], [8.0, 9.0, 10.0]]
    with pytest.raises(ValueError, match="token counts differ"):
        dd.context_token_rows(offsets, real, index, acts[:10], np.array([4, 2, 4]))
    empty = dd.context_token_rows(offsets, real, np.zeros(0, dtype=np.int64), acts[:0], np.zeros(0, dtype=np.int64))
    assert empty.height == 0 and empty.columns == ["token_start", "token_end", "token_act"]


def test_ragged_take_gathers_pieces_in_order():
    values = np.arange(10) * 10
    assert dd.ragged_take(values, np.array([7, 0, 3]), np.array([2, 3, 0])).tolist() == [70, 80, 0, 10, 20]


def _stage_context(loaded, cfg: RunConfig) -> tuple[CheckpointContext, torch.Tensor]:
    """A checkpoint's context as the pipeline builds it for the drilldown stage: the contexts, their max-pooled
    responses and a few experts (every unit of a few per layer, for every (concept, language) cell)."""
    n = len(TEXTS)
    contexts = tokenize_contexts(loaded.tokenizer, TEXTS, [(None, None)] * n, cfg.extract.max_length)
    layout = ModelLayout.of(loaded.model)
    pooled = extract(loaded, layout, contexts, batch_tokens=256, poolings=("max",), token_seeds=[])
    responses = pooled.mlp["max"]
    sentences = pl.DataFrame(
        {"sentence_id": np.arange(100, 100 + n), "text": TEXTS, "lang": LANGS, "concept_id": CONCEPTS}
    )
    cells = sentences.select("lang", "concept_id").unique()
    units = [(site.layer, u) for site in layout.sites for u in (0, 5, 17)]
    neuron_ap = pl.DataFrame(
        [
            {"lang": lang, "concept_id": concept, "layer": layer, "unit": unit, "ap": 0.5, "rank": k + 1}
            for lang, concept in cells.rows()
            for k, (layer, unit) in enumerate(units)
        ]
    ).with_columns(pl.col("layer", "unit", "rank").cast(pl.Int32))
    language_neurons = pl.DataFrame(schema={"layer": pl.Int32, "unit": pl.Int32})
    ctx = CheckpointContext(
        cfg=cfg,
        checkpoint="c",
        loaded=loaded,
        layout=layout,
        concept_set=SimpleNamespace(sentences=sentences),
        prepared=PreparedContexts(contexts=contexts, keep=np.arange(n), truncated=pl.DataFrame()),
        artefacts={"pooled": pooled, "responses": responses},
        stored={"neuron_ap": neuron_ap, "language_neurons": language_neurons},
    )
    return ctx, responses


@pytest.mark.parametrize("arch", ["gpt2", "xglm"])
def test_drilldown_stage_stores_every_real_token(models, arch):
    loaded = models[arch]
    cfg = RunConfig()
    cfg.drilldown.top_contexts = 3
    ctx, responses = _stage_context(loaded, cfg)
    tables = run_stages([drilldown_stage.STAGE], ctx, StageTimer(CPU))  # the stage the pipeline runs
    top = tables["unit_top_contexts"]
    assert top.height > 0 and top["token_act"].null_count() == 0
    contexts = ctx.prepared.contexts
    offsets = token_offsets(loaded.tokenizer, TEXTS, cfg.extract.max_length)
    hand = _by_hand(loaded, contexts)
    layout = ctx.layout
    if arch == "xglm":
        assert not all(m.all() for m in contexts.real_masks)  # the start token is fed: the rows must drop it
    for row in top.iter_rows(named=True):
        r = row["sentence_id"] - 100
        col = int(layout.units.columns(np.array([row["layer"]]), np.array([row["unit"]]))[0])
        real = contexts.real_masks[r]
        acts = np.asarray(row["token_act"], dtype=np.float32)
        # One entry per real token, with the offsets of that token.
        assert row["token_start"] == offsets[r][real, 0].tolist() and row["token_end"] == offsets[r][real, 1].tolist()
        np.testing.assert_allclose(acts, hand[r][real.nonzero()[0], col].numpy(), rtol=1e-5, atol=1e-5)
        # The stored peak is a stored token's value, the largest; under max pooling it is the response.
        peak = (row["peak_start"], row["peak_end"])
        at_peak = [float(a) for a, s, e in zip(acts, row["token_start"], row["token_end"]) if (s, e) == peak]
        assert float(acts.max()) == row["peak_act"] and row["peak_act"] in at_peak
        assert row["response"] == float(responses[r, col])
        assert row["peak_act"] == pytest.approx(row["response"], rel=1e-5, abs=1e-6)
    # Output tokens: no token is a bare U+FFFD (a byte-level tokenizer's pieces spell their bytes).
    assert not any("\ufffd" in t for t in tables["unit_output_tokens"]["token"].to_list())


def test_token_text_keeps_the_bytes_of_part_characters(models):
    """Every vocabulary entry of a byte-level tokenizer that decodes alone to U+FFFD is stored as bytes, and those
    bytes are the entry's own (GPT-2's byte table, from transformers); whole-character tokens stay their text."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokenizer = models["gpt2"].tokenizer
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    ids = list(range(len(tokenizer)))
    texts = drilldown_stage._token_texts(tokenizer, ids)
    broken = 0
    for token_id, text, piece in zip(ids, texts, tokenizer.convert_ids_to_tokens(ids)):
        decoded = tokenizer.decode([token_id])
        if "\ufffd" not in decoded:
            assert text == decoded
            continue
        broken += 1
        raw = bytes(byte_of[c] for c in piece)
        assert "\ufffd" not in text and dd.piece_bytes(piece) == raw
        back = b"".join(
            bytes([int(part[3:5], 16)]) if part.startswith("<0x") else part.encode()
            for part in re.split(r"(<0x[0-9A-F]{2}>)", text)
            if part
        )
        assert back == raw, (piece, text)
    assert broken > 0  # the tiny vocabulary splits CJK characters, so the check saw some


def test_piece_bytes_and_bytes_text():
    assert dd.piece_bytes("<0xE0>") == b"\xe0"  # SentencePiece byte fallback
    assert dd.piece_bytes("Ġthe") == b" the"  # byte-level BPE: Ġ is the space
    assert dd.piece_bytes("▁the") is None and dd.piece_bytes("") is None and dd.piece_bytes(None) is None
    assert dd.bytes_text(" 地".encode() + b"\xe5\x9c") == " 地<0xE5><0x9C>"
    assert dd.token_text("\ufffd", "<0xE5>") == "<0xE5>"
    assert dd.token_text("\ufffd", "ï¿½") == "\ufffd"  # the bytes of U+FFFD itself: a whole character
    assert dd.token_text("\ufffd", "▁x") == "\ufffd"  # no bytes to show: the decoding, unchanged
    assert dd.token_text(" the", "Ġthe") == " the"
