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


#: A drawn Vega chart as the test of the drawn charts reads it from Vega's SVG scenegraph: per chart
#: (``[data-testid='stVegaLiteChart']``) its container's and svg's boxes; its title's glyph box and ink box; its
#: legends (title, and per entry the label and the swatch's stroke or fill; no entries for a gradient legend); its
#: axes (Vega's aria description, e.g. "Y-axis titled 'layer' for a discrete scale with 3 values: ...", and the
#: drawn label texts); how many rects it draws; and its line paths (stroke colour, path data ``d``, dashed or not).
_DRAWN_CHARTS_JS = """
() => [...document.querySelectorAll("[data-testid='stVegaLiteChart']")].map(chart => {
  const box = e => { const r = e.getBoundingClientRect(); return {top: r.top, left: r.left, right: r.right,
                                                                  bottom: r.bottom}; };
  const paint = e => {
    const pick = v => (v && v !== 'none' && v !== 'transparent') ? v.toLowerCase() : null;
    return pick(e.getAttribute('stroke')) || pick(e.getAttribute('fill'))
        || pick(getComputedStyle(e).stroke) || pick(getComputedStyle(e).fill);
  };
  const svg = chart.querySelector('svg.marks');
  const title = chart.querySelector('.role-title-text');
  // The title's ink (not its glyph box, which reserves room above the tallest letters): its top is the glyph
  // box's top plus the font's ascent less the ascent of the title's own letters, measured on a canvas.
  const ink = t => {
    const style = getComputedStyle(t), b = box(t);
    const ctx = document.createElement('canvas').getContext('2d');
    ctx.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const m = ctx.measureText(t.textContent);
    return {...b, top: b.top + m.fontBoundingBoxAscent - m.actualBoundingBoxAscent};
  };
  return {
    svg: svg !== null,
    container: box(chart),
    drawing: svg ? box(svg) : null,
    title: title ? {text: title.textContent, box: box(title), ink: ink(title)} : null,
    legends: [...chart.querySelectorAll('g.role-legend')].map(g => {
      const colors = [...g.querySelectorAll('.role-legend-symbol path')].map(paint);
      const labels = [...g.querySelectorAll('.role-legend-label text')].map(t => t.textContent);
      return {
        title: [...g.querySelectorAll('.role-legend-title text')].map(t => t.textContent).join(' '),
        symbols: colors.length,
        entries: colors.length ? labels.map((label, i) => ({label, color: colors[i] ?? null})) : [],
      };
    }),
    axes: [...chart.querySelectorAll('g.role-axis')].map(a => ({
      aria: a.getAttribute('aria-label') || '',
      labels: [...a.querySelectorAll('.role-axis-label text')].map(t => t.textContent),
    })).filter(a => a.aria),
    rects: chart.querySelectorAll('.mark-rect path').length,
    lines: [...chart.querySelectorAll('.mark-line path')].map(p => ({
      color: paint(p), d: p.getAttribute('d') || '', dashed: !!p.getAttribute('stroke-dasharray'),
    })),
  };
})
"""


def drawn_charts(page) -> list[dict]:
    """Every Vega chart drawn on ``page`` (a playwright page), as read from its SVG: see `_DRAWN_CHARTS_JS` for
    the keys. Charts drawn to a canvas (Streamlit switches to it past 2,000 points a view) come with
    ``svg`` False and nothing else to read."""
    return page.evaluate(_DRAWN_CHARTS_JS)


_LOAD_STATE_JS = """
() => {
  const embeds = document.querySelectorAll('.vega-embed');
  const drawn = [...embeds].filter(e => e.querySelector('svg, canvas')).length;
  const app = document.querySelector("[data-testid='stApp']");
  const state = app ? app.getAttribute('data-test-script-state') : null;
  const running = state !== 'notRunning' || document.querySelector("[data-testid='stStatusWidget']") !== null;
  return [embeds.length, drawn, running];
}
"""


def wait_drawn(page, timeout: float, settle: float = 0.5, since: float | None = None) -> float:
    """Seconds from ``since`` (a ``time.perf_counter()`` reading, e.g. taken before the navigation; default: the
    call) until the page's script finished and its last chart was drawn: the app's script state "notRunning"
    (``data-test-script-state``, set from its first run on), Streamlit's running indicator gone, and
    the number of ``.vega-embed`` elements (each holding its svg or canvas) unchanged for ``settle`` seconds; the
    settling time itself is not counted. AssertionError after ``timeout`` seconds from the call. A page with no
    chart counts as drawn once it is idle."""
    t0 = time.perf_counter() if since is None else since
    deadline = time.perf_counter() + timeout
    done_at, seen = None, None
    while time.perf_counter() < deadline:
        state = page.evaluate(_LOAD_STATE_JS)
        now = time.perf_counter()
        idle = state[0] == state[1] and not state[2]
        if idle and state == seen:
            if now - done_at >= settle:
                return done_at - t0
        else:
            done_at, seen = (now, state) if idle else (None, None)
        page.wait_for_timeout(25)
    raise AssertionError(f"{page.url}: not drawn within {timeout:.0f} s")
