"""One exception root for embstore; the CLI turns every leaf into a one-line message."""

from __future__ import annotations

from collections.abc import Iterable


class EmbstoreError(Exception):
    """Root of every error embstore raises on purpose."""

    exit_code = 1


class UsageError(EmbstoreError, ValueError):
    """An argument is out of range or names no valid choice; the message lists the choices."""

    exit_code = 2


class MissingDependencyError(EmbstoreError, ImportError):
    """An optional package this call needs is not installed; the message names the install command."""

    exit_code = 2


class EngineError(EmbstoreError, RuntimeError):
    """The distributed engine (Ray) failed to start or lost work it could not retry."""


class StoreError(EmbstoreError):
    """The store directory or its catalog cannot be used as asked."""


class CatalogDamagedError(StoreError):
    """DuckDB cannot read the catalog file (a block fails its checksum); `verify --repair` restores the
    last published snapshot of it."""


class StoreBusyError(StoreError, RuntimeError):
    """Another process holds the catalog or the ingest lock."""

    exit_code = 3


class OutsideStoreError(StoreError):
    """The catalog or the table's log names a file outside the store's own folders (a crafted row, a
    symlink): embstore never reads, repairs or deletes it; `verify` reports it, `--repair` drops the row."""


class MigrationError(StoreError, RuntimeError):
    """A migration failed or an applied migration file was edited."""


class NotFoundError(EmbstoreError, LookupError):
    """A named thing (model, layer, class, image, path) does not exist."""

    exit_code = 2


class UnknownModelError(NotFoundError):
    pass


class UnknownLayerError(NotFoundError):
    pass


class UnknownClassError(NotFoundError):
    pass


class InputPathError(NotFoundError):
    pass


class ManifestError(EmbstoreError, ValueError):
    """A CSV/Parquet manifest is malformed."""

    exit_code = 2


class WeightsUnavailableError(EmbstoreError, FileNotFoundError):
    """Pretrained weights are neither cached locally nor downloadable."""

    exit_code = 2


class ImageDecodeError(EmbstoreError, ValueError):
    """One image cannot be used; ingestion records it and goes on."""


def did_you_mean(value: str, choices: Iterable[str], *, n: int = 5) -> str:
    """' Did you mean: a, b?' for the nearest names in `choices`, or ''."""
    import difflib

    choices = list(dict.fromkeys(choices))  # a name listed twice (synonyms of two classes) is suggested once
    close = difflib.get_close_matches(value, choices, n=n, cutoff=0.5)
    if not close:
        low = value.lower()
        close = [c for c in choices if low in c.lower()][:n]
    return f" Did you mean: {', '.join(close)}?" if close else ""


def is_rust_panic(exc: BaseException) -> bool:
    """A panic in a Rust extension (delta-rs): pyo3 raises it as a BaseException, not an Exception
    (e.g. "Failed to create a tokio runtime for IO" when no file descriptor is left)."""
    return type(exc).__name__ == "PanicException"
