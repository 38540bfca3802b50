"""When two runs are the same analysis: the "same run" check, on the config fingerprint rule.

The rule itself (which settings count) is ``precompute.run_identity``'s, re-exported here: the run id
(``RunConfig.fingerprint``), the writer (which refuses a store of another run) and the merge (which refuses shards
of different runs) all use it; the concept set counts by its file name there and by its content hash in
``runs.concept_set_sha256``.
"""

from __future__ import annotations

import json
from typing import Any

from precompute.run_identity import CONFIG_IGNORED, comparable_config, config_fingerprint
from precompute.store.errors import HalfWrittenStoreError

__all__ = [
    "CONFIG_IGNORED",
    "comparable_config",
    "config_difference",
    "config_fingerprint",
    "parse_config_json",
    "run_difference",
]


def parse_config_json(text: str, where: str) -> dict[str, Any]:
    """``runs.config_json`` as a dict; a damaged value is one line naming the store."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise HalfWrittenStoreError(
            f"{where}: runs.config_json is not valid JSON ({exc}); the store is damaged"
        ) from None
    if not isinstance(data, dict):
        raise HalfWrittenStoreError(f"{where}: runs.config_json is not a JSON object; the store is damaged")
    return data


def config_difference(a: dict, b: dict, prefix: str = "") -> str | None:
    """The first key (dotted) where two config dicts differ, with both values; None when equal."""
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        if key not in a or key not in b:
            return (
                f"{name} ({'absent' if key not in a else json.dumps(a[key])} vs "
                f"{'absent' if key not in b else json.dumps(b[key])})"
            )
        va, vb = a[key], b[key]
        if isinstance(va, dict) and isinstance(vb, dict):
            diff = config_difference(va, vb, name + ".")
            if diff:
                return diff
        elif va != vb:
            return f"{name} ({json.dumps(va, ensure_ascii=False)} vs {json.dumps(vb, ensure_ascii=False)})"
    return None


def run_difference(
    a: dict[str, Any],
    b: dict[str, Any],
    *,
    where_a: str = "",
    where_b: str = "",
    layers_a: list[tuple] | None = None,
    layers_b: list[tuple] | None = None,
) -> str | None:
    """What makes run rows ``a`` and ``b`` (``runs`` rows as dicts) different analyses, or None for one run.

    Checked in the order a user can act on: model, concept set, settings (first differing key), then the run id
    (which these determine), the dtype and the recorded MLP layout (``layers`` rows, when both are given).
    """
    if a.get("model_id") != b.get("model_id"):
        return f"different models ({a.get('model_id')} vs {b.get('model_id')})"
    if a.get("concept_set_sha256") != b.get("concept_set_sha256"):
        return (
            f"different concept sets (sha256 {str(a.get('concept_set_sha256'))[:12]} vs "
            f"{str(b.get('concept_set_sha256'))[:12]})"
        )
    if a.get("config_json") is not None and b.get("config_json") is not None:
        diff = config_difference(
            comparable_config(parse_config_json(a["config_json"], where_a or "store")),
            comparable_config(parse_config_json(b["config_json"], where_b or "store")),
        )
        if diff:
            return f"different configs at {diff}"
    if a.get("run_id") != b.get("run_id"):
        return f"different run ids ({a.get('run_id')} vs {b.get('run_id')})"
    if (a.get("dtype") or "") != (b.get("dtype") or ""):
        return f"computed in different dtypes ({a.get('dtype')} vs {b.get('dtype')})"
    if layers_a and layers_b and layers_a != layers_b:
        return "different MLP layers recorded (table layers)"
    return None
