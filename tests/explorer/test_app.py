"""The explorer app under ``streamlit.testing.v1.AppTest``: every page on a synthetic store, deep links,
URL state, and every kind of bad input (which must give one clear message, never a traceback)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from explorer import launch
from explorer import pages as explorer_pages
from precompute.store import create_schema
from tests.support.browser_check import page_heading
from tests.support.synthetic_store import RUN_ID, build_synthetic_store

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"
#: Every page's short name (its script's module name), from the one declaration the app builds its navigation from.
PAGES = [p.name for p in explorer_pages.PAGES]
#: The heading each page shows (its st.title), read from its script.
TITLES = {p.name: page_heading(p) for p in explorer_pages.PAGES}
#: The URL parameters a page needs before it shows data (Search shows only a prompt until given a word; every
#: synthetic context of the concept "monday" holds the word).
SHOWS_DATA_WITH = {"search": {"q": "monday"}}


@pytest.fixture(scope="module")
def store(synthetic_store) -> Path:
    """The session's synthetic store (tests/conftest.py: 4 checkpoints, seed 1); tests copy it to change it."""
    return synthetic_store


@pytest.fixture(scope="module")
def bare_store(tmp_path_factory) -> Path:
    """A store from a run that skipped the optional stages (similarity, compression, steering, ...)."""
    return build_synthetic_store(tmp_path_factory.mktemp("bare") / "bare.duckdb", optional_tables=False)


def run_app(monkeypatch, store: Path | str, page: str | None = None, *, timeout: float = 60, **params: str) -> AppTest:
    monkeypatch.setenv("CROSSLING_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    for key, value in params.items():
        at.query_params[key] = str(value)
    if page:
        at.switch_page(f"views/{page}.py")
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def charts(at: AppTest) -> list:
    return list(at.get("vega_lite_chart"))


def db(store: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(store), read_only=True)


# --- every page --------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(monkeypatch, store, page):
    at = run_app(monkeypatch, store, page, **SHOWS_DATA_WITH.get(page, {}))
    assert_clean(at)
    assert [t.value for t in at.title] == [TITLES[page]]
    assert charts(at) or at.dataframe, "a page shows data"
    # Every table and chart comes with CSV and Parquet downloads.
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels.count("CSV") == labels.count("Parquet") >= 1
    assert labels.count("CSV") >= len(charts(at))
    # The sidebar names the open store and its model.
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert store.name in sidebar and "synthetic/tiny-multilingual" in sidebar


def test_every_view_script_is_a_declared_page():
    """A page script added to explorer/views/ without a line in explorer/pages.py would be unreachable and
    opened by no test: it fails here instead."""
    scripts = sorted(p.name for p in explorer_pages.VIEWS.glob("*.py") if p.name != "__init__.py")
    declared = [p.file for p in explorer_pages.PAGES]
    assert sorted(declared) == scripts
    assert len(set(declared)) == len(declared)
    url_paths = [p.url_path for p in explorer_pages.PAGES]
    assert len(set(url_paths)) == len(url_paths) and all(u and "/" not in u for u in url_paths), url_paths
    assert [p.name for p in explorer_pages.PAGES if p.default] == ["overview"]
    assert explorer_pages.SECTIONS == ("Explore", "The rest of the paper")


def test_the_page_declarations_import_without_streamlit_or_torch():
    code = (
        "import json, sys; import explorer.pages; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'torch'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=APP.parents[1], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("page", ["compression", "language_neurons", "steering"])
def test_optional_pages_say_when_empty(monkeypatch, bare_store, page):
    at = run_app(monkeypatch, bare_store, page)
    assert_clean(at)
    assert at.info, "an empty analysis is explained, not shown as an empty chart"


def test_overview_headlines(monkeypatch, store):
    at = run_app(monkeypatch, store)
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Checkpoints"] == "4" and metrics["Languages"] == "3" and metrics["Concepts"] == "3"
    specs = [c.proto.spec for c in charts(at)]
    assert any("LID probe accuracy" in s for s in specs)
    assert any("Overlap of top-10 experts across languages" in s for s in specs)


# --- concepts ------------------------------------------------------------------------------------------


def test_concepts_top_unit_is_the_stores(monkeypatch, store):
    at = run_app(monkeypatch, store, "concepts", concept="tuesday", ckpt="global_step2000", k="5")
    assert_clean(at)
    grid = at.dataframe[0].value
    with db(store) as con:
        best = con.execute(
            "SELECT lang, layer, unit FROM neuron_ap WHERE checkpoint='global_step2000' "
            "AND concept_id='tuesday' AND rank=1"
        ).fetchall()
    assert len(best) == 3
    first = grid[grid["rank"] == 1].iloc[0]
    for lang, layer, unit in best:
        assert first[lang].startswith(f"L{layer} · U{unit} ("), (lang, first[lang])
    assert len(grid) == 5


def test_concepts_deep_link_sets_every_widget_and_url(monkeypatch, store):
    at = run_app(monkeypatch, store, "concepts", concept="march", ckpt="global_step1000", k="3", ov="spearman_ap")
    assert_clean(at)
    assert at.selectbox(key="concepts.concept").value == "march"
    assert at.select_slider(key="concepts.ckpt").value == "global_step1000"
    assert at.number_input(key="concepts.k").value == 3
    assert at.selectbox(key="concepts.ov").value == "spearman_ap"
    assert at.query_params["concept"] == "march" and at.query_params["ckpt"] == "global_step1000"
    # Changing a widget rewrites the URL, so a copied link reproduces the view.
    at.selectbox(key="concepts.concept").select("monday").run()
    assert at.query_params["concept"] == "monday"
    at.select_slider(key="concepts.ckpt").set_value("global_step0").run()
    assert at.query_params["ckpt"] == "global_step0"
    assert_clean(at)


def test_concepts_shared_experts_link_to_neuron_page(monkeypatch, store):
    at = run_app(monkeypatch, store, "concepts", concept="monday", ckpt="global_step2000")
    assert_clean(at)
    links = list(at.get("page_link"))
    assert links, "shared experts come with links to their neuron page"
    with db(store) as con:
        top = con.execute(
            "SELECT layer, unit, n_langs_topk FROM shared_experts WHERE checkpoint='global_step2000' "
            "AND concept_id='monday' ORDER BY n_langs_topk DESC, mean_ap DESC, layer, unit LIMIT 1"
        ).fetchone()
    assert links[0].proto.page == "neuron"
    assert links[0].proto.query_string == f"layer={top[0]}&unit={top[1]}&concept=monday"
    tables = [d.value for d in at.dataframe if "open" in d.value.columns]
    assert any(t["open"].str.startswith("neuron?layer=").all() for t in tables)


def test_bad_concept_link_says_so_and_falls_back(monkeypatch, store):
    at = run_app(monkeypatch, store, "concepts", concept="earthquake", ckpt="global_step_nope")
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "earthquake" in errors and "not in this store" in errors
    assert "global_step_nope" in errors
    assert at.selectbox(key="concepts.concept").value == "march"  # the first concept, by id
    assert at.dataframe, "the page still renders with the fallback"


# --- neuron --------------------------------------------------------------------------------------------


def _an_expert(store: Path) -> tuple[int, int, int]:
    with db(store) as con:
        return con.execute(
            "SELECT layer, unit, count(*) AS n FROM neuron_ap GROUP BY layer, unit ORDER BY n DESC, layer, unit LIMIT 1"
        ).fetchone()


def test_neuron_deep_link_selects_the_neuron(monkeypatch, store):
    layer, unit, n_rows = _an_expert(store)
    at = run_app(monkeypatch, store, "neuron", layer=str(layer), unit=str(unit))
    assert_clean(at)
    assert at.number_input(key="neuron.layer").value == layer
    assert at.number_input(key="neuron.unit").value == unit
    assert any(s.value == f"Layer {layer} · unit {unit}" for s in at.subheader)
    all_rows = [d.value for d in at.dataframe if {"lang", "concept_id", "ap", "rank"} <= set(d.value.columns)]
    assert all_rows and len(all_rows[0]) == n_rows
    assert len(charts(at)) >= 4  # expert-of grid, AP lines, rank lines, summary


def test_neuron_link_opens_on_the_concept(monkeypatch, store):
    layer, unit, _ = _an_expert(store)
    with db(store) as con:
        concepts = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT concept_id FROM neuron_ap WHERE layer=? AND unit=? ORDER BY 1", [layer, unit]
            ).fetchall()
        ]
    at = run_app(monkeypatch, store, "neuron", layer=str(layer), unit=str(unit), concept=concepts[-1])
    assert_clean(at)
    assert at.selectbox(key="neuron.concept").value == concepts[-1]
    missing = sorted({"monday", "tuesday", "march"} - set(concepts))
    if missing:
        at = run_app(monkeypatch, store, "neuron", layer=str(layer), unit=str(unit), concept=missing[0])
        assert "never a top-K expert" in " ".join(e.value for e in at.error)


def test_neuron_jump_menu_moves_to_the_unit(monkeypatch, store):
    at = run_app(monkeypatch, store, "neuron", layer="0", unit="0")
    box = at.selectbox(key="neuron.jump")
    target = box.options[1]
    box.select_index(1).run()
    assert_clean(at)
    layer, unit = (int(x) for x in at.session_state["neuron.jump"].split(":"))
    assert target.startswith(f"layer {layer} · unit {unit}")
    assert at.query_params["layer"] == str(layer) and at.query_params["unit"] == str(unit)


@pytest.mark.parametrize(
    "params, word",
    [
        ({"layer": "99", "unit": "1"}, "layer `99`"),
        ({"layer": "1", "unit": "100000"}, "unit `100000`"),
        ({"layer": "x", "unit": "1"}, "layer `x`"),
    ],
)
def test_bad_neuron_link_says_so(monkeypatch, store, params, word):
    at = run_app(monkeypatch, store, "neuron", **params)
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert word in errors and "not in this store" in errors


# --- language and compare --------------------------------------------------------------------------------


def test_language_page_lists_experts_per_concept(monkeypatch, store):
    at = run_app(monkeypatch, store, "language", lang="de", ckpt="global_step2000", k="4")
    assert_clean(at)
    experts = next(d.value for d in at.dataframe if {"concept_id", "rank", "n_langs_topk"} <= set(d.value.columns))
    assert len(experts) == 3 * 4
    with db(store) as con:
        best = dict(
            con.execute(
                "SELECT concept_id, unit FROM neuron_ap WHERE checkpoint='global_step2000' AND lang='de' AND rank=1"
            ).fetchall()
        )
        shared = con.execute(
            "SELECT concept_id, layer, unit, n_langs_topk FROM shared_experts WHERE checkpoint='global_step2000'"
        ).fetchall()
    firsts = experts[experts["rank"] == 1]
    assert dict(zip(firsts["concept_id"], firsts["unit"])) == best
    n_langs = {(c, layer, u): n for c, layer, u, n in shared}
    for row in experts.itertuples():
        expected = n_langs.get((row.concept_id, row.layer, row.unit))
        got = None if pd.isna(row.n_langs_topk) else int(row.n_langs_topk)
        assert got == expected, row
    assert any("share of the top" in c.proto.spec for c in charts(at))


def test_compare_counts_match_the_store(monkeypatch, store):
    at = run_app(monkeypatch, store, "compare", concept="monday", a="global_step0", b="global_step2000", k="10")
    assert_clean(at)
    summary = next(d.value for d in at.dataframe if "entered" in d.value.columns)
    with db(store) as con:
        rows = con.execute(
            """SELECT lang, count(*) FROM neuron_ap a WHERE checkpoint='global_step0' AND concept_id='monday'
               AND EXISTS (SELECT 1 FROM neuron_ap b WHERE b.checkpoint='global_step2000'
                           AND b.concept_id='monday' AND b.lang=a.lang AND b.layer=a.layer AND b.unit=a.unit)
               GROUP BY lang ORDER BY lang"""
        ).fetchall()
    stayed = dict(zip(summary["lang"], summary["stayed"]))
    assert stayed == {lang: n for lang, n in rows} | {k: 0 for k in stayed if k not in dict(rows)}
    assert (summary["stayed"] + summary["left"] == 10).all()


# --- bad input: each gives one clear message and no traceback -------------------------------------------


def _problem(at: AppTest) -> str:
    assert not at.exception, [e.value for e in at.exception]
    assert at.error, "a bad store must be reported with st.error"
    return " ".join(e.value for e in at.error)


def test_missing_store(monkeypatch, tmp_path):
    text = _problem(run_app(monkeypatch, tmp_path / "nope.duckdb"))
    assert "No store at" in text and "make demo" in text


def test_directory_instead_of_store(monkeypatch, tmp_path):
    assert "directory" in _problem(run_app(monkeypatch, tmp_path))


def test_not_a_duckdb_file(monkeypatch, tmp_path):
    bad = tmp_path / "notes.duckdb"
    bad.write_text("this is not a database\n" * 100)
    text = _problem(run_app(monkeypatch, bad))
    assert "not a readable DuckDB file" in text and "right file" in text


def test_truncated_store(monkeypatch, store, tmp_path):
    cut = tmp_path / "cut.duckdb"
    cut.write_bytes(store.read_bytes()[: store.stat().st_size // 3])
    at = run_app(monkeypatch, cut)
    assert not at.exception
    assert at.error


def test_duckdb_file_of_another_tool(monkeypatch, tmp_path):
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE things (x INTEGER)")
    assert "not a crossling store" in _problem(run_app(monkeypatch, other))


def test_store_that_carries_sql_is_refused(monkeypatch, tmp_path, store):
    sneaky = tmp_path / "sneaky.duckdb"
    shutil.copyfile(store, sneaky)
    with duckdb.connect(str(sneaky)) as con:
        con.execute("CREATE VIEW top AS SELECT * FROM neuron_ap")
    text = _problem(run_app(monkeypatch, sneaky, "concepts"))
    assert "view 'top'" in text and "refuses" in text


def test_store_of_another_schema_version(monkeypatch, tmp_path):
    old = tmp_path / "old.duckdb"
    with duckdb.connect(str(old)) as con:
        create_schema(con)
        con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    text = _problem(run_app(monkeypatch, old))
    assert "schema version 999" in text and "rebuild" in text


def test_store_missing_tables(monkeypatch, tmp_path):
    partial = tmp_path / "partial.duckdb"
    with duckdb.connect(str(partial)) as con:
        con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    text = _problem(run_app(monkeypatch, partial))
    assert "incomplete" in text and "neuron_ap" in text


def test_empty_store(monkeypatch, tmp_path):
    empty = tmp_path / "empty.duckdb"
    with duckdb.connect(str(empty)) as con:
        create_schema(con)
    assert "holds no run yet" in _problem(run_app(monkeypatch, empty))


def test_half_written_store(monkeypatch, tmp_path, store):
    half = tmp_path / "half.duckdb"
    shutil.copyfile(store, half)
    with duckdb.connect(str(half)) as con:
        con.execute("DELETE FROM checkpoints")
    text = _problem(run_app(monkeypatch, half))
    assert "no completed checkpoint" in text


def test_bad_store_on_a_deep_link_page(monkeypatch, tmp_path):
    at = run_app(monkeypatch, tmp_path / "gone.duckdb", "neuron", layer="1", unit="2")
    assert "No store at" in _problem(at)


# --- store lifecycle ---------------------------------------------------------------------------------------


def test_replaced_store_is_reopened(monkeypatch, tmp_path):
    path = build_synthetic_store(tmp_path / "live.duckdb", checkpoints=2)
    monkeypatch.setenv("CROSSLING_STORE", str(path))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert {m.label: m.value for m in at.metric}["Checkpoints"] == "2"
    fresh = build_synthetic_store(tmp_path / "next.duckdb", checkpoints=3)
    fresh.replace(path)  # what StoreWriter does when a precompute publishes a checkpoint
    at.run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Checkpoints"] == "3"


def test_store_with_several_runs_offers_a_selector(monkeypatch, tmp_path, store):
    two = tmp_path / "two.duckdb"
    shutil.copyfile(store, two)
    with duckdb.connect(str(two)) as con:
        con.execute(
            "INSERT INTO runs (run_id, model_id, model_card, config_json, concept_set_sha256, packages_json, "
            "device, dtype, started_at, finished_at) SELECT 'b-run', model_id, model_card, config_json, "
            "concept_set_sha256, "
            "packages_json, device, dtype, started_at + INTERVAL 1 DAY, NULL FROM runs"
        )
        con.execute(
            "INSERT INTO checkpoints (run_id, checkpoint, step, revision, source, tokens_seen, completed_at) "
            "SELECT 'b-run', checkpoint, step, revision, source, tokens_seen, "
            "completed_at FROM checkpoints WHERE checkpoint = 'global_step0'"
        )
    at = run_app(monkeypatch, two, "overview")
    assert_clean(at)
    box = at.sidebar.selectbox(key="sidebar.run")
    assert box.options == [RUN_ID, "b-run"] and box.value == RUN_ID
    at = run_app(monkeypatch, two, "overview", run="b-run")
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Checkpoints"] == "1"


# --- a store is someone else's data: its strings are shown, never rendered as markdown -------------------

BEACON = "![x](http://127.0.0.1:9/beacon.png) [click](http://evil)"
_MARKDOWN_BODIES = {"markdown", "caption", "title", "header", "subheader", "error", "info", "warning", "success"}
_CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_LIVE_MARKUP = re.compile(r"(?<!\\)\]\(|(?<!\\)!\[|(?<!\\)<[A-Za-z/!]|(?<!\\)\*\*bold")


def _markdown_texts(at: AppTest) -> list[str]:
    """Every string the page hands to a markdown renderer: bodies, and labels and help of any element."""
    texts = []
    for node in [*at.main, *at.sidebar]:
        proto = getattr(node, "proto", None)
        if node.type in _MARKDOWN_BODIES:
            texts.append(node.proto.body)
        fields = proto.DESCRIPTOR.fields_by_name if proto is not None and hasattr(proto, "DESCRIPTOR") else {}
        texts += [getattr(proto, f) for f in ("label", "help") if f in fields and isinstance(getattr(proto, f), str)]
    return texts


def test_store_strings_are_never_rendered_as_markdown(monkeypatch, tmp_path, store):
    hostile = tmp_path / "hostile.duckdb"
    shutil.copyfile(store, hostile)
    run_id = "r`](http://127.0.0.1:9/run.png)"
    ckpt = "ck_[c](http://127.0.0.1:9/ck.png)"
    with duckdb.connect(str(hostile)) as con:
        last = con.execute("SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1").fetchone()[0]
        for column, old, new in (("checkpoint", last, ckpt), ("run_id", RUN_ID, run_id)):
            tables = [
                t
                for (t,) in con.execute(
                    "SELECT table_name FROM information_schema.columns WHERE column_name = ?", [column]
                ).fetchall()
            ]
            for table in tables:
                con.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", [new, old])
        con.execute(
            "UPDATE runs SET model_card = ?, model_id = ?, device = ?",
            [BEACON + "\n# not a heading", "![m](http://127.0.0.1:9/model.png)", "cpu`` [d](http://evil)"],
        )
        con.execute("UPDATE meta SET value = '<img src=http://127.0.0.1:9/m.png>' WHERE key = 'created_at'")
        con.execute("UPDATE concepts SET label = '**bold** [a](http://evil/c)'")
        con.execute("UPDATE languages SET name = '[lang](http://127.0.0.1:9/l.png)'")

    seen = []
    for page in ("overview", "concepts", "language"):
        at = run_app(monkeypatch, hostile, page)
        assert_clean(at)
        texts = _markdown_texts(at)
        seen += texts
        for text in texts:
            assert not _LIVE_MARKUP.search(_CODE_SPAN.sub("", text)), (page, text)
        if page == "overview":
            # The model card is free text: shown as written, not as markdown.
            assert any(t.value == BEACON + "\n# not a heading" for t in at.text)
            assert not any("beacon" in t for t in texts)
    joined = "\n".join(seen)
    assert r"\*\*bold\*\* \[a\]\(http\:" in joined  # the concept label, shown literally
    assert r"ck\_\[c\]\(http\:" in joined  # the checkpoint name, shown literally
    assert f"`` {run_id} ``" in joined and "![m](http://127.0.0.1:9/model.png)`" in joined  # inside code spans


def test_app_never_imports_torch(store):
    code = f"""
import os, sys
os.environ["CROSSLING_STORE"] = {str(store)!r}
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(APP)!r}, default_timeout=60).run()
assert not at.exception, at.exception
import explorer.launch, explorer.queries, explorer.charts, explorer.store_context, explorer.widgets
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))
print('LOADED', bad)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120, cwd=str(APP.parents[1])
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout


# --- the launcher ---------------------------------------------------------------------------------------------


def test_launch_refuses_a_missing_store(capsys, tmp_path):
    assert launch.main([str(tmp_path / "missing.duckdb")]) == 2
    err = capsys.readouterr().err
    assert "no such store" in err and "make demo" in err


def test_launch_without_demo_says_how_to_build_it(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the demo store is looked up in the current folder only
    assert launch.main([]) == 2
    err = capsys.readouterr().err
    assert "data/demo.duckdb" in err and "make demo" in err and "precompute demo" in err


def test_launch_command_line(store):
    args = launch.streamlit_args(store, port=8999, host="127.0.0.1", no_browser=True)
    joined = " ".join(args)
    assert args[:2] == ["run", str(launch.APP)]
    assert "--server.address 127.0.0.1" in joined and "--server.headless true" in joined
    assert "--server.port 8999" in joined
    assert "--server.headless false" in " ".join(
        launch.streamlit_args(store, port=None, host="0.0.0.0", no_browser=False)
    )


def test_no_pages_directory_next_to_the_entrypoint():
    # A `pages/` folder beside app.py switches Streamlit to its legacy multipage mode on the first run
    # of a process, which would run a deep-linked page without app.py (no store, no sidebar).
    assert not (APP.parent / "pages").exists()


def test_polars_roundtrip_of_downloads(store, tmp_path):
    # What the download buttons produce reads back as the same frame.
    from explorer.downloads import parquet_bytes as _parquet_bytes

    df = pl.DataFrame({"lang": ["de", "en"], "layer": [1, 2], "ap": [0.5, 0.25]})
    assert pl.read_parquet(_parquet_bytes(df)).equals(df)
    assert pl.read_csv(df.write_csv().encode()).equals(df)


def test_neuron_page_shows_its_language_profile(monkeypatch, store):
    con = db(store)
    layer, unit, _lang, _n = con.execute(
        "SELECT layer, unit, lang, count(DISTINCT concept_id) AS n FROM neuron_ap "
        "WHERE checkpoint = (SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1) "
        "GROUP BY ALL ORDER BY n DESC, layer, unit, lang LIMIT 1"
    ).fetchone()
    specific = con.execute("SELECT layer, unit, checkpoint, top_lang FROM language_neurons LIMIT 1").fetchone()
    con.close()
    at = run_app(monkeypatch, store, "neuron", layer=str(layer), unit=str(unit))
    assert_clean(at)
    assert any("Language profile" in m.value for m in at.markdown)
    assert len(charts(at)) >= 5  # + the language profile grid
    at = run_app(monkeypatch, store, "neuron", layer=str(specific[0]), unit=str(specific[1]))
    assert_clean(at)
    assert any("Language-specific (LAPE" in c.value and specific[3] in c.value for c in at.caption)


# --- text is text in every widget; Compare with A = B; hints chosen by type ------------------------------

_AUTOLINK = re.compile(r"www\.|https?:|[\w.+-]@[\w-]")


def _live(text: str) -> bool:
    """Markup that would render as a link, image, HTML or autolink (outside code spans)."""
    bare = _CODE_SPAN.sub("", text)
    return bool(_LIVE_MARKUP.search(bare) or _AUTOLINK.search(bare))


@pytest.mark.parametrize("page", PAGES)
def test_hostile_store_strings_reach_every_widget_as_text(monkeypatch, tmp_path, store, page):
    from tests.support.hostile_store import LAST_CHECKPOINT, make_hostile_store

    hostile = make_hostile_store(store, tmp_path / "hostile.duckdb")
    at = run_app(monkeypatch, hostile, page, **SHOWS_DATA_WITH.get(page, {}))
    assert_clean(at)
    for text in _markdown_texts(at):
        assert not _live(text), (page, text)
    # Select-slider option labels are markdown (the thumb and the ticks): escaped.
    for slider in at.select_slider:
        for option in slider.options:
            assert not _live(option), (page, option)
    # Selectbox options are shown as plain text: the label as it is, on one line, never escaped.
    for box in [*at.selectbox, *at.sidebar.selectbox]:
        for option in box.options:
            assert "\n" not in option and "\\" not in option, (page, option)
    # Chart titles are drawn as text by vega: the store's string as it is.
    for spec in (c.proto.spec for c in charts(at)):
        assert "\\\\[" not in spec and "\\\\(" not in spec, page
    if page == "concepts":
        ckpt = at.select_slider(key="concepts.ckpt")
        assert ckpt.value == LAST_CHECKPOINT
        # Escaped, and the autolink broken by an invisible word joiner: shown as "www.ck.example", not linked.
        assert any("www\u2060\\.ck\\.example" in o for o in ckpt.options)
        concept = at.selectbox(key="concepts.concept")
        assert any("www.auto.example user@auto.example" in o for o in concept.options)


def test_compare_the_same_checkpoint_on_both_sides(monkeypatch, store):
    with db(store) as con:
        last = con.execute("SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1").fetchone()[0]
    at = run_app(monkeypatch, store, "compare", concept="monday", a=last, b=last, k="6")
    assert_clean(at)
    summary = next(d.value for d in at.dataframe if "entered" in d.value.columns)
    assert (summary["stayed"] == 6).all() and (summary["entered"] == 0).all() and (summary["left"] == 0).all()
    assert (summary["jaccard_a_b"] == 1.0).all()
    keys = [b.proto.id for b in at.get("download_button")]
    assert len(keys) == len(set(keys))
    assert len([c for c in charts(at) if "Jaccard at" in c.proto.spec]) == 2


def test_store_problem_hint_is_chosen_by_type_not_by_message():
    from explorer import problems
    from precompute.store import (
        HalfWrittenStoreError,
        NotCrosslingStoreError,
        NotDuckDBError,
        SchemaVersionError,
        StoreError,
        StoreLockedError,
        StoreMissingError,
        UnsafeStoreError,
    )

    # Messages reworded (or borrowed from another reason) keep the hint of their type.
    cases = {
        StoreMissingError: "make demo",
        NotDuckDBError: "right file",
        HalfWrittenStoreError: "cut short",
        UnsafeStoreError: "refuses",
        NotCrosslingStoreError: "not written by crossling",
        SchemaVersionError: "reads schema version",
        StoreLockedError: "is writing this store",
    }
    for cls, words in cases.items():
        hint = problems.hint_for(cls("x.duckdb: schema version; not a readable DuckDB; it defines"))
        assert words in hint, (cls.__name__, hint)
        assert problems.hint_for(cls("whatever")) == hint
    assert len({problems.hint_for(cls("m")) for cls in cases}) == len(cases)
    assert problems.hint_for(StoreError("x.duckdb: not a readable DuckDB file")) == problems.GENERIC_HINT

    class Subtler(SchemaVersionError):
        pass

    assert problems.hint_for(Subtler("m")) == problems.hint_for(SchemaVersionError("m"))


def test_no_page_asks_for_a_material_icon():
    # Streamlit turns a ":material/...:" page icon into a favicon fetched from a public font CDN.
    sources = [APP, *sorted((APP.parent / "views").glob("*.py"))]
    assert not [p.name for p in sources if ":material/" in p.read_text()]
