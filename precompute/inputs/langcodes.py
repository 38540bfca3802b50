"""Language codes in one spelling: BCP 47 case and hyphens, so that ``EN`` and ``en`` are one language.

A concept set or a config may write ``EN``, ``zh_hans`` or ``pt-br``; the store and every comparison use
``en``, ``zh-Hans`` and ``pt-BR``. Two spellings of one language in one concept set would otherwise become two
"languages" whose experts agree perfectly, inflating the cross-lingual alignment.
"""

from __future__ import annotations


def canonical_language(code: str) -> str:
    """``code`` with BCP 47 casing and ``-`` separators: language lower case, script title case
    (``Hans``), region upper case (``BR``, ``419``), variants and extensions lower case.

    Only case and separators change: an unknown code stays unknown (the concept-set checks report it), and
    text with surrounding whitespace is returned as it is.
    """
    if not code or code != code.strip() or any(c.isspace() for c in code):
        return code
    parts = code.replace("_", "-").split("-")
    if any(not p or not p.isascii() or not p.isalnum() for p in parts):
        return code
    out = [parts[0].lower()]
    in_extension = len(parts[0]) == 1  # "x-private", "i-klingon": all lower case
    for part in parts[1:]:
        if in_extension or len(part) == 1:
            in_extension = True
            out.append(part.lower())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)


#: Codes that are valid BCP 47 / ISO 639 but name no language: babel still "knows" some of them (``und`` is
#: shown as "English (United States)" through CLDR's likely subtags), so they are refused by name.
NOT_LANGUAGES: dict[str, str] = {
    "und": "ISO 639 'undetermined'",
    "zxx": "ISO 639 'no linguistic content'",
    "mul": "ISO 639 'multiple languages'",
    "mis": "ISO 639 'uncoded languages'",
    "root": "CLDR's root locale",
}


def not_a_language(code: str) -> str | None:
    """Why ``code`` names no language (``und``, ``zxx``, ``mul``, ``mis``, ``root``, the private-use
    ``qaa``-``qtz``, also with a script or region: ``und-Latn``), or None for any other code."""
    primary = code.strip().replace("_", "-").split("-")[0].lower()
    if primary in NOT_LANGUAGES:
        return f"{code!r} is not a language ({NOT_LANGUAGES[primary]}); give the language's own code"
    if len(primary) == 3 and primary.isascii() and "qaa" <= primary <= "qtz":
        return f"{code!r} is not a language (ISO 639 private use, qaa-qtz); give the language's own code"
    return None


def language_code_problem(code: str) -> str | None:
    """Why a language code as written in a config or on the command line cannot be used, before any lookup:
    spaces around or inside it (``"en "``), or a code that names no language (:func:`not_a_language`).

    Meant for the place that reads the code, so the message can name that key or option rather than the
    concept set it is later looked up in. None when the code may be looked up (it may still be unknown).
    """
    if not code or not code.strip():
        return "empty language code"
    if code != code.strip() or any(c.isspace() for c in code):
        return f"language code {code!r} has spaces in it; write {code.strip()!r}"
    return not_a_language(code)
