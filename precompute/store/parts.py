"""Where a store keeps the checkpoints a writer published since its last pack: the part files.

Publishing a checkpoint by rewriting the whole store costs a copy of everything already in it, so a run of
40 checkpoints would copy a multi-GB file 40 times. Instead each checkpoint is published as its own small
DuckDB file, ``STORE.parts/<seq>.duckdb`` (same schema, only that checkpoint's rows and its ``checkpoints``
row), made under a private name and renamed into place: the rename is the publish, and its cost does not
depend on the size of the store. Readers see the store file plus its live parts (:mod:`precompute.store.open`
builds that view). When a writer ends normally it packs the parts into the store file, in one private copy
and one atomic rename, so that a finished run is one file again (``precompute pack`` does the same for the
parts a killed run left behind).

A part is *live* when it is the newest part of its checkpoint and the store file does not already hold that
checkpoint as the part wrote it (same ``completed_at``): parts that a pack folded in, and whose deletion was
interrupted, are therefore not read twice, and a later part of a checkpoint replaces an earlier one
(``precompute run --force``). :func:`precompute.store.open.live_parts` decides it.

This module only names and lists; it opens no database.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_PART = re.compile(r"(\d{6,})\.duckdb")


def parts_dir(target: Path) -> Path:
    """The folder of a store file's parts (``STORE.parts`` beside it)."""
    return target.with_name(f"{target.name}.parts")


def part_path(target: Path, seq: int) -> Path:
    """Where part ``seq`` is published."""
    return parts_dir(target) / f"{seq:06d}.duckdb"


def private_part_path(target: Path, seq: int) -> Path:
    """Where a writer builds part ``seq`` before the rename that publishes it (``<seq>.duckdb.tmp-<pid>``)."""
    return parts_dir(target) / f"{seq:06d}.duckdb.tmp-{os.getpid()}"


def listed_parts(target: Path) -> dict[int, Path]:
    """Every published part file (seq -> path), packed or not, in sequence order; {} without a parts folder."""
    folder = parts_dir(target)
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {int(m.group(1)): folder / name for name in names if (m := _PART.fullmatch(name))}
    return dict(sorted(found.items()))


def private_files(target: Path) -> list[Path]:
    """Parts under construction (``*.tmp-<pid>``, with their WAL): left behind only by a writer that was killed."""
    folder = parts_dir(target)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if re.fullmatch(r"\d{6,}\.duckdb\.tmp-\d+(\.wal)?", p.name))


def newest_seq(target: Path) -> int:
    """The highest published part number (0 without parts): the next part gets the number after it, and readers'
    caches key on it with the store file's stamp."""
    return max(listed_parts(target), default=0)


def newest_part(store: str | Path) -> int:
    """:func:`newest_seq` of the store a path names (through symlinks, as the writer resolves it)."""
    return newest_seq(Path(os.path.realpath(Path(store).expanduser())))
