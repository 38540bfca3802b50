"""Counts that say what they count, and the chance level beside every number read, on the pages that show them:
Language neurons (units against (unit, language) assignments), Steering (the distribution of output languages,
and whether steering changed the outputs), Language (the share random experts would give) and Compression
(every measure's baseline). Each figure a page states is checked against the store, recomputed here
independently of the explorer's queries."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from scipy.stats import binom
from streamlit.testing.v1 import AppTest

from explorer.text import md

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo.duckdb"
needs_demo = pytest.mark.skipif(not DEMO.exists(), reason="the demo store is not built (make demo)")


def run_app(monkeypatch, store: Path, page: str, **params: str) -> AppTest:
    monkeypatch.setenv("CROSSLING_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = str(value)
    at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def markdown(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def chart_frames(at: AppTest) -> list[tuple[str, pl.DataFrame]]:
    """Every chart's title and the rows it draws (Streamlit sends them as an Arrow stream)."""
    out = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        title = spec.get("title")
        title = title.get("text") if isinstance(title, dict) else title
        raw = element.proto.data.data
        if raw:
            rows = pl.from_arrow(pa.ipc.open_stream(raw).read_all())
        else:  # a layered chart keeps each layer's rows in its spec: the first layer draws the measure
            rows = pl.DataFrame(spec["layer"][0]["data"]["values"]) if "layer" in spec else pl.DataFrame()
        out.append((str(title), rows))
    return out


def sql(store: Path, query: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def last_checkpoint(store: Path) -> str:
    return sql(store, "SELECT checkpoint FROM checkpoints ORDER BY step DESC LIMIT 1")[0][0]


def copy_with(store: Path, tmp_path: Path, *statements: str, name: str = "store.duckdb") -> Path:
    path = tmp_path / name
    shutil.copyfile(store, path)
    with duckdb.connect(str(path)) as con:
        for statement in statements:
            con.execute(statement)
    return path


# --- language neurons: units against assignments ------------------------------------------------------------

_STATED = re.compile(
    r"\*\*(\d+) language-specific units?\*\*, with \*\*(\d+) \(unit, language\) assignments?\*\*; (\d+) of the units"
)


def _assert_counts_stated(at: AppTest, store: Path, checkpoint: str) -> None:
    stated = [m for text in markdown(at) if (m := _STATED.search(text))]
    assert len(stated) == 1, markdown(at)
    units, assignments, multi = (int(g) for g in stated[0].groups())
    rows = sql(
        store,
        "SELECT layer, unit, top_lang, top_prob FROM language_neurons WHERE checkpoint = ?",
        [checkpoint],
    )
    per_unit: dict[tuple[int, int], dict[str, float]] = {}
    for layer, unit, lang, prob in rows:
        per_unit.setdefault((layer, unit), {})[lang] = prob
    assert units == len(per_unit)
    assert assignments == len(rows)
    assert multi == sum(len(langs) > 1 for langs in per_unit.values())

    # The chart of units counts each once, by its most active language (tied where several share the largest p).
    by_unit = [f for t, f in chart_frames(at) if "by their most active language" in t]
    assert len(by_unit) == 1
    here = by_unit[0].filter(pl.col("checkpoint") == checkpoint)
    assert here["n_units"].sum() == units
    expected: dict[str, int] = {}
    for langs in per_unit.values():
        top = max(langs.values())
        tops = [lang for lang, p in langs.items() if p >= top - 1e-9]
        key = tops[0] if len(tops) == 1 else "tied"
        expected[key] = expected.get(key, 0) + 1
    assert dict(zip(here["most_active_lang"], here["n_units"])) == expected
    # The chart of assignments counts each (unit, language) pair once.
    by_assignment = [f for t, f in chart_frames(at) if t.startswith("Assignments by assigned language")]
    assert by_assignment[0].filter(pl.col("checkpoint") == checkpoint)["n_assignments"].sum() == assignments


def test_language_neurons_page_states_units_and_assignments(monkeypatch, tmp_path, synthetic_store):
    last = last_checkpoint(synthetic_store)
    # Every unit of the last checkpoint gets a second language as active as its first (a tie), and a new unit two
    # languages of different probability: units, assignments and most active languages then all differ.
    store = copy_with(
        synthetic_store,
        tmp_path,
        f"""INSERT INTO language_neurons
            SELECT t.run_id, t.checkpoint, t.layer, t.unit, t.lape,
                   (SELECT min(lang) FROM languages WHERE lang <> t.top_lang), t.top_prob
            FROM language_neurons t WHERE t.checkpoint = '{last}'""",
        f"""INSERT INTO language_neurons
            SELECT run_id, '{last}', 0, 999, 0.1, lang, CASE WHEN lang = 'en' THEN 0.9 ELSE 0.5 END
            FROM (SELECT DISTINCT run_id FROM runs), (SELECT lang FROM languages WHERE lang IN ('en', 'de'))""",
    )
    at = run_app(monkeypatch, store, "language_neurons", ckpt=last)
    _assert_counts_stated(at, store, last)
    units, assignments = sql(
        store, "SELECT count(DISTINCT (layer, unit)), count(*) FROM language_neurons WHERE checkpoint = ?", [last]
    )[0]
    assert assignments > units  # the page had two different numbers to tell apart
    # The table names the column as what it is, and lists each assignment.
    frame = at.dataframe[-1].value
    assert {"assigned_lang", "most_active_lang", "n_langs_assigned"} <= set(frame.columns)
    assert len(frame) == assignments


@needs_demo
def test_language_neurons_counts_on_the_demo_store(monkeypatch):
    first = sql(DEMO, "SELECT checkpoint FROM checkpoints ORDER BY step LIMIT 1")[0][0]
    at = run_app(monkeypatch, DEMO, "language_neurons", ckpt=first)
    _assert_counts_stated(at, DEMO, first)


# --- steering: the distribution of output languages, and what steering changed -----------------------------

_CHANGED = re.compile(r"(\d+) of (\d+) outputs at (.+?)(?: \(|$)")


def _independent_changes(store: Path, concept: str) -> dict[tuple[str, int, str], tuple[int, int]]:
    """(source language, N, checkpoint) -> (changed, compared): each steered output against the unsteered one."""
    rows = sql(
        store,
        "SELECT checkpoint, source_lang, value_mode, prompt, seed, n_neurons, output_text FROM steering "
        "WHERE concept_id = ?",
        [concept],
    )
    control = {(ck, src, mode, prompt, seed): text for ck, src, mode, prompt, seed, n, text in rows if n == 0}
    counts: dict[tuple[str, int, str], list[int]] = {}
    for ck, src, mode, prompt, seed, n, text in rows:
        key = (ck, src, mode, prompt, seed)
        if n == 0 or key not in control:
            continue
        tally = counts.setdefault((src, n, ck), [0, 0])
        tally[0] += text != control[key]
        tally[1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def _assert_steering_page(at: AppTest, store: Path, concept: str) -> dict[tuple[str, int, str], tuple[int, int]]:
    expected = _independent_changes(store, concept)
    labels = {ck: md(ck) for (ck,) in sql(store, "SELECT checkpoint FROM checkpoints")}
    by_label = {v: k for k, v in labels.items()}
    stated: dict[tuple[str, int, str], tuple[int, int]] = {}
    for text in markdown(at):
        head = re.match(r"\*\*(.+) experts, N = (\d+)\*\* changed (.*)\.$", text)
        if not head:
            continue
        src, n = head.group(1), int(head.group(2))
        for part in head.group(3).split("; "):
            k, total, label = _CHANGED.match(part).groups()
            ck = by_label[label.split(" (step")[0]]
            stated[(src, n, ck)] = (int(k), int(total))
            assert ("identical to N = 0" in part) == (int(k) == 0)
    assert stated == expected

    # Every (checkpoint, N) bar of output languages sums to 1, and each share is the language's count of outputs.
    want: dict[tuple, float] = {}
    groups: dict[tuple, int] = {}
    outputs = sql(
        store, "SELECT checkpoint, source_lang, n_neurons, output_lang FROM steering WHERE concept_id = ?", [concept]
    )
    for ck, src, n, lang in outputs:
        want[(ck, src, n, lang or "und")] = want.get((ck, src, n, lang or "und"), 0) + 1
        groups[(ck, src, n)] = groups.get((ck, src, n), 0) + 1
    want = {key: count / groups[key[:3]] for key, count in want.items()}
    seen = {}
    for _, frame in chart_frames(at):
        if "output_lang" not in frame.columns:
            continue
        for total in frame.group_by("checkpoint", "n_neurons").agg(pl.col("share").sum())["share"]:
            assert total == pytest.approx(1.0)
        for r in frame.iter_rows(named=True):
            seen[(r["checkpoint"], r["source_lang"], r["n_neurons"], r["output_lang"])] = r["share"]
    assert seen == pytest.approx(want)
    return stated


def test_steering_page_shows_the_language_mix_and_when_outputs_are_unchanged(monkeypatch, tmp_path, synthetic_store):
    first = sql(synthetic_store, "SELECT checkpoint FROM checkpoints ORDER BY step LIMIT 1")[0][0]
    # Two of the three steered outputs of the first checkpoint made identical to their unsteered control.
    store = copy_with(
        synthetic_store,
        tmp_path,
        f"""UPDATE steering s SET output_text = z.output_text FROM steering z
            WHERE s.n_neurons > 0 AND z.n_neurons = 0 AND s.checkpoint = '{first}' AND s.seed IN (0, 1)
              AND z.run_id = s.run_id AND z.checkpoint = s.checkpoint AND z.concept_id = s.concept_id
              AND z.source_lang = s.source_lang AND z.value_mode = s.value_mode AND z.prompt = s.prompt
              AND z.seed = s.seed""",
    )
    concept = sql(store, "SELECT min(concept_id) FROM steering")[0][0]
    stated = _assert_steering_page(run_app(monkeypatch, store, "steering", concept=concept), store, concept)
    assert {v for (_, _, ck), v in stated.items() if ck == first} == {(1, 3)}
    # The outcome table no longer names one "main" language: it lists the mix and what changed.
    outcome = run_app(monkeypatch, store, "steering").dataframe[0].value
    assert "main_output_lang" not in outcome.columns
    assert {"output_languages", "changed"} <= set(outcome.columns)


@needs_demo
def test_steering_on_the_demo_store_says_where_steering_changed_nothing(monkeypatch):
    concept = sql(DEMO, "SELECT min(concept_id) FROM steering")[0][0]
    stated = _assert_steering_page(run_app(monkeypatch, DEMO, "steering", concept=concept), DEMO, concept)
    assert any(k == 0 for k, _ in stated.values()), "the demo's early checkpoints are not changed by steering"


# --- chance: the Language page's shared share ----------------------------------------------------------------


def _shared_chance(store: Path) -> float:
    """P(Binom(L - 1, K / N) >= min_langs - 1), with min_langs the smallest count of shared_experts' rows."""
    n_units, n_langs = sql(store, "SELECT max(n_units), max(n_langs) FROM overlap_chance")[0]
    k = sql(store, "SELECT max(rank) FROM neuron_ap")[0][0]
    min_langs = sql(store, "SELECT min(n_langs_topk) FROM shared_experts")[0][0]
    return float(binom.sf(min_langs - 2, n_langs - 1, k / n_units))


@pytest.mark.parametrize("older", [False, True], ids=["store", "store-without-expert_k"])
def test_language_page_says_what_random_experts_would_share(monkeypatch, tmp_path, synthetic_store, older):
    store = copy_with(
        synthetic_store, tmp_path, *(["ALTER TABLE overlap_chance DROP COLUMN expert_k"] if older else [])
    )
    at = run_app(monkeypatch, store, "language", lang="de")
    chance = _shared_chance(store)
    assert 0 < chance < 1
    texts = [t for t in markdown(at) if t.startswith("**Chance: random experts would give a mean share of")]
    assert len(texts) == 1 and f"mean share of {chance:.3g}**" in texts[0], texts
    # The dashed line is the same value at every checkpoint.
    lines = [f for t, f in chart_frames(at) if t == "Mean share of experts that are shared"]
    assert lines[0]["chance_share"].to_list() == pytest.approx([chance] * lines[0].height)


def test_language_page_without_a_chance_table_says_so(monkeypatch, tmp_path, synthetic_store):
    store = copy_with(synthetic_store, tmp_path, "DELETE FROM overlap_chance")
    at = run_app(monkeypatch, store, "language", lang="de")
    assert any("No chance level" in c.value for c in at.caption)


# --- chance: the Compression page's baselines ---------------------------------------------------------------


def test_compression_page_shows_the_matched_cosine_against_its_mismatched_baseline(monkeypatch, synthetic_store):
    last = last_checkpoint(synthetic_store)
    layer = sql(synthetic_store, "SELECT min(layer) FROM similarity")[0][0]
    at = run_app(monkeypatch, synthetic_store, "compression", sim="matched_cosine", ckpt=last, layer=layer)
    matched, mismatched = sql(
        synthetic_store,
        "SELECT avg(value) FILTER (WHERE metric = 'matched_cosine'), avg(value) FILTER (WHERE metric = "
        "'mismatched_cosine') FROM similarity WHERE checkpoint = ? AND layer = ? AND lang_a <> lang_b",
        [last, layer],
    )[0]
    stated = [t for t in markdown(at) if "against its baseline" in t]
    assert len(stated) == 1
    assert f"**{matched:.3f}**" in stated[0] and f"({md('mismatched_cosine')}): **{mismatched:.3f}**" in stated[0]
    assert any("**Baseline:** the mismatched cosine" in t for t in markdown(at))
    baseline = [f for t, f in chart_frames(at) if t.startswith("matched_cosine and its baseline")]
    assert len(baseline) == 1 and set(baseline[0]["series"]) == {"matched_cosine", "baseline: mismatched_cosine"}


def test_compression_page_gives_each_measure_its_chance(monkeypatch, tmp_path, synthetic_store):
    # The synthetic store's compression rows are of a measure the page does not know; add the stage's own.
    store = copy_with(
        synthetic_store,
        tmp_path,
        """INSERT INTO compression SELECT run_id, checkpoint, layer, 'all', 'language_variance_share', 0.3
           FROM compression WHERE scope = 'all'""",
        """INSERT INTO compression SELECT run_id, checkpoint, layer, scope, 'participation_ratio', 4.0
           FROM compression""",
    )
    n_points, n_langs = sql(
        store, "SELECT count(*), count(DISTINCT lang) FROM (SELECT DISTINCT lang, concept_id FROM sentences)"
    )[0]
    hidden = sql(store, "SELECT max(hidden_size) FROM layers")[0][0]

    at = run_app(monkeypatch, store, "compression", cm="language_variance_share", scope="all")
    share = (n_langs - 1) / (n_points - 1)
    assert any(f"= {share:.3g} for {n_points} structureless centroids" in t for t in markdown(at)), markdown(at)
    assert any("lower: more compressed" in t for t in markdown(at))

    at = run_app(monkeypatch, store, "compression", cm="participation_ratio", scope="all")
    m = n_points - 1
    isotropic = (m * hidden + 2) / (m + hidden + 1)
    text = [t for t in markdown(at) if t.startswith("Range: 1 to")]
    assert len(text) == 1 and f"= {min(m, hidden)} ({n_points} centroids" in text[0]
    assert f"about {isotropic:.3g}" in text[0]


def test_the_isotropic_participation_ratio_the_page_quotes_matches_simulation():
    # (m d + 2) / (m + d + 1), m = points - 1: the Compression page's "structureless cloud" reference.
    rng = np.random.default_rng(0)
    n, d = 60, 24
    ratios = []
    for _ in range(300):
        x = rng.standard_normal((n, d))
        x -= x.mean(0)
        g = x @ x.T
        ratios.append(np.trace(g) ** 2 / (g * g).sum())
    m = n - 1
    assert float(np.mean(ratios)) == pytest.approx((m * d + 2) / (m + d + 1), rel=0.01)
