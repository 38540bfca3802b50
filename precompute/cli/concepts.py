"""``precompute concepts``: build the built-in CLDR concept set, build one from a real corpus, or check a file."""

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
    BUILTIN_CONCEPT_SET,
    ConceptSet,
    ConceptSetError,
    concept_set_path,
    load_concept_set,
)

concepts_app = typer.Typer(
    help="Build the built-in multilingual concept set from CLDR, build a natural-sentence set from a parallel or "
    "monolingual corpus, or validate your own concept set.",
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
    for name, justify in [
        ("lang", "left"),
        ("name", "left"),
        ("script", "left"),
        ("concepts", "right"),
        ("contexts", "right"),
        ("min / concept", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    joined = cs.languages.join(per, on="lang", how="left").sort("lang")
    for row in joined.iter_rows(named=True):
        table.add_row(
            escape(row["lang"]),
            row["name"] or "",
            row["script"] or "",
            str(row["concepts"]),
            str(row["contexts"]),
            str(row["min"]),
        )
    return table


def _categories(cs: ConceptSet) -> Table:
    table = Table(title="concepts per category")
    table.add_column("category")
    table.add_column("concepts", justify="right")
    table.add_column("ids")
    cats = (
        cs.concepts.with_columns(pl.col("category").fill_null("(none)"))
        .group_by("category")
        .agg(pl.col("concept_id").sort())
        .sort("category")
    )
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
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Parquet file to write (default: data/concepts.parquet in the current folder: the source "
            "of the built-in set when run from a checkout).",
        ),
    ] = Path("data/concepts.parquet"),
    languages: Annotated[str, typer.Option("--languages", help="Comma-separated CLDR language codes.")] = ",".join(
        DEFAULT_LANGUAGES
    ),
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
    out.parent.mkdir(parents=True, exist_ok=True)
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
    file: Annotated[
        str,
        typer.Argument(
            help=f"Concept set: .parquet, .tsv or .csv, or {BUILTIN_CONCEPT_SET!r} (the default) for the built-in set."
        ),
    ] = BUILTIN_CONCEPT_SET,
) -> None:
    """Validate a concept set file and print its counts; exit 1 with a one-line error if it is unusable."""
    try:
        cs = load_concept_set(concept_set_path(file))
    except ConceptSetError as exc:
        fail(str(exc), exc.problems)
    _out.print(_categories(cs))
    _out.print(_summary(cs, str(file)))
    _print_counts(cs)
    if cs.provenance:
        _print_provenance(cs.provenance)
    _out.print("[green]ok[/]")


def _print_provenance(prov: dict) -> None:
    """Where a set comes from: versions, licence, command, and for corpus-built sets the files and hashes."""
    for key in ("method", "babel_version", "cldr_version", "license", "command"):
        if key in prov:
            _out.print(f"{key}: {escape(str(prov[key]))}", highlight=False)
    for source in prov.get("sources", []):
        _out.print(
            f"source: {escape(str(source.get('file')))} ({escape(str(source.get('lang')))}, {source.get('lines')} "
            f"lines) sha256 {escape(str(source.get('sha256')))}",
            highlight=False,
        )
    for key in ("keywords", "lexicon"):
        if isinstance(prov.get(key), dict):
            item = prov[key]
            _out.print(
                f"{key}: {escape(str(item.get('file')))} sha256 {escape(str(item.get('sha256')))}", highlight=False
            )


def _command_line(name: str, args: list[tuple[str, object]]) -> str:
    """The command as a user would retype it, with file names only (no paths of this machine)."""
    parts = [f"precompute concepts {name}"]
    for flag, value in args:
        if value is None or value is False:
            continue
        text = Path(value).name if isinstance(value, Path) else str(value)
        shown = text if text and all(c.isalnum() or c in "._,-/" for c in text) else repr(text)
        parts.append(shown if not flag else f"{flag} {shown}")
    return " ".join(parts)


def _finish_built(result, out: Path) -> None:
    """Validate and write a corpus-built set, then print what check prints plus the builder's report."""
    from precompute.inputs.corpora import NO_LICENCE, write_built_set

    write_built_set(result, out)
    try:
        cs = load_concept_set(out)
    except ConceptSetError as exc:  # the builder wrote something the loader refuses: a bug
        fail(str(exc), exc.problems)
    _out.print(_summary(cs, f"{out}"))
    for line in result.report:
        _out.print(escape(line), highlight=False)
    _print_counts(cs)
    _print_provenance(cs.provenance)
    if cs.provenance.get("license") == NO_LICENCE:
        _out.print("[yellow]warning:[/] no licence recorded: pass --licence with the corpus's licence", highlight=False)
    _out.print(f"wrote {escape(str(out))} ({out.stat().st_size:,} bytes)", highlight=False)


_MAX_HELP = "At most this many contexts per concept (per language for from-corpus); a seeded sample."
_MIN_HELP = "Leave out a concept with fewer contexts than this (per language for from-corpus)."
_LICENCE_HELP = "The corpus's licence, recorded in the provenance (FLORES+: 'CC BY-SA 4.0')."


@concepts_app.command("from-parallel")
@friendly_errors
def from_parallel(
    corpus_dir: Annotated[
        Path, typer.Argument(help="One line-aligned UTF-8 file per language: es.txt or spa_Latn.devtest.")
    ],
    pivot: Annotated[str, typer.Option("--pivot", help="Language the keyword patterns are matched in (e.g. en).")],
    keywords: Annotated[
        Path, typer.Option("--keywords", help="TSV: concept_id, pattern (regex), optional label, category.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    licence: Annotated[str | None, typer.Option("--licence", "--license", help=_LICENCE_HELP)] = None,
    max_per_concept: Annotated[int, typer.Option("--max-per-concept", min=2, help=_MAX_HELP)] = 100,
    min_per_concept: Annotated[int, typer.Option("--min-per-concept", min=2, help=_MIN_HELP)] = 5,
    languages: Annotated[
        str | None, typer.Option("--languages", help="Comma-separated languages to keep (default: every file).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the per-concept sample.")] = 0,
) -> None:
    """A natural-sentence set from a parallel corpus: every aligned line whose pivot side matches one concept.

    Lines matching several concepts are dropped; no span is stored (whole-sentence pooling).
    """
    from precompute.inputs.corpora import build_from_parallel

    langs = [x.strip() for x in languages.split(",") if x.strip()] if languages else None
    command = _command_line(
        "from-parallel",
        [
            ("", corpus_dir),
            ("--pivot", pivot),
            ("--keywords", keywords),
            ("--out", out),
            ("--licence", licence),
            ("--max-per-concept", max_per_concept),
            ("--min-per-concept", min_per_concept),
            ("--languages", languages),
            ("--seed", seed or None),
        ],
    )
    result = build_from_parallel(
        corpus_dir,
        pivot,
        keywords,
        max_per_concept=max_per_concept,
        min_per_concept=min_per_concept,
        seed=seed,
        languages=langs,
        licence=licence,
        command=command,
    )
    _finish_built(result, out)


@concepts_app.command("from-corpus")
@friendly_errors
def from_corpus(
    corpus_dir: Annotated[Path, typer.Argument(help="One monolingual UTF-8 file per language, a sentence a line.")],
    lexicon: Annotated[Path, typer.Option("--lexicon", help="TSV: concept_id, lang, form, optional label, category.")],
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    licence: Annotated[str | None, typer.Option("--licence", "--license", help=_LICENCE_HELP)] = None,
    max_per_concept: Annotated[int, typer.Option("--max-per-concept", min=2, help=_MAX_HELP)] = 100,
    min_per_concept: Annotated[int, typer.Option("--min-per-concept", min=2, help=_MIN_HELP)] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the per-(concept, language) sample.")] = 0,
) -> None:
    """A concept set from monolingual text and a lexicon: spans on word boundaries (character sequences in zh/ja)."""
    from precompute.inputs.corpora import build_from_corpus

    command = _command_line(
        "from-corpus",
        [
            ("", corpus_dir),
            ("--lexicon", lexicon),
            ("--out", out),
            ("--licence", licence),
            ("--max-per-concept", max_per_concept),
            ("--min-per-concept", min_per_concept),
            ("--seed", seed or None),
        ],
    )
    result = build_from_corpus(
        corpus_dir,
        lexicon,
        max_per_concept=max_per_concept,
        min_per_concept=min_per_concept,
        seed=seed,
        licence=licence,
        command=command,
    )
    _finish_built(result, out)
