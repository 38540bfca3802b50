"""Write docs/store.md, the reference of the store's tables, from their one declaration.

The page is generated (``precompute.store.schema.schema_markdown``) so that it cannot drift from the schema;
``tests/store/test_schema.py`` fails while the page in the tree differs from what this writes. Run after a change
to ``precompute/store/schema.py``: ``.venv/bin/python docs/store_schema.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from precompute.store.schema import write_schema_doc  # noqa: E402 - after the source tree is on the path

if __name__ == "__main__":
    print(f"wrote {write_schema_doc(ROOT / 'docs' / 'store.md')}")
