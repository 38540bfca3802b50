"""Page-load time of every page of the explorer in headless Chromium, on a given store. Run by hand, never in the
suite:

    .venv/bin/python benchmarks/bench_pages.py data/demo.duckdb             # the demo store, 5 loads per page
    .venv/bin/python benchmarks/bench_pages.py data/demo.duckdb --loads 3
    .venv/bin/python benchmarks/bench_pages.py --bloom7b1                   # a BLOOM-7b1-scale synthetic store

One server (``explorer STORE``, read-only on the store) and one browser; every page of ``explorer.pages.PAGES``
is opened once to warm up (imports, the run's shared queries: printed as "first"), then ``--loads`` times in turn.
A load is timed from the navigation to the last chart drawn: the heading shown, the app's script done, Streamlit's
running indicator gone and the number of ``.vega-embed`` elements (each with its svg or canvas) unchanged for half
a second (``tests.support.browser_check.wait_drawn``; the half second is not counted). Repeated loads open the
same URL, so they read what the explorer caches between runs, as a reader clicking between pages does.
``--bloom7b1`` builds (once, into benchmarks/out/, shared with ``bench_explorer_queries.py --bloom7b1``) the store
of BLOOM-7b1's scale that ``benchmarks/bench_explorer_queries.py`` defines; building it takes long.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Seconds one load may take before the benchmark gives up on it.
PAGE_TIMEOUT_S = 180.0


def page_queries(store: Path) -> dict[str, str]:
    """The query string a page needs to show data, from the store: Search a word to look for (the first concept's
    label), Neuron a unit that is a shared expert (the unit the Concepts page links to first)."""
    import duckdb

    with duckdb.connect(str(store), read_only=True) as con:
        word = con.execute("SELECT label FROM concepts ORDER BY concept_id LIMIT 1").fetchone()
        unit = con.execute(
            "SELECT layer, unit FROM shared_experts ORDER BY n_langs_topk DESC, mean_ap DESC, layer, unit LIMIT 1"
        ).fetchone()
    queries = {}
    if word:
        queries["search"] = f"?q={word[0]}"
    if unit:
        queries["neuron"] = f"?layer={unit[0]}&unit={unit[1]}"
    return queries


def load_s(page, url: str, heading: str) -> tuple[float, int]:
    """Seconds from navigating to ``url`` until its last chart is drawn, and how many charts it drew."""
    from tests.support.browser_check import wait_drawn

    t0 = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=PAGE_TIMEOUT_S * 1000)
    seconds = wait_drawn(page, PAGE_TIMEOUT_S, since=t0)
    return seconds, page.locator(".vega-embed").count()


def bench(store: Path, loads: int) -> list[tuple[str, int, float, list[float]]]:
    """(page, charts drawn, first load s, the ``loads`` later loads in s) per page, in navigation order."""
    from playwright.sync_api import sync_playwright

    from explorer.pages import PAGES
    from tests.support.browser_check import CHROMIUM, CHROMIUM_ARGS, page_heading, served

    queries = page_queries(store)
    targets = [(p.name, f"/{p.served_path}{queries.get(p.name, '')}", page_heading(p)) for p in PAGES]
    first: dict[str, tuple[float, int]] = {}
    times: dict[str, list[float]] = {name: [] for name, _, _ in targets}
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_pages_{store.stem}_explorer.log"
    with served(store, ROOT, log=log, timeout=180) as (url, startup):
        print(f"explorer on {store} answered after {startup:.1f} s (log {log})", flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                for name, path, heading in targets:
                    first[name] = load_s(page, url + path, heading)
                for _ in range(loads):
                    for name, path, heading in targets:
                        times[name].append(load_s(page, url + path, heading)[0])
            finally:
                browser.close()
    return [(name, first[name][1], first[name][0], times[name]) for name, _, _ in targets]


def report(store: Path, rows: list[tuple[str, int, float, list[float]]], loads: int) -> None:
    load = os.getloadavg()
    print(
        f"\nstore {store} ({store.stat().st_size / 1e6:.0f} MB); {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; headless Chromium, navigation to last chart drawn"
    )
    print(f"{'page':18s} {'charts':>6s} {'first s':>8s} {'p50 s':>8s} {'max s':>8s}   ({loads} loads after the first)")
    for name, n_charts, cold, secs in rows:
        print(f"{name:18s} {n_charts:6d} {cold:8.2f} {statistics.median(secs):8.2f} {max(secs):8.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", type=Path, nargs="?", help="the store to serve (opened read-only)")
    p.add_argument("--loads", "-n", type=int, default=5, help="loads per page after the first (default 5)")
    p.add_argument(
        "--bloom7b1",
        action="store_true",
        help="serve a synthetic store of BLOOM-7b1's scale (bench_explorer_queries.BLOOM_7B1_SCALE), built once",
    )
    args = p.parse_args()
    if args.loads < 1:
        p.error("--loads must be at least 1")
    if args.bloom7b1:
        from benchmarks.bench_explorer_queries import BLOOM_7B1_SCALE, PAPER_SCALE, build

        store = args.store or ROOT / "benchmarks" / "out" / "paper_7b1.duckdb"
        build(store, scale={**PAPER_SCALE, **BLOOM_7B1_SCALE})
    elif args.store is None:
        p.error("give a store path, or --bloom7b1")
    else:
        store = args.store
    if not store.exists():
        p.error(f"{store}: no such store")
    report(store, bench(store, args.loads), args.loads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
