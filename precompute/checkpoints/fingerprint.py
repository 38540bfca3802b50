"""What a checkpoint's weights are, as one short string, so that a re-run notices that a source changed.

A store records, per checkpoint, the fingerprint of the weights it was computed from
(``checkpoints.source_fingerprint``). A re-run that finds the same checkpoint name with another fingerprint
refuses (``--force`` recomputes) instead of keeping results of weights that are no longer there.

- A local folder: ``sha256:<hex>`` over ``config.json`` and every weights file's name, size, header and 64
  evenly spaced 4 KiB samples of its bytes (files up to 1 MiB whole). Cheap (at most ~320 KiB read per file,
  whatever its size) and content based (a copied or moved folder keeps its fingerprint). The samples matter: two
  checkpoints of one architecture have identical headers and sizes, only their bytes differ, and
  training changes all of them.
- A hub revision: ``commit:<sha>`` when the commit is known (the revision is a commit, or the local hub cache
  knows which commit the branch or tag named), else ``revision:<name>``, which only says what was asked for.

Two fingerprints are compared only when both are of one kind and say what the weights were
(:func:`fingerprints_differ`): a store written before fingerprints existed, or a hub revision whose commit
was unknown at one of the two times, is not refused.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

from precompute.checkpoints.resolve import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
SAMPLES = 64  # evenly spaced blocks per weights file (the last one included)
SAMPLE_BYTES = 4096
WHOLE_FILE = 2**20  # files up to this size are hashed whole
MAX_HEADER = 64 * 2**20  # a safetensors header longer than this is not read (the file is damaged anyway)
_COMMIT = re.compile(r"[0-9a-f]{40}")


class CheckpointChangedError(CheckpointError):
    """A checkpoint whose weights differ from those its stored results were computed from."""


def local_fingerprint(folder: str | Path) -> str | None:
    """``sha256:...`` of a local checkpoint folder's weights and config; None when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and _counts(p.name))
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as handle:
            if size <= WHOLE_FILE or path.name == "config.json" or path.name.endswith(".index.json"):
                digest.update(handle.read())
                continue
            digest.update(_header(handle, path.name, size))
            for offset in _sample_offsets(size):
                handle.seek(offset)
                digest.update(handle.read(SAMPLE_BYTES))
    return f"sha256:{digest.hexdigest()}"


def _counts(name: str) -> bool:
    return name == "config.json" or name.endswith(".index.json") or name.endswith(WEIGHT_SUFFIXES)


def _header(handle, name: str, size: int) -> bytes:
    """A safetensors file's JSON header (names, dtypes, shapes, offsets), else its first 64 KiB."""
    if name.endswith(".safetensors") and size >= 8:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length <= min(MAX_HEADER, size - 8):
            return handle.read(length)
        handle.seek(0)
    return handle.read(64 * 1024)


def _sample_offsets(size: int) -> list[int]:
    step = (size - SAMPLE_BYTES) / (SAMPLES - 1)
    return [round(i * step) for i in range(SAMPLES)]


def hub_fingerprint(model_id: str, revision: str | None) -> str:
    """``commit:<sha>`` when the commit behind ``revision`` is known here (no network), else ``revision:<name>``."""
    rev = revision or "main"
    if _COMMIT.fullmatch(rev):
        return f"commit:{rev}"
    commit = _cached_commit(model_id, rev)
    return f"commit:{commit}" if commit else f"revision:{rev}"


def _cached_commit(model_id: str, revision: str) -> str | None:
    """The commit the local hub cache maps ``revision`` of ``model_id`` to (``refs/<revision>``), if any."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - an id the hub would refuse, no cache: the commit is simply unknown
        return None
    if not isinstance(found, str):
        return None
    parts = Path(found).parts
    if "snapshots" in parts:
        commit = parts[parts.index("snapshots") + 1]
        return commit if _COMMIT.fullmatch(commit) else None
    return None


def source_fingerprint(source: str, revision: str | None) -> str | None:
    """The fingerprint of a checkpoint loaded from ``source`` (a local folder, or a hub id at ``revision``)."""
    if revision is None and Path(source).is_dir():
        return local_fingerprint(source)
    if revision is None and (Path(source).is_absolute() or source.startswith(".")):
        return None  # a local folder that is not there (any more): nothing to say
    return hub_fingerprint(source, revision)


def fingerprints_differ(recorded: str | None, current: str | None) -> bool:
    """Whether two fingerprints say that the weights changed (both known, of one kind, and different)."""
    if not recorded or not current:
        return False
    kind_a, _, _ = recorded.partition(":")
    kind_b, _, _ = current.partition(":")
    return kind_a == kind_b and kind_a != "revision" and recorded != current


def changed_error(name: str, store: str | Path, recorded: str, current: str) -> CheckpointChangedError:
    """The one line a re-run prints when a checkpoint's weights changed under its name."""
    return CheckpointChangedError(
        f"checkpoint {name!r}: its weights changed since {store} was computed from them (fingerprint "
        f"{_short(recorded)} then, {_short(current)} now); rerun with --force to recompute it, or give the new "
        "weights another checkpoint name"
    )


def _short(fingerprint: str) -> str:
    kind, _, value = fingerprint.partition(":")
    return f"{kind}:{value[:12]}"
