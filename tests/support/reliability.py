"""Shared setup of the reliability tests (``tests/reliability/``).

One tiny trained model (three checkpoints), one run config over a small slice of the built-in concept set,
and one *reference store*: the same config run once, uninterrupted, in this process. Everything is built
lazily, once per pytest process, in a temporary folder, so that the reliability modules share it.

Also: running ``precompute`` as a real subprocess (optionally with a fault from ``precompute.faults``), reading
a store as sorted rows without the columns that hold wall-clock times, and the invariants a store must keep
after any fault.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from precompute.inputs.concepts import DEFAULT_CONCEPT_SET
from precompute.store import CHECKPOINT_TABLES, DDL, open_readonly

LANGS = ["en", "de", "ru"]
CONCEPTS = ["monday", "tuesday", "march", "april"]
MAX_CONTEXTS = 6
# Columns that hold wall-clock times or measurements of speed: they differ between any two runs.
VOLATILE = {
    "runs": {"started_at", "finished_at"},
    "checkpoints": {"completed_at"},
    "stage_timings": {"seconds", "tokens_per_s", "peak_mem_mb"},
}
VOLATILE_META = {"created_at", "store_id", "store_generation", "store_epoch"}  # random per store / per write

runner = CliRunner()


@cache
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="crossling-reliability-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@cache
def checkpoints():
    """Three checkpoints (steps 3, 6, 12) of the tiny demo model, trained once."""
    from precompute.demo.train import tiny_test_model

    return tuple(tiny_test_model(workdir() / "ckpts", steps=12))


def config_text(
    *,
    data: str | None = None,
    extra: str = "",
    extra_checkpoints: list[tuple[str, str]] = (),
    last_checkpoint_only: bool = False,
) -> str:
    """The reference run's TOML, with the [data] table, extra tables or extra checkpoints replaced/added.

    ``batch_tokens = 256`` splits each checkpoint's extraction into several batches, so that a fault can
    land in the middle of it.
    """
    if data is None:
        data = (
            f'concepts = "{DEFAULT_CONCEPT_SET}"\nlanguages = {json.dumps(LANGS)}\n'
            f"concept_ids = {json.dumps(CONCEPTS)}\nmax_contexts = {MAX_CONTEXTS}"
        )
    lines = [
        "[model]",
        'id = "tiny"',
        'card = "tiny reliability-test model"',
        "[data]",
        data,
        "[extract]",
        "batch_tokens = 256",
        "[experts]",
        "top_k = 5",
        "min_langs = 2",
        "[probes]",
        "seeds = [0]",
        "max_iter = 100",
        'representations = ["mean"]',
        extra,
    ]
    for ck in checkpoints()[-1:] if last_checkpoint_only else checkpoints():
        lines += [
            "[[checkpoints]]",
            f'name = "{ck.name}"',
            f'path = "{ck.path}"',
            f"step = {ck.step}",
            f"tokens_seen = {ck.tokens_seen}",
        ]
    for name, path in extra_checkpoints:
        lines += ["[[checkpoints]]", f'name = "{name}"', f'path = "{path}"', "step = 99"]
    return "\n".join(lines) + "\n"


@cache
def run_config() -> Path:
    path = workdir() / "run.toml"
    path.write_text(config_text(), encoding="utf-8")
    return path


def checkpoint_names() -> list[str]:
    return [ck.name for ck in checkpoints()]


@cache
def reference_store() -> Path:
    """The config run once, uninterrupted, in this process (read-only: tests copy it)."""
    from precompute.cli import app

    store = workdir() / "reference.duckdb"
    result = runner.invoke(app, ["run", str(run_config()), "--out", str(store)])
    assert result.exit_code == 0, result.output
    store.chmod(0o444)
    return store


def copy_of_reference(folder: Path, name: str = "store.duckdb") -> Path:
    dst = folder / name
    shutil.copyfile(reference_store(), dst)
    dst.chmod(0o644)
    return dst


# --- running precompute for real ---------------------------------------------------------------------


def precompute_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "precompute.cli", *map(str, args)]


REPO = Path(__file__).resolve().parents[2]


def subprocess_env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CROSSLING_FAULT", "CROSSLING_DEBUG")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if fault:
        env["CROSSLING_FAULT"] = fault
    return env


def run_precompute(*args: str, fault: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``precompute ARGS`` in a fresh Python process (what a GPU job runs), optionally with a fault."""
    return subprocess.run(
        precompute_cmd(*args),
        env=subprocess_env(fault),
        cwd=workdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_checkpoint_from(reference: str | Path, store: str | Path, checkpoint: str) -> None:
    """Write one checkpoint of the reference store into ``store`` through ``StoreWriter`` (one transaction)."""
    from precompute.store import CheckpointRows, StoreWriter

    con = open_readonly(reference)
    try:
        run_id = con.execute("SELECT run_id FROM runs").fetchall()[0][0]
        step, revision, source, tokens, fingerprint = con.execute(
            "SELECT step, revision, source, tokens_seen, source_fingerprint FROM checkpoints WHERE checkpoint = ?",
            [checkpoint],
        ).fetchall()[0]
        tables = {
            t: con.sql(
                f"SELECT * EXCLUDE (run_id, checkpoint) FROM {t} WHERE checkpoint = $c", params={"c": checkpoint}
            ).pl()
            for t in CHECKPOINT_TABLES
        }
    finally:
        con.close()
    with StoreWriter(store) as writer:
        writer.write_checkpoint(
            run_id, CheckpointRows(checkpoint, step, revision, source, tokens, tables, source_fingerprint=fingerprint)
        )


def killed(proc: subprocess.CompletedProcess | subprocess.Popen) -> bool:
    return proc.returncode == -signal.SIGKILL


# --- reading stores ----------------------------------------------------------------------------------


def _norm(value):
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def store_rows(path: Path) -> dict[str, list[tuple]]:
    """Every table as a sorted list of rows (multiset), without the wall-clock columns."""
    con = open_readonly(path)
    try:
        out = {}
        for table in DDL:
            cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
            keep = [c for c in cols if c not in VOLATILE.get(table, set())]
            rows = con.execute(f"SELECT {', '.join(keep)} FROM {table}").fetchall()
            if table == "meta":
                rows = [r for r in rows if r[0] not in VOLATILE_META]
            out[table] = sorted((tuple(_norm(v) for v in r) for r in rows), key=repr)
        return out
    finally:
        con.close()


def columns(path: Path, table: str) -> list[str]:
    con = open_readonly(path)
    try:
        cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    finally:
        con.close()
    return [c for c in cols if c not in VOLATILE.get(table, set())]


def published_checkpoints(path: Path) -> list[str]:
    """Checkpoints a reader sees in the published store ([] when no store is published yet)."""
    if not path.exists():
        return []
    con = open_readonly(path)
    try:
        return [r[0] for r in con.execute("SELECT checkpoint FROM checkpoints ORDER BY step").fetchall()]
    finally:
        con.close()


def assert_same_rows(got: Path, want: Path) -> None:
    """Row for row equality of two stores (order-insensitive, wall-clock columns excluded)."""
    a, b = store_rows(got), store_rows(want)
    for table in DDL:
        assert a[table] == b[table], f"table {table}: {len(a[table])} rows vs {len(b[table])} in {want.name}"


def assert_complete_prefix(store: Path, reference: Path) -> list[str]:
    """The store after a fault: it opens, and holds exactly the rows the reference holds for the
    checkpoints it lists (none half-written, none duplicated, no rows of unlisted checkpoints).
    Returns the checkpoints it lists."""
    if not store.exists():
        return []  # killed before its first publish: there is nothing to read, and nothing half-written
    done = published_checkpoints(store)
    assert set(done) <= set(checkpoint_names()), done
    got, want = store_rows(store), store_rows(reference)
    for table in DDL:
        if table in CHECKPOINT_TABLES or table == "checkpoints":
            i = columns(reference, table).index("checkpoint")
            expected = [r for r in want[table] if r[i] in done]
            assert got[table] == expected, f"table {table} after a fault: rows differ for {done}"
        else:  # the run, its inputs and its layers: written once, before the first checkpoint
            assert got[table] == want[table], f"table {table} after a fault"
    return done


def leftovers(store: Path) -> list[str]:
    """Files next to the store other than the store itself (private copies, WAL, lock, the checkpoint parts'
    folder), and what is in the parts folder (as ``STORE.parts/NAME``)."""
    names = sorted(p.name for p in store.parent.iterdir() if p.name.startswith(store.name) and p != store)
    folder = store.parent / f"{store.name}.parts"
    if folder.is_dir():
        names += sorted(f"{folder.name}/{p.name}" for p in folder.iterdir())
    return names


def private_copies(store: Path) -> list[str]:
    return [n for n in leftovers(store) if ".tmp-" in n]


def raw_connect(path: Path, **kwargs) -> duckdb.DuckDBPyConnection:
    """A plain DuckDB connection (for tests that build odd stores)."""
    return duckdb.connect(str(path), **kwargs)


# --- the contract of a refused command (shared by the bad-input and hostile-input tests) ---


def snapshot(store: Path) -> tuple[bytes, list[str]]:
    return store.read_bytes(), leftovers(store)


def assert_refused(args: list[str], *, names: str | Path, says: str, store: Path | None = None) -> str:
    """Run the CLI; check exit != 0, one ``error:`` line naming ``names`` and saying ``says``, no traceback,
    and (if given) ``store`` byte-identical with no files left next to it. Returns the error line."""
    before = snapshot(store) if store is not None and store.exists() else None
    from precompute.cli import app

    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    line = errors[0]
    assert str(names) in line, f"the error does not name {names}: {line}"
    assert says in line, f"expected {says!r} in: {line}"
    if before is not None:
        assert snapshot(store) == before, "the store was touched"
    return line
