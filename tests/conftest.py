"""Fixtures that several test modules share, each built once per test session in a temporary folder.

- ``tiny_gpt2_dir``: a tiny random GPT-2 saved like a hub checkpoint (``tests/support/tiny_models.py``), read-only.
- ``tiny_checkpoints``: three checkpoints (steps 3, 6, 12) of the tiny demo model trained on the demo corpus,
  in ``<tmp>/ckpts/``; read-only, configs that use them are written next to them or name them by path.
- ``synthetic_store``: a small synthetic store (``precompute.demo.synthetic_store``, 4 checkpoints, seed 1)
  for the explorer's tests; read-only (copy it to change it).

The reliability tests share their own model and reference store through ``tests/support/reliability.py``,
because subprocesses they start need them too, outside of pytest.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    from tests.support.tiny_models import save_tiny_model

    return save_tiny_model("gpt2", tmp_path_factory.mktemp("tiny-gpt2") / "gpt2", seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> list:
    """``DemoCheckpoint``s of the tiny demo model; their folder's parent holds nothing else."""
    from precompute.demo.train import tiny_test_model

    return tiny_test_model(tmp_path_factory.mktemp("tiny-run") / "ckpts", steps=12)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> Path:
    from tests.support.synthetic_store import build_synthetic_store

    return build_synthetic_store(tmp_path_factory.mktemp("synthetic") / "store.duckdb", checkpoints=4, seed=1)
