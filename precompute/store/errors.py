"""Why a store cannot be used, as types: the CLI and the explorer choose their hint by class, never by message text.

Every reason a published store is refused has its own subclass of :class:`StoreError`; the message stays one line
that names the file. A reworded message therefore never loses its hint.
"""


class StoreError(Exception):
    """A store that cannot be opened, read or written, with a one-line reason."""


class StoreMissingError(StoreError):
    """No file at the path, or a directory where a store file was expected."""


class NotDuckDBError(StoreError):
    """The file is not a DuckDB database (another format, or a file cut short before its header)."""


class NotCrosslingStoreError(StoreError):
    """A DuckDB database that crossling did not write (no schema version row, no crossling tables)."""


class SchemaVersionError(StoreError):
    """A crossling store of another schema version than this crossling reads."""


class UnsafeStoreError(StoreError):
    """The file carries SQL (views, macros, computed defaults) that a query could run: refused, never run."""


class HalfWrittenStoreError(StoreError):
    """A store that opened but cannot be read through (truncated, damaged, or missing tables of its schema)."""


class StoreLockedError(StoreError):
    """Another precompute process is writing this store."""


class ForeignPartError(StoreError):
    """A checkpoint part that cannot prove it belongs to this store file (another store or run, another copy of
    the file, a folder or file that is not a part): never read, never packed, never deleted."""
