"""The demo model's multilingual training corpus, built offline from CLDR data shipped with `babel`.

Nothing here is a hand-written translation: every string is what CLDR (through babel) renders for a locale.
The corpus is a list of *records*. A record is a small, language-independent bundle of facts (a country with
its official languages, currency and time zone; a dated event with a time, a relative time and a measurement;
a list of territories; a few measurements of one kind; calendar names; amounts of money and numbers). Each
record is rendered in **every** requested language, so the corpus is exactly balanced (one line per record and
language) and carries the cross-lingual anchors a model could use to align languages without ever being told
which lines are parallel:

* digits, years and amounts, which most of these locales write with the same Western digits;
* the same underlying items (the same date, country, unit or value) rendered in each language;
* the same co-occurrence structure (France goes with euro and French in every language).

The fields inside a line are joined with a language-neutral separator (`FIELD_SEPARATOR`); whitespace inside a
field (CLDR uses no-break and narrow no-break spaces) is normalised to plain spaces.

The lines of different languages are shuffled together by the trainer (`precompute.demo.train`), so parallel
lines never sit next to each other in a training context: the model is not told which lines are translations.

Overlap in kind with the concept set built in `precompute.inputs.cldr` (weekdays, months, territory and language names,
unit expressions) is intended: those are the concepts the demo's neurons can learn. Exact concept-set texts
are not reproduced on purpose; the random values and the combination of several fields per line make verbatim
collisions rare.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from babel import Locale
from babel.core import get_global
from babel.dates import (
    format_date,
    format_datetime,
    format_interval,
    format_skeleton,
    format_time,
    format_timedelta,
    get_timezone_location,
)
from babel.languages import get_official_languages
from babel.lists import format_list
from babel.numbers import (
    format_compact_decimal,
    format_currency,
    format_decimal,
    format_percent,
    get_territory_currencies,
)
from babel.units import format_compound_unit, format_unit, get_unit_name

__all__ = [
    "DEMO_LANGUAGES",
    "CORPUS_VERSION",
    "build_corpus",
    "corpus_stats",
    "corpus_sha256",
    "FIELD_SEPARATOR",
]

#: The twelve languages of the demo (ISO 639-1), spanning Latin, Cyrillic, Han, Kana, Arabic and Devanagari.
DEMO_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it", "ru", "zh", "ja", "ar", "hi", "fi", "tr")

#: Bumped whenever the corpus recipe changes, so cached demo checkpoints are rebuilt.
CORPUS_VERSION = 1

# --- the language-independent inventory a record draws from (codes, never words) -------------------------

_TERRITORIES = (
    "AR",
    "AT",
    "AU",
    "BE",
    "BR",
    "CA",
    "CH",
    "CL",
    "CN",
    "CO",
    "CZ",
    "DE",
    "DK",
    "DZ",
    "EG",
    "ES",
    "FI",
    "FR",
    "GB",
    "GR",
    "HU",
    "ID",
    "IE",
    "IL",
    "IN",
    "IQ",
    "IR",
    "IT",
    "JP",
    "KE",
    "KR",
    "MA",
    "MX",
    "NG",
    "NL",
    "NO",
    "NP",
    "NZ",
    "PE",
    "PH",
    "PK",
    "PL",
    "PT",
    "RO",
    "RU",
    "SA",
    "SE",
    "SN",
    "SY",
    "TH",
    "TN",
    "TR",
    "UA",
    "US",
    "VN",
    "ZA",
    "KZ",
    "CU",
    "ET",
    "IS",
)
_LANGUAGE_CODES = (
    "ar",
    "bn",
    "cs",
    "da",
    "de",
    "el",
    "en",
    "es",
    "fa",
    "fi",
    "fr",
    "he",
    "hi",
    "hu",
    "id",
    "it",
    "ja",
    "ko",
    "nl",
    "no",
    "pl",
    "pt",
    "ro",
    "ru",
    "sv",
    "sw",
    "ta",
    "th",
    "tr",
    "uk",
    "ur",
    "vi",
    "zh",
    "kk",
    "am",
    "is",
    "ne",
    "wo",
)
_UNIT_GROUPS: dict[str, tuple[str, ...]] = {
    "length": (
        "length-kilometer",
        "length-meter",
        "length-centimeter",
        "length-millimeter",
        "length-mile",
        "length-foot",
        "length-inch",
    ),
    "mass": ("mass-kilogram", "mass-gram", "mass-tonne", "mass-pound", "mass-ounce"),
    "duration": (
        "duration-hour",
        "duration-minute",
        "duration-second",
        "duration-day",
        "duration-week",
        "duration-month",
        "duration-year",
    ),
    "temperature": ("temperature-celsius", "temperature-fahrenheit", "temperature-kelvin"),
    "volume": ("volume-liter", "volume-milliliter", "volume-cubic-meter", "volume-gallon"),
    "area": ("area-square-kilometer", "area-square-meter", "area-hectare"),
    "speed": ("speed-kilometer-per-hour", "speed-meter-per-second", "speed-mile-per-hour"),
    "energy": ("energy-kilowatt-hour", "energy-kilocalorie", "power-watt", "power-kilowatt"),
    "digital": ("digital-megabyte", "digital-gigabyte", "digital-kilobyte"),
    "pressure": ("pressure-hectopascal", "pressure-bar"),
}
_COMPOUNDS = (
    ("length-kilometer", "duration-hour"),
    ("length-meter", "duration-second"),
    ("mass-kilogram", "volume-liter"),
    ("length-mile", "duration-hour"),
    ("digital-megabyte", "duration-second"),
)
_CURRENCIES = ("EUR", "USD", "JPY", "CNY", "GBP", "RUB", "INR", "TRY", "CHF", "BRL", "MXN", "SAR", "EGP")
_DATE_FORMATS = ("full", "long", "medium", "short")
_DATE_SKELETONS = ("yMMMMd", "MMMMd", "yMMMM", "yMMMEd", "MMMMEEEEd", "yMMMd", "MMMEd", "yMd")
_INTERVAL_SKELETONS = ("yMMMd", "yMMMMd", "MMMd", "yMMM", "yMd")
_DELTA_UNITS = ("second", "minute", "hour", "day", "week", "month", "year")


@cache
def _locale(lang: str) -> Locale:
    return Locale.parse(lang)


@cache
def _zones() -> dict[str, tuple[str, ...]]:
    zones = get_global("territory_zones")
    return {t: tuple(zones.get(t, ())) for t in _TERRITORIES}


def _ok_in_all(langs: Sequence[str], render: Callable[[str], str]) -> bool:
    try:
        return all(render(lang).strip() for lang in langs)
    except Exception:  # noqa: BLE001 - CLDR gaps: the item is simply not used
        return False


@cache
def _inventory(langs: tuple[str, ...]) -> dict[str, tuple]:
    """The codes whose names every requested locale has (so every record renders in every language)."""
    territories = tuple(t for t in _TERRITORIES if all(t in _locale(lang).territories for lang in langs))
    languages = tuple(c for c in _LANGUAGE_CODES if all(c in _locale(lang).languages for lang in langs))
    currencies = tuple(c for c in _CURRENCIES if all(c in _locale(lang).currencies for lang in langs))
    units = {
        g: tuple(u for u in us if _ok_in_all(langs, lambda lang, u=u: format_unit(3, u, locale=lang)))
        for g, us in _UNIT_GROUPS.items()
    }
    compounds = tuple(
        c
        for c in _COMPOUNDS
        if _ok_in_all(langs, lambda lang, c=c: format_compound_unit(5, c[0], denominator_unit=c[1], locale=lang))
    )
    return {
        "territories": territories,
        "languages": languages,
        "currencies": currencies,
        "units": {g: us for g, us in units.items() if us},
        "compounds": compounds,
    }


# --- records: a language-independent description, rendered per language ----------------------------------

Field = Callable[[str], str]  # lang -> text


@dataclass(frozen=True)
class _Record:
    kind: str
    fields: tuple[Field, ...]


def _rand_datetime(rng: random.Random) -> _dt.datetime:
    year = rng.choice((rng.randint(1900, 2030), rng.randint(1990, 2030), rng.randint(2015, 2026)))
    start = _dt.datetime(year, 1, 1)
    return start + _dt.timedelta(days=rng.randrange(365), minutes=rng.randrange(24 * 60))


def _rand_value(rng: random.Random) -> int | Decimal:
    r = rng.random()
    if r < 0.45:
        return rng.randint(1, 12)
    if r < 0.75:
        return rng.randint(13, 999)
    if r < 0.9:
        return rng.randint(1000, 99999)
    return Decimal(rng.randint(1, 9999)) / Decimal(10 ** rng.randint(1, 2))


def _date_field(rng: random.Random) -> Field:
    when = _rand_datetime(rng)
    if rng.random() < 0.5:
        fmt = rng.choice(_DATE_FORMATS)
        return lambda lang: format_date(when, fmt, locale=lang)
    skel = rng.choice(_DATE_SKELETONS)
    return lambda lang: format_skeleton(skel, when, locale=lang)


def _time_field(rng: random.Random) -> Field:
    when = _rand_datetime(rng)
    if rng.random() < 0.6:
        fmt = rng.choice(("short", "medium"))
        return lambda lang: format_time(when, fmt, locale=lang)
    fmt = rng.choice(("medium", "short"))
    return lambda lang: format_datetime(when, fmt, locale=lang)


def _interval_field(rng: random.Random) -> Field:
    start = _rand_datetime(rng)
    end = start + _dt.timedelta(days=rng.randint(1, 400))
    skel = rng.choice(_INTERVAL_SKELETONS)
    return lambda lang: format_interval(start, end, skel, locale=lang)


def _relative_field(rng: random.Random) -> Field:
    unit = rng.choice(_DELTA_UNITS)
    n = rng.randint(1, 12)
    seconds = {
        "second": 1,
        "minute": 60,
        "hour": 3600,
        "day": 86400,
        "week": 7 * 86400,
        "month": 30 * 86400,
        "year": 365 * 86400,
    }[unit] * n
    delta = _dt.timedelta(seconds=seconds * rng.choice((-1, 1)))
    direction = rng.random() < 0.7
    fmt = rng.choice(("long", "long", "short"))
    return lambda lang: format_timedelta(
        delta, granularity=unit, threshold=1e9, add_direction=direction, format=fmt, locale=lang
    )


def _measure_field(rng: random.Random, units: Sequence[str]) -> Field:
    unit = rng.choice(units)
    value = _rand_value(rng)
    length = rng.choice(("long", "long", "short"))
    return lambda lang: format_unit(value, unit, length=length, locale=lang)


def _money_field(rng: random.Random, currency: str) -> Field:
    amount = Decimal(rng.randint(1, 999_999)) / 100
    if rng.random() < 0.5:
        amount = Decimal(int(amount))
    return lambda lang: format_currency(amount, currency, locale=lang)


def _number_field(rng: random.Random) -> Field:
    r = rng.random()
    if r < 0.3:
        pct = Decimal(rng.randint(1, 100)) / 100
        return lambda lang: format_percent(pct, locale=lang)
    if r < 0.6:
        big = rng.randint(10, 999) * 10 ** rng.randint(3, 8)
        style = rng.choice(("long", "short"))
        return lambda lang: format_compact_decimal(big, format_type=style, locale=lang)
    num = Decimal(rng.randint(1, 9_999_999)) / Decimal(10 ** rng.randint(0, 2))
    return lambda lang: format_decimal(num, locale=lang)


def _name_list(rng: random.Random, codes: Sequence[str], attr: str) -> Field:
    picked = rng.sample(list(codes), rng.randint(2, 4))
    style = rng.choice(("standard", "standard", "or"))
    return lambda lang: format_list([getattr(_locale(lang), attr)[c] for c in picked], style=style, locale=lang)


def _country_record(rng: random.Random, inv: dict) -> list[Field]:
    terr = rng.choice(inv["territories"])
    fields: list[Field] = [lambda lang: _locale(lang).territories[terr]]
    langs = [c for c in get_official_languages(terr) if c in inv["languages"]]
    if langs:
        fields.append(lambda lang: format_list([_locale(lang).languages[c] for c in langs[:3]], locale=lang))
    currs = [c for c in get_territory_currencies(terr) if c in inv["currencies"]]
    if currs:
        cur = currs[0]
        fields.append(
            rng.choice(
                (
                    lambda lang: _locale(lang).currencies[cur],
                    _money_field(rng, cur),
                )
            )
        )
    zones = _zones().get(terr, ())
    if zones:
        zone = rng.choice(zones)
        fields.append(lambda lang: get_timezone_location(zone, locale=lang))
    if rng.random() < 0.5:
        fields.append(_date_field(rng))
    return fields


def _event_record(rng: random.Random, inv: dict) -> list[Field]:
    fields = [_date_field(rng)]
    extra = [
        _time_field,
        _relative_field,
        lambda r: _measure_field(r, inv["units"][r.choice(sorted(inv["units"]))]),
        lambda r: _name_list(r, inv["territories"], "territories"),
    ]
    for make in rng.sample(extra, rng.randint(1, 3)):
        fields.append(make(rng))
    return fields


def _list_record(rng: random.Random, inv: dict) -> list[Field]:
    attr, codes = rng.choice((("territories", inv["territories"]), ("languages", inv["languages"])))
    fields = [_name_list(rng, codes, attr)]
    if rng.random() < 0.5:
        fields.append(
            _name_list(
                rng,
                inv["languages"] if attr == "territories" else inv["territories"],
                "languages" if attr == "territories" else "territories",
            )
        )
    fields.append(rng.choice((_number_field, _date_field))(rng))
    return fields


def _measure_record(rng: random.Random, inv: dict) -> list[Field]:
    group = rng.choice(sorted(inv["units"]))
    fields = [_measure_field(rng, inv["units"][group]) for _ in range(rng.randint(2, 4))]
    if inv["compounds"] and rng.random() < 0.4:
        num, den = rng.choice(inv["compounds"])
        value = _rand_value(rng)
        fields.append(lambda lang: format_compound_unit(value, num, denominator_unit=den, locale=lang))
    if rng.random() < 0.3:
        unit = rng.choice(inv["units"][group])
        fields.insert(0, lambda lang: get_unit_name(unit, locale=lang))
    return fields


def _calendar_record(rng: random.Random, inv: dict) -> list[Field]:
    fields: list[Field] = []
    months = rng.sample(range(1, 13), rng.randint(1, 3))
    ctx = rng.choice(("format", "stand-alone"))
    fields.append(lambda lang: format_list([_locale(lang).months[ctx]["wide"][m] for m in months], locale=lang))
    days = rng.sample(range(7), rng.randint(1, 3))
    fields.append(lambda lang: format_list([_locale(lang).days[ctx]["wide"][d] for d in days], locale=lang))
    if rng.random() < 0.5:
        q = rng.randint(1, 4)
        fields.append(lambda lang: _locale(lang).quarters["format"]["wide"][q])
    fields.append(rng.choice((_interval_field, _date_field))(rng))
    rng.shuffle(fields)
    return fields


def _money_record(rng: random.Random, inv: dict) -> list[Field]:
    currs = rng.sample(list(inv["currencies"]), rng.randint(1, 3))
    fields = [_money_field(rng, c) for c in currs]
    if rng.random() < 0.4:
        cur = rng.choice(currs)
        fields.insert(0, lambda lang: _locale(lang).currencies[cur])
    fields.append(_number_field(rng))
    return fields


_RECORD_KINDS: tuple[tuple[str, Callable[[random.Random, dict], list[Field]], float], ...] = (
    ("country", _country_record, 0.22),
    ("event", _event_record, 0.22),
    ("list", _list_record, 0.14),
    ("measure", _measure_record, 0.16),
    ("calendar", _calendar_record, 0.12),
    ("money", _money_record, 0.14),
)


#: Joins the fields of a line. babel's CLDR data has no complete "unit" list pattern for most of these locales
#: (and Arabic's list patterns all carry the conjunction "و"), so a language-neutral middle dot is used instead.
FIELD_SEPARATOR = " · "


def _render(record: _Record, lang: str) -> str:
    return FIELD_SEPARATOR.join(" ".join(f(lang).split()) for f in record.fields)


def build_corpus(languages: list[str], n_lines_per_lang: int, seed: int) -> list[tuple[str, str]]:
    """Return ``n_lines_per_lang`` lines for each language as ``(lang, text)``, deterministic in ``seed``.

    Line ``i`` of every language renders the same record (same facts, dates, values), so the corpus is balanced
    and parallel; the output is ordered record by record (``lang`` varies fastest). The trainer shuffles it.
    A record that fails to render in any requested language is replaced by the next one, for all languages.
    """
    langs = tuple(languages)
    if not langs:
        raise ValueError("build_corpus: no languages given")
    for lang in langs:
        try:
            _locale(lang)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"build_corpus: babel has no locale {lang!r} ({exc})") from None
    if n_lines_per_lang < 0:
        raise ValueError(f"build_corpus: n_lines_per_lang must be >= 0, got {n_lines_per_lang}")
    inv = _inventory(langs)
    rng = random.Random(f"crossling-demo-corpus/{CORPUS_VERSION}/{seed}")
    names = [k for k, _, _ in _RECORD_KINDS]
    weights = [w for _, _, w in _RECORD_KINDS]
    makers = {k: f for k, f, _ in _RECORD_KINDS}
    out: list[tuple[str, str]] = []
    n_done = 0
    n_failed = 0
    while n_done < n_lines_per_lang:
        kind = rng.choices(names, weights)[0]
        record = _Record(kind, tuple(makers[kind](rng, inv)))
        try:
            lines = [(lang, _render(record, lang)) for lang in langs]
        except Exception:  # noqa: BLE001 - a CLDR gap for one item: drop the record in every language
            n_failed += 1
            if n_failed > 10 * (n_lines_per_lang + 10):
                raise RuntimeError("build_corpus: babel failed to render most records") from None
            continue
        if any(not text for _, text in lines):
            continue
        out.extend(lines)
        n_done += 1
    return out


def corpus_stats(corpus: Sequence[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Lines, characters and UTF-8 bytes per language."""
    stats: dict[str, dict[str, int]] = {}
    for lang, text in corpus:
        s = stats.setdefault(lang, {"lines": 0, "chars": 0, "bytes": 0})
        s["lines"] += 1
        s["chars"] += len(text)
        s["bytes"] += len(text.encode("utf-8"))
    return stats


def corpus_sha256(corpus: Sequence[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for lang, text in corpus:
        h.update(json.dumps([lang, text], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
