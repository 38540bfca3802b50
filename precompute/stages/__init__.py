"""The analyses of one checkpoint, one module per stage, each with the same small interface.

A stage (:class:`precompute.stages.base.Stage`) has a name, what it needs, and ``run(context) -> {table: frame}``;
the order they run in is ``precompute.pipeline.STAGES``. ``docs/extending.md`` says how to add one.
"""

from precompute.stages.base import CheckpointContext, Stage, StageError, run_stages

__all__ = ["CheckpointContext", "Stage", "StageError", "run_stages"]
