"""Where a store's activations table lives: `<store>/activations` (the default), another local
folder, or an object-store URL (`s3://bucket/prefix`, `gs://…`, `az://…`); the catalog always
stays a local DuckDB file.

The catalog names a data file relative to the store folder when the table is the default one (a
moved or copied store reads its own files) and by its full path or URL otherwise. Reads go through
delta-rs (its own object-store client) and Arrow filesystems; DuckDB reads remote files through
an fsspec filesystem that wraps the same Arrow filesystem (DuckDB 2.0's httpfs extension cannot
be installed offline). Credentials, endpoints and regions come from each cloud library's own
environment and config files (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, AWS_REGION, GOOGLE_APPLICATION_
CREDENTIALS, …), never from the catalog.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

from embstore.errors import OutsideStoreError, StoreError, UsageError

DEFAULT_DIR = "activations"
TIMEOUT_ENV = "EMBSTORE_REMOTE_TIMEOUT"
DEFAULT_TIMEOUT = 120.0  # seconds one object-store request may take (a 256 MiB commit at 2 MB/s), retries included: 2 ×


def remote_timeout() -> float:
    """Seconds one request to the object store may take ($EMBSTORE_REMOTE_TIMEOUT, default 120): a hung
    endpoint fails a command after about twice this, with one line, instead of stalling it."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageError(f"{TIMEOUT_ENV}={text!r}: give the seconds one object-store request may take, e.g. 120")
    return value


# schemes both delta-rs and Arrow speak; gcs:// and abfss:// are the spellings other tools use
REMOTE_SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "abfs", "abfss": "abfs"}


def normalise(uri: str | Path | None) -> str | None:
    """The canonical spelling of a table location (None: the store's own folder); raises on a bad one.

    >>> normalise("s3://bucket/runs/imagenet/")
    's3://bucket/runs/imagenet'
    >>> normalise("ftp://host/x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    embstore.errors.UsageError: activations location 'ftp://host/x' has an unsupported scheme 'ftp'; ...
    """
    if uri is None or str(uri) == "":
        return None
    text = str(uri)
    scheme = urlparse(text).scheme
    if scheme in ("", "file"):
        path = Path(text[len("file://") :] if scheme == "file" else text).expanduser().resolve()
        return str(path)
    if scheme not in REMOTE_SCHEMES:
        raise UsageError(
            f"activations location '{text}' has an unsupported scheme '{scheme}'; use a local folder or "
            "s3://, gs://, az:// (abfss://) URL"
        )
    parsed = urlparse(text)
    if not parsed.netloc:
        raise UsageError(f"activations location '{text}' names no bucket; write it as {scheme}://BUCKET/PREFIX")
    return f"{scheme}://{parsed.netloc}{parsed.path}".rstrip("/")


class Location:
    """The activations table's place: the URI delta-rs opens, and how readers reach its files."""

    def __init__(self, store_path: Path, uri: str | None = None):
        self.store_path = Path(store_path)
        self.uri = normalise(uri)

    def __repr__(self) -> str:
        return f"<Location {self.table_uri}>"

    @property
    def is_default(self) -> bool:
        return self.uri is None

    @property
    def remote(self) -> bool:
        return self.uri is not None and urlparse(self.uri).scheme in REMOTE_SCHEMES

    @property
    def scheme(self) -> str:
        return REMOTE_SCHEMES[urlparse(self.uri).scheme] if self.remote and self.uri else "file"

    @property
    def delta_options(self) -> dict[str, str] | None:
        """delta-rs storage options of a remote table: its request timeout and retries (local: None)."""
        if not self.remote:
            return None
        t = remote_timeout()
        return {"timeout": f"{t:g}s", "connect_timeout": f"{min(t, 10.0):g}s", "max_retries": "3",
                "retry_timeout": f"{2 * t:g}s"}  # fmt: skip

    @property
    def table_uri(self) -> str:
        """What delta-rs opens."""
        return self.uri if self.uri is not None else str(self.store_path / DEFAULT_DIR)

    def rel(self, path_in_table: str) -> str:
        """The catalog's name of a data file given its path inside the table (from the Delta log)."""
        if self.is_default:
            return f"{DEFAULT_DIR}/{path_in_table}"
        return f"{self.table_uri}/{path_in_table}"

    # -- reading files -----------------------------------------------------------------------------
    @cached_property
    def filesystem(self):
        """The Arrow filesystem the data files are read with."""
        import pyarrow.fs as pafs

        if not self.remote:
            return pafs.LocalFileSystem()
        try:
            fs, _ = pafs.FileSystem.from_uri(self.table_uri)
        except Exception as exc:  # noqa: BLE001 - arrow raises several types for a bad URL or missing config
            raise StoreError(f"cannot reach activations table {self.table_uri}: {_one_line(exc)}") from exc
        return fs

    def fs_path(self, rel: str) -> str:
        """The path of a catalog file name on `filesystem`; raises OutsideStoreError for a name that
        leads outside the table's folder (every read, listing, repair and delete comes through here)."""
        if not self.inside(rel):
            raise OutsideStoreError(
                f"the store names {rel}, which lies outside its activations table {self.table_uri} (a crafted "
                "catalog row or log entry, or a symbolic link): never read, repaired or deleted; `embstore verify` "
                "lists it and --repair drops it from the catalog"
            )
        return self.unchecked_path(rel)

    def unchecked_path(self, rel: str) -> str:
        """`fs_path` without the check: for deciding about a name, never for opening it."""
        if not self.remote:
            return str(self.store_path / rel)  # an absolute rel stays absolute
        return rel.split("://", 1)[1]

    def inside(self, rel: str) -> bool:
        """Whether catalog file name `rel` names a path in the table's folder: locally with every
        symbolic link resolved (a link to /etc/hostname is outside), remotely under the table's URL
        with no `..` segment."""
        if self.remote:
            root = self.table_uri.rstrip("/")
            return (rel == root or rel.startswith(root + "/")) and ".." not in rel[len(root) :].split("/")
        root, path = self._real_root, os.path.realpath(self.unchecked_path(rel))
        return path == root or path.startswith(root.rstrip(os.sep) + os.sep)

    @cached_property
    def _real_root(self) -> str:
        """The table's folder with its links resolved, once per Location (`inside` asks it per file)."""
        return os.path.realpath(self.table_uri)

    def fs_paths(self, rels: list[str]) -> list[str]:
        return [self.fs_path(r) for r in rels]

    def exists(self, rel: str) -> bool:
        import pyarrow.fs as pafs

        return self.filesystem.get_file_info(self.fs_path(rel)).type == pafs.FileType.File

    def open(self, rel: str):
        return self.filesystem.open_input_file(self.fs_path(rel))

    def delete(self, rel: str) -> None:
        self.filesystem.delete_file(self.fs_path(rel))

    def dataset(self, rels: list[str], fmt="parquet"):
        """An Arrow dataset over the given catalog files."""
        import pyarrow.dataset as ds

        return ds.dataset(self.fs_paths(rels), filesystem=self.filesystem, format=fmt)

    @cached_property
    def duckdb_filesystem(self):
        """An fsspec filesystem for DuckDB's `register_filesystem` (made once), or None for a local table."""
        if not self.remote:
            return None
        from fsspec.implementations.arrow import ArrowFSWrapper

        scheme = self.scheme

        class _Remote(ArrowFSWrapper):  # DuckDB routes a path to the filesystem whose protocol it carries
            protocol = (scheme, *(k for k, v in REMOTE_SCHEMES.items() if v == scheme and k != scheme))

        return _Remote(self.filesystem)

    def check_reachable(self) -> None:
        """Raise one line when the table's bucket or folder cannot be listed (credentials, endpoint)."""
        import pyarrow.fs as pafs

        if not self.remote:
            return
        bucket = self.fs_path(self.table_uri).split("/", 1)[0]
        try:
            info = self.filesystem.get_file_info(bucket)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"cannot reach activations table {self.table_uri}: {_one_line(exc)}") from exc
        if info.type == pafs.FileType.NotFound:
            raise StoreError(
                f"bucket '{bucket}' of activations table {self.table_uri} does not exist (or these credentials "
                "cannot see it); create it first"
            )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")
