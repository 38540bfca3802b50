"""The stage interface: the pipeline's order, each stage's needs and tables, and ``precompute steer`` through it.

``precompute steer`` is the checkpoint loop with only the steering stage: it must publish each checkpoint as a
part file (never a copy of the store file per checkpoint, whose cost would grow with the store), keep every other
table of the checkpoint as it was, and pack once at the end.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
import torch

from precompute import pipeline
from precompute.config import RunConfig
from precompute.profiling import StageTimer
from precompute.stages import CheckpointContext, Stage, StageError, run_stages
from precompute.store import CheckpointRows, StoreWriter, json_dumps, open_readonly
from precompute.store.schema import CHECKPOINT_TABLES, stage_of

LANGS = ["de", "en", "fr"]
#: The timing rows a run left for each checkpoint: a steer keeps them (the run's load among them) and adds its own.
RUN_TIMINGS = pl.DataFrame(
    {"stage": ["load", "probes"], "seconds": [7.0, 3.0], "tokens_per_s": [None, None], "peak_mem_mb": [None, None]},
    schema={"stage": pl.Utf8, "seconds": pl.Float64, "tokens_per_s": pl.Float64, "peak_mem_mb": pl.Float64},
)
CHECKPOINTS = ["step_1", "step_2", "step_3"]


def test_every_stage_writes_only_its_declared_tables():
    """Each stage's tables are the ones the schema assigns to it, and every checkpoint table has one writer."""
    names = [s.name for s in pipeline.STAGES]
    assert len(set(names)) == len(names)
    assert names[0] == "extract"  # everything else reads what it pools
    writers = {t: stage_of(t) for t in CHECKPOINT_TABLES}
    assert set(writers.values()) - {"timings", None} <= set(names), writers
    for i, stage in enumerate(pipeline.STAGES):
        made_before = {t for t, w in writers.items() if w in names[:i]}
        artefacts = {"pooled", "responses", "experts"}
        assert set(stage.needs) <= made_before | artefacts, (stage.name, stage.needs)


def test_run_stages_refuses_a_missing_need_and_a_foreign_table():
    ctx = CheckpointContext(cfg=RunConfig(), checkpoint="c")
    needy = Stage(name="probes", needs=("neuron_ap",), run=lambda _ctx: {})
    with pytest.raises(StageError, match="needs 'neuron_ap'"):
        run_stages([needy], ctx, StageTimer(torch.device("cpu")))
    thief = Stage(name="probes", needs=(), run=lambda _ctx: {"neuron_ap": pl.DataFrame({"x": [1]})})
    with pytest.raises(StageError, match="neuron_ap.*experts"):
        run_stages([thief], ctx, StageTimer(torch.device("cpu")))
    fine = Stage(name="probes", needs=(), run=lambda _ctx: {"probe_results": pl.DataFrame({"x": [1]})})
    assert set(run_stages([fine], ctx, StageTimer(torch.device("cpu")))) == {"probe_results"}


def test_every_stage_module_is_in_the_order():
    """A module of precompute/stages/ that the schema's stage order does not name would never run."""
    folder = Path(pipeline.__file__).parent / "stages"
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "base", "contexts"}
    assert modules == set(pipeline.STAGE_NAMES)


def test_pipeline_only_orders_stages():
    """The pipeline module calls no analysis itself: every analysis is a stage."""
    source = Path(pipeline.__file__).read_text(encoding="utf-8")
    assert "precompute.analysis" not in source
    assert "find_mlp_sites" not in source


def _store_with_checkpoints(path: Path, model_dir: Path) -> None:
    """A finished store of a tiny GPT-2 with three checkpoints (all the same weights), experts in every language."""
    from precompute.model import ModelLayout, load_checkpoint

    layout = ModelLayout.of(load_checkpoint(str(model_dir), device="cpu", dtype="float32").model)
    texts = {("monday", "de"): ("Am Montag", "Montag"), ("monday", "en"): ("On Monday", "Monday")}
    texts |= {("monday", "fr"): ("Le lundi", "lundi")}
    sentences = pl.DataFrame(
        [
            {"sentence_id": i, "concept_id": c, "lang": lang, "text": t, "span_start": t.index(f)}
            | {"span_end": t.index(f) + len(f)}
            for i, ((c, lang), (t, f)) in enumerate(texts.items())
        ],
        schema_overrides={"span_start": pl.Int32, "span_end": pl.Int32},
    )
    experts = pl.DataFrame(
        [
            {"lang": lang, "concept_id": "monday", "layer": r % 2, "unit": 3 * r, "ap": 1 - r / 10, "rank": r + 1}
            | {"median_pos_act": 5.0}
            for lang in LANGS
            for r in range(4)
        ],
        schema_overrides={"layer": pl.Int32, "unit": pl.Int32, "rank": pl.Int32},
    )
    probes = pl.DataFrame(
        {"layer": [0], "representation": ["mean"], "accuracy": [0.5], "accuracy_std": [0.0], "macro_f1": [0.5]}
        | {"n_train": [3], "n_test": [3], "n_seeds": [1]},
        schema_overrides={"layer": pl.Int32, "n_train": pl.Int32, "n_test": pl.Int32, "n_seeds": pl.Int32},
    )
    with StoreWriter(path) as w:
        w.ensure_run(
            run={
                "run_id": "tiny-run",
                "model_id": str(model_dir),
                "config_json": json_dumps({"data": {"languages": LANGS}, "model": {"dtype": "float32"}}),
                "concept_set_sha256": "0" * 64,
                "packages_json": "{}",
                "started_at": datetime(2026, 1, 1),
            },
            languages=pl.DataFrame({"lang": LANGS, "name": ["German", "English", "French"]}),
            concepts=pl.DataFrame({"concept_id": ["monday"], "label": ["Monday"]}),
            sentences=sentences,
            layers=layout.layer_frame(),
            meta={"crossling_version": "test"},
        )
        for step, name in enumerate(CHECKPOINTS, start=1):
            w.write_checkpoint(
                "tiny-run",
                CheckpointRows(
                    name,
                    step,
                    None,
                    str(model_dir),
                    1000 * step,
                    {"neuron_ap": experts, "probe_results": probes, "stage_timings": RUN_TIMINGS},
                    source_fingerprint=f"fingerprint-{step}",
                ),
            )


def _tables(path: Path) -> dict[str, list]:
    con = open_readonly(path)
    try:
        return {
            t: con.execute(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY ALL").fetchall()
            for t in ("neuron_ap", "neuron_ap_by_unit", "probe_results")
        } | {
            "checkpoints": con.execute(
                "SELECT checkpoint, step, tokens_seen, source_fingerprint FROM checkpoints ORDER BY checkpoint"
            ).fetchall()
        }
    finally:
        con.close()


def test_steer_publishes_parts_and_copies_the_store_once(tmp_path, tiny_gpt2_dir, monkeypatch):
    """Three checkpoints steered: three parts, no copy of the store file before the one pack at the end, and every
    other table of each checkpoint (and its checkpoints row) as it was."""
    import precompute.store.writer as writer_module

    store = tmp_path / "store.duckdb"
    _store_with_checkpoints(store, tiny_gpt2_dir)
    before = _tables(store)
    copies: list[str] = []
    real_copy = writer_module.shutil.copyfile

    def counting_copy(src, dst, *args, **kwargs):
        if Path(src).resolve() == store.resolve():
            copies.append(f"copy at {len(list(writer_module.parts.listed_parts(store.resolve())))} parts")
        return real_copy(src, dst, *args, **kwargs)

    at_pack: list[int] = []
    real_pack = writer_module.StoreWriter.pack

    def recording_pack(self):
        at_pack.append(len(copies))
        at_pack.append(len(writer_module.parts.listed_parts(self.target)))
        return real_pack(self)

    monkeypatch.setattr(writer_module.shutil, "copyfile", counting_copy)
    monkeypatch.setattr(writer_module.StoreWriter, "pack", recording_pack)
    summary = pipeline.steer(
        store, n_neurons=[0, 2], seeds=[0], prompts=[""], max_new_tokens=3, device="cpu", source_langs=["de"]
    )
    assert at_pack == [0, len(CHECKPOINTS)], "each checkpoint is a part; nothing copies the store file before the pack"
    assert len(copies) == 1, copies  # the pack
    assert not (tmp_path / "store.duckdb.parts").exists()
    assert _tables(store) == before  # the other tables and each checkpoint's row, fingerprint included
    con = open_readonly(store)
    try:
        per_checkpoint = con.execute("SELECT checkpoint, count(*) FROM steering GROUP BY 1 ORDER BY 1").fetchall()
        timings = con.execute(
            "SELECT checkpoint, list(stage ORDER BY stage), list(seconds ORDER BY stage)[1] FROM stage_timings "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    assert per_checkpoint == [(c, 2) for c in CHECKPOINTS]
    assert [(c, stages, load) for c, stages, load in timings] == [
        (c, ["load", "probes", "steering"], 7.0) for c in CHECKPOINTS
    ]  # one load row, the run's, and the stages the steer did not rerun
    assert set(summary["n_neurons"]) == {0, 2}

    # A second steer of one checkpoint adds its rows to that checkpoint's and leaves the others' alone.
    pipeline.steer(
        store,
        checkpoints=["step_2"],
        n_neurons=[2],
        seeds=[1],
        prompts=[""],
        max_new_tokens=3,
        device="cpu",
        source_langs=["de"],
    )
    con = open_readonly(store)
    try:
        per_checkpoint = con.execute("SELECT checkpoint, count(*) FROM steering GROUP BY 1 ORDER BY 1").fetchall()
    finally:
        con.close()
    assert per_checkpoint == [("step_1", 2), ("step_2", 3), ("step_3", 2)]
    assert _tables(store) == before


def test_generic_checkpoint_reader_gives_a_new_page_its_rows(synthetic_store):
    """``explorer.queries.checkpoint_rows``: every row of a declared checkpoint table, in training order."""
    from explorer import queries as Q

    con = open_readonly(synthetic_store)
    try:
        run_id = con.execute("SELECT run_id FROM runs").fetchall()[0][0]
        rows = Q.checkpoint_rows(con, "probe_results", run_id)
        expected = con.execute("SELECT count(*) FROM probe_results WHERE run_id = ?", [run_id]).fetchall()[0][0]
        order = [c for (c,) in con.execute("SELECT checkpoint FROM checkpoints ORDER BY step, checkpoint").fetchall()]
        some = Q.checkpoint_rows(con, "probe_results", run_id, order[:1])
        with pytest.raises(ValueError, match="not a checkpoint table"):
            Q.checkpoint_rows(con, "runs", run_id)
    finally:
        con.close()
    assert rows.height == expected > 0
    assert "run_id" not in rows.columns and rows["step"].is_sorted()
    assert list(dict.fromkeys(rows["checkpoint"].to_list())) == order
    assert set(some["checkpoint"].to_list()) == {order[0]}
