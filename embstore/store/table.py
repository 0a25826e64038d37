"""The activations table: every stored vector, in one Delta Lake table at <store>/activations
(or where the store was told to keep it: another folder, s3://…; store/location.py).

Delta (delta-rs) gives the storage engine: atomic appends, snapshots by version, compaction,
vacuum, object storage; Spark, polars, pandas and DuckDB's delta extension read it without
embstore. It is partitioned by model / weights / layer; rows are `encoding.schema()`.

The commit protocol, the same for ingest, `embstore.testing` and the conversion of old stores:
  1. append the rows of one or more batches, each tagged with a fresh batch_id (one Delta commit);
  2. in ONE catalog transaction record those batches (vector_batches, batch_images) with the
     caller's images, predictions and run counts, and *pin* the new Delta version: its data-file
     list (table_files) and the `activations` view over exactly those files.
Readers read only pinned files, so rows appended in step 1 are invisible until step 2 commits,
and a compaction's new files until its own pin. A crash between 1 and 2 leaves rows of an
unrecorded batch in later Delta versions: `reconcile()`, which every writer runs first under the
store's writer lock (ingest, compact, verify --repair), deletes them and pins the latest version.
Nothing deletes a file a pinned version lists: compaction only tombstones, and `vacuum` removes
tombstoned files after a retention (default 1 hour) that no reader of an older pin runs into.
Over ~450 lines by design: the protocol (append, pin, reconcile, compact, vacuum) is one concept
whose steps must be read together; verify's checks of it are apart (tablecheck.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

import numpy as np

from embstore.errors import OutsideStoreError, StoreError, is_rust_panic
from embstore.spec import ModelKey
from embstore.store.catalog import Catalog
from embstore.store.duck import quote_identifier, sql_literal
from embstore.store.encoding import PARTITIONS, SQL_DECODE, decode, encode

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

CHUNK_ROWS = 4096
# a reader decodes a row group at once, with ~3 x its values in list levels and buffers: 1024 rows of
# 2048-d float32 (8 MB) kept a 100 k-image class-statistics pass at ~0.4 GB, 8192 rows at ~2 GB
ROW_GROUP_ROWS = 1024
TARGET_FILE_BYTES = 128 << 20  # compaction's target, as Lance and Delta's own OPTIMIZE aim at
RETAIN_HOURS = 1  # tombstoned files outlive their last pin by this long before vacuum deletes them
HIVE_TYPES = "{'model': 'VARCHAR', 'weights': 'VARCHAR', 'layer': 'VARCHAR'}"
VIEW_MARK = "'embstore activations v2' IS NOT NULL"  # DuckDB drops SQL comments from stored views


def new_batch_id() -> str:
    return uuid.uuid4().hex[:20]


@dataclass
class Part:
    """Vectors of one batch: every image in `image_ids` has a row in each matrix of `vectors`."""

    batch_id: str
    image_ids: list[str]
    vectors: dict[str, np.ndarray]  # layer -> (images × channels) float32


@dataclass
class CompactReport:
    files_before: int = 0
    files_after: int = 0
    rewritten: int = 0
    vacuumed: int = 0
    seconds: float = 0.0
    version: int = 0
    notes: list[str] = field(default_factory=list)


class ActivationTable:
    """The Delta table of a store's vectors: commit, pin, reconcile, compact, read."""

    def __init__(self, store: StoreCore):
        self.store = store
        self.location = store.location

    # -- reading: only what the catalog pinned ----------------------------------------------------
    def read_layer(self, model_key: str, layer: str) -> tuple[list[str], np.ndarray]:
        """(image_ids, float32 matrix) of every stored vector of one model layer, in file order.

        Loads the whole layer: analyses stream with `iter_layer` instead.
        """
        ids: list[str] = []
        blocks = []
        width = 0
        for chunk_ids, x in self.iter_layer(model_key, layer):
            ids += chunk_ids
            blocks.append(x)
            width = x.shape[1]
        return ids, (np.concatenate(blocks) if blocks else np.zeros((0, width), np.float32))

    def iter_layer(self, model_key: str, layer: str, chunk_rows: int | None = None, *, only=None):
        """(image_ids, float32 matrix) chunks of about `chunk_rows` rows of one pinned model layer
        (with `only`, of those image ids alone, filtered while reading)."""
        with self.store.read() as con:
            cat = Catalog(con)
            rels = [rel for rel, _ in cat.layer_files(model_key, layer)]
            width = cat.layer_width(model_key, layer)
        return self.iter_files(rels, width, chunk_rows, only=only)

    def vectors_of(self, model_key: str, layer: str, image_ids) -> tuple[list[str], np.ndarray]:
        """(image_ids, float32 matrix) of just the given images' vectors of one layer, read streaming."""
        ids: list[str] = []
        blocks = []
        for chunk_ids, x in self.iter_layer(model_key, layer, only=sorted(set(image_ids))):
            ids += chunk_ids
            blocks.append(x)
        if not blocks:
            with self.store.read() as con:
                return [], np.zeros((0, Catalog(con).layer_width(model_key, layer)), np.float32)
        return ids, np.concatenate(blocks)

    def iter_files(self, rels: list[str], width: int, chunk_rows: int | None = None, *, only=None) -> Iterator:
        """(image_ids, float32 matrix) chunks of the given pinned files, read ahead on arrow's threads."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        if not rels:
            return
        chunk_rows = chunk_rows or CHUNK_ROWS
        # no pre-buffering: with it a slow consumer (class statistics) let arrow hold whole files
        # (~1.5 GB at 10 files of 120 MB); without it memory is a few row groups whatever the pace
        fmt = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False))
        dataset = self.location.dataset(rels, fmt)
        columns = [c for c in ("image_id", "vec", "q", "q_lo", "q_step") if c in dataset.schema.names]
        where = None if only is None else ds.field("image_id").isin(pa.array(list(only), pa.string()))
        pending, rows = [], 0
        # little read-ahead: memory stays ~ a few chunks, not arrow's default of 16 batches x 4 files
        batches = dataset.to_batches(
            columns=columns,
            batch_size=ROW_GROUP_ROWS,
            filter=where,
            batch_readahead=2,
            fragment_readahead=1,
            use_threads=False,
        )
        for batch in batches:
            if not batch.num_rows:
                continue
            pending.append(batch)
            rows += batch.num_rows
            if rows >= chunk_rows:
                yield decode(pa.Table.from_batches(pending), width)
                pending, rows = [], 0
        if pending:
            yield decode(pa.Table.from_batches(pending), width)

    # -- the activations view ------------------------------------------------------------------
    # The view lists the pinned files relative to the store folder; every embstore connection sets
    # DuckDB's file_search_path to it, and a plain DuckDB session runs `SET file_search_path =
    # '<store>'` first (or starts in the store folder). A moved or copied store reads its own files.
    def view_sql(self, con) -> str:
        rels = [r for r in Catalog(con).pinned_files() if self.location.inside(r)]  # verify lists any other
        if not rels:  # read_parquet of an empty list does not bind: a typed empty view
            return (
                "SELECT NULL::VARCHAR AS image_id, NULL::VARCHAR AS model_key, NULL::VARCHAR AS model, NULL::VARCHAR "
                f"AS weights, NULL::VARCHAR AS layer, NULL::FLOAT[] AS vec WHERE false AND {VIEW_MARK}"
            )
        files = "[" + ", ".join(sql_literal(r) for r in rels) + "]"
        return (
            f"SELECT image_id, {ModelKey.sql('model', 'weights')} AS model_key, model, weights, layer, "
            f"{SQL_DECODE} AS vec "
            f"FROM read_parquet({files}, hive_partitioning = true, hive_types = {HIVE_TYPES}) WHERE {VIEW_MARK}"
        )

    def view_is_current(self, con) -> bool:
        view = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'activations'").fetchall()
        return bool(view) and VIEW_MARK in view[0][0]

    def refresh_view(self, con) -> None:
        """(Re)define `activations` over the pinned files, and one typed view per stored layer,
        `"vectors/<model_key>/<layer>"` (image_id, vec FLOAT[C]), usable in array_cosine_similarity."""
        con.execute(f"CREATE OR REPLACE VIEW activations AS {self.view_sql(con)}")
        cat = Catalog(con)
        wanted = {}
        for model_key, name, weights, layer, channels in cat.stored_layer_widths():
            where = f"model = {sql_literal(name)} AND weights = {sql_literal(weights)} AND layer = {sql_literal(layer)}"
            wanted[f"vectors/{model_key}/{layer}"] = (
                f"SELECT image_id, vec::FLOAT[{int(channels)}] AS vec FROM activations WHERE {where}"
            )
        for view in cat.layer_vector_views():
            if view not in wanted:
                con.execute(f"DROP VIEW {quote_identifier(view)}")
        for view, sql in wanted.items():
            con.execute(f"CREATE OR REPLACE VIEW {quote_identifier(view)} AS {sql}")
        self._write_readme(con)

    def _write_readme(self, con) -> None:
        """The `readme` view and the comment on `activations`: how a plain DuckDB session reads this
        catalog (the `SET file_search_path` line with the folder it was last written in)."""
        folder = str(self.store.path)
        setting = f"SET file_search_path = {sql_literal(folder)};"
        lines = [
            ("1 first", f"{setting}  -- the folder holding this catalog (it was {folder} when last written); "
                        "without it, `activations` fails: No files found that match the pattern"),
            ("2 activations", "one row per image, model and layer: image_id, model_key, model, weights, layer, "
                              "vec FLOAT[] (the layer's pooled channels)"),
            ("3 vectors", 'one view per stored layer, "vectors/<model_key>/<layer>": image_id, vec FLOAT[C], '
                          "for array_cosine_similarity"),
            ("4 tables", "images (paths, labels), models, layers, runs, ingest_errors, predictions, "
                         "imagenet_classes, …: SHOW TABLES lists them all"),
            ("5 more", "embstore's README: 'Plain DuckDB clients' and 'Without embstore'"),
        ]  # fmt: skip
        rows = ", ".join(f"({sql_literal(topic)}, {sql_literal(text)})" for topic, text in lines)
        con.execute(f"CREATE OR REPLACE VIEW readme AS SELECT * FROM (VALUES {rows}) AS t(topic, text)")
        con.execute(f"COMMENT ON VIEW activations IS {sql_literal(f'Read it in plain DuckDB after {setting}')}")

    # -- writing (callers hold the store's writer lock) -------------------------------------------
    def commit(
        self, spec, run_id: str, parts: list[Part], dtypes: dict[str, str], record: Callable[[Catalog], None]
    ) -> int:
        """Append `parts` (step 1), then record them, `record(catalog)` and the new pin in one catalog
        transaction (step 2). Returns the encoded bytes appended. On failure the appended rows are
        deleted again when possible (else by the next `reconcile`)."""
        import pyarrow as pa

        tables, batches = [], []
        for p in parts:
            encoded = [
                encode(p.image_ids, m, batch_id=p.batch_id, model=spec.name, weights=spec.tag, layer=layer,
                       dtype=dtypes.get(layer, "float32"))
                for layer, m in p.vectors.items()
            ]  # fmt: skip
            tables += encoded
            batches.append((p.batch_id, sorted(p.vectors), p.image_ids, sum(t.nbytes for t in encoded)))
        n_bytes = sum(b[-1] for b in batches)
        dt = self.append(pa.concat_tables(tables)) if n_bytes else None
        try:
            with self.store.transaction() as con:
                cat = Catalog(con)
                record(cat)
                if batches:
                    cat.record_batches(spec.key, run_id, batches)
                if dt is not None:
                    self.pin(con, dt)
        except BaseException:
            if dt is not None:
                try:
                    self._delete_batches([p.batch_id for p in parts])
                except Exception:  # noqa: S110 - the next writer's reconcile() deletes them
                    pass
            raise
        return n_bytes

    def pin(self, con, dt) -> None:
        """Make `dt`'s version the one readers see (inside the caller's catalog transaction)."""
        with self._remote_errors():  # an outage here is one line too (the catalog is left as it was)
            files = self.files_of(dt)
        Catalog(con).pin_table(dt.version(), files)
        self.refresh_view(con)

    def reconcile(self) -> list[str]:
        """Delete rows of batches the catalog never recorded (a writer killed between its append and
        its catalog commit) and pin the table's latest version. Call holding the writer lock."""
        dt = self.delta()
        if dt is None:
            return []
        pinned, stray = self.stray_batches(dt)
        if pinned == dt.version():
            return []
        actions = []
        if stray:
            self.refuse_outside(dt, "deleting uncommitted rows")  # delta-rs scans every file it lists
            self._delete_batches(stray)
            actions.append(f"deleted the rows of {len(stray)} uncommitted batch(es) left by an interrupted writer")
            dt = self.delta()
        with self.store.transaction() as con:
            self.pin(con, dt)
        actions.append(f"pinned activations table version {dt.version()} (was {pinned})")
        return actions

    def stray_batches(self, dt) -> tuple[int | None, list[str]]:
        """(pinned version, ids of batches in `dt`'s newer files that the catalog never recorded)."""
        with self.store.read() as con:
            cat = Catalog(con)
            pinned = cat.table_version()
            if pinned == dt.version():
                return pinned, []
            pinned_files = set(cat.pinned_files())
            committed = cat.batch_ids()
        new = [r for r in self.files_of(dt).column("rel_path").to_pylist() if r not in pinned_files]
        return pinned, sorted(self.batch_ids_in(new) - committed)

    def refuse_outside(self, dt, doing: str) -> None:
        """Raise before delta-rs reads or rewrites files: the log of `dt` names some outside the table."""
        outside = self.outside_log(dt)
        if outside:
            raise OutsideStoreError(
                f"the activations table's log names {len(outside)} file(s) outside its folder (e.g. {outside[0]}): "
                f"{doing} refuses to read them; `embstore verify` lists them"
            )

    def compact(self, *, target_size: int = TARGET_FILE_BYTES, retain_hours: float = RETAIN_HOURS) -> CompactReport:
        """Merge small files into files of about `target_size` bytes, pin the result, then vacuum
        files tombstoned more than `retain_hours` ago. Call holding the writer lock."""
        t0 = time.perf_counter()
        report = CompactReport()
        report.notes += self.reconcile()
        dt = self.delta()
        if dt is None:
            report.seconds = time.perf_counter() - t0
            return report
        report.files_before = len(dt.file_uris())
        self.refuse_outside(dt, "compact")  # delta-rs would read (and rewrite) them
        small = _small_files_bytes(dt, target_size)
        self._check_room(small, doing="compact")
        try:
            with _rust_output_held():  # a failing delta-rs prints tokio panics; the one line below says why
                metrics = dt.optimize.compact(target_size=int(target_size), writer_properties=_writer_properties())
        except BaseException as exc:
            if not isinstance(exc, Exception) and not is_rust_panic(exc):
                raise
            raise StoreError(
                f"cannot compact activations table {self.location.table_uri}: {_os_reason(exc)}; the table is as it "
                "was (compaction commits only when it is whole): fix that and run compact again"
            ) from exc
        report.rewritten = int(metrics.get("numFilesRemoved", 0))
        if metrics.get("numFilesAdded", 0) or report.rewritten:
            dt = self.delta()
            with self.store.transaction() as con:
                self.pin(con, dt)
        report.files_after = len(dt.file_uris())
        report.version = dt.version()
        # delta-rs counts the retention in whole hours: rounded up, never down (0.5 h must not delete at once)
        hours = math.ceil(retain_hours)
        if hours != retain_hours:
            report.notes.append(
                f"kept replaced files {hours} h (delta-rs vacuums by whole hours), not {retain_hours:g} h"
            )
        report.vacuumed = len(dt.vacuum(retention_hours=hours, enforce_retention_duration=False, dry_run=False))
        latest = self.delta()
        if latest.version() != report.version:  # vacuum logs versions of its own (same files): pin the latest
            with self.store.transaction() as con:
                self.pin(con, latest)
            report.version = latest.version()
        report.seconds = time.perf_counter() - t0
        return report

    # -- Delta plumbing ----------------------------------------------------------------------------
    def delta(self, version: int | None = None):
        from deltalake import DeltaTable

        uri = self.location.table_uri
        with self._remote_errors():
            if not DeltaTable.is_deltatable(uri, storage_options=self.location.delta_options):
                return None
            return DeltaTable(uri, version=version, storage_options=self.location.delta_options)

    def append(self, rows):
        """Step 1 of a commit: append `rows` (an Arrow table or record-batch reader) in one Delta commit.

        A failed append (disk full, read-only, permissions) leaves no data file behind and raises
        StoreError naming the table and the OS's reason: a local table is first checked for room.
        """
        from deltalake import write_deltalake

        self._check_room(getattr(rows, "nbytes", 0))
        started = time.time()
        try:
            with self._remote_errors(), _rust_output_held():  # its panics: the one line below says why
                write_deltalake(
                    self.location.table_uri,
                    rows,
                    mode="append",
                    partition_by=PARTITIONS,
                    writer_properties=_writer_properties(),
                    storage_options=self.location.delta_options,
                )
        except StoreError:
            self._discard_unlogged(started)
            raise
        except BaseException as exc:  # deltalake's DeltaError, an OSError of the local disk, a Rust panic
            if not isinstance(exc, Exception) and not is_rust_panic(exc):
                raise  # Ctrl-C: the run's own interruption handling
            self._discard_unlogged(started)
            time.sleep(1.0)  # delta-rs's upload tasks are cancelled in the background: sweep after them too
            self._discard_unlogged(started)
            raise StoreError(
                f"cannot write to activations table {self.location.table_uri}: {_os_reason(exc)}; nothing of this "
                "batch was stored: fix that and run the same command again to resume"
            ) from exc
        return self.delta()

    def _check_room(self, n_bytes: int, doing: str = "") -> None:
        """Refuse, before writing, an append (or with `doing`, another write) a local disk has no room
        for (what delta-rs does on a full disk is a panic per upload thread and half-written files)."""
        if self.location.remote:
            return
        root = self.store.path if self.location.is_default else self.location.table_uri
        try:
            st = os.statvfs(root)
        except OSError:
            return
        free, need = st.f_bavail * st.f_frsize, int(1.25 * n_bytes) + ROOM_MARGIN
        if free >= need:
            return
        what, needs, after = (
            (doing, "it needs", "nothing was changed: free space and run it again")
            if doing
            else ("write to", "a batch needs", "nothing of this batch was stored: free space and run the same "
                  "command again to resume")
        )  # fmt: skip
        raise StoreError(
            f"cannot {what} activations table {self.location.table_uri}: no space left on device "
            f"({free / 2**20:.1f} MiB free, {needs} {need / 2**20:.1f} MiB); {after}"
        )

    def _discard_unlogged(self, since: float) -> None:
        """Delete data files written since `since` that the Delta log does not list: what a failed append
        left (the writer lock keeps any other append out meanwhile)."""
        with contextlib.suppress(Exception):  # best effort: verify --repair finds anything left
            logged = self._fs_paths(self._added(self.delta()))
            for info in self._data_files():
                if info.path not in logged and info.mtime is not None and info.mtime.timestamp() >= since - 1:
                    with contextlib.suppress(OSError):
                        self.location.filesystem.delete_file(info.path)

    def unlisted_files(self, dt) -> list[str]:
        """Data files in the table's folder that no entry of the Delta log names, added or removed: what
        a writer killed between writing a file and logging it leaves. Readers never see them (they read
        what a version lists) and they hold no committed row; `verify --repair` deletes them, and so
        does the vacuum of `compact` once they are older than its retention. `dt`: the latest version
        (None without a table), whose files are listed whatever its log looks like."""
        import json

        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        fs = self.location.filesystem
        log = self.location.fs_path(self.location.rel("_delta_log"))
        listing = fs.get_file_info(pafs.FileSelector(log, allow_not_found=True))
        entries = [i for i in listing if i.type == pafs.FileType.File]
        # the last checkpoint holds every add and the tombstones still within retention: read it and
        # the commits after it (on object storage, a few objects instead of one per commit)
        last = next((i.path for i in entries if i.base_name == "_last_checkpoint"), None)
        since = -1
        if last is not None:
            with fs.open_input_stream(last) as f:
                since = int(json.loads(f.read().decode())["version"])
        named: set[str] = set()
        for info in entries:
            version = int(info.base_name[:20]) if info.base_name[:20].isdigit() else None
            if version is None or version < since:
                continue
            if info.base_name.endswith(".json") and version > since:
                with fs.open_input_stream(info.path) as f:
                    for line in f.read().decode().splitlines():
                        action = json.loads(line) if line.strip() else {}
                        for kind in ("add", "remove"):
                            if isinstance(action.get(kind), dict) and action[kind].get("path"):
                                named.add(unquote(action[kind]["path"]))
            elif ".checkpoint" in info.base_name and info.base_name.endswith(".parquet") and version == since:
                with fs.open_input_file(info.path) as f:
                    checkpoint = pq.ParquetFile(f)
                    kinds = [k for k in ("add", "remove") if k in checkpoint.schema_arrow.names]
                    cp = checkpoint.read(columns=kinds)
                for kind in kinds:
                    named.update(unquote(p) for p in cp.column(kind).combine_chunks().field("path").to_pylist() if p)
        listed = self._fs_paths(named) | self._fs_paths(self._added(dt))
        return sorted(info.path for info in self._data_files() if info.path not in listed)

    @staticmethod
    def _added(dt) -> list[str]:
        """Paths (in the table, unquoted) of the files version `dt` lists; none without a table."""
        return [] if dt is None else [unquote(p) for p in dt.get_add_actions(flatten=True).column("path").to_pylist()]

    def _fs_paths(self, paths_in_table) -> set[str]:
        """Filesystem paths of the log's file names that lie in the table's folder (outside_log lists the others)."""
        rels = [self.location.rel(p) for p in paths_in_table]
        return {self.location.unchecked_path(r) for r in rels if self.location.inside(r)}

    def outside_log(self, dt) -> list[str]:
        """File names the Delta log of `dt` adds that lead outside the table's folder (`../x`, a link)."""
        return sorted(r for r in (self.location.rel(p) for p in self._added(dt)) if not self.location.inside(r))

    def _data_files(self):
        """FileInfo of every file under the table's folder outside its `_delta_log` (not what a symbolic
        link inside it leads to elsewhere: never listed, so never deleted)."""
        import pyarrow.fs as pafs

        fs, root = self.location.filesystem, self.location.fs_path(self.location.rel("")).rstrip("/")
        for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
            if info.type == pafs.FileType.File and "_delta_log" not in info.path:
                if self.location.remote or self.location.inside(info.path):
                    yield info

    @contextlib.contextmanager
    def _remote_errors(self):
        """Object-store failures (credentials, endpoint, bucket) as one line naming the table."""
        if not self.location.remote:
            yield
            return
        from deltalake.exceptions import DeltaError

        from embstore.store.location import TIMEOUT_ENV, remote_timeout

        try:
            yield
        except (OSError, RuntimeError, ValueError, DeltaError) as exc:
            text = " ".join(re.sub(r"\x1b\[[0-9;]*m|↳", " ", str(exc)).split())  # delta-rs colours its chain
            waited = ""
            if "timeout" in text.lower() or "timed out" in text.lower() or "retries" in text.lower():
                t = remote_timeout()
                waited = (f" (the object store did not answer: each request waits {t:g} s, retries {2 * t:g} s "
                          f"in all; {TIMEOUT_ENV} sets it)")  # fmt: skip
            raise StoreError(f"activations table {self.location.table_uri}: {text[:300]}{waited}") from exc

    def _delete_batches(self, batch_ids: list[str]) -> None:
        dt = self.delta()
        if dt is not None and batch_ids:
            dt.delete("batch_id IN (" + ", ".join(sql_literal(b) for b in batch_ids) + ")")

    def files_of(self, dt):
        """Arrow table (rel_path, model_key, layer, n_rows, n_bytes) of `dt`'s data files."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        adds = pa.table(dt.get_add_actions(flatten=True))
        rels = [self.location.rel(unquote(p)) for p in adds.column("path").to_pylist()]
        inside = [self.location.inside(r) for r in rels]
        if not all(inside):  # never pinned, so never read (verify lists them: outside_log)
            adds, rels = adds.filter(pa.array(inside)), [r for r, ok in zip(rels, inside) if ok]
        rows = adds.column("num_records").to_pylist()
        rows = [n if n is not None else pq.ParquetFile(self.location.open(r)).metadata.num_rows
                for n, r in zip(rows, rels)]  # fmt: skip
        models = adds.column("partition.model").to_pylist()
        weights = adds.column("partition.weights").to_pylist()
        return pa.table(
            {
                "rel_path": rels,
                "model_key": [str(ModelKey(m, w)) for m, w in zip(models, weights)],
                "layer": adds.column("partition.layer").to_pylist(),
                "n_rows": pa.array(rows, pa.int64()),
                "n_bytes": adds.column("size_bytes").cast(pa.int64()),
            }
        )

    def batch_ids_in(self, rels: list[str]) -> set[str]:

        if not rels:
            return set()
        t = self.location.dataset(rels).to_table(columns=["batch_id"])
        return set(t.column("batch_id").unique().to_pylist())


ROOM_MARGIN = 8 << 20  # beyond 1.25 × a batch's Arrow bytes: the Delta log and the catalog's growth


def _os_reason(exc: BaseException) -> str:
    """The OS's words for why a write failed ('No space left on device'), else the error's first line."""
    import re

    text = " ".join(str(exc).split())
    m = re.search(r"([A-Z][A-Za-z ,'-]+) \(os error \d+\)", text) or re.search(r'Os \{[^}]*message: "([^"]+)"', text)
    return m.group(1) if m else (getattr(exc, "strerror", None) or text[:300])


def _small_files_bytes(dt, target_size: int) -> int:
    """Bytes of the files smaller than `target_size`: what a compaction may rewrite."""
    sizes = dt.get_add_actions(flatten=True).column("size_bytes").to_pylist()
    return int(sum(s for s in sizes if s is not None and s < target_size))


@contextlib.contextmanager
def _rust_output_held():
    """Hold what native code writes to stderr (fd 2) during the block: given back when the block ends
    normally, dropped when it raises (a Rust panic prints dozens of lines; the caller's one-line error
    says why)."""
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (an embedding host): nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                held.seek(0)
                text = held.read()
                if text:
                    os.write(2, text)


def _writer_properties():
    from deltalake import ColumnProperties, WriterProperties

    # dictionary encoding makes float vectors larger (stack-facts §2c) and unique ids no smaller;
    # batch_id repeats within a file, and is the column reconcile() reads
    return WriterProperties(
        compression="ZSTD",
        max_row_group_size=ROW_GROUP_ROWS,
        default_column_properties=ColumnProperties(dictionary_enabled=False),
        column_properties={"batch_id": ColumnProperties(dictionary_enabled=True)},
    )
