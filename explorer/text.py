"""Text from a store is text: the one place that turns store strings into what a widget shows.

A store comes from someone else. Its strings (checkpoint names, concept labels, language names, the
model card, module paths, run ids, ...) must never become links, images (a remote image is a beacon),
HTML, LaTeX, Streamlit directives or formatting when a page shows them. Streamlit renders two kinds of
text, and each store string goes through the function for the kind it reaches:

- :func:`md` for everything Streamlit renders as markdown: ``st.markdown``/``caption``/``title``/
  ``subheader``/``info``/``error``, widget and metric labels, ``help`` tooltips, expander and tab labels,
  page-link labels, and the option labels of ``st.select_slider`` (its thumb and tick labels are markdown).
  :func:`md_code` instead puts the string in an inline code span.
- :func:`plain` for what Streamlit shows as plain text: ``st.selectbox`` options, chart titles and axis
  text (vega draws them as text), ``st.text``. Escaping there would show the backslashes.
- :func:`html_text` for the text of an HTML body a page builds itself (``st.html``: the Neuron page's
  coloured tokens), where only HTML's own characters are special.

A vocabulary token is shown through :func:`readable_token` first (then through the function of where it goes),
so that a token's leading space or line break is seen.

The widget wrappers in :mod:`explorer.widgets` apply the right one to every option they are given, so a
page hands them raw store values and its ``format_func`` unescaped.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from typing import Any

# Markdown's special characters, plus ':' '@' '.' (which GFM needs for autolinks such as https://x,
# www.x.example and user@x.example, and Streamlit for :directives[] and :material/icons:), '&'
# (entities), '$' (LaTeX) and '~' (strikethrough); escaped, each shows literally.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#!|~$&:@.])")
# '+', '-' and '=' make a line a list or a heading only at its start.
_MD_LEADING = re.compile(r"^(\s*)([+\-=])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")


# Streamlit finds GFM autolinks (www.x, https://x, user@x.y) in the *text* of the parsed markdown, after
# backslash escapes are resolved, so escaping cannot stop them. A WORD JOINER (U+2060: invisible, no width,
# no line break) where the pattern needs two characters to touch breaks each pattern without changing what
# a reader sees: between "www" and ".", between ":" and "//", and before "@".
WORD_JOINER = "\u2060"
_AUTOLINK_PARTS = re.compile(r"(?i)(?<=www)(?=\.)|(?<=:)(?=//)|(?=@)")


def _unlink(text: str) -> str:
    """``text`` with every autolink pattern broken by an invisible word joiner."""
    return _AUTOLINK_PARTS.sub(WORD_JOINER, text)


def _one_line(text: Any) -> str:
    """``text`` on one line, without control characters (a newline would start a new markdown block)."""
    return " ".join(_CONTROL.sub(" ", str(text)).splitlines())


def md(text: Any) -> str:
    """``text`` as markdown that renders literally: one line, every markdown, GFM and Streamlit special
    escaped and every autolink pattern broken, so no link, autolink, image, HTML tag, directive or
    formatting survives."""
    return _MD_LEADING.sub(r"\1\\\2", _MD_SPECIAL.sub(r"\\\1", _unlink(_one_line(text))))


def md_code(text: Any) -> str:
    """``text`` as an inline code span: shown literally, in a fence it cannot close."""
    flat = _one_line(text)
    runs = re.findall(r"`+", flat)
    fence = "`" * (max(map(len, runs), default=0) + 1)
    pad = " " if runs else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def plain(text: Any) -> str:
    """``text`` for a place Streamlit shows as plain text (selectbox options, chart titles): one line."""
    return _one_line(text)


def md_func(fmt: Callable[[Any], Any]) -> Callable[[Any], str]:
    """``fmt`` whose output goes through :func:`md` (option labels that Streamlit renders as markdown)."""
    return lambda value: md(fmt(value))


def plain_func(fmt: Callable[[Any], Any]) -> Callable[[Any], str]:
    """``fmt`` whose output goes through :func:`plain` (option labels shown as plain text)."""
    return lambda value: plain(fmt(value))


def html_text(text: Any) -> str:
    """``text`` for the body of HTML that a page builds (``st.html``): ``&``, ``<``, ``>`` and both quotes escaped
    (``html.escape``), so no tag, entity or attribute comes from the store, and control characters shown as
    spaces, one for one, so that character offsets into ``text`` still hold. Line breaks and tabs stay (a
    ``white-space: pre-wrap`` container shows them); HTML has no markdown, autolinks or directives to break."""
    return html.escape(_CONTROL.sub(" ", str(text)), quote=True)


#: How a space at either end of a token is shown (TransformerLens' and Neuronpedia's habit): a bare space is
#: invisible, and " the" and "the" are different tokens.
VISIBLE_SPACE = "\u2423"
_TOKEN_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _visible_char(char: str) -> str:
    """``char``, or its escape where it is whitespace other than a space or invisible (control, format)."""
    if char in _TOKEN_ESCAPES:
        return _TOKEN_ESCAPES[char]
    if char != " " and (char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")):
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    return char


def readable_token(token: Any) -> str:
    """A vocabulary token (``unit_output_tokens.token``) as a reader can tell it apart: each space at its start or
    end shown as ``␣``, a line break, tab or other invisible character as its escape (``\\n``, ``\\t``,
    ``\\u00a0``), the rest as it is. Bytes that are no whole character are stored as ``<0xE0>`` already (by
    precompute, which has the tokenizer: ``precompute.analysis.drilldown.token_text``). The result is still store
    text: it goes through :func:`md` or :func:`plain` like any other."""
    text = str(token)
    core = text.strip(" ")
    if not core:
        return VISIBLE_SPACE * len(text)
    lead = len(text) - len(text.lstrip(" "))
    trail = len(text) - len(text.rstrip(" "))
    return VISIBLE_SPACE * lead + "".join(map(_visible_char, core)) + VISIBLE_SPACE * trail
