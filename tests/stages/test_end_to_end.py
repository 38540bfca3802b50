"""The whole pipeline on a tiny trained model, through the CLI: run, resume, info, report."""

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from precompute.analysis.chance import random_ap
from precompute.cli import app
from precompute.inputs.concepts import DEFAULT_CONCEPT_SET

runner = CliRunner()

CONCEPTS = ["monday", "tuesday", "march", "april", "brazil", "india"]
LANGS = ["en", "de", "ru", "zh"]


@pytest.fixture(scope="module")
def tiny_run(tiny_checkpoints) -> Path:
    """A config over three checkpoints of a tiny model trained on the demo corpus (tests/conftest.py)."""
    checkpoints = tiny_checkpoints
    root = checkpoints[0].path.parent.parent
    lines = [
        "[model]",
        'id = "tiny"',
        'card = "tiny test model"',
        "[data]",
        f'concepts = "{DEFAULT_CONCEPT_SET}"',
        f"languages = {json.dumps(LANGS)}",
        f"concept_ids = {json.dumps(CONCEPTS)}",
        "max_contexts = 8",
        "[experts]",
        "top_k = 5",
        "min_langs = 2",
        "[probes]",
        "seeds = [0]",
        "max_iter = 100",
    ]
    for ck in checkpoints:
        lines += [
            "[[checkpoints]]",
            f'name = "{ck.name}"',
            f'path = "ckpts/{ck.path.name}"',
            f"step = {ck.step}",
            f"tokens_seen = {ck.tokens_seen}",
        ]
    config = root / "run.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def test_run_resume_info_report(tiny_run, tmp_path):
    store = tmp_path / "store.duckdb"
    result = runner.invoke(app, ["run", str(tiny_run), "--out", str(store)])
    assert result.exit_code == 0, result.output
    assert "3 checkpoint(s) written" in result.output

    con = duckdb.connect(str(store), read_only=True)
    counts = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in (
            "checkpoints",
            "probe_results",
            "probe_per_language",
            "neuron_ap",
            "neuron_summary",
            "expert_overlap",
            "shared_experts",
            "sentences",
            "layers",
            "stage_timings",
        )
    }
    assert all(n > 0 for n in counts.values()), counts
    assert counts["checkpoints"] == 3
    assert counts["sentences"] == len(CONCEPTS) * len(LANGS) * 8
    # Top-K rows: checkpoints x languages x concepts x K, ranks 1..K.
    assert counts["neuron_ap"] == 3 * len(LANGS) * len(CONCEPTS) * 5
    assert con.execute("SELECT min(rank), max(rank) FROM neuron_ap").fetchone() == (1, 5)
    # Every neuron of both layers is summarised at every checkpoint.
    n_neurons = con.execute("SELECT sum(n_neurons) FROM layers").fetchone()[0]
    assert counts["neuron_summary"] == 3 * n_neurons
    # One row per unordered language pair and concept.
    assert counts["expert_overlap"] == 3 * len(CONCEPTS) * 6
    acc = con.execute("SELECT min(accuracy), max(accuracy) FROM probe_results").fetchone()
    assert 0.0 <= acc[0] <= acc[1] <= 1.0
    config_json = con.execute("SELECT config_json FROM runs").fetchone()[0]
    assert json.loads(config_json)["experts"]["top_k"] == 5
    # Chance levels: per (checkpoint, lang, concept) the random scorer's AP (8 of the 48 contexts of
    # a language) and a permutation threshold; exact random-set overlap per checkpoint; headline intervals.
    # The permutation test behind "significant": p-values at the default 999 shuffles, BH over the checkpoint's cells.
    chance = con.execute(
        "SELECT count(*), min(random_ap), max(random_ap), count(threshold), "
        "min(threshold_uncorrected), max(threshold), min(positive_rate), max(positive_rate), "
        "min(p_value), max(p_resolution), count(DISTINCT correction), any_value(correction), "
        "min(n_shuffles), max(n_cells), count(*) FILTER (WHERE significant <> (best_ap > threshold)) "
        "FROM chance_ap"
    ).fetchone()
    assert chance[0] == chance[3] == 3 * len(LANGS) * len(CONCEPTS)
    n_ctx = 48  # contexts per language; 1 / len(CONCEPTS) of them positive
    assert chance[1] == pytest.approx(random_ap(n_ctx // len(CONCEPTS), n_ctx)) == pytest.approx(chance[2])
    assert chance[6] == pytest.approx(1 / len(CONCEPTS)) == pytest.approx(chance[7])  # the constant scorer's AP
    assert chance[1] < chance[4] and chance[5] <= 1.0  # the best of many units beats a random scorer
    assert chance[8] >= 1 / 1000 and chance[9] == pytest.approx(1 / 1000)  # no p below the resolution
    assert chance[10:14] == (1, "bh", 999, len(LANGS) * len(CONCEPTS)) and chance[14] == 0
    assert con.execute("SELECT count(*), min(jaccard_mean) > 0 FROM overlap_chance").fetchone() == (3, True)
    assert con.execute("SELECT count(*), count(lo) FROM headline_ci").fetchone() == (12, 12)
    assert con.execute(
        "SELECT count(*) FROM probe_results WHERE majority_baseline IS NULL "
        "OR (control_accuracy IS NULL) <> (representation = 'mean') "  # control task: token probes only
        "OR accuracy_lo > accuracy OR accuracy_hi < accuracy"
    ).fetchone() == (0,)
    con.close()

    before = store.read_bytes()
    again = runner.invoke(app, ["run", str(tiny_run), "--out", str(store)])
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output
    assert store.read_bytes() == before

    info = runner.invoke(app, ["info", str(store), "--json"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.output)
    assert {"model", "checkpoints", "languages", "concepts", "tables"} <= set(data)
    assert data["model"] == "tiny"
    assert data["languages"] == sorted(LANGS)
    assert data["concepts"] == sorted(CONCEPTS)
    assert [c["step"] for c in data["checkpoints"]] == sorted(c["step"] for c in data["checkpoints"])
    assert data["tables"]["neuron_ap"] == counts["neuron_ap"]

    human = runner.invoke(app, ["info", str(store)])
    assert human.exit_code == 0 and "neuron_ap" in human.output

    report = runner.invoke(app, ["report", str(store)])
    assert report.exit_code == 0, report.output
    assert "LID probe accuracy per layer" in report.output
    assert "Jaccard" in report.output
    assert "(chance " in report.output and "95% CI" in report.output and "Emergence" in report.output


def test_force_recomputes_identically(tiny_run, tmp_path):
    store = tmp_path / "store.duckdb"
    assert runner.invoke(app, ["run", str(tiny_run), "--out", str(store)]).exit_code == 0
    query = "SELECT * FROM neuron_ap ORDER BY checkpoint, lang, concept_id, rank"
    con = duckdb.connect(str(store), read_only=True)
    first = con.execute(query).fetchall()
    con.close()
    result = runner.invoke(app, ["run", str(tiny_run), "--out", str(store), "--force"])
    assert result.exit_code == 0 and "3 checkpoint(s) written" in result.output
    con = duckdb.connect(str(store), read_only=True)
    assert con.execute(query).fetchall() == first
    assert con.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 3
    con.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "missing.toml", "--out", "x.duckdb"], "no such config file"),
        (["info", "missing.duckdb"], "no such store"),
        (["report", "missing.duckdb"], "no such store"),
    ],
)
def test_cli_bad_input_is_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_bad_config_values(tmp_path):
    cfg = tmp_path / "bad.toml"
    base = f'[model]\nid = "m"\n[data]\nconcepts = "{DEFAULT_CONCEPT_SET}"\n'
    cases = {
        base + 'languages = ["xx"]\n[[checkpoints]]\nname = "a"\npath = "nowhere"\n': "xx",
        base + '[[checkpoints]]\nname = "a"\npath = "nowhere"\n': "nowhere",
        base + "[extract]\nbatch = 3\n": "unknown key 'extract.batch'",
        base: "no checkpoints listed",
    }
    for text, message in cases.items():
        cfg.write_text(text, encoding="utf-8")
        result = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "s.duckdb")])
        assert result.exit_code == 1, (text, result.output)
        assert message in result.output, (message, result.output)
        assert "Traceback" not in result.output
        assert not (tmp_path / "s.duckdb").exists()


def test_layer_subset_keeps_model_layer_indices(tiny_run, tmp_path):
    """--layers-style restriction: stored MLP layer numbers are the model's block indices."""
    config = tmp_path / "layers.toml"
    text = tiny_run.read_text(encoding="utf-8").replace("[experts]", "[extract]\nlayers = [1]\n[experts]")
    config.write_text(text.replace('path = "ckpts/', f'path = "{tiny_run.parent}/ckpts/'), encoding="utf-8")
    store = tmp_path / "layers.duckdb"
    result = runner.invoke(app, ["run", str(config), "--out", str(store)])
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(store), read_only=True)
    for table in ("layers", "neuron_ap", "neuron_summary", "neuron_counts"):
        assert con.execute(f"SELECT DISTINCT layer FROM {table}").fetchall() == [(1,)], table
    con.close()
