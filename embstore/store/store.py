"""A store: one directory holding a DuckDB catalog, immutable Parquet activations and indexes.

    <store>/catalog.duckdb        catalog (schema from migrations/)
    <store>/activations/model=M/weights=W/layer=L/<run>-<seq>.parquet
    <store>/staging/              files written but not yet published (never globbed)
    <store>/indexes/              search indexes
    <store>/quarantine/           files `embstore verify --repair` moved aside

DuckDB lets one process write a database file and blocks every other process while it does,
so nothing here holds the catalog open for long: each operation opens a connection, does its
work and closes it, retrying briefly when another process holds the lock. A long ingest thus
leaves readers free between its batch commits.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import time
from pathlib import Path

from embstore.errors import StoreBusyError, StoreError
from embstore.store.migrations import migrate

CATALOG_FILE = "catalog.duckdb"
DEFAULT_HOME = Path("~/.embstore")
HIVE_TYPES = "{'model': 'VARCHAR', 'weights': 'VARCHAR', 'layer': 'VARCHAR'}"


def default_store_path() -> Path:
    """$EMBSTORE_HOME if set, else ~/.embstore."""
    env = os.environ.get("EMBSTORE_HOME")
    return Path(env).expanduser() if env else DEFAULT_HOME.expanduser()


def sql_literal(value: str) -> str:
    """Quote a string for the few places DuckDB takes no parameter (DDL of views)."""
    return "'" + str(value).replace("'", "''") + "'"


def dict_rows(cur) -> list[dict]:
    """The rows of an executed DuckDB cursor as {column: value} dicts."""
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


class Store:
    """Open (and create, if asked) the store at `path`.

    >>> store = Store.open("/tmp/demo-store", create=True)  # doctest: +SKIP
    >>> with store.read() as con: con.sql("SELECT count(*) FROM images").fetchall()  # doctest: +SKIP
    """

    def __init__(self, path: Path, *, lock_timeout: float = 30.0):
        self.path = Path(path).expanduser().resolve()
        self.lock_timeout = lock_timeout
        self._kept = None  # a read-only connection kept for a short-lived query process

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path | None = None, *, create: bool = False, lock_timeout: float = 30.0,
             keep_reader: bool = False) -> "Store":
        """Open the store; `keep_reader` keeps one read-only connection for every `read()`.

        Keeping it saves ~20-50 ms per catalog open in one-shot query processes; it also blocks
        other processes' writes until `close()`, and this process cannot write meanwhile.
        """
        store = cls(Path(path) if path else default_store_path(), lock_timeout=lock_timeout)
        if not store.catalog_path.exists():
            if not create:
                raise StoreError(
                    f"no embstore store at {store.path}; create one with `embstore ingest --store {store.path} …`"
                )
            if store.path.exists() and not store.path.is_dir():
                raise StoreError(f"store path {store.path} exists and is not a directory")
        for sub in ("activations", "staging", "indexes", "quarantine"):
            (store.path / sub).mkdir(parents=True, exist_ok=True)
        store._upgrade(keep_reader)
        return store

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_FILE

    @property
    def activations_root(self) -> Path:
        return self.path / "activations"

    @property
    def staging_root(self) -> Path:
        return self.path / "staging"

    @property
    def indexes_root(self) -> Path:
        return self.path / "indexes"

    @property
    def quarantine_root(self) -> Path:
        return self.path / "quarantine"

    def _upgrade(self, keep_reader: bool = False) -> None:
        """Apply pending migrations and point the activations view at this directory.

        Checked on a read-only connection first, so opening an up-to-date store for queries
        never takes the write lock.
        """
        if self.catalog_path.exists():
            con = self._connect(read_only=True)
            if not self._needs_upgrade(con):
                if keep_reader:
                    self._kept = con
                else:
                    con.close()
                return
            con.close()
        with self.write() as con:
            migrate(con)
            self._refresh_view(con)
        if keep_reader:
            self._kept = self._connect(read_only=True)

    def _needs_upgrade(self, con) -> bool:
        from embstore.store.migrations import discover

        try:
            applied = dict(con.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        except Exception:  # no ledger yet
            return True
        if any(applied.get(m.version) != m.checksum for m in discover()):
            return True
        view = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'activations'").fetchall()
        has_files = any(self.activations_root.glob("model=*/weights=*/layer=*/*.parquet"))
        return has_files and (not view or self.activations_glob() not in view[0][0])

    # -- connections -----------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self):
        """A short read-write connection; commit happens per statement or explicit transaction."""
        con = self._connect(read_only=False)
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def read(self):
        """A short read-only connection (other readers may share the file meanwhile)."""
        if self._kept is not None:
            yield self._kept
            return
        con = self._connect(read_only=True)
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self):
        """A read-write connection inside BEGIN … COMMIT (ROLLBACK on any error)."""
        with self.write() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _connect(self, *, read_only: bool):
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        while True:
            try:
                # one thread: catalog statements are small, and the cores belong to the network
                return duckdb.connect(str(self.catalog_path), read_only=read_only, config={"threads": 1})
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise StoreError(f"cannot open catalog {self.catalog_path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise StoreBusyError(
                        f"catalog {self.catalog_path} stayed locked by another process for "
                        f"{self.lock_timeout:.0f} s; retry when it finishes"
                    ) from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.1)

    # -- the activations view --------------------------------------------------------------
    def activations_glob(self) -> str:
        return str(self.activations_root / "**" / "*.parquet")

    def activations_view_sql(self) -> str:
        """SELECT over every published Parquet file: (image_id, model, weights, layer, vec FLOAT[])."""
        return (
            "SELECT image_id, model, weights, layer, vec FROM read_parquet("
            f"{sql_literal(self.activations_glob())}, hive_partitioning = true, hive_types = {HIVE_TYPES})"
        )

    def _refresh_view(self, con) -> None:
        # A view over a glob that matches nothing fails to bind, so the typed empty view from
        # migration 0001 stays until the first file is published. The path is absolute because
        # DuckDB resolves relative paths in stored views against the reader's working directory.
        if not any(self.activations_root.glob("model=*/weights=*/layer=*/*.parquet")):
            return
        con.execute(f"CREATE OR REPLACE VIEW activations AS {self.activations_view_sql()}")

    def refresh_view(self) -> None:
        with self.write() as con:
            self._refresh_view(con)

    # -- the ingest lock -------------------------------------------------------------------
    @contextlib.contextmanager
    def ingest_lock(self):
        """Hold `<store>/ingest.lock` for one writer of activations at a time.

        The OS drops a flock when its process dies, so a killed ingest never leaves it stale.
        """
        import fcntl

        lock_path = self.path / "ingest.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise StoreBusyError(
                    f"another ingest (pid {holder}) is writing to {self.path}; wait for it or stop it"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def ingest_running(self) -> bool:
        """True when some process holds the ingest lock right now."""
        import fcntl

        lock_path = self.path / "ingest.lock"
        if not lock_path.exists():
            return False
        fd = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False
