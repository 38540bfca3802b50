"""Hostile store strings in a real browser: a store whose strings are markdown images, links, autolinks and HTML
is served by ``explorer STORE``; every page of ``explorer.pages.PAGES`` is loaded in headless Chromium, and

- the rendered DOM holds none of those strings as an ``<img>`` or ``<a>`` element (they show as text), and
- every request the page makes (documents, scripts, fonts, favicon, images, websockets) goes to this machine.

Uses Debian's /usr/bin/chromium through playwright's python package (no download); skipped when absent.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from explorer import pages as explorer_pages
from explorer.text import WORD_JOINER
from tests.support.browser_check import CHROMIUM, CHROMIUM_ARGS, page_heading, served
from tests.support.hostile_store import HOST, LAST_CHECKPOINT, make_hostile_store

ROOT = Path(__file__).resolve().parents[2]
#: Each page's pathname (with the query a page needs before it shows data: Search shows only a prompt until
#: given a word, and "monday" finds the hostile concept labels) and the heading to wait for, from the one
#: declaration the app builds its navigation from.
QUERIES = {"search": "?q=monday"}
PAGES = {p.served_path + QUERIES.get(p.name, ""): page_heading(p) for p in explorer_pages.PAGES}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory, synthetic_store):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium: `make browser-deps`)")
    pytest.importorskip("playwright.sync_api", reason="playwright's python package is not installed")
    store = make_hostile_store(synthetic_store, tmp_path_factory.mktemp("hostile") / "hostile.duckdb")
    with served(store, ROOT, tmp_path_factory.mktemp("log") / "explorer.log") as (url, _):
        yield url


def _off_machine(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return False
    return parts.hostname not in LOCAL_HOSTS


def _no_hostile_elements(page, where: str) -> None:
    """No image or link that a store string made: every <img> and <a> points into this app."""
    for tag, attr in (("img", "src"), ("a", "href"), ("image", "href"), ("link", "href"), ("iframe", "src")):
        for value in page.eval_on_selector_all(tag, f"els => els.map(e => e.getAttribute('{attr}') || '')"):
            assert HOST not in value and ".example" not in value and not value.startswith("mailto:"), (
                where,
                tag,
                value,
            )
            if value.startswith(("http:", "https:", "//")):
                assert not _off_machine(value if not value.startswith("//") else "http:" + value), (where, tag, value)
    # The store's "<b>b</b>" is shown as text, not as a bold element.
    assert page.eval_on_selector_all("b", "els => els.filter(e => e.textContent === 'b').length") == 0, where


def test_hostile_strings_stay_text_and_nothing_leaves_the_machine(hostile_server):
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("websocket", lambda ws: requests.append(ws.url))
            for path, heading in PAGES.items():
                page.goto(f"{hostile_server}/{path}", wait_until="domcontentloaded")
                page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=60_000)
                page.wait_for_timeout(2500)  # charts, fonts and the favicon load after the heading
                assert page.locator("[data-testid='stException']").count() == 0, path
                assert page.locator("[data-testid='stAlertContentError']").count() == 0, path
                _no_hostile_elements(page, path or "overview")
                if path == "concepts":
                    body = page.inner_text("body").replace(WORD_JOINER, "")  # what a reader sees
                    # Shown, as text: the checkpoint in the slider, the concept label in the selectbox.
                    assert "www.ck.example" in body and LAST_CHECKPOINT.split(" ")[0] in body
                    assert "www.auto.example user@auto.example" in body
                    # The concept selectbox's open list renders its options too.
                    page.locator("[data-testid='stSelectbox']").first.click()
                    page.wait_for_timeout(800)
                    _no_hostile_elements(page, "concepts, open selectbox")
                    page.keyboard.press("Escape")
            favicon = page.eval_on_selector("link[rel='shortcut icon']", "e => e.href")
        finally:
            browser.close()
    assert not _off_machine(favicon), favicon
    assert requests, "the recorder saw the page load"
    off = sorted({u for u in requests if _off_machine(u)})
    assert off == [], off
