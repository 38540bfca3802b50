"""Readers and writers: what readers see while a real run writes, and a second writer refused.

While a real ``precompute run`` writes a store, ``precompute info`` and the explorer's queries on the same
path read the last complete state, and see the new checkpoints once they are published; a second
``precompute run`` on the store is refused at once with one clear line. The writer is paused at exact
points with ``CROSSLING_FAULT=stop@...`` (SIGSTOP), inspected, then resumed with SIGCONT or killed.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time

import pytest

from explorer import queries as Q
from explorer.queries import StoreConnection
from precompute.cli import app
from precompute.store import StoreLockedError, StoreWriter
from precompute.store import lock as store_module  # the module that takes the flock
from tests.support.reliability import (
    assert_complete_prefix,
    assert_same_rows,
    checkpoint_names,
    killed,
    leftovers,
    precompute_cmd,
    private_copies,
    reference_store,
    run_config,
    runner,
    subprocess_env,
    workdir,
)


def store_version(path) -> tuple[int, int, int]:
    """The explorer's cache key for a store (``explorer.store_context.store_version``)."""
    from explorer.store_context import store_version as explorer_store_version

    return explorer_store_version(path)


def wait_until_paused(proc: subprocess.Popen, log, what: str) -> None:
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        proc.returncode = os.waitstatus_to_exitcode(status)
        pytest.fail(f"precompute ended ({proc.returncode}) instead of pausing {what}:\n{log.read_text()[-3000:]}")


def info_checkpoints(store) -> list[str]:
    result = runner.invoke(app, ["info", str(store), "--json"])
    assert result.exit_code == 0, result.output
    return [c["checkpoint"] for c in json.loads(result.stdout)["checkpoints"]]


def explorer_checkpoints(con: StoreConnection) -> list[str]:
    run_id = Q.runs(con)["run_id"][0]
    return Q.checkpoints(con, run_id)["checkpoint"].to_list()


@pytest.mark.slow
def test_readers_see_last_complete_state_and_second_writer_is_refused(tmp_path):
    a, b, c = checkpoint_names()
    store = tmp_path / "store.duckdb"
    log = tmp_path / "precompute.log"
    # Publish #1 is the run's inputs, #2 the first checkpoint; commit #3 is the second checkpoint's.
    fault = "stop@store.published:2,stop@store.committed:3"
    with log.open("w") as err:
        proc = subprocess.Popen(
            precompute_cmd("run", run_config(), "--out", store),
            env=subprocess_env(fault),
            cwd=workdir(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        reference = reference_store()  # built (once) while the writer starts up
        wait_until_paused(proc, log, "after publishing the first checkpoint")
        # Readers: the last complete state.
        assert info_checkpoints(store) == [a]
        held = StoreConnection(store)  # an explorer session that stays open across the next publish
        assert explorer_checkpoints(held) == [a]
        version = store_version(store)

        # A second writer: refused at once, one line, the store untouched.
        before = store.read_bytes()
        start = time.monotonic()
        second = runner.invoke(app, ["run", str(run_config()), "--out", str(store)])
        assert time.monotonic() - start < 60
        assert second.exit_code == 1, second.output
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "another precompute is writing this store" in errors[0], second.stderr
        assert str(store) in errors[0]
        assert "Traceback" not in second.output
        assert store.read_bytes() == before

        os.kill(proc.pid, signal.SIGCONT)
        wait_until_paused(proc, log, "between commit and rename of the second checkpoint")
        # The second checkpoint is committed in the writer's private copy; readers still see the first only.
        assert private_copies(store) == [f"{store.name}.parts/000002.duckdb.tmp-{proc.pid}"]
        assert info_checkpoints(store) == [a]
        assert explorer_checkpoints(held) == [a]
        fresh = StoreConnection(store)
        assert explorer_checkpoints(fresh) == [a]
        fresh.close()
        assert store_version(store) == version

        # Killed from outside while its store write is half done (committed, not renamed).
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed(proc)
    assert assert_complete_prefix(store, reference) == [a]

    # Resume: the dead writer's lock does not block, its private copy is cleared, the rest is published.
    result = runner.invoke(app, ["run", str(run_config()), "--out", str(store)])
    assert result.exit_code == 0, result.output
    assert "2 checkpoint(s) written, 1 already present" in result.stdout
    assert store_version(store) != version  # the explorer's cache key changes: it reopens the store
    assert explorer_checkpoints(held) == [a]  # an open session keeps reading its (complete) snapshot
    held.close()
    reopened = StoreConnection(store)
    assert explorer_checkpoints(reopened) == [a, b, c]
    reopened.close()
    assert info_checkpoints(store) == [a, b, c]
    assert_same_rows(store, reference)
    assert leftovers(store) == []


def test_second_writer_is_refused_and_the_lock_is_released_on_exit(tmp_path):
    store = tmp_path / "s.duckdb"
    with StoreWriter(store):
        with pytest.raises(StoreLockedError, match="another precompute is writing"):
            StoreWriter(store).__enter__()
    with StoreWriter(store):  # released on exit: the next writer gets it
        pass
    assert leftovers(store) == []


def test_lock_survives_the_unlink_race(tmp_path, monkeypatch):
    """A writer that locks the lock file just as the previous writer unlinks it must not believe it holds
    the lock (a third writer would create a new lock file and write at the same time)."""
    store = tmp_path / "s.duckdb"
    lock = store.with_name(store.name + ".lock")
    real_flock = fcntl.flock
    calls = []

    def flock_then_previous_writer_unlinks(fd, op):
        real_flock(fd, op)
        calls.append(op)
        if len(calls) == 1 and op & fcntl.LOCK_EX:
            lock.unlink()  # what the previous writer's __exit__ does, right after our flock

    monkeypatch.setattr(store_module.fcntl, "flock", flock_then_previous_writer_unlinks)
    with StoreWriter(store) as writer:
        assert os.fstat(writer._lock_fd).st_ino == os.stat(lock).st_ino
        monkeypatch.setattr(store_module.fcntl, "flock", real_flock)
        with pytest.raises(StoreLockedError):
            StoreWriter(store).__enter__()
    assert len(calls) >= 2  # it noticed, and locked the file that is there now
