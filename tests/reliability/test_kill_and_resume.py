"""Kill and resume: a run killed anywhere leaves whole checkpoints, and its resume equals an uninterrupted run.

A real ``precompute run`` process is SIGKILLed in the middle of a checkpoint -- during extraction, during
expert scoring, during the store write -- and resumed. After every kill the published store opens and
holds only whole checkpoints, row for row those of an uninterrupted run; after the resume it equals the
uninterrupted run's store. The kills come from ``precompute.faults`` (deterministic points) and, once,
from outside the process at a moment read off its progress output. (A pipeline killed from outside while
its store write is paused between commit and rename is in ``tests/reliability/test_readers_and_writers.py``.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from precompute.cli import app
from precompute.store import CHECKPOINT_TABLES
from tests.support.reliability import (
    assert_complete_prefix,
    assert_same_rows,
    checkpoint_names,
    copy_of_reference,
    killed,
    leftovers,
    precompute_cmd,
    private_copies,
    published_checkpoints,
    raw_connect,
    reference_store,
    run_config,
    runner,
    subprocess_env,
    workdir,
    write_checkpoint_from,
)

pytestmark = pytest.mark.slow


def resume(store) -> str:
    """Resume in this process: the dead writer's flock must not block it."""
    result = runner.invoke(app, ["run", str(run_config()), "--out", str(store)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_kill_during_extraction_and_scoring_then_resume(tmp_path):
    a, b, c = checkpoint_names()
    store = tmp_path / "store.duckdb"
    # (fault, what it interrupts, checkpoints published afterwards)
    chain = [
        # Arrivals count per process: the 3rd extraction batch is inside the first checkpoint.
        ("kill@extract.batch:3", "extraction of the first checkpoint", []),
        # Resumed: 3 languages scored for the first checkpoint, then the 2nd language of the second.
        ("kill@experts.lang:5", "expert scoring of the second checkpoint", [a]),
    ]
    for fault, what, expected in chain:
        proc = subprocess.Popen(
            precompute_cmd("run", run_config(), "--out", store),
            env=subprocess_env(fault),
            cwd=workdir(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        reference = reference_store()  # built (once) while the first process starts up
        _, err = proc.communicate(timeout=300)
        assert killed(proc), f"{fault}: exit {proc.returncode}\n{err[-2000:]}"
        assert f"crossling fault: kill at {fault.split('@')[1].replace(':', '#')}" in err
        done = assert_complete_prefix(store, reference)
        assert done == expected, f"after a kill during {what}: {done}"
        # The lock file stays behind; the kernel released the dead process's flock with it.
        assert store.name + ".lock" in leftovers(store)
    assert private_copies(store) == []  # killed while computing: nothing half-written next to the store

    out = resume(store)
    assert "2 checkpoint(s) written, 1 already present" in out
    assert published_checkpoints(store) == [a, b, c]
    assert_same_rows(store, reference)
    assert leftovers(store) == []  # private copies of dead writers removed, lock file gone


WRITE_ONE_CHECKPOINT = (
    "import sys; from tests.support.reliability import write_checkpoint_from; write_checkpoint_from(*sys.argv[1:4])"
)


def store_without_last_checkpoint(folder):
    """A copy of the reference store that lacks its last checkpoint (as after a crash before it)."""
    store = copy_of_reference(folder)
    last = checkpoint_names()[-1]
    con = raw_connect(store)
    con.execute("DELETE FROM checkpoints WHERE checkpoint = ?", [last])
    for table in CHECKPOINT_TABLES:
        con.execute(f"DELETE FROM {table} WHERE checkpoint = ?", [last])
    con.execute("CHECKPOINT")
    con.close()
    return store


@pytest.mark.parametrize(
    "fault, published",
    [
        ("kill@store.copied:1", False),  # private copy made, transaction not started
        ("kill@store.insert:4", False),  # half of the checkpoint's tables inserted, not committed
        ("kill@store.committed:1", False),  # committed and synced, not renamed
        ("kill@store.published:1", True),  # renamed: the checkpoint is out, whole
    ],
)
def test_kill_inside_the_store_write(tmp_path, fault, published):
    """Every step of one checkpoint's write, killed: the store is the old one or the new one, never between."""
    reference = reference_store()
    store = store_without_last_checkpoint(tmp_path)
    before = store.read_bytes()
    last = checkpoint_names()[-1]
    proc = subprocess.run(
        [sys.executable, "-c", WRITE_ONE_CHECKPOINT, str(reference), str(store), last],
        env=subprocess_env(fault),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed(proc), proc.stderr
    done = assert_complete_prefix(store, reference)
    if published:
        assert done == checkpoint_names()
    else:
        assert done == checkpoint_names()[:-1]
    # Stale files of the killed writer: its private part file (and WAL) and the lock file; the published store
    # file itself is untouched either way (the checkpoint, once published, is a part beside it).
    stale = private_copies(store)
    assert bool(stale) != published, stale
    part = rf"{re.escape(store.name)}\.parts/\d{{6}}\.duckdb\.tmp-\d+(\.wal)?"
    assert all(re.fullmatch(part, name) for name in stale), stale
    assert store.read_bytes() == before
    # The next writer (here, in this process) is not blocked by the dead writer's lock, removes its stale
    # private copy, and writes the checkpoint once (replacing it where it was already published).
    write_checkpoint_from(reference, store, last)
    assert leftovers(store) == []
    assert_same_rows(store, reference)


def test_sigkill_from_outside_at_a_moment_read_from_progress(tmp_path):
    """No fault hook: kill -9 as soon as the process says it started the second checkpoint."""
    a, b, c = checkpoint_names()
    store = tmp_path / "store.duckdb"
    proc = subprocess.Popen(
        precompute_cmd("run", run_config(), "--out", store),
        env=subprocess_env(),
        cwd=workdir(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if f"checkpoint {b}" in line:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.stderr.close()
        proc.wait(timeout=120)
    reference = reference_store()
    assert killed(proc), "".join(seen)[-2000:]
    done = assert_complete_prefix(store, reference)
    assert done in ([a], [a, b]), done  # the second checkpoint was loading or being analysed
    resume(store)
    assert_same_rows(store, reference)
    assert leftovers(store) == []
