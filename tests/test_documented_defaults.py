"""The defaults in the code are the values the docs state (docs/gpu.md, "Which settings are the paper's"): a
default changed in one place and not the other (Tang's filter rate, the permutation test's level, ...) would
silently change published numbers, so each documented value is read from the table and compared with the code.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from precompute.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def _table() -> dict[str, str]:
    """The settings table of docs/gpu.md: first cell (the setting, as written) -> second cell (its value)."""
    rows = {}
    for line in (ROOT / "docs" / "gpu.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`["):
            rows[cells[0]] = cells[1]
    return rows


def _numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?", text)]


DOCS = _table()
CFG = RunConfig()


@pytest.mark.parametrize(
    "setting, value",
    [
        ("`[extract] max_length`", CFG.extract.max_length),
        ("`[experts] min_langs`", CFG.experts.min_langs),
        ("`[experts] permutations`", CFG.experts.permutations),
        ("`[experts] permutation_quantile`", CFG.experts.permutation_quantile),
        ("`[analysis] lape_quantile` (top_rate)", CFG.analysis.lape_quantile),
        ("`[analysis] lape_filter_rate`", CFG.analysis.lape_filter_rate),
        ("`[analysis] lape_bar_ratio`", CFG.analysis.lape_bar_ratio),
    ],
)
def test_numeric_defaults_are_the_documented_ones(setting, value):
    assert setting in DOCS, f"docs/gpu.md no longer lists {setting}"
    assert _numbers(DOCS[setting])[0] == value


def test_probe_defaults_are_the_documented_ones():
    c, max_iter, test_size, max_train = _numbers(DOCS["`[probes] C`, `max_iter`, `test_size`, `max_train`"])
    assert (CFG.probes.C, CFG.probes.max_iter, CFG.probes.test_size, CFG.probes.max_train) == (
        c,
        max_iter,
        test_size,
        max_train,
    )
    assert DOCS["`[probes] seeds`"].startswith("three") and len(CFG.probes.seeds) == 3
    assert "token" in CFG.probes.representations


@pytest.mark.parametrize(
    "setting, value",
    [
        ("`[extract] pooling`", CFG.extract.pooling),
        ("`[experts] correction`", CFG.experts.correction),
        ("`[analysis] lape_selection`", CFG.analysis.lape_selection),
    ],
)
def test_choice_defaults_are_the_documented_ones(setting, value):
    assert re.match(r'`"([^"]+)"`', DOCS[setting]).group(1) == value


def test_overlap_defaults_are_the_documented_ones():
    text = DOCS["`[experts] overlap_k` / `overlap_measure`"]
    assert _numbers(text)[0] == CFG.experts.overlap_k == 0 and CFG.experts.overlap_top == CFG.experts.top_k
    assert re.search(r'`"([^"]+)"`', text).group(1) == CFG.experts.overlap_measure


def test_real_model_configs_use_the_papers_expert_k():
    k = _numbers(DOCS["`[experts] top_k`"])[0]
    for name in ("bloom-560m-intermediate", "bloom-1b1-intermediate", "bloom-7b1-intermediate", "xglm-local"):
        data = tomllib.loads((ROOT / "configs" / f"{name}.toml").read_text(encoding="utf-8"))
        assert data["experts"]["top_k"] == k, name


def test_steering_sampling_defaults_are_suau_et_al():
    """ml-selfcond's generate_seq: nucleus 0.9, no top-k cut, temperature 0.8 (the mission's settings)."""
    s = CFG.steering
    assert (s.top_p, s.top_k, s.temperature, s.value_mode) == (0.9, 0, 0.8, "median")
