"""Shards of a resolved checkpoint list, for several machines or a SLURM job array.

`parse_shard` reads ``i/n`` (0-based), `shard_from_env` reads a SLURM job array (``SLURM_ARRAY_TASK_ID`` with
``SLURM_ARRAY_TASK_COUNT``, or ``SLURM_ARRAY_TASK_MIN``/``MAX``/``STEP``), and `select_shard` deals the list
round-robin (shard i gets checkpoints i, i+n, i+2n, ...), so every shard gets early and late checkpoints and the
shards of one list never overlap.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from precompute.checkpoints.resolve import CheckpointError
from precompute.config import CheckpointSpec


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``; ``origin`` says where it came from (for messages)."""

    index: int
    count: int
    origin: str = "--shard"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"i/n"`` with 0 <= i < n, e.g. ``0/2`` and ``1/2``; anything else is a `CheckpointError` line."""
    raw = str(text).strip()
    match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", raw)
    if not match:
        raise CheckpointError(f"--shard {raw!r}: expected i/n with whole numbers, 0 <= i < n (e.g. 0/4)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise CheckpointError(f"--shard {raw!r}: the number of shards must be >= 1")
    if index >= count:
        raise CheckpointError(f"--shard {raw!r}: shard index {index} is out of range; shards are 0..{count - 1}")
    return Shard(index, count)


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard of a SLURM job array task, or None outside a job array.

    ``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN`` (0 if unset), divided by ``SLURM_ARRAY_TASK_STEP``
    (1 if unset), of ``SLURM_ARRAY_TASK_COUNT`` tasks (or (MAX - MIN) / STEP + 1), so ``--array=0-3`` and
    ``--array=1-4`` both give shards 0/4 .. 3/4.
    """
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None

    def number(key: str) -> int | None:
        value = env.get(key)
        if value is None or value == "":
            return None
        if not value.strip().isdigit():
            raise CheckpointError(f"{key}={value!r}: expected a whole number")
        return int(value)

    task = number("SLURM_ARRAY_TASK_ID")
    low = number("SLURM_ARRAY_TASK_MIN") or 0
    step = number("SLURM_ARRAY_TASK_STEP") or 1
    count = number("SLURM_ARRAY_TASK_COUNT")
    high = number("SLURM_ARRAY_TASK_MAX")
    if count is None:
        if high is None:
            raise CheckpointError(
                "SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX; "
                "pass --shard i/n"
            )
        count = (high - low) // step + 1
    if (task - low) % step or task < low:
        raise CheckpointError(
            f"SLURM_ARRAY_TASK_ID={task} is not on the array's grid (min {low}, step {step}); pass --shard i/n"
        )
    index = (task - low) // step
    if index >= count:
        raise CheckpointError(
            f"SLURM_ARRAY_TASK_ID={task} gives shard {index} of {count}; the array must be contiguous "
            "(e.g. --array=0-3), or pass --shard i/n"
        )
    return Shard(index, count, origin=f"SLURM_ARRAY_TASK_ID={task} of {count} tasks")


def select_shard(specs: Sequence[CheckpointSpec], shard: Shard | None) -> list[CheckpointSpec]:
    """The checkpoints of one shard: every n-th of the list, starting at the shard's index."""
    if shard is None:
        return list(specs)
    return list(specs)[shard.index :: shard.count]
