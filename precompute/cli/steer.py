"""``precompute steer STORE``: the steering stage on a finished store (see ``precompute.steering.stage``).

Its settings are the run's own ``[steering]`` section, read back from the store (``runs.config_json``); an
option overrides only the setting it names, and is checked by the same declared rules as the config key (a
bad value is refused naming the option). This module only parses: no defaults and no checks of its own.
Every bad input (missing store, unknown concept, language or checkpoint, malformed list) ends in one red line
on stderr and exit status 1, through the one error path (``friendly_errors``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from precompute.cli.errors import err_console as _err
from precompute.cli.errors import friendly_errors
from precompute.config import parse_int_ranges

_out = Console()


def _split(text: str | None, sep: str = ",") -> list[str] | None:
    if text is None:
        return None
    items = [x.strip() for x in text.split(sep)]
    return [x for x in items if x] or None


def _ints(text: str | None, option: str) -> list[int] | None:
    """'0,50' -> [0, 50]; '0-99' -> 0..99 (ranges inclusive, checked before they are expanded: one that runs
    backwards or holds more than ``MAX_RANGE_VALUES`` values is refused); None stays None (the run's setting)."""
    if text is None:
        return None
    return parse_int_ranges(text, option)


def _help(text: str) -> str:
    """Help text as typer shows it (rich markup): every bracket shown as typed (``[steering] seeds``)."""
    return escape(text)


_HELP_RUN = " (default: the run's [steering] setting)"


@friendly_errors
def steer(
    store: Annotated[Path, typer.Argument(help=_help("A crossling store (.duckdb) with experts (precompute run)."))],
    concepts: Annotated[
        str | None,
        typer.Option(
            help=_help(
                "Comma-separated concept ids (default: [steering] concepts, else the 3 with most "
                "shared experts at the last checkpoint)."
            )
        ),
    ] = None,
    source_langs: Annotated[
        str | None,
        typer.Option(
            help=_help(
                "Comma-separated languages the experts come from (default: [steering] "
                "source_langs, else the first non-English language)."
            )
        ),
    ] = None,
    n_neurons: Annotated[
        str | None,
        typer.Option(help=_help("Comma-separated numbers of top experts to fix; 0 = unsteered" + _HELP_RUN + ".")),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help=_help("Sampling seeds, e.g. 7,8 or 0-99, one sample each per prompt" + _HELP_RUN + ".")),
    ] = None,
    prompts: Annotated[
        str | None,
        typer.Option(
            help=_help("Prompts separated by '|'; an empty prompt starts from the start token" + _HELP_RUN + ".")
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help=_help("Tokens to generate per sample" + _HELP_RUN + "."))
    ] = None,
    value_mode: Annotated[
        str | None,
        typer.Option(help=_help("median (fix to the median response on the concept) or zero" + _HELP_RUN + ".")),
    ] = None,
    top_k: Annotated[int | None, typer.Option(help=_help("Top-k cut, 0 = none" + _HELP_RUN + "."))] = None,
    top_p: Annotated[float | None, typer.Option(help=_help("Nucleus sampling mass" + _HELP_RUN + "."))] = None,
    temperature: Annotated[
        float | None, typer.Option(help=_help("Sampling temperature, at least 0.01" + _HELP_RUN + "."))
    ] = None,
    checkpoints: Annotated[str | None, typer.Option(help=_help("Comma-separated checkpoints (default: all)."))] = None,
    device: Annotated[
        str | None, typer.Option(help=_help("auto, cpu, cuda, cuda:1, mps (default: the run's)."))
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help=_help("auto, float32, bfloat16, float16 (default: the run's)."))
    ] = None,
    config_dir: Annotated[
        Path | None,
        typer.Option(
            help=_help(
                "The folder the run's config was in: the store records local checkpoints relative to it "
                "(default: the current folder)."
            )
        ),
    ] = None,
) -> None:
    """Fix a concept's top expert units during generation and record what the model writes, per checkpoint."""
    import polars as pl

    from precompute.pipeline import steer

    overrides: dict[str, Any] = {
        "concepts": _split(concepts),
        "source_langs": _split(source_langs),
        "n_neurons": _ints(n_neurons, "--n-neurons"),
        "seeds": _ints(seeds, "--seeds"),
        "prompts": [p.strip() for p in prompts.split("|")] if prompts is not None else None,
        "max_new_tokens": max_new_tokens,
        "value_mode": value_mode,
        "top_k": top_k,
        "top_p": top_p,
        "temperature": temperature,
    }
    options = {key: "--" + key.replace("_", "-") for key, value in overrides.items() if value is not None}
    summary = steer(
        store,
        checkpoints=_split(checkpoints),
        device=device,
        dtype=dtype,
        console=_err,
        options=options,
        config_dir=config_dir,
        **overrides,
    )
    table = Table("checkpoint", "concept", "source", "N", "outputs", "concept share", "output languages")
    if summary.height:
        grouped = (
            summary.filter(pl.col("share_outputs") > 0)
            .group_by(
                ["checkpoint", "concept_id", "source_lang", "n_neurons", "n_outputs", "share_concept"],
                maintain_order=True,
            )
            .agg(pl_langs())
        )
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
