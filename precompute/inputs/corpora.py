"""Build natural-sentence concept sets from real corpora: a parallel corpus, or monolingual text and a lexicon.

The built-in CLDR set (:mod:`precompute.inputs.cldr`) is short phrases; the paper's concepts ("earthquake",
"joy", "house") live in natural sentences. Two common real sources give those, and this module turns each
into a concept set that :func:`precompute.inputs.concepts.load_concept_set` accepts:

``from-parallel`` (:func:`build_from_parallel`): a directory with one UTF-8 file per language, line-aligned
(FLORES+, Tatoeba or OPUS exports): line *i* of every file is the same sentence. A keyword file names each
concept by a regular expression matched on the *pivot* language. Rules:

* matching is case-insensitive and respects word boundaries: text and patterns are put in Unicode NFC and
  case-folded (``str.casefold``: ``Straße`` = ``STRASSE`` = ``strasse``; İ folds to i plus a combining dot
  above, and in Turkish and Azerbaijani, Turkic folding makes I <-> ı and İ <-> i); a match may not start
  right after, nor end right before, a letter, digit or underscore (``\\w``), a combining mark (category M:
  Hindi कम is not in कमी, ``cafe`` is not in an NFD "café") or a ZWNJ/ZWJ, so ``house`` finds "House" and
  "house." but not "household"; for a pivot written without spaces (Chinese, Japanese, Thai, ...) patterns
  match character sequences (that do not end before a combining mark);
* each pattern is checked on its own line: inline global flags (``(?i)``) are refused (they cannot be scoped
  to one pattern), groups and backreferences stay within their pattern;
* a pivot line that matches the patterns of two or more concepts is **dropped** (it would be a positive of
  one concept and a negative, containing the concept, of the other); so is an aligned line that is empty
  in some language, or whose text in some language repeats one already taken for the same concept;
* every remaining pivot match makes that aligned line a context of its concept **in every language**, so a
  concept's contexts are translations of each other and every concept has the same count in every language;
* per concept at most ``max_per_concept`` lines are kept (a seeded, order-independent sample, then kept in
  corpus order), and a concept with fewer than ``min_per_concept`` lines is left out: the cap keeps frequent
  concepts from dominating, so counts across concepts stay within [min, max];
* no span is stored: the contexts are whole sentences and the pipeline pools over the whole sentence (with
  ``pooling = "span"`` a context without a span falls back to the mean over all its tokens, see
  :mod:`precompute.extract`; ``pooling = "mean"`` does that for every context). Marking the keyword only in
  the pivot would pool the pivot differently from its translations.

``from-corpus`` (:func:`build_from_corpus`): one monolingual UTF-8 file per language (one sentence per line,
not aligned) and a lexicon of surface forms per concept and language. Forms are matched as patterns are
(NFC, case-folded, on word boundaries), and in languages written without spaces on character sequences
(leftmost, longest form first, so 日本語 "Japanese" is not a mention of 日本 "Japan" when both are in the
lexicon); the stored text is the line in NFC, and the span is the first mention in it, in Python string
offsets (code points) of that stored text. A line mentioning two concepts is dropped; per
(concept, language) at most ``max_per_concept`` lines are kept, and each concept gets the same count in
every language where it has at least ``min_per_concept`` (the smallest of those counts, capped).

File names map to language codes: ``<code>.txt`` with an ISO 639-1/639-3 code or a FLORES code, FLORES
names such as ``spa_Latn.devtest`` / ``devtest.spa_Latn`` (ISO 639-3 mapped to the CLDR code, ``es``; a
script other than the language's usual one is kept: ``zho_Hant`` gives ``zh-Hant``). Hidden files are
ignored.

Both builders record provenance (each source file's name, line count and SHA-256, the keyword or lexicon
file's SHA-256, the licence the user gives, the rules and the command) in the Parquet metadata, and every
problem of an input is one line naming its file, line and column.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from precompute.inputs.concepts import ConceptSetError, concept_set_from_frame, is_valid_language
from precompute.inputs.langcodes import canonical_language, not_a_language

DEFAULT_MAX_PER_CONCEPT = 100
DEFAULT_MIN_PER_CONCEPT = 5
NO_LICENCE = "not given (pass --licence)"

#: Languages written without spaces between words: their patterns and forms match character sequences.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "dz", "yue", "wuu"})

_FLORES_SPLITS = ("devtest", "dev", "test")
# spa_Latn, apc_Arab_sout3123; any case (SPA_LATN, eng_latn): BCP 47 and ISO 639 are case-insensitive
_FLORES_CODE = re.compile(r"^([a-z]{2,3})_([a-z]{4})(?:_[a-z]{4}\d{4})?$", re.IGNORECASE)
MAX_PROBLEMS = 200
#: The matching rule, as the provenance records it.
MATCHING_RULE = (
    "text and patterns in Unicode NFC, case-folded with str.casefold (Turkic folding for tr/az: I-ı, İ-i); "
    "word boundaries: no letter, digit, underscore, combining mark (M*), ZWNJ or ZWJ right before or after a "
    "match; without spaces (zh, ja, th, ...) character sequences that do not end before a combining mark"
)


class CorpusError(ConceptSetError):
    """A corpus, keyword or lexicon file that cannot be used; ``problems`` names file, line and column."""


def _raise_problems(problems: list[str]) -> None:
    if not problems:
        return
    first = problems[0]
    if len(problems) > 1:
        first += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    raise CorpusError(first, problems[:MAX_PROBLEMS])


# --- languages from file names ----------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def language_code(code: str) -> str | None:
    """The CLDR code of an ISO 639-1/639-3 or FLORES code (``spa_Latn`` -> ``es``), or None if unknown.

    Case does not matter (``EN``, ``SPA_LATN``, ``pt-br``); codes that name no language (``und``, ``zxx``,
    ``mul``, ``mis``, ``qaa``-``qtz``: :func:`~precompute.inputs.langcodes.not_a_language`) give None.
    """
    from babel.core import get_global, parse_locale

    if not code.isascii() or not_a_language(code):
        return None
    match = _FLORES_CODE.match(code)
    base, script = (match.group(1).lower(), match.group(2).title()) if match else (code.lower(), None)
    if not match and ("_" in code or "-" in code):  # a locale such as zh_Hant or pt-BR
        spelled = canonical_language(code)
        return spelled if is_valid_language(spelled) else None
    if not re.fullmatch(r"[a-z]{2,3}", base):
        return None
    if len(base) == 2 and is_valid_language(base):
        lang = base
    else:  # ISO 639-3 (spa, cmn, arb) to the CLDR code (es, zh, ar)
        lang = get_global("language_aliases").get(base, base)
    if not is_valid_language(lang):
        return None
    if script:
        likely = get_global("likely_subtags").get(lang.split("_")[0])
        usual = parse_locale(likely)[2] if likely else None
        if script != usual and is_valid_language(f"{lang}_{script}"):
            lang = f"{lang}_{script}"
    return lang.replace("_", "-")  # BCP 47 spelling (zh-Hant), the one concept sets and stores use


def language_of_file(name: str) -> str | None:
    """The language of a corpus file from its name (``es.txt``, ``spa_Latn.devtest``, ``devtest.spa_Latn``)."""
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        return None
    if suffix.lower() in ("txt", *_FLORES_SPLITS):
        return language_code(stem)
    if stem.lower() in _FLORES_SPLITS:
        return language_code(suffix)
    return None


def _named_code(name: str) -> str:
    """The code part of a corpus file name (``und`` of ``und.txt``), for messages."""
    stem, _, suffix = name.rpartition(".")
    return suffix if stem.lower() in _FLORES_SPLITS else stem


def uses_spaces(lang: str) -> bool:
    """False for languages written without spaces between words (match character sequences there)."""
    return lang.replace("-", "_").split("_")[0] not in NO_SPACE_LANGUAGES


def language_refusal(given: str) -> str:
    """Why ``given`` is not a language code :func:`language_code` maps: not a language (``und``), or unknown."""
    return not_a_language(given) or f"unknown language code {given!r}"


# --- Unicode-aware matching: NFC, case folding, word boundaries that respect combining marks --------------

#: Languages with Turkic case folding (Unicode CaseFolding.txt, status T): I <-> ı and İ <-> i.
TURKIC_LANGUAGES = frozenset({"tr", "az"})


def nfc(text: str) -> str:
    """``text`` in Unicode normalisation form C (composed): the form every stored text and pattern is in."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def turkic(lang: str) -> bool:
    return lang.replace("-", "_").split("_")[0] in TURKIC_LANGUAGES


def fold(text: str, turkic_rules: bool = False) -> str:
    """Full Unicode case folding (``str.casefold``), character by character: ß and ẞ -> ``ss``, İ -> ``i``
    plus U+0307 COMBINING DOT ABOVE, I -> ``i``. With ``turkic_rules`` (Turkish, Azerbaijani) I -> ``ı`` and
    İ -> ``i`` first, as Unicode's Turkic folding does."""
    if turkic_rules:
        text = text.replace("I", "ı").replace("İ", "i")
    return text.casefold()


def fold_with_offsets(text: str, turkic_rules: bool = False) -> tuple[str, list[int] | None]:
    """``fold(text)`` and, where folding changed the length, the index in ``text`` of every folded character
    (None: the offsets are the same). A match ``[s, e)`` in the folded text is ``[owner[s], owner[e-1] + 1)``
    in ``text`` if ``s`` starts and ``e`` ends one character's folding."""
    folded = fold(text, turkic_rules)
    if len(folded) == len(text):  # every character folds to one: the offsets agree
        return folded, None
    owner: list[int] = []
    for i, char in enumerate(text):
        owner.extend([i] * len(fold(char, turkic_rules)))
    return folded, owner


def original_span(owner: list[int] | None, start: int, end: int) -> tuple[int, int] | None:
    """The span in the unfolded text of the folded span ``[start, end)``; None if it cuts a character's folding
    (``s`` of the ``ss`` of ß)."""
    if owner is None:
        return start, end
    if (start > 0 and owner[start] == owner[start - 1]) or (end < len(owner) and owner[end] == owner[end - 1]):
        return None
    return owner[start], owner[end - 1] + 1


@lru_cache(maxsize=1)
def _marks() -> str:
    """A character-class body of every combining mark (general category M: Mn, Mc, Me)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


def _word_char(spaced: bool) -> str:
    """The class of characters a match may not touch: ``\\w``, combining marks, ZWNJ, ZWJ (spaced), or marks."""
    return rf"[\w{_marks()}\u200c\u200d]" if spaced else f"[{_marks()}]"


@lru_cache(maxsize=2)
def word_char(spaced: bool) -> re.Pattern[str]:
    return re.compile(_word_char(spaced))


def boundaries(spaced: bool) -> tuple[str, str]:
    """The lookbehind and lookahead around every pattern or form.

    Spaced languages: no letter, digit, underscore (``\\w``), combining mark, ZWNJ or ZWJ right before the
    match or right after it, so Hindi कम is not found in कमी (its vowel sign ी is a mark) nor ``cafe`` in an
    NFD ``café``. Languages without spaces: only no combining mark right after, so a match never ends inside
    a character cluster (Thai ก in กิ).
    """
    inner = _word_char(spaced)
    return (rf"(?<!{inner})" if spaced else ""), rf"(?!{inner})"


class PatternError(ValueError):
    """A keyword pattern that cannot be case-folded as written (the message says why)."""


_FLAGS = set("aiLmsux-")


def fold_pattern(pattern: str, turkic_rules: bool = False) -> str:
    """``pattern`` (a Python regular expression, NFC) with its literal characters case-folded, to match the
    folded text: ``Straße`` -> ``stra(?:ss)e``, ``[A-Z]`` -> ``[a-z]``, ``\\u00C9`` -> ``é``. Escapes such as
    ``\\w`` or ``\\S``, group names, flags and backreferences are kept as written.

    Raises :class:`PatternError` for a character class holding a character whose folding is several
    characters (``[ß]`` would never match the folded ``ss``).
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False

    def literal(char: str, written: str) -> str:
        folded = fold(char, turkic_rules)
        if folded == char:
            return written
        if in_class:
            if len(folded) != 1:
                raise PatternError(
                    f"the character class holds {char!r}, which case-folds to {folded!r} ({len(folded)} characters), "
                    f"so it can never match; write (?:{folded}|...) outside the class"
                )
            return re.escape(folded)
        return re.escape(folded) if len(folded) == 1 else f"(?:{re.escape(folded)})"

    def upto(end_char: str, start: int) -> int:
        j = pattern.find(end_char, start)
        return n if j < 0 else j + 1

    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            d = pattern[i + 1]
            width = {"x": 2, "u": 4, "U": 8}.get(d, 0)
            digits = pattern[i + 2 : i + 2 + width]
            if width and len(digits) == width and re.fullmatch(r"[0-9a-fA-F]+", digits) and int(digits, 16) < 0x110000:
                out.append(literal(chr(int(digits, 16)), pattern[i : i + 2 + width]))
                i += 2 + width
            elif d == "N" and pattern.startswith("{", i + 2):
                j = upto("}", i + 3)
                written = pattern[i:j]
                try:
                    out.append(literal(unicodedata.lookup(written[3:-1]), written))
                except KeyError:
                    out.append(written)  # an unknown name: re.compile reports it
                i = j
            elif d.isascii() and d.isalnum():  # \w \S \b \A \Z \1 \g<...>: as written
                out.append(pattern[i : i + 2])
                i += 2
            else:  # an escaped literal: \. \( \ß
                out.append(literal(d, pattern[i : i + 2]))
                i += 2
        elif in_class:
            if c == "]":
                in_class = False
                out.append(c)
            else:
                out.append(literal(c, c))
            i += 1
        elif c == "[":
            in_class = True
            j = i + 1
            if pattern.startswith("^", j):
                j += 1
            if pattern.startswith("]", j):  # "[]abc]": the first "]" is literal
                j += 1
            out.append(pattern[i:j])
            i = j
        elif c == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2 :]
            if rest.startswith(("P<", "P=", "#", "(")):  # group name, backreference, comment, condition
                j = upto(">" if rest.startswith("P<") else ")", i + 3)
            elif rest.startswith(("<=", "<!")):
                j = i + 4
            elif rest.startswith(("=", "!", ":", ">")):
                j = i + 3
            else:  # flags: (?i) (?x:...) (?-i:...)
                j = i + 2
                while j < n and pattern[j] in _FLAGS:
                    j += 1
                if j < n and pattern[j] in ":)":
                    j += 1
            out.append(pattern[i:j])
            i = j
        elif c == "{":
            m = re.compile(r"\{\d*(?:,\d*)?\}").match(pattern, i)
            j = m.end() if m else i + 1
            out.append(pattern[i:j])
            i = j
        else:
            out.append(literal(c, c))
            i += 1
    return "".join(out)


class Matcher:
    """Case-folded, NFC, word-boundary matching of one concept's patterns (or of a language's forms).

    ``regexes`` run on the folded text and end in the lookahead of :func:`boundaries`; the start boundary
    (in spaced languages) is checked here, on the character before a match, so that the regular expression
    starts with the pattern and Python's literal-prefix search stays fast. Patterns without groups are joined
    into one regular expression; patterns with groups keep their own (joined, ``\\1`` would refer to another
    pattern's group, and two patterns could not both name a group ``(?P<x>...)``). An empty match (``\\b``,
    ``(?=x)``) is no mention.
    """

    def __init__(self, regexes: list[re.Pattern[str]], turkic_rules: bool = False, spaced: bool = True) -> None:
        self.regexes = regexes
        self.turkic_rules = turkic_rules
        self.word_start = word_char(True) if spaced else None

    def search_folded(self, folded: str) -> bool:
        for regex in self.regexes:
            pos = 0
            while (m := regex.search(folded, pos)) is not None:
                start = m.start()
                if m.end() > start and (
                    self.word_start is None or start == 0 or not self.word_start.match(folded, start - 1)
                ):
                    return True
                pos = start + 1
        return False

    def search(self, text: str) -> bool:
        """True if ``text`` (any normalisation, any case) holds a match."""
        return self.search_folded(fold(nfc(text), self.turkic_rules))


@dataclass(frozen=True)
class CorpusFile:
    """One language's file of a corpus directory."""

    path: Path
    lang: str


def corpus_files(corpus_dir: Path, languages: list[str] | None = None) -> list[CorpusFile]:
    """The language files of ``corpus_dir`` (sorted by language), optionally only ``languages``."""
    if not corpus_dir.exists():
        raise CorpusError(f"{corpus_dir}: no such directory")
    if not corpus_dir.is_dir():
        raise CorpusError(f"{corpus_dir}: not a directory (give the directory that holds one file per language)")
    problems: list[str] = []
    by_lang: dict[str, Path] = {}
    for path in sorted(corpus_dir.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        lang = language_of_file(path.name)
        refused = not_a_language(_named_code(path.name)) if lang is None else None
        if refused:
            problems.append(f"{path}: the file name says {refused}")
        elif lang is None:
            problems.append(
                f"{path}: cannot tell the language from the file name (use <lang>.txt, e.g. es.txt, or a "
                "FLORES name such as spa_Latn.devtest); move other files out of the directory"
            )
        elif lang in by_lang:
            problems.append(f"{path}: a second file for language {lang!r} (the first is {by_lang[lang].name})")
        else:
            by_lang[lang] = path
    _raise_problems(problems)
    if not by_lang:
        raise CorpusError(f"{corpus_dir}: no language files (expected <lang>.txt or FLORES names)")
    if languages:
        unknown = [given for given in languages if language_code(given) is None]
        if unknown:
            raise CorpusError(
                f"--languages: {language_refusal(unknown[0])}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            )
        wanted = {language_code(x) or x: x for x in languages}
        missing = [given for code, given in wanted.items() if code not in by_lang]
        if missing:
            raise CorpusError(
                f"{corpus_dir}: no file for language(s) {', '.join(missing)} (have: {', '.join(sorted(by_lang))})"
            )
        by_lang = {code: by_lang[code] for code in wanted}
    return [CorpusFile(path, lang) for lang, path in sorted(by_lang.items())]


# --- reading text files line by line, every problem with its line and column -----------------------------


def iter_lines(path: Path, problems: list[str]) -> Iterator[tuple[int, str | None]]:
    """Yield ``(line number, text without the line break)``; text is None where the line is unusable.

    Undecodable bytes and NUL characters are recorded in ``problems`` as ``file: line L, column C``
    (column in characters, 1-based). A UTF-8 byte-order mark at the start of the file is dropped.
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        problems.append(f"{path}: cannot read ({exc.strerror or exc})")
        return
    with handle:
        for number, raw in enumerate(handle, start=1):
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if number == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
                problems.append(
                    f"{path}: line 1, column 1: a UTF-16 file (byte-order mark 0x{raw[:2].hex()}); "
                    "convert it to UTF-8, e.g. iconv -f UTF-16 -t UTF-8"
                )
                return
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(raw[: exc.start].decode("utf-8", errors="replace")) + 1
                problems.append(f"{path}: line {number}, column {column}: not UTF-8 (byte 0x{raw[exc.start]:02x})")
                yield number, None
                continue
            if "\x00" in text:
                problems.append(f"{path}: line {number}, column {text.index(chr(0)) + 1}: NUL character")
                yield number, None
                continue
            if "\r" in text:  # CR-only (classic Mac) line endings make the whole file one line
                problems.append(
                    f"{path}: line {number}, column {text.index(chr(13)) + 1}: carriage return (CR) inside the "
                    "line; lines must end in LF or CRLF (convert CR-only line endings, e.g. tr '\\r' '\\n')"
                )
                yield number, None
                continue
            yield number, text


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class TsvRow:
    """One data line of a keyword or lexicon file: its line number and its fields by column name."""

    line: int
    fields: dict[str, str]


def _line_of(problem: str) -> int:
    match = re.search(r": line (\d+)", problem)
    return int(match.group(1)) if match else 0


def read_tsv(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...], problems: list[str]
) -> tuple[list[TsvRow], dict[str, int]]:
    """Read a small TSV file with a header line; blank lines and lines starting with ``#`` are skipped.

    Returns the rows and the 1-based column number of every column (for messages). Lines that cannot be
    read (encoding, field count) are recorded in ``problems`` so that the caller reports them together with
    its own; a file without a usable header raises :class:`CorpusError` at once.
    """
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    if path.is_dir():
        raise CorpusError(f"{path}: is a directory, not a TSV file")
    header: list[str] | None = None
    columns: dict[str, int] = {}
    rows: list[TsvRow] = []
    for number, text in iter_lines(path, problems):
        if text is None or not text.strip() or text.lstrip().startswith("#"):
            continue
        fields = text.split("\t")
        if header is None:
            header = [f.strip() for f in fields]
            columns = {name: i + 1 for i, name in enumerate(header)}
            for name in required:
                if name not in columns:
                    problems.append(
                        f"{path}: line {number}: missing column {name!r} in the header "
                        f"(found: {', '.join(map(repr, header))}; columns are separated by tabs)"
                    )
            for i, name in enumerate(header):
                if header.index(name) != i:
                    problems.append(
                        f"{path}: line {number}, column {i + 1}: column {name!r} appears twice in the header "
                        f"(also column {header.index(name) + 1}); keep one"
                    )
                elif name not in required + optional:
                    problems.append(
                        f"{path}: line {number}, column {i + 1}: unknown column {name!r} "
                        f"(expected {', '.join(required + optional)})"
                    )
            if problems:
                _raise_problems(problems)
            continue
        if len(fields) != len(header):
            problems.append(f"{path}: line {number}: {len(fields)} fields where the header has {len(header)}")
            continue
        rows.append(TsvRow(number, {name: value.strip() for name, value in zip(header, fields)}))
    if header is None and not problems:
        problems.append(f"{path}: empty file (expected a header line: {chr(9).join(required)})")
    elif not rows and not problems:
        problems.append(f"{path}: no data lines after the header")
    if header is None or not rows:
        _raise_problems(problems)
    return rows, columns


def _raise_sorted(problems: list[str]) -> None:
    """Raise every problem of a file, in line order (the first one leads the message)."""
    _raise_problems(sorted(problems, key=_line_of))


def _at(path: Path, row: TsvRow, columns: dict[str, int], name: str) -> str:
    return f"{path}: line {row.line}, column {columns[name]} ({name!r})"


def _concept_meta(
    path: Path, rows: list[TsvRow], columns: dict[str, int], problems: list[str]
) -> dict[str, dict[str, str | None]]:
    """label and category of every concept; one value each (a conflict is a problem)."""
    meta: dict[str, dict[str, str | None]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for row in rows:
        cid = row.fields["concept_id"]
        if not cid:
            continue
        entry = meta.setdefault(cid, {"label": None, "category": None})
        for name in ("label", "category"):
            value = row.fields.get(name) or None
            if value is None:
                continue
            if entry[name] is None:
                entry[name] = value
                first_line[(cid, name)] = row.line
            elif entry[name] != value:
                problems.append(
                    f"{_at(path, row, columns, name)}: concept {cid!r} has {name} {value!r} here but "
                    f"{entry[name]!r} on line {first_line[(cid, name)]}"
                )
    return meta


# --- keyword and lexicon files ---------------------------------------------------------------------------


@dataclass
class KeywordConcept:
    """A concept of a keyword file: its patterns (alternatives), matched by ``regex`` (a :class:`Matcher`:
    NFC, case-folded, on word boundaries; ``regex.search(text)`` is True if a pivot line names the concept)."""

    concept_id: str
    patterns: list[str]
    regex: Matcher
    label: str | None
    category: str | None


def _compile_pattern(pattern: str, spaced: bool, turkic_rules: bool) -> tuple[re.Pattern[str] | None, str | None]:
    """The folded regular expression of one keyword pattern (with its end boundary: :class:`Matcher` checks
    the start), or why it cannot be used."""
    try:
        alone = re.compile(pattern)
    except re.error as exc:
        where = f" at character {exc.pos + 1} of the pattern" if exc.pos is not None else ""
        return None, f"invalid regular expression {pattern!r}{where}: {exc.msg}"
    if alone.fullmatch(""):
        return None, f"pattern {pattern!r} matches the empty string"
    flags = re.match(r"\(\?[aiLmsux]+\)", pattern)
    try:
        re.compile(f"(?:{pattern})")
    except re.error:  # Python 3.11+: a global flag anywhere but the very start, i.e. inside the wrapper
        letters = flags.group(0)[2:-1] if flags else "x"
        return None, (
            f"pattern {pattern!r} sets inline global flags{f' {flags.group(0)}' if flags else ''}, "
            f"which cannot be scoped to one pattern; write ({'?'}{letters}:...) around the part they are "
            "for, or leave them out (matching is always case-insensitive, (?i) is not needed)"
        )
    try:
        folded = fold_pattern(nfc(pattern), turkic_rules)
    except PatternError as exc:
        return None, f"pattern {pattern!r}: {exc}"
    after = boundaries(spaced)[1]
    try:
        return re.compile(f"(?:{folded}){after}"), None
    except re.error as exc:  # e.g. a lookbehind whose width case folding changed: (?<=ß|a)
        return None, f"pattern {pattern!r} cannot be matched case-folded (as {folded!r}): {exc.msg}"


def load_keywords(path: Path, pivot: str) -> dict[str, KeywordConcept]:
    """Read ``concept_id``, ``pattern`` (, ``label``, ``category``); several lines of a concept are alternatives.

    Every pattern is checked on its own, so a problem names its line: invalid, empty-matching, inline global
    flags (``(?i)``: they cannot be scoped to one alternative), or a class that case folding breaks.
    """
    problems: list[str] = []
    rows, columns = read_tsv(path, ("concept_id", "pattern"), ("label", "category"), problems)
    spaced = uses_spaces(pivot)
    turkic_rules = turkic(pivot)
    patterns: dict[str, list[str]] = {}
    compiled_of: dict[str, list[re.Pattern[str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for row in rows:
        cid, pattern = row.fields["concept_id"], row.fields["pattern"]
        if not cid:
            problems.append(f"{_at(path, row, columns, 'concept_id')}: empty concept id")
        if not pattern:
            problems.append(f"{_at(path, row, columns, 'pattern')}: empty pattern")
            continue
        compiled, why = _compile_pattern(pattern, spaced, turkic_rules)
        if compiled is None:
            problems.append(f"{_at(path, row, columns, 'pattern')}: {why}")
            continue
        if (cid, nfc(pattern)) in seen:
            problems.append(f"{_at(path, row, columns, 'pattern')}: duplicate of line {seen[(cid, nfc(pattern))]}")
            continue
        seen[(cid, nfc(pattern))] = row.line
        if cid:
            patterns.setdefault(cid, []).append(pattern)
            compiled_of.setdefault(cid, []).append(compiled)
    meta = _concept_meta(path, rows, columns, problems)
    _raise_sorted(problems)
    out: dict[str, KeywordConcept] = {}
    for cid, pats in patterns.items():
        regexes = compiled_of[cid]
        if len(regexes) > 1 and not any(r.groups for r in regexes):  # one search per line instead of several
            after = boundaries(spaced)[1]
            bodies = [r.pattern[: -len(after)] for r in regexes]
            regexes = [re.compile(f"(?:{'|'.join(bodies)}){after}")]
        matcher = Matcher(regexes, turkic_rules, spaced)
        out[cid] = KeywordConcept(cid, pats, matcher, meta[cid]["label"], meta[cid]["category"])
    if len(out) < 2:
        raise CorpusError(f"{path}: {len(out)} concept(s); at least 2 are needed (negatives for AP)")
    return out


@dataclass
class Lexicon:
    """Surface forms per language: ``forms[lang]`` maps a form, NFC and case-folded (:func:`fold`, Turkic in
    Turkish and Azerbaijani), to its concept; ``regexes[lang]`` finds them in folded text (:func:`fold`)."""

    forms: dict[str, dict[str, str]]
    meta: dict[str, dict[str, str | None]]
    regexes: dict[str, re.Pattern[str]] = field(default_factory=dict)

    def key(self, lang: str, form: str) -> str:
        return fold(nfc(form), turkic(lang))

    def concept_of(self, lang: str, matched: str) -> str | None:
        """The concept of a matched form (the folded text a regex matched, or the text as written)."""
        table = self.forms.get(lang, {})
        return table.get(matched) or table.get(self.key(lang, matched))


def load_lexicon(path: Path) -> Lexicon:
    """Read ``concept_id``, ``lang``, ``form`` (, ``label``, ``category``); build one matcher per language."""
    problems: list[str] = []
    rows, columns = read_tsv(path, ("concept_id", "lang", "form"), ("label", "category"), problems)
    forms: dict[str, dict[str, str]] = {}
    where: dict[tuple[str, str], tuple[int, str]] = {}
    for row in rows:
        cid, given, form = row.fields["concept_id"], row.fields["lang"], row.fields["form"]
        if not cid:
            problems.append(f"{_at(path, row, columns, 'concept_id')}: empty concept id")
        lang = language_code(given) if given else None
        if not given:
            problems.append(f"{_at(path, row, columns, 'lang')}: empty language code")
        elif lang is None:
            problems.append(f"{_at(path, row, columns, 'lang')}: {language_refusal(given)}")
        if not form:
            problems.append(f"{_at(path, row, columns, 'form')}: empty form")
        elif unicodedata.category(nfc(form)[0])[0] == "M":
            problems.append(
                f"{_at(path, row, columns, 'form')}: form {form!r} starts with a combining mark "
                f"(U+{ord(nfc(form)[0]):04X}), so it can never start a word"
            )
            continue
        if not (cid and lang and form):
            continue
        key = fold(nfc(form), turkic(lang))
        if (lang, key) in where:
            line, other = where[(lang, key)]
            what = "duplicate of" if other == cid else f"the same form as concept {other!r} on"
            problems.append(f"{_at(path, row, columns, 'form')}: {form!r} is {what} line {line} ({lang})")
            continue
        where[(lang, key)] = (row.line, cid)
        forms.setdefault(lang, {})[key] = cid
    meta = _concept_meta(path, rows, columns, problems)
    _raise_sorted(problems)
    lexicon = Lexicon(forms, meta)
    for lang, table in forms.items():
        body = "|".join(re.escape(f) for f in sorted(table, key=lambda f: (-len(f), f)))  # longest first
        before, after = boundaries(uses_spaces(lang))
        lexicon.regexes[lang] = re.compile(f"{before}(?:{body}){after}")
    return lexicon


# --- selection -------------------------------------------------------------------------------------------


def _priority(seed: int, *key: object) -> int:
    """A deterministic pseudo-random rank: the lowest ranks are the kept sample, whatever else is in the file."""
    text = "/".join(str(k) for k in (seed, *key))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


@dataclass
class BuildResult:
    """A built concept set (rows ready for the Parquet file), its provenance and a report for the user."""

    frame: pl.DataFrame
    provenance: dict[str, Any]
    report: list[str]


FRAME_SCHEMA: dict[str, pl.DataType] = {
    "concept_id": pl.Utf8,
    "lang": pl.Utf8,
    "text": pl.Utf8,
    "span_start": pl.Int32,
    "span_end": pl.Int32,
    "category": pl.Utf8,
    "label": pl.Utf8,
    "source": pl.Utf8,
}


def _sources(files: list[CorpusFile], lines: dict[str, int]) -> list[dict[str, Any]]:
    return [{"file": f.path.name, "lang": f.lang, "lines": lines[f.lang], "sha256": file_sha256(f.path)} for f in files]


def _check_counts(options: dict[str, int]) -> None:
    if options["min_per_concept"] < 2:
        raise CorpusError(f"--min-per-concept must be at least 2 (got {options['min_per_concept']})")
    if options["max_per_concept"] < options["min_per_concept"]:
        raise CorpusError(
            f"--max-per-concept ({options['max_per_concept']}) is below --min-per-concept "
            f"({options['min_per_concept']})"
        )


def _base_provenance(method: str, licence: str | None, command: str) -> dict[str, Any]:
    from precompute import __version__

    return {
        "name": f"crossling natural-sentence concept set ({method})",
        "method": method,
        "builder": "precompute/inputs/corpora.py",
        "crossling_version": __version__,
        "license": licence or NO_LICENCE,
        "command": command,
        "span_units": "Unicode code points (Python str offsets) of the stored text, which is in NFC",
    }


def build_from_parallel(
    corpus_dir: Path,
    pivot: str,
    keywords_path: Path,
    *,
    max_per_concept: int = DEFAULT_MAX_PER_CONCEPT,
    min_per_concept: int = DEFAULT_MIN_PER_CONCEPT,
    seed: int = 0,
    languages: list[str] | None = None,
    licence: str | None = None,
    command: str = "precompute concepts from-parallel",
) -> BuildResult:
    """A concept set from a line-aligned corpus and pivot-language keyword patterns (rules: module docstring)."""
    _check_counts({"max_per_concept": max_per_concept, "min_per_concept": min_per_concept})
    pivot_code = language_code(pivot)
    if pivot_code is None:
        raise CorpusError(f"--pivot: {language_refusal(pivot)}")
    files = corpus_files(corpus_dir, languages)
    by_lang = {f.lang: f for f in files}
    if pivot_code not in by_lang:
        if languages and pivot_code in {f.lang for f in corpus_files(corpus_dir)}:
            raise CorpusError(f"--languages {','.join(languages)}: leaves out the pivot language {pivot!r}; add it")
        raise CorpusError(f"{corpus_dir}: no file for the pivot language {pivot!r} (have: {', '.join(by_lang)})")
    concepts = load_keywords(keywords_path, pivot_code)

    # Pass 1: the pivot. A line is a candidate of a concept if it matches that concept's patterns only.
    problems: list[str] = []
    candidates: dict[int, str] = {}
    n_multi = 0
    n_lines: dict[str, int] = {}
    pivot_path = by_lang[pivot_code].path
    pivot_turkic = turkic(pivot_code)
    last = 0
    for number, text in iter_lines(pivot_path, []):  # its problems are reported by pass 2
        last = number
        if not text:
            continue
        folded = fold(nfc(text), pivot_turkic)
        hit = [cid for cid, c in concepts.items() if c.regex.search_folded(folded)]
        if len(hit) == 1:
            candidates[number] = hit[0]
        elif len(hit) > 1:
            n_multi += 1
    n_lines[pivot_code] = last

    # Pass 2: every language's text of the candidate lines; the files must have the pivot's line count.
    texts: dict[str, dict[int, str]] = {}
    for f in files:
        got: dict[int, str] = {}
        last = 0
        for number, text in iter_lines(f.path, problems):
            last = number
            if number in candidates and text is not None:
                got[number] = nfc(text).strip()  # stored in NFC, the form the pivot was matched in
        n_lines[f.lang] = last
        texts[f.lang] = got
        if last != n_lines[pivot_code]:
            where = min(last, n_lines[pivot_code]) + 1
            problems.append(
                f"{f.path}: line {where}, column 1: {last} lines where the pivot {pivot_path.name} has "
                f"{n_lines[pivot_code]}; the files must be line-aligned (line i of every file the same sentence)"
            )
    _raise_problems(problems)

    # Drop aligned lines empty in some language, or repeating a text already taken for the concept.
    n_empty = n_repeat = 0
    per_concept: dict[str, list[int]] = {cid: [] for cid in concepts}
    taken: dict[tuple[str, str], set[str]] = {}
    for number in sorted(candidates):
        cid = candidates[number]
        row = {lang: texts[lang].get(number, "") for lang in by_lang}
        if any(not t for t in row.values()):
            n_empty += 1
            continue
        if any(t in taken.get((cid, lang), ()) for lang, t in row.items()):
            n_repeat += 1
            continue
        for lang, t in row.items():
            taken.setdefault((cid, lang), set()).add(t)
        per_concept[cid].append(number)

    kept: dict[str, list[int]] = {}
    too_few: dict[str, int] = {}
    for cid, numbers in per_concept.items():
        if len(numbers) < min_per_concept:
            too_few[cid] = len(numbers)
            continue
        chosen = sorted(numbers, key=lambda n: _priority(seed, cid, n))[:max_per_concept]
        kept[cid] = sorted(chosen)
    if len(kept) < 2:
        raise CorpusError(
            f"{keywords_path}: only {len(kept)} concept(s) match at least {min_per_concept} usable lines of "
            f"{pivot_path.name}; at least 2 are needed (lower --min-per-concept, or add patterns); lines per "
            "concept: "
            + ", ".join(f"{cid} {len(per_concept[cid])}" for cid in sorted(per_concept)[:20])
            + (f", ... ({len(per_concept)} concepts)" if len(per_concept) > 20 else "")
        )

    rows: list[dict[str, Any]] = []
    for cid in sorted(kept):
        c = concepts[cid]
        for lang in sorted(by_lang):
            name = by_lang[lang].path.name
            for number in kept[cid]:
                rows.append(
                    {
                        "concept_id": cid,
                        "lang": lang,
                        "text": texts[lang][number],
                        "span_start": None,
                        "span_end": None,
                        "category": c.category,
                        "label": c.label,
                        "source": f"{name}:{number}",
                    }
                )
    frame = pl.DataFrame(rows, schema=FRAME_SCHEMA)
    counts = {cid: len(v) for cid, v in sorted(kept.items())}
    provenance = _base_provenance("from-parallel", licence, command)
    provenance.update(
        {
            "corpus_dir": corpus_dir.name,
            "sources": _sources(files, n_lines),
            "pivot": pivot_code,
            "keywords": {
                "file": keywords_path.name,
                "sha256": file_sha256(keywords_path),
                "patterns": {cid: c.patterns for cid, c in sorted(concepts.items())},
            },
            "rules": {
                "matching": "regular expressions on the pivot; " + MATCHING_RULE,
                "several_concepts": "a pivot line matching two or more concepts is dropped",
                "empty_or_repeated": "an aligned line empty in some language, or repeating a text taken for the "
                "same concept, is dropped",
                "selection": "per concept the max_per_concept lowest sha256(seed/concept/line) ranks, in line order; "
                "concepts with fewer than min_per_concept lines are left out",
                "spans": "none: whole-sentence pooling",
                "max_per_concept": max_per_concept,
                "min_per_concept": min_per_concept,
                "seed": seed,
            },
            "lines_per_concept": counts,
            "dropped": {
                "lines_with_several_concepts": n_multi,
                "lines_empty_in_some_language": n_empty,
                "lines_repeating_a_text": n_repeat,
                "concepts_with_too_few_lines": too_few,
            },
        }
    )
    report = [
        (
            f"{len(files)} languages, pivot {pivot_code} ({pivot_path.name}, {n_lines[pivot_code]} lines); "
            f"{len(kept)} of {len(concepts)} concepts kept, {min(counts.values())}-{max(counts.values())} aligned "
            f"lines each (cap {max_per_concept})"
        ),
        (
            f"dropped: {n_multi} pivot lines matching several concepts, {n_empty} empty in some language, "
            f"{n_repeat} repeating a text"
        ),
    ]
    if too_few:
        report.append(
            f"left out (fewer than {min_per_concept} lines): "
            + ", ".join(f"{cid} ({n})" for cid, n in sorted(too_few.items()))
        )
    return BuildResult(frame, provenance, report)


def build_from_corpus(
    corpus_dir: Path,
    lexicon_path: Path,
    *,
    max_per_concept: int = DEFAULT_MAX_PER_CONCEPT,
    min_per_concept: int = DEFAULT_MIN_PER_CONCEPT,
    seed: int = 0,
    licence: str | None = None,
    command: str = "precompute concepts from-corpus",
) -> BuildResult:
    """A concept set from monolingual files and a lexicon of forms, with spans (rules: module docstring)."""
    _check_counts({"max_per_concept": max_per_concept, "min_per_concept": min_per_concept})
    lexicon = load_lexicon(lexicon_path)
    files = corpus_files(corpus_dir)
    by_lang = {f.lang: f for f in files}
    missing = sorted(set(lexicon.forms) - set(by_lang))
    if missing:
        raise CorpusError(
            f"{lexicon_path}: language(s) {', '.join(missing)} have forms but no file in {corpus_dir} "
            f"(have: {', '.join(sorted(by_lang))})"
        )
    unread = sorted(f"{f.path.name} ({f.lang})" for f in files if f.lang not in lexicon.forms)
    files = [f for f in files if f.lang in lexicon.forms]

    problems: list[str] = []
    n_lines: dict[str, int] = {}
    matched: dict[tuple[str, str], int] = {}
    n_multi: dict[str, int] = {}
    # Per (concept, lang): a bounded heap of the lowest-ranked lines (streaming: corpora may be large).
    heaps: dict[tuple[str, str], list[tuple[int, int, str, int, int]]] = {}
    seen: dict[tuple[str, str], set[str]] = {}
    for f in files:
        regex = lexicon.regexes[f.lang]
        turkic_rules = turkic(f.lang)
        last = 0
        n_multi[f.lang] = 0
        for number, raw in iter_lines(f.path, problems):
            last = number
            text = nfc(raw).strip() if raw else ""  # stored in NFC; spans are offsets into the stored text
            if not text:
                continue
            folded, owner = fold_with_offsets(text, turkic_rules)
            mentions = []
            for m in regex.finditer(folded):
                span = original_span(owner, m.start(), m.end())
                cid_of = lexicon.concept_of(f.lang, m.group(0))
                if span is not None and cid_of is not None:
                    mentions.append((span[0], span[1], cid_of))
            if not mentions:
                continue
            if len({c for _, _, c in mentions}) > 1:
                n_multi[f.lang] += 1
                continue
            start, end, cid = mentions[0]
            key = (cid, f.lang)
            if text in seen.setdefault(key, set()):
                continue
            seen[key].add(text)
            matched[key] = matched.get(key, 0) + 1
            item = (-_priority(seed, cid, f.lang, number), number, text, start, end)
            heap = heaps.setdefault(key, [])
            if len(heap) < max_per_concept:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
        n_lines[f.lang] = last
    _raise_problems(problems)

    # Balance: each concept gets the same count in every language where it has >= min_per_concept lines.
    rows: list[dict[str, Any]] = []
    per_concept: dict[str, dict[str, int]] = {}
    for (cid, lang), heap in heaps.items():
        if len(heap) >= min_per_concept:
            per_concept.setdefault(cid, {})[lang] = len(heap)
    by_lang_concepts: dict[str, set[str]] = {}
    for cid, langs in per_concept.items():
        for lang in langs:
            by_lang_concepts.setdefault(lang, set()).add(cid)
    lonely = sorted(lang for lang, cids in by_lang_concepts.items() if len(cids) < 2)
    for cid in list(per_concept):
        per_concept[cid] = {lang: n for lang, n in per_concept[cid].items() if lang not in lonely}
        if not per_concept[cid]:
            del per_concept[cid]
    # Everything left out, said once each: (concept, language) pairs under the minimum, whole concepts,
    # whole languages (no concept reaches the minimum there, or only one does: AP needs negatives).
    have_forms = {lang: set(table.values()) for lang, table in lexicon.forms.items()}
    lines_of = {(cid, f.lang): len(heaps.get((cid, f.lang), ())) for f in files for cid in have_forms[f.lang]}
    kept_langs = {lang for langs in per_concept.values() for lang in langs}
    languages_left_out: dict[str, str] = {}
    for f in files:
        if f.lang in kept_langs:
            continue
        good = sorted(by_lang_concepts.get(f.lang, ()))
        if good:
            languages_left_out[f.lang] = f"only 1 concept with {min_per_concept} lines ({good[0]})"
        else:
            most = max(have_forms[f.lang], key=lambda c: (lines_of[(c, f.lang)], c))
            languages_left_out[f.lang] = (
                f"no concept with {min_per_concept} lines (most: {most}, {lines_of[(most, f.lang)]})"
            )
    concepts_left_out = {
        cid: {lang: lines_of[(cid, lang)] for lang in sorted(by_lang) if (cid, lang) in lines_of}
        for cid in sorted(set(lexicon.meta) - set(per_concept))
    }
    pairs_left_out = {
        f"{cid}/{lang}": n
        for (cid, lang), n in sorted(lines_of.items())
        if cid in per_concept and lang in kept_langs and lang not in per_concept[cid]
    }
    left_out_text = (
        f"languages left out: {', '.join(f'{lang} ({why})' for lang, why in languages_left_out.items())}"
        if languages_left_out
        else ""
    )
    if len(per_concept) < 2:
        raise CorpusError(
            f"{lexicon_path}: only {len(per_concept)} concept(s) have at least {min_per_concept} lines in some "
            f"language of {corpus_dir}; at least 2 are needed (lower --min-per-concept, or add forms)"
            + (f"; {left_out_text}" if left_out_text else "")
        )
    counts: dict[str, int] = {}
    for cid in sorted(per_concept):
        n = min(per_concept[cid].values())
        counts[cid] = n
        meta = lexicon.meta.get(cid, {})
        for lang in sorted(per_concept[cid]):
            best = sorted(heaps[(cid, lang)], reverse=True)[:n]  # highest -priority = lowest rank
            name = by_lang[lang].path.name
            for _, number, text, start, end in sorted(best, key=lambda item: item[1]):
                rows.append(
                    {
                        "concept_id": cid,
                        "lang": lang,
                        "text": text,
                        "span_start": start,
                        "span_end": end,
                        "category": meta.get("category"),
                        "label": meta.get("label"),
                        "source": f"{name}:{number}",
                    }
                )
    frame = pl.DataFrame(rows, schema=FRAME_SCHEMA)
    provenance = _base_provenance("from-corpus", licence, command)
    provenance.update(
        {
            "corpus_dir": corpus_dir.name,
            "sources": _sources(files, n_lines),
            "lexicon": {"file": lexicon_path.name, "sha256": file_sha256(lexicon_path)},
            "rules": {
                "matching": "lexicon forms; " + MATCHING_RULE + "; leftmost, longest form first; the span is the first "
                "mention, in the stored (NFC) text",
                "several_concepts": "a line mentioning two or more concepts is dropped; repeated lines count once",
                "selection": "per (concept, language) the lowest sha256(seed/concept/lang/line) ranks, in line order; "
                "every language of a concept gets the same count (the smallest, capped at "
                "max_per_concept); languages with fewer than min_per_concept lines leave the concept out",
                "max_per_concept": max_per_concept,
                "min_per_concept": min_per_concept,
                "seed": seed,
            },
            "lines_per_concept": counts,
            "matches": {f"{cid}/{lang}": n for (cid, lang), n in sorted(matched.items())},
            "dropped": {
                "lines_with_several_concepts": n_multi,
                "languages_with_fewer_than_2_concepts": lonely,
                "languages_left_out": languages_left_out,
                "concepts_left_out": concepts_left_out,
                "concept_languages_left_out": pairs_left_out,
                "files_without_forms": unread,
            },
        }
    )
    report = [
        (
            f"{len(kept_langs)} of {len(files)} languages, {len(per_concept)} of {len(lexicon.meta)} concepts; "
            f"{min(counts.values())}-{max(counts.values())} lines per (concept, language) (cap {max_per_concept})"
        ),
        "dropped lines mentioning several concepts: " + ", ".join(f"{lang} {n}" for lang, n in sorted(n_multi.items())),
    ]
    if left_out_text:
        report.append(left_out_text)
    if concepts_left_out:
        report.append(
            f"concepts left out (fewer than {min_per_concept} lines in every language): "
            + ", ".join(
                f"{cid} ({', '.join(f'{lang} {n}' for lang, n in per.items())})"
                for cid, per in concepts_left_out.items()
            )
        )
    if pairs_left_out:
        report.append(
            f"concepts kept without some languages (fewer than {min_per_concept} lines there): "
            + ", ".join(f"{key} {n}" for key, n in pairs_left_out.items())
        )
    if unread:
        report.append(f"files with no forms in the lexicon, not read: {', '.join(unread)}")
    return BuildResult(frame, provenance, report)


def write_built_set(result: BuildResult, out: Path) -> Path:
    """Validate the built rows as a concept set, then write Parquet with the provenance (only Parquet holds it)."""
    from precompute.inputs.cldr import write_concept_set

    if out.suffix.lower() != ".parquet":
        raise CorpusError(f"{out}: the output must be a .parquet file (only Parquet keeps the provenance)")
    concept_set_from_frame(result.frame, where=str(out), provenance=result.provenance)
    return write_concept_set(result.frame, out, result.provenance)
