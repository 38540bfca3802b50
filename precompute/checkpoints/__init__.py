"""Which checkpoints a run covers: specs resolved to one ordered list (:mod:`.resolve`), shards of it
(:mod:`.shards`), and the one place that reads hub errors and offline mode (:mod:`.hub`)."""

from precompute.checkpoints.resolve import (
    CheckpointError,
    list_hub_branches,
    match_names,
    parse_step,
    resolve_checkpoints,
    resolve_model_checkpoints,
)
from precompute.checkpoints.shards import (
    Shard,
    parse_shard,
    select_shard,
    shard_from_env,
)

__all__ = [
    "CheckpointError",
    "Shard",
    "list_hub_branches",
    "match_names",
    "parse_shard",
    "parse_step",
    "resolve_checkpoints",
    "resolve_model_checkpoints",
    "select_shard",
    "shard_from_env",
]
