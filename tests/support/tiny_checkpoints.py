"""Three checkpoints of a tiny GPT-2 trained on the demo corpus, in seconds on a CPU: what configs/tiny-local.toml
runs on, to try shards and merge (and the GPU check's pipeline step) without downloading anything.

    python -m tests.support.tiny_checkpoints data/tiny-local [--steps 12]

Test support, run from a checkout: the installed packages carry no such command. The training is the demo's
own (`precompute.demo.train.tiny_test_model`), so the folder's ``.crossling-demo`` record applies: only what
an earlier run wrote there is ever replaced, and anything else refuses the run in one line, untouched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from precompute.demo.train import DemoCheckpoint, DemoFolderError, tiny_test_model

DEFAULT_OUT = Path("data/tiny-local")
DEFAULT_STEPS = 12


def build_tiny_checkpoints(out: Path, steps: int = DEFAULT_STEPS) -> list[DemoCheckpoint]:
    """Train the tiny model for ``steps`` optimiser steps into ``out``, with checkpoints at steps/4, steps/2 and
    steps; the same settings again return the saved checkpoints without training.

    Raises `DemoFolderError` (one line naming the folder) when ``out`` is not a folder it can write in, or holds
    something of the names it uses that it did not write; ValueError when ``steps`` is below 1."""
    if steps < 1:
        raise ValueError(f"--steps {steps}: must be at least 1")
    return tiny_test_model(Path(out), steps=steps)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 with one line per checkpoint, or 1 with one ``error:`` line on stderr."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.tiny_checkpoints",
        description="Train a tiny GPT-2 on the demo corpus (seconds on a CPU) and save 3 checkpoints into OUT.",
    )
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})")
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help="optimiser steps (checkpoints at steps/4, steps/2, steps)"
    )
    args = parser.parse_args(argv)
    try:
        saved = build_tiny_checkpoints(args.out, steps=args.steps)
    except (DemoFolderError, ValueError) as exc:  # it would replace what it did not write: refused, nothing touched
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for ck in saved:
        print(f"  {ck.path}  step {ck.step}  tokens seen {ck.tokens_seen:,}", file=sys.stderr)
    print(f"{args.out}: {len(saved)} checkpoints ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
