"""Storage: the catalog, the activations table, their files and the plumbing that opens them (`StoreCore`)."""

from embstore.store.core import StoreCore

__all__ = ["StoreCore"]
