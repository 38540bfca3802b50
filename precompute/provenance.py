"""Where a run's inputs came from, as a store records it: portable names, never this machine's paths.

A store travels (to a laptop, to a colleague, into a paper's supplement), so what it says about its inputs
must mean the same on another machine. It records each checkpoint's source as the user named it: a hub id
(with its revision in the ``revision`` column), or a local directory relative to the run config's folder;
the run config (``runs.config_json``) likewise, with every path relative to the config's folder and the
built-in concept set named ``builtin``. Relative paths are kept as written; only absolute ones are
rewritten. Reading a store back (``precompute steer``) resolves a relative local source against the folder
of the config (:func:`checkpoint_location`).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from precompute import __version__
from precompute.config import CheckpointSpec, RunConfig
from precompute.inputs.concepts import BUILTIN_CONCEPT_SET, DEFAULT_CONCEPT_SET


def portable_path(path: str, base_dir: str | Path) -> str:
    """A path as a store records it: as written when relative (to the config's folder, or ``~``), else
    relative to ``base_dir`` (the config's folder), with ``/`` separators."""
    if not path or not Path(path).is_absolute():
        return path
    try:
        return Path(os.path.relpath(path, os.path.abspath(base_dir))).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists; the name is all that is portable
        return Path(path).name


def portable_concepts(name: str, base_dir: str | Path) -> str:
    """The concept set as a store records it: ``builtin`` for the built-in set however it was named."""
    if Path(name).is_absolute():
        try:
            if Path(name).resolve() == DEFAULT_CONCEPT_SET.resolve():
                return BUILTIN_CONCEPT_SET
        except OSError:
            pass
    return portable_path(name, base_dir)


def recorded_source(cfg: RunConfig, spec: CheckpointSpec) -> str:
    """``checkpoints.source`` of a checkpoint: its directory relative to the config's folder, or the hub id
    (a local ``model.id`` given as an absolute path is made relative too)."""
    if spec.path is not None:
        return portable_path(spec.path, cfg.base_dir)
    return portable_path(cfg.model.id, cfg.base_dir)


def portable_config(cfg: RunConfig) -> dict[str, Any]:
    """``cfg.to_dict()`` with every path portable: what ``runs.config_json`` holds."""
    data = cfg.to_dict()
    base = cfg.base_dir
    model = data.get("model") or {}
    if isinstance(model.get("id"), str):
        model["id"] = portable_path(model["id"], base)
    for ck in data.get("checkpoints") or []:
        if isinstance(ck.get("path"), str):
            ck["path"] = portable_path(ck["path"], base)
    cset = data.get("checkpoint_set") or {}
    if isinstance(cset.get("paths"), list):
        cset["paths"] = [portable_path(p, base) if isinstance(p, str) else p for p in cset["paths"]]
    if isinstance(cset.get("local"), str):
        cset["local"] = portable_path(cset["local"], base)
    concepts = (data.get("data") or {}).get("concepts")
    if isinstance(concepts, str):
        data["data"]["concepts"] = portable_concepts(concepts, base)
    extract = data.get("extract") or {}
    if isinstance(extract.get("spill_dir"), str):
        extract["spill_dir"] = portable_path(extract["spill_dir"], base)
    return data


def checkpoint_location(source: str, revision: str | None, config_dir: str | Path | None) -> str:
    """Where to load a recorded checkpoint from: a relative local source (no revision) lies in the run
    config's folder ``config_dir`` (default: the current folder); a hub id or absolute path is used as is."""
    if revision is not None or not source or Path(source).is_absolute() or config_dir is None:
        return source
    candidate = Path(config_dir) / source
    return str(candidate) if candidate.exists() else source


PROVENANCE_PACKAGES = [
    "torch",
    "transformers",
    "tokenizers",
    "duckdb",
    "polars",
    "scikit-learn",
    "numpy",
    "babel",
]


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers, plus Python and crossling."""
    versions = {"crossling": __version__, "python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def run_record(cfg: RunConfig, run_id: str, concept_set: Any, loaded: Any, started: Any) -> dict:
    """The runs-table row: model, full config, concept-set hash, package versions, device."""
    return {
        "run_id": run_id,
        "model_id": portable_path(cfg.model.id, cfg.base_dir),
        "model_card": cfg.model.card,
        "config_json": _json_dumps(portable_config(cfg)),  # no path of this machine: the store travels
        "concept_set_sha256": concept_set.sha256,
        "packages_json": _json_dumps(package_versions()),
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).replace("torch.", ""),
        "started_at": started,
        "finished_at": None,
    }


def _json_dumps(obj: Any) -> str:
    """Stable JSON for provenance columns (the store's ``json_dumps``)."""
    from precompute.store import json_dumps

    return json_dumps(obj)
