"""Build the built-in multilingual concept set from the CLDR data that the ``babel`` package ships.

No hand-written translations: every text is produced by a CLDR pattern (dates, date intervals,
relative-time phrases, list patterns, unit patterns) with CLDR names filled in, and every concept's
surface form is the one CLDR actually used in that text (Finnish ``maanantaina`` vs ``maanantai``,
Russian genitive ``марта``, Chinese/Japanese ``3月``, Russian ``понедельника`` in "через 3 понедельника").

Each context mentions exactly ONE concept of the set, so it is a positive for its concept and a
clean negative for every other concept of its language. This is checked, not assumed: a scanner
(:func:`find_mentions`) looks for every CLDR form of every concept of the language in each
candidate text, and a candidate is kept only if the scanner finds exactly one mention, of its own
concept; that mention is the stored span (character offsets into the Python string).

Scanner rules (documented because they decide what counts as "a mention"):

* a mention may run on along a longer form of the same concept that the text truncates
  (Japanese ``火曜`` of ``火曜日``, English ``Sept`` of ``September``);
* matching is case-insensitive and treats the Arabic alef/hamza spellings (ا أ إ آ) as one letter;
* in alphabetic scripts a mention starts at a word start; forms of >= 4 characters may be followed
  by more letters (inflection: ``Montags``, ``понедельника``, ``Mondays``) and the span then covers
  the whole word; shorter forms (abbreviations like ``Mar``, ``km``) must end at a word end;
* in Chinese/Japanese (no spaces) forms match anywhere, leftmost-longest; a one-character weekday
  abbreviation (Japanese ``月``, ``日``...) does not count right after a digit, where it is a date
  or counter suffix (``3月``, ``3日``), not a weekday.

Categories (45 concepts): 7 weekdays, 12 months, 10 territories, 8 languages, 8 units.
"""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import babel
import polars as pl
from babel import Locale
from babel.core import UnknownLocaleError
from babel.dates import format_date, format_interval, format_skeleton, format_timedelta
from babel.numbers import format_decimal
from babel.units import format_unit

from precompute.inputs.concepts import PROVENANCE_KEY

DEFAULT_LANGUAGES: list[str] = ["en", "de", "fr", "es", "it", "ru", "zh", "ja", "ar", "hi", "fi", "tr"]
DEFAULT_CONTEXTS = 24
MIN_CONTEXTS = 20
CLDR_LICENSE = "Unicode License v3 (Unicode CLDR data, https://www.unicode.org/license.txt)"

# Columns of the built file (the loader keeps concept_id, lang, text, span_*, category, label).
COLUMNS: dict[str, pl.DataType] = {
    "concept_id": pl.Utf8,
    "lang": pl.Utf8,
    "text": pl.Utf8,
    "span_start": pl.Int32,
    "span_end": pl.Int32,
    "category": pl.Utf8,
    "label": pl.Utf8,
    "source": pl.Utf8,
}


@dataclass(frozen=True)
class Concept:
    """One concept: id, category and the CLDR key that names it (day index, month, code, unit)."""

    concept_id: str
    category: str
    key: Any


_DAY_KEYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
# Territories and languages are chosen so that no territory name is (part of) a language name of the
# set in any default language (e.g. no Japan + Japanese: ja 日本 / 日本語).
_TERRITORIES = {
    "argentina": "AR",
    "australia": "AU",
    "brazil": "BR",
    "canada": "CA",
    "egypt": "EG",
    "india": "IN",
    "japan": "JP",
    "mexico": "MX",
    "nigeria": "NG",
    "sweden": "SE",
}
_LANGUAGES = {
    "arabic": "ar",
    "chinese": "zh",
    "french": "fr",
    "german": "de",
    "hindi": "hi",
    "portuguese": "pt",
    "russian": "ru",
    "spanish": "es",
}
_UNITS = {
    "gigabyte": "digital-gigabyte",
    "hectare": "area-hectare",
    "hour": "duration-hour",
    "kilogram": "mass-kilogram",
    "kilometer": "length-kilometer",
    "liter": "volume-liter",
    "mile": "length-mile",
    "minute": "duration-minute",
}
# Units that fill unit lists ("5 kilometers, 300 meters"); never concepts of the set.
_FILLER_UNITS = [
    "length-meter",
    "length-foot",
    "length-yard",
    "mass-gram",
    "mass-ounce",
    "volume-milliliter",
    "duration-second",
    "area-acre",
    "digital-megabyte",
    "length-inch",
    "volume-gallon",
]
# Territory codes that are not countries (groupings, pseudo-regions, unknown).
_NOT_COUNTRIES = {"EU", "EZ", "UN", "QO", "XA", "XB", "ZZ", "AQ", "AC", "CP", "CQ", "DG", "EA", "IC", "TA"}
_PLURAL_KEYS = ("zero", "one", "two", "few", "many", "other")

CONCEPTS: list[Concept] = (
    [Concept(c, "weekday", i) for i, c in enumerate(_WEEKDAYS)]
    + [Concept(c, "month", i + 1) for i, c in enumerate(_MONTHS)]
    + [Concept(c, "territory", k) for c, k in sorted(_TERRITORIES.items())]
    + [Concept(c, "language", k) for c, k in sorted(_LANGUAGES.items())]
    + [Concept(c, "unit", k) for c, k in sorted(_UNITS.items())]
)
CATEGORIES = ["weekday", "month", "territory", "language", "unit"]


# --------------------------------------------------------------------------------------------------
# Surface forms and the mention scanner
# --------------------------------------------------------------------------------------------------


@cache
def _locale(lang: str) -> Locale:
    """The babel locale of a language code (``zh_Hant`` or ``zh-Hant``)."""
    return Locale.parse(lang.replace("-", "_"))


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x3040 <= o <= 0x30FF  # kana
        or 0x3400 <= o <= 0x4DBF
        or 0x4E00 <= o <= 0x9FFF
        or 0xF900 <= o <= 0xFAFF
        or 0xFF66 <= o <= 0xFF9F
        or o == 0x3005
        or 0x20000 <= o <= 0x2FFFF
    )


@lru_cache(maxsize=65536)
def _is_word(ch: str) -> bool:
    """A letter or combining mark of a script that separates words by spaces."""
    return unicodedata.category(ch)[0] in "LM" and not _is_cjk(ch)


_ALEF = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا"})


@lru_cache(maxsize=65536)
def _norm_char(ch: str) -> str:
    low = ch.lower()
    if len(low) != 1:
        low = ch
    return low.translate(_ALEF)


def normalize(text: str) -> str:
    """Length-preserving case/alef normalisation used for matching (offsets stay valid)."""
    return "".join(_norm_char(c) for c in text)


def _clean_form(form: str | None) -> str | None:
    if not form:
        return None
    form = form.strip()
    if not any(unicodedata.category(c)[0] == "L" for c in form):
        return None
    return form


def _unit_forms(loc: Locale, unit: str) -> set[str]:
    forms: set[str] = set()
    patterns = loc._data["unit_patterns"].get(unit, {})
    for length in ("long", "short", "narrow"):
        for key, pattern in patterns.get(length, {}).items():
            if key not in _PLURAL_KEYS or not isinstance(pattern, str):
                continue
            for part in pattern.split("{0}"):
                if (f := _clean_form(part)) is not None:
                    forms.add(f)
    names = loc._data.get("unit_display_names", {}).get(unit, {})
    for length in ("long", "short", "narrow"):
        if (f := _clean_form(names.get(length))) is not None:
            forms.add(f)
    return forms


@cache
def concept_forms(lang: str) -> dict[str, frozenset[str]]:
    """Every CLDR surface form of every concept in ``lang`` (names in all widths and contexts)."""
    loc = _locale(lang)
    out: dict[str, set[str]] = {}
    for c in CONCEPTS:
        forms: set[str] = set()
        if c.category == "weekday":
            for ctx in ("format", "stand-alone"):
                for width in ("wide", "abbreviated", "short"):
                    forms.add(loc.days[ctx][width][c.key])
        elif c.category == "month":
            for ctx in ("format", "stand-alone"):
                for width in ("wide", "abbreviated"):
                    forms.add(loc.months[ctx][width][c.key])
        elif c.category == "territory":
            forms.add(loc.territories[c.key])
        elif c.category == "language":
            forms.add(loc.languages[c.key])
        else:
            forms |= _unit_forms(loc, c.key)
        out[c.concept_id] = {f for f in (_clean_form(x) for x in forms) if f}
    return {k: frozenset(v) for k, v in out.items()}


@dataclass(frozen=True)
class _Form:
    norm: str
    concepts: frozenset[str]
    weekday_char: bool  # one CJK character naming a weekday (ja 月, 日 ...)
    longer: tuple[str, ...]  # longer forms of the same concept(s) that start with this one


@cache
def _form_index(lang: str) -> dict[str, list[_Form]]:
    by_norm: dict[str, set[str]] = {}
    for cid, forms in concept_forms(lang).items():
        for f in forms:
            by_norm.setdefault(normalize(f), set()).add(cid)
    category = {c.concept_id: c.category for c in CONCEPTS}
    index: dict[str, list[_Form]] = {}
    for norm, cids in by_norm.items():
        wd = len(norm) == 1 and _is_cjk(norm) and all(category[c] == "weekday" for c in cids)
        longer = tuple(
            sorted(g for g, gc in by_norm.items() if len(g) > len(norm) and g.startswith(norm) and gc & cids)
        )
        index.setdefault(norm[0], []).append(_Form(norm, frozenset(cids), wd, longer))
    for forms in index.values():
        forms.sort(key=lambda f: (-len(f.norm), f.norm))
    return index


def find_mentions(text: str, lang: str) -> list[tuple[int, int, frozenset[str]]]:
    """All mentions of the set's concepts in ``text``: (start, end, candidate concept ids).

    Leftmost-longest, non-overlapping; see the module docstring for the boundary rules. A form
    shared by several concepts (Spanish ``mar`` = martes/marzo) yields all of them as candidates.
    """
    index = _form_index(lang)
    norm = normalize(text)
    n = len(text)
    found: list[tuple[int, int, frozenset[str]]] = []
    i = 0
    while i < n:
        match = None
        for form in index.get(norm[i], ()):
            if not norm.startswith(form.norm, i):
                continue
            if _is_word(form.norm[0]) and i > 0 and _is_word(text[i - 1]):
                continue
            if form.weekday_char:
                j = i - 1
                while j >= 0 and text[j].isspace():
                    j -= 1
                if j >= 0 and text[j].isdigit():
                    continue
            end = i + len(form.norm)
            for g in form.longer:  # a truncated longer form: ja 火曜 (of 火曜日), en Sept (of September)
                k = end
                while k < n and k - i < len(g) and norm[k] == g[k - i]:
                    k += 1
                end = max(end, k)
            if _is_word(text[end - 1]) and end < n and _is_word(text[end]):
                if end - i < 4:
                    continue
                while end < n and _is_word(text[end]):
                    end += 1
            match = (i, end, form.concepts)
            break
        if match is None:
            i += 1
        else:
            found.append(match)
            i = match[1]
    return found


def _single_mention(text: str, lang: str, concept_id: str) -> tuple[int, int] | None:
    mentions = find_mentions(text, lang)
    if len(mentions) == 1 and concept_id in mentions[0][2]:
        return mentions[0][0], mentions[0][1]
    return None


# --------------------------------------------------------------------------------------------------
# Candidate contexts per category (generators of (text, source); validated by the scanner)
# --------------------------------------------------------------------------------------------------

_WEEKDAY_SKELETONS = ["yMEd", "MEd", "Ed", "EHm", "Ehm", "EHms", "Ehms"]
_MONTH_FORMATS = ["long", "medium"]
_MONTH_SKELETONS = ["yMMMM", "MMMMd", "yMMMd", "MMMd", "yMMM", "yMMMMd"]
_INTERVAL_SKELETONS = ["yMMMd", "MMMd", "yMMMMd", "MMMMd"]
_LIST_STYLES = {
    "and": ["standard", "standard-short", "standard-narrow"],
    "or": ["or", "or-short", "or-narrow"],
    "unit": ["unit", "unit-short", "unit-narrow"],
}
_VALUES: list[float] = [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    14,
    15,
    16,
    18,
    20,
    21,
    24,
    25,
    30,
    32,
    40,
    45,
    50,
    60,
    64,
    75,
    80,
    90,
    100,
    120,
    128,
    150,
    200,
    250,
    256,
    300,
    400,
    500,
    750,
    1000,
    1200,
    1500,
    2000,
    2500,
    5000,
    10000,
    0.5,
    1.5,
    2.5,
    3.5,
    4.2,
    7.5,
    12.5,
    0.25,
    1.25,
    99.9,
    3.75,
    42,
]
_MAX_TRIES = 400  # per source and pair: generous; a source that keeps failing is simply exhausted

Candidates = Iterator[str]


def _rng(seed: int, lang: str, concept_id: str, source: str) -> random.Random:
    return random.Random(f"crossling:{seed}:{lang}:{concept_id}:{source}")


def _separator(pattern: str) -> str:
    """What a list pattern puts between its two items (stripped)."""
    a, b = pattern.find("{0}"), pattern.find("{1}")
    return pattern[a + 3 : b].strip() if 0 <= a < b else ""


def _list_text(loc: Locale, items: list[str], style: str, names_only: bool = False) -> str | None:
    """format_list, but only where the locale defines every pattern the list needs (babel does not
    inherit missing keys, and would otherwise repeat items) and every item appears exactly once.
    With ``names_only`` (lists of names, not measures) styles that just juxtapose items are skipped
    (Chinese unit-narrow writes "澳大利亚法属圭亚那")."""
    patterns = loc.list_patterns.get(style)
    if patterns is None:
        return None
    if len(items) == 2:
        needed = {"2"}
    else:
        needed = {"start", "end"} | ({"middle"} if len(items) > 3 else set())
    if not needed <= set(patterns.keys()):
        return None
    if names_only and any(not _separator(patterns[k]) for k in needed):
        return None
    if len(items) == 2:
        text = patterns["2"].format(*items)
    else:
        text = patterns["start"].format(items[0], items[1])
        for elem in items[2:-1]:
            text = patterns["middle"].format(text, elem)
        text = patterns["end"].format(text, items[-1])
    if any(text.count(item) != 1 for item in items):
        return None
    return text


def _weekday_sources(loc: Locale, lang: str, c: Concept, seed: int) -> dict[str, Candidates]:
    def relative() -> Candidates:
        fields = loc._data["date_fields"]
        rng = _rng(seed, lang, c.concept_id, "relative")
        texts: list[str] = []
        for width in ("", "-short", "-narrow"):
            entry = fields.get(_DAY_KEYS[c.key] + width)
            if not entry:
                continue
            for k in (-1, 0, 1):
                if k in entry.get("relative", {}):
                    texts.append(entry["relative"][k])
            for direction in ("future", "past"):
                patterns = entry.get(direction, {})
                for n in range(1, 16):
                    pattern = patterns.get(loc.plural_form(n)) or patterns.get("other")
                    if pattern:
                        texts.append(pattern.replace("{0}", format_decimal(n, locale=loc)))
        texts = sorted(set(texts))
        rng.shuffle(texts)
        yield from texts

    def datetimes() -> Candidates:
        rng = _rng(seed, lang, c.concept_id, "datetime")
        for i in range(_MAX_TRIES):
            day = date(1990, 1, 1) + timedelta(days=rng.randrange(0, 365 * 45))
            day += timedelta(days=(c.key - day.weekday()) % 7)
            moment = datetime(day.year, day.month, day.day, rng.randrange(24), rng.randrange(60), rng.randrange(60))
            skeleton = _WEEKDAY_SKELETONS[i % len(_WEEKDAY_SKELETONS)]
            yield format_skeleton(skeleton, moment, locale=loc)

    return {"relative": relative(), "datetime": datetimes()}


def _month_sources(loc: Locale, lang: str, c: Concept, seed: int) -> dict[str, Candidates]:
    def dates() -> Candidates:
        rng = _rng(seed, lang, c.concept_id, "date")
        kinds = [("format", f) for f in _MONTH_FORMATS] + [("skeleton", s) for s in _MONTH_SKELETONS]
        for i in range(_MAX_TRIES):
            d = date(rng.randrange(1950, 2036), c.key, rng.randrange(1, 29))
            kind, name = kinds[i % len(kinds)]
            if kind == "format":
                yield format_date(d, name, locale=loc)
            else:
                yield format_skeleton(name, d, locale=loc)

    def intervals() -> Candidates:
        rng = _rng(seed, lang, c.concept_id, "interval")
        for i in range(_MAX_TRIES):
            year = rng.randrange(1950, 2036)
            a = rng.randrange(1, 27)
            b = rng.randrange(a + 1, 29)
            skeleton = _INTERVAL_SKELETONS[i % len(_INTERVAL_SKELETONS)]
            yield format_interval(date(year, c.key, a), date(year, c.key, b), skeleton, locale=loc)

    return {"date": dates(), "interval": intervals()}


@cache
def _fillers(lang: str, category: str) -> tuple[str, ...]:
    """Names of territories (or languages) that are not concepts and mention no concept."""
    loc = _locale(lang)
    en = _locale("en")
    if category == "territory":
        taken = set(_TERRITORIES.values()) | _NOT_COUNTRIES
        codes = [k for k in en.territories if len(k) == 2 and k.isalpha() and k.isupper() and k not in taken]
        names = loc.territories
    else:
        taken = set(_LANGUAGES.values())
        codes = [k for k in en.languages if len(k) == 2 and k.isalpha() and k.islower() and k not in taken]
        names = loc.languages
    out: dict[str, str] = {}
    for code in sorted(codes):
        name = names.get(code)
        if not name or any(ch in name for ch in ",()（）、،;") or find_mentions(name, lang):
            continue
        out.setdefault(normalize(name), name)
    return tuple(sorted(out.values()))


def _name_list_sources(loc: Locale, lang: str, c: Concept, seed: int) -> dict[str, Candidates]:
    name = loc.territories[c.key] if c.category == "territory" else loc.languages[c.key]
    pool = _fillers(lang, c.category)

    def lists(family: str) -> Candidates:
        rng = _rng(seed, lang, c.concept_id, f"list-{family}")
        styles = _LIST_STYLES[family]
        if not pool:  # e.g. Vietnamese: every language name starts with "Tiếng", also the word for hour
            return
        for i in range(_MAX_TRIES):
            k = min(rng.randrange(1, 4), len(pool))
            items = rng.sample(pool, k)
            items.insert(rng.randrange(k + 1), name)
            text = _list_text(loc, items, styles[i % len(styles)], names_only=True)
            if text is not None:
                yield text

    return {f"list-{family}": lists(family) for family in _LIST_STYLES}


def _measure(loc: Locale, value: float, unit: str, length: str) -> str | None:
    try:
        return format_unit(value, unit, length, locale=loc)
    except Exception:  # a unit this locale lacks
        return None


def _unit_sources(loc: Locale, lang: str, c: Concept, seed: int) -> dict[str, Candidates]:
    lengths = ["long", "short", "narrow"]

    def measures() -> Candidates:
        rng = _rng(seed, lang, c.concept_id, "measure")
        for i in range(_MAX_TRIES):
            text = _measure(loc, rng.choice(_VALUES), c.key, lengths[i % 3])
            if text:
                yield text

    def unit_lists() -> Candidates:
        rng = _rng(seed, lang, c.concept_id, "unit-list")
        styles = ["unit", "unit-short", "unit-narrow"]
        for i in range(_MAX_TRIES):
            length = lengths[i % 3]
            own = _measure(loc, rng.choice(_VALUES), c.key, length)
            other = _measure(loc, rng.choice(_VALUES), rng.choice(_FILLER_UNITS), length)
            if not own or not other or own == other:
                continue
            items = [own, other] if rng.random() < 0.5 else [other, own]
            text = _list_text(loc, items, styles[i % 3])
            if text is not None:
                yield text

    sources = {"measure": measures(), "unit-list": unit_lists()}
    if c.key in ("duration-hour", "duration-minute"):

        def relative() -> Candidates:
            rng = _rng(seed, lang, c.concept_id, "relative-time")
            for i in range(_MAX_TRIES):
                n = rng.randrange(1, 20 if c.key == "duration-hour" else 50)
                delta = timedelta(hours=n) if c.key == "duration-hour" else timedelta(minutes=n)
                yield format_timedelta(
                    delta if rng.random() < 0.5 else -delta,
                    add_direction=True,
                    format=lengths[i % 3],
                    locale=loc,
                )

        sources["relative-time"] = relative()
    return sources


_SOURCES: dict[str, Callable[[Locale, str, Concept, int], dict[str, Candidates]]] = {
    "weekday": _weekday_sources,
    "month": _month_sources,
    "territory": _name_list_sources,
    "language": _name_list_sources,
    "unit": _unit_sources,
}


def _pick(sources: dict[str, Candidates], lang: str, concept_id: str, n: int) -> list[tuple[str, int, int, str]]:
    """Round-robin over the sources, keeping distinct texts with exactly one mention (their own)."""
    picked: list[tuple[str, int, int, str]] = []
    seen: set[str] = set()
    live = dict(sources)
    while len(picked) < n and live:
        for name in list(live):
            if len(picked) >= n:
                break
            for text in live[name]:
                if text in seen or "\x00" in text or not text.strip():
                    continue
                seen.add(text)
                span = _single_mention(text, lang, concept_id)
                if span is not None:
                    picked.append((text, span[0], span[1], name))
                    break
            else:
                del live[name]
    return picked


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _check_languages(languages: Iterable[str]) -> list[str]:
    out: list[str] = []
    for lang in languages:
        try:
            _locale(lang)
        except (UnknownLocaleError, ValueError, TypeError, AttributeError):
            raise ValueError(f"unknown language code {lang!r} (babel has no CLDR locale for it)") from None
        if lang not in out:
            out.append(lang)
    if len(out) < 1:
        raise ValueError("no languages given")
    return out


def labels() -> dict[str, str]:
    """English CLDR name of every concept (its label)."""
    en = _locale("en")
    out: dict[str, str] = {}
    for c in CONCEPTS:
        if c.category == "weekday":
            out[c.concept_id] = en.days["format"]["wide"][c.key]
        elif c.category == "month":
            out[c.concept_id] = en.months["format"]["wide"][c.key]
        elif c.category == "territory":
            out[c.concept_id] = en.territories[c.key]
        elif c.category == "language":
            out[c.concept_id] = en.languages[c.key]
        else:
            out[c.concept_id] = en._data["unit_display_names"][c.key]["long"]
    return out


def build_concept_set(
    languages: list[str] = DEFAULT_LANGUAGES,
    contexts_per_pair: int = DEFAULT_CONTEXTS,
    seed: int = 0,
) -> pl.DataFrame:
    """Build the concept set: one row per (concept, language, context), sorted by concept, language.

    Raises ``ValueError`` for an unknown language or when a (concept, language) pair gets fewer than
    ``min(20, contexts_per_pair)`` valid distinct contexts.
    """
    if contexts_per_pair < 2:
        raise ValueError(f"contexts_per_pair must be >= 2, got {contexts_per_pair}")
    langs = _check_languages(languages)
    names = labels()
    rows: list[dict[str, Any]] = []
    short: list[str] = []
    need = min(MIN_CONTEXTS, contexts_per_pair)
    for c in sorted(CONCEPTS, key=lambda c: c.concept_id):
        for lang in sorted(langs):
            loc = _locale(lang)
            sources = _SOURCES[c.category](loc, lang, c, seed)
            picked = _pick(sources, lang, c.concept_id, contexts_per_pair)
            if len(picked) < need:
                short.append(f"{c.concept_id}/{lang} ({len(picked)})")
            for text, start, end, source in picked:
                rows.append(
                    {
                        "concept_id": c.concept_id,
                        "lang": lang,
                        "text": text,
                        "span_start": start,
                        "span_end": end,
                        "category": c.category,
                        "label": names[c.concept_id],
                        "source": source,
                    }
                )
    if short:
        raise ValueError(
            f"too few contexts (< {need}) for {len(short)} concept/language pairs: {', '.join(short[:10])}"
        )
    return pl.DataFrame(rows, schema=COLUMNS)


def provenance(
    languages: list[str] = DEFAULT_LANGUAGES,
    contexts_per_pair: int = DEFAULT_CONTEXTS,
    seed: int = 0,
) -> dict[str, Any]:
    """Where the built set comes from: babel and CLDR versions, licence, builder and its settings."""
    try:
        from babel.core import get_cldr_version

        cldr = str(get_cldr_version())
    except Exception:  # older babel
        cldr = "unknown"
    langs = list(languages)
    cmd = "precompute concepts build"
    if langs != DEFAULT_LANGUAGES:
        cmd += f" --languages {','.join(langs)}"
    if contexts_per_pair != DEFAULT_CONTEXTS:
        cmd += f" --contexts {contexts_per_pair}"
    if seed != 0:
        cmd += f" --seed {seed}"
    return {
        "name": "crossling CLDR concept set",
        "source": "Unicode CLDR, as shipped by the Python package babel",
        "babel_version": babel.__version__,
        "cldr_version": cldr,
        "license": CLDR_LICENSE,
        "builder": "precompute/cldr.py",
        "command": cmd,
        "languages": langs,
        "contexts_per_pair": contexts_per_pair,
        "seed": seed,
        "categories": {cat: [c.concept_id for c in CONCEPTS if c.category == cat] for cat in CATEGORIES},
        "span_units": "Unicode code points (Python str offsets)",
    }


def write_concept_set(frame: pl.DataFrame, path: str | Path, prov: dict[str, Any] | None = None) -> Path:
    """Write ``frame`` as Parquet with the provenance JSON under the key ``crossling_provenance``.

    The bytes depend only on the frame, the provenance and the pyarrow version (no timestamps).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if prov is None:
        langs = sorted(frame["lang"].unique().to_list()) if "lang" in frame.columns else []
        prov = provenance(langs or DEFAULT_LANGUAGES)
    schema = pa.schema(
        [
            pa.field(name, pa.int32() if dtype == pl.Int32 else pa.string())
            for name, dtype in COLUMNS.items()
            if name in frame.columns
        ],
        metadata={PROVENANCE_KEY: json.dumps(prov, sort_keys=True, ensure_ascii=False)},
    )
    table = pa.Table.from_pylist(frame.to_dicts(), schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", compression_level=9, write_statistics=False)
    tmp.replace(path)
    return path
