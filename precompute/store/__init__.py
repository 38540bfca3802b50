"""The store: one self-describing DuckDB file per run, and the only code that knows its layout.

Public names (what the pipeline, the CLI, the merge and the explorer use) are re-exported here:

- schema: :data:`DDL`, :data:`SCHEMA_VERSION`, :data:`CHECKPOINT_TABLES`, :func:`create_schema`
- errors: :class:`StoreError` and its subclasses (the reason as a type)
- opening: :func:`open_readonly`, :func:`verify_readable`, :func:`table_counts`
- writing: :class:`StoreWriter`, :class:`CheckpointRows`

The explorer imports this package only (it pulls in duckdb and polars, never torch or transformers).
"""

from precompute.store.errors import (
    HalfWrittenStoreError,
    NotCrosslingStoreError,
    NotDuckDBError,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
    StoreMissingError,
    UnsafeStoreError,
)
from precompute.store.open import (
    corrupt_reason,
    open_readonly,
    stored_code,
    table_counts,
    verify_readable,
)
from precompute.store.schema import (
    CHECKPOINT_TABLES,
    DDL,
    INDEXES,
    MLP_LAYER_TABLES,
    SCHEMA_VERSION,
    checkpoint_order,
    create_schema,
    schema_version,
)
from precompute.store.writer import (
    CheckpointRows,
    StoreWriter,
    insert_rows,
    json_dumps,
    utc_now,
)
from precompute.text import first_line, printable

__all__ = [
    "CHECKPOINT_TABLES", "DDL", "INDEXES", "MLP_LAYER_TABLES", "SCHEMA_VERSION",
    "CheckpointRows", "HalfWrittenStoreError", "NotCrosslingStoreError", "NotDuckDBError", "SchemaVersionError",
    "StoreError", "StoreLockedError", "StoreMissingError", "StoreWriter", "UnsafeStoreError",
    "checkpoint_order", "corrupt_reason", "create_schema", "first_line", "insert_rows", "json_dumps",
    "open_readonly", "printable", "schema_version", "stored_code", "table_counts", "utc_now", "verify_readable",
]
