"""The explorer never imports torch, transformers or the pipeline: it reads a store, it computes nothing.

Every explorer module (the app's imports, every page of ``explorer.pages.PAGES``, the queries, the charts, the
read API) is imported in a fresh interpreter, and ``sys.modules`` is checked afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from explorer.pages import PAGES

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "transformers", "precompute.pipeline")


def _explorer_modules() -> list[str]:
    names = [f"explorer.{p.stem}" for p in sorted((ROOT / "explorer").glob("*.py")) if p.stem != "__init__"]
    return [n for n in names if n != "explorer.app"]  # the app runs pages: imported through AppTest below


def test_every_explorer_module_imports_without_torch_or_the_pipeline(synthetic_store):
    store = synthetic_store  # tests/conftest.py (read-only)
    pages = [p.source for p in PAGES]  # tests/explorer/test_app.py checks that every script in views/ is declared
    code = f"""
import importlib, json, os, sys
os.environ["CROSSLING_STORE"] = {str(store)!r}
for name in {_explorer_modules()!r}:
    importlib.import_module(name)
from streamlit.testing.v1 import AppTest
for page in {pages!r}:
    at = AppTest.from_file({str(ROOT / "explorer" / "app.py")!r}, default_timeout=60)
    at.switch_page(page)
    at.run()
    assert not at.exception, (page, [e.value for e in at.exception])
print(json.dumps(sorted(sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300, cwd=str(ROOT)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert {
        "explorer.store_context",
        "explorer.widgets",
        "explorer.downloads",
        "explorer.problems",
        "explorer.sidebar",
        "explorer.queries",
        "explorer.charts",
        "explorer.api",
    } <= set(loaded)
    bad = sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert bad == [], bad
