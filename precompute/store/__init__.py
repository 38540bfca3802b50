"""The store: one self-describing DuckDB file per run, and the only code that knows its layout.

Public names (what the pipeline, the CLI, the merge and the explorer use) are re-exported here:

- schema: :data:`DDL`, :data:`SCHEMA_VERSION`, :data:`CHECKPOINT_TABLES`, :func:`create_schema` (every table
  declared once in :data:`~precompute.store.schema.TABLES`)
- errors: :class:`StoreError` and its subclasses (the reason as a type)
- opening: :func:`open_readonly`, :func:`open_snapshot` (the store as the path names it now, parts included),
  :func:`verify_readable`, :func:`table_counts`; :func:`connect` and
  :func:`connect_attached`, the only ways crossling opens a DuckDB file (no extensions, no external access)
- identity: :func:`config_fingerprint`, :func:`run_difference` (when two runs are the same analysis)
- the lock: :func:`writer_active`, :func:`real_path`
- checkpoint parts: :func:`newest_part` (a stamp that changes when a writer publishes a checkpoint)
- reading: :func:`store_info`, :func:`read_runs`, :func:`read_store_run`, :func:`read_checkpoint_fingerprints`
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
from precompute.store.facts import RunSettings, run_settings  # noqa: F401 (re-exported: the run's facts, one reader)
from precompute.store.identity import comparable_config, config_difference, config_fingerprint, run_difference
from precompute.store.lock import real_path, writer_active
from precompute.store.open import (
    LOCKDOWN,
    check_store,
    connect,
    connect_attached,
    corrupt_reason,
    open_readonly,
    open_snapshot,
    sniff_format,
    stored_code,
    table_counts,
    verify_readable,
)
from precompute.store.parts import newest_part
from precompute.store.read import read_checkpoint_fingerprints, read_runs, read_store_run, store_info
from precompute.store.schema import (
    CHECKPOINT_TABLES,
    DDL,
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
from precompute.text import first_line, listed, printable

__all__ = [
    "CHECKPOINT_TABLES",
    "DDL",
    "LOCKDOWN",
    "MLP_LAYER_TABLES",
    "SCHEMA_VERSION",
    "CheckpointRows",
    "HalfWrittenStoreError",
    "NotCrosslingStoreError",
    "NotDuckDBError",
    "SchemaVersionError",
    "StoreError",
    "StoreLockedError",
    "StoreMissingError",
    "StoreWriter",
    "UnsafeStoreError",
    "check_store",
    "checkpoint_order",
    "comparable_config",
    "config_difference",
    "config_fingerprint",
    "connect",
    "connect_attached",
    "corrupt_reason",
    "create_schema",
    "first_line",
    "insert_rows",
    "json_dumps",
    "listed",
    "newest_part",
    "open_readonly",
    "open_snapshot",
    "printable",
    "read_checkpoint_fingerprints",
    "read_runs",
    "read_store_run",
    "real_path",
    "run_difference",
    "schema_version",
    "sniff_format",
    "store_info",
    "stored_code",
    "table_counts",
    "utc_now",
    "verify_readable",
    "writer_active",
]
