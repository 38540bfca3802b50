"""``precompute steer STORE``: steer generation with concept neurons (see ``precompute.steering.stage``).

Mounted by ``precompute.cli`` through the one error path (``friendly_errors``). Every bad
input (missing store, unknown concept, language or checkpoint, malformed list) ends in one red line
on stderr and exit status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from precompute.cli.errors import err_console as _err
from precompute.cli.errors import fail

_out = Console()




def _split(text: str | None, sep: str = ",") -> list[str] | None:
    if text is None:
        return None
    items = [x.strip() for x in text.split(sep)]
    return [x for x in items if x] or None


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in (_split(text) or [])]
    except ValueError:
        fail(f"--{what}: expected comma-separated integers, got {text!r}")
    if not values or min(values) < 0:
        fail(f"--{what}: expected non-negative integers, got {text!r}")
    return values


def steer(
    store: Annotated[Path, typer.Argument(help="A crossling store (.duckdb) with experts (precompute run).")],
    concepts: Annotated[
        str | None,
        typer.Option(help="Comma-separated concept ids (default: the 3 with most shared experts at the last checkpoint)."),
    ] = None,
    source_langs: Annotated[
        str | None, typer.Option(help="Comma-separated languages the experts come from (default: first non-English).")
    ] = None,
    n_neurons: Annotated[str, typer.Option(help="Comma-separated numbers of top experts to fix; 0 = unsteered.")] = "0,50",
    seeds: Annotated[int, typer.Option(help="Seeds 0..SEEDS-1, one sample each per prompt.")] = 3,
    prompts: Annotated[
        str | None, typer.Option(help="Prompts separated by '|' (default: one empty prompt = start from BOS).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per sample.")] = 24,
    checkpoints: Annotated[str | None, typer.Option(help="Comma-separated checkpoints (default: all).")] = None,
    value_mode: Annotated[str, typer.Option(help="median (fix to median activation on the concept) or zero.")] = "median",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps.")] = "auto",
) -> None:
    """Fix a concept's top expert units during generation and record what the model writes, per checkpoint."""
    import polars as pl

    from precompute.steering.stage import VALUE_MODES, SteeringError, run_steering
    from precompute.store import StoreError

    if not store.exists():
        fail(f"{store}: no such store")
    if store.is_dir():
        fail(f"{store}: is a directory, not a DuckDB store")
    n_list = _ints(n_neurons, "n-neurons")
    if seeds < 1:
        fail(f"--seeds: need at least 1, got {seeds}")
    if max_new_tokens < 1:
        fail(f"--max-new-tokens: need at least 1, got {max_new_tokens}")
    if value_mode not in VALUE_MODES:
        fail(f"--value-mode: expected one of {', '.join(VALUE_MODES)}, got {value_mode!r}")
    prompt_list = [p.strip() for p in prompts.split("|")] if prompts is not None else [""]
    try:
        summary = run_steering(
            store,
            concepts=_split(concepts),
            source_langs=_split(source_langs),
            n_neurons=n_list,
            seeds=list(range(seeds)),
            prompts=prompt_list,
            max_new_tokens=max_new_tokens,
            checkpoints=_split(checkpoints),
            device=device,
            value_mode=value_mode,
            console=_err,
        )
    except (SteeringError, StoreError) as exc:
        fail(str(exc).strip().splitlines()[0])
    table = Table("checkpoint", "concept", "source", "N", "outputs", "concept share", "output languages")
    if summary.height:
        grouped = summary.filter(pl.col("share_outputs") > 0).group_by(
            ["checkpoint", "concept_id", "source_lang", "n_neurons", "n_outputs", "share_concept"],
            maintain_order=True,
        ).agg(pl_langs())
        for row in grouped.iter_rows():
            table.add_row(*[Text(str(x)) for x in row[:5]], f"{row[5]:.0%}", Text(str(row[6])))
    _out.print(table)


def pl_langs():
    """Polars expression: 'en 67%, de 33%' from the long summary's output_lang/share_outputs."""
    import polars as pl

    return (
        pl.concat_str(
            pl.col("output_lang").fill_null("?"),
            pl.lit(" "),
            (pl.col("share_outputs") * 100).round(0).cast(pl.Int32).cast(pl.Utf8),
            pl.lit("%"),
        )
        .str.join(", ")
        .alias("langs")
    )
