"""Screenshots of the explorer on the demo store for the README and docs/explorer.md (run by hand after `make demo`).

    .venv/bin/python docs/screenshots.py [STORE]

Starts `explorer STORE --no-browser` on a free port, drives Debian's headless Chromium with the same
checks as the browser test, and writes docs/img/concepts.png, docs/img/neuron.png,
docs/img/neuron-drilldown.png (the Neuron page's drill-downs) and one docs/img/page-NAME.png of every page of
``explorer.pages.PAGES`` (1440 x 2200 px: the page's first 2,200 pixels).
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from explorer.pages import PAGES
from tests.support.browser_check import CHROMIUM, CHROMIUM_ARGS, check_page, page_heading, served, wait_drawn

OUT = ROOT / "docs" / "img"


def main() -> None:
    store = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "data" / "demo.duckdb")
    with duckdb.connect(str(store), read_only=True) as con:
        last = con.execute("SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1").fetchone()[0]
        concept, layer, unit = con.execute(
            "SELECT concept_id, layer, unit FROM shared_experts WHERE checkpoint = ? "
            "ORDER BY n_langs_topk DESC, mean_ap DESC LIMIT 1",
            [last],
        ).fetchone()
    with served(store, ROOT) as (url, _):
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            check_page(page, f"{url}/concepts?concept={concept}&ckpt={last}&k=10", "Concepts", OUT / "concepts.png")
            check_page(page, f"{url}/neuron?layer={layer}&unit={unit}", "Neuron", OUT / "neuron.png")
            # The drill-downs below the fold (Streamlit scrolls inside its own container, so the page is drawn
            # tall and the lower part kept): what fires the unit, how it responds, what it writes.
            page.set_viewport_size({"width": 1440, "height": 4600})
            page.wait_for_timeout(3000)
            top = page.get_by_role(
                "heading", name="What fires it, how it responds, what it writes"
            ).first.bounding_box()
            page.screenshot(
                path=str(OUT / "neuron-drilldown.png"),
                clip={"x": 0, "y": top["y"] - 20, "width": 1440, "height": 4600 - top["y"] + 20},
            )
            # Every page, as a reader first sees it (the Neuron and Concepts pages on the unit and concept above).
            query = {"search": "?q=monday", "neuron": f"?layer={layer}&unit={unit}", "concepts": f"?concept={concept}"}
            page.set_viewport_size({"width": 1440, "height": 2200})  # Streamlit scrolls inside its own container
            for entry in PAGES:
                page.goto(f"{url}/{entry.served_path}{query.get(entry.name, '')}", wait_until="domcontentloaded")
                page.get_by_role("heading", name=page_heading(entry), exact=True).first.wait_for(timeout=60_000)
                wait_drawn(page, timeout=60)
                page.screenshot(path=str(OUT / f"page-{entry.name}.png"))
            browser.close()
    print(
        f"wrote {OUT / 'concepts.png'}, {OUT / 'neuron.png'}, {OUT / 'neuron-drilldown.png'} and "
        f"{len(PAGES)} page-NAME.png "
        f"({concept}, L{layer} U{unit}, {last})"
    )


if __name__ == "__main__":
    main()
