"""Hostile inputs to the corpus builders (from-parallel, from-corpus): Unicode matching, language codes, odd files.

Matching is defined on NFC text, case-folded with ``str.casefold`` (Turkic folding in Turkish and
Azerbaijani), and a word boundary is "no letter, digit, underscore, combining mark, ZWNJ or ZWJ right before
or after the match". Every refusal is one ``error:`` line naming the file, line and value.
"""

from __future__ import annotations

import time
import unicodedata
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from precompute.cli import app
from precompute.inputs.concepts import ConceptSetError, concept_set_from_frame
from precompute.inputs.corpora import (
    CorpusError,
    Matcher,
    build_from_corpus,
    build_from_parallel,
    fold,
    fold_pattern,
    language_code,
    language_of_file,
    load_keywords,
    load_lexicon,
)
from precompute.inputs.langcodes import language_code_problem, not_a_language

runner = CliRunner()


def _nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _tsv(path: Path, header: str, rows: list[str]) -> Path:
    return _write(path, [header, *rows])


def _lexicon(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    return _tsv(path, "concept_id\tlang\tform", ["\t".join(r) for r in rows])


def _keywords(path: Path, rows: list[tuple[str, str]]) -> Path:
    return _tsv(path, "concept_id\tpattern", ["\t".join(r) for r in rows])


def _one_error(result, *needles: str) -> str:
    """The command failed with exactly one ``error:`` line, no traceback, holding every needle."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    line = errors[0]
    assert not line.startswith("error: error:"), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def _spans(frame: pl.DataFrame, cid: str, lang: str) -> list[str]:
    rows = frame.filter((pl.col("concept_id") == cid) & (pl.col("lang") == lang))
    return [t[s:e] for t, s, e in rows.select("text", "span_start", "span_end").iter_rows()]


# --- the folding rules themselves -------------------------------------------------------------------------


def test_casefold_rules_for_sharp_s_and_dotted_i() -> None:
    assert fold("Straße") == fold("STRASSE") == fold("strasse") == fold("STRAẞE") == "strasse"
    assert fold("İstanbul") == "i\u0307stanbul"  # default folding keeps the dot as a combining mark
    assert fold("İstanbul", True) == fold("istanbul", True) == "istanbul"  # Turkic: İ <-> i
    assert fold("ISTANBUL", True) == "ıstanbul"  # Turkic: I <-> ı
    assert fold("ΟΔΟΣ") == fold("οδος") == fold("οδοσ")  # final sigma folds to σ


@pytest.mark.parametrize(
    "pattern, folded",
    [
        ("Straße", "stra(?:ss)e"),
        ("HOUSES?", "houses?"),
        ("[A-Z]+X", "[a-z]+x"),
        (r"caf\u00C9", "café"),
        (r"\N{LATIN CAPITAL LETTER A}b", "ab"),
        (r"(?P<Name>AB)(?P=Name)", "(?P<Name>ab)(?P=Name)"),  # group names kept as written
        (r"\W\S\D\B", r"\W\S\D\B"),  # escapes kept
        (r"(?x: A B )", "(?x: a b )"),  # flag letters kept, literals folded
        ("x{2,3}Y", "x{2,3}y"),
    ],
)
def test_fold_pattern_folds_literals_only(pattern: str, folded: str) -> None:
    assert fold_pattern(pattern) == folded


# --- from-corpus: NFC, casefold, boundaries, spans ---------------------------------------------------------


def _two_concepts(
    tmp_path: Path, lang: str, lines_a: list[str], form_a: str, filler: str = "Zebra"
) -> tuple[Path, Path]:
    """A corpus of one language with concept a (the lines under test) and a filler concept b (3 lines)."""
    root = tmp_path / "corpus"
    root.mkdir(exist_ok=True)
    _write(root / f"{lang}.txt", [*lines_a, *(f"{filler} {i}" for i in range(3))])
    lexicon = _lexicon(tmp_path / "lexicon.tsv", [("a", lang, form_a), ("b", lang, filler)])
    return root, lexicon


def test_sharp_s_form_finds_every_case_spelling_with_right_spans(tmp_path: Path) -> None:
    lines = [
        "Die Straße ist lang.",
        "DIE STRASSE IST LANG.",
        "die strasse.",
        "Maß und Straße!",
        "Die Straßenbahn fährt.",
        "STRAẞE",
    ]
    root, lexicon = _two_concepts(tmp_path, "de", lines, "Straße")
    frame = build_from_corpus(root, lexicon, min_per_concept=2).frame
    # Every spelling but the compound (a letter follows), each span the word as written in the text.
    assert _spans(frame, "a", "de") == ["Straße", "STRASSE", "strasse", "Straße", "STRAẞE"]


def test_turkish_dotted_capital_i(tmp_path: Path) -> None:
    lines = ["İstanbul'da yağmur var.", "istanbul güzel.", "İSTANBUL!", "ISTANBUL yazılmaz."]
    root, lexicon = _two_concepts(tmp_path, "tr", lines, "İstanbul", filler="Ankara")
    frame = build_from_corpus(root, lexicon, min_per_concept=2).frame
    assert _spans(frame, "a", "tr") == ["İstanbul", "istanbul", "İSTANBUL"]  # Turkic: I is ı, not i
    # A lowercase form is the same form in Turkish.
    (tmp_path / "lexicon.tsv").unlink()
    lexicon = _lexicon(tmp_path / "lex2.tsv", [("a", "tr", "istanbul"), ("b", "tr", "Ankara")])
    assert _spans(build_from_corpus(root, lexicon, min_per_concept=2).frame, "a", "tr") == [
        "İstanbul",
        "istanbul",
        "İSTANBUL",
    ]


def test_dotted_i_outside_turkish_never_raises(tmp_path: Path) -> None:
    # An English lexicon with "istanbul" on text "İstanbul" (default folding: i + U+0307): no KeyError, no
    # match, and the concept that found nothing is reported, not silently lost.
    lines = ["İstanbul is large.", "Istanbul is large.", "ISTANBUL!"]
    root, lexicon = _two_concepts(tmp_path, "en", lines, "istanbul")
    (root / "fr.txt").write_text("Paris\nParis\n", encoding="utf-8")
    _lexicon(lexicon, [("a", "en", "istanbul"), ("b", "en", "Zebra"), ("c", "en", "Oslo")])
    result = build_from_corpus(root, lexicon, min_per_concept=2)
    assert _spans(result.frame, "a", "en") == ["Istanbul", "ISTANBUL"]
    report = "\n".join(result.report)
    assert "c (en 0)" in report  # the concept left out, with its count
    assert "fr.txt (fr)" in report  # the file the lexicon has no forms for


def test_hindi_form_does_not_match_inside_a_word_with_a_vowel_sign(tmp_path: Path) -> None:
    lines = ["यह कम है।", "कमी है।", "पानी कम।", "कमरा बड़ा है।", "(कम)"]
    root, lexicon = _two_concepts(tmp_path, "hi", lines, "कम", filler="पेड़")
    frame = build_from_corpus(root, lexicon, min_per_concept=2).frame
    rows = frame.filter((pl.col("concept_id") == "a") & (pl.col("lang") == "hi"))
    assert rows["text"].to_list() == ["यह कम है।", "पानी कम।", "(कम)"]  # not कमी (ी is a mark), not कमरा
    assert _spans(frame, "a", "hi") == ["कम"] * 3


def test_nfd_text_and_nfc_forms_meet_in_nfc(tmp_path: Path) -> None:
    lines = [_nfd("Un café noir."), "Un café crème.", _nfd("CAFÉ!"), "Le cafe du coin."]
    root, lexicon = _two_concepts(tmp_path, "fr", lines, _nfd("café"))  # an NFD form, too
    frame = build_from_corpus(root, lexicon, min_per_concept=2).frame
    rows = frame.filter((pl.col("concept_id") == "a") & (pl.col("lang") == "fr"))
    assert rows["text"].to_list() == ["Un café noir.", "Un café crème.", "CAFÉ!"]  # stored in NFC
    assert all(unicodedata.is_normalized("NFC", t) for t in frame["text"])
    assert _spans(frame, "a", "fr") == ["café", "café", "CAFÉ"]
    # "cafe" no longer matches the NFD "café" (e followed by a combining acute is not a word end).
    lexicon = _lexicon(tmp_path / "lex2.tsv", [("a", "fr", "cafe"), ("b", "fr", "Zebra")])
    with pytest.raises(CorpusError, match=r"only 1 concept"):  # "cafe" found once (le cafe), under the minimum
        build_from_corpus(root, lexicon, min_per_concept=2)


def test_spans_stay_right_after_characters_that_fold_longer(tmp_path: Path) -> None:
    # ß -> ss, ﬁ -> fi, İ -> i + U+0307 before the mention shift folded offsets; spans are in the stored text.
    lines = ["Maß ﬁx İİ Haus.", "ßßß HAUS", "Haus"]
    root, lexicon = _two_concepts(tmp_path, "de", lines, "haus")
    frame = build_from_corpus(root, lexicon, min_per_concept=2).frame
    assert _spans(frame, "a", "de") == ["Haus", "HAUS", "Haus"]


def test_greek_final_sigma(tmp_path: Path) -> None:
    lines = ["Ο ΔΡΌΜΟΣ.", "ο δρόμος.", "δρόμοσ"]
    root, lexicon = _two_concepts(tmp_path, "el", lines, "δρόμος", filler="Ζέβρα")
    assert _spans(build_from_corpus(root, lexicon, min_per_concept=2).frame, "a", "el") == [
        "ΔΡΌΜΟΣ",
        "δρόμος",
        "δρόμοσ",
    ]


def test_zero_width_joiners_are_inside_words() -> None:
    # Persian می‌خواهم: the ZWNJ joins a prefix; خواهم alone must not be found after it.
    regex = load_lexicon_regex("fa", "خواهم")
    assert not regex.search("می\u200cخواهم")
    assert regex.search("من خواهم رفت")


def load_lexicon_regex(lang: str, form: str, tmp: Path | None = None):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = _lexicon(Path(d) / "l.tsv", [("a", lang, form)])
        lexicon = load_lexicon(path)
    regex = lexicon.regexes[lang]

    class Folded:
        def search(self, text: str):
            return regex.search(fold(unicodedata.normalize("NFC", text)))

    return Folded()


def test_no_space_scripts_never_end_a_match_inside_a_cluster() -> None:
    regex = load_lexicon_regex("th", "ก")
    assert regex.search("กา")  # ก then a letter: a character sequence match
    assert not regex.search("กิ")  # ก then the vowel sign ิ (a mark): inside the cluster


def test_form_starting_with_a_combining_mark_is_refused(tmp_path: Path) -> None:
    path = _lexicon(tmp_path / "l.tsv", [("a", "hi", "\u093f"), ("b", "hi", "पेड़")])
    with pytest.raises(CorpusError) as exc:
        load_lexicon(path)
    assert exc.value.problems == [
        (
            f"{path}: line 2, column 3 ('form'): form '\u093f' starts with a combining mark "
            "(U+093F), so it can never start a word"
        )
    ]


def test_case_and_normalisation_variants_are_one_form(tmp_path: Path) -> None:
    path = _lexicon(
        tmp_path / "l.tsv",
        [("a", "de", "Straße"), ("b", "de", "STRASSE"), ("c", "fr", "café"), ("d", "fr", _nfd("CAFÉ"))],
    )
    with pytest.raises(CorpusError) as exc:
        load_lexicon(path)
    assert exc.value.problems == [
        f"{path}: line 3, column 3 ('form'): 'STRASSE' is the same form as concept 'a' on line 2 (de)",
        f"{path}: line 5, column 3 ('form'): {_nfd('CAFÉ')!r} is the same form as concept 'c' on line 4 (fr)",
    ]


def test_corpus_report_names_every_language_and_concept_left_out(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    _write(root / "en.txt", ["a house", "the house", "a tree", "the tree", "a cat"])
    _write(root / "tr.txt", ["bir ev", "Zzz"])  # no concept reaches 2 lines
    _write(root / "de.txt", ["ein Haus", "das Haus", "ein Baum", "der Baum"])
    lexicon = _lexicon(
        tmp_path / "l.tsv",
        [
            ("house", "en", "house"),
            ("tree", "en", "tree"),
            ("cat", "en", "cat"),
            ("house", "tr", "ev"),
            ("tree", "tr", "ağaç"),
            ("house", "de", "Haus"),
            ("tree", "de", "Baum"),
            ("cat", "de", "Katze"),
        ],
    )
    out = tmp_path / "out.parquet"
    result = runner.invoke(
        app,
        ["concepts", "from-corpus", str(root), "--lexicon", str(lexicon), "--out", str(out), "--min-per-concept", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "languages left out: tr (no concept with 2 lines (most: house, 1))" in result.output
    assert "concepts left out (fewer than 2 lines in every language): cat (de 0, en 1)" in result.output
    assert "2 of 3 languages, 2 of 3 concepts" in result.output
    from precompute.inputs.concepts import load_concept_set

    dropped = load_concept_set(out).provenance["dropped"]
    assert dropped["languages_left_out"] == {"tr": "no concept with 2 lines (most: house, 1)"}
    assert dropped["concepts_left_out"] == {"cat": {"de": 0, "en": 1}}


# --- from-parallel: patterns ----------------------------------------------------------------------------


@pytest.fixture()
def parallel(tmp_path: Path) -> Path:
    root = tmp_path / "parallel"
    root.mkdir()
    de = [
        "Die Straße ist lang.",
        "DIE STRASSE.",
        _nfd("Ein Café."),
        "Das CAFÉ.",
        "Die Straßenbahn.",
        "Ein Haus.",
        "Das HAUS.",
        "Zwei Häuser.",
    ]
    en = [
        "The road is long.",
        "THE ROAD.",
        "A cafe.",
        "The CAFE.",
        "The tram.",
        "A house.",
        "The HOUSE.",
        "Two houses.",
    ]
    _write(root / "de.txt", de)
    _write(root / "EN.txt", en)  # an upper-case file name is the language en
    return root


def test_parallel_patterns_fold_like_the_text(parallel: Path, tmp_path: Path) -> None:
    kw = _keywords(tmp_path / "kw.tsv", [("road", "STRAẞE"), ("cafe", r"caf\u00E9"), ("house", "haus|häuser")])
    result = build_from_parallel(parallel, "DE", kw, min_per_concept=2, languages=["EN", "De"])
    frame = result.frame
    de = {
        cid: frame.filter((pl.col("concept_id") == cid) & (pl.col("lang") == "de"))["text"].to_list()
        for cid in ("road", "cafe", "house")
    }
    assert de["road"] == ["Die Straße ist lang.", "DIE STRASSE."]  # not Straßenbahn
    assert de["cafe"] == ["Ein Café.", "Das CAFÉ."]  # the NFD line matched, and is stored in NFC
    assert de["house"] == ["Ein Haus.", "Das HAUS.", "Zwei Häuser."]
    assert sorted(frame["lang"].unique().to_list()) == ["de", "en"]
    assert result.provenance["pivot"] == "de"


def test_keyword_patterns_with_groups_on_several_lines(tmp_path: Path) -> None:
    path = _keywords(
        tmp_path / "kw.tsv",
        [
            ("echo", r"(?P<w>la)(?P=w)"),
            ("echo", r"(?P<w>do)(?P=w)"),  # one group name on two lines
            ("twice", r"(ab)\1"),
            ("twice", r"(xy)\1"),  # numbered backreferences on two lines
        ],
    )
    concepts = load_keywords(path, "en")
    assert concepts["echo"].regex.search("LALA land") and concepts["echo"].regex.search("dodo")
    assert concepts["twice"].regex.search("XYXY") and not concepts["twice"].regex.search("xyab")


def test_empty_width_matches_are_no_mention(tmp_path: Path) -> None:
    path = _keywords(tmp_path / "kw.tsv", [("a", r"(?=house)"), ("b", "tree")])
    concepts = load_keywords(path, "en")
    assert not concepts["a"].regex.search("a house")
    assert isinstance(concepts["b"].regex, Matcher) and concepts["b"].regex.search("A TREE.")


@pytest.mark.parametrize(
    "pattern, says",
    [
        (
            "(?i)house",
            (
                "pattern '(?i)house' sets inline global flags (?i), which cannot be scoped to one pattern; "
                "write (?i:...)"
            ),
        ),
        ("(?x)h o u s e", "pattern '(?x)h o u s e' sets inline global flags (?x)"),
        (
            "house(?i)",
            "invalid regular expression 'house(?i)' at character 6 of the pattern: global flags not at the start",
        ),
        (
            "(?P<a>x)(?P<a>y)",
            (
                "invalid regular expression '(?P<a>x)(?P<a>y)' at character 13 of the pattern: "
                "redefinition of group name"
            ),
        ),
        ("stra[ßs]e", "pattern 'stra[ßs]e': the character class holds 'ß', which case-folds to 'ss'"),
        ("(?<=ß|a)b", "pattern '(?<=ß|a)b' cannot be matched case-folded"),
    ],
)
def test_bad_patterns_name_file_line_and_pattern(pattern: str, says: str, parallel: Path, tmp_path: Path) -> None:
    kw = _keywords(tmp_path / "kw.tsv", [("house", "haus"), ("road", pattern)])
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(parallel),
            "--pivot",
            "de",
            "--keywords",
            str(kw),
            "--out",
            str(tmp_path / "x.parquet"),
        ],
    )
    _one_error(result, f"{kw}: line 3, column 2 ('pattern'): ", says)


# --- language codes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, lang",
    [
        ("EN.txt", "en"),
        ("En.TXT", "en"),
        ("SPA_LATN.devtest", "es"),
        ("devtest.SPA_Latn", "es"),
        ("eng_latn.dev", "en"),
        ("pt-br.txt", "pt-BR"),
        ("ZH_HANT.txt", "zh-Hant"),
        ("zho_hant.devtest", "zh-Hant"),
        ("und.txt", None),
        ("zxx.txt", None),
        ("mul.txt", None),
        ("mis.txt", None),
        ("qaa.txt", None),
        ("und_Latn.devtest", None),
    ],
)
def test_file_names_are_case_insensitive_and_non_languages_refused(name: str, lang: str | None) -> None:
    assert language_of_file(name) == lang


@pytest.mark.parametrize("code", ["und", "zxx", "mul", "mis", "qaa", "qtz", "root", "und-Latn", "UND", "und_US"])
def test_non_languages(code: str) -> None:
    assert not_a_language(code) and language_code(code) is None
    assert not_a_language("en") is None and not_a_language("qua") is None  # Quapaw is a language


@pytest.mark.parametrize("name", ["und.txt", "zxx.txt", "mul.devtest", "devtest.mis"])
def test_non_language_file_is_refused_with_a_reason(name: str, tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    _write(root / "en.txt", ["a house", "a tree"])
    _write(root / name, ["a house", "a tree"])
    kw = _keywords(tmp_path / "kw.tsv", [("house", "house"), ("tree", "tree")])
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(root),
            "--pivot",
            "en",
            "--keywords",
            str(kw),
            "--out",
            str(tmp_path / "x.parquet"),
            "--min-per-concept",
            "2",
        ],
    )
    _one_error(result, f"{root / name}: the file name says ", "is not a language (ISO 639")


def test_language_options_and_lexicon_codes_in_any_case(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    _write(root / "en.txt", ["a house", "the house", "a tree", "the tree"])
    _write(root / "AR.txt", ["بيت", "البيت", "شجرة", "الشجرة"])
    _write(root / "de.txt", ["Haus", "Haus", "Baum", "Baum"])
    kw = _keywords(tmp_path / "kw.tsv", [("house", "house"), ("tree", "tree")])
    out = tmp_path / "p.parquet"
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(root),
            "--pivot",
            "EN",
            "--keywords",
            str(kw),
            "--out",
            str(out),
            "--languages",
            "EN,AR",
            "--min-per-concept",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    from precompute.inputs.concepts import load_concept_set

    assert load_concept_set(out).languages["lang"].to_list() == ["ar", "en"]
    lexicon = _lexicon(
        tmp_path / "l.tsv",
        [("house", "EN", "house"), ("tree", "En", "tree"), ("house", "ar", "بيت"), ("tree", "AR", "شجرة")],
    )
    assert sorted(load_lexicon(lexicon).forms) == ["ar", "en"]


@pytest.mark.parametrize(
    "args, says",
    [
        (["--pivot", "und"], "--pivot: 'und' is not a language (ISO 639 'undetermined')"),
        (["--pivot", "xx"], "--pivot: unknown language code 'xx'"),
        (["--pivot", "en", "--languages", "en,zxx"], "--languages: 'zxx' is not a language"),
        (["--pivot", "en", "--languages", "en,xx,yy"], "--languages: unknown language code 'xx' (and 1 more)"),
        (["--pivot", "EN", "--languages", "de"], "--languages de: leaves out the pivot language 'EN'; add it"),
    ],
)
def test_bad_language_options(args: list[str], says: str, tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    _write(root / "en.txt", ["a house", "a tree"])
    _write(root / "de.txt", ["Haus", "Baum"])
    kw = _keywords(tmp_path / "kw.tsv", [("house", "house"), ("tree", "tree")])
    result = runner.invoke(
        app,
        ["concepts", "from-parallel", str(root), "--keywords", str(kw), "--out", str(tmp_path / "x.parquet"), *args],
    )
    _one_error(result, says)


def test_lexicon_non_language_is_named(tmp_path: Path) -> None:
    path = _lexicon(tmp_path / "l.tsv", [("a", "en", "house"), ("b", "und", "tree"), ("c", "MUL", "cat")])
    with pytest.raises(CorpusError) as exc:
        load_lexicon(path)
    assert exc.value.problems == [
        (
            f"{path}: line 3, column 2 ('lang'): 'und' is not a language (ISO 639 'undetermined'); give the language's "
            "own code"
        ),
        (
            f"{path}: line 4, column 2 ('lang'): 'MUL' is not a language (ISO 639 'multiple languages'); give the "
            "language's own code"
        ),
    ]


def test_concept_set_with_und_is_refused() -> None:
    frame = pl.DataFrame({"concept_id": ["a", "a", "b", "b"], "lang": ["und"] * 4, "text": ["x", "y", "z", "w"]})
    with pytest.raises(ConceptSetError, match=r"row 1, .*'und' is not a language \(ISO 639 'undetermined'\)"):
        concept_set_from_frame(frame, where="set.tsv")


@pytest.mark.parametrize(
    "code, says",
    [
        ("en ", "language code 'en ' has spaces in it; write 'en'"),
        (" de", "write 'de'"),
        ("", "empty"),
        ("zxx", "not a language"),
    ],
)
def test_language_code_problem_for_config_keys(code: str, says: str) -> None:
    problem = language_code_problem(code)
    assert problem and says in problem
    assert language_code_problem("EN") is None and language_code_problem("zh_hant") is None


# --- odd files ------------------------------------------------------------------------------------------


def test_cr_only_line_endings_are_named(parallel: Path, tmp_path: Path) -> None:
    kw = tmp_path / "kw.tsv"
    kw.write_bytes(b"concept_id\tpattern\rhouse\thaus\rroad\tstrasse\r")
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(parallel),
            "--pivot",
            "de",
            "--keywords",
            str(kw),
            "--out",
            str(tmp_path / "x.parquet"),
        ],
    )
    _one_error(result, f"{kw}: line 1, column 19: carriage return (CR) inside the line")
    good = _keywords(tmp_path / "good.tsv", [("house", "haus"), ("road", "straße")])
    de = parallel / "de.txt"
    de.write_bytes(de.read_bytes().replace(b"\n", b"\r"))
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(parallel),
            "--pivot",
            "de",
            "--keywords",
            str(good),
            "--out",
            str(tmp_path / "x.parquet"),
            "--min-per-concept",
            "2",
        ],
    )
    _one_error(result, f"{de}: line 1, column 21: carriage return (CR) inside the line")


def test_duplicated_header_column_is_named(parallel: Path, tmp_path: Path) -> None:
    kw = _tsv(tmp_path / "kw.tsv", "concept_id\tpattern\tpattern", ["house\thaus\t", "road\tstraße\t"])
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(parallel),
            "--pivot",
            "de",
            "--keywords",
            str(kw),
            "--out",
            str(tmp_path / "x.parquet"),
        ],
    )
    _one_error(result, f"{kw}: line 1, column 3: column 'pattern' appears twice in the header (also column 2)")


def test_encodings_bom_crlf(parallel: Path, tmp_path: Path) -> None:
    kw = _keywords(tmp_path / "kw.tsv", [("house", "haus|häuser"), ("road", "straße")])
    de = parallel / "de.txt"
    text = de.read_text(encoding="utf-8")
    de.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))  # BOM + CRLF: fine
    assert build_from_parallel(parallel, "de", kw, min_per_concept=2).frame.height > 0
    de.write_bytes(text.encode("utf-16"))
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(parallel),
            "--pivot",
            "de",
            "--keywords",
            str(kw),
            "--out",
            str(tmp_path / "x.parquet"),
        ],
    )
    _one_error(result, f"{de}: line 1, column 1: a UTF-16 file", "convert it to UTF-8")
    de.write_bytes(unicodedata.normalize("NFC", text).encode("latin-1"))
    result = runner.invoke(
        app,
        [
            "concepts",
            "from-parallel",
            str(parallel),
            "--pivot",
            "de",
            "--keywords",
            str(kw),
            "--out",
            str(tmp_path / "x.parquet"),
        ],
    )
    _one_error(result, f"{de}: line 1, column 9: not UTF-8 (byte 0xdf)")


def test_rtl_pivot_with_marks(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    # Arabic with a diacritic (fatha, a mark) and an RLM; Hebrew as the second language.
    _write(root / "ar.txt", ["\u200fهذا بيت.", "بيتٌ كبير", "بيتي", "بيت جميل", "شجرة هنا", "الشجرة"])
    _write(root / "he.txt", ["זה בית.", "בית גדול", "הבית שלי", "בית יפה", "עץ כאן", "העץ"])
    kw = _keywords(tmp_path / "kw.tsv", [("house", "بيت"), ("tree", "شجرة|الشجرة")])
    frame = build_from_parallel(root, "ar", kw, min_per_concept=2).frame
    ar = frame.filter((pl.col("concept_id") == "house") & (pl.col("lang") == "ar"))["text"].to_list()
    assert ar == ["\u200fهذا بيت.", "بيت جميل"]  # not بيتٌ (a mark follows) nor بيتي (a letter follows)
    he = frame.filter((pl.col("concept_id") == "house") & (pl.col("lang") == "he"))["text"].to_list()
    assert he == ["זה בית.", "בית יפה"]


def test_large_pivot_stays_fast(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    n = 100_000
    en = [f"Line {i}: " + ("a Straße and a tree.", "the house by the river.", "a TREE.")[i % 3] for i in range(n)]
    _write(root / "en.txt", en)
    _write(root / "de.txt", [f"Zeile {i}." for i in range(n)])
    kw = _keywords(tmp_path / "kw.tsv", [("house", "houses?"), ("tree", "trees?"), ("road", "straße|road")])
    started = time.perf_counter()
    result = build_from_parallel(root, "en", kw, max_per_concept=50)
    assert time.perf_counter() - started < 30
    assert result.provenance["dropped"]["lines_with_several_concepts"] == n // 3 + 1


def test_subset_with_a_spaced_code_says_why() -> None:
    from precompute.inputs.concepts import DEFAULT_CONCEPT_SET, load_concept_set

    cs = load_concept_set(DEFAULT_CONCEPT_SET)
    with pytest.raises(
        ConceptSetError,
        match=r"unknown language\(s\) 'en ' .*; language code 'en ' has spaces in "
        r"it; write 'en'",
    ):
        cs.subset(["en ", "de"])
    assert cs.subset(["EN", "DE"]).languages["lang"].to_list() == ["de", "en"]
