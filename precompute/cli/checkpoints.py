"""``precompute checkpoints``: list what a model or a config resolves to."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()


def checkpoints(
    model: Annotated[
        str,
        typer.Argument(
            help="A hub model id (lists its branches), a local folder of checkpoint directories, or a run config "
            "(.toml: lists the checkpoints it resolves to)."
        ),
    ],
    pattern: Annotated[
        str | None, typer.Option(help="Keep names matching this glob (e.g. 'global_step*'), or a regex after 're:'.")
    ] = None,
    shard: Annotated[str | None, typer.Option(help="With a config: show only shard I/N (e.g. 0/4).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
) -> None:
    """List the checkpoints of MODEL: name, training step, and hub revision (commit) or local path."""
    from precompute.checkpoints import (
        parse_shard,
        resolve_checkpoints,
        resolve_model_checkpoints,
        select_shard,
    )

    rows: list[dict] = []
    if model.endswith(".toml"):
        from precompute.config import load_config

        cfg = load_config(model)
        specs = resolve_checkpoints(cfg, where=model)
        if pattern:
            from precompute.checkpoints import match_names

            keep = set(match_names([c.name for c in specs], pattern))
            specs = [c for c in specs if c.name in keep]
        if shard:
            specs = select_shard(specs, parse_shard(shard))
        title = f"{cfg.model.id}: {len(specs)} checkpoints" + (f" (shard {shard})" if shard else "")
        for c in specs:
            where = str(cfg.resolve(c.path)) if c.path else f"{cfg.model.id}@{c.revision}"
            rows.append({"checkpoint": c.name, "step": c.step, "tokens_seen": c.tokens_seen, "source": where})
    else:
        if shard:
            raise typer.BadParameter("--shard needs a run config (.toml)")
        listed = resolve_model_checkpoints(model, pattern=pattern)
        title = f"{model}: {len(listed)} checkpoints"
        for spec, commit in listed:
            rows.append(
                {
                    "checkpoint": spec.name,
                    "step": spec.step,
                    "tokens_seen": spec.tokens_seen,
                    "source": spec.path if spec.path else f"{model}@{spec.revision}",
                    **({"commit": commit} if commit else {}),
                }
            )
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("checkpoint", "step", "tokens seen", "revision / path", title=escape(title))
    for r in rows:
        source = escape(r["source"] + (f"  ({r['commit'][:10]})" if r.get("commit") else ""))
        table.add_row(
            escape(r["checkpoint"]),
            "" if r["step"] is None else f"{r['step']:,}",
            "" if r["tokens_seen"] is None else f"{r['tokens_seen']:,}",
            source,
        )
    console.print(table)
