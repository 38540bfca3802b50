"""``precompute demo``: train the tiny multilingual model, write its run config, run the pipeline.

Every path is the caller's (``--out``, ``--work``; by default ``data/demo.duckdb`` and ``data/demo_run/`` in the
current folder), never the source tree's. The config is written next to the checkpoints
(``data/demo_run/demo.toml``) and names the built-in concept set ``builtin``, so the demo store can be
reproduced or extended with ``precompute run data/demo_run/demo.toml --out data/demo.duckdb``.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from precompute.config import load_config
from precompute.demo.train import (
    DemoCheckpoint,
    DemoFolderError,
    check_folder,
    refuse_foreign,
    train_demo_model,
    write_owned_file,
)
from precompute.inputs.concepts import BUILTIN_CONCEPT_SET

CONFIG_NAME = "demo.toml"

# Settings of the demo run: the paper's method (max pooling over the context's tokens, Tang et al.'s LAPE, steering
# with Spanish experts from the start token), sized for 2 CPU cores: K = 50 experts of 2,048 units instead of 500,
# 3 seeds instead of 100 (crossling's choices for the demo; see docs/settings.md for the paper's).
DEMO_SETTINGS = {
    "extract": {"batch_tokens": 4096, "max_length": 64, "pooling": "max"},
    "probes": {"representations": ["mean", "token"], "seeds": [0, 1, 2], "max_train": 3000},
    "experts": {"top_k": 50, "min_langs": 3},
    # The paper steers with Spanish concept experts and looks at the language of what comes out.
    "steering": {
        "enabled": True,
        "concepts": ["monday", "march", "brazil"],
        "source_langs": ["es"],
        "n_neurons": [0, 50],
        "seeds": [0, 1, 2],
    },
}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def demo_config_text(checkpoints: list[DemoCheckpoint], work: Path, model_card: str) -> str:
    """The demo's run config as TOML (paths relative to the config's folder; the built-in concept set by name)."""
    lines = [
        "# Written by `precompute demo`: the tiny multilingual demo model's run config.",
        "[model]",
        'id = "crossling-demo"',
        f"card = {_toml_value(model_card)}",
        "",
        "[data]",
        f"concepts = {_toml_value(BUILTIN_CONCEPT_SET)}",
        "",
    ]
    for section, values in DEMO_SETTINGS.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(val)}" for key, val in values.items()]
        lines.append("")
    for ck in checkpoints:
        rel = Path(ck.path).resolve().relative_to(work.resolve())
        lines += [
            "[[checkpoints]]",
            f"name = {_toml_value(ck.name)}",
            f"path = {_toml_value(str(rel))}",
            f"step = {ck.step}",
            f"tokens_seen = {ck.tokens_seen}",
            "",
        ]
    return "\n".join(lines)


def run_demo(*, out: Path, work: Path, force: bool = False, console: Console | None = None) -> Path:
    """Train (or reuse) the demo checkpoints, write the config, and build the demo store."""
    from precompute.demo.train import DEMO_MODEL_CARD
    from precompute.pipeline import run

    console = console or Console(stderr=True)
    work = Path(work)
    check_folder(work)
    # demo.toml is replaced only when the demo wrote it (and nobody edited it since): checked before training.
    refuse_foreign(work, [CONFIG_NAME], "precompute demo")
    if (work / "checkpoints").exists() and not (work / "checkpoints").is_dir():
        raise DemoFolderError(f"{work / 'checkpoints'}: is a file; precompute demo keeps its checkpoints there")
    console.print("[bold]1/2 training the demo model[/] (skipped when its checkpoints exist)")
    checkpoints = train_demo_model(work / "checkpoints", progress=True, force=force)
    config_path = work / CONFIG_NAME
    write_owned_file(work, CONFIG_NAME, demo_config_text(checkpoints, work, DEMO_MODEL_CARD))
    console.print(
        f"[bold]2/2 running the pipeline, steering included[/] ({escape(str(config_path))} -> {escape(str(out))})"
    )
    cfg = load_config(config_path)
    run(cfg, Path(out), force=force, console=console)
    return Path(out)
