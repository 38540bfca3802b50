"""The settings are documented once: docs/settings.md is generated from their declarations in
precompute/config.py (default, rule, source, description), so a default changed in the code and not in the docs
(Tang's filter rate, the permutation test's level, ...) fails here instead of silently changing what a reader
believes the published numbers used. Also: the real-model configs set the paper's values, and the relative links
of README.md and docs/ lead to files and headings that exist.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from precompute.config import CheckpointSpec, RunConfig
from precompute.config_doc import REGENERATE, SETTINGS_DOC, section_label, setting_docs, settings_markdown

ROOT = Path(__file__).resolve().parents[1]
REAL_MODEL_CONFIGS = ("bloom-560m-intermediate", "bloom-1b1-intermediate", "bloom-7b1-intermediate", "xglm-local")


def test_settings_doc_is_the_generated_one():
    written = SETTINGS_DOC.read_text(encoding="utf-8")
    expected = settings_markdown()
    if written != expected:
        diff = "\n".join(
            list(difflib.unified_diff(written.splitlines(), expected.splitlines(), "docs/settings.md", "generated"))[
                :20
            ]
        )
        pytest.fail(f"docs/settings.md is out of date: regenerate it with `.venv/bin/{REGENERATE}`\n{diff}")


def test_every_setting_has_a_source_and_a_description():
    missing = [
        f"{section_label(s.section)} {s.key}: {'source' if not s.source else 'doc'}"
        for s in setting_docs()
        if not s.source or not s.doc
    ]
    assert not missing, f"give these settings source=... and doc=... in precompute/config.py: {missing}"


def _documented_defaults() -> dict[tuple[str, str], str]:
    """(section label, key) -> the default cell of its row in docs/settings.md, read as a reader would."""
    rows: dict[tuple[str, str], str] = {}
    section = ""
    for line in SETTINGS_DOC.read_text(encoding="utf-8").splitlines():
        if heading := re.fullmatch(r"## `(\[\[?\w+\]\]?)`", line):
            section = heading.group(1)
        elif section and (row := re.match(r"\| `(\w+)` \| (.*?) \|", line)):
            rows[(section, row.group(1))] = row.group(2)
    return rows


def _parse_default(cell: str) -> Any:
    """`*unset*` -> None; a code cell -> the TOML value it shows."""
    if cell == "*unset*":
        return None
    literal = re.fullmatch(r"`(.*)`", cell)
    assert literal, f"the default {cell!r} is neither *unset* nor a TOML value in backticks"
    return tomllib.loads(f"value = {literal.group(1)}")["value"]


def _code_defaults() -> dict[tuple[str, str], Any]:
    """(section label, key) -> the default of ``RunConfig()`` (``CheckpointSpec()`` for ``[[checkpoints]]``)."""
    config = RunConfig()
    defaults = {}
    for section in (f.name for f in dataclasses.fields(RunConfig) if f.name not in ("base_dir", "where", "overridden")):
        spec = getattr(config, section)
        spec = CheckpointSpec() if isinstance(spec, list) else spec
        for f in dataclasses.fields(spec):
            defaults[(section_label(section), f.name)] = getattr(spec, f.name)
    return defaults


def test_the_doc_shows_the_codes_defaults():
    documented, code = _documented_defaults(), _code_defaults()
    assert sorted(documented) == sorted(code), "docs/settings.md lists other settings than RunConfig has"
    for key, default in code.items():
        shown = _parse_default(documented[key])
        assert shown == default and type(shown) is type(default), f"{key}: docs say {shown!r}, the code {default!r}"


def test_the_real_model_configs_use_the_papers_values():
    """Where the paper's value differs from the default (``setting(paper=...)``), every real-model config that sets
    the key sets that value; all of them set the paper's expert K."""
    papers = [s for s in setting_docs() if s.paper is not dataclasses.MISSING]
    assert any((s.section, s.key) == ("experts", "top_k") for s in papers)
    for name in REAL_MODEL_CONFIGS:
        data = tomllib.loads((ROOT / "configs" / f"{name}.toml").read_text(encoding="utf-8"))
        assert "top_k" in data["experts"], name
        for s in papers:
            if s.key in data.get(s.section, {}):
                assert data[s.section][s.key] == s.paper, f"{name}: {section_label(s.section)} {s.key}"


def test_steering_sampling_defaults_are_suau_et_al():
    """ml-selfcond's generate_seq: nucleus 0.9, no top-k cut, temperature 0.8 (the mission's settings)."""
    s = RunConfig().steering
    assert (s.top_p, s.top_k, s.temperature, s.value_mode) == (0.9, 0, 0.8, "median")


# --- the docs' relative links ---

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose_lines(path: Path) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks (a `# comment` in bash is no heading)."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in _prose_lines(path):
        if heading := re.match(r"#{1,6} (.+)", line):
            anchors.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings_that_exist(page: Path):
    broken = []
    for line in _prose_lines(page):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            if not linked.exists():
                broken.append(f"{target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"
