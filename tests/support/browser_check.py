"""Check a served explorer in a headless Chromium: the browser tests, ``docs/screenshots.py`` and the page-load
benchmark.

Test support, not part of the installed packages: every user runs from a checkout. It imports neither
Streamlit nor playwright: callers hand in a playwright ``page``; `served` starts ``explorer STORE --no-browser``.
`page_heading` reads the heading a page shows from its script, so the tests that open every page of
``explorer.pages.PAGES`` derive what to wait for instead of keeping a second list of titles.
"""

from __future__ import annotations

import ast
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from explorer.pages import VIEWS, ExplorerPage

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium (`make browser-deps`): no browser download
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def page_heading(page: ExplorerPage) -> str:
    """The heading ``page`` shows: the text of the first ``st.title("...")`` in its script.

    Read from the source (not run), so it needs no store; a page whose title is not a literal string raises
    AssertionError naming its script, since the tests could not tell what to wait for."""
    script = VIEWS / page.file
    tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    calls = sorted(
        (node for node in ast.walk(tree) if isinstance(node, ast.Call)), key=lambda n: (n.lineno, n.col_offset)
    )
    for call in calls:
        func = call.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "title"
            and isinstance(func.value, ast.Name)
            and func.value.id == "st"
        ):
            first = call.args[0] if call.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                return first.value
            break
    raise AssertionError(f"{script}: no st.title with a literal string; the page tests read its heading from it")


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> float:
    """Seconds until the Streamlit server at ``url`` answers its health check; AssertionError if it exits or
    does not answer within ``timeout``."""
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


def check_page(page, url: str | None, heading: str, shot: Path | None) -> None:
    """Open ``url`` (None: stay), wait for ``heading`` and a drawn chart, assert no exception or error box,
    and, when ``shot`` is given, save a tall screenshot there."""
    if url is not None:
        page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("heading", name=heading, exact=True).first.wait_for(timeout=60_000)
    page.locator("[data-testid='stVegaLiteChart'] canvas, [data-testid='stVegaLiteChart'] svg").first.wait_for(
        timeout=60_000
    )
    page.wait_for_timeout(1500)  # let the remaining charts draw
    assert page.locator("[data-testid='stException']").count() == 0, "an exception box is shown"
    assert page.locator("[data-testid='stAlertContentError']").count() == 0, "an error box is shown"
    if shot is not None:
        shot.parent.mkdir(parents=True, exist_ok=True)
        # Checked at laptop size; photographed taller so the picture shows the charts below the fold.
        page.set_viewport_size({"width": 1440, "height": 2000})
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shot))
        page.set_viewport_size({"width": 1440, "height": 900})


@contextlib.contextmanager
def served(store: Path, root: Path, log: Path | None = None, timeout: float = 60) -> Iterator[tuple[str, float]]:
    """``explorer STORE --no-browser`` on a free localhost port, run from the checkout ``root``: yields the URL
    and the seconds until it answered; the server is stopped (terminate, then kill) on exit."""
    port = free_port()
    out = log.open("w") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "explorer.launch", str(store), "--port", str(port), "--no-browser"],
        cwd=str(root),
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, wait_healthy(url, proc, timeout=timeout)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if log is not None:
            out.close()
