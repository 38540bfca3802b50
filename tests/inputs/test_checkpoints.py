"""Checkpoint specs (hub revisions, templates, branch patterns, local directories), shards, --layers.

The hub is never contacted: `huggingface_hub.list_repo_refs` is monkeypatched, and the offline path runs
with HF_HUB_OFFLINE=1 set at call time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from precompute.checkpoints import (
    CheckpointError,
    Shard,
    list_hub_branches,
    match_names,
    parse_shard,
    parse_step,
    resolve_checkpoints,
    select_shard,
    shard_from_env,
)
from precompute.cli import app
from precompute.cli.run import _parse_layers
from precompute.config import ConfigError, config_from_dict, load_config

runner = CliRunner()
REPO = "bigscience/bloom-560m-intermediate"
BRANCHES = [
    "main",
    "global_step1000",
    "global_step10000",
    "global_step100000",
    "global_step200000",
    "global_step300000",
    "global_step400000",
    "global_step500000",
    "global_step600000",
]


class _Ref:
    def __init__(self, name: str):
        self.name, self.ref, self.target_commit = name, f"refs/heads/{name}", f"{abs(hash(name)):040x}"[:40]


class _Refs:
    def __init__(self, names):
        self.branches = [_Ref(n) for n in names]
        self.tags, self.converts, self.pull_requests = [], [], None


@pytest.fixture
def fake_hub(monkeypatch):
    """list_repo_refs answering for REPO only; records the calls."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    calls = []

    def list_repo_refs(repo_id, **kwargs):
        calls.append(repo_id)
        if repo_id != REPO:
            import importlib

            from huggingface_hub import errors

            http = importlib.import_module(errors.Response.__module__.split(".")[0])  # httpx (or its fork)
            url = f"https://huggingface.co/api/models/{repo_id}/refs"
            raise RepositoryNotFoundError(
                f"404 Client Error. Repository Not Found for url: {url}",
                response=http.Response(404, request=http.Request("GET", url)),
            )
        return _Refs(BRANCHES)

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(huggingface_hub, "list_repo_refs", list_repo_refs)
    return calls


def _cfg(checkpoint_set: dict, tmp_path: Path, model: str = REPO, **extra):
    data = {"model": {"id": model}, "checkpoint_set": checkpoint_set, **extra}
    return config_from_dict(data, base_dir=tmp_path, where="run.toml")


# ---------------------------------------------------------------------------------------------- names and steps


@pytest.mark.parametrize(
    "name, step",
    [
        ("global_step1000", 1000),
        ("global_step0", 0),
        ("step_000128", 128),
        ("step143000", 143000),
        ("checkpoint-500", 500),
        ("iter_0001000", 1000),
        ("ckpt_42", 42),
        ("2000", 2000),
        ("main", None),
        ("bloom-560m", None),
        ("/runs/x/checkpoint-7/", 7),
    ],
)
def test_parse_step(name, step):
    assert parse_step(name) == step


def test_match_names_glob_and_regex():
    assert match_names(BRANCHES, "global_step*")[0] == "global_step1000"
    assert "main" not in match_names(BRANCHES, "global_step*")
    assert match_names(BRANCHES, r"re:global_step[1-4]00000") == [
        "global_step100000",
        "global_step200000",
        "global_step300000",
        "global_step400000",
    ]
    with pytest.raises(CheckpointError, match="not a valid regular expression"):
        match_names(BRANCHES, "re:(")


# ---------------------------------------------------------------------------------------------- config specs


def test_revisions_need_no_hub_and_keep_step_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # explicit revisions resolve offline
    cfg = _cfg({"revisions": ["global_step400000", "global_step10000"], "tokens_per_step": 1000}, tmp_path)
    specs = resolve_checkpoints(cfg)
    assert [(c.name, c.revision, c.step, c.tokens_seen, c.path) for c in specs] == [
        ("global_step10000", "global_step10000", 10000, 10_000_000, None),
        ("global_step400000", "global_step400000", 400000, 400_000_000, None),
    ]


def test_template_range_and_steps(tmp_path):
    cfg = _cfg({"template": "global_step{step}", "start": 100000, "stop": 400000, "every": 100000}, tmp_path)
    assert [c.name for c in resolve_checkpoints(cfg)] == [
        "global_step100000",
        "global_step200000",
        "global_step300000",
        "global_step400000",
    ]
    cfg = _cfg({"template": "global_step{step}", "stop": 30000, "every": 10000}, tmp_path)
    assert [c.step for c in resolve_checkpoints(cfg)] == [10000, 20000, 30000]  # start defaults to every
    cfg = _cfg({"template": "step{step}", "steps": [512, 1]}, tmp_path)
    assert [c.revision for c in resolve_checkpoints(cfg)] == ["step1", "step512"]


def test_pattern_lists_branches_with_filters(tmp_path, fake_hub):
    cfg = _cfg({"pattern": "global_step*"}, tmp_path)
    specs = resolve_checkpoints(cfg)
    assert [c.step for c in specs] == [1000, 10000, 100000, 200000, 300000, 400000, 500000, 600000]
    assert all(c.revision == c.name and c.path is None for c in specs)
    assert fake_hub == [REPO]
    cfg = _cfg({"pattern": "global_step*", "start": 100000, "every": 200000}, tmp_path)
    assert [c.step for c in resolve_checkpoints(cfg)] == [100000, 300000, 500000]
    cfg = _cfg({"pattern": "global_step*", "steps": [10000, 400000]}, tmp_path)
    assert [c.name for c in resolve_checkpoints(cfg)] == ["global_step10000", "global_step400000"]


def test_pattern_without_match_names_the_branches(tmp_path, fake_hub):
    cfg = _cfg({"pattern": "step*"}, tmp_path)
    with pytest.raises(CheckpointError, match=r"no branch matches pattern 'step\*' \(9 branches: global_step1000"):
        resolve_checkpoints(cfg)


def test_pattern_offline_fails_in_one_line_naming_the_model(tmp_path, monkeypatch, fake_hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _cfg({"pattern": "global_step*"}, tmp_path)
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoints(cfg)
    message = str(info.value)
    assert message.startswith(f"{REPO}: cannot list its branches offline") and "\n" not in message
    assert fake_hub == []  # never called


def test_missing_repository_is_one_line(fake_hub):
    with pytest.raises(CheckpointError, match=r"^bigscience/nope: no such model on the hub"):
        list_hub_branches("bigscience/nope")


def test_unreachable_hub_is_one_line(monkeypatch, fake_hub):
    import huggingface_hub

    def down(repo_id, **kwargs):
        raise ConnectionError("Failed to establish a new connection: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub, "list_repo_refs", down)
    with pytest.raises(CheckpointError, match=rf"^{REPO}: cannot list its branches: the hub is unreachable"):
        list_hub_branches(REPO)


def _local_checkpoints(root: Path, steps=(30, 4, 100)) -> list[Path]:
    out = []
    for step in steps:
        d = root / f"step_{step:06d}"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        out.append(d)
    if 4 in steps:
        (root / "step_000004" / "crossling_checkpoint.json").write_text(json.dumps({"step": 4, "tokens_seen": 321}))
    (root / "notes").mkdir()
    return out


def test_local_glob_and_paths(tmp_path):
    _local_checkpoints(tmp_path / "ckpts")
    cfg = _cfg({"local": "ckpts/step_*", "tokens_per_step": 10}, tmp_path, model="tiny")
    specs = resolve_checkpoints(cfg)
    assert [(c.name, c.step, c.tokens_seen) for c in specs] == [
        ("step_000004", 4, 321),
        ("step_000030", 30, 300),
        ("step_000100", 100, 1000),
    ]
    assert all(Path(c.path).is_absolute() and Path(c.path).is_dir() for c in specs)
    cfg = _cfg({"paths": ["ckpts/step_000100", "ckpts/step_000030"], "stop": 50}, tmp_path, model="tiny")
    assert [c.name for c in resolve_checkpoints(cfg)] == ["step_000030"]
    cfg = _cfg({"local": "nowhere/step_*"}, tmp_path, model="tiny")
    with pytest.raises(CheckpointError, match="no directory matches"):
        resolve_checkpoints(cfg)


def test_tables_and_set_combine_without_duplicates(tmp_path):
    _local_checkpoints(tmp_path / "ckpts")
    data = {
        "model": {"id": "tiny"},
        "checkpoints": [{"name": "first", "path": "ckpts/step_000100", "step": 0}],
        "checkpoint_set": {"local": "ckpts/step_*"},
    }
    specs = resolve_checkpoints(config_from_dict(data, base_dir=tmp_path))
    assert [c.name for c in specs] == ["first", "step_000004", "step_000030", "step_000100"]
    data["checkpoints"][0]["name"] = "step_000030"
    with pytest.raises(CheckpointError, match="occur twice"):
        resolve_checkpoints(config_from_dict(data, base_dir=tmp_path))


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"revisions": ["a"], "pattern": "b*"}, "several sources"),
        ({"template": "global_step"}, "needs a {step} field"),
        ({"template": "global_step{step}", "every": 10}, "needs steps"),
        ({"pattern": "g*", "every": 0}, "every must be >= 1"),
        ({"pattern": "g*", "start": 5, "stop": 1}, "start 5 is after stop 1"),
        ({"steps": [1, 2]}, "need a source"),
        ({"paterns": "g*"}, "unknown key 'checkpoint_set.paterns'"),
    ],
)
def test_bad_checkpoint_sets_are_one_line(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("(", r"\(")):
        _cfg(spec, tmp_path)


def test_checkpoint_set_is_not_part_of_the_run_identity(tmp_path):
    a = _cfg({"revisions": ["global_step1000"]}, tmp_path)
    b = _cfg({"pattern": "global_step*"}, tmp_path)
    assert a.fingerprint() == b.fingerprint()
    c = _cfg({"pattern": "global_step*"}, tmp_path, extract={"ram_budget_gb": 3.0, "spill_dir": "/scratch"})
    assert c.fingerprint() == a.fingerprint()
    d = _cfg({"pattern": "global_step*"}, tmp_path, extract={"layers": [0, 1]})
    assert d.fingerprint() != a.fingerprint()


def test_shipped_configs_load(fake_hub):
    configs = sorted(Path(__file__).resolve().parents[2].glob("configs/*.toml"))
    assert {p.name for p in configs} >= {
        "tiny-local.toml",
        "bloom-560m-intermediate.toml",
        "bloom-7b1-intermediate.toml",
    }
    for path in configs:
        cfg = load_config(path)
        assert cfg.checkpoint_set.sources() or cfg.checkpoints, path
        if path.name.startswith("bloom-560m"):
            specs = resolve_checkpoints(cfg)
            assert {"global_step10000", "global_step400000"} <= {c.name for c in specs}
            assert cfg.model.id == REPO and cfg.model.dtype == "bfloat16"


# ---------------------------------------------------------------------------------------------- shards


def test_parse_shard():
    assert parse_shard("0/2") == Shard(0, 2) and parse_shard(" 1 / 2 ") == Shard(1, 2)
    for bad, message in [
        ("2/2", "out of range"),
        ("a/b", "expected i/n"),
        ("1", "expected i/n"),
        ("-1/2", "expected i/n"),
        ("0/0", "must be >= 1"),
        ("1/2/3", "expected i/n"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            parse_shard(bad)


def test_shards_partition_round_robin(tmp_path):
    cfg = _cfg({"template": "global_step{step}", "stop": 10, "every": 1}, tmp_path)
    specs = resolve_checkpoints(cfg)
    parts = [select_shard(specs, Shard(i, 3)) for i in range(3)]
    assert [c.step for c in parts[0]] == [1, 4, 7, 10]  # early and late checkpoints in every shard
    names = [c.name for part in parts for c in part]
    assert sorted(names) == sorted(c.name for c in specs) and len(set(names)) == len(names)
    assert select_shard(specs, None) == specs


def test_shard_from_slurm_env():
    assert shard_from_env({}) is None
    last = shard_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"})
    assert (last.index, last.count) == (3, 4) and "SLURM_ARRAY_TASK_ID=3" in last.origin
    one_based = shard_from_env({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"})
    assert (one_based.index, one_based.count) == (0, 4)
    stepped = shard_from_env(
        {
            "SLURM_ARRAY_TASK_ID": "4",
            "SLURM_ARRAY_TASK_MIN": "0",
            "SLURM_ARRAY_TASK_MAX": "6",
            "SLURM_ARRAY_TASK_STEP": "2",
        }
    )
    assert (stepped.index, stepped.count) == (2, 4)
    with pytest.raises(CheckpointError, match="neither SLURM_ARRAY_TASK_COUNT"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "0"})
    with pytest.raises(CheckpointError, match="expected a whole number"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"})


def test_parse_layers():
    assert _parse_layers("0-3,7, 9") == [0, 1, 2, 3, 7, 9]
    assert _parse_layers("5") == [5]


# ---------------------------------------------------------------------------------------------- the CLI


def test_cli_checkpoints_lists_hub_branches(fake_hub):
    result = runner.invoke(app, ["checkpoints", REPO, "--pattern", "global_step*", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["step"] for r in rows] == [1000, 10000, 100000, 200000, 300000, 400000, 500000, 600000]
    assert rows[0]["source"] == f"{REPO}@global_step1000" and len(rows[0]["commit"]) == 40
    table = runner.invoke(app, ["checkpoints", REPO])
    assert table.exit_code == 0 and "global_step400000" in table.stdout and "400,000" in table.stdout


def test_cli_checkpoints_offline_is_one_red_line(monkeypatch, fake_hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["checkpoints", REPO])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and REPO in lines[0] and "offline" in lines[0], result.output


def test_cli_checkpoints_of_a_config_and_a_folder(tmp_path):
    _local_checkpoints(tmp_path / "ckpts")
    config = tmp_path / "run.toml"
    config.write_text('[model]\nid = "tiny"\n[checkpoint_set]\nlocal = "ckpts/step_*"\n')
    result = runner.invoke(app, ["checkpoints", str(config), "--shard", "1/2", "--json"])
    assert result.exit_code == 0, result.output
    assert [r["checkpoint"] for r in json.loads(result.stdout)] == ["step_000030"]
    folder = runner.invoke(app, ["checkpoints", str(tmp_path / "ckpts"), "--json"])
    assert [r["step"] for r in json.loads(folder.stdout)] == [4, 30, 100]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shard", "2/2"], "out of range"),
        (["--shard", "a/b"], "expected i/n"),
        (["--layers", "3-1"], "runs backwards"),
        (["--layers", "x"], "expected"),
    ],
)
def test_cli_run_rejects_bad_shard_and_layers(tmp_path, args, message):
    _local_checkpoints(tmp_path / "ckpts")
    config = tmp_path / "run.toml"
    config.write_text('[model]\nid = "tiny"\n[checkpoint_set]\nlocal = "ckpts/step_*"\n')
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "s.duckdb"), *args])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "s.duckdb").exists()


def test_cli_run_shard_beyond_the_checkpoints_does_nothing(tmp_path):
    _local_checkpoints(tmp_path / "ckpts", steps=(1,))
    config = tmp_path / "run.toml"
    config.write_text('[model]\nid = "tiny"\n[checkpoint_set]\nlocal = "ckpts/step_000001"\n')
    result = runner.invoke(app, ["run", str(config), "--out", str(tmp_path / "s{shard}.duckdb"), "--shard", "3/4"])
    assert result.exit_code == 0, result.output
    assert "no checkpoints" in result.stdout and not list(tmp_path.glob("*.duckdb"))
