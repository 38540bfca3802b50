"""When two run configs are the same analysis: the config fingerprint rule.

One rule, used by the run id (``RunConfig.fingerprint``), by the writer (which refuses a store of another run)
and by the merge (which refuses shards of different runs): every setting counts except the checkpoint list,
the device and where big intermediate arrays are kept; the concept set counts by its file name here and by its
content hash in ``runs.concept_set_sha256``. Plain dictionaries in, so the config and the store both use it
without either importing the other (``precompute.store.identity`` re-exports it).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Config keys that do not change what a run computes.
CONFIG_IGNORED: list[tuple[str, ...]] = [
    ("checkpoints",),
    ("checkpoint_set",),
    ("model", "device"),
    ("extract", "ram_budget_gb"),
    ("extract", "spill_dir"),
]


def _file_name(value: str) -> str:
    return Path(value).name


def comparable_config(config: dict[str, Any], *, concepts_name: Callable[[str], str] = _file_name) -> dict[str, Any]:
    """The part of a run's config (``RunConfig.to_dict()`` or ``runs.config_json``) that defines the analysis.

    ``concepts_name`` turns ``[data] concepts`` into the name that counts (where the file lies does not);
    ``RunConfig.fingerprint`` passes one that also knows the built-in set's aliases.
    """
    data = copy.deepcopy(config)
    for key_path in CONFIG_IGNORED:
        node: Any = data
        for key in key_path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(key_path[-1], None)
    concepts = data.get("data", {}).get("concepts") if isinstance(data.get("data"), dict) else None
    if isinstance(concepts, str):
        data["data"]["concepts"] = concepts_name(concepts)
    return data


def config_fingerprint(config: dict[str, Any], *, concepts_name: Callable[[str], str] = _file_name) -> str:
    """16 hex digits that change whenever the analysis would (see :func:`comparable_config`)."""
    data = comparable_config(config, concepts_name=concepts_name)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
