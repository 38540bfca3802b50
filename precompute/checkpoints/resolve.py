"""Which checkpoints a run covers: checkpoint specs resolved to one ordered list, and shards of it.

A run config names its checkpoints in ``[[checkpoints]]`` tables (one each) and/or one ``[checkpoint_set]``
table (`precompute.config.CheckpointSetSpec`) that names many at once:

=============================================  ==============================================================
``revisions = ["global_step1000", ...]``       hub revisions (branches, tags, commits) of ``model.id``
``template = "global_step{step}"``             names built from steps: ``steps = [...]``, or ``start``,
                                               ``stop`` (inclusive) and ``every`` (start defaults to every)
``pattern = "global_step*"``                   every hub branch of ``model.id`` matching the glob (``re:...``
                                               for a regex), listed with ``huggingface_hub.list_repo_refs``
``paths = ["ckpts/a", ...]``                   local checkpoint directories (relative to the config file)
``local = "ckpts/step_*"``                     every local directory matching the glob
=============================================  ==============================================================

``steps``, ``start``, ``stop`` and ``every`` also filter what ``revisions``/``pattern``/``paths``/``local``
list, by the training step parsed from each name (`parse_step`: ``global_step1000``, ``step_000128``,
``step143000``, ``checkpoint-500``, ``iter_0001000``; a local directory's ``crossling_checkpoint.json`` or
``trainer_state.json`` wins over its name). A set is ordered by step (names without a step last), after the
``[[checkpoints]]`` tables in their written order. ``tokens_seen`` comes from the checkpoint's own metadata,
else ``step * tokens_per_step`` when the set gives it.

Offline (``HF_HUB_OFFLINE=1`` at call time, as `precompute.model.load` reads it) or without access, listing a
repository's branches fails with one `CheckpointError` line naming the model; explicit revisions need no
listing, so they run offline from the local cache.

Shards of the resolved list: `precompute.checkpoints.shards`.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import re
from collections.abc import Sequence
from pathlib import Path

from precompute.checkpoints.hub import exception_chain, hub_offline
from precompute.config import MAX_TEMPLATE_CHECKPOINTS, CheckpointSpec, ConfigError, RunConfig
from precompute.text import first_line as _first_line

__all__ = [
    "CheckpointError",
    "list_hub_branches",
    "looks_like_local_path",
    "match_names",
    "parse_step",
    "resolve_checkpoints",
    "resolve_model_checkpoints",
]


class CheckpointError(ConfigError):
    """A checkpoint spec that cannot be resolved; the message is one line naming the model (and revision)."""


_STEP_RE = re.compile(r"(?:global[_-]?step|step|checkpoint|ckpt|iter(?:ation)?)[_-]?(\d+)", re.IGNORECASE)


def parse_step(name: str) -> int | None:
    """The training step in a checkpoint's name (the last ``step``-like number), or None.

    ``global_step1000`` -> 1000, ``step_000128`` -> 128, ``step143000`` -> 143000, ``checkpoint-500`` -> 500,
    ``iter_0001000`` -> 1000, ``"2000"`` -> 2000, ``main`` -> None.
    """
    base = Path(str(name).rstrip("/")).name
    found = _STEP_RE.findall(base)
    if found:
        return int(found[-1])
    return int(base) if base.isdigit() else None


def list_hub_branches(repo_id: str) -> list[tuple[str, str]]:
    """``(branch, commit)`` of every branch of a hub model repository, via ``huggingface_hub.list_repo_refs``.

    Raises `CheckpointError` (one line naming the model) offline, for a missing, private or gated repository,
    and when the hub cannot be reached.
    """
    if looks_like_local_path(repo_id):
        raise _not_a_hub_id(repo_id)
    if hub_offline():
        raise CheckpointError(
            f"{repo_id}: cannot list its branches offline (HF_HUB_OFFLINE is set); name the revisions "
            "explicitly ([checkpoint_set] revisions = [...]) to use checkpoints in the local cache"
        )
    import huggingface_hub

    try:
        refs = huggingface_hub.list_repo_refs(repo_id)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        names = {type(e).__name__ for e in exception_chain(exc)}
        text = " ".join(str(e) for e in exception_chain(exc)).lower()
        if "GatedRepoError" in names or "gated" in text:
            reason = "gated repository (accept its terms on the hub, then log in with `hf auth login`)"
        elif "RepositoryNotFoundError" in names or "404" in text:
            reason = "no such model on the hub (or it is private: log in with `hf auth login`)"
        elif "OfflineModeIsEnabled" in names or "offline" in text:
            reason = "cannot list its branches offline (HF_HUB_OFFLINE is set)"
        elif "HFValidationError" in names:
            reason = f"not a valid hub model id ({_first_line(exc)})"
        elif (
            names
            & {
                "ConnectError",
                "ConnectionError",
                "ConnectTimeout",
                "ReadTimeout",
                "TimeoutException",
                "NewConnectionError",
                "MaxRetryError",
                "gaierror",
            }
            or "connect" in text
        ):
            reason = "cannot list its branches: the hub is unreachable (no network?)"
        else:
            reason = f"cannot list its branches ({type(exc).__name__}: {_first_line(exc)})"
        raise CheckpointError(f"{repo_id}: {reason}") from None
    return [(b.name, b.target_commit) for b in refs.branches]


def match_names(names: Sequence[str], pattern: str) -> list[str]:
    """The names matching a glob (``global_step*``) or, after ``re:``, a regex (full match)."""
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as exc:
            raise CheckpointError(f"pattern {pattern!r}: not a valid regular expression ({exc})") from None
        return [n for n in names if regex.fullmatch(n)]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def _local_metadata(path: Path) -> tuple[int | None, int | None]:
    """(step, tokens_seen) recorded inside a checkpoint directory, where it records them."""
    ours = path / "crossling_checkpoint.json"
    if ours.is_file():
        try:
            meta = json.loads(ours.read_text(encoding="utf-8"))
            return _int_or_none(meta.get("step")), _int_or_none(meta.get("tokens_seen"))
        except (OSError, ValueError, AttributeError):
            pass
    trainer = path / "trainer_state.json"  # transformers.Trainer's checkpoint-N directories
    if trainer.is_file():
        try:
            meta = json.loads(trainer.read_text(encoding="utf-8"))
            return _int_or_none(meta.get("global_step")), _int_or_none(meta.get("num_input_tokens_seen")) or None
        except (OSError, ValueError, AttributeError):
            pass
    return None, None


def _int_or_none(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _local_spec(path: Path, name: str | None = None) -> CheckpointSpec:
    step, tokens = _local_metadata(path)
    if step is None:
        step = parse_step(path.name)
    return CheckpointSpec(name=name or path.name, path=str(path), step=step, tokens_seen=tokens)


def _filtered(specs: list[CheckpointSpec], cfg: RunConfig) -> list[CheckpointSpec]:
    s = cfg.checkpoint_set
    wanted = set(s.steps)
    filtering = bool(wanted) or s.start is not None or s.stop is not None or s.every is not None
    if not filtering:
        return specs
    start = s.start if s.start is not None else 0
    out = []
    for spec in specs:
        step = spec.step
        if step is None:
            continue
        if wanted and step not in wanted:
            continue
        if step < start or (s.stop is not None and step > s.stop):
            continue
        if s.every and (step - start) % s.every:
            continue
        out.append(spec)
    return out


def _template_steps(cfg: RunConfig) -> list[int]:
    s = cfg.checkpoint_set
    steps = s.template_steps()
    if len(steps) > MAX_TEMPLATE_CHECKPOINTS:  # config_from_dict refuses it; a config built in code may not have
        raise CheckpointError(
            f"[checkpoint_set] start/stop/every select {len(steps):,} checkpoints for the template; at most "
            f"{MAX_TEMPLATE_CHECKPOINTS:,} are allowed"
        )
    return list(steps)


def looks_like_local_path(name: str) -> bool:
    """Whether ``name`` can only be a local path, never a hub id (``name`` or ``owner/name``): absolute, starting
    with ``.`` or ``~``, with a backslash or more than one ``/``, or with characters a hub id cannot hold."""
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or Path(name).is_absolute():
        return True
    return not re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?", name)


def _not_a_hub_id(name: str, base_dir: str | Path | None = None) -> CheckpointError:
    """The error for a local-looking name that is no directory: it is never sent to the hub."""
    where = Path(name).expanduser()
    if not where.is_absolute():
        where = Path(base_dir or ".").resolve() / where
    return CheckpointError(
        f"{name}: no such local folder (looked in {where}); it is not a hub id (owner/name) either, so the hub "
        "was not asked"
    )


def _hub_model(cfg: RunConfig, what: str) -> str:
    model = cfg.model.id
    if Path(model).expanduser().is_dir() or cfg.resolve(model).is_dir():
        raise CheckpointError(
            f"{model}: is a local directory, but [checkpoint_set] {what} names hub revisions of a hub model"
        )
    if looks_like_local_path(model):
        raise _not_a_hub_id(model, cfg.base_dir)
    return model


def resolve_set(cfg: RunConfig, *, where: str = "config") -> list[CheckpointSpec]:
    """The checkpoints named by ``cfg.checkpoint_set``, ordered by step (names without a step last)."""
    s = cfg.checkpoint_set
    sources = s.sources()
    if not sources:
        return []
    source = sources[0]
    if source == "revisions":
        _hub_model(cfg, "revisions")
        specs = [CheckpointSpec(name=r, revision=r, step=parse_step(r)) for r in s.revisions]
        specs = _filtered(specs, cfg)
    elif source == "template":
        _hub_model(cfg, "template")
        try:
            names = [s.template.format(step=step) for step in _template_steps(cfg)]
        except (KeyError, IndexError, ValueError) as exc:
            raise CheckpointError(f"{where}: [checkpoint_set] template {s.template!r}: {exc}") from None
        specs = [CheckpointSpec(name=n, revision=n, step=st) for n, st in zip(names, _template_steps(cfg))]
    elif source == "pattern":
        model = _hub_model(cfg, "pattern")
        branches = [name for name, _ in list_hub_branches(model)]
        matched = match_names(branches, s.pattern)
        if not matched:
            shown = ", ".join(sorted(branches)[:5]) + (", ..." if len(branches) > 5 else "")
            raise CheckpointError(
                f"{model}: no branch matches pattern {s.pattern!r} ({len(branches)} branches: {shown or 'none'})"
            )
        specs = _filtered([CheckpointSpec(name=n, revision=n, step=parse_step(n)) for n in matched], cfg)
    elif source == "paths":
        specs = []
        for raw in s.paths:
            path = cfg.resolve(raw).resolve()
            if not path.is_dir():
                raise CheckpointError(f"{where}: [checkpoint_set] paths: {raw} is not a directory ({path})")
            specs.append(_local_spec(path))
        specs = _filtered(specs, cfg)
    else:  # local
        pattern = str(cfg.resolve(s.local))
        dirs = sorted(Path(p).resolve() for p in glob.glob(pattern) if Path(p).is_dir())
        if not dirs:
            raise CheckpointError(
                f"{where}: [checkpoint_set] local = {s.local!r}: no directory matches {Path(pattern).resolve()} "
                "(create the checkpoints first; see the comment at the top of the config)"
            )
        specs = _filtered([_local_spec(d) for d in dirs], cfg)
    if not specs:
        raise CheckpointError(f"{where}: [checkpoint_set] selects no checkpoint (check steps/start/stop/every)")
    if s.tokens_per_step:
        for spec in specs:
            if spec.tokens_seen is None and spec.step is not None:
                spec.tokens_seen = spec.step * s.tokens_per_step
    specs.sort(key=lambda c: (c.step is None, c.step if c.step is not None else 0))
    return specs


def resolve_checkpoints(cfg: RunConfig, *, where: str = "config") -> list[CheckpointSpec]:
    """Every checkpoint of a run: the ``[[checkpoints]]`` tables in their order, then the checkpoint set."""
    specs = list(cfg.checkpoints) + resolve_set(cfg, where=where)
    seen: dict[str, int] = {}
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
    dup = sorted(n for n, k in seen.items() if k > 1)
    if dup:
        raise CheckpointError(
            f"{where}: checkpoint names occur twice ({', '.join(dup)}) in [[checkpoints]] and [checkpoint_set]"
        )
    return specs


def resolve_model_checkpoints(
    model: str, *, pattern: str | None = None, base_dir: str | Path = "."
) -> list[tuple[CheckpointSpec, str | None]]:
    """What ``precompute checkpoints MODEL`` lists: a local folder's checkpoint directories, or a hub
    repository's branches, with their commits (None for local directories)."""
    local = Path(model).expanduser()
    if not local.is_absolute():
        local = Path(base_dir) / local
    if local.is_dir():
        if (local / "config.json").is_file() and pattern is None:
            return [(_local_spec(local), None)]
        names = sorted(p.name for p in local.iterdir() if p.is_dir() and (p / "config.json").is_file())
        names = match_names(names, pattern) if pattern else names
        if not names:
            raise CheckpointError(
                f"{model}: no checkpoint directories (with a config.json)"
                + (f" matching {pattern!r}" if pattern else "")
            )
        specs = [(_local_spec(local / n), None) for n in names]
    else:
        if looks_like_local_path(model):
            raise _not_a_hub_id(model, base_dir)
        branches = list_hub_branches(model)
        commits = dict(branches)
        names = match_names(list(commits), pattern) if pattern else list(commits)
        if not names:
            shown = ", ".join(sorted(commits)[:5]) + (", ..." if len(commits) > 5 else "")
            raise CheckpointError(
                f"{model}: no branch matches pattern {pattern!r} ({len(commits)} branches: {shown or 'none'})"
            )
        specs = [(CheckpointSpec(name=n, revision=n, step=parse_step(n)), commits[n]) for n in names]
    specs.sort(key=lambda item: (item[0].step is None, item[0].step or 0, item[0].name))
    return specs
