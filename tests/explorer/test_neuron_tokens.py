"""The Neuron page's top contexts with every token coloured by the unit's activation, and readable output tokens.

The pure parts (explorer.drilldown's spans, colours and HTML; explorer.text's escapes) are checked on their own,
the HTML through a parser: the store's text reaches the page as text, character for character, and the only
markup is the page's own spans. The page itself runs under AppTest on a synthetic store with the per-token
columns, on one whose unit_top_contexts predates them (the peak-only display and its note), and on one whose
texts are HTML and markdown.
"""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from explorer.drilldown import (
    PEAK_OUTLINE,
    SAMPLES_CLASS,
    TIE_OUTLINE,
    context_html,
    highlighted,
    token_background,
    token_spans,
)
from explorer.text import VISIBLE_SPACE, html_text, md, readable_token
from tests.support.synthetic_store import RUN_ID

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"
HOSTILE = '<img src=http://203.0.113.9/t.png> **a**, [l](http://203.0.113.9/x) &amp; www.x.example "q" `c`'


class _Parsed(HTMLParser):
    """The tags, the text (entities resolved) and each span's attributes and text of an HTML fragment."""

    def __init__(self, body: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text = ""
        self.spans: list[tuple[dict[str, str], str]] = []
        self._open: list[tuple[dict[str, str], int]] = []
        self.feed(body)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "span":
            self._open.append((dict(attrs), len(self.text)))

    def handle_endtag(self, tag):
        if tag == "span" and self._open:
            attrs, start = self._open.pop()
            self.spans.append((attrs, self.text[start:]))

    def handle_data(self, data):
        self.text += data


def run_app(monkeypatch, store: Path, **params: str) -> AppTest:
    monkeypatch.setenv("CROSSLING_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=90)
    for key, value in params.items():
        at.query_params[key] = str(value)
    at.switch_page("views/neuron.py")
    at = at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _a_unit(store: Path) -> tuple[str, int, int]:
    """(checkpoint, layer, unit) of a unit with top contexts in several languages at the last checkpoint."""
    with duckdb.connect(str(store), read_only=True) as con:
        last = con.execute("SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1").fetchone()[0]
        layer, unit = con.execute(
            "SELECT layer, unit FROM unit_top_contexts WHERE checkpoint = ? GROUP BY layer, unit "
            "ORDER BY count(DISTINCT lang) DESC, layer, unit LIMIT 1",
            [last],
        ).fetchone()
    return last, layer, unit


# --- the pieces ------------------------------------------------------------------------------------------------


def test_token_spans_show_every_character_once():
    text = "地震abc"
    # Two byte-level tokens share the first character; one token has no characters; one runs past the text.
    spans = token_spans(len(text), [0, 0, 1, 2, 2, 4], [1, 1, 2, 2, 4, 99])
    assert [(s.start, s.end, s.tokens) for s in spans] == [(0, 1, [0, 1]), (1, 2, [2, 3]), (2, 4, [4]), (4, 5, [5])]
    # Offsets of another text (a store is someone else's file): clipped, never overlapping, in order.
    spans = token_spans(3, [5, -2, 1, 0], [9, 1, 3, 2])
    assert all(0 <= s.start <= s.end <= 3 for s in spans)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    assert sorted(k for s in spans for k in s.tokens) == [0, 1, 2, 3]


def test_token_background_runs_from_white_to_the_colour():
    assert token_background(0.0, 2.0) == "rgb(255,255,255)"
    assert token_background(-5.0, 2.0) == "rgb(255,255,255)"  # negative activations stay white
    assert token_background(2.0, 2.0) == token_background(9.0, 2.0) == "rgb(255,140,0)"
    assert token_background(1.0, 2.0) == "rgb(255,198,128)"
    assert token_background(1.0, 0.0) == "rgb(255,255,255)"  # no positive activation: nothing to scale by
    assert token_background(float("nan"), 2.0) == token_background(1.0, float("nan")) == "rgb(255,255,255)"


def test_context_html_is_the_stores_text_with_the_peak_and_its_ties_outlined():
    text = f"{HOSTILE} end"
    words = [(m, m + 1) for m in range(0, len(text), 1)]  # one token a character: the hardest case to escape
    starts, ends = [s for s, _ in words], [e for _, e in words]
    acts = [0.1] * len(words)
    peak = text.index("**a**")
    acts[peak] = 3.0
    acts[peak + 3] = 3.0  # a tie with the peak
    acts[0] = -1.0
    body = context_html(text, starts, ends, acts, peak_start=peak, peak_end=peak + 1, scale=3.0)
    parsed = _Parsed(body)
    assert set(parsed.tags) == {"span"}  # no tag of the store's text survives
    assert parsed.text == text  # every character shows, once, as text
    outlined = [(a, t) for a, t in parsed.spans if "outline" in a["style"]]
    assert [(t, a["title"]) for a, t in outlined] == [
        ("*", "activation 3.000 (peak)"),
        ("*", "activation 3.000 (tied with the peak)"),
    ]
    assert PEAK_OUTLINE in outlined[0][0]["style"] and TIE_OUTLINE in outlined[1][0]["style"]
    assert "rgb(255,140,0)" in outlined[0][0]["style"]
    assert parsed.spans[0][0]["style"].startswith("background-color:rgb(255,255,255)")  # below 0: white
    assert all(a["title"].startswith("activation ") for a, _ in parsed.spans)


def test_context_html_shows_text_between_and_after_tokens_uncoloured():
    text = "Hello  world\nagain"
    body = context_html(text, [0, 7], [5, 12], [1.0, 2.0], peak_start=7, peak_end=12, scale=2.0)
    parsed = _Parsed(body)
    assert parsed.text == text and [t for _, t in parsed.spans] == ["Hello", "world"]
    assert "(peak)" in parsed.spans[1][0]["title"]
    # Without the stored peak offsets among the tokens, the first largest activation is the peak.
    parsed = _Parsed(context_html(text, [0, 7], [5, 12], [4.0, 2.0], peak_start=None, peak_end=None, scale=4.0))
    assert "(peak)" in parsed.spans[0][0]["title"]
    # Lists of other lengths or with NULLs (a hand-made store): drawn as far as they go, the text still whole.
    parsed = _Parsed(context_html(text, [0, None, 7], [5, 6, 12, 13], [None, 1.0], peak_start=0, peak_end=5, scale=1.0))
    assert parsed.text == text and [t for _, t in parsed.spans] == ["Hello"]
    assert parsed.spans[0][0]["style"].startswith("background-color:rgb(255,255,255)")  # NULL: white
    # Two tokens on the same characters (a character cut in two): the larger is the peak, whichever comes first.
    parsed = _Parsed(context_html("地", [0, 0], [1, 1], [1.0, 5.0], peak_start=0, peak_end=1, scale=5.0))
    assert parsed.spans[0][0]["title"] == "activation 1.000 · 5.000 (peak)"


def test_html_text_escapes_markup_and_keeps_offsets():
    assert html_text('<b a="1">&x</b>') == "&lt;b a=&quot;1&quot;&gt;&amp;x&lt;/b&gt;"
    assert html_text("a\x00b\rc\nd\te") == "a b c\nd\te"  # controls as spaces, one for one; line breaks kept


@pytest.mark.parametrize(
    "token, shown",
    [
        (" the", f"{VISIBLE_SPACE}the"),
        ("the", "the"),
        ("  ", VISIBLE_SPACE * 2),
        ("\n", "\\n"),
        ("\t\t", "\\t\\t"),
        (" x\r\n", f"{VISIBLE_SPACE}x\\r\\n"),
        ("a b", "a b"),  # a space inside a token is visible as it is
        ("end ", f"end{VISIBLE_SPACE}"),
        ("\u00a0", "\\xa0"),
        ("\u2028", "\\u2028"),
        (" <0xE4><0xB8>", f"{VISIBLE_SPACE}<0xE4><0xB8>"),  # bytes, as precompute stores them
        ("", ""),
    ],
)
def test_readable_token(token, shown):
    assert readable_token(token) == shown


# --- the page --------------------------------------------------------------------------------------------------


def _contexts_of(store: Path, checkpoint: str, layer: int, unit: int) -> list[dict]:
    with duckdb.connect(str(store), read_only=True) as con:
        cursor = con.execute(
            "SELECT t.lang, t.rank, s.text, t.peak_start, t.peak_end, t.response, t.token_start, t.token_end, "
            "t.token_act FROM unit_top_contexts t JOIN sentences s USING (sentence_id) WHERE t.run_id = ? "
            "AND t.checkpoint = ? AND t.layer = ? AND t.unit = ? ORDER BY t.lang, t.rank",
            [RUN_ID, checkpoint, layer, unit],
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def test_neuron_page_colours_every_token_on_one_scale_per_unit(monkeypatch, synthetic_store):
    checkpoint, layer, unit = _a_unit(synthetic_store)
    rows = _contexts_of(synthetic_store, checkpoint, layer, unit)
    assert len({r["lang"] for r in rows}) >= 2
    at = run_app(monkeypatch, synthetic_store, layer=layer, unit=unit, dckpt=checkpoint)
    # The top contexts' blocks, not those of the contexts beyond the top (each tab's expander).
    bodies = [h.value for h in at.get("html") if SAMPLES_CLASS not in h.value]
    assert len(bodies) == len({r["lang"] for r in rows})  # one block per language tab
    scale = max(max(r["token_act"]) for r in rows)  # the unit's largest activation over every language shown
    shown = "".join(bodies)
    for row in rows:
        expected = context_html(
            row["text"],
            row["token_start"],
            row["token_end"],
            row["token_act"],
            peak_start=row["peak_start"],
            peak_end=row["peak_end"],
            scale=scale,
        )
        assert expected in shown
        assert f"{row['rank']}. {row['response']:.3f}</span>" in shown  # one value a row: the response
    assert "**" not in shown and "peak activation" not in shown
    langs = sorted({r["lang"] for r in rows})
    for lang, body in zip(langs, bodies):  # the tabs, in language order
        parsed = _Parsed(body)
        assert set(parsed.tags) <= {"div", "span"}
        peaks = [a for a, _ in parsed.spans if PEAK_OUTLINE in a.get("style", "")]
        assert len(peaks) == sum(r["lang"] == lang for r in rows)  # one peak outlined per context
    assert any("Each token's background is the unit's activation" in c.value for c in at.caption)
    # The contexts are no longer markdown rows with a bolded peak.
    assert not any(highlighted(r["text"], r["peak_start"], r["peak_end"]) in m.value for r in rows for m in at.markdown)
    # The download table lists every context, without the per-token lists.
    assert any(d.value.shape[0] == len(rows) and "token_act" not in d.value.columns for d in at.dataframe)


def test_neuron_page_of_a_store_without_token_columns_shows_the_peak(monkeypatch, synthetic_store, tmp_path):
    old = tmp_path / "old.duckdb"
    shutil.copyfile(synthetic_store, old)
    with duckdb.connect(str(old)) as con:  # unit_top_contexts as stores wrote it before the columns were added
        for column in ("token_start", "token_end", "token_act"):
            con.execute(f"ALTER TABLE unit_top_contexts DROP COLUMN {column}")
    checkpoint, layer, unit = _a_unit(old)
    at = run_app(monkeypatch, old, layer=layer, unit=unit, dckpt=checkpoint)
    assert not at.get("html")
    assert any("no per-token activations" in c.value for c in at.caption)
    shown = [m.value for m in at.markdown]
    with duckdb.connect(str(old), read_only=True) as con:
        rows = con.execute(
            "SELECT t.rank, s.text, t.peak_start, t.peak_end, t.response FROM unit_top_contexts t "
            "JOIN sentences s USING (sentence_id) WHERE t.checkpoint = ? AND t.layer = ? AND t.unit = ?",
            [checkpoint, layer, unit],
        ).fetchall()
    assert rows
    for rank, text, start, end, response in rows:
        assert f"{rank}\\. `{response:.3f}` · {highlighted(text, start, end)}" in shown


def test_neuron_page_shows_hostile_contexts_as_text(monkeypatch, synthetic_store, tmp_path):
    target = tmp_path / "hostile.duckdb"
    shutil.copyfile(synthetic_store, target)
    with duckdb.connect(str(target)) as con:
        con.execute("UPDATE sentences SET text = ? || text", [HOSTILE])  # the stored offsets now point elsewhere
    checkpoint, layer, unit = _a_unit(target)
    at = run_app(monkeypatch, target, layer=layer, unit=unit, dckpt=checkpoint)
    bodies = [h.value for h in at.get("html")]
    assert bodies
    for body in bodies:
        parsed = _Parsed(body)
        assert set(parsed.tags) <= {"div", "span"}, parsed.tags
        assert HOSTILE in parsed.text  # every character of the store's text, shown as text
        assert "203.0.113.9" not in "".join(str(a) for a, _ in parsed.spans)  # never in an attribute


def test_output_tokens_show_their_spaces_and_line_breaks(monkeypatch, synthetic_store, tmp_path):
    target = tmp_path / "tokens.duckdb"
    shutil.copyfile(synthetic_store, target)
    checkpoint, layer, unit = _a_unit(target)
    token = " x\n<0xE4>"
    with duckdb.connect(str(target)) as con:
        con.execute(
            "UPDATE unit_output_tokens SET token = ? WHERE checkpoint = ? AND layer = ? AND unit = ? "
            "AND direction = 'promoted' AND rank = 1",
            [token, checkpoint, layer, unit],
        )
    at = run_app(monkeypatch, target, layer=layer, unit=unit, dckpt=checkpoint)
    readable = f"{VISIBLE_SPACE}x\\n<0xE4>"  # the space made visible, the line break escaped, the bytes as stored
    listed = next(m.value for m in at.markdown if m.value.startswith("At ") and "(+" in m.value)
    assert listed.split(": ", 1)[1].startswith(f"{md(readable)} (+")
    grids = [c.proto for c in at.get("vega_lite_chart") if "most promoted tokens" in c.proto.spec]
    assert len(grids) == 1
    cells = pa.ipc.open_stream(grids[0].data.data).read_all().column("token").to_pylist()  # the chart's rows
    assert readable in cells and token not in cells  # the grid's cell shows the same
