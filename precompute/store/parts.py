"""Where a store keeps the checkpoints a writer published since its last pack: the part files.

Publishing a checkpoint by rewriting the whole store costs a copy of everything already in it, so a run of
40 checkpoints would copy a multi-GB file 40 times. Instead each checkpoint is published as its own small
DuckDB file, ``STORE.parts/<seq>.duckdb`` (same schema, only that checkpoint's rows and its ``checkpoints``
row), made under a private name and renamed into place: the rename is the publish, and its cost does not
depend on the size of the store. Readers see the store file plus its live parts (:mod:`precompute.store.open`
builds that view). When a writer ends normally it packs the parts into the store file, in one private copy
and one atomic rename, so that a finished run is one file again (``precompute pack`` does the same for the
parts a killed run left behind).

A part proves that it belongs to the store file beside it. The file's ``meta`` holds a random ``store_id``, a
``store_generation`` counted up and a random ``store_epoch`` drawn anew each time the file is published (every
pack, every other change); each part's ``meta`` copies the three values of the file it was written on top of,
and the run id and the fingerprint of that run's config (:data:`IDENTITY_KEYS`). A part is *live* when its
store id, generation and epoch are the file's, its run is the file's run with the same config, and it is the
newest part of its checkpoint. A part of the same store id and an older generation is *dead*: the file was
published after it (a pack that was killed before it deleted the parts it folded in, or a newer copy of the file
put in place), so it is never read and the next writer deletes it. Anything else (another store's part, a part
of another copy of this file, a part newer than the file) is *foreign*: readers and writers refuse the store in
one line that names the part, and nothing deletes it. A store file written before store ids existed keeps the
old rule for parts without identity: the newest part of its checkpoint, unless the file already holds that
checkpoint as the part wrote it (same ``completed_at``). :func:`precompute.store.open.live_parts` decides it.

This module only names and lists; it opens no database.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from precompute.store.errors import ForeignPartError

_PART = re.compile(r"(\d{6,})\.duckdb")

#: ``meta`` keys of a store file that every part written on top of it copies (plus ``run_id`` and
#: ``run_config_sha256``, the part's run and the fingerprint of its config as the file records it).
STORE_ID, STORE_GENERATION, STORE_EPOCH = "store_id", "store_generation", "store_epoch"
IDENTITY_KEYS = (STORE_ID, STORE_GENERATION, STORE_EPOCH)
PART_RUN, PART_CONFIG = "run_id", "run_config_sha256"


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


def check_folder(target: Path, shown: str | Path, *, writing: bool = False) -> None:
    """Refuse a parts path that is not a plain folder (a file, a dangling symlink, a FIFO), and, for a writer
    (``writing``: it deletes what it packs), a symlinked folder: a pack never deletes through a link."""
    folder = parts_dir(target)
    try:
        link = os.lstat(folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ForeignPartError(
            f"{shown}: cannot read its checkpoint parts folder {folder.name} ({exc.strerror or exc})"
        ) from None
    if stat.S_ISLNK(link.st_mode):
        if not folder.exists():
            raise ForeignPartError(
                f"{shown}: its checkpoint parts folder {folder.name} is a symlink to {os.readlink(folder)}, which "
                "does not exist; remove the link"
            )
        if writing:
            raise ForeignPartError(
                f"{shown}: its checkpoint parts folder {folder.name} is a symlink (to {os.readlink(folder)}); a pack "
                "never deletes through a link: move the parts into a folder of that name, or remove the link"
            )
    if not stat.S_ISDIR(os.stat(folder).st_mode):
        raise ForeignPartError(
            f"{shown}: {folder.name}, where its checkpoint parts belong, is not a folder; move it away"
        )


def check_part_file(part: Path, shown: str | Path) -> None:
    """Refuse a listed part that is not a regular file (a folder, a FIFO, a device) before anything opens it."""
    try:
        mode = os.stat(part).st_mode
    except FileNotFoundError:
        return  # deleted by a pack since it was listed: the caller lists again
    except OSError as exc:
        raise ForeignPartError(f"{shown}: checkpoint part {part.name} unreadable ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise ForeignPartError(f"{shown}: checkpoint part {part.name} is not a regular file; move it away")


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
