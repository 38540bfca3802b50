"""The demo corpus and the demo training run (tiny variant: trains in seconds on CPU)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from precompute.demo.corpus import DEMO_LANGUAGES, build_corpus, corpus_sha256, corpus_stats
from precompute.demo.train import (
    DEFAULT_SPEC,
    DEFAULT_STEPS,
    DEMO_MODEL_CARD,
    TINY_SPEC,
    DemoCheckpoint,
    count_parameters,
    default_checkpoint_steps,
    load_demo_checkpoints,
    tiny_test_model,
    train_demo_model,
)

TINY_STEPS = 24


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, list[DemoCheckpoint], float]:
    out = tmp_path_factory.mktemp("demo") / "tiny"
    t0 = time.perf_counter()
    ckpts = tiny_test_model(out, steps=TINY_STEPS)
    return out, ckpts, time.perf_counter() - t0


# --- corpus ---------------------------------------------------------------------------------------------


def test_corpus_is_deterministic_balanced_and_parallel():
    langs = list(DEMO_LANGUAGES)
    a = build_corpus(langs, 40, seed=3)
    b = build_corpus(langs, 40, seed=3)
    c = build_corpus(langs, 40, seed=4)
    assert a == b
    assert corpus_sha256(a) == corpus_sha256(b) != corpus_sha256(c)
    stats = corpus_stats(a)
    assert set(stats) == set(langs)
    assert all(s["lines"] == 40 for s in stats.values())
    assert all(text and text == text.strip() for _, text in a)
    # record-major order: line i of every language renders the same record
    assert [lang for lang, _ in a[: len(langs)]] == langs
    # shared anchors: most records carry digits in every language
    records = [a[i : i + len(langs)] for i in range(0, len(a), len(langs))]
    with_digits = sum(all(any(ch.isdigit() for ch in t) for _, t in rec) for rec in records)
    assert with_digits >= len(records) // 2


def test_corpus_scripts_and_errors():
    corpus = build_corpus(["zh", "ar", "hi", "ru"], 30, seed=0)
    by_lang: dict[str, str] = {}
    for lang, text in corpus:
        by_lang[lang] = by_lang.get(lang, "") + text
    assert any("\u4e00" <= ch <= "\u9fff" for ch in by_lang["zh"])
    assert any("\u0600" <= ch <= "\u06ff" for ch in by_lang["ar"])
    assert any("\u0900" <= ch <= "\u097f" for ch in by_lang["hi"])
    assert any("\u0400" <= ch <= "\u04ff" for ch in by_lang["ru"])
    assert build_corpus(["en"], 0, seed=0) == []
    with pytest.raises(ValueError):
        build_corpus([], 5, seed=0)
    with pytest.raises(ValueError):
        build_corpus(["xx-notalocale"], 5, seed=0)


# --- schedule and card ----------------------------------------------------------------------------------


def test_default_checkpoint_schedule_dense_early_sparse_late():
    s = default_checkpoint_steps(DEFAULT_STEPS)
    assert len(s) >= 8
    assert s == sorted(set(s)) and s[0] > 0 and s[-1] == DEFAULT_STEPS
    gaps = [b - a for a, b in zip(s, s[1:])]
    assert gaps == sorted(gaps)  # spacing never shrinks
    assert gaps[0] < gaps[-1]
    assert default_checkpoint_steps(1024) == [16, 32, 64, 128, 256, 512, 768, 1024]
    assert default_checkpoint_steps(1) == [1]
    with pytest.raises(ValueError):
        default_checkpoint_steps(0)


def test_model_card_is_honest():
    assert "NOT BLOOM" in DEMO_MODEL_CARD
    assert f"{count_parameters(DEFAULT_SPEC):,}" in DEMO_MODEL_CARD
    assert "babel" in DEMO_MODEL_CARD and "GPT-2" in DEMO_MODEL_CARD


# --- the tiny training run ------------------------------------------------------------------------------


def test_tiny_run_checkpoints_and_schedule(tiny_run):
    out, ckpts, seconds = tiny_run
    assert [c.step for c in ckpts] == [TINY_STEPS // 4, TINY_STEPS // 2, TINY_STEPS]
    assert [c.name for c in ckpts] == [f"step_{c.step:06d}" for c in ckpts]
    tokens = [c.tokens_seen for c in ckpts]
    assert tokens == sorted(tokens) and tokens[0] > 0
    for c in ckpts:
        assert c.path == out / c.name
        meta = json.loads((c.path / "crossling_checkpoint.json").read_text())
        assert meta["step"] == c.step and meta["tokens_seen"] == c.tokens_seen
        assert meta["train_loss"] == pytest.approx(c.train_loss)
    cfg = json.loads((out / "training_config.json").read_text())
    assert cfg["complete"] and cfg["settings"]["checkpoint_steps"] == [c.step for c in ckpts]
    assert cfg["results"]["n_parameters"] == count_parameters(TINY_SPEC)
    assert (out / "MODEL_CARD.md").read_text().startswith(DEMO_MODEL_CARD.splitlines()[0])
    assert len(json.loads((out / "training_log.json").read_text())) == TINY_STEPS
    assert load_demo_checkpoints(out) == ckpts
    assert seconds < 60


def test_tiny_run_loss_decreases(tiny_run):
    out, ckpts, _ = tiny_run
    results = json.loads((out / "training_config.json").read_text())["results"]
    assert results["initial_eval_loss"] == pytest.approx(results["uniform_loss"], abs=0.3)
    assert ckpts[-1].eval_loss < results["initial_eval_loss"] - 0.5
    assert ckpts[-1].train_loss < ckpts[0].train_loss


def test_tiny_checkpoints_load_with_auto_classes(tiny_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, ckpts, _ = tiny_run
    last = ckpts[-1]
    tok = AutoTokenizer.from_pretrained(last.path)
    model = AutoModelForCausalLM.from_pretrained(last.path)
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>" and tok.pad_token == "<pad>"
    assert model.config.n_layer == TINY_SPEC.n_layer
    assert tok.model_max_length == TINY_SPEC.n_ctx == model.config.n_positions
    assert sum(p.numel() for p in model.parameters()) == count_parameters(TINY_SPEC)

    for text in ("2021年3月14日星期日 · 法国", "الأحد، 14 مارس 2021 · فرنسا", "Sonntag, 14. März 2021"):
        enc = tok(text, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        assert ids[0] == tok.bos_token_id and offsets[0] == (0, 0)
        assert len(ids) == len(offsets) > 1
        # character offsets (not bytes); a token that is only a space has an empty span, and the byte
        # pieces of one multi-byte character all point at that character
        for start, end in offsets[1:]:
            assert 0 <= start <= end <= len(text)
        assert all(a[0] <= b[0] for a, b in zip(offsets[1:], offsets[2:]))
        covered = {i for s, e in offsets for i in range(s, e)}
        assert covered == {i for i, ch in enumerate(text) if not ch.isspace()}
        assert tok.decode(ids, skip_special_tokens=True) == text

    batch = tok(["Montag", "月曜日"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()

    first = AutoModelForCausalLM.from_pretrained(ckpts[0].path)
    assert not torch.equal(first.transformer.wte.weight, model.transformer.wte.weight)


def test_rerun_skips_training_and_settings_change_retrains(tiny_run, tmp_path):
    out, ckpts, seconds = tiny_run
    mtime = (ckpts[-1].path / "crossling_checkpoint.json").stat().st_mtime_ns
    t0 = time.perf_counter()
    again = tiny_test_model(out, steps=TINY_STEPS)
    assert time.perf_counter() - t0 < 2.0
    assert again == ckpts
    assert (ckpts[-1].path / "crossling_checkpoint.json").stat().st_mtime_ns == mtime

    # same seed elsewhere: bit-identical losses (deterministic on CPU)
    other = tiny_test_model(tmp_path / "again", steps=TINY_STEPS)
    assert [(c.step, c.tokens_seen, c.train_loss, c.eval_loss) for c in other] == [
        (c.step, c.tokens_seen, c.train_loss, c.eval_loss) for c in ckpts
    ]
    # other settings in the same directory: retrained and the old checkpoints replaced
    changed = tiny_test_model(tmp_path / "again", steps=8, checkpoint_steps=[0, 2, 8])
    assert [c.step for c in changed] == [0, 2, 8]
    assert changed[0].tokens_seen == 0 and changed[0].eval_loss == changed[0].train_loss
    assert sorted(p.name for p in (tmp_path / "again").glob("step_*")) == ["step_000000", "step_000002", "step_000008"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        train_demo_model(tmp_path, steps=0, spec=TINY_SPEC)
    with pytest.raises(ValueError):
        train_demo_model(tmp_path, steps=4, checkpoint_steps=[5], spec=TINY_SPEC)
    with pytest.raises(ValueError):
        train_demo_model(tmp_path, steps=4, checkpoint_steps=[-1, 4], spec=TINY_SPEC)
    with pytest.raises(ValueError):
        train_demo_model(tmp_path, steps=4, languages=[], spec=TINY_SPEC)
