"""crossling precompute: checkpoints -> activations -> scores -> one DuckDB store."""

__version__ = "0.1.0"
