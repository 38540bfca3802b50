"""Hostile input, tried as a demanding user would: settings that would make the result meaningless, language
codes spelled two ways, inputs of the wrong kind, a checkpoint whose weights are NaN.

The contract is the one of ``tests/reliability/test_bad_input.py``: every case either works or gives exactly one
``error:`` line that names the input at fault (the config file and key, the option, the file, the checkpoint),
with no traceback, the previous store byte-identical and, for a new ``--out``, no store left behind. Never a
silent wrong number: ``top_k`` at or above the units it ranks, ``min_langs`` above the languages, a run with one
language, probes that cannot be split or trained are refused before any compute.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from safetensors.torch import load_file, save_file

from precompute.cli import app
from precompute.config import ConfigError, config_from_dict
from precompute.inputs.concepts import ConceptSetError, concept_set_from_frame
from precompute.inputs.langcodes import canonical_language
from tests.support.reliability import (
    LANGS,
    assert_refused,
    checkpoints,
    config_text,
    copy_of_reference,
    leftovers,
    runner,
)

N_UNITS = 2 * 64  # the tiny model: 2 MLP layers of 64 units


def write(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


def with_setting(section: str, key: str, value: str, text: str | None = None) -> str:
    """The reliability run's TOML with ``key = value`` in ``[section]`` (replacing the key where it is set)."""
    lines = (text if text is not None else config_text()).splitlines()
    header = f"[{section}]"
    if header not in lines:
        return "\n".join([*lines, header, f"{key} = {value}"]) + "\n"
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if lines[i].split("=")[0].strip() == key:
            lines[i] = f"{key} = {value}"
            break
    else:
        lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def refused(args: list, *, names: str | Path, says: str, store: Path) -> str:
    """`assert_refused`, and stricter: a store that was absent is still absent, nothing is left next to it."""
    existed = store.exists()
    line = assert_refused(args, names=names, says=says, store=store)
    if not existed:
        assert not store.exists(), "a refused run left a store behind"
    assert leftovers(store) == [], leftovers(store)
    return line


@pytest.fixture()
def store(tmp_path) -> Path:
    """A copy of a good, complete store (the reliability run): every refusal must leave it untouched."""
    return copy_of_reference(tmp_path)


# --- settings that would make the result meaningless or crash later: refused before any compute ----------

# id: ((section, key, value) or a config text, the key the error names, what it says)
STATIC_CASES = {
    "max-iter-zero": (("probes", "max_iter", "0"), "[probes] max_iter", "must be >= 1"),
    "seeds-empty": (("probes", "seeds", "[]"), "[probes] seeds", "at least 1"),
    "seeds-repeated": (("probes", "seeds", "[1, 1]"), "[probes] seeds", "lists 1 more than once"),
    "seeds-negative": (("probes", "seeds", "[-1]"), "[probes] seeds", "must be in [0, 4294967295], got -1"),
    "C-negative": (("probes", "C", "-1"), "[probes] C", "must be > 0"),
    "C-zero": (("probes", "C", "0.0"), "[probes] C", "must be > 0"),
    "test-size-one": (("probes", "test_size", "1.0"), "[probes] test_size", "must be in (0, 1)"),
    "max-train-negative": (("probes", "max_train", "-1"), "[probes] max_train", "must be >= 0"),
    "representation-unknown": (
        ("probes", "representations", '["max"]'),
        "[probes] representations",
        "must be one of 'mean', 'token'",
    ),
    "chunk-neurons-zero": (("experts", "chunk_neurons", "0"), "[experts] chunk_neurons", "must be >= 1"),
    "chunk-neurons-negative": (("experts", "chunk_neurons", "-8"), "[experts] chunk_neurons", "must be >= 1"),
    "top-k-zero": (("experts", "top_k", "0"), "[experts] top_k", "must be >= 1"),
    "min-langs-one": (("experts", "min_langs", "1"), "[experts] min_langs", "must be >= 2"),
    "batch-tokens-zero": (("extract", "batch_tokens", "0"), "[extract] batch_tokens", "must be >= 1"),
    "max-length-one": (("extract", "max_length", "1"), "[extract] max_length", "must be >= 2"),
    "layer-negative": (("extract", "layers", "[-1]"), "[extract] layers", "must be >= 0, got -1"),
    "layer-repeated": (("extract", "layers", "[0, 0]"), "[extract] layers", "lists 0 more than once"),
    "pooling-unknown": (("extract", "pooling", '"median"'), "[extract] pooling", "must be one of"),
    "ram-budget-negative": (("extract", "ram_budget_gb", "-1"), "[extract] ram_budget_gb", "must be >= 0"),
    "lape-quantile-zero": (("analysis", "lape_quantile", "0"), "[analysis] lape_quantile", "must be in (0, 1]"),
    "lape-min-prob-above-one": (("analysis", "lape_min_prob", "2"), "[analysis] lape_min_prob", "must be in [0, 1]"),
    "steering-seeds-empty": (("steering", "seeds", "[]"), "[steering] seeds", "at least 1"),
    "steering-neurons-negative": (("steering", "n_neurons", "[-5]"), "[steering] n_neurons", "must be >= 0"),
    "steering-temperature-zero": (("steering", "temperature", "0"), "[steering] temperature", "must be > 0"),
    "max-contexts-negative": (("data", "max_contexts", "-2"), "[data] max_contexts", "must be >= 0"),
    "languages-twice-in-two-spellings": (
        ("data", "languages", '["en", "EN", "de"]'),
        "[data] languages",
        "lists 'en' more than once",
    ),
}


@pytest.mark.parametrize("case", sorted(STATIC_CASES))
def test_meaningless_setting_is_refused_before_any_compute(case, tmp_path, store):
    (section, key, value), names, says = STATIC_CASES[case]
    config = write(tmp_path / "run.toml", with_setting(section, key, value))
    line = refused(["run", config, "--out", store], names=config, says=says, store=store)
    assert names in line, line


# Checks that need the concept set or the model's real shape (read from config.json, before any weights).
RUN_CASES = {
    "top-k-above-units": (("experts", "top_k", "100000"), "[experts] top_k", f"not below the {N_UNITS} MLP units"),
    "top-k-equal-units": (("experts", "top_k", str(N_UNITS)), "[experts] top_k", "every unit would be an expert"),
    "min-langs-above-languages": (
        ("experts", "min_langs", "9"),
        "[experts] min_langs",
        f"is more than the run's {len(LANGS)} languages",
    ),
    "one-language": (("data", "languages", '["en"]'), "[data] languages", "the run has 1 language (en)"),
    "test-split-too-small": (
        ("probes", "test_size", "0.01"),
        "[probes] test_size",
        f"each of the {len(LANGS)} languages",
    ),
    "max-train-below-languages": (("probes", "max_train", "2"), "[probes] max_train", f"({len(LANGS)} languages)"),
    "layer-past-the-model": (("extract", "layers", "[0, 5]"), "[extract] layers", "layer 5 does not exist"),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_setting_the_run_cannot_use_is_refused(case, tmp_path, store):
    (section, key, value), names, says = RUN_CASES[case]
    config = write(tmp_path / "run.toml", with_setting(section, key, value))
    line = refused(["run", config, "--out", store], names=config, says=says, store=store)
    assert names in line, line


def test_a_refused_run_leaves_no_store_and_the_corrected_config_can_use_the_path(tmp_path):
    """Refused before the store is created: the same --out then takes the corrected run."""
    out = tmp_path / "new.duckdb"
    one = config_text(last_checkpoint_only=True)
    bad = write(tmp_path / "bad.toml", with_setting("experts", "top_k", "100000", one))
    refused(["run", bad, "--out", out], names=bad, says="top_k", store=out)
    good = write(tmp_path / "good.toml", one)
    result = runner.invoke(app, ["run", str(good), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 checkpoint(s) written" in result.stdout


def test_top_k_is_checked_against_the_hooked_layers_only(tmp_path, store):
    """With one layer hooked, top_k ranks that layer's 64 units: 64 is refused (and names --layers' layer)."""
    config = write(tmp_path / "run.toml", with_setting("experts", "top_k", "64"))
    line = refused(
        ["run", config, "--out", store, "--layers", "1"], names=config, says="not below the 64 MLP units", store=store
    )
    assert "layers 1 of" in line, line


def test_concept_set_with_one_language_is_refused_naming_the_config_key(tmp_path, store):
    rows = [(c, "en", f"{word} {i}", 0, len(word)) for c, word in (("sun", "sun"), ("moon", "moon")) for i in range(2)]
    concepts = write(tmp_path / "one.tsv", tsv(rows))
    config = write(tmp_path / "run.toml", config_text(data=f'concepts = "{concepts}"'))
    refused(["run", config, "--out", store], names=config, says="[data] concepts: the run has 1 language", store=store)


@pytest.mark.parametrize(
    "option, says",
    [
        ("999", "layer 999 does not exist: checkpoint"),
        ("5-7", "layers 5, 6, 7 do not exist"),
        ("0,2", "layer 2 does not exist"),
        ("-1", "expected layer numbers"),
        ("1-0", "runs backwards"),
        ("x", "expected layer numbers"),
    ],
)
def test_layers_option_that_the_model_lacks(option, says, tmp_path, store):
    config = write(tmp_path / "run.toml", config_text())
    line = refused(
        ["run", config, "--out", store, "--layers", option], names=f"--layers {option!r}", says=says, store=store
    )
    if "exist" in says:
        assert "has 2 MLP layers (0-1)" in line, line


def test_dtype_option_names_the_option(tmp_path, store):
    config = write(tmp_path / "run.toml", config_text())
    refused(
        ["run", config, "--out", store, "--dtype", "float8"],
        names="--dtype 'float8'",
        says="must be one of 'auto', 'float32'",
        store=store,
    )


# --- language codes: one spelling per language ------------------------------------------------------------


def tsv(rows: list[tuple]) -> str:
    return "concept_id\tlang\ttext\tspan_start\tspan_end\n" + "\n".join("\t".join(map(str, r)) for r in rows) + "\n"


TWO_LANGS = [
    (concept, lang, f"{word} {i}", 0, len(word))
    for concept, words in (("sun", {"en": "sun", "de": "Sonne"}), ("moon", {"en": "moon", "de": "Mond"}))
    for lang, word in words.items()
    for i in range(2)
]


@pytest.mark.parametrize(
    "code, canonical",
    [
        ("EN", "en"),
        ("zh-hans", "zh-Hans"),
        ("pt-br", "pt-BR"),
        ("zh_Hant", "zh-Hant"),
        ("sr-latn-rs", "sr-Latn-RS"),
        ("es-419", "es-419"),
        ("de", "de"),
        ("x-Private", "x-private"),
    ],
)
def test_language_codes_take_bcp47_case(code, canonical):
    assert canonical_language(code) == canonical


def test_concept_set_in_upper_case_codes_is_normalised():
    frame = pl.DataFrame(
        [(c, lang.upper(), t, s, e) for c, lang, t, s, e in TWO_LANGS],
        schema=["concept_id", "lang", "text", "span_start", "span_end"],
        orient="row",
    )
    cs = concept_set_from_frame(frame, where="upper.tsv")
    assert cs.languages["lang"].to_list() == ["de", "en"]
    assert set(cs.sentences["lang"].to_list()) == {"de", "en"}
    assert cs.languages.filter(pl.col("lang") == "en")["name"].item() == "English"


def test_two_spellings_of_one_language_are_refused(tmp_path, store):
    """EN and en rows would be two 'languages' whose experts agree perfectly (Jaccard 1.0)."""
    rows = TWO_LANGS + [(c, "EN", f"{t} again", s, e) for c, lang, t, s, e in TWO_LANGS if lang == "en"]
    concepts = write(tmp_path / "mixed.tsv", tsv(rows))
    result = runner.invoke(app, ["concepts", "check", str(concepts)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    first = result.stderr.splitlines()[0]
    assert str(concepts) in first and "'EN' and 'en' (row 1) are one language ('en')" in first, first
    config = write(tmp_path / "run.toml", config_text(data=f'concepts = "{concepts}"'))
    refused(["run", config, "--out", store], names=concepts, says="are one language ('en')", store=store)
    with pytest.raises(ConceptSetError, match="written two ways"):
        concept_set_from_frame(
            pl.DataFrame(rows, schema=["concept_id", "lang", "text", "span_start", "span_end"], orient="row"),
            where="mixed.tsv",
        )


def test_config_languages_in_other_case_are_the_same_run(tmp_path, store):
    """["EN", "DE", "RU"] is the reference run itself: nothing to do, the store unchanged."""
    upper = json.dumps([lang.upper() for lang in LANGS])
    config = write(tmp_path / "run.toml", with_setting("data", "languages", upper))
    before = store.read_bytes()
    result = runner.invoke(app, ["run", str(config), "--out", str(store)])
    assert result.exit_code == 0, result.output
    assert "already done; nothing to do" in result.stderr and store.read_bytes() == before
    cfg = config_from_dict(
        {"model": {"id": "m"}, "data": {"languages": ["ZH-hant", "pt_br"]}, "steering": {"source_langs": ["EN"]}}
    )
    assert cfg.data.languages == ["zh-Hant", "pt-BR"] and cfg.steering.source_langs == ["en"]


# --- inputs of the wrong kind -------------------------------------------------------------------------


def test_config_path_that_is_a_directory(tmp_path, store):
    folder = tmp_path / "configs"
    folder.mkdir()
    refused(["run", folder, "--out", store], names=folder, says="is a directory, not a config file", store=store)


def test_empty_config_file(tmp_path, store):
    config = write(tmp_path / "empty.toml", "")
    refused(["run", config, "--out", store], names=config, says="[model] id is required", store=store)


def test_semicolon_separated_csv_is_reported_as_such(tmp_path, store):
    lines = ["concept_id;lang;text;span_start;span_end"] + [";".join(map(str, r)) for r in TWO_LANGS]
    concepts = write(tmp_path / "concepts.csv", "\n".join(lines) + "\n")
    result = runner.invoke(app, ["concepts", "check", str(concepts)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    first = result.stderr.splitlines()[0]
    assert str(concepts) in first and "semicolon-separated" in first and "fields" not in first, first
    config = write(tmp_path / "run.toml", config_text(data=f'concepts = "{concepts}"'))
    refused(["run", config, "--out", store], names=concepts, says="semicolon-separated", store=store)


def test_tab_separated_file_named_csv(tmp_path):
    concepts = write(tmp_path / "concepts.csv", tsv(TWO_LANGS))
    result = runner.invoke(app, ["concepts", "check", str(concepts)])
    assert result.exit_code == 1, result.output
    assert "tab-separated" in result.stderr and "rename it to .tsv" in result.stderr, result.stderr


def test_comma_csv_with_semicolons_in_text_still_reads(tmp_path):
    """A text that contains semicolons is not taken for a semicolon-separated file."""
    rows = [(c, lang, f'"{t}; more; text"', s, e) for c, lang, t, s, e in TWO_LANGS]
    lines = ["concept_id,lang,text,span_start,span_end"] + [",".join(map(str, r)) for r in rows]
    concepts = write(tmp_path / "concepts.csv", "\n".join(lines) + "\n")
    result = runner.invoke(app, ["concepts", "check", str(concepts)])
    assert result.exit_code == 0, result.output


# --- a checkpoint whose weights are NaN ----------------------------------------------------------------


def nan_checkpoint(tmp_path: Path) -> Path:
    """A copy of the last checkpoint with its first MLP's input weights set to NaN."""
    dst = tmp_path / "ckpt-nan"
    shutil.copytree(checkpoints()[-1].path, dst)
    weights = load_file(dst / "model.safetensors")
    name = next(k for k in sorted(weights) if ".mlp." in k and k.endswith("weight"))
    weights[name].fill_(float("nan"))
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_checkpoint_with_nan_weights_is_named(tmp_path, store):
    bad = nan_checkpoint(tmp_path)
    config = write(tmp_path / "run.toml", config_text(extra_checkpoints=[("step_nan", str(bad))]))
    line = refused(["run", config, "--out", store], names="checkpoint 'step_nan'", says="NaN or infinite", store=store)
    assert "Input X contains NaN" not in line


# --- the declared rules themselves ---------------------------------------------------------------------


def test_every_declared_rule_names_file_and_key():
    """Each refusal from the declared rules is one line: the file, the section and key, what was expected."""
    for data, expected in [
        ({"experts": {"top_k": -3}}, "cfg.toml: [experts] top_k must be >= 1, got -3"),
        ({"probes": {"test_size": 0}}, "cfg.toml: [probes] test_size must be in (0, 1), got 0.0"),
        (
            {"checkpoints": [{"name": "a", "path": "a"}, {"name": "b", "path": "b", "step": -1}]},
            "cfg.toml: [[checkpoints]] #2 step must be >= 0, got -1",
        ),
        (
            {"model": {"dtype": "int8"}},
            "cfg.toml: [model] dtype must be one of 'auto', 'float32', 'bfloat16', 'float16', got 'int8'",
        ),
    ]:
        data = {"model": {"id": "m", **data.pop("model", {})}, **data}
        with pytest.raises(ConfigError) as err:
            config_from_dict(data, where="cfg.toml")
        assert str(err.value) == expected


def test_config_fingerprint_is_unchanged_by_where_it_came_from():
    a = config_from_dict({"model": {"id": "m"}}, where="a.toml")
    b = config_from_dict({"model": {"id": "m"}}, where="elsewhere/b.toml")
    b.overridden["extract.layers"] = "--layers '0'"
    assert a.fingerprint() == b.fingerprint()
    assert "where" not in a.to_dict() and "overridden" not in a.to_dict()
