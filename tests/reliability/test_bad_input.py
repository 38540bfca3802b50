"""Bad input, tried systematically.

Every case goes through the command line (``precompute run`` / ``precompute concepts check`` /
``precompute info``) against a copy of a good store: a non-zero exit, exactly one ``error:`` line on
stderr that names the input at fault, no traceback, and the store byte-identical with nothing left next
to it. Property-based (hypothesis) tests cover the config parser, the concept-set validator and stores
cut at random bytes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from precompute import faults
from precompute.cli import app
from precompute.config import ConfigError, config_from_dict
from precompute.inputs.concepts import ConceptSetError, concept_set_from_frame
from precompute.store import writer as store_module
from tests.support.reliability import (
    CONCEPTS,
    LANGS,
    assert_complete_prefix,
    assert_refused,
    checkpoint_names,
    checkpoints,
    config_text,
    copy_of_reference,
    leftovers,
    published_checkpoints,
    raw_connect,
    reference_store,
    runner,
    store_rows,
)

HYPOTHESIS = settings(
    deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# --- the contract ------------------------------------------------------------------------------------


@pytest.fixture()
def store(tmp_path) -> Path:
    """A copy of a good, complete store: the 'previous store' every bad input must leave untouched."""
    return copy_of_reference(tmp_path)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --- run configs ----------------------------------------------------------------------------------------

GOOD_DATA = (
    f"concepts = {json.dumps(str(Path(__file__).resolve().parents[2] / 'data' / 'concepts.parquet'))}\n"
    f"languages = {json.dumps(LANGS)}\nconcept_ids = {json.dumps(CONCEPTS)}\nmax_contexts = 6"
)

CONFIG_CASES = {
    # id: (config text or bytes, what the error says)
    "malformed-toml": ("[model\nid = 'x'\n", "malformed TOML"),
    "not-utf8-toml": (b'[model]\nid = "\xff\xfe"\n', "not a UTF-8 text file"),
    "unknown-table": (lambda: config_text(extra="[modle]\nid = 'x'"), "unknown key 'modle'"),
    "unknown-nested-key": (
        lambda: config_text(extra="[analysis]\nlape_quantil = 0.1"),
        "unknown key 'analysis.lape_quantil'",
    ),
    "wrong-type-str-for-int": (
        lambda: config_text(extra='[steering]\nmax_new_tokens = "many"'),
        "steering.max_new_tokens must be int",
    ),
    "wrong-type-bool-for-int": (
        lambda: config_text(extra="[steering]\nmax_new_tokens = true"),
        "must be int, got bool",
    ),
    "wrong-type-float-for-int": (
        lambda: config_text(extra="[steering]\nmax_new_tokens = 2.5"),
        "steering.max_new_tokens must be int",
    ),
    "wrong-type-str-for-list": (
        lambda: config_text(data=GOOD_DATA.replace(f"languages = {json.dumps(LANGS)}", 'languages = "en"')),
        "data.languages must be a list",
    ),
    "wrong-type-table": ('model = "tiny"\n', "model must be a table"),
    "out-of-range-value": (lambda: config_text(extra="[steering]\ntop_p = 3.0"), "top_p"),
    "no-checkpoints": ('[model]\nid = "tiny"\n', "no checkpoints listed"),
    "duplicate-checkpoint": (
        lambda: config_text(extra_checkpoints=[(checkpoints()[0].name, str(checkpoints()[0].path))]),
        "duplicate names",
    ),
    "duplicate-concept-ids": (
        lambda: config_text(data=GOOD_DATA.replace('"monday",', '"monday", "monday",')),
        "lists 'monday' more than once",
    ),
    "duplicate-languages": (
        lambda: config_text(data=GOOD_DATA.replace('"en",', '"en", "en",')),
        "lists 'en' more than once",
    ),
}
# A subset the concept set cannot give: the line names the concept set and the values asked for.
SUBSET_CASES = {
    "single-concept": (GOOD_DATA.replace(json.dumps(CONCEPTS), '["monday"]'), "the subset has 1 concept(s)"),
    "unknown-language": (GOOD_DATA.replace(json.dumps(LANGS), '["en", "xx"]'), "unknown language(s) 'xx'"),
    "unknown-concept": (GOOD_DATA.replace('"monday"', '"mondai"'), "unknown concept(s) 'mondai'"),
    "max-contexts-one": (
        GOOD_DATA.replace("max_contexts = 6", "max_contexts = 1"),
        "max_contexts must be 0 (all) or >= 2",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config(case, tmp_path, store):
    content, says = CONFIG_CASES[case]
    content = content() if callable(content) else content
    config = write(tmp_path / "run.toml", content)
    assert_refused(["run", config, "--out", store], names=config, says=says, store=store)


@pytest.mark.parametrize("case", sorted(SUBSET_CASES))
def test_bad_subset(case, tmp_path, store):
    data, says = SUBSET_CASES[case]
    config = write(tmp_path / "run.toml", config_text(data=data))
    assert_refused(["run", config, "--out", store], names="concepts.parquet", says=says, store=store)


def test_huge_list_of_unknown_concepts_gives_a_short_line(tmp_path, store):
    many = json.dumps([f"no_such_concept_{i}" for i in range(5000)])
    config = write(tmp_path / "run.toml", config_text(data=GOOD_DATA.replace(json.dumps(CONCEPTS), many)))
    line = assert_refused(
        ["run", config, "--out", store], names="concepts.parquet", says="unknown concept(s)", store=store
    )
    assert "(5000 in all)" in line and len(line) < 1000


# --- concept sets ---------------------------------------------------------------------------------------


def tsv(rows: list[tuple]) -> str:
    header = "concept_id\tlang\ttext\tspan_start\tspan_end"
    return header + "\n" + "\n".join("\t".join(map(str, r)) for r in rows) + "\n"


GOOD_ROWS = [
    ("sun", "en", "the sun is up", 4, 7),
    ("sun", "en", "sun at noon", 0, 3),
    ("moon", "en", "the moon is up", 4, 8),
    ("moon", "en", "moon at night", 0, 4),
    ("sun", "de", "die Sonne scheint", 4, 9),
    ("sun", "de", "Sonne am Mittag", 0, 5),
    ("moon", "de", "der Mond scheint", 4, 8),
    ("moon", "de", "Mond in der Nacht", 0, 4),
]


def with_row(i: int, row: tuple) -> list[tuple]:
    rows = list(GOOD_ROWS)
    rows[i] = row
    return rows


CONCEPT_CASES = {
    # id: (file content, what the error says)
    "empty-file": ("", "empty file"),
    "header-only": ("concept_id\tlang\ttext\n", "no data rows"),
    "missing-column": ("concept\tlang\ttext\nsun\ten\tsun\n", "missing required column 'concept_id'"),
    "duplicate-rows": (tsv(GOOD_ROWS + [GOOD_ROWS[0]]), "duplicate of row 1"),
    "nul-in-text": (tsv(with_row(1, ("sun", "en", "sun\x00 at noon", 0, 3))), "contains a NUL character"),
    "bad-utf8": (tsv(GOOD_ROWS).encode() + b"moon\ten\t\xff\xfe\t\t\n", "not a UTF-8 text file"),
    "span-past-end": (tsv(with_row(1, ("sun", "en", "sun at noon", 0, 99))), "past the end of the text"),
    "span-negative": (tsv(with_row(1, ("sun", "en", "sun at noon", -1, 3))), "negative start"),
    "span-reversed": (tsv(with_row(1, ("sun", "en", "sun at noon", 3, 0))), "is not before end"),
    "span-not-integer": (tsv(with_row(1, ("sun", "en", "sun at noon", "zero", 3))), "not an integer"),
    "span-half-given": (
        tsv(with_row(1, ("sun", "en", "sun at noon", 0, ""))),
        "empty although the other span column is given",
    ),
    "language-with-one-concept": (
        tsv(GOOD_ROWS + [("sun", "fr", "le soleil", 3, 9), ("sun", "fr", "soleil levant", 0, 6)]),
        "has only 1 concept",
    ),
    "concept-with-one-context": (tsv(GOOD_ROWS[1:]), "has only 1 context"),
    "unknown-language-code": (
        tsv([(c, "zz-notalang" if lang == "de" else lang, t, s, e) for c, lang, t, s, e in GOOD_ROWS]),
        "unknown language code",
    ),
    "ragged-row": (tsv(GOOD_ROWS) + "sun\ten\textra\t0\t3\tsurplus\n", "fields where the header has"),
    "markup-in-ids": (tsv(GOOD_ROWS[1:] + [("[/b]", "en", "x", "", "")]), "has only 1 context"),
}


@pytest.mark.parametrize("case", sorted(CONCEPT_CASES))
def test_bad_concept_set(case, tmp_path, store):
    content, says = CONCEPT_CASES[case]
    concepts = write(tmp_path / "concepts.tsv", content)
    # `concepts check`: its first line is the error (further lines, indented, list other problems).
    result = runner.invoke(app, ["concepts", "check", str(concepts)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("error:") and str(concepts) in first and says in first, result.stderr
    # `run` with it: one line, and the previous store untouched.
    data = f'concepts = "{concepts}"'
    config = write(tmp_path / "run.toml", config_text(data=data))
    assert_refused(["run", config, "--out", store], names=concepts, says=says, store=store)


def test_language_left_with_one_concept_by_the_subset(tmp_path, store):
    """The file is valid (every language has 2 concepts) but the chosen concepts leave 'de' with one."""
    rows = GOOD_ROWS + [
        ("star", "en", "a star shines", 2, 6),
        ("star", "en", "star light", 0, 4),
        ("star", "de", "ein Stern", 4, 9),
        ("star", "de", "Stern hell", 0, 5),
    ]
    rows = [r for r in rows if not (r[0] == "moon" and r[1] == "de")]
    concepts = write(tmp_path / "concepts.tsv", tsv(rows))
    config = write(tmp_path / "run.toml", config_text(data=f'concepts = "{concepts}"\nconcept_ids = ["sun", "moon"]'))
    assert_refused(
        ["run", config, "--out", store],
        names=concepts,
        says="in the chosen subset, language 'de' has only concept 'sun'",
        store=store,
    )


# --- checkpoints ----------------------------------------------------------------------------------------


def broken_checkpoint(tmp_path: Path, how: str) -> Path:
    src = checkpoints()[-1].path
    dst = tmp_path / f"ckpt-{how}"
    if how == "missing-directory":
        return dst
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    if how == "missing-weights":
        weights.unlink()
    elif how == "truncated-weights":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif how == "header-only-weights":
        weights.write_bytes(weights.read_bytes()[:7])
    elif how == "garbage-config":
        (dst / "config.json").write_text("{ not json", encoding="utf-8")
    return dst


@pytest.mark.parametrize(
    "how, says",
    [
        ("missing-directory", "no such directory"),
        ("missing-weights", "no weights file"),
        ("truncated-weights", "truncated or corrupt"),
        ("header-only-weights", "truncated or corrupt"),
        ("garbage-config", "config.json"),
    ],
)
def test_bad_checkpoint_directory(how, says, tmp_path, store):
    """The store holds the three good checkpoints; a fourth, broken one is refused and nothing changes."""
    bad = broken_checkpoint(tmp_path, how)
    config = write(tmp_path / "run.toml", config_text(extra_checkpoints=[("step_broken", str(bad))]))
    assert_refused(["run", config, "--out", store], names=bad, says=says, store=store)


# --- stores ---------------------------------------------------------------------------------------------


def edit_store(path: Path, *sql: str) -> Path:
    con = raw_connect(path)
    for statement in sql:
        con.execute(statement)
    con.close()
    return path


STORE_CASES = {
    "other-schema-version": (
        lambda p: edit_store(p, "UPDATE meta SET value = '99' WHERE key = 'schema_version'"),
        "schema version 99",
    ),
    "schema-version-not-a-number": (
        lambda p: edit_store(p, "UPDATE meta SET value = 'x' WHERE key = 'schema_version'"),
        "unreadable schema version",
    ),
    "no-meta-table": (lambda p: edit_store(p, "DROP TABLE meta"), "no meta table"),
    "not-duckdb": (lambda p: write(p, "just some text\n" * 100), "not a readable DuckDB file"),
    "zero-bytes": (lambda p: write(p, b""), "not a readable DuckDB file"),
    "a-directory": (lambda p: make_directory(p), "is a directory"),
    "half-a-store": (lambda p: write(p, p.read_bytes()[: p.stat().st_size // 2]), "truncated or corrupt store"),
}


def make_directory(path: Path) -> Path:
    path.unlink()
    path.mkdir()
    return path


@pytest.mark.parametrize("case", sorted(STORE_CASES))
def test_bad_store(case, tmp_path, store):
    make, says = STORE_CASES[case]
    make(store)
    assert_refused(["info", store], names=store, says=says, store=store if store.is_file() else None)
    assert_refused(
        ["run", _good_config(tmp_path), "--out", store],
        names=store,
        says=says,
        store=store if store.is_file() else None,
    )


def _good_config(tmp_path: Path) -> Path:
    return write(tmp_path / "run.toml", config_text())


def test_store_of_another_run_is_refused(tmp_path, store):
    config = write(tmp_path / "run.toml", config_text(extra="[analysis]\nlape_quantile = 0.02"))
    assert_refused(["run", config, "--out", store], names=store, says="holds another run", store=store)


@pytest.fixture(scope="module")
def reference_bytes() -> bytes:
    return reference_store().read_bytes()


@settings(HYPOTHESIS, max_examples=12)
@given(fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_store_cut_at_a_random_byte(fraction, tmp_path_factory, reference_bytes):
    """A store cut short (an interrupted copy from a colleague): info and run refuse it, in one line."""
    folder = tmp_path_factory.mktemp("cut")
    store = folder / "store.duckdb"
    store.write_bytes(reference_bytes[: int(fraction * len(reference_bytes))])
    says = ""  # 'not a readable DuckDB file' or 'truncated or corrupt store', depending on where it is cut
    line = assert_refused(["info", store], names=store, says=says, store=store)
    assert "not a readable DuckDB file" in line or "truncated or corrupt store" in line, line
    assert_refused(["run", _good_config(folder), "--out", store], names=store, says=says, store=store)


# --- a disk that fills up -------------------------------------------------------------------------------


def extra_checkpoint_config(tmp_path: Path) -> Path:
    """The reference config plus one more (valid) checkpoint: a run that computes, then writes."""
    extra = tmp_path / "step_extra"
    shutil.copytree(checkpoints()[-1].path, extra)
    return write(tmp_path / "run.toml", config_text(extra_checkpoints=[("step_extra", str(extra))]))


def test_disk_full_while_packing_the_store(tmp_path, store, monkeypatch):
    """The new checkpoint is published as a part (no copy); the pack at the end copies the store and hits a full
    disk: one line that says so and what to run, the store file untouched, the checkpoint readable, and
    `precompute pack` later gives the one file an uninterrupted run gives."""
    config = extra_checkpoint_config(tmp_path)
    before = store.read_bytes()
    real_copy = store_module.shutil.copyfile

    def no_space(src, dst, *args, **kwargs):
        Path(dst).write_bytes(Path(src).read_bytes()[:1000])  # a partial copy, as a full disk leaves it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(store_module.shutil, "copyfile", no_space)
    assert_refused(
        ["run", config, "--out", store],
        names=store,
        says="cannot write the store (No space left on device); the published store is unchanged; "
        "its 1 checkpoint part(s) (store.duckdb.parts/) are published and readable: run "
        f"`precompute pack {store}` once that is fixed",
    )
    assert store.read_bytes() == before
    assert [n for n in leftovers(store) if ".tmp-" in n] == []
    extra = published_checkpoints(store)
    assert len(extra) == len(checkpoint_names()) + 1
    monkeypatch.setattr(store_module.shutil, "copyfile", real_copy)
    packed = runner.invoke(app, ["pack", str(store)])
    assert packed.exit_code == 0, packed.output
    assert leftovers(store) == [] and published_checkpoints(store) == extra


def test_disk_full_while_inserting_rows(tmp_path, store, monkeypatch):
    monkeypatch.setenv(faults.ENV, "enospc@store.insert:3")
    faults.reset()
    try:
        assert_refused(
            ["run", extra_checkpoint_config(tmp_path), "--out", store],
            names=store,
            says="No space left on device",
            store=store,
        )
    finally:
        faults.reset()


@pytest.fixture()
def small_tmpfs(tmp_path):
    """Mount a real tmpfs (root only); yields a function that sizes and mounts it."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = []

    def mount(size: int) -> Path:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
        mounted.append(mountpoint)
        return mountpoint

    yield mount
    for m in mounted:
        subprocess.run(["umount", str(m)], check=False)


@pytest.mark.parametrize("room", ["half-a-copy", "a-copy-but-not-the-new-rows"])
def test_real_full_disk(room, tmp_path, small_tmpfs):
    """A store on a tmpfs too small for the pack at the end of the run: its copy, or DuckDB's own write into the
    copy, hits ENOSPC (or the new checkpoint's own part file does, with less room). The store file is untouched, no
    private file is left, and every reader sees whole checkpoints only: the old ones, plus the new one where its
    part was published."""
    size = reference_store().stat().st_size
    disk = small_tmpfs(size + size // 2 if room == "half-a-copy" else 2 * size + 64 * 1024)
    store = copy_of_reference(disk)
    before = store.read_bytes()
    assert_refused(
        ["run", extra_checkpoint_config(tmp_path), "--out", store], names=store, says="No space left on device"
    )
    assert store.read_bytes() == before
    assert [n for n in leftovers(store) if ".tmp-" in n] == []
    assert sorted(published_checkpoints(store)) in (
        sorted(checkpoint_names()),
        sorted([*checkpoint_names(), "step_extra"]),
    )
    if "step_extra" not in published_checkpoints(store):
        assert_complete_prefix(store, reference_store())  # every row of the old store, nothing else


# --- odd but valid input: it must work ------------------------------------------------------------------

ODD_TEXTS = {
    ("water", "ar"): ["شربت الماء البارد", "الماء صافٍ اليوم\u200f"],
    ("fire", "ar"): ["النار مشتعلة 🔥", "رأيت النار من بعيد"],
    ("water", "he"): ["שתיתי מים קרים", "מים צלולים היום"],
    ("fire", "he"): ["האש בוערת 🔥", "ראיתי את האש מרחוק"],
    ("water", "en"): ["cafe\u0301 water 👩\u200d👩\u200d👧 glass", "z\u0351\u0352\u0353water" + "!" * 50_000],
    ("fire", "en"): ["fire \U0001f525\U0001f525 in the e\u0308vening", "the fire\u202e reversed \u202c text"],
}
ODD_WORDS = {"water": {"ar": "الماء", "he": "מים", "en": "water"}, "fire": {"ar": "النار", "he": "האש", "en": "fire"}}


def odd_rows() -> list[tuple]:
    rows = []
    for (concept, lang), texts in ODD_TEXTS.items():
        for text in texts:
            start = text.index(ODD_WORDS[concept][lang])
            rows.append((concept, lang, text, start, start + len(ODD_WORDS[concept][lang])))
    return rows


@pytest.mark.slow
def test_odd_unicode_runs_and_round_trips(tmp_path):
    """RTL scripts, RTL/LTR marks and overrides, combining marks, emoji and ZWJ sequences, a 50,000-character
    line: a run works, the store keeps every text exactly, spans land on the word's tokens."""
    from transformers import AutoTokenizer

    from precompute.extract import tokenize_contexts

    rows = odd_rows()
    concepts = write(tmp_path / "odd.tsv", tsv(rows))
    check = runner.invoke(app, ["concepts", "check", str(concepts)])
    assert check.exit_code == 0, check.output
    config = write(tmp_path / "run.toml", config_text(data=f'concepts = "{concepts}"', last_checkpoint_only=True))
    store = tmp_path / "odd.duckdb"
    result = runner.invoke(app, ["run", str(config), "--out", str(store)])
    assert result.exit_code == 0, result.output
    stored = sorted(r[3] for r in store_rows(store)["sentences"])
    assert stored == sorted(r[2] for r in rows)
    info = runner.invoke(app, ["info", str(store)])
    assert info.exit_code == 0, info.output
    tok = AutoTokenizer.from_pretrained(checkpoints()[-1].path)
    contexts = tokenize_contexts(tok, [r[2] for r in rows], [(r[3], r[4]) for r in rows], max_length=64)
    for row, mask in zip(rows, contexts.span_masks):
        assert mask.any(), f"no token marked for the span of {row[2][:40]!r}"


def test_huge_concept_set_checks(tmp_path):
    rows = [
        (f"concept_{i:05d}", lang, f"text {j} about concept {i} in {lang}", "", "")
        for i in range(2500)
        for lang in ("en", "de")
        for j in range(2)
    ]
    concepts = write(tmp_path / "huge.tsv", tsv(rows))
    result = runner.invoke(app, ["concepts", "check", str(concepts)])
    assert result.exit_code == 0, result.output
    assert "2500 concepts" in result.stdout and "10000 contexts" in result.stdout


# --- properties -----------------------------------------------------------------------------------------

toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
SECTIONS = ["model", "checkpoints", "data", "extract", "probes", "experts", "analysis", "steering", "bogus"]


@settings(HYPOTHESIS, max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(SECTIONS),
        st.dictionaries(
            st.sampled_from(["id", "languages", "top_k", "seeds", "pooling", "path", "name", "x"]),
            toml_values,
            max_size=4,
        )
        | toml_values,
        max_size=5,
    )
)
def test_any_config_is_accepted_or_refused_in_one_line(data):
    if "model" not in data:
        data["model"] = {"id": "m"}
    try:
        config_from_dict(data, where="fuzz.toml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml: ") and "\n" not in message, message


odd_text = st.text(
    alphabet=st.sampled_from(
        list("ab ")
        + [
            "\u05d0",
            "\u0627",
            "\u0301",
            "\u200d",
            "\u200f",
            "\u202e",
            "\U0001f525",
            "\x00",
            "\t",
            "\r",
            "\ufeff",
            "\u3042",
            "\ud7ff",
            " ",
        ]
    ),
    max_size=12,
)


@settings(HYPOTHESIS, max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2", ""]),
            st.sampled_from(["en", "de", "xx", ""]),
            odd_text,
            st.one_of(st.none(), st.integers(-2, 14)),
            st.one_of(st.none(), st.integers(-2, 14)),
        ),
        max_size=12,
    )
)
def test_any_concept_table_is_accepted_or_refused_in_one_line(rows):
    frame = pl.DataFrame(rows, schema=["concept_id", "lang", "text", "span_start", "span_end"], orient="row")
    try:
        cs = concept_set_from_frame(frame, where="fuzz.tsv")
    except ConceptSetError as exc:
        message = str(exc)
        assert message.startswith("fuzz.tsv: ") and "\n" not in message, message
        assert all(p.startswith("fuzz.tsv: ") for p in exc.problems)
        return
    assert sorted(cs.sentences["text"].to_list()) == sorted(r[2] for r in rows)
    assert "\x00" not in "".join(cs.sentences["text"].to_list())


@pytest.mark.parametrize(
    "experts, says",
    [
        ({"top_k": 5, "overlap_k": 50}, "[experts] overlap_k = 50 is more than top_k = 5"),
        ({"correction": "bonferroni"}, "[experts] correction must be one of 'bh', 'none'"),
        ({"overlap_measure": "dice"}, "[experts] overlap_measure must be one of 'jaccard', 'over_k'"),
        ({"permutations": -1}, "[experts] permutations must be in [0, 1000000], got -1"),
    ],
)
def test_bad_chance_settings_are_refused_in_one_line(experts, says):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": {"id": "tiny"}, "experts": experts}, where="run.toml")
    assert str(err.value).startswith("run.toml: ") and says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "section, key, value, says",
    [
        ("data", "languages", ["en "], "[data] languages has a bad value: language code 'en ' has spaces in it"),
        ("data", "languages", ["und"], "[data] languages has a bad value: 'und' is not a language"),
        ("steering", "source_langs", ["de", " es"], "[steering] source_langs has a bad value: language code ' es'"),
    ],
)
def test_language_codes_are_refused_against_the_config_key(section, key, value, says):
    """A code that cannot be looked up is named at the key that holds it, not at the concept set it meets later."""
    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": {"id": "tiny"}, section: {key: value}}, where="run.toml")
    assert str(err.value).startswith("run.toml: ") and says in str(err.value)
