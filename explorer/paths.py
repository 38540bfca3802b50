"""Where the store comes from (kept free of Streamlit so ``explorer.launch`` imports it cheaply)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_STORE = "CROSSLING_STORE"
DEMO_STORE = Path("data") / "demo.duckdb"
REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_HINT = (
    "Build the demo store with `make demo` (or `precompute demo --out data/demo.duckdb`), "
    "or open your own store: `explorer PATH/TO/STORE.duckdb`."
)


def default_store() -> Path:
    """The demo store, looked up in the working directory first, then in the source checkout."""
    here = Path.cwd() / DEMO_STORE
    if here.exists():
        return here
    repo = REPO_ROOT / DEMO_STORE
    return repo if repo.exists() else here


def store_path() -> Path:
    """The store the app serves: $CROSSLING_STORE, else the demo store."""
    env = os.environ.get(ENV_STORE, "").strip()
    return Path(env).expanduser() if env else default_store()
