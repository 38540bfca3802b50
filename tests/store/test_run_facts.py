"""One reader of a run's facts (``precompute.store.facts``): each fact against independent SQL or the config the
store was built with, on a synthetic store and on older stores whose config lacks keys (or columns), and the
explorer, the notebook API and the report reading their figures through it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from explorer import api
from explorer import queries as Q
from precompute.config import ExpertSpec, RunConfig
from precompute.store import StoreError, facts
from precompute.store.facts import FEWEST_SHARED_LANGS, pair_emergence, run_settings, unit_emergence
from precompute.store.report import headline_report

try:  # the builder is moving from precompute.demo to the tests' support folder
    from tests.support.synthetic_store import RUN_ID, build_synthetic_store
except ImportError:
    from precompute.demo.synthetic_store import RUN_ID, build_synthetic_store

ROOT = Path(__file__).resolve().parents[2]
LANGS = ("fr", "en", "de")  # config order, not the store's (by code)
K = 8
MIN_LANGS = 3
DEFAULTS = RunConfig()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_synthetic_store(
        tmp_path_factory.mktemp("facts") / "store.duckdb",
        checkpoints=4,
        languages=LANGS,
        k=K,
        min_langs=MIN_LANGS,
        seed=5,
    )


def _copy(store: Path, tmp_path: Path, *sql: str, config: Any = ..., name: str = "copy.duckdb") -> Path:
    """A copy of ``store`` with ``sql`` run on it and (unless ``...``) ``runs.config_json`` set to ``config``
    (a dict or list is written as JSON, a string as it is)."""
    path = tmp_path / name
    shutil.copy(store, path)
    con = duckdb.connect(str(path))
    try:
        for statement in sql:
            con.execute(statement)
        if config is not ...:
            text = json.dumps(config) if isinstance(config, dict | list) else config
            con.execute("UPDATE runs SET config_json = ?", [text])
    finally:
        con.close()
    return path


def _settings(path: Path, run_id: str | None = None) -> facts.RunSettings:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return run_settings(con, run_id)
    finally:
        con.close()


def _sql(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _training_order(rows: list[tuple]) -> list[tuple]:
    """(checkpoint, step) rows by step (unknown last), then by name: the order the store promises."""
    return sorted(rows, key=lambda r: (r[1] is None, r[1] if r[1] is not None else 0, r[0]))


def test_every_fact_of_a_synthetic_store_is_its_config_or_its_tables(store):
    s = _settings(store)
    run_id, model_id, card, config_json = _sql(store, "SELECT run_id, model_id, model_card, config_json FROM runs")[0]
    config = json.loads(config_json)
    assert (s.run_id, s.model_id, s.model_card) == (run_id, model_id, card) == (RUN_ID, model_id, card)
    assert s.config == config
    assert s.top_k == K == config["experts"]["top_k"]
    assert s.min_langs == MIN_LANGS == config["experts"]["min_langs"]
    # The builder's config names only top_k and min_langs: everything else is today's default.
    assert s.overlap_k == K  # overlap_k = 0 (the default) means top_k
    assert s.overlap_measure == DEFAULTS.experts.overlap_measure
    assert s.pooling == DEFAULTS.extract.pooling
    assert s.permutations == DEFAULTS.experts.permutations
    assert s.permutation_quantile == DEFAULTS.experts.permutation_quantile
    assert s.alpha == pytest.approx(1 - DEFAULTS.experts.permutation_quantile)
    assert s.correction == DEFAULTS.experts.correction
    assert (s.model_device, s.model_dtype) == (DEFAULTS.model.device, DEFAULTS.model.dtype)
    assert s.languages == tuple(sorted(LANGS)) == tuple(sorted(r[0] for r in _sql(store, "SELECT lang FROM languages")))
    assert s.config_languages == LANGS
    rows = _training_order(_sql(store, "SELECT checkpoint, step FROM checkpoints WHERE run_id = ?", [RUN_ID]))
    assert list(zip(s.checkpoints, s.steps)) == rows
    assert [s.position(name) for name, _ in rows] == list(range(len(rows)))
    # The K of the overlaps the store holds is the one the settings name.
    assert _sql(store, "SELECT DISTINCT k FROM expert_overlap") == [(s.overlap_k,)]


def test_checkpoints_order_by_step_with_unknown_steps_last_then_by_name(store, tmp_path):
    names = [r[0] for r in _training_order(_sql(store, "SELECT checkpoint, step FROM checkpoints"))]
    path = _copy(
        store,
        tmp_path,
        f"UPDATE checkpoints SET step = NULL WHERE checkpoint = '{names[0]}'",
        f"UPDATE checkpoints SET step = 5 WHERE checkpoint IN ('{names[1]}', '{names[2]}')",
    )
    s = _settings(path)
    assert list(zip(s.checkpoints, s.steps)) == _training_order(_sql(path, "SELECT checkpoint, step FROM checkpoints"))
    assert s.checkpoints[-1] == names[0] and s.steps[-1] is None
    assert s.checkpoints[:2] == tuple(sorted(names[1:3])) and s.steps[:2] == (5, 5)


def test_an_older_store_without_the_settings_reads_them_from_its_tables_or_todays_defaults(store, tmp_path):
    path = _copy(store, tmp_path, config={"model": {"id": "older"}})
    s = _settings(path)
    (max_k,) = _sql(path, "SELECT max(k) FROM expert_overlap WHERE run_id = ?", [RUN_ID])[0]
    (fewest,) = _sql(path, "SELECT min(n_langs_topk) FROM shared_experts WHERE run_id = ?", [RUN_ID])[0]
    assert s.top_k == max_k == K
    assert s.min_langs == fewest
    assert s.overlap_k == max_k
    expected = DEFAULTS.experts
    assert (s.overlap_measure, s.permutations, s.permutation_quantile, s.correction) == (
        expected.overlap_measure,
        expected.permutations,
        expected.permutation_quantile,
        expected.correction,
    )
    assert s.pooling == DEFAULTS.extract.pooling
    assert s.config_languages == ()
    assert s.languages == tuple(sorted(LANGS))


@pytest.mark.parametrize(
    "config",
    [
        "",
        "not json {",
        "[1, 2]",
        {"experts": None, "extract": "max", "data": {"languages": "en"}},
        {"experts": {"top_k": 0, "min_langs": "3", "overlap_measure": "cosine", "permutations": True}},
        {"experts": {"top_k": 2.5, "correction": "holm", "permutation_quantile": 1.5}, "extract": {"pooling": "sum"}},
    ],
    ids=["empty", "not-json", "json-list", "sections-not-tables", "refused-values", "wrong-types"],
)
def test_a_missing_or_refused_setting_counts_as_missing(store, tmp_path, config):
    s = _settings(_copy(store, tmp_path, config=config))
    assert s.top_k == _sql(store, "SELECT max(k) FROM expert_overlap")[0][0]
    assert s.min_langs == _sql(store, "SELECT min(n_langs_topk) FROM shared_experts")[0][0]
    assert s.overlap_measure == DEFAULTS.experts.overlap_measure
    assert s.permutations == DEFAULTS.experts.permutations
    assert s.permutation_quantile == DEFAULTS.experts.permutation_quantile
    assert s.correction == DEFAULTS.experts.correction
    assert s.pooling == DEFAULTS.extract.pooling
    assert s.config_languages == ()
    if not isinstance(config, dict):
        assert s.config == {}


def test_settings_a_store_cannot_back_fall_back(store, tmp_path):
    # over_k asked for by a store that does not store it: the store leads with Jaccard.
    path = _copy(
        store,
        tmp_path,
        "ALTER TABLE expert_overlap DROP COLUMN over_k",
        config={"experts": {"overlap_measure": "over_k"}},
    )
    assert _settings(path).overlap_measure == "jaccard"
    assert (
        _settings(
            _copy(store, tmp_path, config={"experts": {"overlap_measure": "over_k"}}, name="b.duckdb")
        ).overlap_measure
        == "over_k"
    )
    # No setting and no table rows to read it from: top-K unknown, min_langs the least the setting allows.
    empty = _copy(
        store, tmp_path, "DELETE FROM expert_overlap", "DELETE FROM shared_experts", config={}, name="c.duckdb"
    )
    s = _settings(empty)
    assert s.top_k is None and s.overlap_k is None
    assert (
        s.min_langs
        == FEWEST_SHARED_LANGS
        == next(f.metadata["rule"].ge for f in dataclasses.fields(ExpertSpec) if f.name == "min_langs")
    )
    # Explicit settings win over the tables, and overlap_k is its own where set.
    asked = {
        "experts": {"top_k": 6, "min_langs": 2, "overlap_k": 4, "overlap_measure": "over_k"},
        "extract": {"pooling": "span"},
    }
    s = _settings(_copy(store, tmp_path, config=asked, name="d.duckdb"))
    assert (s.top_k, s.min_langs, s.overlap_k, s.overlap_measure, s.pooling) == (6, 2, 4, "over_k", "span")


def test_the_run_is_the_first_or_the_one_named(store, tmp_path):
    path = _copy(
        store,
        tmp_path,
        "INSERT INTO runs SELECT * REPLACE ('later' AS run_id, started_at + INTERVAL 1 DAY AS started_at, "
        '\'{"experts": {"top_k": 3}}\' AS config_json) FROM runs',
    )
    assert _settings(path).run_id == RUN_ID
    later = _settings(path, "later")
    assert later.run_id == "later" and later.top_k == 3 and later.checkpoints == ()
    with pytest.raises(StoreError, match="no run 'nope'"):
        _settings(path, "nope")
    with pytest.raises(StoreError, match="holds no run"):
        _settings(
            _copy(
                store,
                tmp_path,
                *(f"DELETE FROM {t}" for t in _child_tables(store)),
                "DELETE FROM runs",
                name="e.duckdb",
            )
        )


def _child_tables(store: Path) -> list[str]:
    """Every table with a run_id column but runs itself (emptied before the runs they point at)."""
    rows = _sql(
        store,
        "SELECT DISTINCT table_name FROM information_schema.columns "
        "WHERE column_name = 'run_id' AND table_name <> 'runs'",
    )
    return sorted(r[0] for r in rows)


# --- emergence: the one rule, against a recomputation from the stored tables ---------------------------------


def _stays_from(flags: dict[int, bool], n: int) -> int | None:
    """The first position from which ``flags`` is true at every later one (None: not at the last)."""
    first = None
    for pos in range(n - 1, -1, -1):
        if not flags.get(pos, False):
            break
        first = pos
    return first


@pytest.mark.parametrize("measure", facts.OVERLAP_MEASURES)
@pytest.mark.parametrize("corrected", [True, False], ids=["corrected", "older-store"])
def test_pair_emergence_is_the_first_checkpoint_above_chance_to_the_end(store, tmp_path, measure, corrected):
    drop = (
        []
        if corrected
        else [f"ALTER TABLE overlap_chance DROP COLUMN {m}_threshold_corrected" for m in facts.OVERLAP_MEASURES]
    )
    path = _copy(store, tmp_path, *drop)
    threshold = f"{measure}_threshold_corrected" if corrected else f"{measure}_threshold"
    s = _settings(path)
    flags: dict[tuple, dict[int, bool]] = {}
    for concept, a, b, ck, above in _sql(
        path,
        f"SELECT o.concept_id, o.lang_a, o.lang_b, o.checkpoint, o.{measure} > ch.{threshold} "
        "FROM expert_overlap o JOIN overlap_chance ch USING (run_id, checkpoint) WHERE o.lang_a <> o.lang_b",
    ):
        flags.setdefault((concept, min(a, b), max(a, b)), {})[s.position(ck)] = above
    con = duckdb.connect(str(path), read_only=True)
    got = pair_emergence(con, s, measure=measure)
    con.close()
    assert got.height == len(flags)
    for r in got.iter_rows(named=True):
        pos = _stays_from(flags[(r["concept_id"], r["lang_a"], r["lang_b"])], len(s.checkpoints))
        assert r["emerged_at"] == (None if pos is None else s.checkpoints[pos])
        assert r["emerged_step"] == (None if pos is None else s.steps[pos])
    assert got["emerged_at"].is_not_null().any(), "the synthetic store's overlap rises above chance"


def test_unit_emergence_defaults_to_the_runs_min_langs(store):
    s = _settings(store)
    flags: dict[tuple, dict[int, bool]] = {}
    for concept, layer, unit, ck, n_langs in _sql(
        store,
        "SELECT n.concept_id, n.layer, n.unit, n.checkpoint, count(*) FROM neuron_ap n JOIN chance_ap ch "
        "USING (run_id, checkpoint, lang, concept_id) WHERE n.ap > ch.threshold GROUP BY ALL",
    ):
        flags.setdefault((concept, layer, unit), {})[s.position(ck)] = n_langs >= MIN_LANGS
    expected = {key: pos for key, f in flags.items() if (pos := _stays_from(f, len(s.checkpoints))) is not None}
    con = duckdb.connect(str(store), read_only=True)
    try:
        got = unit_emergence(con, s)
        assert got.equals(unit_emergence(con, s, MIN_LANGS))
        by_unit = unit_emergence(con, s, None, None, *next(iter(expected))[1:], experts_table="neuron_ap_by_unit")
        with pytest.raises(ValueError, match="experts_table"):
            unit_emergence(con, s, experts_table="runs")
        with pytest.raises(ValueError, match="measure"):
            pair_emergence(con, s, measure="cosine")
    finally:
        con.close()
    assert expected, "some unit emerges in the synthetic store"
    assert {
        (r["concept_id"], r["layer"], r["unit"]): s.position(r["emerged_at"]) for r in got.iter_rows(named=True)
    } == (expected)
    assert by_unit.height >= 1 and set(by_unit["concept_id"]) <= {k[0] for k in expected}


# --- the readers read through it -------------------------------------------------------------------------------


def test_the_explorers_settings_and_emergence_are_run_settings(store, monkeypatch):
    con = duckdb.connect(str(store), read_only=True)
    try:
        s = run_settings(con, RUN_ID)
        assert Q.run_settings(con, RUN_ID) == {
            "top_k": s.top_k,
            "min_langs": s.min_langs,
            "overlap_measure": s.overlap_measure,
            "config": s.config,
        }
        assert Q.pair_emergence(con, RUN_ID, None, "over_k").equals(pair_emergence(con, s, None, "over_k"))
        assert Q.unit_emergence(con, RUN_ID, 2).equals(unit_emergence(con, s, 2))
        # Through facts: a changed fact is what the explorer shows.
        monkeypatch.setattr(
            facts, "run_settings", lambda cur, run_id=None: dataclasses.replace(s, min_langs=7, top_k=5)
        )
        assert Q.run_settings(con, RUN_ID)["min_langs"] == 7 and Q.run_settings(con, RUN_ID)["top_k"] == 5
    finally:
        con.close()


def test_the_notebook_api_holds_run_settings(store, monkeypatch):
    with api.open_store(store) as opened:
        s = _settings(store)
        assert opened.settings == s
        assert (opened.top_k, opened.min_langs, opened.config) == (s.top_k, s.min_langs, s.config)
        assert opened.checkpoint_names == list(s.checkpoints)
    monkeypatch.setattr(api, "run_settings", lambda cur, run_id=None: dataclasses.replace(s, top_k=3, min_langs=4))
    with api.open_store(store) as opened:
        assert (opened.top_k, opened.min_langs) == (3, 4)
        assert opened.experts("monday", s.checkpoints[0])["rank"].max() == 3  # k defaults to the run's top-K


def test_the_report_prints_run_settings(store, tmp_path, monkeypatch):
    s = _settings(store)
    text = headline_report(store)
    assert f"first = {s.checkpoints[0]} (step {s.steps[0]}), last = {s.checkpoints[-1]} (step {s.steps[-1]})" in text
    assert f"{len(s.checkpoints)} checkpoints" in text
    assert f"in >= {s.min_langs} languages" in text
    con = duckdb.connect(str(store), read_only=True)
    pairs = pair_emergence(con, s)
    units = unit_emergence(con, s)
    con.close()
    assert f"{pairs['emerged_at'].is_not_null().sum()} of {pairs.height}; from " in text
    assert f"in >= {s.min_langs} languages: {units.height}; from " in text
    assert "top-K Jaccard above" in text
    over_k = _copy(
        store, tmp_path, config={**s.config, "experts": {**s.config["experts"], "overlap_measure": "over_k"}}
    )
    assert "top-K |A∩B|/k above" in headline_report(over_k)
    # Through facts: a changed fact is what the report prints.
    import precompute.store.report as report

    monkeypatch.setattr(report, "run_settings", lambda con: dataclasses.replace(s, min_langs=1))
    assert "in >= 1 languages" in headline_report(store)


def test_the_facts_module_imports_neither_torch_nor_the_pipeline():
    code = "import json, sys, precompute.store.facts; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert [
        m for m in loaded if m.split(".")[0] in ("torch", "transformers") or m.startswith("precompute.pipeline")
    ] == []
