"""A store: one directory holding a DuckDB catalog, a Delta Lake table of activations and derived files.

    <store>/catalog.duckdb        catalog (schema from migrations/)
    <store>/activations/          Delta table: _delta_log/, model=M/weights=W/layer=L/part-….parquet
    <store>/indexes/              search indexes, class statistics, classifier weights
    <store>/quarantine/           files `embstore verify --repair` moved aside

DuckDB lets one process write a database file and blocks every other process while it does,
so nothing here holds the catalog open for long: each operation opens a connection, does its
work and closes it, retrying briefly when another process holds the lock. A long ingest thus
leaves readers free between its batch commits.

`Store` is also the public API's main noun: every method below the connections section is one
call a notebook user makes, delegating to the module that owns the concept.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
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

    from embstore.analysis.classtables import Materialised
    from embstore.analysis.failures import FailureReport
    from embstore.analysis.rsatables import RsaReport
    from embstore.analysis.tasks import MatchingReport
    from embstore.ingest.pipeline import IngestResult
    from embstore.ingest.spec import Preprocessing
    from embstore.report.html import Report
    from embstore.results import Answer, Vectors
    from embstore.store.table import CompactReport
    from embstore.store.tablecheck import VerifyReport

CATALOG_FILE = "catalog.duckdb"
SNAPSHOT_FILE = "snapshot.duckdb"  # a copy for plain DuckDB clients, swapped in after writes: never locked
SNAPSHOT_EVERY = 1.0  # s between snapshots during a run (more when copying takes long: at most ~5 % of the time)
LOCATION_KEY = "activations_location"
DEFAULT_HOME = Path("~/.embstore")
Progress = Callable[[int, int], None]


def default_store_path() -> Path:
    """$EMBSTORE_HOME if set, else ~/.embstore."""
    env = os.environ.get("EMBSTORE_HOME")
    return Path(env).expanduser() if env else DEFAULT_HOME.expanduser()


class Store:
    """An embstore store. Open one with `embstore.open(path)`; use it as a context manager to close it.

    >>> import embstore, tempfile
    >>> with embstore.open(tempfile.mkdtemp(), create=True) as store:
    ...     store.status()["images"]
    0
    """

    def __init__(
        self,
        path: Path,
        *,
        lock_timeout: float = 30.0,
        wait: float = 0.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
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
        self.memo = Memo(self.path, self.catalog_path, self.indexes_root / "memo")

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
    ) -> Store:
        """Open the store (default: $EMBSTORE_HOME, else ~/.embstore), applying pending migrations.

        `activations` puts a new store's activations table elsewhere: another folder or an object
        store URL (`s3://bucket/prefix`); the catalog stays in `path`. An existing store keeps
        where its table is, and naming another place is an error.

        `keep_reader` keeps one read-only connection for every `read()`: it saves ~20-50 ms per
        catalog open in one-shot query processes, and is released before this process writes.
        `defer_creation` (with `create`) makes a new store's folder only when it is first used.
        `wait`: seconds a writing call waits for another process's writer lock (0: StoreBusyError at
        once); `on_wait(holder)` is called when such a wait starts. `restore_catalog`: a catalog DuckDB
        reports damaged is moved to quarantine/ and replaced by its last published snapshot (under the
        writer lock); `verify(repair=True)` then rolls the table back to what that snapshot recorded.
        """
        from embstore.store.openfiles import ensure_open_files

        ensure_open_files()
        path = Path(path) if path else default_store_path()
        store = cls(path, lock_timeout=lock_timeout, wait=wait, on_wait=on_wait)
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

    def _restore_catalog(self) -> None:
        """Replace a damaged catalog by snapshot.duckdb (the damaged file and its WAL go to quarantine/)."""
        import shutil

        import duckdb

        from embstore.store.locks import writer_lock

        # the bare lock: `writer_lock()` would publish a snapshot from the catalog on its way out
        with writer_lock(self.path, wait=self.wait, on_wait=self.on_wait):
            snapshot = self.snapshot_path
            try:
                with duckdb.connect(str(snapshot), read_only=True) as con:
                    con.execute("SELECT count(*) FROM batch_images").fetchall()
            except duckdb.Error as exc:
                first = " ".join(str(exc).split())[:200]
                raise CatalogDamagedError(
                    f"the catalog {self.catalog_path} is damaged and its snapshot {snapshot} cannot replace it: {first}"
                ) from exc
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.quarantine_root.mkdir(parents=True, exist_ok=True)
            for damaged in (self.catalog_path, self.catalog_path.with_name(self.catalog_path.name + ".wal")):
                if damaged.exists():
                    os.replace(damaged, self.quarantine_root / f"{damaged.name}.damaged-{stamp}")
            tmp = self.catalog_path.with_name(f".{self.catalog_path.name}.restored.tmp")
            shutil.copyfile(snapshot, tmp)
            os.replace(tmp, self.catalog_path)
            taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.stat().st_mtime))
            self.restored = (
                f"restored the damaged catalog from its snapshot of {taken} "
                f"(the damaged file is in quarantine/catalog.duckdb.damaged-{stamp})"
            )

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
        """Release the kept read-only connection (relations from `sql()` stop working)."""
        if self._kept is not None:
            kept, self._kept = self._kept, None
            self._disconnect(kept)

    def keep_reader(self) -> None:
        """From the next read on, keep one read-only connection for every read until `close()`.

        Saves ~20-50 ms per catalog open in one-shot query processes; meanwhile other processes
        cannot write the catalog. A later write by this process releases it.
        """
        self._keep_reader = True

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<embstore.Store {self.path}>"

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_FILE

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

        return attached.instance(self.catalog_path, self.path)

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
        self._ensure_created()
        return self._writing()

    def check_writable_now(self) -> None:
        """Raise StoreBusyError now (after `wait`) if another process holds the writer lock: what a
        writing command checks before seconds of work (loading a network) it would otherwise waste."""
        from embstore.store.locks import probe_writer

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

    # -- the public API ----------------------------------------------------------------------
    def ingest(
        self,
        images: str | Path | None = None,
        *,
        model: Any = "efficientnet_lite0",
        weights: str = "DEFAULT",
        layers: str | Sequence[str] = "blocks",
        batch_size: int = 32,
        device: str = "auto",
        workers: int | None = None,
        limit: int | None = None,
        max_pixels: int = 100_000_000,
        name: str | None = None,
        preprocessing: Preprocessing | str | dict | None = None,
        progress: Progress | None = None,
        dtype: str = "float32",
        commit_seconds: float = 5.0,
        compact: bool = True,
        amp: str = "off",
        channels_last: bool | None = None,
        engine: str = "local",
        address: str | None = None,
        cpus: int | None = None,
        relabel: bool = False,
    ) -> IngestResult:
        """Run `model` over `images` (folder, class-per-folder tree, or CSV/Parquet manifest; default:
        every image already in the store, the way to add a model to an image set) and store
        every chosen layer's pooled vector; resumable, skips what is stored. `model` is a name from
        `embstore.list_models()` or any torch.nn.Module given with `name` and `preprocessing`.
        `layers`: named sets (blocks, relu, act, conv, seed003, seed004, all), graph node names and
        Keras names (ingest/layersets.py). `preprocessing` for a named model: a preset
        ("keras-caffe", "keras-tf", "keras-torch", "squash"), a Preprocessing, or {field: value}
        changes to the model's own; the model key then names it (`resnet50@IMAGENET1K_V1~keras-caffe`).
        `dtype="int8"` stores vectors in ~0.3 × the bytes (readers still get float32); vectors are
        committed every `commit_seconds`; a completed run ends with `compact()` unless `compact=False`.
        On a GPU, `amp="fp16"`/`"bf16"` autocasts and `channels_last=True` changes the layout (both
        recorded with the run; off CUDA amp falls back to float32 with a note in `result.notes`);
        on CPU the channels-last layout is the default (1.2-2 × faster for CNNs), `False` turns it off.
        `engine="ray"` runs on a Ray Data cluster (`address`, default a local one of `cpus` CPUs).
        A stored image whose input names another label is reported in `result.notes`; `relabel=True`
        updates it (history in the `label_history` table).

        >>> store.ingest("photos/", model="resnet18", weights="none")  # doctest: +SKIP
        """
        from embstore.ingest.pipeline import ingest

        return ingest(
            self,
            model,
            None if images is None else str(images),
            weights=weights,
            layers=layers if isinstance(layers, str) else list(layers),
            batch_size=batch_size,
            device=device,
            workers=workers,
            limit=limit,
            max_pixels=max_pixels,
            name=name,
            preprocessing=preprocessing,
            progress=progress,
            dtype=dtype,
            commit_seconds=commit_seconds,
            compact=compact,
            amp=amp,
            channels_last=channels_last,
            engine=engine,
            address=address,
            cpus=cpus,
            relabel=relabel,
        )

    def vectors(
        self,
        model: str | None = None,
        layer: str = "hidden",
        *,
        images: Sequence[str] | None = None,
        labels: Sequence[int | str] | None = None,
    ) -> Vectors:
        """The stored vectors of one model layer (read when first used), optionally only some image ids
        or classes (names, wnids or indices). See `embstore.Vectors` for the conversions."""
        from embstore.store.reading import layer_vectors

        return layer_vectors(self, model, layer, images=images, labels=labels)

    def similar_classes(
        self, cls: str, *, k: int = 9, model: str | None = None, layer: str | None = None, method: str = "prototype"
    ) -> Answer:
        """The k classes nearest to `cls` by `method`: prototype, tstat, hidden or classifier (seed 003)."""
        from embstore.analysis.similarity import similar_classes

        return similar_classes(self, cls, k=k, model=model, layer=layer, method=method)

    def nearest_images(
        self, image: str | Path, *, k: int = 10, model: str | None = None, layer: str = "hidden", index: str = "auto"
    ) -> Answer:
        """The k stored images nearest to `image` (a stored id or prefix, a stored path, or any image file)."""
        from embstore.search import nearest_images

        return nearest_images(self, str(image), k=k, model=model, layer=layer, index=index)

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """A DuckDB relation of `query` on a read-only connection with embstore's UDFs.

        The connection is kept until `close()` (or the next write by this process).

        >>> store.sql("SELECT layer, count(*) FROM activations GROUP BY layer").df()  # doctest: +SKIP
        """
        from embstore.store.udfs import register

        self._ensure_created()
        if self._kept is None:
            self._kept = self._connect(read_only=True)
        self._attached().register("udfs", register)
        return self._kept.sql(query)

    def run_sql(
        self, query: str, *, write: bool = False, allow: Sequence[str | Path] = ()
    ) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of `query`, read-only unless `write`, in a sandbox: DuckDB may open
        only the store's data files and the folders in `allow` (what `embstore sql` runs)."""
        from embstore.store.sql import run_sql

        return run_sql(self, query, write=write, allow=allow)

    @contextlib.contextmanager
    def sql_connection(self, *, write: bool = False) -> Iterator[tuple[Any, list[str]]]:
        """(a fresh connection, every file name its views may open): for a caller that confines the
        connection to those files. The kept reader is closed first: connections of one process to one
        file share a DuckDB instance, and with it the settings the caller locks."""
        from embstore.store import attached

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
            lambda _left: duckdb.connect(str(self.catalog_path), read_only=read_only, config={"threads": 1})
        )
        con.execute(f"SET file_search_path = {sql_literal(str(self.path))}")
        remote = self.location.duckdb_filesystem  # known: sql_connection read it first
        if remote is not None:
            con.register_filesystem(remote)
        return con

    def tables(self) -> list[tuple[str, str]]:
        """(name, 'table' or 'view') of everything SQL can read in the catalog."""
        from embstore.store.catalog import Catalog

        with self.read() as con:
            return Catalog(con).tables()

    def status(self) -> dict[str, Any]:
        """Counts of images, models, vectors, files, runs and errors, and per model its top-1/top-5 error."""
        from embstore.store.catalog import Catalog

        with self.read() as con:
            return {"path": str(self.path), "activations": self.location.table_uri, **Catalog(con).summary()}

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Check that the catalog and the files agree; with `repair`, make them agree.

        Repair holds the writer lock (StoreBusyError names the process that has it): deleting what
        looks uncommitted while an ingest is committing it would lose a batch in flight.
        """
        from embstore.store.tablecheck import verify

        if not repair:
            return verify(self)
        with self.writer_lock():
            return verify(self, repair=True)

    def compact(self, *, target_size_mb: float = 128, retain_hours: float = 1) -> CompactReport:
        """Merge the activations table's small files into files of about `target_size_mb`, then delete
        files that no pinned version has listed for `retain_hours` (readers of an older pin keep theirs).

        >>> store.compact().files_after  # doctest: +SKIP
        """
        from embstore.store.table import ActivationTable

        with self.writer_lock():
            return ActivationTable(self).compact(target_size=int(target_size_mb * (1 << 20)), retain_hours=retain_hours)

    def match_triplets(
        self,
        manifest: str | Path,
        *,
        models: Sequence[str] | None = None,
        layers: Sequence[str] | None = None,
        ingest_missing: bool = False,
        weights: str = "DEFAULT",
        n_boot: int = 1000,
        progress: Progress | None = None,
    ) -> MatchingReport:
        """Related/unrelated matching error, bootstrap CI and ROC AUC per model and layer (seed 000)."""
        from embstore.analysis.tasks import matching

        with self.writer_lock():  # stores its results (and with ingest_missing, vectors)
            return matching(
                self,
                str(manifest),
                models=list(models) if models else None,
                layers=list(layers) if layers else None,
                ingest_missing=ingest_missing,
                weights=weights,
                n_boot=n_boot,
                progress=progress,
            )

    def failures(self, model: str | None = None, *, limit: int = 20, close_at: float = 0.8) -> FailureReport:
        """Top-1/top-5 error and the failures ranking the true class lowest (seed 000 table 1)."""
        from embstore.analysis.tasks import failures

        return failures(self, model, limit=limit, close_at=close_at)

    def class_tables(
        self,
        kind: str,
        model: str | None = None,
        layers: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> list[Materialised]:
        """Materialise `kind` = 'prototypes' or 'tstats' per layer as catalog tables (seed 003 §3);
        `progress(1, layers)` after each layer."""
        from embstore.analysis.tasks import class_tables

        with self.writer_lock():
            return class_tables(self, kind, model, list(layers) if layers else None, progress)

    def class_pair(self, a: str, b: str, *, layer: str, model: str | None = None) -> tuple[Any, Any, Any]:
        """(class a, class b, (t, df)) per channel: Welch's t of class a against class b on one layer."""
        from embstore.analysis.tasks import class_pair

        return class_pair(self, model, layer, a, b)

    def rsa(
        self,
        model: str | None = None,
        reference: str = "glove",
        *,
        groups: int = 5,
        permutations: int = 1000,
        seed: int = 0,
        layers: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> RsaReport:
        """2 vs 2 accuracy, permutation p, RSA r and 1 vs 2 accuracy per layer (seed 004), stored."""
        from embstore.analysis.rsatables import run_rsa

        with self.writer_lock():
            return run_rsa(
                self,
                model,
                reference,
                groups=groups,
                n_permutations=permutations,
                seed=seed,
                layers=list(layers) if layers else None,
                progress=progress,
            )

    def figure(self, kind: str, **options: Any) -> Any:
        """A matplotlib figure of `kind` (rsa, roc, errors, ratings, similar, cases, failures, predictions)."""
        from embstore.report.figures import draw

        return draw(self, kind, **options)

    def report(
        self,
        out: str | Path = "report.html",
        *,
        cls: str | None = None,
        manifest: str | None = None,
        k: int = 9,
        progress: Callable[[str], None] | None = None,
    ) -> Report:
        """Write one self-contained HTML report of the store and every computed analysis."""
        from embstore.report.html import build_report

        return build_report(self, out, cls=cls, manifest=manifest, k=k, progress=progress)


def _damaged(exc: BaseException) -> bool:
    """Whether a DuckDB error says the catalog file itself is damaged (not locked, not missing)."""
    text = str(exc)
    return "Corrupt database file" in text or "checksum" in text.lower()
