"""The Neuron page's drill-downs and the Search page under AppTest, on synthetic stores.

What is asserted is what the page renders: the top context shown for a unit is the store's, with its peak
token (and only it) in bold, escaped; the histograms and token grids are drawn; a Japanese word finds its
concept and the units whose top contexts contain it; the Concepts page's expert cells link to the unit.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from explorer.drilldown import BOLD_CLOSE, BOLD_OPEN, context_html, highlighted
from explorer.text import md, readable_token
from tests.support.synthetic_store import RUN_ID, build_synthetic_store

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"


@pytest.fixture(scope="module")
def ja_store(tmp_path_factory) -> Path:
    return build_synthetic_store(
        tmp_path_factory.mktemp("ja") / "ja.duckdb", languages=("en", "ja", "de"), checkpoints=3, seed=2
    )


def run_app(monkeypatch, store: Path, page: str, **params: str) -> AppTest:
    monkeypatch.setenv("CROSSLING_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = str(value)
    at.switch_page(f"views/{page}.py")
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _most_shared(store: Path) -> tuple[int, int, str]:
    con = duckdb.connect(str(store), read_only=True)
    last = con.execute("SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1").fetchone()[0]
    layer, unit = con.execute(
        "SELECT layer, unit FROM shared_experts WHERE checkpoint = ? GROUP BY layer, unit "
        "ORDER BY max(n_langs_topk) DESC, count(*) DESC, layer, unit LIMIT 1",
        [last],
    ).fetchone()
    con.close()
    return layer, unit, last


def test_highlight_escapes_every_part_and_bolds_only_the_peak():
    text = "see [x](https://e.example) <b>*peak*</b> end"
    start = text.index("<b>")
    out = highlighted(text, start, start + len("<b>*peak*</b>"))
    assert out == f"{md(text[:start])}{BOLD_OPEN}{md('<b>*peak*</b>')}{BOLD_CLOSE}{md(text[start + 13 :])}"
    assert "<b>" not in out and "](" not in out
    assert highlighted(" Montag", 0, 7) == f"{md(' ')}{BOLD_OPEN}Montag{BOLD_CLOSE}"  # the space stays outside
    assert highlighted("abc", 5, 9) == md("abc")  # offsets beyond the text highlight nothing


def test_neuron_page_shows_the_stores_top_contexts_histograms_and_tokens(monkeypatch, synthetic_store):
    layer, unit, last = _most_shared(synthetic_store)
    at = run_app(monkeypatch, synthetic_store, "neuron", layer=layer, unit=unit)
    assert_clean(at)
    con = duckdb.connect(str(synthetic_store), read_only=True)
    rows = con.execute(
        "SELECT t.lang, t.rank, s.text, t.peak_start, t.peak_end, t.response, t.token_start, t.token_end, "
        "t.token_act FROM unit_top_contexts t JOIN sentences s USING (sentence_id) WHERE t.run_id = ? "
        "AND t.checkpoint = ? AND t.layer = ? AND t.unit = ? ORDER BY t.lang, t.rank",
        [RUN_ID, last, layer, unit],
    ).fetchall()
    promoted = con.execute(
        "SELECT token, logit FROM unit_output_tokens WHERE run_id = ? AND checkpoint = ? AND layer = ? AND unit = ? "
        "AND direction = 'promoted' ORDER BY rank",
        [RUN_ID, last, layer, unit],
    ).fetchall()
    con.close()
    assert rows and promoted
    shown = [m.value for m in at.markdown]
    contexts = "".join(h.value for h in at.get("html"))  # every token coloured: HTML, one block per language
    scale = max(max(r[8]) for r in rows)  # one colour scale for the unit at this checkpoint
    # Every language's contexts are there, in the store's order, with their response and their peak outlined.
    previous = -1
    for _lang, rank_, text_, s_, e_, r_, starts, ends, acts in rows:
        row_html = context_html(text_, starts, ends, acts, peak_start=s_, peak_end=e_, scale=scale)
        assert f"{rank_}. {r_:.3f}</span>" in contexts and row_html in contexts
        assert contexts.index(row_html) > previous
        previous = contexts.index(row_html)
    assert "**" not in contexts
    specs = [json.dumps(json.loads(ch.proto.spec), ensure_ascii=False) for ch in at.get("vega_lite_chart")]
    assert any("contexts (" in s and "contexts (symlog axis)" in s for s in specs)
    assert any("other contexts (" in s for s in specs)
    assert any("most promoted tokens" in s for s in specs) and any("most suppressed tokens" in s for s in specs)
    listed = next(v for v in shown if v.startswith("At "))  # the promoted tokens at the checkpoint, in order
    assert [t for t in listed.split(": ", 1)[1].split(", ")][: len(promoted)] == [
        f"{md(readable_token(t))} ({v:+.2f})" for t, v in promoted
    ]
    assert any("most similar cross-lingual profile" in v for v in shown)
    assert len(at.dataframe) >= 2  # the contexts table, the similar units


def test_neuron_page_of_a_unit_without_drilldowns_says_so(monkeypatch, synthetic_store):
    con = duckdb.connect(str(synthetic_store), read_only=True)
    layer, unit = con.execute(
        "SELECT layer, unit FROM neuron_summary s WHERE NOT EXISTS (SELECT 1 FROM unit_top_contexts t "
        "WHERE t.layer = s.layer AND t.unit = s.unit) ORDER BY layer, unit LIMIT 1"
    ).fetchone()
    con.close()
    at = run_app(monkeypatch, synthetic_store, "neuron", layer=layer, unit=unit)
    assert_clean(at)
    assert any("No drill-downs for layer" in i.value for i in at.info)


def test_search_for_a_japanese_word_finds_its_concept_and_units(monkeypatch, ja_store):
    at = run_app(monkeypatch, ja_store, "search", q="月曜日")
    assert_clean(at)
    assert at.title[0].value == "Search"
    frames = [f.value for f in at.dataframe]
    concepts = frames[0]
    assert concepts["concept_id"].tolist() == ["monday"]
    assert concepts["langs"].tolist() == ["ja"]
    con = duckdb.connect(str(ja_store), read_only=True)
    last = con.execute("SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1").fetchone()[0]
    expected = {
        tuple(r)
        for r in con.execute(
            "SELECT DISTINCT t.layer, t.unit FROM unit_top_contexts t JOIN sentences s USING (sentence_id) "
            "WHERE t.checkpoint = ? AND s.text LIKE '%月曜日%'",
            [last],
        ).fetchall()
    }
    con.close()
    units = frames[1]
    assert expected and {tuple(r) for r in units[["layer", "unit"]].itertuples(index=False)} == expected
    assert all(u.startswith("neuron?layer=") for u in units["open"])


def test_search_without_a_word_explains(monkeypatch, ja_store):
    at = run_app(monkeypatch, ja_store, "search")
    assert_clean(at)
    assert any("Type a word" in i.value for i in at.info)


def test_concepts_page_links_experts_to_their_neuron_page(monkeypatch, synthetic_store):
    at = run_app(monkeypatch, synthetic_store, "concepts", concept="monday")
    assert_clean(at)
    con = duckdb.connect(str(synthetic_store), read_only=True)
    last = con.execute("SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1").fetchone()[0]
    layer, unit = con.execute(
        "SELECT layer, unit FROM neuron_ap WHERE checkpoint = ? AND concept_id = 'monday' "
        "AND rank = 1 ORDER BY lang LIMIT 1",
        [last],
    ).fetchone()
    con.close()
    linked = next(d.value for d in at.dataframe if "open" in d.value.columns and "rank" in d.value.columns)
    row = linked[(linked["layer"] == layer) & (linked["unit"] == unit)]
    assert row["open"].tolist()[0] == f"neuron?layer={layer}&unit={unit}&concept=monday"
