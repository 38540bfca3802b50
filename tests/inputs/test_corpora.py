"""Concept sets from real corpora (from-parallel, from-corpus), tested on a parallel corpus rendered from CLDR.

The demo corpus (`precompute.demo.corpus`) renders the same CLDR records in every language, so line i of every
language file is a translation of line i of the others: a real (if terse) parallel corpus, built offline.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import polars as pl
import pytest
from babel import Locale
from typer.testing import CliRunner

from precompute.cli import app
from precompute.demo.corpus import build_corpus
from precompute.inputs.concepts import load_concept_set
from precompute.inputs.corpora import (
    CorpusError,
    build_from_corpus,
    build_from_parallel,
    language_of_file,
    load_keywords,
    load_lexicon,
)

runner = CliRunner()

LANGS = ["en", "de", "ru", "zh", "ja"]
#: File names of the test corpus: plain ISO names and FLORES names (mapped to ISO codes by the builder).
FILE_NAMES = {
    "en": "en.txt",
    "de": "deu_Latn.devtest",
    "ru": "ru.txt",
    "zh": "zho_Hans.devtest",
    "ja": "jpn_Jpan.devtest",
}
N_LINES = 400

KEYWORDS = [
    ("wednesday", "Wednesday|Wed", "Wednesday", "weekday"),
    ("friday", "Friday|Fri", "Friday", "weekday"),
    ("december", "December|Dec", "December", "month"),
    ("japan", "Japan", "Japan", "territory"),
    ("portugal", "Portugal", "Portugal", "territory"),
    ("arabic", "Arabic", "Arabic", "language"),
    ("kilometer", "kilometers?|km", "kilometer", "unit"),
]


@pytest.fixture(scope="module")
def lines() -> dict[str, list[str]]:
    corpus = build_corpus(LANGS, N_LINES, seed=3)
    out: dict[str, list[str]] = {lang: [] for lang in LANGS}
    for lang, text in corpus:
        out[lang].append(text)
    return out


@pytest.fixture(scope="module")
def parallel_dir(tmp_path_factory, lines) -> Path:
    root = tmp_path_factory.mktemp("parallel") / "corpus"
    root.mkdir()
    for lang, name in FILE_NAMES.items():
        (root / name).write_text("\n".join(lines[lang]) + "\n", encoding="utf-8")
    return root


def _keywords(path: Path, rows=KEYWORDS, header="concept_id\tpattern\tlabel\tcategory") -> Path:
    path.write_text(header + "\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def keywords(tmp_path_factory) -> Path:
    return _keywords(tmp_path_factory.mktemp("kw") / "keywords.tsv")


def _matches(lang: str, text: str) -> set[str]:
    """The keyword concepts an English line matches, computed independently of the builder."""
    assert lang == "en"
    return {cid for cid, pattern, _, _ in KEYWORDS if re.search(rf"\b(?:{pattern})\b", text, re.IGNORECASE)}


# --- file names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, lang",
    [
        ("es.txt", "es"),
        ("spa_Latn.devtest", "es"),
        ("devtest.spa_Latn", "es"),
        ("eng_Latn.dev", "en"),
        ("zho_Hans.devtest", "zh"),
        ("cmn_Hans.devtest", "zh"),
        ("zho_Hant.devtest", "zh-Hant"),
        ("jpn_Jpan.devtest", "ja"),
        ("arb_Arab.devtest", "ar"),
        ("deu.txt", "de"),
        ("pt-BR.txt", "pt-BR"),
        ("README.md", None),
        ("notes.txt", None),
        ("en", None),
    ],
)
def test_language_of_file(name: str, lang: str | None) -> None:
    assert language_of_file(name) == lang


# --- from-parallel -----------------------------------------------------------------------------------------


def test_parallel_keeps_alignment(parallel_dir: Path, keywords: Path, lines: dict[str, list[str]]) -> None:
    result = build_from_parallel(parallel_dir, "en", keywords, max_per_concept=1000, min_per_concept=2)
    frame = result.frame
    assert sorted(frame["lang"].unique().to_list()) == sorted(LANGS)
    assert frame["span_start"].null_count() == frame.height  # whole-sentence pooling: no spans
    for cid in frame["concept_id"].unique().to_list():
        per = frame.filter(pl.col("concept_id") == cid)
        en = per.filter(pl.col("lang") == "en")["text"].to_list()
        # English contexts: exactly the lines that match this concept and no other (several: dropped).
        expected = [t for t in lines["en"] if _matches("en", t) == {cid}]
        assert en == list(dict.fromkeys(expected))
        for lang in LANGS:
            texts = per.filter(pl.col("lang") == lang)["text"].to_list()
            # The German (every language's) contexts are the translations of the English ones, line by line.
            assert texts == [lines[lang][lines["en"].index(t)] for t in en], (cid, lang)
    # Lines matching two concepts exist in this corpus and were dropped, never assigned.
    n_multi = sum(len(_matches("en", t)) > 1 for t in lines["en"])
    assert n_multi > 0 and result.provenance["dropped"]["lines_with_several_concepts"] == n_multi
    assert not any(len(_matches("en", t)) > 1 for t in frame.filter(pl.col("lang") == "en")["text"])
    # Translations carry the concept: Japan is 日本 in Chinese and Japanese contexts.
    for lang in ("zh", "ja"):
        assert all(
            "日本" in t for t in frame.filter((pl.col("concept_id") == "japan") & (pl.col("lang") == lang))["text"]
        )


def test_parallel_word_boundaries(parallel_dir: Path, tmp_path: Path, lines: dict[str, list[str]]) -> None:
    # "Mar" must not find "March", nor "Mon" "Monday": the pivot match respects word boundaries.
    kw = _keywords(tmp_path / "kw.tsv", [("mar", "Mar", "", ""), ("mon", "Mon", "", "")])
    frame = build_from_parallel(parallel_dir, "en", kw, max_per_concept=1000, min_per_concept=2).frame
    en = frame.filter(pl.col("lang") == "en")
    assert en.height > 0
    for cid, text in en.select("concept_id", "text").iter_rows():
        word = {"mar": "Mar", "mon": "Mon"}[cid]
        assert re.search(rf"(?<!\w){word}(?!\w)", text, re.IGNORECASE), text
    march_only = [t for t in lines["en"] if "March" in t and not re.search(r"\bMar\b", t)]
    assert march_only and not set(march_only) & set(en["text"].to_list())


def test_parallel_counts_capped_balanced_deterministic(parallel_dir: Path, keywords: Path) -> None:
    a = build_from_parallel(parallel_dir, "en", keywords, max_per_concept=4, min_per_concept=4, seed=1)
    b = build_from_parallel(parallel_dir, "en", keywords, max_per_concept=4, min_per_concept=4, seed=1)
    assert a.frame.equals(b.frame)
    counts = a.frame.group_by("concept_id", "lang").len()
    assert counts["len"].to_list() == [4] * counts.height  # capped, and the same in every language
    full = build_from_parallel(parallel_dir, "en", keywords, max_per_concept=1000, min_per_concept=2)
    many = {c for c, n in full.provenance["lines_per_concept"].items() if n >= 4}
    assert set(a.frame["concept_id"].unique().to_list()) == many
    few = {c: n for c, n in full.provenance["lines_per_concept"].items() if n < 4}
    assert a.provenance["dropped"]["concepts_with_too_few_lines"] == few
    # A kept line is a sample of the concept's lines, in corpus order.
    for cid in many:
        rows = a.frame.filter((pl.col("concept_id") == cid) & (pl.col("lang") == "en"))
        numbers = [int(s.rsplit(":", 1)[1]) for s in rows["source"]]
        assert numbers == sorted(numbers)


def test_parallel_cli_output_passes_check_with_provenance(parallel_dir: Path, keywords: Path, tmp_path: Path) -> None:
    out = tmp_path / "flores-like.parquet"
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(parallel_dir),
            "--pivot",
            "en",
            "--keywords",
            str(keywords),
            "--out",
            str(out),
            "--licence",
            "Unicode License v3",
            "--max-per-concept",
            "6",
            "--min-per-concept",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    check = runner.invoke(app, ["concepts", "check", str(out)])
    assert check.exit_code == 0, check.output
    assert "ok" in check.output and "Unicode License v3" in check.output
    prov = load_concept_set(out).provenance
    assert prov["method"] == "from-parallel" and prov["pivot"] == "en" and prov["license"] == "Unicode License v3"
    assert {s["file"]: s["sha256"] for s in prov["sources"]} == {
        name: hashlib.sha256((parallel_dir / name).read_bytes()).hexdigest() for name in FILE_NAMES.values()
    }
    assert {s["file"]: s["lang"] for s in prov["sources"]} == {v: k for k, v in FILE_NAMES.items()}
    assert prov["keywords"]["sha256"] == hashlib.sha256(keywords.read_bytes()).hexdigest()
    assert prov["keywords"]["file"] == "keywords.tsv"
    assert str(tmp_path) not in json.dumps(prov)  # file names only: the set travels
    assert "--max-per-concept 6" in prov["command"]


# --- bad inputs: every problem named by file, line and column ----------------------------------------------


def _problems(exc: pytest.ExceptionInfo) -> list[str]:
    return exc.value.problems


def test_bad_corpus_named_by_file_line_column(lines: dict[str, list[str]], keywords: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    for lang, name in FILE_NAMES.items():
        (root / name).write_text("\n".join(lines[lang]) + "\n", encoding="utf-8")
    de = root / FILE_NAMES["de"]
    raw = de.read_bytes().split(b"\n")
    raw[2] = b"Mo\xff" + raw[2]  # an undecodable byte: line 3, column 3
    de.write_bytes(b"\n".join(raw))
    ja = root / FILE_NAMES["ja"]
    ja_lines = ja.read_text(encoding="utf-8").split("\n")
    ja_lines[6] = ja_lines[6][:4] + "\x00" + ja_lines[6][4:]  # NUL: line 7, column 5
    ja.write_text("\n".join(ja_lines), encoding="utf-8")
    ru = root / "ru.txt"
    ru.write_text("\n".join(lines["ru"][:-3]) + "\n", encoding="utf-8")  # 3 lines short
    with pytest.raises(CorpusError) as exc:
        build_from_parallel(root, "en", keywords, min_per_concept=2)
    problems = _problems(exc)
    assert f"{de}: line 3, column 3: not UTF-8 (byte 0xff)" in problems
    assert f"{ja}: line 7, column 5: NUL character" in problems
    assert any(
        p.startswith(f"{ru}: line {N_LINES - 2}, column 1: {N_LINES - 3} lines where the pivot en.txt has {N_LINES}")
        for p in problems
    ), problems
    assert str(exc.value).startswith(str(de)) and "(and 2 more problems)" in str(exc.value)


def test_bad_corpus_directory(tmp_path: Path, keywords: Path) -> None:
    root = tmp_path / "dir"
    root.mkdir()
    (root / "es.txt").write_text("hola\n", encoding="utf-8")
    (root / "spa_Latn.devtest").write_text("hola\n", encoding="utf-8")
    (root / "notes.md").write_text("x\n", encoding="utf-8")
    (root / ".hidden").write_text("x\n", encoding="utf-8")
    with pytest.raises(CorpusError) as exc:
        build_from_parallel(root, "es", keywords)
    problems = _problems(exc)
    assert any(p.startswith(f"{root / 'notes.md'}: cannot tell the language") for p in problems)
    assert f"{root / 'spa_Latn.devtest'}: a second file for language 'es' (the first is es.txt)" in problems
    assert len(problems) == 2
    (root / "notes.md").unlink()
    (root / "spa_Latn.devtest").unlink()
    with pytest.raises(CorpusError, match="no file for the pivot language 'en'"):
        build_from_parallel(root, "en", keywords)
    with pytest.raises(CorpusError, match="no such directory"):
        build_from_parallel(tmp_path / "missing", "en", keywords)


def test_bad_keywords_named_by_file_line_column(tmp_path: Path) -> None:
    path = tmp_path / "kw.tsv"
    path.write_text(
        "concept_id\tpattern\tlabel\n"
        "# comments and blank lines are skipped\n"
        "\n"
        "house\thouses?\tHouse\n"
        "joy\t(joy\tJoy\n"  # line 5: invalid regex
        "\tearthquake\tEarthquake\n"  # line 6: empty id
        "rain\tx*\tRain\n"  # line 7: matches the empty string
        "house\thome\tHome\n"  # line 8: another label
        "house\thouses?\tHouse\n"  # line 9: duplicate
        "tree\ttree\n",  # line 10: ragged
        encoding="utf-8",
    )
    with pytest.raises(CorpusError) as exc:
        load_keywords(path, "en")
    problems = _problems(exc)
    assert problems[0] == (
        f"{path}: line 5, column 2 ('pattern'): invalid regular expression '(joy' at character 1 "
        "of the pattern: missing ), unterminated subpattern"
    )
    assert f"{path}: line 6, column 1 ('concept_id'): empty concept id" in problems
    assert f"{path}: line 7, column 2 ('pattern'): pattern 'x*' matches the empty string" in problems
    assert (
        f"{path}: line 8, column 3 ('label'): concept 'house' has label 'Home' here but 'House' on line 4" in problems
    )
    assert f"{path}: line 9, column 2 ('pattern'): duplicate of line 4" in problems
    assert f"{path}: line 10: 2 fields where the header has 3" in problems
    header = tmp_path / "header.tsv"
    header.write_text("concept\tpattern\nhouse\thouse\n", encoding="utf-8")
    with pytest.raises(CorpusError) as exc:
        load_keywords(header, "en")
    assert _problems(exc)[0].startswith(f"{header}: line 1: missing column 'concept_id' in the header")
    assert (
        f"{header}: line 1, column 1: unknown column 'concept' (expected concept_id, pattern, label, category)"
        in _problems(exc)
    )
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("concept_id\tpattern\ncafé\tcafé\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=re.escape(f"{latin1}: line 2, column 4: not UTF-8")):
        load_keywords(latin1, "en")


def test_cli_errors_are_one_line(tmp_path: Path, parallel_dir: Path, keywords: Path) -> None:
    bad = tmp_path / "kw.tsv"
    bad.write_text("concept_id\tpattern\nhouse\t(house\nrain\train\n", encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(parallel_dir),
            "--pivot",
            "en",
            "--keywords",
            str(bad),
            "--out",
            str(tmp_path / "x.parquet"),
        ],
    )
    assert result.exit_code == 1
    assert f"{bad}: line 2, column 2 ('pattern'): invalid regular expression" in result.output
    assert "Traceback" not in result.output
    wrong = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(parallel_dir),
            "--pivot",
            "en",
            "--keywords",
            str(keywords),
            "--out",
            str(tmp_path / "x.tsv"),
        ],
    )
    assert wrong.exit_code == 1 and "must be a .parquet file" in wrong.output
    assert not (tmp_path / "x.tsv").exists()


# --- from-corpus -------------------------------------------------------------------------------------------


def _cldr_lexicon(path: Path) -> Path:
    """Forms straight from CLDR: weekday names, the name of Japan, the name of the Japanese language."""
    rows = ["concept_id\tlang\tform\tcategory"]
    for lang in LANGS:
        loc = Locale.parse(lang)
        for cid, day in (("wednesday", 2), ("friday", 4)):
            forms = {loc.days[ctx]["wide"][day] for ctx in ("format", "stand-alone")}
            rows += [f"{cid}\t{lang}\t{f}\tweekday" for f in sorted(forms)]
        rows.append(f"japan\t{lang}\t{loc.territories['JP']}\tterritory")
        rows.append(f"japanese\t{lang}\t{loc.languages['ja']}\tlanguage")
        rows.append(f"portugal\t{lang}\t{loc.territories['PT']}\tterritory")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def monolingual_dir(tmp_path_factory, lines) -> Path:
    """The CLDR corpus with every language shuffled differently: monolingual files, no alignment."""
    root = tmp_path_factory.mktemp("mono") / "corpus"
    root.mkdir()
    for i, (lang, name) in enumerate(FILE_NAMES.items()):
        texts = list(lines[lang])
        random.Random(i).shuffle(texts)
        (root / name).write_text("\n".join(texts) + "\n", encoding="utf-8")
    return root


def test_corpus_spans_right_in_chinese_and_japanese(monolingual_dir: Path, tmp_path: Path) -> None:
    lexicon = _cldr_lexicon(tmp_path / "lexicon.tsv")
    result = build_from_corpus(monolingual_dir, lexicon, max_per_concept=1000, min_per_concept=2)
    frame = result.frame
    forms = load_lexicon(lexicon).forms
    assert frame["span_start"].null_count() == 0
    for cid, lang, text, start, end in frame.select("concept_id", "lang", "text", "span_start", "span_end").iter_rows():
        assert forms[lang][text[start:end].casefold()] == cid, (lang, text, start, end)
        if lang in ("en", "de", "ru"):  # word boundaries in spaced scripts
            assert not (start > 0 and text[start - 1].isalnum()) and not (end < len(text) and text[end].isalnum())
    for lang, japan, japanese in (("zh", "日本", "日语"), ("ja", "日本", "日本語")):
        jp = frame.filter((pl.col("concept_id") == "japan") & (pl.col("lang") == lang))
        assert jp.height > 0
        for text, start, end in jp.select("text", "span_start", "span_end").iter_rows():
            assert text[start:end] == japan
            assert japanese not in text  # a line naming Japan and Japanese mentions two concepts: dropped
        ja_lang = frame.filter((pl.col("concept_id") == "japanese") & (pl.col("lang") == lang))
        for text, start, end in ja_lang.select("text", "span_start", "span_end").iter_rows():
            assert text[start:end] == japanese  # leftmost-longest: 日本語 is not a mention of 日本
    # In Japanese, 水曜日 is found inside text with no spaces around it.
    wed = frame.filter((pl.col("concept_id") == "wednesday") & (pl.col("lang") == "ja"))
    assert wed.height > 0 and all(
        t[s:e] == "水曜日" for t, s, e in wed.select("text", "span_start", "span_end").iter_rows()
    )
    # Balanced: each concept has the same count in every language it has.
    per = frame.group_by("concept_id", "lang").len().group_by("concept_id").agg(pl.col("len").n_unique())
    assert per["len"].to_list() == [1] * per.height


def test_corpus_output_passes_check(monolingual_dir: Path, tmp_path: Path) -> None:
    lexicon = _cldr_lexicon(tmp_path / "lexicon.tsv")
    out = tmp_path / "mono.parquet"
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-corpus",
            str(monolingual_dir),
            "--lexicon",
            str(lexicon),
            "--out",
            str(out),
            "--max-per-concept",
            "5",
            "--min-per-concept",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no licence recorded" in result.output
    check = runner.invoke(app, ["concepts", "check", str(out)])
    assert check.exit_code == 0, check.output
    cs = load_concept_set(out)
    assert cs.provenance["lexicon"]["sha256"] == hashlib.sha256(lexicon.read_bytes()).hexdigest()
    assert cs.counts()["with_span"] == cs.sentences.height


def test_bad_lexicon_named_by_file_line_column(tmp_path: Path, monolingual_dir: Path) -> None:
    path = tmp_path / "lexicon.tsv"
    path.write_text(
        "concept_id\tlang\tform\n"
        "japan\ten\tJapan\n"
        "japan\txx\tJapon\n"  # line 3: unknown language
        "jp\ten\tjapan\n"  # line 4: the same form (case-folded) as another concept
        "house\tde\t\n"  # line 5: empty form
        "japan\ten\tJapan\n",  # line 6: duplicate
        encoding="utf-8",
    )
    with pytest.raises(CorpusError) as exc:
        load_lexicon(path)
    assert _problems(exc) == [
        f"{path}: line 3, column 2 ('lang'): unknown language code 'xx'",
        f"{path}: line 4, column 3 ('form'): 'japan' is the same form as concept 'japan' on line 2 (en)",
        f"{path}: line 5, column 3 ('form'): empty form",
        f"{path}: line 6, column 3 ('form'): 'Japan' is duplicate of line 2 (en)",
    ]
    other = tmp_path / "fr.tsv"
    other.write_text("concept_id\tlang\tform\njapan\tfr\tJapon\nchina\tfr\tChine\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"language\(s\) fr have forms but no file"):
        build_from_corpus(monolingual_dir, other)


# --- the set runs through the pipeline, and the store says where it came from ------------------------------


@pytest.mark.slow
def test_parallel_set_runs_and_info_shows_provenance(parallel_dir: Path, keywords: Path, tmp_path: Path) -> None:
    from precompute.demo.train import tiny_test_model

    concepts = tmp_path / "parallel.parquet"
    built = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(parallel_dir),
            "--pivot",
            "en",
            "--keywords",
            str(keywords),
            "--out",
            str(concepts),
            "--licence",
            "Unicode License v3",
            "--max-per-concept",
            "4",
            "--min-per-concept",
            "4",
        ],
    )
    assert built.exit_code == 0, built.output
    checkpoints = tiny_test_model(tmp_path / "ckpts", steps=8, checkpoint_steps=[4, 8])
    lines = [
        "[model]",
        'id = "tiny"',
        'card = "tiny test model"',
        "[data]",
        f'concepts = "{concepts.name}"',
        "[experts]",
        "top_k = 5",
        "min_langs = 2",
        "[probes]",
        "seeds = [0]",
        "max_iter = 50",
    ]
    for ck in checkpoints:
        lines += [
            "[[checkpoints]]",
            f'name = "{ck.name}"',
            f'path = "ckpts/{ck.path.name}"',
            f"step = {ck.step}",
            f"tokens_seen = {ck.tokens_seen}",
        ]
    config = tmp_path / "run.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = tmp_path / "store.duckdb"
    run = runner.invoke(app, ["run", str(config), "--out", str(store)])
    assert run.exit_code == 0, run.output

    info = runner.invoke(app, ["info", str(store), "--json"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.output)
    cs = load_concept_set(concepts)
    assert data["concept_set"]["sha256"] == cs.sha256
    prov = data["concept_set"]["provenance"]
    assert prov["method"] == "from-parallel" and prov["license"] == "Unicode License v3"
    assert [s["file"] for s in prov["sources"]] == [s["file"] for s in cs.provenance["sources"]]
    assert sorted(data["languages"]) == sorted(LANGS)
    human = runner.invoke(app, ["info", str(store)])
    assert human.exit_code == 0, human.output
    assert "from-parallel" in human.output and "Unicode License v3" in human.output
    assert "keywords: keywords.tsv sha256 " + cs.provenance["keywords"]["sha256"] in human.output
    assert "source: deu_Latn.devtest (de, 400 lines) sha256" in human.output


def test_shipped_flores_keywords_load() -> None:
    """docs/flores-keywords.tsv, the recipe's ~200 concepts, is a valid keyword file."""
    path = Path(__file__).resolve().parents[2] / "docs" / "flores-keywords.tsv"
    concepts = load_keywords(path, "en")
    assert len(concepts) >= 200
    assert {"earthquake", "joy", "house"} <= set(concepts)
    assert concepts["house"].regex.search("Two Houses burned.") and not concepts["house"].regex.search("household")
