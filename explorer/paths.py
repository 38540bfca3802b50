"""Where the store comes from (kept free of Streamlit so ``explorer.launch`` imports it cheaply).

Only from the command line, $CROSSLING_STORE or the current folder: an installed explorer has no source tree
to look in, and a checkout's location says nothing about which store the user means.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_STORE = "CROSSLING_STORE"
DEMO_STORE = Path("data") / "demo.duckdb"
BUILD_HINT = (
    "Build the demo store with `make demo` (or `precompute demo --out data/demo.duckdb`), "
    "or open your own store: `explorer PATH/TO/STORE.duckdb`."
)


def default_store() -> Path:
    """The demo store of the current folder (``data/demo.duckdb``, where ``make demo`` builds it)."""
    return Path.cwd() / DEMO_STORE


def store_path() -> Path:
    """The store the app serves: $CROSSLING_STORE, else the demo store."""
    env = os.environ.get(ENV_STORE, "").strip()
    return Path(env).expanduser() if env else default_store()
