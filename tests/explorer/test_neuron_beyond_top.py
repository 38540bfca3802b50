"""The Neuron page beyond the top contexts, under AppTest on synthetic stores.

What is asserted is what the page renders: the firing rate per language that the chart draws is the store's
(read here by independent SQL), with its baseline; the decile and random samples are drawn in an expander with
their tokens coloured; the unit's mean AP is stated beside a random scorer's; the language tab and the
histogram pickers live in the URL; and a store written before the new tables opens and renders without them.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from explorer.drilldown import SAMPLES_CLASS, context_html
from tests.support.synthetic_store import RUN_ID

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"


def run_app(monkeypatch, store: Path, **params: str) -> AppTest:
    monkeypatch.setenv("CROSSLING_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = str(value)
    at.switch_page("views/neuron.py")
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _a_unit(store: Path) -> tuple[str, int, int]:
    """The last checkpoint and a unit with drill-downs there in every language."""
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute(
            """SELECT checkpoint, layer, unit FROM unit_language_profile
               WHERE checkpoint = (SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1)
               GROUP BY ALL ORDER BY count(*) DESC, layer, unit LIMIT 1"""
        ).fetchone()


def _chart(at: AppTest, title: str) -> dict | None:
    """The spec of the first chart whose title holds ``title``, with the top-level data Streamlit sends beside
    it (as Arrow) put back as ``data.values``."""
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        if title in json.dumps(spec.get("title", ""), ensure_ascii=False):
            blob = element.proto.data.data
            if blob and "data" not in spec:
                spec["data"] = {"values": pa.ipc.open_stream(io.BytesIO(blob)).read_all().to_pylist()}
            return spec
    return None


def test_firing_rate_chart_draws_the_stores_rates_and_baseline(monkeypatch, synthetic_store):
    checkpoint, layer, unit = _a_unit(synthetic_store)
    with duckdb.connect(str(synthetic_store), read_only=True) as con:
        expected = con.execute(
            """SELECT p.lang, p.firing_rate,
                      (SELECT avg(b.firing_rate) FROM unit_language_profile b
                       WHERE b.run_id = p.run_id AND b.checkpoint = p.checkpoint AND b.lang = p.lang) AS baseline
               FROM unit_language_profile p
               WHERE p.run_id = ? AND p.checkpoint = ? AND p.layer = ? AND p.unit = ? ORDER BY p.lang""",
            [RUN_ID, checkpoint, layer, unit],
        ).fetchall()
        mean_ap, random_ap = con.execute(
            """SELECT n.mean_ap, (SELECT avg(random_ap) FROM chance_ap c
                                  WHERE c.run_id = n.run_id AND c.checkpoint = n.checkpoint)
               FROM neuron_summary n WHERE n.run_id = ? AND n.checkpoint = ? AND n.layer = ? AND n.unit = ?""",
            [RUN_ID, checkpoint, layer, unit],
        ).fetchone()
    at = run_app(monkeypatch, synthetic_store, layer=layer, unit=unit, dckpt=checkpoint)
    assert_clean(at)
    spec = _chart(at, "firing rate per language")
    assert spec is not None
    drawn = sorted((v["lang"], v["firing_rate"], v["baseline_rate"]) for v in spec["data"]["values"])
    assert len(drawn) == len(expected) >= 2
    for (lang, rate, base), (lang_, rate_, base_) in zip(drawn, expected):
        assert lang == lang_ and rate == pytest.approx(rate_, abs=1e-12) and base == pytest.approx(base_, abs=1e-12)
    assert any("the baseline: the mean firing rate of the" in c.value for c in at.caption)
    # The mean AP beside a random scorer's expected AP, as the store has them.
    assert any(f"**{mean_ap:.3f}**" in m.value and f"**{random_ap:.3f}**" in m.value for m in at.markdown)
    # The histograms are counts, with the unit's AP and the permutation threshold stated.
    assert _chart(at, "contexts (") is not None
    assert any("Counts of contexts per bin" in c.value and "AP for" in c.value for c in at.caption)


def test_samples_beyond_the_top_are_drawn_with_their_tokens(monkeypatch, synthetic_store):
    checkpoint, layer, unit = _a_unit(synthetic_store)
    with duckdb.connect(str(synthetic_store), read_only=True) as con:
        rows = con.execute(
            """SELECT t.lang, t.sample, s.text, t.peak_start, t.peak_end, t.token_start, t.token_end, t.token_act
               FROM unit_sample_contexts t JOIN sentences s USING (sentence_id)
               WHERE t.run_id = ? AND t.checkpoint = ? AND t.layer = ? AND t.unit = ?""",
            [RUN_ID, checkpoint, layer, unit],
        ).fetchall()
        scale = con.execute(
            """SELECT max(a) FROM (SELECT unnest(token_act) AS a FROM unit_top_contexts
               WHERE run_id = ? AND checkpoint = ? AND layer = ? AND unit = ?)""",
            [RUN_ID, checkpoint, layer, unit],
        ).fetchone()[0]
    # The synthetic languages have fewer than 10 contexts: the lowest bands are empty, the others drawn.
    assert rows and {r[1] for r in rows} >= {"decile_10", "random"}
    at = run_app(monkeypatch, synthetic_store, layer=layer, unit=unit, dckpt=checkpoint)
    assert_clean(at)
    beyond = "".join(h.value for h in at.get("html") if SAMPLES_CLASS in h.value)
    assert "decile 10 (90–100 % of responses)" in beyond and "random" in beyond
    for _lang, _sample, text, p_start, p_end, starts, ends, acts in rows:
        assert context_html(text, starts, ends, acts, peak_start=p_start, peak_end=p_end, scale=scale) in beyond
    assert any(e.label.startswith("Beyond the top") for e in at.expander)


def test_language_tab_and_histogram_pickers_are_in_the_url(monkeypatch, synthetic_store):
    checkpoint, layer, unit = _a_unit(synthetic_store)
    with duckdb.connect(str(synthetic_store), read_only=True) as con:
        langs = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT lang FROM unit_top_contexts WHERE checkpoint = ? AND layer = ? AND unit = ? "
                "ORDER BY 1",
                [checkpoint, layer, unit],
            ).fetchall()
        ]
        concept, lang = con.execute(
            "SELECT concept_id, lang FROM unit_response_hist WHERE checkpoint = ? AND layer = ? AND unit = ? "
            "ORDER BY concept_id DESC, lang DESC LIMIT 1",
            [checkpoint, layer, unit],
        ).fetchone()
    assert len(langs) >= 2
    plain = run_app(monkeypatch, synthetic_store, layer=layer, unit=unit, dckpt=checkpoint)
    assert plain.query_params["dlang"] == langs[0]  # the first tab, written to the URL
    at = run_app(
        monkeypatch,
        synthetic_store,
        layer=layer,
        unit=unit,
        dckpt=checkpoint,
        dlang=langs[-1],
        hconcept=concept,
        hlang=lang,
    )
    assert_clean(at)
    assert at.selectbox(key="neuron.hconcept").value == concept
    assert at.selectbox(key="neuron.hlang").value == lang
    language_tabs = [t.label for t in at.tabs][: len(langs)]  # the drill-down's tabs come first on the page
    assert at.session_state["neuron.dlang"] == language_tabs[-1]  # the tab the link names
    assert at.query_params["dlang"] == langs[-1]
    assert at.query_params["hconcept"] == concept and at.query_params["hlang"] == lang


def test_a_store_without_the_new_tables_still_opens(monkeypatch, synthetic_store, tmp_path):
    old = tmp_path / "old.duckdb"
    shutil.copyfile(synthetic_store, old)
    with duckdb.connect(str(old)) as con:  # as stores were written before the tables were added
        con.execute("DROP TABLE unit_language_profile")
        con.execute("DROP TABLE unit_sample_contexts")
    checkpoint, layer, unit = _a_unit(synthetic_store)
    at = run_app(monkeypatch, old, layer=layer, unit=unit, dckpt=checkpoint)
    assert_clean(at)
    assert _chart(at, "firing rate per language") is None
    assert not any(SAMPLES_CLASS in h.value for h in at.get("html"))
    assert any("No firing rates for this unit here" in i.value for i in at.info)
    assert at.get("html")  # the top contexts are still drawn
