"""The store: a directory with a DuckDB catalog, Parquet activation files and derived files."""

from embstore.store.store import Store

__all__ = ["Store"]
