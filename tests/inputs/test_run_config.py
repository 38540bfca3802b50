"""Run-config validation: loading and path resolution, one-line errors naming file and key, the fingerprint,
and the declared rules that check config values and command-line options alike."""

from pathlib import Path

import pytest

from precompute.config import ConfigError, config_from_dict, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
[model]
id = "ckpts"
[[checkpoints]]
name = "a"
path = "ckpts/a"
step = 10
[experts]
top_k = 5
"""


def test_config_loads_and_resolves_paths(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.experts.top_k == 5
    assert cfg.resolve(cfg.checkpoints[0].path) == tmp_path.resolve() / "ckpts/a"
    assert cfg.probes.seeds == [0, 1, 2]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model\nid=1", "malformed TOML"),
        (GOOD + "\n[experts2]\nx = 1\n", "unknown key 'experts2'"),
        (GOOD.replace("top_k = 5", "top_k = 'five'"), "experts.top_k must be int"),
        (GOOD.replace("top_k = 5", "topk = 5"), "unknown key 'experts.topk'"),
        (GOOD.replace("step = 10", "step = true"), "must be int, got bool"),
        (GOOD.replace('id = "ckpts"', 'id = ""'), "[model] id is required"),
        (GOOD + '\n[[checkpoints]]\nname = "a"\npath = "x"\n', "duplicate names ['a']"),
        (GOOD + '\n[[checkpoints]]\nname = "b"\n', "needs a path or a revision"),
        (GOOD.replace("top_k = 5", "top_k = 0"), "top_k must be >= 1"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_fingerprint_ignores_checkpoints_and_device():
    base = {"model": {"id": "m"}, "checkpoints": [{"name": "a", "path": "a"}]}
    a = config_from_dict(base)
    b = config_from_dict({"model": {"id": "m", "device": "cuda"}, "checkpoints": []})
    c = config_from_dict({"model": {"id": "m"}, "experts": {"top_k": 7}})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def _settings_classes():
    import dataclasses

    from precompute.config import RunConfig

    seen, todo = [], [RunConfig]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        for f in dataclasses.fields(cls):
            for sub in (dataclasses.MISSING if f.default_factory is dataclasses.MISSING else f.default_factory(),):
                item = sub[0] if isinstance(sub, list) and sub else sub
                if dataclasses.is_dataclass(item) and type(item) not in seen + todo:
                    todo.append(type(item))
    return seen


def test_every_numeric_setting_declares_its_range():
    """Ranges stand next to the settings: a number without a declared bound is a gap."""
    import dataclasses
    import typing

    from precompute.config import CheckpointSpec, Rule

    classes = _settings_classes() + [CheckpointSpec]
    assert len(classes) >= 10
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            args = set(typing.get_args(tp)) or {tp}
            if args & {int, float} or (typing.get_origin(tp) is list and args & {int, float}):
                rule = f.metadata.get("rule")
                assert isinstance(rule, Rule), f"{cls.__name__}.{f.name} declares no rule"
                assert any(b is not None for b in (rule.ge, rule.gt, rule.le, rule.lt)), f"{cls.__name__}.{f.name}"


def test_no_hand_written_validation_left():
    """One generic checker reads the declarations; RunConfig.validate only delegates to it."""
    import inspect

    from precompute.config import RunConfig

    source = inspect.getsource(RunConfig.validate)
    assert "check_settings" in source and source.count("\n") < 6
    assert not hasattr(RunConfig, "_validate_checkpoint_set")


def test_options_and_config_values_are_checked_by_the_same_rules(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    cfg.model.dtype = "float8"
    cfg.overridden["model.dtype"] = "--dtype 'float8'"
    with pytest.raises(ConfigError, match=r"^--dtype 'float8': must be one of 'auto'"):
        cfg.validate()
    cfg.overridden.clear()
    with pytest.raises(ConfigError, match=r"run\.toml: \[model\] dtype must be one of"):
        cfg.validate()


def test_config_path_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(tmp_path)
