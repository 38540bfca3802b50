"""Hostile input to `precompute steer`, `precompute run`'s range options and the checkpoint resolver.

The contract is the one of ``tests/reliability/test_hostile_settings_and_inputs.py``: every bad input gives
exactly one ``error:`` line naming the input at fault, no traceback, the previous store byte-identical. (What the
explorer makes of a hostile store is in ``tests/reliability/test_hostile_explorer_input.py``.)

- ranges are checked *before* they are expanded (``--seeds 0-99999999999``, a template of 10^12 steps), and a
  range that runs backwards says so;
- steering settings the model cannot honour (a prompt plus ``max_new_tokens`` past its positions, a temperature
  at which sampling overflows) are refused before the first checkpoint is loaded;
- store strings and help texts that go through rich show as typed (``[/b]`` in a concept id, ``[steering]`` in
  ``--help``);
- a local checkpoint that is not found is refused saying where it was looked for and how to point at it
  (``--config-dir``), and a local-looking path never goes to the hub.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from precompute.checkpoints.resolve import (
    CheckpointError,
    list_hub_branches,
    looks_like_local_path,
    resolve_model_checkpoints,
    resolve_set,
)
from precompute.cli import app
from precompute.config import MAX_RANGE_VALUES, ConfigError, config_from_dict, parse_int_ranges
from precompute.steering.stage import steer_checkpoint
from tests.support.hostile_store import rename_everywhere
from tests.support.reliability import assert_refused, checkpoints, config_text, copy_of_reference, runner, workdir

TINY_POSITIONS = 48  # the tiny demo model's n_positions (precompute.demo.train.TINY_SPEC.n_ctx)


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


@pytest.fixture()
def store(tmp_path) -> Path:
    """A copy of the reliability run's store (three local checkpoints, recorded relative to its config)."""
    return copy_of_reference(tmp_path)


def here() -> list[str]:
    """Where the reliability run's local checkpoints are found from: the folder of its config."""
    return ["--config-dir", str(workdir())]


@pytest.fixture()
def no_network(monkeypatch) -> list:
    """Every attempt to open a connection is recorded and refused (the hub must not be asked)."""
    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


# --- ranges are checked before they are expanded ------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--seeds", "0-99999999999", "at most 100,000"),
        ("--seeds", "0-5,7-99999999999", "at most 100,000"),
        ("--n-neurons", "0-999999999999", "at most 100,000"),
        ("--seeds", "0-100000", "100,001 values"),
        ("--seeds", "5-1", "range 5-1 runs backwards (from 5 down to 1); write it low to high, 1-5"),
        ("--n-neurons", "0,10-3", "range 10-3 runs backwards"),
        ("--seeds", "3-", "expected comma-separated integers or ranges"),
        ("--seeds", "a-b", "expected comma-separated integers or ranges"),
    ],
)
def test_steer_range_options_are_checked_before_expanding(option, value, says, store):
    started = time.perf_counter()
    line = assert_refused(["steer", store, option, value], names=option, says=says, store=store)
    assert time.perf_counter() - started < 30, "the range was built before it was checked"
    assert "must list at least" not in line, line


def test_parse_int_ranges_never_builds_a_huge_list():
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="at most 100,000"):
        parse_int_ranges("0-" + "9" * 30, "--seeds")
    with pytest.raises(ConfigError, match="runs backwards"):
        parse_int_ranges("9" * 30 + "-0", "--seeds")
    assert time.perf_counter() - started < 1
    assert parse_int_ranges("0,2-4, 7", "--x") == [0, 2, 3, 4, 7]
    assert parse_int_ranges("-1", "--x") == [-1]  # left to the setting's rule ("must be >= 0")
    assert len(parse_int_ranges(f"1-{MAX_RANGE_VALUES}", "--x")) == MAX_RANGE_VALUES


def test_negative_seed_is_refused_by_the_settings_rule(store):
    assert_refused(
        ["steer", store, "--seeds", "-1"], names="--seeds", says="must be in [0, 4294967295], got -1", store=store
    )


def test_checkpoint_template_with_too_many_steps_is_refused_at_load(tmp_path, store):
    text = config_text().split("[[checkpoints]]")[0] + (
        '[checkpoint_set]\ntemplate = "global_step{step}"\nstart = 0\nstop = 1000000000000\nevery = 1\n'
    )
    config = write(tmp_path / "run.toml", text)
    started = time.perf_counter()
    line = assert_refused(
        ["run", config, "--out", store], names=config, says="1,000,000,000,001 checkpoints", store=store
    )
    assert "[checkpoint_set]" in line and time.perf_counter() - started < 30
    # A config built in code, past the declared check, is refused by the resolver before it builds a name.
    cfg = config_from_dict({"model": {"id": "org/model"}})
    cfg.checkpoint_set.template, cfg.checkpoint_set.stop, cfg.checkpoint_set.every = "s{step}", 10**12, 1
    with pytest.raises(CheckpointError, match="1,000,000,000,000 checkpoints"):
        resolve_set(cfg)


def test_checkpoint_template_of_a_sane_size_still_resolves():
    cfg = config_from_dict(
        {"model": {"id": "org/model"}, "checkpoint_set": {"template": "global_step{step}", "stop": 3000, "every": 1000}}
    )
    assert [c.name for c in resolve_set(cfg)] == ["global_step1000", "global_step2000", "global_step3000"]


# --- steering settings the model cannot honour are refused before the first checkpoint --------------------------


@pytest.mark.parametrize(
    "args, names, says",
    [
        (["--max-new-tokens", "100"], "--max-new-tokens", f"reads at most {TINY_POSITIONS} positions"),
        (["--max-new-tokens", str(TINY_POSITIONS)], "--max-new-tokens", "use max_new_tokens <= 47"),
        (["--max-new-tokens", "1000000000"], "--max-new-tokens", "does not fit"),
        (["--prompts", "Montag " * 60], "--prompts", "nothing is left to generate: shorten the prompt"),
        (["--prompts", "|Montag", "--max-new-tokens", "46"], "--max-new-tokens", "(prompt 'Montag' is"),
        (["--temperature", "1e-300"], "--temperature", "must be >= 0.01, got 1e-300 (below it exp(logit"),
        (["--temperature", "0.001"], "--temperature", "overflows float32"),
        (["--temperature", "0"], "--temperature", "must be > 0"),
    ],
)
def test_steering_the_model_cannot_honour_is_refused_up_front(args, names, says, store, monkeypatch):
    import precompute.model

    def never(*_a, **_k):
        raise AssertionError("a checkpoint was loaded before the settings were checked")

    monkeypatch.setattr(precompute.model, "load_checkpoint", never)
    assert_refused(["steer", store, *here(), "--seeds", "0", *args], names=names, says=says, store=store)


def test_steering_that_fits_exactly_still_runs(store):
    result = runner.invoke(
        app,
        [
            "steer",
            str(store),
            *here(),
            "--checkpoints",
            checkpoints()[-1].name,
            "--seeds",
            "0",
            "--n-neurons",
            "0",
            "--prompts",
            "",
            "--max-new-tokens",
            "47",
            "--temperature",
            "0.01",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "steering, names, says",
    [
        ("max_new_tokens = 100", "[steering] max_new_tokens", f"reads at most {TINY_POSITIONS} positions"),
        ("temperature = 1e-300", "[steering] temperature", "must be >= 0.01"),
        (f'prompts = ["{"Montag " * 60}"]', "[steering] prompts", "shorten the prompt"),
    ],
)
def test_run_refuses_steering_the_model_cannot_honour_before_any_compute(steering, names, says, tmp_path, store):
    text = config_text(extra=f'[steering]\nenabled = true\nconcepts = ["monday"]\nsource_langs = ["de"]\n{steering}')
    config = write(tmp_path / "run.toml", text)
    line = assert_refused(["run", config, "--out", store], names=config, says=says, store=store)
    assert names in line, line


def test_steer_checkpoint_guards_a_shorter_context_itself():
    """The last guard, for a caller that did not check: nothing is generated past the model's positions."""
    from precompute.config import SteeringSpec
    from precompute.model import ModelLayout, load_checkpoint
    from precompute.steering.intervene import SteeringError
    from precompute.steering.stage import plan_steering

    loaded = load_checkpoint(str(checkpoints()[-1].path), device="cpu", dtype="float32")
    sentences = pl.DataFrame(
        schema={"concept_id": pl.Utf8, "lang": pl.Utf8, "text": pl.Utf8, "span_start": pl.Int64, "span_end": pl.Int64}
    )
    plan = plan_steering(
        SteeringSpec(n_neurons=[0], seeds=[0], max_new_tokens=TINY_POSITIONS),
        known_concepts=["c"],
        langs=["en", "de"],
        sentences=sentences,
        default=["c"],
        where="test",
    )
    with pytest.raises(SteeringError, match=f"reads at most {TINY_POSITIONS} positions"):
        steer_checkpoint(loaded, ModelLayout.of(loaded.model), plan, pl.DataFrame(), checkpoint="last")


# --- rich markup in store strings and help texts ---------------------------------------------------------------


def test_steer_help_keeps_bracketed_words():
    result = runner.invoke(app, ["steer", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", result.output)
    for words in ("[steering] concepts", "[steering] source_langs", "the run's [steering] setting"):
        assert words in text, words
    assert "(default:  " not in text and "run's  setting" not in text


MARKUP_CONCEPT = "[/b]monday[bold][link=http://203.0.113.9]x"
MARKUP_CHECKPOINT = "step[/]12[red]"


def test_markup_in_store_strings_is_printed_as_text(store):
    """A concept id and a checkpoint name holding rich markup: the notes and the progress show them as typed."""
    with duckdb.connect(str(store)) as con:
        rename_everywhere(con, "concept_id", "monday", MARKUP_CONCEPT)
        rename_everywhere(con, "checkpoint", checkpoints()[-1].name, MARKUP_CHECKPOINT)
    # n_neurons 6 is above the 5 experts stored ([experts] top_k = 5): a note names the concept and checkpoint.
    result = runner.invoke(
        app,
        [
            "steer",
            str(store),
            *here(),
            "--concepts",
            MARKUP_CONCEPT,
            "--source-langs",
            "de",
            "--checkpoints",
            MARKUP_CHECKPOINT,
            "--n-neurons",
            "6",
            "--seeds",
            "0",
            "--max-new-tokens",
            "2",
            "--device",
            "cpu",
        ],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "MarkupError" not in result.output
    flat = result.stderr.replace("\n", "")
    assert f"note: {MARKUP_CHECKPOINT}: only 5 experts stored for {MARKUP_CONCEPT!r}/'de'" in flat, result.stderr
    assert f"checkpoint {MARKUP_CHECKPOINT}" in flat


def test_markup_in_an_unknown_concept_is_one_error_line(store):
    assert_refused(
        ["steer", store, "--concepts", MARKUP_CONCEPT], names=repr(MARKUP_CONCEPT), says="unknown concept", store=store
    )


# --- a local checkpoint that is not found is never asked of the hub ----------------------------------------------


def test_steer_without_config_dir_says_where_it_looked_and_asks_no_hub(store, tmp_path, no_network, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the run config's folder: the recorded relative sources are not found here
    line = assert_refused(["steer", store, "--seeds", "0"], names=store, says="local checkpoint folder", store=store)
    assert "--config-dir" in line and str(tmp_path.resolve()) in line and "hub was not asked" in line, line
    assert "unreachable" not in line and no_network == []


def test_steer_with_a_wrong_config_dir_names_both_places(store, tmp_path, no_network, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wrong = tmp_path / "elsewhere"
    wrong.mkdir()
    line = assert_refused(
        ["steer", store, "--config-dir", wrong, "--seeds", "0"], names=store, says="not found (looked in", store=store
    )
    assert str(wrong.resolve()) in line and str(tmp_path.resolve()) in line and no_network == [], line


@pytest.mark.parametrize(
    "name, local",
    [
        ("gpt2", False),
        ("EleutherAI/pythia-70m", False),
        ("org/model.v2-x_y", False),
        ("./ckpts", True),
        ("../ckpts/step_3", True),
        ("/abs/ckpt", True),
        ("~/ckpt", True),
        ("ckpts/run/step_3", True),
        ("ckpts\\step_3", True),
        ("org/", True),
        ("with space", True),
        ("-leading", True),
        (".hidden", True),
    ],
)
def test_local_looking_names(name, local):
    assert looks_like_local_path(name) is local


@pytest.mark.parametrize("name", ["./nope", "../nope/ckpt", "runs/a/b", "/no/such/folder"])
def test_local_looking_model_is_never_sent_to_the_hub(name, no_network, tmp_path):
    with pytest.raises(CheckpointError, match="no such local folder") as err:
        list_hub_branches(name)
    assert "hub was not asked" in str(err.value)
    with pytest.raises(CheckpointError, match="no such local folder"):
        resolve_model_checkpoints(name, base_dir=tmp_path)
    cfg = config_from_dict(
        {"model": {"id": name}, "checkpoint_set": {"template": "s{step}", "steps": [1]}}, base_dir=tmp_path
    )
    with pytest.raises(CheckpointError, match="not a hub id"):
        resolve_set(cfg)
    assert no_network == []


def test_checkpoints_command_on_a_missing_local_folder(tmp_path, no_network):
    missing = "./no-such-checkpoints"
    assert_refused(["checkpoints", missing], names=missing, says="no such local folder")
    assert no_network == []


@pytest.mark.parametrize(
    "layers, says",
    [
        ("0-999999999999", "holds 1,000,000,000,000 values in all; at most 10,000"),
        ("0-5,3-10001", "at most 10,000"),
        ("3-1", "runs backwards"),
        ("1,,2", "expected layer numbers and ranges"),
    ],
)
def test_run_layers_range_is_checked_before_it_is_built(layers, says, tmp_path):
    """--layers is refused in one line, at once (it was expanded first: 10^12 layers grew without bound)."""
    config = tmp_path / "run.toml"
    config.write_text(config_text(), encoding="utf-8")
    started = time.perf_counter()
    assert_refused(["run", config, "--out", tmp_path / "s.duckdb", "--layers", layers], names="--layers", says=says)
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "s.duckdb").exists()
