"""The store's write lock: one file ``STORE.lock`` next to the store's *real* path, held with ``flock``.

The writer takes it exclusively; anyone may ask whether a writer holds it now (the merge warns about a shard
that is still being written). The lock is taken on the resolved path, so two writers that reach one file
through different names (a symlink and its target) share one lock and the second is refused.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from precompute.store.errors import StoreLockedError


def real_path(path: str | Path) -> Path:
    """The file a store path names after following every symlink (also a dangling one, to the file it names)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def lock_path(path: str | Path) -> Path:
    """The lock file of the store at ``path`` (next to its real file)."""
    real = real_path(path)
    return real.with_name(real.name + ".lock")


def acquire(path: str | Path, *, shown: str | Path | None = None) -> int:
    """An exclusive, non-blocking flock on the store's lock file (released by the kernel if we die).

    Raises :class:`StoreLockedError` (naming ``shown``, the path as the user wrote it) when another process holds it.
    """
    lock = lock_path(path)
    shown = shown if shown is not None else path
    for _ in range(10):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(f"{shown}: another precompute is writing this store (lock {lock})") from None
        # The previous holder unlinks the lock file on exit: a lock on an unlinked file locks nothing.
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise StoreLockedError(f"{shown}: the lock file {lock} keeps changing; another precompute is starting")


def release(fd: int, path: str | Path) -> None:
    """Unlock and remove the lock file (while we still hold it, so no one else's lock is removed)."""
    try:
        os.unlink(lock_path(path))
    except FileNotFoundError:
        pass
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def writer_active(path: str | Path) -> bool:
    """Whether a precompute process holds the store's write lock right now."""
    lock = lock_path(path)
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
