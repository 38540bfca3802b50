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
