"""Load and validate a concept set: concept x language x contexts (with the concept word's span).

A concept set is a table with one row per context: ``concept_id``, ``lang``, ``text`` and, optionally,
``span_start``/``span_end`` (character offsets of the concept word in ``text``, as Python string
offsets, i.e. Unicode code points), ``category`` and ``label``. Parquet, TSV or CSV (by extension).
The built-in set (``data/concepts.parquet`` in the source tree, shipped inside the package; named ``builtin`` in
a run config and on the command line) is built from CLDR by :mod:`precompute.inputs.cldr`.

Every problem is reported as a :class:`ConceptSetError` whose message is one line naming the file and,
where it applies, the 1-based data row (the header is not counted) and the column; all row problems
found are kept in ``ConceptSetError.problems``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from precompute.inputs.langcodes import canonical_language, language_code_problem, not_a_language
from precompute.store.schema import polars_schema
from precompute.text import first_line as _first_line

BUILTIN_CONCEPT_SET = "builtin"  # how a config or the command line names the built-in set


def _builtin_concept_set() -> Path:
    """Where the built-in set is: inside the installed package (a wheel: setup.py copies data/concepts.parquet
    there), else in the source checkout this module runs from (an editable install), where data/ is its source."""
    packaged = Path(__file__).resolve().with_name("concepts.parquet")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "data" / "concepts.parquet"


DEFAULT_CONCEPT_SET = _builtin_concept_set()


def concept_set_path(name: str | Path, base_dir: str | Path = ".") -> Path:
    """The file a concept-set name refers to: ``builtin`` is the built-in set; any other name is a path,
    relative to ``base_dir`` (a run config's folder) unless absolute."""
    if str(name) == BUILTIN_CONCEPT_SET:
        return DEFAULT_CONCEPT_SET
    path = Path(name).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


REQUIRED_COLUMNS = ("concept_id", "lang", "text")
OPTIONAL_COLUMNS = ("span_start", "span_end", "category", "label")
PROVENANCE_KEY = "crossling_provenance"

# The frames a concept set gives the store: its tables' columns and types, as the store schema declares them.
SENTENCE_SCHEMA: dict[str, pl.DataType] = polars_schema("sentences")
CONCEPT_SCHEMA: dict[str, pl.DataType] = polars_schema("concepts")
LANGUAGE_SCHEMA: dict[str, pl.DataType] = polars_schema("languages")

# Top-level language family of common languages (Glottolog / Ethnologue top level).
FAMILIES: dict[str, str] = {
    **dict.fromkeys(
        "en de nl sv da no nb nn is af yi lb fo fy fr es it pt ro ca gl oc co sc rm wa la ru uk be pl cs "
        "sk sl hr sr bs mk bg hi ur bn pa gu mr ne si as or fa ps ku tg el hy sq lt lv ga gd cy br "
        "sa".split(),
        "Indo-European",
    ),
    **dict.fromkeys("zh my bo yue wuu".split(), "Sino-Tibetan"),
    **dict.fromkeys("ja".split(), "Japonic"),
    **dict.fromkeys("ko".split(), "Koreanic"),
    **dict.fromkeys("ar he am ti mt so ha om".split(), "Afro-Asiatic"),
    **dict.fromkeys("fi et hu se".split(), "Uralic"),
    **dict.fromkeys("tr az kk uz ky tk tt ug ba".split(), "Turkic"),
    **dict.fromkeys("ta te kn ml".split(), "Dravidian"),
    **dict.fromkeys("id ms tl jv su mg haw mi sm to fil".split(), "Austronesian"),
    **dict.fromkeys("sw yo ig zu xh rw sn wo ln lg ak ee tn st ny".split(), "Atlantic-Congo"),
    **dict.fromkeys("vi km".split(), "Austroasiatic"),
    **dict.fromkeys("th lo".split(), "Kra-Dai"),
    **dict.fromkeys("ka".split(), "Kartvelian"),
    **dict.fromkeys("mn".split(), "Mongolic"),
    **dict.fromkeys("eu".split(), "Basque (isolate)"),
}


class ConceptSetError(Exception):
    """A concept set that cannot be used; the message is one line naming file, row and column."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


def _lang_locale(code: str) -> Any:
    from babel import Locale

    return Locale.parse(code.replace("-", "_"))


@lru_cache(maxsize=4096)
def is_valid_language(code: str) -> bool:
    """True if babel knows ``code`` as a locale (``de``, ``zh_Hant``, ``pt-BR``) or a language name."""
    from babel import Locale

    if not code or code != code.strip() or not_a_language(code):  # und, zxx, mul, ... name no language
        return False
    try:
        _lang_locale(code)
        return True
    except Exception:
        return code in Locale.parse("en").languages


@lru_cache(maxsize=4096)
def language_info(code: str) -> tuple[str | None, str | None, str | None]:
    """(English name, script, family) of a language code, from babel's CLDR data."""
    from babel import Locale
    from babel.core import get_global, parse_locale

    en = Locale.parse("en")
    base = code.replace("-", "_")
    name: str | None = None
    script: str | None = None
    try:
        loc = _lang_locale(code)
        name = loc.get_display_name("en")
        script = loc.script
        base_lang = loc.language
    except Exception:
        name = en.languages.get(code)
        base_lang = base.split("_")[0]
    if script is None:
        likely = get_global("likely_subtags")
        for key in (base, base_lang):
            if key in likely:
                try:
                    script = parse_locale(likely[key])[2]
                except ValueError:
                    script = None
                if script:
                    break
    return name, script, FAMILIES.get(base_lang)


@dataclass
class ConceptSet:
    """A validated concept set: sentences (with spans), concepts, languages and where it came from."""

    sentences: pl.DataFrame
    concepts: pl.DataFrame
    languages: pl.DataFrame
    sha256: str
    provenance: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def subset(
        self,
        languages: list[str] | None = None,
        concept_ids: list[str] | None = None,
        max_contexts: int = 0,
    ) -> ConceptSet:
        """A part of the set: some languages and/or concepts, at most ``max_contexts`` contexts per
        (concept, language) (the first ones in sentence order; 0 keeps all). Sentence ids restart at 0.
        """
        where = self.path or "concept set"
        frame = self.sentences
        if languages:
            languages = [canonical_language(lang) for lang in languages]
            have = set(self.languages["lang"].to_list())
            unknown = [lang for lang in languages if lang not in have]
            if unknown:
                why = next((p for p in map(language_code_problem, unknown) if p), None)  # "en ", "und"
                raise ConceptSetError(
                    f"{where}: unknown language(s) {_listing(unknown)} "
                    f"(available: {', '.join(sorted(have))})" + (f"; {why}" if why else "")
                )
            frame = frame.filter(pl.col("lang").is_in(list(languages)))
        if concept_ids:
            have = set(self.concepts["concept_id"].to_list())
            unknown = [c for c in concept_ids if c not in have]
            if unknown:
                shown = sorted(have)
                more = f", ... ({len(shown)} in all)" if len(shown) > 20 else ""
                raise ConceptSetError(
                    f"{where}: unknown concept(s) {_listing(unknown)} (available: {', '.join(shown[:20])}{more})"
                )
            frame = frame.filter(pl.col("concept_id").is_in(list(concept_ids)))
        if max_contexts < 0 or max_contexts == 1:
            raise ConceptSetError(f"{where}: max_contexts must be 0 (all) or >= 2, got {max_contexts}")
        if max_contexts > 0:
            frame = frame.filter(pl.int_range(pl.len()).over("concept_id", "lang") < max_contexts)
        n_concepts = frame["concept_id"].n_unique()
        if n_concepts < 2:
            raise ConceptSetError(
                f"{where}: the subset has {n_concepts} concept(s); at least 2 are needed (negatives for AP)"
            )
        # Every language scores its concepts against its other concepts: one concept alone gives AP = 1.
        lonely = (
            frame.group_by("lang")
            .agg(pl.col("concept_id").unique().sort())
            .filter(pl.col("concept_id").list.len() < 2)
            .sort("lang")
        )
        if lonely.height:
            lang, only = lonely.row(0)
            raise ConceptSetError(
                f"{where}: in the chosen subset, language {lang!r} has only concept {only[0]!r}; every "
                "language needs at least 2 concepts (negatives for AP): add concepts it has, or drop it"
            )
        frame = frame.sort("sentence_id").with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("sentence_id"))
        used_c = set(frame["concept_id"].unique().to_list())
        used_l = set(frame["lang"].unique().to_list())
        concepts = self.concepts.filter(pl.col("concept_id").is_in(list(used_c)))
        langs = self.languages.filter(pl.col("lang").is_in(list(used_l)))
        prov = dict(self.provenance)
        prov["subset"] = {
            "languages": list(languages) if languages else None,
            "concept_ids": list(concept_ids) if concept_ids else None,
            "max_contexts": max_contexts,
            "parent_sha256": self.sha256,
        }
        return replace(
            self,
            sentences=frame,
            concepts=concepts,
            languages=langs,
            sha256=content_sha256(frame, concepts),
            provenance=prov,
        )

    def counts(self) -> dict[str, int]:
        """Headline numbers: languages, scripts, concepts, sentences, min/max contexts per pair."""
        per_pair = self.sentences.group_by("concept_id", "lang").len()["len"]
        return {
            "languages": self.languages.height,
            "scripts": self.languages["script"].drop_nulls().n_unique(),
            "concepts": self.concepts.height,
            "sentences": self.sentences.height,
            "pairs": per_pair.len(),
            "min_contexts": int(per_pair.min() or 0),
            "max_contexts": int(per_pair.max() or 0),
            "with_span": int(self.sentences["span_start"].is_not_null().sum()),
        }


def _listing(items: list[str], limit: int = 10) -> str:
    """``'a', 'b', ... (N in all)``: a list of names short enough for a one-line message."""
    shown = ", ".join(repr(x[:40] + "..." if len(x) > 40 else x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def content_sha256(sentences: pl.DataFrame, concepts: pl.DataFrame) -> str:
    """SHA-256 of a canonical JSON-lines serialisation of the sentences and concepts (not file bytes)."""
    h = hashlib.sha256()
    h.update(b"crossling-concept-set-v1\n")
    for row in (
        sentences.sort("sentence_id")
        .select("sentence_id", "concept_id", "lang", "text", "span_start", "span_end")
        .iter_rows()
    ):
        h.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    h.update(b"--concepts--\n")
    for row in concepts.sort("concept_id").select("concept_id", "label", "category").iter_rows():
        h.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()


def _read_table(path: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Read the raw table (all columns as found) and the provenance stored with it."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise ConceptSetError(f"{path}: no such file")
    if path.is_dir():
        raise ConceptSetError(f"{path}: is a directory, not a concept set file")
    if path.stat().st_size == 0:
        raise ConceptSetError(f"{path}: empty file")
    provenance: dict[str, Any] = {}
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path).schema_arrow.metadata or {}
            frame = pl.read_parquet(path)
        except Exception as exc:
            raise ConceptSetError(f"{path}: cannot read as Parquet ({_first_line(exc)})") from None
        raw = meta.get(PROVENANCE_KEY.encode())
        if raw:
            try:
                provenance = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise ConceptSetError(f"{path}: malformed {PROVENANCE_KEY} metadata (not JSON)") from None
        return frame, provenance
    if suffix in (".tsv", ".csv"):
        kind = "TSV" if suffix == ".tsv" else "CSV"
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConceptSetError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
        other = _other_separator(text, "\t" if suffix == ".tsv" else ",")
        if other:
            raise ConceptSetError(
                f"{path}: the header is {other}-separated, but a {suffix} file must be "
                f"{'tab' if suffix == '.tsv' else 'comma'}-separated (save it as such, or rename it to "
                f"{'.csv' if suffix == '.tsv' else '.tsv'} if it is {'comma' if suffix == '.tsv' else 'tab'}-separated)"
            )
        try:
            frame = pl.read_csv(
                path,
                separator="\t" if suffix == ".tsv" else ",",
                quote_char=None if suffix == ".tsv" else '"',
                infer_schema=False,
                has_header=True,
            )
        except Exception as exc:
            where = _ragged_row(path, suffix == ".tsv")
            raise ConceptSetError(f"{path}: {where or f'cannot read as {kind}'} ({_first_line(exc)})") from None
        frame = frame.rename({c: c.strip().lstrip("\ufeff").strip() for c in frame.columns})
        return frame, {"format": kind.lower()}
    raise ConceptSetError(f"{path}: unsupported file type {suffix or '(none)'!r} (use .parquet, .tsv or .csv)")


_SEPARATORS = {";": "semicolon", "\t": "tab", ",": "comma", "|": "pipe"}


def _other_separator(text: str, expected: str) -> str | None:
    """The name of the separator the header really uses, when it is not ``expected`` (else None).

    A semicolon-separated CSV (what spreadsheets write in many locales) would otherwise read as one column,
    or fail on a field count, and the message would not say why.
    """
    header = text.lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    names = {c.strip().strip('"') for c in header.split(expected)}
    if set(REQUIRED_COLUMNS) <= names:
        return None
    for sep, name in _SEPARATORS.items():
        if sep != expected and set(REQUIRED_COLUMNS) <= {c.strip().strip('"') for c in header.split(sep)}:
            return name
    return None


def _ragged_row(path: Path, tsv: bool) -> str | None:
    """Find the first data row whose field count differs from the header's (for a clear message)."""
    import csv

    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return None
            for row, fields in enumerate(reader, start=1):
                if fields and len(fields) != len(header):
                    return f"row {row}: {len(fields)} fields where the header has {len(header)}"
    except (csv.Error, UnicodeDecodeError, OSError):
        return None
    return None


def _col(name: str) -> str:
    return f"column {name!r}"


def _span_values(frame: pl.DataFrame, name: str, where: str, problems: list[tuple[int, str]]) -> list[int | None]:
    """The span column as Python ints (None where empty), recording values that are not integers."""
    series = frame[name]
    out: list[int | None] = []
    for i, value in enumerate(series.to_list(), start=1):
        if value is None or (isinstance(value, str) and not value.strip()):
            out.append(None)
            continue
        parsed: int | None = None
        if isinstance(value, bool):
            parsed = None
        elif isinstance(value, int):
            parsed = value
        elif isinstance(value, float) and value.is_integer():
            parsed = int(value)
        elif isinstance(value, str):
            try:
                parsed = int(value.strip())
            except ValueError:
                parsed = None
        if parsed is None:
            problems.append((i, f"{where}: row {i}, {_col(name)}: not an integer: {value!r}"))
        out.append(parsed)
    return out


def _as_text(frame: pl.DataFrame, name: str, where: str) -> list[str | None]:
    series = frame[name]
    if series.dtype == pl.Null:
        return [None] * frame.height
    if series.dtype not in (pl.Utf8, pl.Categorical, pl.Enum):
        if series.dtype.is_numeric() and name != "text":
            series = series.cast(pl.Utf8)
        else:
            raise ConceptSetError(f"{where}: {_col(name)} must hold text, found {series.dtype}")
    return series.cast(pl.Utf8).to_list()


def validate_frame(frame: pl.DataFrame, where: str) -> pl.DataFrame:
    """Check a raw concept-set table; return it typed (concept_id, lang, text, span_*, category, label).

    ``where`` names the file in messages. Raises :class:`ConceptSetError` (first problem in the
    message, all of them in ``.problems``).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ConceptSetError(
            f"{where}: missing required column {missing[0]!r} (found: {', '.join(map(repr, frame.columns)) or 'none'})"
        )
    if frame.height == 0:
        raise ConceptSetError(f"{where}: no data rows")
    has_start, has_end = "span_start" in frame.columns, "span_end" in frame.columns
    if has_start != has_end:
        given, absent = ("span_start", "span_end") if has_start else ("span_end", "span_start")
        raise ConceptSetError(f"{where}: {_col(absent)} is missing although {_col(given)} is given")

    concept_ids = _as_text(frame, "concept_id", where)
    written = _as_text(frame, "lang", where)
    langs = [canonical_language(code) if code else code for code in written]  # EN -> en, zh-hans -> zh-Hans
    texts = _as_text(frame, "text", where)
    labels = _as_text(frame, "label", where) if "label" in frame.columns else [None] * frame.height
    cats = _as_text(frame, "category", where) if "category" in frame.columns else [None] * frame.height

    problems: list[tuple[int, str]] = []
    starts: list[int | None] = [None] * frame.height
    ends: list[int | None] = [None] * frame.height
    if has_start:
        starts = _span_values(frame, "span_start", where, problems)
        ends = _span_values(frame, "span_end", where, problems)
    bad_spans = {row for row, _ in problems}

    seen: dict[tuple[str, str, str], int] = {}
    spelling: dict[str, tuple[str, int]] = {}  # canonical code -> (first spelling, its row)
    for i in range(frame.height):
        row = i + 1
        cid, lang, text = concept_ids[i], langs[i], texts[i]
        if lang:
            first, first_row = spelling.setdefault(lang, (written[i], row))
            if written[i] != first:
                message = (
                    f"{where}: row {row}, {_col('lang')}: {written[i]!r} and {first!r} (row {first_row}) "
                    f"are one language ({lang!r}) written two ways; use one code"
                )
                problems.append((row, message))
        if cid is None or not cid.strip():
            problems.append((row, f"{where}: row {row}, {_col('concept_id')}: empty concept id"))
        if lang is None or not lang.strip():
            problems.append((row, f"{where}: row {row}, {_col('lang')}: empty language code"))
        elif not is_valid_language(lang):
            why = not_a_language(lang) or f"unknown language code {lang!r}"
            problems.append((row, f"{where}: row {row}, {_col('lang')}: {why}"))
        if text is None or not text.strip():
            problems.append((row, f"{where}: row {row}, {_col('text')}: empty or whitespace-only text"))
        elif "\x00" in text:
            problems.append((row, f"{where}: row {row}, {_col('text')}: contains a NUL character"))
        if has_start and row not in bad_spans:
            s, e = starts[i], ends[i]
            if (s is None) != (e is None):
                absent = "span_end" if e is None else "span_start"
                problems.append(
                    (row, f"{where}: row {row}, {_col(absent)}: empty although the other span column is given")
                )
            elif s is not None and e is not None:
                n = len(text) if text is not None else 0
                if s < 0:
                    problems.append((row, f"{where}: row {row}, {_col('span_start')}: negative start {s}"))
                elif s >= e:
                    problems.append((row, f"{where}: row {row}, {_col('span_start')}: start {s} is not before end {e}"))
                elif e > n:
                    problems.append(
                        (
                            row,
                            f"{where}: row {row}, {_col('span_end')}: end {e} is past the end of the text (length {n})",
                        )
                    )
        if cid is not None and lang is not None and text is not None:
            key = (cid, lang, text)
            if key in seen:
                problems.append(
                    (
                        row,
                        f"{where}: row {row}, {_col('text')}: duplicate of row {seen[key]} "
                        f"(same concept_id, lang and text)",
                    )
                )
            else:
                seen[key] = row
    if problems:
        problems.sort(key=lambda p: p[0])
        _raise(problems)

    typed = pl.DataFrame(
        {
            "concept_id": concept_ids,
            "lang": langs,
            "text": texts,
            "span_start": starts,
            "span_end": ends,
            "category": cats,
            "label": labels,
        },
        schema={
            "concept_id": pl.Utf8,
            "lang": pl.Utf8,
            "text": pl.Utf8,
            "span_start": pl.Int32,
            "span_end": pl.Int32,
            "category": pl.Utf8,
            "label": pl.Utf8,
        },
    ).with_row_index("row", offset=1)

    # Whole-set checks: negatives for AP, and more than one context per (concept, language).
    per_lang = (
        typed.group_by("lang", maintain_order=True)
        .agg(pl.col("concept_id").n_unique().alias("n"), pl.col("row").min(), pl.col("concept_id").first())
        .filter(pl.col("n") < 2)
    )
    for lang, n, row, cid in per_lang.select("lang", "n", "row", "concept_id").iter_rows():
        problems.append(
            (
                row,
                f"{where}: row {row}, {_col('lang')}: language {lang!r} has only {n} concept ({cid!r}); "
                "at least 2 are needed (negatives for AP)",
            )
        )
    per_pair = (
        typed.group_by("concept_id", "lang", maintain_order=True)
        .agg(pl.len().alias("n"), pl.col("row").min())
        .filter(pl.col("n") < 2)
    )
    for cid, lang, n, row in per_pair.select("concept_id", "lang", "n", "row").iter_rows():
        problems.append(
            (
                row,
                f"{where}: row {row}, {_col('concept_id')}: concept {cid!r} has only {n} context in "
                f"language {lang!r}; at least 2 are needed",
            )
        )
    # One label and one category per concept.
    for name in ("label", "category"):
        conflicts = (
            typed.filter(pl.col(name).is_not_null())
            .group_by("concept_id", maintain_order=True)
            .agg(pl.col(name).unique(maintain_order=True).alias("values"), pl.col("row"), pl.col(name))
            .filter(pl.col("values").list.len() > 1)
        )
        for cid, values, rows, vals in conflicts.select("concept_id", "values", "row", name).iter_rows():
            row = next(r for r, v in zip(rows, vals) if v != values[0])
            problems.append(
                (
                    row,
                    f"{where}: row {row}, {_col(name)}: concept {cid!r} has {name} {vals[rows.index(row)]!r} "
                    f"here but {values[0]!r} in row {rows[0]}",
                )
            )
    if problems:
        problems.sort(key=lambda p: p[0])
        _raise(problems)
    return typed.drop("row")


def _raise(problems: list[tuple[int, str]]) -> None:
    messages = [m for _, m in problems]
    first = messages[0]
    if len(messages) > 1:
        first += f" (and {len(messages) - 1} more problem{'s' if len(messages) > 2 else ''})"
    raise ConceptSetError(first, messages)


def concept_set_from_frame(
    frame: pl.DataFrame, *, where: str = "concept set", provenance: dict[str, Any] | None = None
) -> ConceptSet:
    """Validate a raw table and build the :class:`ConceptSet` (stable order: concept, language, row)."""
    typed = validate_frame(frame, where)
    sentences = (
        typed.sort("concept_id", "lang", maintain_order=True)
        .with_row_index("sentence_id")
        .select(
            pl.col("sentence_id").cast(pl.Int64),
            "concept_id",
            "lang",
            "text",
            "span_start",
            "span_end",
        )
    )
    concepts = (
        typed.group_by("concept_id")
        .agg(pl.col("label").drop_nulls().first(), pl.col("category").drop_nulls().first())
        .with_columns(pl.coalesce("label", "concept_id").alias("label"))
        .sort("concept_id")
        .select("concept_id", "label", "category")
    )
    langs = sorted(typed["lang"].unique().to_list())
    info = [language_info(lang) for lang in langs]
    languages = pl.DataFrame(
        {
            "lang": langs,
            "name": [i[0] for i in info],
            "script": [i[1] for i in info],
            "family": [i[2] for i in info],
        },
        schema=LANGUAGE_SCHEMA,
    )
    return ConceptSet(
        sentences=sentences,
        concepts=concepts.cast(CONCEPT_SCHEMA),  # type: ignore[arg-type]
        languages=languages,
        sha256=content_sha256(sentences, concepts),
        provenance=dict(provenance or {}),
        path=where,
    )


def load_concept_set(path: str | Path = DEFAULT_CONCEPT_SET) -> ConceptSet:
    """Read and validate a concept set from Parquet, TSV or CSV (chosen by the file extension)."""
    path = Path(path)
    frame, provenance = _read_table(path)
    return concept_set_from_frame(frame, where=str(path), provenance=provenance)
