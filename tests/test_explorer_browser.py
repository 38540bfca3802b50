"""One real browser check: `explorer STORE` on a free localhost port, driven by headless Chromium.

Uses Debian's /usr/bin/chromium through playwright's python package (no browser download); skipped
when it is absent. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from tests.store_factory import build_synthetic_store

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"explorer exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"explorer did not answer within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium: `make browser-deps`)")
    pytest.importorskip("playwright.sync_api", reason="playwright's python package is not installed")
    store = build_synthetic_store(tmp_path_factory.mktemp("browser") / "store.duckdb", checkpoints=4, seed=2)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (tmp_path_factory.mktemp("log") / "explorer.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "explorer.launch", str(store), "--port", str(port), "--no-browser"],
        cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        startup = _wait_healthy(url, proc, timeout=60)
        print(f"explorer answered after {startup:.1f} s")
        yield url, store, startup
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _check_page(page, url: str | None, heading: str, shot: Path | None) -> None:
    if url is not None:
        page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=60_000)
    page.locator("[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg").first.wait_for(
        timeout=60_000)
    page.wait_for_timeout(1500)  # let the remaining charts draw
    assert page.locator("[data-testid='stException']").count() == 0, "an exception box is shown"
    assert page.locator("[data-testid='stAlertContentError']").count() == 0, "an error box is shown"
    if shot is not None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        # Checked at laptop size; photographed taller so the picture shows the charts below the fold.
        page.set_viewport_size({"width": 1440, "height": 2000})
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shot))
        page.set_viewport_size({"width": 1440, "height": 900})


def test_concepts_and_neuron_pages_in_chromium(server):
    from playwright.sync_api import sync_playwright

    url, store, startup = server
    with duckdb.connect(str(store), read_only=True) as con:
        layer, unit = con.execute(
            "SELECT layer, unit FROM shared_experts WHERE checkpoint = 'global_step4000' AND concept_id = 'monday' "
            "ORDER BY n_langs_topk DESC, mean_ap DESC, layer, unit LIMIT 1").fetchone()
        other = con.execute(
            "SELECT layer, unit FROM neuron_ap WHERE checkpoint = 'global_step0' ORDER BY rank, lang, concept_id "
            "LIMIT 1").fetchone()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            # A shared link to the Concepts page reproduces the view.
            _check_page(page, f"{url}/concepts?concept=monday&ckpt=global_step4000&k=5", "Concepts",
                        ARTIFACTS / "concepts.png")
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

            # A deep link straight to another neuron selects it.
            _check_page(page, f"{url}/neuron?layer={other[0]}&unit={other[1]}", "Neuron", None)
            assert page.get_by_text(f"Layer {other[0]} · unit {other[1]}").count() >= 1
        finally:
            browser.close()
    assert startup < 10, f"the server took {startup:.1f} s to answer (goal: under 5 s)"
