"""Steering as a stage: `precompute run` and `precompute steer` obey the run's [steering]; start tokens; labels.

The run tests use the tiny demo model (`tests/conftest.py`'s ``tiny_checkpoints``), its last checkpoint only.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import babel.dates
import polars as pl
import pytest
from typer.testing import CliRunner

from precompute.cli import app
from precompute.inputs.concepts import DEFAULT_CONCEPT_SET
from precompute.model.tokens import prepended_ids, start_ids
from precompute.steering.intervene import SteeringError, prompt_ids
from precompute.steering.labels import UND, output_languages
from precompute.store import open_readonly
from tests.support.tiny_models import BOS, EOS, build_tiny_tokenizer

runner = CliRunner()

CONCEPTS = ["monday", "march", "brazil"]
LANGS = ["en", "de", "ru"]
STEERING = [
    "[steering]",
    'concepts = ["monday"]',
    'source_langs = ["de"]',
    "seeds = [7, 8]",
    "n_neurons = [0, 3]",
    "max_new_tokens = 4",
    "top_p = 0.85",
    "temperature = 0.9",
]


def _config(folder: Path, checkpoint, *, enabled: bool) -> Path:
    lines = [
        "[model]",
        'id = "tiny"',
        'card = "tiny test model"',
        'device = "cpu"',
        'dtype = "float32"',
        "[data]",
        f'concepts = "{DEFAULT_CONCEPT_SET}"',
        f"languages = {json.dumps(LANGS)}",
        f"concept_ids = {json.dumps(CONCEPTS)}",
        "max_contexts = 6",
        "[experts]",
        "top_k = 5",
        "min_langs = 2",
        "[probes]",
        'representations = ["mean"]',
        "seeds = [0]",
        "max_iter = 50",
        *STEERING,
        f"enabled = {'true' if enabled else 'false'}",
        "[[checkpoints]]",
        f'name = "{checkpoint.name}"',
        f'path = "{checkpoint.path}"',
        f"step = {checkpoint.step}",
    ]
    path = folder / f"run-{'steer' if enabled else 'plain'}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rows(store: Path) -> pl.DataFrame:
    con = open_readonly(store)
    try:
        cur = con.execute(
            "SELECT * EXCLUDE (run_id) FROM steering ORDER BY checkpoint, concept_id, source_lang, n_neurons, seed"
        )
        return pl.DataFrame(cur.fetchall(), schema=[d[0] for d in cur.description], orient="row")
    finally:
        con.close()


@pytest.fixture(scope="module")
def stores(tiny_checkpoints, tmp_path_factory) -> dict[str, Path]:
    """One store from `precompute run` with [steering] enabled, one without steering (same settings)."""
    folder = tmp_path_factory.mktemp("steer-stage")
    last = tiny_checkpoints[-1]
    out = {}
    for enabled in (True, False):
        store = folder / f"{'steered' if enabled else 'plain'}.duckdb"
        result = runner.invoke(app, ["run", str(_config(folder, last, enabled=enabled)), "--out", str(store)])
        assert result.exit_code == 0, result.output
        out["steered" if enabled else "plain"] = store
    return out


def test_run_writes_steering_rows_with_exactly_the_configured_settings(stores):
    rows = _rows(stores["steered"])
    assert sorted(set(rows["seed"])) == [7, 8]
    assert sorted(set(rows["n_neurons"])) == [0, 3]
    assert rows.height == 2 * 2  # (N = 0, N = 3) x 2 seeds, one concept, one source language
    assert set(rows["concept_id"]) == {"monday"} and set(rows["source_lang"]) == {"de"}
    # Each row says how it was sampled: the config's values (top_k left at its default, no cut).
    assert rows.select("top_k", "top_p", "temperature", "max_new_tokens").unique().rows() == [(0, 0.85, 0.9, 4)]
    # Labels: an ISO code with a confidence, or 'und' without one.
    for lang, conf in rows.select("output_lang", "output_lang_confidence").iter_rows():
        assert (lang == UND and conf is None) or (lang != UND and 0 < conf <= 1)
    con = open_readonly(stores["steered"])
    try:
        stages = [r[0] for r in con.execute("SELECT stage FROM stage_timings").fetchall()]
        ckpts = [r[0] for r in con.execute("SELECT checkpoint FROM checkpoints").fetchall()]
    finally:
        con.close()
    assert "steering" in stages  # timed with the checkpoint's other stages
    assert set(rows["checkpoint"]) == set(ckpts)
    assert _rows(stores["plain"]).height == 0  # enabled = false: the run does not steer


def test_steer_reads_the_runs_settings_and_an_option_overrides_only_what_it_names(stores, tmp_path):
    store = tmp_path / "store.duckdb"
    store.write_bytes(stores["plain"].read_bytes())
    where = ["--config-dir", str(stores["plain"].parent)]  # local checkpoints are recorded relative to the config
    result = runner.invoke(app, ["steer", str(store), *where])
    assert result.exit_code == 0, result.output
    rows = _rows(store)
    assert sorted(set(rows["seed"])) == [7, 8] and sorted(set(rows["n_neurons"])) == [0, 3]
    assert set(rows["concept_id"]) == {"monday"} and set(rows["source_lang"]) == {"de"}
    # The same settings give the same generations as the steering stage of `precompute run`.
    steered = _rows(stores["steered"])
    assert rows.drop("output_lang_confidence").equals(steered.drop("output_lang_confidence"))

    again = runner.invoke(app, ["steer", str(store), *where, "--seeds", "5", "--temperature", "0.7"])
    assert again.exit_code == 0, again.output
    new = _rows(store).filter(pl.col("seed") == 5)
    assert sorted(set(new["n_neurons"])) == [0, 3]  # still the run's n_neurons
    assert new.select("top_p", "temperature", "max_new_tokens").unique().rows() == [(0.85, 0.7, 4)]
    assert _rows(store).filter(pl.col("seed") != 5).height == rows.height  # earlier rows kept

    bad = runner.invoke(app, ["steer", str(store), "--n-neurons", "0,-3"])
    assert bad.exit_code == 1 and "--n-neurons" in bad.output and "Traceback" not in bad.output
    bad_p = runner.invoke(app, ["steer", str(store), "--top-p", "1.5"])
    assert bad_p.exit_code == 1 and "--top-p" in bad_p.output


def test_run_refuses_an_unknown_steering_concept_before_writing(tiny_checkpoints, tmp_path):
    config = _config(tmp_path, tiny_checkpoints[-1], enabled=True)
    config.write_text(config.read_text().replace('concepts = ["monday"]', 'concepts = ["nope"]'), encoding="utf-8")
    store = tmp_path / "store.duckdb"
    result = runner.invoke(app, ["run", str(config), "--out", str(store)])
    assert result.exit_code == 1 and "unknown concept 'nope'" in result.output
    assert not store.exists()


# ---------------------------------------------------------------- the start token


def _with_template(template: str | None):
    """The tiny tokenizer, optionally with a post-processor that prepends a special token as XGLM/Llama do."""
    from tokenizers.processors import TemplateProcessing

    tok = build_tiny_tokenizer()
    if template is not None:
        special = template.split()[0]
        tok._tokenizer.post_processor = TemplateProcessing(
            single=template, special_tokens=[(special, tok.convert_tokens_to_ids(special))]
        )
    return tok


@pytest.mark.parametrize("template, expected", [(None, BOS), (f"{EOS} $A", EOS), (f"{BOS} $A", BOS)])
def test_start_token_is_the_tokenizers_own_and_never_doubled(template, expected):
    tok = _with_template(template)
    start = tok.convert_tokens_to_ids(expected)
    assert prepended_ids(tok) == ([] if template is None else [start])
    assert start_ids(tok) == [start]
    assert prompt_ids(tok, "") == [start]
    plain = tok("Das Haus", add_special_tokens=False)["input_ids"]
    assert prompt_ids(tok, "Das Haus") == [start, *plain]
    assert prompt_ids(tok, "Das Haus").count(start) == 1


def test_a_tokenizer_without_start_tokens_needs_a_prompt():
    tok = build_tiny_tokenizer()
    tok.bos_token = None
    tok.eos_token = None
    assert start_ids(tok) == []
    with pytest.raises(SteeringError, match="non-empty prompt"):
        prompt_ids(tok, "")
    assert prompt_ids(tok, "Das") == tok("Das", add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- labels that can say "other"


def test_output_language_is_chosen_among_all_languages():
    date = dt.date(2024, 3, 5)
    locales = ["pt", "ca", "es", "de"]
    texts = [babel.dates.format_date(date, "full", locale=x) for x in locales]  # CLDR: "terça-feira, 5 de março ..."
    texts += ["O terremoto abalou a casa velha na segunda-feira.", "El terratrèmol va sacsejar la casa vella dilluns."]
    labels = output_languages([*texts, "", "2024"])
    assert [code for code, _ in labels] == [*locales, "pt", "ca", UND, UND]
    assert all(0 < conf <= 1 for _, conf in labels[:6]) and [conf for _, conf in labels[6:]] == [None, None]
