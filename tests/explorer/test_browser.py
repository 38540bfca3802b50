"""One real browser check: `explorer STORE` on a free localhost port, driven by headless Chromium.

Uses Debian's /usr/bin/chromium through playwright's python package (no browser download); skipped
when it is absent. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from tests.support.browser_check import CHROMIUM
from tests.support.browser_check import CHROMIUM_ARGS as ARGS
from tests.support.browser_check import check_page as _check_page
from tests.support.browser_check import served as _served

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory, synthetic_store):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium: `make browser-deps`)")
    pytest.importorskip("playwright.sync_api", reason="playwright's python package is not installed")
    store = synthetic_store  # tests/conftest.py (read-only here)
    with _served(store, ROOT, tmp_path_factory.mktemp("log") / "explorer.log") as (url, startup):
        print(f"explorer answered after {startup:.1f} s")
        yield url, store, startup


def test_concepts_and_neuron_pages_in_chromium(server):
    from playwright.sync_api import sync_playwright

    url, store, startup = server
    with duckdb.connect(str(store), read_only=True) as con:
        layer, unit = con.execute(
            "SELECT layer, unit FROM shared_experts WHERE checkpoint = 'global_step4000' AND concept_id = 'monday' "
            "ORDER BY n_langs_topk DESC, mean_ap DESC, layer, unit LIMIT 1"
        ).fetchone()
        last = con.execute("SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1").fetchone()[0]
        top_text = con.execute(
            "SELECT s.text FROM unit_top_contexts t JOIN sentences s USING (sentence_id) "
            "WHERE t.checkpoint = ? AND t.layer = ? AND t.unit = ? ORDER BY t.lang, t.rank LIMIT 1",
            [last, layer, unit],
        ).fetchone()[0]
        top_token = con.execute(
            "SELECT token FROM unit_output_tokens WHERE checkpoint = ? AND layer = ? AND unit = ? "
            "AND direction = 'promoted' AND trim(token) <> '' ORDER BY rank LIMIT 1",
            [last, layer, unit],
        ).fetchone()[0]
        other = con.execute(
            "SELECT layer, unit FROM neuron_ap WHERE checkpoint = 'global_step0' ORDER BY rank, lang, concept_id "
            "LIMIT 1"
        ).fetchone()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            # A shared link to the Concepts page reproduces the view.
            _check_page(
                page, f"{url}/concepts?concept=monday&ckpt=global_step4000&k=5", "Concepts", ARTIFACTS / "concepts.png"
            )
            assert page.locator("[data-testid='stVegaLiteChart']").count() >= 2
            assert page.get_by_text("Top-5 units per language").count() >= 1
            # The first download under the top-units grid hands over exactly its rows.
            with page.expect_download(timeout=30_000) as download:
                page.locator("[data-testid='stDownloadButton'] button").first.click()
            csv = Path(download.value.path()).read_text().splitlines()
            assert csv[0].startswith("lang,rank,layer,unit,ap") and len(csv) == 1 + 3 * 5

            # The most shared expert links to its Neuron page.
            page.get_by_role("link", name=re.compile(rf"^L{layer} · U{unit} \(\d+ langs\)")).first.click()
            _check_page(page, None, "Neuron", ARTIFACTS / "neuron.png")
            assert page.get_by_text(f"Layer {layer} · unit {unit}").count() >= 1
            assert f"layer={layer}" in page.url and f"unit={unit}" in page.url
            assert page.locator("[data-testid='stVegaLiteChart']").count() >= 3
            # Its drill-downs: the store's top context and top promoted token are on screen.
            body = page.locator("body").text_content() or ""
            assert "What fires it, how it responds, what it writes" in body
            assert top_text in body, f"the unit's top context {top_text!r} is not shown"
            assert top_token.strip() in body, f"the unit's top promoted token {top_token!r} is not shown"

            # A deep link straight to another neuron selects it.
            _check_page(page, f"{url}/neuron?layer={other[0]}&unit={other[1]}", "Neuron", None)
            assert page.get_by_text(f"Layer {other[0]} · unit {other[1]}").count() >= 1
        finally:
            browser.close()
    assert startup < 10, f"the server took {startup:.1f} s to answer (goal: under 5 s)"
