"""A store's plumbing: one folder holding a DuckDB catalog, a Delta Lake table of activations, derived files.

    <store>/catalog.duckdb        catalog (schema from migrations/)
    <store>/activations/          Delta table: _delta_log/, model=M/weights=W/layer=L/part-….parquet
    <store>/indexes/              search indexes, class statistics, classifier weights
    <store>/quarantine/           files `embstore verify --repair` moved aside

DuckDB lets one process write a database file and blocks every other process while it does,
so nothing here holds the catalog open for long: each operation opens a connection, does its
work and closes it, retrying briefly when another process holds the lock. A long ingest thus
leaves readers free between its batch commits.

`StoreCore` is that plumbing alone (opening, migrations, paths, connections, the writer lock,
snapshots, the memo); every library function takes one. The verbs a user calls are on the public
`embstore.Store` (embstore/api.py), which wraps a core (`store.core`). About 500 lines: the
connections, migrations, lock and snapshots act on one another (a write publishes the snapshot, a
kept reader is released before a write, opening migrates under the lock), so they stay together.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embstore.errors import CatalogDamagedError, StoreBusyError, StoreError, UsageError
from embstore.store import catalogfile
from embstore.store.catalog import Catalog
from embstore.store.duck import sql_literal, transaction
from embstore.store.location import Location, normalise
from embstore.store.memo import JSONABLE, Codec, Memo
from embstore.store.migrations import migrate, pending

if TYPE_CHECKING:
    import duckdb

CATALOG_FILE = "catalog.duckdb"
SNAPSHOT_FILE = "snapshot.duckdb"  # a copy for plain DuckDB clients, swapped in after writes: never locked
SNAPSHOT_EVERY = 1.0  # s between snapshots during a run (more when copying takes long: at most ~5 % of the time)
LOCATION_KEY = "activations_location"
DEFAULT_HOME = Path("~/.embstore")


def default_store_path() -> Path:
    """$EMBSTORE_HOME if set, else ~/.embstore."""
    env = os.environ.get("EMBSTORE_HOME")
    return Path(env).expanduser() if env else DEFAULT_HOME.expanduser()


class StoreCore:
    """A store's plumbing (see the module docstring); `embstore.open(path).core` is one.

    >>> import tempfile
    >>> core = StoreCore.open(tempfile.mkdtemp(), create=True)
    >>> core.catalog_path.name
    'catalog.duckdb'
    """

    def __init__(
        self,
        path: Path,
        *,
        lock_timeout: float = 30.0,
        wait: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
        snapshot: bool = False,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        # a reader of the published snapshot: never locks what a writer waits for, never writes
        self.on_snapshot = snapshot
        self.lock_timeout = lock_timeout
        self.wait = wait  # seconds a writing call waits for another process's writer lock
        self.on_wait = on_wait  # told who holds it, once, when such a wait starts
        self.restored: str | None = None  # what open(restore_catalog=True) did, for verify's report
        self._kept: Any = None  # a read-only connection kept for `sql()` and one-shot query processes
        self._keep_reader = False  # open (and keep) a read-only connection on the first read
        self._create_pending = False  # open(create=True) on a new path: made on first read or write
        self._wanted_location: str | None = None  # open(activations=…): where a new table is to live
        self._location: Location | None = None  # read from the catalog on the first connection
        self._snapshot_due = 0.0  # monotonic time after which a write publishes the snapshot again
        self._snapshot_stale = False  # a write since the last snapshot
        self.memo = Memo(self.path, self.read_path, self.indexes_root / "memo")

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        *,
        create: bool = False,
        lock_timeout: float = 30.0,
        keep_reader: bool = False,
        defer_creation: bool = False,
        activations: str | Path | None = None,
        wait: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
        restore_catalog: bool = False,
        snapshot: bool = False,
    ) -> StoreCore:
        """Open the store at `path`, applying pending migrations: the options are `embstore.open`'s
        (documented there), and `lock_timeout` the seconds a connection retries a locked catalog."""
        from embstore.store.openfiles import ensure_open_files

        ensure_open_files()
        path = Path(path) if path else default_store_path()
        store = cls(path, lock_timeout=lock_timeout, wait=wait, on_wait=on_wait, snapshot=snapshot)
        if snapshot:
            store._check_snapshot()
            return store
        store._keep_reader = keep_reader
        store._wanted_location = normalise(activations)
        if not store.catalog_path.exists():
            if not create:
                raise StoreError(
                    f"no embstore store at {store.path}; create one with `embstore.open(path, create=True)`"
                )
            if store.path.exists() and not store.path.is_dir():
                raise StoreError(f"store path {store.path} exists and is not a directory")
            if defer_creation:  # made on first use: a call that fails its checks leaves nothing on disk
                store._create_pending = True
                return store
            store._check_new_location()
        try:
            store._upgrade()
        except CatalogDamagedError:
            if not restore_catalog:
                raise
            store._restore_catalog()
            store._upgrade()
        store._adopt_location()
        return store

    def _check_snapshot(self) -> None:
        """A snapshot reader needs a published snapshot of this version's schema (it migrates nothing)."""
        if not self.snapshot_path.exists():
            raise StoreError(
                f"no published snapshot at {self.snapshot_path}: "
                + ("open the store once to publish one (`embstore status`)" if self.catalog_path.exists()
                   else f"no embstore store at {self.path}")
            )  # fmt: skip
        with self.read() as con:
            stale = self._needs_upgrade(con)
        if stale:
            raise StoreError(
                f"the snapshot {self.snapshot_path} is of an older catalog: open the store once to migrate "
                "it (`embstore status`)"
            )

    def _restore_catalog(self) -> None:
        """Replace a damaged catalog by snapshot.duckdb (the damaged file and its WAL go to quarantine/)."""
        from embstore.store.locks import writer_lock

        # the bare lock: `writer_lock()` would publish a snapshot from the catalog on its way out
        with writer_lock(self.path, wait=self.wait, on_wait=self.on_wait):
            self.restored = catalogfile.restore(self.catalog_path, self.snapshot_path, self.quarantine_root)

    def _check_new_location(self) -> None:
        """A new store's remote table is reached before anything of the store is made."""
        if self._wanted_location is not None and not self.catalog_path.exists():
            Location(self.path, self._wanted_location).check_reachable()

    def _ensure_created(self) -> None:
        if self._create_pending:
            self._create_pending = False
            self._check_new_location()
            self._upgrade()
            self._adopt_location()

    def _adopt_location(self) -> None:
        """Record `open(activations=…)` in a store that has no table yet; refuse another place later."""
        wanted = self._wanted_location
        if wanted is None:
            return
        self._wanted_location = None
        with self.read() as con:
            cat = Catalog(con)
            recorded = cat.setting(LOCATION_KEY)
            has_table = cat.table_version() is not None
        if recorded == wanted:
            return
        if recorded is not None or has_table:
            raise UsageError(
                f"this store's activations table is at {Location(self.path, recorded).table_uri}, not {wanted}; "
                "a store keeps its table where it was made (make a new store for another place)"
            )
        location = Location(self.path, wanted)
        location.check_reachable()
        from deltalake import DeltaTable

        if DeltaTable.is_deltatable(location.table_uri, storage_options=location.delta_options):
            raise UsageError(
                f"{location.table_uri} already holds a Delta table; give each store a folder or prefix of its own"
            )
        with self.write() as con:
            Catalog(con).set_setting(LOCATION_KEY, wanted)
        self._location = location

    @property
    def location(self) -> Location:
        """Where the activations table lives (`location.table_uri`): <store>/activations or a URL."""
        if self._location is None:
            with self.read():
                pass  # the first connection reads it
        return self._location or Location(self.path)

    def close(self) -> None:
        """Release the kept read-only connection (relations from `relation()` stop working)."""
        if self._kept is not None:
            kept, self._kept = self._kept, None
            self._disconnect(kept)

    def keep_reader(self) -> None:
        """From the next read on, keep one read-only connection for every read until `close()`.

        Saves ~20-50 ms per catalog open in one-shot query processes; meanwhile other processes
        cannot write the catalog. A later write by this process releases it.
        """
        self._keep_reader = True

    def __repr__(self) -> str:
        return f"<embstore StoreCore {self.path}>"

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_FILE

    @property
    def read_path(self) -> Path:
        """The file reads attach: the catalog, or its published snapshot for a snapshot reader."""
        return self.snapshot_path if self.on_snapshot else self.catalog_path

    @property
    def snapshot_path(self) -> Path:
        """A copy of the catalog for plain DuckDB clients: republished after writes, never locked."""
        return self.path / SNAPSHOT_FILE

    def _publish(self, con: Any) -> None:
        started = time.monotonic()
        if catalogfile.publish_snapshot(con, self.catalog_path, self.snapshot_path):
            self._snapshot_stale = False
            self._snapshot_due = time.monotonic() + max(SNAPSHOT_EVERY, 20 * (time.monotonic() - started))

    def publish_snapshot(self) -> None:
        """Republish `snapshot.duckdb` now if a write since the last one left it behind."""
        if self._snapshot_stale or not self.snapshot_path.exists():
            self._snapshot_due = 0.0
            with self.write():
                pass

    @property
    def activations_root(self) -> Path:
        return self.path / "activations"

    @property
    def indexes_root(self) -> Path:
        return self.path / "indexes"

    @property
    def quarantine_root(self) -> Path:
        return self.path / "quarantine"

    def _upgrade(self) -> None:
        """Create the directories, apply pending migrations and point the activations view here.

        Checked on a read-only connection first, so opening an up-to-date store for queries
        never takes the write lock; and not at all when the catalog has not changed since the
        last check found it current (the memo's state includes the store's path, so a moved
        store is checked again).
        """
        from embstore.store.migrations import discover
        from embstore.store.table import ActivationTable

        for sub in ("activations", "indexes", "quarantine"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        checked = ("catalog is current", [m.checksum for m in discover()])
        if self.catalog_path.exists():
            state = self.memo.state()
            if self.memo.peek(checked, state, JSONABLE)[0]:
                self._first_snapshot()
                return
            with self.read() as con:
                current = not self._needs_upgrade(con)
            if current:
                self.memo.put(checked, "yes", state, JSONABLE)
                self._first_snapshot()
                return
        if not self.catalog_path.exists():
            catalogfile.create(self.catalog_path)
        else:
            with self.read() as con:
                old_format = not catalogfile.is_current(con)
            if old_format:  # made by an earlier embstore in DuckDB 2.0's own format: rewrite it once
                self.close()
                with self.writer_lock():
                    catalogfile.convert(self.catalog_path, self.path)
        with self.write() as con:
            migrate(con)
            ActivationTable(self).refresh_view(con)
            legacy = Catalog(con).has_legacy_files()
        if legacy:  # made before catalog version 6: its Parquet files move into the Delta table, once
            from embstore.store.legacy import convert_legacy

            with self.writer_lock():
                convert_legacy(self)

    def _first_snapshot(self) -> None:
        """A store made before snapshots gets one when it is first opened where it can be written."""
        if self.snapshot_path.exists() or not os.access(self.path, os.W_OK):
            return
        from embstore.store.locks import writer_running

        if not writer_running(self.path):  # a running writer publishes one itself
            with contextlib.suppress(StoreError, OSError):
                self.publish_snapshot()

    def _needs_upgrade(self, con: Any) -> bool:
        from embstore.store.table import ActivationTable

        return (
            pending(con)
            or not ActivationTable(self).view_is_current(con)
            or not catalogfile.is_current(con)
            or Catalog(con).has_legacy_files()
        )

    # -- connections -----------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[Any]:
        """A short read-write connection; commit happens per statement or explicit transaction."""
        self._refuse_on_snapshot()
        self._ensure_created()
        self.close()  # a kept reader would refuse this process a read-write connection
        import duckdb

        con = self._connect(read_only=False)
        try:
            yield con
            self._snapshot_stale = True
            if time.monotonic() >= self._snapshot_due or not self.snapshot_path.exists():
                self._publish(con)
        except (
            duckdb.IOException,
            duckdb.FatalException,
            duckdb.PermissionException,
            duckdb.TransactionException,
        ) as exc:
            # the disk is full (a commit that cannot be written) or the file read-only: one line naming
            # the file, and nothing committed
            first = " ".join(str(exc).split())[:300]
            raise StoreError(f"cannot write catalog {self.catalog_path}: {first}") from exc
        finally:
            self._disconnect(con)

    @contextlib.contextmanager
    def read(self) -> Iterator[Any]:
        """A short read-only connection (other readers may share the file meanwhile), or the kept one."""
        self._ensure_created()
        if self._kept is None and self._keep_reader:
            self._kept = self._connect(read_only=True)
        if self._kept is not None:
            yield self._kept
            return
        con = self._connect(read_only=True)
        try:
            yield con
        finally:
            self._disconnect(con)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A read-write connection inside BEGIN … COMMIT (ROLLBACK on any error)."""
        with self.write() as con, transaction(con):
            yield con

    def _connect(self, *, read_only: bool) -> Any:
        """A connection to the catalog: a cursor of this process's held instance (store/attached.py)."""
        from embstore.store import attached

        def open_once(left: float) -> tuple[Any, Any]:
            inst = self._attached()  # made anew if a failed DETACH left the last one broken
            return inst, inst.connect(read_only, left)

        try:
            inst, con = self._opened(open_once)
        except attached.Conflict as exc:
            raise StoreBusyError(
                f"catalog {self.catalog_path}: {exc} for {self.lock_timeout:.0f} s (close the other Store "
                "object of this path, or its kept reader, first)"
            ) from exc
        try:
            if self._location is None:
                self._location = Location(self.path, Catalog(con).setting(LOCATION_KEY))
            remote = self._location.duckdb_filesystem
            if remote is not None:  # the view names s3://… files: DuckDB reads them through Arrow
                inst.register("filesystem", lambda root: root.register_filesystem(remote))
        except BaseException:
            inst.release(con)
            raise
        return con

    def _opened(self, open_once: Callable[[float], Any]) -> Any:
        """`open_once(seconds left)`, retried while another process holds the catalog's lock."""
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        while True:
            try:
                return open_once(max(0.0, deadline - time.monotonic()))
            except duckdb.Error as exc:
                self._connect_failed(exc, deadline)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.1)

    def _attached(self) -> Any:
        """This process's DuckDB instance for the catalog (store/attached.py)."""
        from embstore.store import attached

        return attached.instance(self.read_path, self.path)

    def _disconnect(self, con: Any) -> None:
        self._attached().release(con)

    def _connect_failed(self, exc: Exception, deadline: float) -> None:
        """Raise the StoreError `exc` (from opening the catalog) means, unless it is a lock to wait for."""
        import duckdb

        if _damaged(exc):
            first = " ".join(str(exc).split())[:200]
            raise CatalogDamagedError(
                f"the catalog {self.catalog_path} is damaged ({first}); `embstore verify --repair` restores "
                "its last published snapshot, and the next ingest stores again what came after it"
            ) from exc
        if not isinstance(exc, duckdb.IOException) or "lock" not in str(exc).lower():
            raise StoreError(f"cannot open catalog {self.catalog_path}: {exc}") from exc
        if time.monotonic() >= deadline:
            raise StoreBusyError(
                f"catalog {self.catalog_path} stayed locked by another process for "
                f"{self.lock_timeout:.0f} s; retry when it finishes"
            ) from exc

    def cached(self, key: tuple, compute: Callable[[], Any], codec: Codec | None = None) -> Any:
        """`compute()`, remembered until the catalog changes (in this process; on disk too with a codec)."""
        return self.memo.get(key, compute, codec)

    def writer_lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the store's writer lock (one ingest at a time); StoreBusyError names the holder."""
        self._refuse_on_snapshot()
        self._ensure_created()
        return self._writing()

    def _refuse_on_snapshot(self) -> None:
        if self.on_snapshot:
            raise UsageError(
                f"this Store reads the published snapshot of {self.path} and cannot write; open it without "
                "`snapshot=True` to write"
            )

    def check_writable_now(self) -> None:
        """Raise StoreBusyError now (after `wait`) if another process holds the writer lock: what a
        writing command checks before seconds of work (loading a network) it would otherwise waste."""
        from embstore.store.locks import probe_writer

        self._refuse_on_snapshot()
        if self.catalog_path.exists():  # a store not created yet has no other writer
            probe_writer(self.path, wait=self.wait, on_wait=self.on_wait)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        from embstore.store.locks import writer_lock

        with writer_lock(self.path, wait=self.wait, on_wait=self.on_wait):
            try:
                yield
            finally:
                with contextlib.suppress(StoreError):  # a full disk keeps the last snapshot
                    self.publish_snapshot()

    # -- SQL connections ---------------------------------------------------------------------
    def relation(self, query: str) -> duckdb.DuckDBPyRelation:
        """A DuckDB relation of `query` on a read-only connection with embstore's UDFs.

        The connection is kept until `close()` (or the next write by this process).
        """
        from embstore.store.udfs import register

        self._ensure_created()
        if self._kept is None:
            self._kept = self._connect(read_only=True)
        self._attached().register("udfs", register)
        return self._kept.sql(query)

    @contextlib.contextmanager
    def sql_connection(self, *, write: bool = False) -> Iterator[tuple[Any, list[str]]]:
        """(a fresh connection, every file name its views may open): for a caller that confines the
        connection to those files. The kept reader is closed first: connections of one process to one
        file share a DuckDB instance, and with it the settings the caller locks."""
        from embstore.store import attached

        if write:
            self._refuse_on_snapshot()
        self._ensure_created()
        location = self.location  # read first: the catalog is kept to one connection below
        self.close()
        try:
            with self._attached().alone(self.lock_timeout):
                con = self._connect_fresh(read_only=not write)
                try:
                    # only files in the table's folder, links resolved: a crafted catalog row grants nothing
                    rels = [r for r in Catalog(con).pinned_files() if location.inside(r)]
                    files = rels if location.remote else rels + [str(self.path / r) for r in rels]
                    yield con, files
                finally:
                    con.close()
        except attached.Conflict as exc:
            raise StoreBusyError(f"catalog {self.catalog_path}: {exc} for {self.lock_timeout:.0f} s") from exc

    def _connect_fresh(self, *, read_only: bool) -> Any:
        """A DuckDB instance of its own on the catalog (its settings are the caller's to lock)."""
        import duckdb

        con = self._opened(
            lambda _left: duckdb.connect(str(self.read_path), read_only=read_only, config={"threads": 1})
        )
        con.execute(f"SET file_search_path = {sql_literal(str(self.path))}")
        remote = self.location.duckdb_filesystem  # known: sql_connection read it first
        if remote is not None:
            con.register_filesystem(remote)
        return con


def _damaged(exc: BaseException) -> bool:
    """Whether a DuckDB error says the catalog file itself is damaged (not locked, not missing)."""
    text = str(exc)
    return "Corrupt database file" in text or "checksum" in text.lower()
