"""Every chart readable and honest, checked on the Vega-Lite specs the pages hand the browser (AppTest) on a
synthetic store of 12 languages: one distinct colour per language and the same colour on every page, legends from
the lines (not from faded interval bands), every heatmap row and every checkpoint labelled, gaps where a unit left
the top-K, the stored K named where the stored overlaps are shown, a heatmap's diagonal off its colour scale, and
chance beside the probe heatmap."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from explorer import charts
from explorer import queries as Q
from tests.support.synthetic_store import PAPER_SCALE, RUN_ID, build_synthetic_store

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"
LANGUAGES = PAPER_SCALE["languages"]  # 12 languages, in an order that is not the store's (sorted) one
STORED_K = 10


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A synthetic store with 12 languages, 4 checkpoints and a stored top-10."""
    return build_synthetic_store(
        tmp_path_factory.mktemp("honesty") / "store.duckdb", languages=LANGUAGES, checkpoints=4, k=STORED_K, seed=3
    )


def page(monkeypatch, store: Path, name: str, **params: str) -> AppTest:
    monkeypatch.setenv("CROSSLING_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=90)
    for key, value in params.items():
        at.query_params[key] = str(value)
    at.switch_page(f"views/{name}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def specs(at: AppTest) -> list[dict]:
    """Every chart's spec, with the top-level data Streamlit sends beside it (as Arrow) put back as ``values``."""
    out = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        blob = element.proto.data.data
        if blob and "data" not in spec:
            spec["data"] = {"values": pa.ipc.open_stream(io.BytesIO(blob)).read_all().to_pylist()}
        out.append(spec)
    return out


def rows(spec: dict, view: dict) -> list[dict]:
    """The rows a view draws: its own data, else its parent's (a layer of rect and text shares one)."""
    return (view.get("data") or spec["data"])["values"]


def title_of(spec: dict) -> str:
    title = spec.get("title", "")
    return title.get("text", "") if isinstance(title, dict) else str(title)


def views(spec: dict) -> list[dict]:
    """The unit views of a spec (the spec itself, or its layers)."""
    return spec.get("layer", [spec])


def mark_type(view: dict) -> str | None:
    mark = view.get("mark")
    return mark.get("type") if isinstance(mark, dict) else mark


def lang_colors(spec: dict) -> dict[str, str]:
    """language -> colour of every view of ``spec`` that colours by language (they must agree)."""
    found: dict[str, str] = {}
    for view in views(spec):
        color = view.get("encoding", {}).get("color", {})
        if color.get("field") == "lang":
            scale = color["scale"]
            assert len(scale["domain"]) == len(scale["range"]), scale
            for lang, colour in zip(scale["domain"], scale["range"]):
                assert found.setdefault(lang, colour) == colour, (lang, title_of(spec))
    return found


def store_languages(store: Path) -> list[str]:
    with duckdb.connect(str(store), read_only=True) as con:
        return Q.languages(con)["lang"].to_list()


def test_every_language_has_its_own_colour_and_keeps_it_across_pages(monkeypatch, store):
    probes = page(monkeypatch, store, "probes")
    per_language = [s for s in specs(probes) if "Per-language F1" in title_of(s)]
    assert len(per_language) == 2
    expected = charts.language_colors(store_languages(store))
    for spec in per_language:
        colours = lang_colors(spec)
        assert sorted(colours) == sorted(LANGUAGES), "the legend lists every language"
        assert len(set(colours.values())) == len(LANGUAGES), "no two languages share a colour"
        assert colours == expected, "colours follow the store's language order"
        legend = spec["encoding"]["color"]["legend"]
        assert legend is not None and legend.get("symbolLimit") == 0, "no legend entry is dropped"

    unit = gappy_unit(store)
    neuron = page(monkeypatch, store, "neuron", layer=unit["layer"], unit=unit["unit"], concept=unit["concept_id"])
    ap = next(s for s in specs(neuron) if title_of(s).startswith("AP for"))
    rank = next(s for s in specs(neuron) if title_of(s).startswith("Rank for"))
    for spec in (ap, rank):
        colours = lang_colors(spec)
        assert colours, "the neuron page colours its lines by language"
        assert all(expected[lang] == colour for lang, colour in colours.items()), "the same colour as on Probes"


def test_legends_are_drawn_from_the_lines_not_the_bands(monkeypatch, store):
    at = page(monkeypatch, store, "probes", rep="token")
    spec = next(s for s in specs(at) if "against chance" in title_of(s))
    bands = [v for v in spec["layer"] if mark_type(v) == "area"]
    lines = [v for v in spec["layer"] if mark_type(v) == "line"]
    assert bands and lines
    for band in bands:
        assert band["encoding"]["color"]["legend"] is None, "the faded band does not stand in the legend"
    assert lines[0]["encoding"]["color"]["legend"] is not None
    assert spec["resolve"]["legend"]["color"] == "independent"
    # Band and line give a series the same colour: one explicit scale.
    scales = {json.dumps(v["encoding"]["color"]["scale"], sort_keys=True) for v in [*bands, *lines]}
    assert len(scales) == 1
    assert set(json.loads(scales.pop())["domain"]) >= {"LID probe", "majority class"}


def test_overview_gives_jaccard_spearman_and_shared_experts_their_own_axes(monkeypatch, store):
    at = page(monkeypatch, store, "overview")
    all_specs = specs(at)
    jaccard = next(s for s in all_specs if "Jaccard of the top-" in title_of(s))
    spearman = next(s for s in all_specs if "Spearman of all units' AP" in title_of(s))
    shared = next(s for s in all_specs if title_of(s).startswith("Shared experts over training"))
    line = next(v for v in jaccard["layer"] if mark_type(v) == "line")
    top = line["encoding"]["y"]["scale"]["domain"][1]
    highest = max(r["value"] for r in line["data"]["values"] if r["value"] is not None)
    assert highest < top < 2 * highest, "the Jaccard axis spans the Jaccard values, not 0-1"
    assert "mean_spearman_ap" not in json.dumps(jaccard) and "mean_jaccard" not in json.dumps(spearman)
    assert shared["height"] >= 200 and shared["autosize"]["type"] == "fit-x", "a real plot height"
    assert f"top-{STORED_K} in" in title_of(shared)


def test_every_heatmap_row_and_every_checkpoint_is_labelled(monkeypatch, store):
    unit = gappy_unit(store)
    for name, params in (
        ("neuron", {"layer": unit["layer"], "unit": unit["unit"]}),
        ("concepts", {}),
        ("overview", {}),
        ("probes", {}),
    ):
        for spec in specs(page(monkeypatch, store, name, **params)):
            for view in views(spec):
                enc = view.get("encoding", {})
                if enc.get("x", {}).get("field") == "checkpoint":
                    assert enc["x"]["axis"]["labelOverlap"] is False, (name, title_of(spec))
                    assert len(enc["x"]["scale"]["domain"]) == 4, "every checkpoint on the axis"
                if mark_type(view) == "rect" and enc.get("y", {}).get("type") in ("nominal", "ordinal"):
                    assert len({r.get(enc["y"]["field"]) for r in rows(spec, view)}) <= 60
                    assert enc["y"]["axis"]["labelOverlap"] is False, (name, title_of(spec))


def gappy_unit(store: Path) -> dict:
    """A (layer, unit, concept, lang) that is in the stored top-K at some checkpoints of the run but not all."""
    with duckdb.connect(str(store), read_only=True) as con:
        row = con.execute(
            """SELECT layer, unit, concept_id, lang, count(DISTINCT checkpoint) AS n FROM neuron_ap
               WHERE run_id = ? GROUP BY ALL HAVING n BETWEEN 2 AND 3 ORDER BY layer, unit, concept_id, lang LIMIT 1""",
            [RUN_ID],
        ).fetchone()
    assert row, "the synthetic store has a unit that leaves the top-K"
    return dict(zip(["layer", "unit", "concept_id", "lang", "n"], row))


def test_ap_and_rank_lines_break_where_the_unit_left_the_top_k(monkeypatch, store):
    unit = gappy_unit(store)
    at = page(monkeypatch, store, "neuron", layer=unit["layer"], unit=unit["unit"], concept=unit["concept_id"])
    for prefix, field in (("AP for", "ap"), ("Rank for", "rank")):
        spec = next(s for s in specs(at) if title_of(s).startswith(prefix))
        line = next(v for v in views(spec) if mark_type(v) == "line" and not v["mark"].get("strokeDash"))
        mine = [r for r in rows(spec, line) if r["lang"] == unit["lang"]]
        assert len(mine) == 4, "one row per checkpoint of the run"
        assert sum(r[field] is None for r in mine) == 4 - unit["n"], "a null (a gap) where the unit is absent"


def test_complete_checkpoints_fills_every_series_with_nulls():
    df = pl.DataFrame({"checkpoint": ["a", "c", "b"], "lang": ["fi", "fi", "de"], "ap": [0.1, 0.3, 0.2]})
    full = charts.complete_checkpoints(df, ["a", "b", "c"], "lang")
    assert full.height == 6
    assert full["checkpoint"].to_list() == ["a", "a", "b", "b", "c", "c"]
    fi = full.filter(pl.col("lang") == "fi")
    assert fi["ap"].to_list() == [0.1, None, 0.3]
    assert charts.complete_checkpoints(df.head(0), ["a"], "lang").height == 0


def test_concepts_and_compare_name_the_stored_k(monkeypatch, store):
    at = page(monkeypatch, store, "concepts", concept="monday", k="5")
    titles = [title_of(s) for s in specs(at)]
    assert any(f"top-{STORED_K} sets" in t and "Jaccard" in t for t in titles), titles  # the heatmap
    assert any(f"jaccard per language pair (top-{STORED_K} sets)" in t for t in titles), titles
    assert any(f"top-{STORED_K} in" in t for t in titles if t.startswith("Shared experts")), titles
    labels = [m.label for m in at.metric]
    assert any(f"top-{STORED_K} sets" in label for label in labels), labels
    assert any(f"top-{STORED_K} in" in label for label in labels), labels

    at = page(monkeypatch, store, "compare", concept="monday", k="5")
    heatmaps = [title_of(s) for s in specs(at) if title_of(s).startswith("Jaccard at")]
    assert len(heatmaps) == 2 and all(f"top-{STORED_K} sets" in t for t in heatmaps), heatmaps


def test_the_diagonal_is_off_the_colour_scale(monkeypatch, store):
    at = page(monkeypatch, store, "concepts", concept="monday")
    spec = next(s for s in specs(at) if "Jaccard of top-" in title_of(s))
    coloured = next(v for v in spec["layer"] if v["encoding"].get("color", {}).get("type") == "quantitative")
    values = coloured["data"]["values"]
    assert values and all(r["lang_a"] != r["lang_b"] for r in values), "no diagonal cell on the scale"
    assert coloured["encoding"]["color"]["scale"]["domain"][1] == pytest.approx(max(r["jaccard"] for r in values))
    diagonal = [v for v in spec["layer"] if v.get("mark", {}).get("color") == charts.DIAGONAL_COLOR]
    assert diagonal and all(r["lang_a"] == r["lang_b"] for r in diagonal[0]["data"]["values"])


def test_concepts_grid_shows_every_language_column(monkeypatch, store):
    at = page(monkeypatch, store, "concepts", concept="monday", k="5")
    grids = [d.value for d in at.dataframe if list(d.value.columns[:1]) == ["rank"]]
    columns = [col for grid in grids for col in grid.columns if col != "rank"]
    assert sorted(columns) == sorted(LANGUAGES), "every language has its column"
    assert all(len(grid.columns) - 1 <= 7 for grid in grids), "no table wider than the page"


def test_the_probe_heatmap_carries_its_chance(monkeypatch, store):
    at = page(monkeypatch, store, "probes", rep="token")
    spec = next(s for s in specs(at) if title_of(s).startswith("LID probe accuracy"))
    tooltip = [t.get("field") for t in spec["encoding"]["tooltip"] if isinstance(t, dict)]
    assert "majority_baseline" in tooltip
    assert all(r["majority_baseline"] is not None for r in rows(spec, spec))
    assert any("majority class" in c.value for c in at.caption)
