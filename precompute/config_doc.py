"""docs/settings.md, written from the settings' own declarations in :mod:`precompute.config`.

Each setting declares its default, its :class:`~precompute.config.Rule`, whose value the default is (``source``)
and what it does (``doc``) in one place, the field itself; this module renders them as one Markdown table per
config section, so the settings are never written down a second time by hand. ``tests/test_documented_defaults.py``
fails while docs/settings.md differs from :func:`settings_markdown`, and regenerating it is one command::

    python -m precompute.config_doc            # rewrite docs/settings.md
    python -m precompute.config_doc --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from precompute.config import Rule, RunConfig
from precompute.inputs.langcodes import canonical_language, language_code_problem
from precompute.run_identity import CONFIG_IGNORED

#: Where the generated page lives in a checkout (the generator is a tool of the source tree).
SETTINGS_DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
REGENERATE = "python -m precompute.config_doc"

#: What a normalising or validating function of a rule means for the values a user writes.
_VALUE_KINDS = {
    canonical_language: "BCP 47 language codes, in any case",
    language_code_problem: "",  # what it refuses, the normaliser's words already say
}

_INTRO = f"""\
# Settings of a run config

<!-- Generated from precompute/config.py by `{REGENERATE}`: edit the settings' declarations
there, then regenerate. tests/test_documented_defaults.py fails while this file is out of date. -->

A run config is a TOML file with one table per section below (`[[checkpoints]]` may repeat); `configs/` has
ready ones for the paper's models and a tiny local one. Command-line options (`--device`, `--dtype`, `--layers`;
`precompute steer`'s `--seeds`, `--n-neurons`, ...) override only the setting they name.

- **Default** is the value a config gets when it leaves the key out, as TOML (*unset*: no value).
- **Allowed** is what the config checker accepts before any compute; `precompute/validate.py` then checks what
  needs the concept set or the model's shape (`top_k` below the units it ranks, `min_langs` at most the run's
  languages, layers that exist).
- **Source** says whose value the default is. "Paper" means a source says so: the paper (Riemenschneider &
  Frank, ACL 2025), Suau et al.'s reference code (apple/ml-selfcond) or Tang et al.'s
  (RUCAIBox/Language-Specific-Neurons). Everything else is crossling's choice. Where the paper's value differs
  from the default (which suits the demo's and the tests' tiny models), the source gives it as *paper's value*
  and the real-model configs in `configs/` set it.

Settings marked *operational* do not change what a run computes: they are not part of the run's identity
(`precompute/store/identity.py`), so changing them continues the same run in the same store.

Method choices that are not settings (how AP is scored, the steering value, the random-scorer AP, a unit's
output tokens, LAPE's activation event) and whose they are:
[statistics.md](statistics.md#method-choices-that-are-not-settings).
"""


@dataclass(frozen=True)
class SettingDoc:
    """One setting as the docs show it: where it sits, its default and rule, whose it is and what it does."""

    section: str  # "model", "checkpoints", ...
    key: str
    type_hint: Any
    default: Any
    rule: Rule
    source: str
    doc: str
    paper: Any = dataclasses.MISSING
    operational: bool = False


def section_label(section: str) -> str:
    """``experts`` -> ``[experts]``; a list of tables (``checkpoints``) -> ``[[checkpoints]]``."""
    return f"[[{section}]]" if _is_table_list(section) else f"[{section}]"


def _is_table_list(section: str) -> bool:
    return typing.get_origin(typing.get_type_hints(RunConfig)[section]) is list


def sections() -> list[tuple[str, type]]:
    """The config's sections in declaration order, each with the dataclass its table is read into."""
    hints = typing.get_type_hints(RunConfig)
    found = []
    for f in dataclasses.fields(RunConfig):
        tp = hints[f.name]
        if typing.get_origin(tp) is list:
            (tp,) = typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            found.append((f.name, tp))
    return found


def setting_docs() -> list[SettingDoc]:
    """Every setting of every section, in declaration order, with its default from a fresh section object."""
    ignored = {tuple(k) for k in CONFIG_IGNORED}
    docs = []
    for section, cls in sections():
        defaults = cls()
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            meta = f.metadata
            docs.append(
                SettingDoc(
                    section=section,
                    key=f.name,
                    type_hint=hints[f.name],
                    default=getattr(defaults, f.name),
                    rule=meta.get("rule", Rule()),
                    source=meta.get("source", ""),
                    doc=meta.get("doc", ""),
                    paper=meta.get("paper", dataclasses.MISSING),
                    operational=(section,) in ignored or (section, f.name) in ignored,
                )
            )
    return docs


def toml_literal(value: Any) -> str:
    """A value as TOML writes it (``"max"``, ``true``, ``[0, 1, 2]``, ``0.25``); None has no TOML form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def _value_cell(value: Any) -> str:
    """The value in code style; a long run of consecutive integers is shortened (the paper's 100 seeds)."""
    if value is None:
        return "*unset*"
    ints = isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if ints and len(value) > 6 and value == list(range(value[0], value[0] + len(value))):
        return f"`[{value[0]}, {value[1]}, ..., {value[-1]}]` ({len(value)} values)"
    return f"`{toml_literal(value)}`"


def _type_text(tp: Any) -> tuple[str, bool]:
    """(``int``, ``list of str``, ...; whether it may be unset)."""
    args = typing.get_args(tp)
    optional = type(None) in args
    if optional:
        tp = next(a for a in args if a is not type(None))
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return f"list of {item.__name__}", optional
    return tp.__name__, optional


def _range_text(rule: Rule) -> str:
    low = f"[{repr(rule.ge)}" if rule.ge is not None else f"({repr(rule.gt)}" if rule.gt is not None else ""
    high = f"{repr(rule.le)}]" if rule.le is not None else f"{repr(rule.lt)})" if rule.lt is not None else ""
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f">= {repr(rule.ge)}" if rule.ge is not None else f"> {repr(rule.gt)}"
    if high:
        return f"<= {repr(rule.le)}" if rule.le is not None else f"< {repr(rule.lt)}"
    return ""


def allowed_text(setting: SettingDoc) -> str:
    """What the rule accepts, in words: type, allowed values or range (of each item of a list), list rules."""
    rule = setting.rule
    kind, optional = _type_text(setting.type_hint)
    each = "each " if kind.startswith("list") else ""
    parts = [kind + (", or unset" if optional else "")]
    if rule.choices is not None:
        parts.append(f"{each}one of " + ", ".join(f"`{toml_literal(c)}`" for c in rule.choices))
    if span := _range_text(rule):
        parts.append(each + span)
    if rule.floor is not None:
        parts.append(f"at least {repr(rule.floor)} to work")
    for function in (rule.normalize, rule.validate):
        if function is not None and (words := _VALUE_KINDS.get(function, "normalised")):
            parts.append(words)
    if rule.required:
        parts.append("required")
    if rule.min_items:
        parts.append(f"at least {rule.min_items} value{'s' if rule.min_items > 1 else ''}")
    if rule.unique:
        parts.append("no repeats")
    text = "; ".join(parts)
    return f"{text} ({rule.hint})" if rule.hint else text


def _source_text(setting: SettingDoc) -> str:
    if setting.paper is dataclasses.MISSING:
        return setting.source
    return f"{setting.source}; paper's value: {_value_cell(setting.paper)}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, one line."""
    return " ".join(text.replace("|", "\\|").split())


def _section_intro(cls: type) -> str:
    """The first paragraph of the section dataclass's docstring, RST literals as Markdown code."""
    paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split()).replace("``", "`")


def settings_markdown() -> str:
    """docs/settings.md: the introduction, then per section a table of key, default, allowed, source, what it does."""
    by_section: dict[str, list[SettingDoc]] = {}
    for setting in setting_docs():
        by_section.setdefault(setting.section, []).append(setting)
    whole_sections = {key[0] for key in CONFIG_IGNORED if len(key) == 1}
    out = [_INTRO]
    for section, cls in sections():
        intro = _section_intro(cls)
        if section in whole_sections:
            intro += (
                " *Operational*: the checkpoint list is not part of the run's identity, so adding checkpoints"
                " later extends the same run."
            )
        out += [f"## `{section_label(section)}`\n", intro + "\n"]
        out += ["| key | default | allowed | source | what it does |", "|---|---|---|---|---|"]
        for s in by_section[section]:
            doc = s.doc + (" *Operational.*" if s.operational and section not in whole_sections else "")
            cells = [f"`{s.key}`", _value_cell(s.default), allowed_text(s), _source_text(s), doc]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Write docs/settings.md (or, with ``--check``, say whether it is out of date: exit 1 if so)."""
    parser = argparse.ArgumentParser(prog="python -m precompute.config_doc", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the settings")
    parser.add_argument("--out", type=Path, default=SETTINGS_DOC, help="the file to write (default: docs/settings.md)")
    args = parser.parse_args(argv)
    text = settings_markdown()
    current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
    if args.check:
        if current != text:
            print(f"{args.out} is out of date: regenerate it with `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.out.write_text(text, encoding="utf-8")
    print(f"{args.out}: {len(setting_docs())} settings in {len(sections())} sections")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
