"""Hostile store contents in the explorer: store text stays text, charts draw only finite numbers (and say what
they left out), a CSV download never holds a spreadsheet formula.

- every page of a store with NaN, +inf and -inf in every floating-point column renders without an error, and its
  charts' specs and data hold finite numbers only;
- the Neuron page bolds a context's peak token, and only it, whatever markdown the context's own text holds;
- a CSV cell that a spreadsheet would read as a formula is quoted, and every page's download goes through the one
  writer that does it.
"""

from __future__ import annotations

import html
import io
import math
import re
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from explorer import pages as explorer_pages
from tests.explorer.test_app import run_app

# --- the explorer's charts draw only finite values -------------------------------------------------------------

#: Every page, from the one declaration the app builds its navigation from; Search is given a word so that it
#: shows its tables (without one it shows only a prompt).
NAN_PAGES = [p.name for p in explorer_pages.PAGES]
NAN_PAGE_PARAMS = {"search": {"q": "monday"}}


@pytest.fixture(scope="module")
def nonfinite_store(synthetic_store, tmp_path_factory) -> Path:
    """The synthetic store with NaN, +inf and -inf in every floating-point column (a row in seven of each)."""
    target = tmp_path_factory.mktemp("nonfinite") / "store.duckdb"
    shutil.copyfile(synthetic_store, target)
    with duckdb.connect(str(target)) as con:
        cols = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main' "
            "AND data_type IN ('DOUBLE', 'FLOAT', 'REAL')"
        ).fetchall()
        assert cols
        for table, column in cols:
            for rest, value in ((0, "nan"), (1, "inf"), (2, "-inf")):
                con.execute(f"UPDATE {table} SET {column} = '{value}'::DOUBLE WHERE rowid % 7 = {rest}")
    return target


def _arrow_floats(blob: bytes) -> list[float]:
    if not blob:
        return []
    table = pa.ipc.open_stream(io.BytesIO(blob)).read_all()
    out = []
    for column in table.columns:
        if pa.types.is_floating(column.type):
            out += [v for v in column.to_pylist() if v is not None]
    return out


def assert_finite_charts(at: AppTest) -> int:
    """Every chart's spec and data hold only finite numbers; returns the number of charts."""
    charts = list(at.get("vega_lite_chart"))
    for element in charts:
        spec = element.proto.spec
        assert "NaN" not in spec and "Infinity" not in spec, spec[:500]
        blobs = [element.proto.data.data] + [d.data.data for d in element.proto.datasets]
        for blob in blobs:
            assert all(math.isfinite(v) for v in _arrow_floats(blob))
    return len(charts)


@pytest.mark.parametrize("page", NAN_PAGES)
def test_pages_with_nonfinite_numbers_draw_finite_charts(page, monkeypatch, nonfinite_store):
    at = run_app(monkeypatch, nonfinite_store, page, timeout=90, **NAN_PAGE_PARAMS.get(page, {}))
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert assert_finite_charts(at) >= (1 if page in ("overview", "probes", "concepts", "neuron") else 0)


def test_what_a_chart_leaves_out_is_said(monkeypatch, nonfinite_store):
    at = run_app(monkeypatch, nonfinite_store, "probes", timeout=90)
    captions = [c.value for c in at.caption]
    said = [c for c in captions if c.startswith("Not drawn")]
    assert said, captions
    assert "NaN or infinite" in said[0] and "downloads keep them" in said[0]


def test_finite_chart_unit():
    import altair as alt

    from explorer import charts
    from explorer.downloads import finite_chart, left_out_text

    df = pl.DataFrame(
        {
            "checkpoint": ["a", "b", "c", "d"],
            "step": [1, 2, 3, 4],
            "lang": ["en"] * 4,
            "ap": [float("nan"), float("inf"), float("-inf"), 0.5],
            "rank": [1, 2, 3, 4],
        }
    )
    order = ["a", "b", "c", "d"]
    lines = charts.lines_over_checkpoints(df, order, "ap", color="lang")
    layered = charts.with_chance(
        lines,
        reference=charts.chance_lines(
            df.select("checkpoint", "lang", "ap"), order, "ap", color="lang", y_title="ap", label="t"
        ),
    )
    for chart in (lines, layered, alt.hconcat(lines, lines)):
        drawn, left_out = finite_chart(chart)
        spec = drawn.to_json()
        assert "NaN" not in spec and "Infinity" not in spec
        assert dict(left_out) == {("ap", "NaN"): 1, ("ap", "+inf"): 1, ("ap", "-inf"): 1}
        assert "NaN" in chart.to_json()  # the chart given is left as it is
    assert left_out_text(left_out) == (
        "Not drawn: 3 values that are NaN or infinite (ap: 1 +inf, 1 -inf, 1 NaN). The downloads keep them as stored."
    )
    assert charts.finite_min(pl.Series([float("-inf"), 0.2, float("nan")])) == 0.2
    assert charts.finite_min(pl.Series([float("nan")], dtype=pl.Float64), 0.5) == 0.5
    heat = pl.DataFrame(
        {
            "checkpoint": ["a"],
            "step": [1],
            "layer": [0],
            "accuracy": [float("-inf")],
            "accuracy_std": [0.0],
            "n_test": [3],
        }
    )
    assert "Infinity" not in finite_chart(charts.probe_heatmap(heat, ["a"]))[0].to_json()


# --- the peak token is bold whatever the text has next to it ---------------------------------------------------

_MD = MarkdownIt("commonmark")
WJ = "\u2060"

PEAK_CASES = [
    ("a,b", 1, 2),
    ("**Monday** is here", 2, 8),
    ("x**y**z", 1, 3),
    ("foo.bar", 3, 4),
    ("(Montag)", 0, 1),
    ("_a_ b", 0, 1),
    ("Mo*n*day", 2, 3),
    ('he said "Montag"!', 8, 16),
    ("**", 0, 2),
    ("a ** b", 1, 4),
    ("[l](http://203.0.113.9/x) Montag", 1, 2),
    ("<b>Montag</b>", 3, 9),
    ("`code`x", 0, 1),
    ("x~~y~~", 1, 3),
    ("1. Montag", 0, 2),
    ("# Montag", 2, 8),
    ("Mon*day*", 3, 8),
    ("день,ночь", 4, 5),
    ("a\\b", 1, 2),
]


def _rendered(markdown: str, *, code_ok: bool = False) -> tuple[str, list[str]]:
    """(the text a reader sees, the text of each bold span), from CommonMark's rendering of ``markdown``."""
    out = _MD.renderInline(markdown)
    bold = [
        html.unescape(re.sub(r"<[^>]+>", "", b)).replace(WJ, "") for b in re.findall(r"<strong>(.*?)</strong>", out)
    ]
    assert "<a " not in out and "<img" not in out and "<em>" not in out, out
    assert code_ok or "<code>" not in out, out
    text = html.unescape(re.sub(r"<[^>]+>", "", out)).replace(WJ, "")
    return text, bold


@pytest.mark.parametrize("text, start, end", PEAK_CASES)
def test_peak_token_is_bold_and_the_text_stays_text(text, start, end):
    from explorer.drilldown import highlighted

    seen, bold = _rendered(highlighted(text, start, end))
    assert seen == text  # every character of the store's text shows, no asterisk added or lost
    assert bold == [text[start:end].strip()]


def test_old_bold_markers_leaked_asterisks():
    """Why the markers are fenced: plain ``**`` between a letter and punctuation is not bold in CommonMark."""
    from explorer.text import md

    assert "**" in _MD.renderInline(f"a**{md(',')}**b")


def test_every_top_context_of_the_synthetic_store_highlights(synthetic_store):
    from explorer.drilldown import highlighted

    with duckdb.connect(str(synthetic_store), read_only=True) as con:
        rows = con.execute(
            "SELECT s.text, t.peak_start, t.peak_end FROM unit_top_contexts t JOIN sentences s USING (sentence_id)"
        ).fetchall()
    assert rows
    for text, start, end in rows:
        seen, bold = _rendered(highlighted(text, start, end))
        assert seen == " ".join(text.splitlines()), text
        if start is not None and end is not None and 0 <= start < end <= len(text) and text[start:end].strip():
            assert bold == [text[start:end].strip()], (text, start, end)


def test_neuron_page_with_markdown_in_contexts(monkeypatch, synthetic_store, tmp_path):
    target = tmp_path / "store.duckdb"
    shutil.copyfile(synthetic_store, target)
    with duckdb.connect(str(target)) as con:
        row = con.execute("SELECT checkpoint, layer, unit FROM unit_top_contexts LIMIT 1").fetchone()
        con.execute("UPDATE sentences SET text = '**' || text || '** [l](http://203.0.113.9/x) <b>b</b>'")
        con.execute("UPDATE unit_top_contexts SET peak_start = 0, peak_end = 4")
        for column in ("token_start", "token_end", "token_act"):  # a store from before they were stored
            con.execute(f"ALTER TABLE unit_top_contexts DROP COLUMN {column}")
    checkpoint, layer, unit = row
    at = run_app(monkeypatch, target, "neuron", timeout=90, layer=str(layer), unit=str(unit), dckpt=checkpoint)
    assert not at.exception, [e.value for e in at.exception]
    contexts = [m.value for m in at.markdown if "`" in m.value and "\\." in m.value[:6]]
    assert contexts, [m.value for m in at.markdown][:20]
    for value in contexts:
        seen, bold = _rendered(value, code_ok=True)  # the response is a code span: the page's own markup
        assert len(bold) == 1 and "[l](" in seen and "<b>b</b>" in seen, (value, seen)


# --- CSV downloads never hold a spreadsheet formula ----------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://203.0.113.9")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "=1", "-"]


def test_csv_cells_that_would_be_formulas_are_quoted():
    from explorer.downloads import csv_bytes

    df = pl.DataFrame(
        {
            "label": [*FORMULAS, "plain", "a=b", None],
            "value": [-1.5] * (len(FORMULAS) + 3),
            "cat": pl.Series([*FORMULAS, "plain", "a=b", None]).cast(pl.Categorical),
        }
    )
    back = pl.read_csv(io.BytesIO(csv_bytes(df)))
    for column in ("label", "cat"):
        got = back[column].to_list()
        assert got[: len(FORMULAS)] == ["'" + f for f in FORMULAS], got
        assert got[len(FORMULAS) :] == ["plain", "a=b", None]
    assert back["value"].to_list() == df["value"].to_list()  # numbers stay numbers
    assert not any(line[:1] in "=+-@\t\r" for line in csv_bytes(df).decode().splitlines()[1:] if line[:1] != "'")


def test_csv_download_of_every_page_uses_the_safe_writer():
    """The one CSV writer of the explorer is csv_bytes (no other write_csv in explorer/)."""
    root = Path(__file__).resolve().parents[2] / "explorer"
    users = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if "write_csv" in p.read_text("utf-8")]
    assert users == ["downloads.py"], users
    text = (root / "downloads.py").read_text("utf-8")
    assert text.count("write_csv") == 1 and "csv_safe(df).write_csv()" in text
