"""Text that crosses a boundary: the first line of an error, store strings made safe for a terminal, and a
long list of names cut short for one line.

Every module that turns an exception into one line, and every printer of a store's strings, uses these,
so that a reworded message or a hostile string is handled the same way everywhere.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def printable(text: str) -> str:
    """A store's string made safe for a terminal: control characters (ESC, ...) shown as ``\\xNN``.

    A store from someone else is data: its strings must not move the cursor, retitle the terminal or
    plant hyperlinks when ``precompute info`` or ``report`` prints them.
    """
    return "".join(
        ch if ch == "\n" or not (ord(ch) < 32 or 127 <= ord(ch) < 160) else f"\\x{ord(ch):02x}" for ch in text
    )


def listed(names, most: int = 8) -> str:
    """``names`` joined by commas for one line, the first ``most`` of them and "and K more" (empty: "")."""
    names = [str(n) for n in names]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
