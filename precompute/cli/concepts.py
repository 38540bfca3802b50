"""``precompute concepts``: build the built-in CLDR concept set, or check a concept-set file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from precompute.cli.errors import fail, friendly_errors
from precompute.inputs.cldr import DEFAULT_CONTEXTS, DEFAULT_LANGUAGES
from precompute.inputs.concepts import (
    DEFAULT_CONCEPT_SET,
    ConceptSet,
    ConceptSetError,
    load_concept_set,
)

concepts_app = typer.Typer(
    help="Build the built-in multilingual concept set from CLDR, or validate your own concept set.",
    no_args_is_help=True,
    add_completion=False,
)

_out = Console()




def _summary(cs: ConceptSet, title: str) -> Table:
    """Per-language table: script, concepts, contexts, min contexts per concept."""
    per = (
        cs.sentences.group_by("lang", "concept_id")
        .len()
        .group_by("lang")
        .agg(pl.len().alias("concepts"), pl.col("len").sum().alias("contexts"), pl.col("len").min().alias("min"))
    )
    table = Table(title=title)
    for name, justify in [("lang", "left"), ("name", "left"), ("script", "left"), ("concepts", "right"),
                          ("contexts", "right"), ("min / concept", "right")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    joined = cs.languages.join(per, on="lang", how="left").sort("lang")
    for row in joined.iter_rows(named=True):
        table.add_row(
            escape(row["lang"]), row["name"] or "", row["script"] or "", str(row["concepts"]), str(row["contexts"]),
            str(row["min"]),
        )
    return table


def _categories(cs: ConceptSet) -> Table:
    table = Table(title="concepts per category")
    table.add_column("category")
    table.add_column("concepts", justify="right")
    table.add_column("ids")
    cats = cs.concepts.with_columns(pl.col("category").fill_null("(none)")).group_by("category").agg(
        pl.col("concept_id").sort()
    ).sort("category")
    for cat, ids in cats.iter_rows():
        shown = ", ".join(ids[:12]) + (", ..." if len(ids) > 12 else "")
        table.add_row(escape(cat), str(len(ids)), escape(shown))
    return table


def _print_counts(cs: ConceptSet) -> None:
    c = cs.counts()
    _out.print(
        f"{c['languages']} languages in {c['scripts']} scripts, {c['concepts']} concepts, "
        f"{c['sentences']} contexts ({c['with_span']} with span); contexts per (concept, language): "
        f"min {c['min_contexts']}, max {c['max_contexts']}",
        highlight=False,
    )
    _out.print(f"sha256 {cs.sha256}", highlight=False)


@concepts_app.command("build")
@friendly_errors
def build(
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")] = DEFAULT_CONCEPT_SET,
    languages: Annotated[
        str, typer.Option("--languages", help="Comma-separated CLDR language codes.")
    ] = ",".join(DEFAULT_LANGUAGES),
    contexts: Annotated[
        int, typer.Option("--contexts", min=2, help="Contexts per (concept, language).")
    ] = DEFAULT_CONTEXTS,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the deterministic sampling.")] = 0,
) -> None:
    """Regenerate the concept set from babel's CLDR data (deterministic: same inputs, same bytes)."""
    from precompute.inputs.cldr import build_concept_set, provenance, write_concept_set

    langs = [x.strip() for x in languages.split(",") if x.strip()]
    try:
        frame = build_concept_set(langs, contexts_per_pair=contexts, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    write_concept_set(frame, out, provenance(langs, contexts, seed))
    try:
        cs = load_concept_set(out)
    except ConceptSetError as exc:  # the builder wrote something the loader refuses: a bug
        fail(str(exc), exc.problems)
    _out.print(_categories(cs))
    _out.print(_summary(cs, f"{out}"))
    _print_counts(cs)
    _out.print(f"wrote {out} ({out.stat().st_size:,} bytes)", highlight=False)


@concepts_app.command("check")
@friendly_errors
def check(
    file: Annotated[Path, typer.Argument(help="Concept set: .parquet, .tsv or .csv.")],
) -> None:
    """Validate a concept set file and print its counts; exit 1 with a one-line error if it is unusable."""
    try:
        cs = load_concept_set(file)
    except ConceptSetError as exc:
        fail(str(exc), exc.problems)
    _out.print(_categories(cs))
    _out.print(_summary(cs, str(file)))
    _print_counts(cs)
    if cs.provenance:
        for key in ("babel_version", "cldr_version", "license", "command"):
            if key in cs.provenance:
                _out.print(f"{key}: {escape(str(cs.provenance[key]))}", highlight=False)
    _out.print("[green]ok[/]")
