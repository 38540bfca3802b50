"""What the charts draw, read in a real browser: every page of ``explorer.pages.PAGES`` is served on a synthetic
store of 12 languages, opened in headless Chromium, and every Vega chart is read from the SVG it drew (legend
swatches and labels, axis labels, the title's box, the line paths), not from the spec handed to it
(``test_chart_honesty`` checks the specs). On the drawing:

- a language legend gives every language its own colour, and a language has the same colour on every page;
- a heatmap labels every row (a discrete y axis of at most 60 rows: as many labels as rows, and for the named
  heatmaps exactly the rows an independent query of the store finds);
- a checkpoint axis labels every checkpoint of the run;
- no title is clipped (its ink starts inside its chart's box);
- on the Neuron page, a unit that is absent from the stored top-K between two checkpoints where it is present draws
  its AP and rank lines with a gap (a path with more than one move, or several paths).

Uses Debian's /usr/bin/chromium through playwright's python package (no download); skipped when absent. One
server, the pages in sequence.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from explorer import charts
from explorer import pages as explorer_pages
from tests.support.browser_check import CHROMIUM, CHROMIUM_ARGS, drawn_charts, page_heading, served, wait_drawn
from tests.support.synthetic_store import PAPER_SCALE, RUN_ID, build_synthetic_store

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = PAPER_SCALE["languages"]  # 12 languages
CHECKPOINTS = 4
PAGE_TIMEOUT_S = 60.0  # one page, from the request to its last chart drawn (a load takes ~2-5 s on 2 cores)
MAX_LABELLED_ROWS = 60
#: Sub-pixel slack when comparing a title's box with its chart's.
SLACK_PX = 0.5

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A synthetic store with 12 languages and 4 checkpoints (read-only here)."""
    return build_synthetic_store(
        tmp_path_factory.mktemp("drawn") / "store.duckdb", languages=LANGUAGES, checkpoints=CHECKPOINTS, seed=3
    )


def gappy_unit(con: duckdb.DuckDBPyConnection) -> dict:
    """A (layer, unit, concept, lang) in the stored top-K at two checkpoints of the run and absent at one between
    them: its line must break there (an absence only at the ends would draw no gap)."""
    row = con.execute(
        """WITH pos AS (SELECT checkpoint, row_number() OVER (ORDER BY step) AS i FROM checkpoints WHERE run_id = ?)
           SELECT layer, unit, concept_id, lang, count(DISTINCT i) AS n FROM neuron_ap JOIN pos USING (checkpoint)
           WHERE run_id = ? GROUP BY layer, unit, concept_id, lang
           HAVING n >= 2 AND max(i) - min(i) + 1 > n ORDER BY layer, unit, concept_id, lang LIMIT 1""",
        [RUN_ID, RUN_ID],
    ).fetchone()
    assert row, "the synthetic store has a unit that leaves the top-K and comes back"
    return dict(zip(["layer", "unit", "concept_id", "lang", "n"], row))


def distinct(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> set[str]:
    """The first column of ``sql``'s rows as the strings an axis draws them as (layers and ranks as digits)."""
    return {str(r[0]) for r in con.execute(sql, params).fetchall()}


def expected_rows(con: duckdb.DuckDBPyConnection, unit: dict) -> list[tuple[str, re.Pattern, set[str], set[str]]]:
    """(page, title pattern, the rows of its y axis, of its x axis or empty) of the heatmaps whose rows an
    independent query of the store gives: each must be drawn, with exactly these row labels."""
    languages = distinct(con, "SELECT lang FROM languages", [])
    at_unit = "FROM neuron_ap WHERE run_id = ? AND layer = ? AND unit = ?"
    unit_args = [RUN_ID, unit["layer"], unit["unit"]]
    tokens = (
        "SELECT DISTINCT rank FROM unit_output_tokens WHERE run_id = ? AND layer = ? AND unit = ? AND direction = ?"
    )

    def layers(table: str) -> set[str]:
        return distinct(con, f"SELECT DISTINCT layer FROM {table} WHERE run_id = ?", [RUN_ID])

    return [
        ("overview", re.compile(r"^LID probe accuracy"), layers("probe_results"), set()),
        ("probes", re.compile(r"^LID probe accuracy"), layers("probe_results"), set()),
        ("concepts", re.compile(r"^Jaccard of top-\d+ sets"), languages, languages),
        ("compare", re.compile(r"^Jaccard at A"), languages, languages),
        ("compare", re.compile(r"^Jaccard at B"), languages, languages),
        (
            "neuron",
            re.compile(r"^languages in which the unit is a top-"),
            distinct(con, f"SELECT concept_id {at_unit}", unit_args),
            set(),
        ),
        (
            "neuron",
            re.compile(r"^concepts for which the unit is top-K"),
            distinct(con, f"SELECT lang {at_unit}", unit_args),
            set(),
        ),
        ("neuron", re.compile(r"^most promoted tokens"), distinct(con, tokens, [*unit_args, "promoted"]), set()),
        ("neuron", re.compile(r"^most suppressed tokens"), distinct(con, tokens, [*unit_args, "suppressed"]), set()),
        ("language", re.compile(r"^F1 for "), layers("probe_per_language"), set()),
        ("compression", re.compile(r"^Mean \S+ over language pairs"), layers("compression"), set()),
        ("compression", re.compile(r" at \S+, layer \d+$"), languages, languages),
        (
            "language_neurons",
            re.compile(r"^language_specific units per layer"),  # the page's first kind
            distinct(
                con,
                "SELECT DISTINCT layer FROM neuron_counts WHERE run_id = ? AND kind = ?",
                [RUN_ID, "language_specific"],
            ),
            set(),
        ),
    ]


def axis(chart: dict, which: str) -> dict | None:
    """The chart's ``which`` ("X" or "Y") axis as drawn: Vega's aria description and the label texts."""
    return next((a for a in chart["axes"] if a["aria"].startswith(f"{which}-axis")), None)


def discrete_size(drawn_axis: dict) -> int | None:
    """How many values Vega's own scale of a discrete axis holds (from its aria description), else None."""
    found = re.search(r"discrete scale with (\d+) values", drawn_axis["aria"])
    return int(found.group(1)) if found else None


def language_legends(chart: dict, languages: set[str]) -> list[dict]:
    """The chart's legends whose entries are all languages of the store (swatch legends only)."""
    return [g for g in chart["legends"] if g["entries"] and {e["label"] for e in g["entries"]} <= languages]


@pytest.fixture(scope="module")
def facts(store) -> dict:
    """What the store says, by independent SQL: the run's checkpoints in training order, its languages, the
    unit with a gap, the named heatmaps' rows, and the colour each language must have."""
    with duckdb.connect(str(store), read_only=True) as con:
        order = [
            r[0]
            for r in con.execute(
                "SELECT checkpoint FROM checkpoints WHERE run_id = ? ORDER BY step", [RUN_ID]
            ).fetchall()
        ]
        store_order = [r[0] for r in con.execute("SELECT lang FROM languages ORDER BY lang").fetchall()]
        unit = gappy_unit(con)
        named = expected_rows(con, unit)
    assert len(order) == CHECKPOINTS and len(store_order) == len(LANGUAGES)
    return {
        "order": order,
        "languages": set(store_order),
        "colors": {lang: c.lower() for lang, c in charts.language_colors(store_order).items()},
        "unit": unit,
        "named": named,
    }


@pytest.fixture(scope="module")
def drawn(store, facts) -> dict[str, list[dict]]:
    """Page name -> every chart it drew (``tests.support.browser_check.drawn_charts``), each page opened once in
    one headless Chromium on one server, after its script finished and its last chart was drawn."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (install Debian's chromium: `make browser-deps`)")
    pytest.importorskip("playwright.sync_api", reason="playwright's python package is not installed")
    from playwright.sync_api import sync_playwright

    unit = facts["unit"]
    queries = {
        "search": "?q=monday",
        "neuron": f"?layer={unit['layer']}&unit={unit['unit']}&concept={unit['concept_id']}",
    }
    out: dict[str, list[dict]] = {}
    with served(store, ROOT) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            for spec in explorer_pages.PAGES:
                page.goto(f"{url}/{spec.served_path}{queries.get(spec.name, '')}", wait_until="domcontentloaded")
                page.get_by_role("heading", name=page_heading(spec), exact=True).first.wait_for(
                    timeout=PAGE_TIMEOUT_S * 1000
                )
                wait_drawn(page, PAGE_TIMEOUT_S)
                assert page.locator("[data-testid='stException']").count() == 0, spec.name
                out[spec.name] = drawn_charts(page)
        finally:
            browser.close()
    assert sum(len(c) for c in out.values()) >= 2 * len(out), "the pages drew their charts"
    return out


def every_chart(drawn: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    """(where: "page: title", chart) of every drawn chart; each must be an SVG this check can read."""
    found = []
    for name, page_charts in drawn.items():
        for chart in page_charts:
            where = f"{name}: {chart['title']['text'] if chart['title'] else '(untitled)'}"
            assert chart["svg"], f"{where}: drawn to a canvas, which this check cannot read"
            found.append((where, chart))
    return found


def language_colours(
    facts: dict, charts_here: list[tuple[str, dict]]
) -> tuple[dict[str, tuple[str, str]], dict[str, set[str]]]:
    """language -> (colour, where first drawn) and language -> pages, over the language legends of
    ``charts_here``; asserts one distinct colour per language within a legend, and one colour per language across
    all of them."""
    color_of: dict[str, tuple[str, str]] = {}
    pages_of: dict[str, set[str]] = {}
    for where, chart in charts_here:
        for legend in language_legends(chart, facts["languages"]):
            labels = [e["label"] for e in legend["entries"]]
            colours = [e["color"] for e in legend["entries"]]
            assert len(set(labels)) == len(labels), f"{where}: a language listed twice"
            assert len(set(colours)) == len(colours), f"{where}: two languages share a colour {legend}"
            for lang, colour in zip(labels, colours):
                first = color_of.setdefault(lang, (colour, where))
                assert first[0] == colour, f"{lang} is {colour} in {where} but {first[0]} in {first[1]}"
                pages_of.setdefault(lang, set()).add(where.split(":")[0])
    return color_of, pages_of


def test_one_distinct_colour_per_language_and_the_same_on_every_page(drawn, facts):
    color_of, pages_of = language_colours(facts, every_chart(drawn))
    assert set(color_of) == facts["languages"], "every language is drawn in some legend"
    assert {lang: c for lang, (c, _) in color_of.items()} == facts["colors"], "the store-wide colours"
    assert any(len(pages) >= 2 for pages in pages_of.values()), f"no language on two pages: {pages_of}"


def test_stacked_bars_give_languages_their_store_wide_colour(drawn, facts):
    """The Language neurons and Steering pages' stacked bars colour languages as every other chart does."""
    bars = [(w, c) for w, c in every_chart(drawn) if w.split(": ", 1)[0] in {"language_neurons", "steering"}]
    bars = [(w, c) for w, c in bars if c["rects"] > 0]
    color_of, _ = language_colours(facts, bars)
    assert color_of, "the bars' legends list languages"
    for lang, (colour, where) in color_of.items():
        assert colour == facts["colors"][lang], f"{where}: {lang} is {colour}, elsewhere {facts['colors'][lang]}"


def test_no_title_is_clipped(drawn):
    for where, chart in every_chart(drawn):
        if not chart["title"]:
            continue
        clip = {
            "top": max(chart["container"]["top"], chart["drawing"]["top"]),
            "right": min(chart["container"]["right"], chart["drawing"]["right"]),
        }
        ink = chart["title"]["ink"]
        assert ink["top"] >= clip["top"] - SLACK_PX, f"{where}: the title's top is clipped ({ink}, {clip})"
        assert ink["right"] <= clip["right"] + SLACK_PX, f"{where}: the title runs past the chart's edge"


def test_every_checkpoint_is_labelled(drawn, facts):
    checked = 0
    for where, chart in every_chart(drawn):
        for drawn_axis in chart["axes"]:
            if "titled 'checkpoint" in drawn_axis["aria"]:
                assert drawn_axis["labels"] == facts["order"], f"{where}: checkpoint labels {drawn_axis['labels']}"
                checked += 1
    assert checked >= len(drawn), f"only {checked} checkpoint axes drawn"


def test_every_heatmap_row_is_labelled(drawn, facts):
    # Every heatmap: as many row labels as its scale has rows.
    for where, chart in every_chart(drawn):
        y = axis(chart, "Y")
        rows = discrete_size(y) if y else None
        if chart["rects"] and rows is not None and rows <= MAX_LABELLED_ROWS:
            assert len(y["labels"]) == rows, f"{where}: {len(y['labels'])} row labels for {rows} rows"
    # The named heatmaps: exactly the rows (and columns) the store holds.
    for name, pattern, y_rows, x_rows in facts["named"]:
        heatmaps = [c for c in drawn[name] if c["title"] and pattern.search(c["title"]["text"]) and c["rects"]]
        assert heatmaps, f"{name}: no heatmap titled like {pattern.pattern!r}"
        for chart in heatmaps:
            where = f"{name}: {chart['title']['text']}"
            assert 0 < len(y_rows) <= MAX_LABELLED_ROWS, where
            labels = axis(chart, "Y")["labels"]
            assert set(labels) == y_rows and len(labels) == len(y_rows), f"{where}: row labels {labels}"
            if x_rows:
                assert set(axis(chart, "X")["labels"]) == x_rows, f"{where}: column labels"


def test_a_unit_absent_at_a_checkpoint_draws_a_gap(drawn, facts):
    unit = facts["unit"]
    colour = facts["colors"][unit["lang"]]
    for prefix in ("AP for", "Rank for"):
        chart = next(c for c in drawn["neuron"] if c["title"] and c["title"]["text"].startswith(prefix))
        assert any(e["label"] == unit["lang"] for g in chart["legends"] for e in g["entries"]), prefix
        paths = [line["d"] for line in chart["lines"] if line["color"] == colour and not line["dashed"]]
        assert paths, f"{prefix}: no line of {unit['lang']} ({colour}) drawn"
        moves = sum(d.count("M") for d in paths)
        assert moves >= 2, f"{prefix}: the line of {unit} is drawn without a gap: {paths}"
