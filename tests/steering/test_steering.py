"""Steering by concept neurons: the intervention, reproducible sampling, labelling, the stage and its CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import babel.dates
import polars as pl
import pytest
import torch

from precompute.config import SteeringSpec
from precompute.model import ModelLayout, find_mlp_sites, load_checkpoint
from precompute.pipeline import steer
from precompute.steering.intervene import Sampling, fixed_unit_hooks
from precompute.steering.intervene import generate as _generate
from precompute.steering.labels import LanguageLabeler, expresses_concept, label_language
from precompute.steering.stage import steering_rows, summarise
from precompute.store import CheckpointRows, StoreWriter, json_dumps, open_readonly

LANGS = ["de", "en", "fr"]


def generate(loaded, prompts, seeds, max_new_tokens, units=(), **kw):
    """``intervene.generate`` with the config's default sampling (nucleus 0.9, no top-k, temperature 0.8)."""
    return _generate(
        loaded, prompts, seeds, Sampling.from_spec(SteeringSpec(max_new_tokens=max_new_tokens)), units, **kw
    )


@pytest.fixture(scope="module")
def loaded(tiny_gpt2_dir):
    # One thread: a tiny model on a shared CPU is several times faster without thread hand-offs.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_checkpoint(str(tiny_gpt2_dir), device="cpu", dtype="float32")
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- the intervention


def _site_inputs(loaded, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """What every site module receives (after any pre-hook), via forward hooks registered last."""
    seen: dict[int, torch.Tensor] = {}
    handles = [
        s.module.register_forward_hook(lambda _m, args, _o, layer=s.layer: seen.__setitem__(layer, args[0].clone()))
        for s in find_mlp_sites(loaded.model)
    ]
    try:
        with torch.no_grad():
            loaded.model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_fixing_units_sets_the_hooked_activation_to_the_value(loaded):
    layout = ModelLayout.of(loaded.model)
    sites = layout.sites
    ids = torch.tensor([[loaded.tokenizer.bos_token_id, 5, 17, 42, 9]])
    plain = _site_inputs(loaded, ids)
    with fixed_unit_hooks(layout, [(0, 3, 2.5), (0, 10, -1.25), (1, 7, 0.0)]):
        fixed = _site_inputs(loaded, ids)
    assert torch.all(fixed[0][..., 3] == 2.5) and torch.all(fixed[0][..., 10] == -1.25)
    assert torch.all(fixed[1][..., 7] == 0.0)
    others = [u for u in range(sites[0].n_neurons) if u not in (3, 10)]
    assert torch.equal(fixed[0][..., others], plain[0][..., others])  # same layer, untouched units
    assert not torch.equal(fixed[1], plain[1])  # the change propagates downstream
    assert torch.equal(_site_inputs(loaded, ids)[0], plain[0])  # hooks removed on exit


def test_fixed_unit_hooks_rejects_unknown_layers_and_units(loaded):
    layout = ModelLayout.of(loaded.model)
    sites = layout.sites
    before = [len(s.module._forward_pre_hooks) for s in sites]
    with pytest.raises(ValueError, match="layer 9"), fixed_unit_hooks(layout, [(9, 0, 1.0)]):
        pass
    with pytest.raises(ValueError, match="out of range"), fixed_unit_hooks(layout, [(0, sites[0].n_neurons, 1.0)]):
        pass
    assert [len(s.module._forward_pre_hooks) for s in sites] == before


def test_n0_reproduces_plain_generation_exactly(loaded):
    seeds = [0, 1, 2]
    ours = generate(loaded, ["", "Das"], seeds, 8)
    again = generate(loaded, ["", "Das"], seeds, 8, units=[])
    assert ours == again
    # The same thing written directly against transformers, same seeds and settings.
    tok = loaded.tokenizer
    for gen in ours[:3]:
        torch.manual_seed(gen["seed"])
        ids = torch.tensor([[tok.bos_token_id]])
        seq = loaded.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            top_k=0,
            top_p=0.9,
            temperature=0.8,
            max_new_tokens=8,
            pad_token_id=tok.pad_token_id,
        )
        assert gen["output_text"] == tok.decode(seq[0, 1:].tolist(), skip_special_tokens=True)
    assert ours[0]["prompt"] == "" and ours[3]["prompt"] == "Das"
    assert len({g["output_text"] for g in ours[:3]}) > 1  # the seeds really sample


def test_steering_changes_generation(loaded):
    sites = find_mlp_sites(loaded.model)
    units = [(layer, u, 8.0) for layer in (0, 1) for u in range(0, sites[0].n_neurons, 2)]
    plain = generate(loaded, [""], [0, 1, 2], 8)
    steered = generate(loaded, [""], [0, 1, 2], 8, units=units)
    assert [g["output_text"] for g in plain] != [g["output_text"] for g in steered]


# ---------------------------------------------------------------- labelling


def test_label_language_of_real_cldr_sentences():
    date = dt.date(2024, 3, 5)
    texts = [babel.dates.format_date(date, "full", locale=x) for x in LANGS]  # e.g. "Dienstag, 5. März 2024"
    assert label_language(texts, LANGS) == LANGS
    assert label_language(texts[::-1], LANGS) == LANGS[::-1]
    assert label_language(["", "2024", "   "], LANGS) == [None, None, None]
    # Region subtags map to lingua's language and come back as the run's own code.
    assert LanguageLabeler(["de-AT", "en"])([texts[0]]) == ["de-AT"]
    labeler = LanguageLabeler(["de", "xx"])
    assert labeler.unsupported == ["xx"]


def test_expresses_concept_surface_forms():
    forms = {"de": {"März"}, "fr": {"mars"}, "en": {"March"}, "zh": {"3月"}, "fi": {"maaliskuuta"}}
    assert expresses_concept("Im März regnet es.", forms) == (True, "de")
    assert expresses_concept("Mars est un mois.", forms) == (True, "fr")  # sentence-initial capital
    assert expresses_concept("2024年3月5日", forms) == (True, "zh")  # no spaces in Chinese
    assert expresses_concept("2024年13月", forms) == (False, None)  # digits must not continue
    assert expresses_concept("Marschmusik und Märzenbier", forms) == (False, None)  # whole words only
    assert expresses_concept("the month of march", forms) == (False, None)  # English capitalises
    assert expresses_concept("", forms) == (False, None)
    # The same form in two languages: the detected language wins, else the longest form.
    both = {"fr": {"mars"}, "en": {"Mars", "Mars rover"}}
    assert expresses_concept("Mars", both, prefer="fr") == (True, "fr")
    assert expresses_concept("the Mars rover", both) == (True, "en")


def test_steering_rows_and_summary():
    gens = [
        {"prompt": "", "seed": 0, "output_text": "Im März schneit es."},
        {"prompt": "", "seed": 1, "output_text": "In March it rains."},
        {"prompt": "", "seed": 2, "output_text": "Nothing here at all."},
        {"prompt": "", "seed": 3, "output_text": "..."},
    ]
    forms = {"de": {"März"}, "en": {"March"}}
    frame = steering_rows(
        gens,
        ["de", "en", "en", None],
        checkpoint="step1",
        concept_id="march",
        source_lang="de",
        n_neurons=5,
        value_mode="median",
        surface_forms=forms,
    )
    assert frame["expresses_concept"].to_list() == [True, True, False, False]
    assert frame["concept_lang"].to_list() == ["de", "en", None, None]
    assert frame.columns == [
        "checkpoint",
        "concept_id",
        "source_lang",
        "prompt",
        "seed",
        "n_neurons",
        "value_mode",
        "output_text",
        "output_lang",
        "expresses_concept",
        "concept_lang",
    ]
    summary = summarise(frame)
    assert summary["share_concept"].unique().to_list() == [0.5]
    by = {r["output_lang"]: r for r in summary.iter_rows(named=True)}
    assert by["en"]["share_outputs"] == 0.5 and by["en"]["share_concept_outputs"] == 0.25
    assert by["de"]["share_outputs"] == 0.25 and by["de"]["concept_lang_share"] == 0.25
    assert by[None]["share_outputs"] == 0.25 and by[None]["share_concept_outputs"] == 0.0
    assert summarise(frame.clear()).height == 0


# ---------------------------------------------------------------- the stage and the CLI


def _write_store(path: Path, tiny_gpt2_dir: Path, sites) -> None:
    """A one-checkpoint store whose checkpoint is the tiny model, with experts for two concepts."""
    run_id = "tiny-run"
    now = dt.datetime(2025, 1, 1)
    texts = {
        ("monday", "de"): ("Am Montag regnet es.", "Montag"),
        ("monday", "en"): ("It rains on Monday.", "Monday"),
        ("monday", "fr"): ("Il pleut lundi.", "lundi"),
        ("march", "de"): ("Im März schneit es.", "März"),
        ("march", "en"): ("In March it snows.", "March"),
        ("march", "fr"): ("En mars il neige.", "mars"),
    }
    sentences = pl.DataFrame(
        [
            {
                "sentence_id": i,
                "concept_id": c,
                "lang": lang,
                "text": t,
                "span_start": t.index(f),
                "span_end": t.index(f) + len(f),
            }
            for i, ((c, lang), (t, f)) in enumerate(texts.items())
        ],
        schema_overrides={"span_start": pl.Int32, "span_end": pl.Int32},
    )
    experts = pl.DataFrame(
        [
            {
                "lang": lang,
                "concept_id": c,
                "layer": r % 2,
                "unit": 3 * r + (c == "march"),
                "ap": 1 - r / 10,
                "rank": r + 1,
                "median_pos_act": 5.0,
            }
            for c in ("monday", "march")
            for lang in LANGS
            for r in range(6)
        ],
        schema_overrides={"layer": pl.Int32, "unit": pl.Int32, "rank": pl.Int32},
    )
    with StoreWriter(path) as w:
        w.ensure_run(
            run={
                "run_id": run_id,
                "model_id": str(tiny_gpt2_dir),
                "model_card": "tiny random test model",
                "config_json": json_dumps({"data": {"languages": LANGS}, "model": {"dtype": "float32"}}),
                "concept_set_sha256": "0" * 64,
                "packages_json": "{}",
                "device": "cpu",
                "dtype": "float32",
                "started_at": now,
                "finished_at": None,
            },
            languages=pl.DataFrame({"lang": LANGS, "name": ["German", "English", "French"]}),
            concepts=pl.DataFrame({"concept_id": ["march", "monday"], "label": ["March", "Monday"]}),
            sentences=sentences,
            layers=pl.DataFrame(
                {
                    "layer": [s.layer for s in sites],
                    "n_neurons": [s.n_neurons for s in sites],
                    "hidden_size": [32] * len(sites),
                    "module_path": [s.path for s in sites],
                },
                schema_overrides={"layer": pl.Int32, "n_neurons": pl.Int32, "hidden_size": pl.Int32},
            ),
            meta={"crossling_version": "test"},
        )
        w.write_checkpoint(
            run_id,
            CheckpointRows(
                checkpoint="final",
                step=100,
                revision=None,
                source=str(tiny_gpt2_dir),
                tokens_seen=None,
                tables={
                    "neuron_ap": experts,
                    "shared_experts": pl.DataFrame(
                        {
                            "concept_id": ["march"],
                            "layer": [0],
                            "unit": [1],
                            "n_langs_topk": [3],
                            "langs": ["de,en,fr"],
                            "min_ap": [0.9],
                            "mean_ap": [0.95],
                        },
                        schema_overrides={"layer": pl.Int32, "unit": pl.Int32, "n_langs_topk": pl.Int32},
                    ),
                },
            ),
        )


def _steering_table(path: Path) -> pl.DataFrame:
    con = open_readonly(path)
    try:
        cur = con.execute("SELECT * FROM steering ORDER BY concept_id, source_lang, n_neurons, seed")
        cols = [d[0] for d in cur.description]
        return pl.DataFrame(cur.fetchall(), schema=cols, orient="row")
    finally:
        con.close()


def test_steer_writes_and_replaces(tmp_path, tiny_gpt2_dir, loaded):
    store = tmp_path / "store.duckdb"
    _write_store(store, tiny_gpt2_dir, find_mlp_sites(loaded.model))
    kw = {"n_neurons": [0, 4], "seeds": [0, 1], "prompts": [""], "max_new_tokens": 5, "device": "cpu"}
    summary = steer(store, **kw)  # defaults: concept with most shared experts, first non-English lang
    rows = _steering_table(store)
    assert rows.height == 4
    assert set(rows["concept_id"]) == {"march"} and set(rows["source_lang"]) == {"de"}
    assert sorted(set(rows["n_neurons"])) == [0, 4]
    assert rows["run_id"].unique().to_list() == ["tiny-run"] and rows["checkpoint"].unique().to_list() == ["final"]
    # Unsteered rows are plain generation, byte for byte.
    plain = generate(loaded, [""], [0, 1], 5)
    assert rows.filter(pl.col("n_neurons") == 0)["output_text"].to_list() == [g["output_text"] for g in plain]
    assert set(summary["n_neurons"]) == {0, 4}

    # Another concept adds rows; the same request again replaces its own rows.
    steer(store, concepts=["monday"], source_langs=["fr"], **kw)
    steer(store, concepts=["monday"], source_langs=["fr"], **kw)
    rows = _steering_table(store)
    assert rows.height == 8
    assert rows.group_by("concept_id", "source_lang").len().sort("concept_id").rows() == [
        ("march", "de", 4),
        ("monday", "fr", 4),
    ]
    assert rows.select("concept_id", "source_lang", "n_neurons", "seed").is_duplicated().sum() == 0

    with pytest.raises(ValueError, match="unknown concept 'nope'"):
        steer(store, concepts=["nope"], **kw)
    with pytest.raises(ValueError, match="unknown source language 'xx'"):
        steer(store, source_langs=["xx"], **kw)


def test_cli_errors_are_one_red_line(tmp_path, tiny_gpt2_dir, loaded):
    import typer
    from typer.testing import CliRunner

    from precompute.cli.steer import steer

    app = typer.Typer()
    app.command()(steer)
    app.command("noop")(lambda: None)  # two commands: `steer` stays a sub-command
    runner = CliRunner()
    missing = runner.invoke(app, ["steer", str(tmp_path / "nope.duckdb")])
    assert missing.exit_code == 1 and "no such store" in missing.output
    store = tmp_path / "store.duckdb"
    _write_store(store, tiny_gpt2_dir, find_mlp_sites(loaded.model))
    bad = runner.invoke(app, ["steer", str(store), "--concepts", "nope"])
    assert bad.exit_code == 1 and "unknown concept 'nope'" in bad.output
    assert "Traceback" not in bad.output
    bad_n = runner.invoke(app, ["steer", str(store), "--n-neurons", "0,x"])
    assert bad_n.exit_code == 1 and "--n-neurons" in bad_n.output
    ok = runner.invoke(
        app, ["steer", str(store), "--n-neurons", "0,2", "--seeds", "1", "--max-new-tokens", "3", "--device", "cpu"]
    )
    assert ok.exit_code == 0, ok.output
    assert "march" in ok.output
