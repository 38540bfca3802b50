"""Hostile uses of the commands: folders that are the user's, a store of an unfinished run shared without its
parts, and notebook-API arguments the store cannot answer.

- A command removes or replaces only what it can prove it wrote: the demo training records what it writes in
  ``DIR/.crossling-demo`` (folders by name, files by content hash) and refuses, in one line naming the folder,
  to touch anything else (``precompute demo --work DIR``, and the tests' ``python -m tests.support.tiny_checkpoints
  DIR``).
- A run records the checkpoints it was meant to hold when it starts (``meta.planned_checkpoints``, and
  ``meta.planned_shard`` for one shard); ``info``, ``report``, ``merge``, the explorer and the notebook API say
  plainly when it is unfinished and what it lacks; ``merge`` refuses an unfinished shard unless
  ``--allow-partial``, and the merged store says which checkpoints are missing.
- The notebook API raises one documented error, ``explorer.api.ArgumentError`` (a ``KeyError`` and a
  ``ValueError``), naming the argument, for every unknown name and bad argument.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import duckdb
import pytest

from explorer.api import ArgumentError, open_store
from precompute.cli import app
from precompute.demo.train import MARKER_FILE, _clear_run
from precompute.store import DDL, StoreError
from tests.support.reliability import (
    assert_refused,
    checkpoint_names,
    copy_of_reference,
    run_config,
    run_precompute,
    runner,
)
from tests.support.tiny_checkpoints import main as tiny_checkpoints

# --- folders the demo did not write ----------------------------------------------------------------------


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder, the target for a link)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = str(p.readlink()).encode()
        else:
            out[rel] = None if p.is_dir() else p.read_bytes()
    return out


def user_folder(tmp_path: Path, case: str) -> Path:
    """A folder of the user's, holding one thing of a name the demo training uses."""
    folder = tmp_path / "mine"
    folder.mkdir()
    if case in ("step-folder", "other-step-folder", "tmp-folder"):
        name = {"step-folder": "step_000003", "other-step-folder": "step_000099", "tmp-folder": ".step_000006.tmp"}
        (folder / name[case]).mkdir()
        (folder / name[case] / "weights.bin").write_bytes(b"my own model")
    elif case == "card-link":
        outside = tmp_path / "my-card.md"
        outside.write_text("my card\n")
        (folder / "MODEL_CARD.md").symlink_to(outside)
    else:
        name = {"card": "MODEL_CARD.md", "log": "training_log.json", "config": "training_config.json"}[case]
        (folder / name).write_text("my notes: not crossling's\n")
    return folder


USER_CASES = ["step-folder", "other-step-folder", "tmp-folder", "card", "log", "config", "card-link"]


def tiny_refused(capsys, args: list, *, names: str | Path, says: str) -> str:
    """Run ``python -m tests.support.tiny_checkpoints ARGS`` in-process; check exit 1 and one ``error:`` line naming
    ``names`` and saying ``says``. Returns the error line."""
    capsys.readouterr()
    assert tiny_checkpoints([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert str(names) in errors[0] and says in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("case", USER_CASES)
def test_tiny_checkpoints_refuses_a_folder_with_the_users_files(case, tmp_path, capsys):
    folder = user_folder(tmp_path, case)
    before = tree(folder)
    line = tiny_refused(capsys, [folder, "--steps", "12"], names=folder, says="did not write")
    assert MARKER_FILE in line and "choose another folder" in line, line
    assert tree(folder) == before
    if case == "card-link":
        assert (tmp_path / "my-card.md").read_text() == "my card\n"


def test_tiny_checkpoints_refuses_a_file_and_bad_steps(tmp_path, capsys):
    file = tmp_path / "ckpts"
    file.write_text("a file\n")
    tiny_refused(capsys, [file], names=file, says="is a file, not a folder")
    assert file.read_text() == "a file\n"
    tiny_refused(capsys, [tmp_path / "new", "--steps", "0"], names="--steps 0", says="at least 1")
    assert not (tmp_path / "new").exists()


def test_the_tiny_checkpoints_are_test_support_not_a_command():
    """The installed ``precompute`` has no command that trains a test model; only the tests build one."""
    result = runner.invoke(app, ["tiny-checkpoints", "anywhere"])
    assert result.exit_code != 0 and "No such command 'tiny-checkpoints'" in result.output, result.output
    assert "tiny-checkpoints" not in runner.invoke(app, ["--help"]).output


@pytest.mark.parametrize("case", ["demo-toml", "work-is-a-file", "checkpoints-is-a-file", "user-step-folder"])
def test_demo_refuses_a_work_folder_with_the_users_files(case, tmp_path):
    work, out = tmp_path / "work", tmp_path / "demo.duckdb"
    if case == "work-is-a-file":
        work.write_text("not a folder\n")
        names, says = work, "is a file, not a folder"
    else:
        work.mkdir()
        if case == "demo-toml":
            (work / "demo.toml").write_text("# my own run config\n[model]\nid = 'mine'\n")
            names, says = work, "demo.toml, which precompute demo did not write"
        elif case == "checkpoints-is-a-file":
            (work / "checkpoints").write_text("x\n")
            names, says = work / "checkpoints", "is a file"
        else:
            (work / "checkpoints" / "step_000016").mkdir(parents=True)
            (work / "checkpoints" / "step_000016" / "config.json").write_text("{}\n")
            names, says = work / "checkpoints", "step_000016/, which training the demo model did not write"
    before = tree(work) if work.is_dir() else work.read_bytes()
    assert_refused(["demo", "--work", work, "--out", out], names=names, says=says)
    assert (tree(work) if work.is_dir() else work.read_bytes()) == before
    assert not out.exists()


def test_retraining_replaces_only_what_it_wrote(tmp_path, capsys):
    folder = tmp_path / "ckpts"
    assert tiny_checkpoints([str(folder), "--steps", "4"]) == 0
    marker = json.loads((folder / MARKER_FILE).read_text())
    assert sorted(marker["folders"]) == [
        ".step_000001.tmp",
        ".step_000002.tmp",
        ".step_000004.tmp",
        "step_000001",
        "step_000002",
        "step_000004",
    ]
    assert set(marker["files"]) == {"MODEL_CARD.md", "training_log.json", "training_config.json"}
    (folder / "notes.txt").write_text("mine\n")
    card = (folder / "MODEL_CARD.md").read_text()
    # The user edited the card the demo wrote: other settings would replace it, so they are refused.
    (folder / "MODEL_CARD.md").write_text(card + "my remarks\n")
    before = tree(folder)
    tiny_refused(capsys, [folder, "--steps", "8"], names=folder, says="MODEL_CARD.md, which")
    assert tree(folder) == before
    # As the demo wrote it again: retrained, the earlier checkpoints replaced, the user's file kept.
    (folder / "MODEL_CARD.md").write_text(card)
    assert tiny_checkpoints([str(folder), "--steps", "8"]) == 0
    assert sorted(p.name for p in folder.glob("step_*")) == ["step_000002", "step_000004", "step_000008"]
    assert (folder / "notes.txt").read_text() == "mine\n"
    # The same settings again: nothing is trained, nothing is touched.
    before = tree(folder)
    assert tiny_checkpoints([str(folder), "--steps", "8"]) == 0 and tree(folder) == before


def test_a_forged_marker_cannot_lead_out_of_the_folder(tmp_path):
    folder, victim = tmp_path / "ckpts", tmp_path / "victim"
    folder.mkdir()
    victim.mkdir()
    (victim / "keep.txt").write_text("keep\n")
    (folder / "step_000001").mkdir()
    (folder / "results").mkdir()
    (folder / MARKER_FILE).write_text(
        json.dumps(
            {
                "folders": ["../victim", str(victim), "step_000001", "results", ".", ".."],
                "files": {"../victim/keep.txt": []},
            }
        )
    )
    _clear_run(folder)
    assert (victim / "keep.txt").read_text() == "keep\n"
    assert (folder / "results").is_dir()  # not a name the demo writes: never removed
    assert not (folder / "step_000001").exists()


# --- the store of an unfinished run -------------------------------------------------------------------------


def refused_merge(args: list, *, names, says: str) -> str:
    return assert_refused(["merge", *args], names=names, says=says)


def info_text(store: Path) -> str:
    result = runner.invoke(app, ["info", str(store)])
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())


def info_json(store: Path) -> dict:
    result = runner.invoke(app, ["info", str(store), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def drop_checkpoint(store: Path, name: str) -> None:
    """Delete one checkpoint's rows from every table (as if the run never computed it)."""
    con = duckdb.connect(str(store))
    try:
        for table in DDL:
            cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
            if "checkpoint" in cols:
                con.execute(f"DELETE FROM {table} WHERE checkpoint = ?", [name])
    finally:
        con.close()


def sql(store: Path, statement: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(store))
    try:
        return con.execute(statement, params or []).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """A run killed during its second checkpoint: the store file (run, no checkpoint) and one part beside it."""
    store = tmp_path_factory.mktemp("killed") / "store.duckdb"
    proc = run_precompute("run", run_config(), "--out", store, fault="kill@experts.lang:4")
    assert proc.returncode != 0, proc.stderr
    assert (store.parent / "store.duckdb.parts").is_dir()
    return store


def test_a_run_records_what_it_is_meant_to_hold(tmp_path):
    store = copy_of_reference(tmp_path)
    meta = dict(sql(store, "SELECT key, value FROM meta"))
    assert json.loads(meta["planned_checkpoints"]) == checkpoint_names() and "planned_shard" not in meta
    data = info_json(store)
    assert data["finished"] is True and data["missing_checkpoints"] == [] and data["progress"] is None
    assert "unfinished" not in info_text(store)


def test_the_killed_store_with_its_parts_says_what_it_lacks(killed):
    text = info_text(killed)
    names = checkpoint_names()
    assert "unfinished run (runs.finished_at is empty): it holds 1 of the 3 planned checkpoint(s)" in text, text
    assert f"missing 2: {names[1]}, {names[2]}" in text and "1 checkpoint(s) are part files" in text


def test_the_store_of_an_unfinished_run_shared_alone_says_so_everywhere(killed, tmp_path, monkeypatch):
    alone = tmp_path / "shared.duckdb"
    shutil.copyfile(killed, alone)  # its parts left behind
    names = checkpoint_names()
    # info
    text = info_text(alone)
    assert "unfinished run (runs.finished_at is empty): it holds 0 of the 3 planned checkpoint(s)" in text, text
    assert f"missing 3: {', '.join(names)}" in text and "no shared.duckdb.parts/ folder is beside it" in text
    data = info_json(alone)
    assert data["finished"] is False and data["missing_checkpoints"] == names and data["checkpoints"] == []
    assert data["planned_checkpoints"] == names
    # report: a warning before the figures
    report = runner.invoke(app, ["report", str(alone)])
    assert report.exit_code == 0, report.output
    assert "warning:" in report.stderr and "unfinished run" in report.stderr and "0 of the 3" in report.stderr
    # merge: refused, one line naming the store
    out = tmp_path / "merged.duckdb"
    line = refused_merge([alone, "--out", out], names=alone, says="unfinished run (runs.finished_at is empty)")
    assert "--allow-partial" in line and not out.exists()
    # the explorer: unfinished, not "probably still working"
    from explorer.problems import StoreProblem
    from explorer.store_context import open_context

    monkeypatch.setenv("CROSSLING_STORE", str(alone))
    with pytest.raises(StoreProblem) as problem:
        open_context()
    assert "no completed checkpoint yet" in problem.value.title
    assert "unfinished" in problem.value.hint and "probably still working" not in problem.value.hint
    assert "parts" in problem.value.hint
    # the notebook API
    with open_store(alone) as store:
        assert store.progress.unfinished and store.progress.missing == names
        with pytest.warns(UserWarning, match="unfinished run"):
            assert store.checkpoint_names == []
        with pytest.raises(StoreError, match="unfinished run"):
            store.experts("monday", names[0])


def test_merge_refuses_an_unfinished_shard_unless_asked_and_records_what_is_missing(killed, tmp_path):
    names = checkpoint_names()
    packed = tmp_path / "packed.duckdb"
    shutil.copyfile(killed, packed)
    shutil.copytree(killed.parent / "store.duckdb.parts", tmp_path / "packed.duckdb.parts")
    assert runner.invoke(app, ["pack", str(packed)]).exit_code == 0  # one file now; still unfinished
    out = tmp_path / "merged.duckdb"
    line = refused_merge([packed, "--out", out], names=packed, says="it holds 1 of the 3 planned checkpoint(s)")
    assert "no precompute is writing it" in line
    result = runner.invoke(app, ["merge", str(packed), "--out", str(out), "--allow-partial"])
    assert result.exit_code == 0, result.output
    assert "1 checkpoint(s) added" in result.stdout and "unfinished" in result.stderr
    assert f"lacks 2 of the run's 3 planned checkpoint(s) ({names[1]}, {names[2]})" in " ".join(result.stderr.split())
    assert sql(out, "SELECT finished_at FROM runs") == [(None,)]
    data = info_json(out)
    assert data["finished"] is False and data["missing_checkpoints"] == names[1:]
    assert "unfinished run" in info_text(out)
    # The merged store, unfinished, is itself refused as a shard of another merge.
    refused_merge([out, "--out", tmp_path / "again.duckdb"], names=out, says="unfinished run")
    # Extended with a finished store of the whole run: complete, finished, and says nothing more.
    whole = copy_of_reference(tmp_path, "whole.duckdb")
    result = runner.invoke(app, ["merge", str(whole), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert info_json(out)["finished"] is True and "unfinished" not in info_text(out)
    assert sql(out, "SELECT finished_at IS NOT NULL FROM runs") == [(True,)]


def test_a_finished_shard_merges_and_the_merged_store_says_what_the_other_shards_hold(tmp_path):
    names = checkpoint_names()
    shard = copy_of_reference(tmp_path, "shard-0.duckdb")
    drop_checkpoint(shard, names[1])
    sql(
        shard,
        "INSERT INTO meta VALUES ('planned_shard', ?)",
        [json.dumps({"shard": "0/2", "checkpoints": [names[0], names[2]]})],
    )
    text = info_text(shard)
    assert f"shard 0/2 of a run of 3 checkpoints: it holds its 2; the other 1 ({names[1]})" in text, text
    assert "unfinished" not in text
    out = tmp_path / "merged.duckdb"
    result = runner.invoke(app, ["merge", str(shard), "--out", str(out)])  # finished: no --allow-partial needed
    assert result.exit_code == 0, result.output
    assert f"lacks 1 of the run's 3 planned checkpoint(s) ({names[1]})" in " ".join(result.stderr.split())
    meta = dict(sql(out, "SELECT key, value FROM meta"))
    assert "planned_shard" not in meta and json.loads(meta["planned_checkpoints"]) == names
    assert info_json(out)["missing_checkpoints"] == [names[1]]
    # A shard that lacks one of its own checkpoints is unfinished, even with finished_at set.
    broken = copy_of_reference(tmp_path, "shard-broken.duckdb")
    drop_checkpoint(broken, names[0])
    sql(
        broken,
        "INSERT INTO meta VALUES ('planned_shard', ?)",
        [json.dumps({"shard": "0/2", "checkpoints": [names[0], names[2]]})],
    )
    refused_merge(
        [broken, "--out", tmp_path / "b.duckdb"],
        names=broken,
        says="incomplete run: it holds 1 of the 2 planned checkpoint(s) of shard 0/2",
    )


def test_a_store_written_before_plans_were_recorded(tmp_path):
    """No plan in meta: finished_at alone says whether the run finished."""
    old = copy_of_reference(tmp_path, "old.duckdb")
    sql(old, "DELETE FROM meta WHERE key = 'planned_checkpoints'")
    assert info_json(old)["finished"] is True and "unfinished" not in info_text(old)
    sql(old, "UPDATE runs SET finished_at = NULL")
    text = info_text(old)
    assert "unfinished run (runs.finished_at is empty): it holds 3 checkpoint(s)" in text
    assert "was not recorded" in text
    refused_merge([old, "--out", tmp_path / "m.duckdb"], names=old, says="unfinished run")


def test_a_run_stopped_after_its_last_checkpoint_is_finished_by_running_it_again(tmp_path):
    store = copy_of_reference(tmp_path)
    sql(store, "UPDATE runs SET finished_at = NULL")
    assert "it holds all 3 planned checkpoint(s) but stopped before it was marked finished" in info_text(store)
    result = runner.invoke(app, ["run", str(run_config()), "--out", str(store)])
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.stderr
    assert sql(store, "SELECT finished_at IS NOT NULL FROM runs") == [(True,)]
    assert info_json(store)["finished"] is True


# --- the notebook API's one error for names and arguments it cannot answer -----------------------------------


@pytest.fixture(scope="module")
def api_store(synthetic_store):
    with open_store(synthetic_store) as store:
        yield store


HUGE = 10**30
# id: (method, args, kwargs, the argument the error names)
API_CASES = {
    "checkpoint-unknown": ("experts", ("monday", "global_step_nope"), {}, "checkpoint"),
    "checkpoint-not-a-string": ("experts", ("monday", 3), {}, "checkpoint"),
    "checkpoint-a-unknown": ("compare", ("monday", "nope", "global_step0"), {}, "checkpoint_a"),
    "checkpoint-b-unknown": ("compare", ("monday", "global_step0", "nope"), {}, "checkpoint_b"),
    "concept-unknown": ("experts", ("no-such-concept",), {}, "concept"),
    "concept-unknown-shared": ("shared_experts", ("no-such-concept",), {}, "concept"),
    "concept-unknown-history": ("shared_expert_history", ("nope",), {}, "concept"),
    "concept-unknown-overlap": ("concept_overlap", ("nope",), {}, "concept"),
    "concept-unknown-compare": ("compare", ("nope", "global_step0", "global_step2000"), {}, "concept"),
    "lang-unknown": ("language_experts", ("xx",), {}, "lang"),
    "lang-other-case": ("language_experts", ("DE",), {}, "lang"),
    "k-zero": ("experts", ("monday",), {"k": 0}, "k"),
    "k-negative": ("experts", ("monday",), {"k": -3}, "k"),
    "k-huge": ("experts", ("monday",), {"k": HUGE}, "k"),
    "k-string": ("experts", ("monday",), {"k": "5"}, "k"),
    "k-float": ("language_experts", ("de",), {"k": 2.5}, "k"),
    "k-bool": ("compare", ("monday", "global_step0", "global_step2000"), {"k": True}, "k"),
    "limit-negative": ("top_shared_units", (), {"limit": -1}, "limit"),
    "limit-zero": ("shared_experts", ("monday",), {"limit": 0}, "limit"),
    "limit-huge": ("language_neurons", (), {"limit": HUGE}, "limit"),
    "limit-string": ("top_shared_units", (), {"limit": "20"}, "limit"),
    "min-langs-negative": ("shared_experts", ("monday",), {"min_langs": -2}, "min_langs"),
    "min-langs-string": ("shared_experts", ("monday",), {"min_langs": "2"}, "min_langs"),
    "layer-unknown": ("unit_history", (), {"layer": 99, "unit": 0}, "layer"),
    "layer-string": ("unit_summary", (), {"layer": "1", "unit": 0}, "layer"),
    "unit-negative": ("unit_history", (), {"layer": 0, "unit": -1}, "unit"),
    "unit-past-the-layer": ("unit_shared_history", (), {"layer": 0, "unit": 10**9}, "unit"),
    "representation-unknown": ("probe_grid", ("max",), {}, "representation"),
    "probe-layer-negative": ("probe_languages", (), {"layer": -1}, "layer"),
    "metric-unknown": ("similarity_by_layer", ("no-such-metric",), {}, "metric"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_names_the_argument_it_cannot_answer(case, api_store):
    method, args, kwargs, argument = API_CASES[case]
    with pytest.raises(ArgumentError) as err:
        getattr(api_store, method)(*args, **kwargs)
    assert err.value.argument == argument
    assert str(err.value).startswith(f"{argument}: "), str(err.value)
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    assert not isinstance(err.value, StoreError)


def test_api_answers_what_the_store_holds(api_store):
    last = api_store.checkpoint_names[-1]
    assert api_store.experts("monday", last, k=10**6).height > 0  # a large k: every stored rank
    assert api_store.top_shared_units(last, limit=2**63 - 1).height > 0
    layer = api_store.layers()["layer"][0]
    api_store.unit_history(layer=layer, unit=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finished run: no warning
        api_store.checkpoints()
    assert not api_store.progress.unfinished
