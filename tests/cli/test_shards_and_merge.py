"""Sharded runs and `precompute merge` on configs/tiny-local.toml, through the CLI.

The config is used verbatim, in a copy of the repository layout under a temporary folder:
``configs/tiny-local.toml``, ``data/concepts.parquet`` (a link to the built-in concept set) and
``data/tiny-local/`` (built by ``python -m tests.support.tiny_checkpoints``, as the config's comment documents).
Acceptance: shard 0/2 + shard 1/2 merged == the unsharded run, row for row in every table, ignoring only
timings (stage_timings seconds/tokens_per_s/peak_mem_mb, runs started_at/finished_at,
checkpoints.completed_at, meta created_at).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from precompute.cli import app
from precompute.inputs.concepts import DEFAULT_CONCEPT_SET
from precompute.store import DDL

pytestmark = pytest.mark.slow
runner = CliRunner()
REPO_ROOT = Path(__file__).resolve().parents[2]
TIMING_COLUMNS = {
    "stage_timings": {"seconds", "tokens_per_s", "peak_mem_mb"},
    "runs": {"started_at", "finished_at"},
    "checkpoints": {"completed_at"},
}


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def one_error_line(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("[transformers]")]
    assert len(lines) == 1, result.output
    return lines[0]


def table_rows(path: Path) -> dict[str, list]:
    """Every table's rows as a sorted list, timing columns left out."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for table in DDL:
            cols = [
                r[0]
                for r in con.execute(f"DESCRIBE {table}").fetchall()
                if r[0] not in TIMING_COLUMNS.get(table, set())
            ]
            where = (
                " WHERE key NOT IN ('created_at', 'store_id', 'store_generation', 'store_epoch')"
                if table == "meta"
                else ""
            )
            out[table] = sorted(map(repr, con.execute(f"SELECT {', '.join(cols)} FROM {table}{where}").fetchall()))
        return out
    finally:
        con.close()


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """A copy of the repository layout that configs/tiny-local.toml expects, prepared as documented."""
    root = tmp_path_factory.mktemp("tiny-local")
    (root / "configs").mkdir()
    shutil.copy(REPO_ROOT / "configs" / "tiny-local.toml", root / "configs" / "tiny-local.toml")
    (root / "data").mkdir()
    (root / "data" / "concepts.parquet").symlink_to(DEFAULT_CONCEPT_SET)
    built = subprocess.run(
        [sys.executable, "-m", "tests.support.tiny_checkpoints", str(root / "data" / "tiny-local")],
        cwd=REPO_ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0 and "3 checkpoints ready" in built.stdout, built.stdout + built.stderr
    return root


@contextlib.contextmanager
def slurm_array(**values: str):
    """Exactly these SLURM_ARRAY_* variables while the block runs (none outside a job array)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SLURM_ARRAY_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)
        os.environ.update(saved)


@pytest.fixture(scope="module")
def stores(layout) -> dict[str, Path]:
    config = layout / "configs" / "tiny-local.toml"
    out = layout / "stores"
    with slurm_array():  # even when the tests themselves run in a SLURM job array
        full = invoke("run", config, "--out", out / "all.duckdb")
    assert "3 checkpoint(s) written" in full.stdout
    first = invoke("run", config, "--shard", "0/2", "--out", out / "shard-{shard}.duckdb")
    assert "2 checkpoint(s) written" in first.stdout
    # The second shard as task 2 of a SLURM job array --array=1-2 (no --shard).
    with slurm_array(
        SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_MAX="2", SLURM_ARRAY_TASK_COUNT="2"
    ):
        second = invoke("run", config, "--out", out / "shard-{shard}.duckdb")
    assert "1 checkpoint(s) written" in second.stdout and "shard 1/2 (SLURM_ARRAY_TASK_ID=2" in second.output
    return {"config": config, "all": out / "all.duckdb", "s0": out / "shard-0.duckdb", "s1": out / "shard-1.duckdb"}


def checkpoints_of(path: Path) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT checkpoint FROM checkpoints ORDER BY step").fetchall()]
    finally:
        con.close()


def test_shards_split_round_robin(stores):
    assert checkpoints_of(stores["s0"]) == ["step_000003", "step_000012"]
    assert checkpoints_of(stores["s1"]) == ["step_000006"]


def test_merged_shards_equal_the_unsharded_run(stores, tmp_path):
    merged = tmp_path / "merged.duckdb"
    result = invoke("merge", stores["s0"], stores["s1"], "--out", merged)
    assert "3 checkpoint(s) added" in result.stdout
    expected, got = table_rows(stores["all"]), table_rows(merged)
    assert set(expected) == set(got)
    for table in expected:
        assert got[table] == expected[table], f"table {table} differs"
    assert sum(len(v) for v in got.values()) > 1000
    # Timestamps: the earliest start, the latest finish of the shards.
    con = duckdb.connect(str(merged), read_only=True)
    started, finished = con.execute("SELECT started_at, finished_at FROM runs").fetchone()
    con.close()
    shard_times = []
    for key in ("s0", "s1"):
        c = duckdb.connect(str(stores[key]), read_only=True)
        shard_times.append(c.execute("SELECT started_at, finished_at FROM runs").fetchone())
        c.close()
    assert started == min(t[0] for t in shard_times) and finished == max(t[1] for t in shard_times)
    info = invoke("info", merged, "--json")
    assert '"step_000006"' in info.stdout


def test_merge_never_duplicates_a_checkpoint(stores, tmp_path):
    out = tmp_path / "out.duckdb"
    invoke("merge", stores["s0"], "--out", out)
    assert checkpoints_of(out) == ["step_000003", "step_000012"]
    # Extending ALL: the unsharded store repeats s0's checkpoints with identical rows -> kept once.
    result = invoke("merge", stores["all"], stores["s1"], "--out", out)
    assert "1 checkpoint(s) added" in result.stdout and "3 duplicate(s) skipped" in result.stdout
    assert checkpoints_of(out) == ["step_000003", "step_000006", "step_000012"]
    assert table_rows(out) == table_rows(stores["all"])
    # Merging again changes nothing.
    again = invoke("merge", stores["s0"], stores["s1"], "--out", out)
    assert "0 checkpoint(s) added" in again.stdout
    assert table_rows(out) == table_rows(stores["all"])


def test_merge_refuses_a_duplicate_with_different_rows(stores, tmp_path):
    tampered = tmp_path / "tampered.duckdb"
    shutil.copy(stores["s1"], tampered)
    con = duckdb.connect(str(tampered))
    con.execute("UPDATE neuron_ap SET ap = ap / 2 WHERE rank = 1")
    con.close()
    out = tmp_path / "out.duckdb"
    line = one_error_line("merge", stores["all"], tampered, "--out", out)
    assert "step_000006" in line and "different rows (table neuron_ap)" in line
    assert str(tampered) in line and str(stores["all"]) in line
    assert not out.exists()


def test_merge_refuses_other_configs_models_and_concept_sets(stores, tmp_path):
    other = tmp_path / "layers.duckdb"
    invoke("run", stores["config"], "--shard", "1/2", "--layers", "1", "--out", other)
    line = one_error_line("merge", stores["s0"], other, "--out", tmp_path / "x.duckdb")
    assert f"{other} cannot be merged with {stores['s0']}" in line
    assert "different configs at extract.layers ([1] vs [])" in line

    for column, value, what in [
        ("model_id", "other-model", "different models"),
        ("concept_set_sha256", "0" * 64, "different concept sets"),
    ]:
        tampered = tmp_path / f"{column}.duckdb"
        shutil.copy(stores["s1"], tampered)
        con = duckdb.connect(str(tampered))
        con.execute(f"UPDATE runs SET {column} = ?", [value])
        con.close()
        line = one_error_line("merge", stores["s0"], tampered, "--out", tmp_path / "x.duckdb")
        assert what in line and str(tampered) in line
    # ALL holding another run is refused too, and left as it was.
    before = other.read_bytes()
    line = one_error_line("merge", stores["s0"], "--out", other)
    assert "different configs" in line
    assert other.read_bytes() == before
    assert not (tmp_path / "x.duckdb").exists()


def test_merge_input_errors_are_one_line(stores, tmp_path):
    assert "no such store" in one_error_line("merge", tmp_path / "missing.duckdb", "--out", tmp_path / "o.duckdb")
    assert "named twice" in one_error_line("merge", stores["s0"], stores["s0"], "--out", tmp_path / "o.duckdb")


def test_spilled_pooled_activations_equal_in_memory(layout, tmp_path):
    """ram_budget_gb tiny -> pooled arrays memory-mapped to spill_dir; same numbers, files gone afterwards."""
    import torch

    from precompute.config import load_config
    from precompute.extract import extract, pooled_nbytes, tokenize_contexts
    from precompute.model import ModelLayout, load_checkpoint
    from precompute.stages.extract import spill_directory

    cfg = load_config(layout / "configs" / "tiny-local.toml")
    cfg.extract.ram_budget_gb = 1e-6
    cfg.extract.spill_dir = str(tmp_path / "spill")
    loaded = load_checkpoint(str(layout / "data" / "tiny-local" / "step_000012"), device="cpu", dtype="float32")
    texts = ["Monday, 3 March", "el lunes", "3月3日", "понедельник"]
    contexts = tokenize_contexts(loaded.tokenizer, texts, [(0, 6), (3, 8), (0, 2), (0, 11)], 48)
    mlp = ModelLayout.of(loaded.model)
    nbytes = pooled_nbytes(loaded, mlp, len(texts))
    assert nbytes > 0
    where = spill_directory(cfg, nbytes)
    assert where == str(tmp_path / "spill")
    spilled = extract(loaded, mlp, contexts, batch_tokens=64, spill_dir=where)
    in_ram = extract(loaded, mlp, contexts, batch_tokens=64)
    for name in ("mlp_mean", "mlp_span", "mlp_active", "resid_mean", "resid_token"):
        assert torch.equal(getattr(spilled, name), getattr(in_ram, name)), name
    assert list((tmp_path / "spill").iterdir()) == []  # unlinked as soon as mapped
    cfg.extract.ram_budget_gb = 0
    assert spill_directory(cfg, nbytes) is None  # half the available RAM is plenty here
