"""Labelling what a steered model writes: its language (among all languages) and whether it names the concept.

**Output language.** lingua-language-detector (offline models inside the wheel) chooses among **all** the
languages it knows (75), not only the run's, so that a Portuguese or Catalan output is called ``pt``/``ca``
and not Spanish or French: the headline "steered text is in English, not in the source language" needs
labels that can say "other". A label is the language's ISO 639-1 code (ISO 639-3 where it has none), with
lingua's confidence (0..1, the top language's share of its confidence values); ``und`` (ISO 639-2
"undetermined") with no confidence where lingua cannot tell: no letters, or a tie.

**Concept.** ``expresses_concept`` / ``concept_lang``: whether one of the concept's surface forms in any
language of the run's concept set occurs in the output, and in which language. Surface forms are the concept's
span texts (``sentences.text[span_start:span_end]``). A form matches case-sensitively as written, or with its
first letter upper-cased (sentence starts); a word-script form must stand between non-letters, a form that
starts/ends with a digit must not touch another digit, and forms in scripts written without spaces (Han,
kana, Thai, ...) and in Hangul match as substrings. Where forms of several languages match, the output's
own language wins, then the longest form. Inflected forms that the concept set never used are not
recognised (precision over recall).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence

UND = "und"  # ISO 639-2: undetermined

_LANG_ALIASES = {"no": "nb", "iw": "he", "in": "id", "tl": "tl"}


def primary(code: str) -> str:
    """The primary language subtag, lower-cased: 'pt-BR' -> 'pt', 'zh_Hant' -> 'zh'."""
    return re.split(r"[-_]", code.strip())[0].lower()


def _iso(language) -> str:
    """lingua ``Language`` -> ISO 639-1 code, else ISO 639-3, lower-cased."""
    one = getattr(language, "iso_code_639_1", None)
    if one is not None and getattr(one, "name", ""):
        return one.name.lower()
    return language.iso_code_639_3.name.lower()


class LanguageLabeler:
    """lingua-language-detector, built once.

    ``langs=None`` (what steering uses): every language lingua knows, labels are ISO codes. With ``langs``,
    restricted to those languages and labelled with the caller's codes ('pt-BR' -> lingua's 'pt' -> 'pt-BR';
    'no' -> 'nb'); languages lingua does not know are listed in ``unsupported`` and never returned.
    """

    def __init__(self, langs: Sequence[str] | None = None):
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        self.to_run: dict[str, str] | None = None
        self.unsupported: list[str] = []
        if langs is None:
            self.detector = LanguageDetectorBuilder.from_all_languages().build()
            return
        self.to_run = {}
        chosen = []
        for code in langs:
            wanted = _LANG_ALIASES.get(primary(code), primary(code))
            try:
                language = Language.from_iso_code_639_1(IsoCode639_1.from_str(wanted))
            except (ValueError, AttributeError):
                self.unsupported.append(code)
                continue
            key = _iso(language)
            if key not in self.to_run:
                self.to_run[key] = code
                chosen.append(language)
        self.detector = LanguageDetectorBuilder.from_languages(*chosen).build() if chosen else None

    def with_confidence(self, texts: Sequence[str]) -> list[tuple[str | None, float | None]]:
        """(label, confidence) per text; (None, None) where there are no letters or lingua cannot tell."""
        results: list[tuple[str | None, float | None]] = [(None, None)] * len(texts)
        todo = [i for i, t in enumerate(texts) if any(ch.isalpha() for ch in t)]
        if self.detector is None or not todo:
            return results
        found = self.detector.compute_language_confidence_values_in_parallel([texts[i] for i in todo])
        for i, values in zip(todo, found):
            if not values or values[0].value <= 0 or (len(values) > 1 and values[1].value == values[0].value):
                continue
            code = _iso(values[0].language)
            label = code if self.to_run is None else self.to_run.get(code)
            if label is not None:
                results[i] = (label, float(values[0].value))
        return results

    def __call__(self, texts: Sequence[str]) -> list[str | None]:
        return [label for label, _ in self.with_confidence(list(texts))]


@functools.lru_cache(maxsize=8)
def labeler(langs: tuple[str, ...] | None = None) -> LanguageLabeler:
    """A cached ``LanguageLabeler`` (building lingua's detector for all languages takes seconds)."""
    return LanguageLabeler(langs)


def label_language(texts: Sequence[str], langs: Sequence[str] | None = None) -> list[str | None]:
    """The language of each text (among ``langs`` as given, default: all), None where lingua cannot tell."""
    return labeler(tuple(langs) if langs is not None else None)(list(texts))


def output_languages(texts: Sequence[str]) -> list[tuple[str, float | None]]:
    """What the steering table stores: (ISO code or ``und``, confidence or None) per text, among all languages."""
    return [(label or UND, conf) for label, conf in labeler(None).with_confidence(list(texts))]


# Scripts written without spaces between words, and Hangul, whose particles attach to the noun.
_NO_SPACE_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN")


def _no_space_char(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(_NO_SPACE_SCRIPTS)


def _edge(ch: str, side: str) -> str:
    if ch.isdigit():
        return r"(?<!\d)" if side == "left" else r"(?!\d)"
    if ch.isalnum() and not _no_space_char(ch):
        return r"(?<!\w)" if side == "left" else r"(?!\w)"
    return ""


def _form_pattern(form: str) -> str:
    body = re.escape(form)
    return _edge(form[0], "left") + body + _edge(form[-1], "right")


class ConceptMatcher:
    """Compiled surface forms of one concept, per language (see the module docstring for the rules)."""

    def __init__(self, surface_forms: Mapping[str, Sequence[str] | set[str]]):
        self.patterns: list[tuple[str, int, re.Pattern]] = []
        for lang, forms in surface_forms.items():
            variants = set()
            for form in forms:
                form = form.strip()
                if not form:
                    continue
                variants.add(form)
                variants.add(form[0].upper() + form[1:])
            for form in sorted(variants, key=lambda f: (-len(f), f)):
                self.patterns.append((lang, len(form), re.compile(_form_pattern(form))))

    def __call__(self, text: str, prefer: str | None = None) -> tuple[bool, str | None]:
        """(matched, language of the form); ``prefer`` (the output's language, any subtags) wins ties."""
        best: tuple[str, int] | None = None
        for lang, length, pattern in self.patterns:
            if pattern.search(text):
                if prefer is not None and (lang == prefer or primary(lang) == primary(prefer)):
                    return True, lang
                if best is None or length > best[1]:
                    best = (lang, length)
        return (True, best[0]) if best else (False, None)


def expresses_concept(
    text: str, surface_forms: Mapping[str, Sequence[str] | set[str]], prefer: str | None = None
) -> tuple[bool, str | None]:
    """Whether ``text`` contains a surface form of the concept, and the language of the form found.

    ``surface_forms``: {lang: forms}. ``prefer`` (e.g. the text's detected language) wins ties.
    """
    return ConceptMatcher(surface_forms)(text, prefer)
