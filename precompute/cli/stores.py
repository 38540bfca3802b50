"""``precompute info``, ``report``, ``merge`` and ``pack``: what a store holds, its headline figures, shard merging,
and folding a killed run's checkpoint parts into its store file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from precompute.cli.errors import err_console
from precompute.text import listed, printable

console = Console()


def info(
    store: Annotated[Path, typer.Argument(help="A crossling store (.duckdb).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """What a store holds: model, checkpoints, languages, concepts, tables with rows and size on disk."""
    from precompute.store.read import store_info

    data = store_info(store)
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return
    from rich.markup import escape

    from precompute.store import printable

    def e(text: str) -> str:  # a store's strings are data: shown as text, never as markup or control codes
        return escape(printable(text))

    console.print(
        f"[bold]{e(data['store'])}[/] (schema v{data['schema_version']}, opens in DuckDB "
        f"{e(str(data.get('opens_in_duckdb')))})",
        soft_wrap=True,
    )
    if data.get("progress"):  # an unfinished run (or one shard of a run): said before anything else
        console.print(f"[yellow]{e(data['progress'])}[/]", soft_wrap=True, highlight=False)
    for r in data["runs"]:
        console.print(
            f"model: [bold]{e(r['model_id'])}[/]  run {e(r['run_id'])}  "
            f"device {e(str(r['device']))} {e(str(r['dtype']))}"
        )
        if r["model_card"]:
            console.print(f"  {e(r['model_card'].splitlines()[0])}")
    ck = Table("checkpoint", "step", "tokens seen", title="checkpoints")
    for c in data["checkpoints"]:
        ck.add_row(e(c["checkpoint"]), str(c["step"]), str(c["tokens_seen"]))
    console.print(ck)
    console.print(f"languages ({len(data['languages'])}): {e(', '.join(data['languages']))}")
    console.print(f"concepts ({len(data['concepts'])}): {e(', '.join(data['concepts']))}")
    for line in concept_set_lines(data.get("concept_set") or {}):
        console.print(e(line), highlight=False, soft_wrap=True)
    sizes = data.get("table_bytes") or {}
    tables = Table("table", "rows", "on disk (approx.)", title=f"tables (file {_bytes(data.get('file_bytes'))})")
    for name, n in data["tables"].items():
        tables.add_row(name, f"{n:,}", _bytes(sizes.get(name)))
    console.print(tables)
    if data.get("unpacked_parts"):
        console.print(
            f"[yellow]{data['unpacked_parts']} checkpoint(s) are part files beside the store[/] "
            f"({e(data['store'])}.parts/), not yet packed into it: a run is writing it, or was stopped; "
            f"`precompute pack {e(data['store'])}` makes it one file again",
            soft_wrap=True,
        )
    if data["stage_timings"]:
        timings = Table("stage", "seconds (all checkpoints)", "tokens/s", "peak MiB", title="stage timings")
        for t in data["stage_timings"]:
            timings.add_row(
                e(t["stage"]),
                f"{t['seconds']:.1f}",
                f"{t['tokens_per_s']:,.0f}" if t["tokens_per_s"] else "",
                f"{t['peak_mem_mb']:,.0f}" if t["peak_mem_mb"] else "",
            )
        console.print(timings)


def _bytes(n: int | None) -> str:
    """``1.2 MiB``: sizes as a person reads them (empty when unknown)."""
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return ""


def concept_set_lines(concept_set: dict) -> list[str]:
    """What `info` says about the concept set: name, licence, the command that built it, files and hashes."""
    prov = concept_set.get("provenance") or {}
    sha = concept_set.get("sha256") or ""
    if not prov:
        return [f"concept set: sha256 {sha} (no provenance recorded)"] if sha else []
    lines = [f"concept set: {prov.get('name', '(unnamed)')}, sha256 {sha}"]
    for key in ("license", "command", "cldr_version"):
        if prov.get(key):
            lines.append(f"  {key}: {prov[key]}")
    for source in prov.get("sources") or []:
        if isinstance(source, dict):
            lines.append(
                f"  source: {source.get('file')} ({source.get('lang')}, {source.get('lines')} lines) "
                f"sha256 {source.get('sha256')}"
            )
    for key in ("keywords", "lexicon"):
        item = prov.get(key)
        if isinstance(item, dict):
            lines.append(f"  {key}: {item.get('file')} sha256 {item.get('sha256')}")
    subset = prov.get("subset")
    if isinstance(subset, dict):
        lines.append(f"  subset of sha256 {subset.get('parent_sha256')}")
    return lines


def report(
    store: Annotated[Path, typer.Argument(help="A crossling store (.duckdb).")],
) -> None:
    """The headline figures of a store, first vs last checkpoint (the numbers the README quotes)."""
    from precompute.store.read import read_progress, unfinished_hint
    from precompute.store.report import headline_report

    text = headline_report(store)
    progress = read_progress(store)
    if progress is not None and progress.summary():  # the figures of an unfinished run are not the run's
        hint = f"; {unfinished_hint(store, progress)}" if progress.unfinished else ""
        err_console.print(
            f"[yellow]warning:[/] {escape(printable(f'{store}: {progress.summary()}{hint}'))}",
            soft_wrap=True,
            highlight=False,
        )
    typer.echo(text)


def merge(
    inputs: Annotated[list[Path], typer.Argument(help="Stores of one run's shards (.duckdb).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Merged store to create, or to extend if it holds the same run.")
    ],
    allow_partial: Annotated[
        bool,
        typer.Option(
            "--allow-partial",
            help="Also merge shards whose run is unfinished (the merged store records what is missing).",
        ),
    ] = False,
) -> None:
    """Merge shard stores of one run into OUT; refuses stores of different models, configs or concept sets, and
    shards whose run is unfinished (unless --allow-partial)."""
    from precompute.store.merge import merge_stores

    summary = merge_stores(list(inputs), out, console=err_console, allow_partial=allow_partial)
    for warning in summary.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(printable(warning))}", soft_wrap=True, highlight=False)
    for path, names in summary.added.items():
        err_console.print(
            escape(f"  {path}: {len(names)} checkpoint(s) {', '.join(names)}"), soft_wrap=True, highlight=False
        )
    for name, path in summary.duplicates:
        err_console.print(
            escape(f"  {path}: {name} already merged with identical rows; kept once"), soft_wrap=True, highlight=False
        )
    if summary.missing:
        shown = listed(summary.missing)
        err_console.print(
            f"[yellow]warning:[/] {escape(printable(str(out)))}: unfinished: it lacks {len(summary.missing)} of the "
            f"run's {len(summary.planned or [])} planned checkpoint(s) ({escape(printable(shown))}); it says so until "
            "they are merged in",
            soft_wrap=True,
            highlight=False,
        )
    typer.echo(
        f"{out}: run {summary.run_id}, {summary.n_added} checkpoint(s) added"
        + (f", {len(summary.duplicates)} duplicate(s) skipped" if summary.duplicates else "")
    )


def pack(
    store: Annotated[Path, typer.Argument(help="A crossling store (.duckdb) with checkpoint parts beside it.")],
) -> None:
    """Fold the checkpoint parts a stopped run left (STORE.parts/) into STORE, so that it is one file again.

    A run packs its parts itself when it ends; this is for a run that was killed or failed. Readers keep reading
    throughout; a run still writing the store is refused (one writer at a time).
    """
    from precompute.store import StoreWriter, open_readonly

    open_readonly(store).close()  # missing, not DuckDB, not crossling: the store's own one-line refusals
    with StoreWriter(store) as writer:
        count = writer.pack()
    console.print(
        f"{escape(str(store))}: {count} checkpoint part(s) packed"
        if count
        else f"{escape(str(store))}: no checkpoint parts to pack; it is one file",
        soft_wrap=True,
    )
