"""The built-in CLDR concept set, its deterministic builder, loading/validation, subset() and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import babel
import polars as pl
import pytest
from typer.testing import CliRunner

from precompute.cli.concepts import concepts_app
from precompute.inputs.cldr import (
    CATEGORIES,
    DEFAULT_LANGUAGES,
    build_concept_set,
    concept_forms,
    find_mentions,
    normalize,
    provenance,
    write_concept_set,
)
from precompute.inputs.concepts import (
    DEFAULT_CONCEPT_SET,
    ConceptSet,
    ConceptSetError,
    load_concept_set,
)


@pytest.fixture(scope="module")
def shipped() -> ConceptSet:
    return load_concept_set(DEFAULT_CONCEPT_SET)


@pytest.fixture(scope="module")
def shipped_raw() -> pl.DataFrame:
    return pl.read_parquet(DEFAULT_CONCEPT_SET)


# ------------------------------------------------------------------------------------------------
# The shipped set meets the acceptance criteria
# ------------------------------------------------------------------------------------------------


def test_shipped_set_counts(shipped: ConceptSet) -> None:
    langs = set(shipped.languages["lang"].to_list())
    assert set(DEFAULT_LANGUAGES) <= langs and len(langs) >= 12
    assert shipped.languages["script"].n_unique() >= 5
    assert {"Latn", "Cyrl", "Hans", "Jpan", "Arab", "Deva"} <= set(shipped.languages["script"].to_list())
    assert shipped.languages["name"].null_count() == 0
    assert shipped.concepts.height >= 40
    per_cat = dict(shipped.concepts.group_by("category").len().iter_rows())
    assert set(per_cat) == set(CATEGORIES)
    assert min(per_cat.values()) >= 7
    distinct = shipped.sentences.group_by("concept_id", "lang").agg(pl.col("text").n_unique().alias("n"))
    assert distinct.height == shipped.concepts.height * len(langs)  # every concept in every language
    assert distinct["n"].min() >= 20
    assert shipped.sentences["sentence_id"].to_list() == list(range(shipped.sentences.height))
    assert shipped.sentences.schema["span_start"] == pl.Int32
    assert len(shipped.sha256) == 64


def test_shipped_provenance(shipped: ConceptSet) -> None:
    prov = shipped.provenance
    assert prov["babel_version"] and prov["cldr_version"]
    assert "Unicode License" in prov["license"]
    assert prov["command"].startswith("precompute concepts build")
    assert prov["seed"] == 0 and prov["languages"] == DEFAULT_LANGUAGES


def test_every_span_is_the_only_mention_of_its_concept(shipped_raw: pl.DataFrame) -> None:
    """Each context mentions exactly one concept of the set (its own), at the stored span, and the
    span's text is (an inflection or truncation of) a CLDR form of that concept."""
    bad: list[tuple] = []
    for cid, lang, text, s, e in shipped_raw.select("concept_id", "lang", "text", "span_start", "span_end").iter_rows():
        assert s is not None and e is not None and 0 <= s < e <= len(text)
        mentions = find_mentions(text, lang)
        if len(mentions) != 1 or mentions[0][:2] != (s, e) or cid not in mentions[0][2]:
            bad.append((cid, lang, text, s, e, mentions))
            continue
        word = normalize(text[s:e])
        forms = [normalize(f) for f in concept_forms(lang)[cid]]
        if not any(word.startswith(f) or f.startswith(word) for f in forms):
            bad.append((cid, lang, text, word))
    assert not bad, bad[:5]


def test_cjk_spans_and_surface_forms(shipped_raw: pl.DataFrame) -> None:
    cjk = shipped_raw.filter(pl.col("lang").is_in(["zh", "ja"]))
    words = cjk.with_columns(
        pl.col("text").str.slice(pl.col("span_start"), pl.col("span_end") - pl.col("span_start")).alias("w")
    )
    assert words.filter(pl.col("w").str.len_chars() == 0).height == 0
    march = set(words.filter((pl.col("concept_id") == "march") & (pl.col("source") == "date"))["w"].to_list())
    assert "3月" in march
    # Context-dependent surface forms are located from what CLDR used, not one dictionary form.
    fi = shipped_raw.filter((pl.col("lang") == "fi") & (pl.col("concept_id") == "march"))
    fi_words = {t[s:e] for t, s, e in fi.select("text", "span_start", "span_end").iter_rows()}
    assert "maaliskuuta" in fi_words
    ru = shipped_raw.filter((pl.col("lang") == "ru") & (pl.col("concept_id") == "march"))
    assert "марта" in {t[s:e] for t, s, e in ru.select("text", "span_start", "span_end").iter_rows()}


def test_shipped_file_is_what_the_builder_makes(shipped_raw: pl.DataFrame) -> None:
    """Languages are built independently, so rebuilding two of them must give exactly their rows."""
    prov = json.loads(
        __import__("pyarrow.parquet", fromlist=["x"]).read_schema(DEFAULT_CONCEPT_SET).metadata[b"crossling_provenance"]
    )
    if prov["babel_version"] != babel.__version__:
        pytest.skip(f"shipped set was built with babel {prov['babel_version']}")
    rebuilt = build_concept_set(["fi", "ja"])
    expected = shipped_raw.filter(pl.col("lang").is_in(["fi", "ja"]))
    assert rebuilt.equals(expected)


# ------------------------------------------------------------------------------------------------
# Deterministic builder
# ------------------------------------------------------------------------------------------------


def test_build_is_deterministic(tmp_path: Path) -> None:
    a = build_concept_set(["tr", "zh"], contexts_per_pair=20, seed=3)
    b = build_concept_set(["zh", "tr"], contexts_per_pair=20, seed=3)
    assert a.equals(b)
    assert a.group_by("concept_id", "lang").len()["len"].min() == 20
    c = build_concept_set(["tr", "zh"], contexts_per_pair=20, seed=4)
    assert not a.equals(c)
    prov = provenance(["tr", "zh"], 20, 3)
    p1, p2 = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_concept_set(a, p1, prov)
    write_concept_set(b, p2, prov)
    assert p1.read_bytes() == p2.read_bytes()
    loaded = load_concept_set(p1)
    assert loaded.provenance["seed"] == 3
    assert loaded.sha256 == load_concept_set(p2).sha256


def test_build_rejects_unknown_language() -> None:
    with pytest.raises(ValueError, match="'xx'"):
        build_concept_set(["en", "xx"], contexts_per_pair=2)


# ------------------------------------------------------------------------------------------------
# Validation: one line naming file, row and column
# ------------------------------------------------------------------------------------------------

GOOD_ROWS = [
    ("c1", "en", "Monday morning", "0", "6"),
    ("c1", "en", "last Monday", "5", "11"),
    ("c2", "en", "in March", "3", "8"),
    ("c2", "en", "March 3", "0", "5"),
]


def _tsv(path: Path, rows: list[tuple], header: str = "concept_id\tlang\ttext\tspan_start\tspan_end") -> Path:
    lines = [header] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(ConceptSetError) as info:
        load_concept_set(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def test_good_tsv_csv_parquet(tmp_path: Path) -> None:
    cs = load_concept_set(_tsv(tmp_path / "ok.tsv", GOOD_ROWS))
    assert cs.sentences.height == 4 and cs.concepts["label"].to_list() == ["c1", "c2"]
    assert cs.sentences.schema == {
        "sentence_id": pl.Int64,
        "concept_id": pl.Utf8,
        "lang": pl.Utf8,
        "text": pl.Utf8,
        "span_start": pl.Int32,
        "span_end": pl.Int32,
    }
    csv = tmp_path / "ok.csv"
    csv.write_text('concept_id,lang,text\nc1,en,"Monday, early"\nc1,en,last Monday\nc2,en,in March\nc2,en,March 3\n')
    cs_csv = load_concept_set(csv)
    assert cs_csv.sentences["text"][0] == "Monday, early" and cs_csv.sentences["span_start"].null_count() == 4
    pq = tmp_path / "ok.parquet"
    pl.DataFrame(
        {
            "concept_id": ["a", "a", "b", "b"],
            "lang": ["ar"] * 4,
            "text": ["مرحبا بالعالم", "e\u0301te\u0301 ☀️", "👩‍👩‍👧 family", "שלום עולם"],
            "category": ["x", "x", "y", "y"],
        }
    ).write_parquet(pq)
    cs_pq = load_concept_set(pq)  # RTL, combining marks, emoji are valid
    assert cs_pq.languages.row(0) == ("ar", "Arabic", "Arab", "Afro-Asiatic")
    assert cs_pq.concepts["category"].to_list() == ["x", "y"]
    # sha256 is of the content, not the bytes: the same rows as TSV and Parquet hash the same.
    frame = pl.DataFrame(
        {
            "concept_id": [r[0] for r in GOOD_ROWS],
            "lang": [r[1] for r in GOOD_ROWS],
            "text": [r[2] for r in GOOD_ROWS],
            "span_start": [int(r[3]) for r in GOOD_ROWS],
            "span_end": [int(r[4]) for r in GOOD_ROWS],
        }
    )
    frame.write_parquet(tmp_path / "same.parquet")
    assert load_concept_set(tmp_path / "same.parquet").sha256 == cs.sha256


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("c1", "en", "   ", "", "")], ["row 5", "column 'text'", "whitespace"]),
        ([("c1", "en", "bad\x00text", "", "")], ["row 5", "column 'text'", "NUL"]),
        ([("c1", "xx", "hello", "", "")], ["row 5", "column 'lang'", "unknown language code 'xx'"]),
        ([("c1", "en", "hello", "2", "40")], ["row 5", "column 'span_end'", "past the end"]),
        ([("c1", "en", "hello", "3", "3")], ["row 5", "column 'span_start'", "not before end"]),
        ([("c1", "en", "hello", "-1", "3")], ["row 5", "column 'span_start'", "negative"]),
        ([("c1", "en", "hello", "1", "")], ["row 5", "column 'span_end'", "empty"]),
        ([("c1", "en", "hello", "one", "3")], ["row 5", "column 'span_start'", "not an integer"]),
        ([("c1", "en", "last Monday", "5", "11")], ["row 5", "column 'text'", "duplicate of row 2"]),
        ([("", "en", "hello", "", "")], ["row 5", "column 'concept_id'", "empty"]),
        ([("c3", "en", "lonely", "", "")], ["row 5", "column 'concept_id'", "only 1 context"]),
        (
            [("c1", "de", "Montag früh", "", ""), ("c1", "de", "letzten Montag", "", "")],
            ["row 5", "column 'lang'", "'de' has only 1 concept"],
        ),
    ],
)
def test_row_errors_name_file_row_column(tmp_path: Path, rows: list[tuple], expected: list[str]) -> None:
    path = _tsv(tmp_path / "my.tsv", GOOD_ROWS + rows)
    message = _error(path)
    for part in expected:
        assert part in message, message


def test_file_level_errors(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "absent.tsv")
    (tmp_path / "empty.tsv").write_text("")
    assert "empty file" in _error(tmp_path / "empty.tsv")
    assert "no data rows" in _error(_tsv(tmp_path / "header.tsv", []))
    message = _error(_tsv(tmp_path / "cols.tsv", [("c1", "en")], header="concept_id\tlang"))
    assert "missing required column 'text'" in message
    message = _error(_tsv(tmp_path / "half.tsv", [("c1", "en", "x", "0")], header="concept_id\tlang\ttext\tspan_start"))
    assert "column 'span_end' is missing" in message
    (tmp_path / "garbage.parquet").write_bytes(b"\x00\x01not parquet at all" * 50)
    assert "cannot read as Parquet" in _error(tmp_path / "garbage.parquet")
    (tmp_path / "latin1.csv").write_bytes("concept_id,lang,text\nc1,fr,caf\xe9\n".encode("latin-1"))
    assert "not a UTF-8" in _error(tmp_path / "latin1.csv")
    (tmp_path / "ragged.tsv").write_text("concept_id\tlang\ttext\nc1\ten\ta\nc1\ten\tb\tc\n")
    assert "row 2: 4 fields where the header has 3" in _error(tmp_path / "ragged.tsv")
    (tmp_path / "set.json").write_text("{}")
    assert "unsupported file type" in _error(tmp_path / "set.json")


def test_all_problems_are_collected(tmp_path: Path) -> None:
    rows = GOOD_ROWS + [("c1", "xx", "a", "", ""), ("c2", "en", " ", "", ""), ("c2", "en", "z", "0", "9")]
    with pytest.raises(ConceptSetError) as info:
        load_concept_set(_tsv(tmp_path / "many.tsv", rows))
    assert "(and 2 more problems)" in str(info.value)
    assert [p.split(",")[0].split(": ")[1] for p in info.value.problems] == ["row 5", "row 6", "row 7"]


def test_conflicting_labels(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("concept_id,lang,text,label\nc1,en,a b,One\nc1,en,b c,Uno\nc2,en,c d,Two\nc2,en,d e,Two\n")
    message = _error(path)
    assert "row 2" in message and "column 'label'" in message


# ------------------------------------------------------------------------------------------------
# subset()
# ------------------------------------------------------------------------------------------------


def test_subset(shipped: ConceptSet) -> None:
    sub = shipped.subset(["de", "ja"], ["monday", "march", "brazil"], max_contexts=5)
    assert sub.sentences.height == 2 * 3 * 5
    assert sub.sentences["sentence_id"].to_list() == list(range(30))
    assert sorted(sub.languages["lang"].to_list()) == ["de", "ja"]
    assert sorted(sub.concepts["concept_id"].to_list()) == ["brazil", "march", "monday"]
    assert sub.sha256 != shipped.sha256
    assert sub.subset(["de", "ja"], ["monday", "march", "brazil"], 5).sha256 == sub.sha256
    # The first contexts of each pair, in the original order (deterministic).
    first = shipped.sentences.filter((pl.col("concept_id") == "march") & (pl.col("lang") == "de")).head(5)
    got = sub.sentences.filter((pl.col("concept_id") == "march") & (pl.col("lang") == "de"))
    assert got["text"].to_list() == first["text"].to_list()
    assert sub.provenance["subset"]["max_contexts"] == 5
    assert shipped.subset(None, None, 0).sentences.equals(shipped.sentences)


def test_subset_takes_language_codes_in_any_case(shipped: ConceptSet) -> None:
    """`DE` and `Ja` name the languages `de` and `ja` (BCP 47 case): the same subset, the same hash."""
    upper = shipped.subset(["DE", "Ja"], ["monday", "march"], max_contexts=3)
    lower = shipped.subset(["de", "ja"], ["monday", "march"], max_contexts=3)
    assert upper.languages["lang"].to_list() == ["de", "ja"] and upper.sha256 == lower.sha256


def test_subset_errors(shipped: ConceptSet) -> None:
    with pytest.raises(ConceptSetError, match="unknown language.*'xx'.*'yy'"):
        shipped.subset(["de", "xx", "yy"], None)
    with pytest.raises(ConceptSetError, match="unknown concept.*'earthquake'"):
        shipped.subset(None, ["monday", "earthquake"])
    with pytest.raises(ConceptSetError, match="at least 2"):
        shipped.subset(None, ["monday"])
    with pytest.raises(ConceptSetError, match="max_contexts"):
        shipped.subset(None, None, max_contexts=1)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def test_cli_check_ok_and_error(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(concepts_app, ["check", str(DEFAULT_CONCEPT_SET)])
    assert ok.exit_code == 0, ok.output
    assert "12 languages" in ok.output and "45 concepts" in ok.output and "min 24" in ok.output
    bad = _tsv(tmp_path / "bad.tsv", GOOD_ROWS + [("c1", "xx", "hello", "", "")])
    res = runner.invoke(concepts_app, ["check", str(bad)])
    assert res.exit_code == 1
    assert "row 5, column 'lang': unknown language code 'xx'" in res.stderr
    assert "Traceback" not in res.output
    missing = runner.invoke(concepts_app, ["check", str(tmp_path / "nope.parquet")])
    assert missing.exit_code == 1 and "no such file" in missing.stderr


def test_cli_build(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "small.parquet"
    res = runner.invoke(concepts_app, ["build", "--out", str(out), "--languages", "en,hi", "--contexts", "20"])
    assert res.exit_code == 0, res.output
    cs = load_concept_set(out)
    assert cs.counts()["min_contexts"] == 20 and cs.languages.height == 2
    assert cs.provenance["command"] == "precompute concepts build --languages en,hi --contexts 20"
    bad = runner.invoke(concepts_app, ["build", "--out", str(out), "--languages", "en,zz"])
    assert bad.exit_code == 1 and "'zz'" in bad.stderr and "Traceback" not in bad.output
