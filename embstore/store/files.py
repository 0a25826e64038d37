"""Immutable Parquet files of pooled activations, and the protocol that keeps them and the
catalog in agreement through any crash.

Per batch: (1) stage each layer's file under <store>/staging (outside the globbed tree, name
ending .tmp) and fsync it; (2) in ONE catalog transaction register the files, their index rows,
images, predictions and run counts; (3) `os.replace` each staged file into
<store>/activations/model=M/weights=W/layer=L/. A reader globbing activations/ therefore never
sees a half-written or uncommitted file. A crash between (2) and (3) is rolled forward by
`recover()` (the staged file is complete and registered); a crash before (2) is rolled back
(the staged file is unregistered and deleted), so the batch is simply done again.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from embstore.store.catalog import Catalog
from embstore.store.duck import quote_identifier, sql_literal
from embstore.store.locks import writer_running

STAGED_SUFFIX = ".tmp"


def partition_dir(name: str, weights: str, layer: str) -> str:
    q = lambda v: quote(v, safe="")  # noqa: E731 - hive partition values, '/' escaped as DuckDB expects
    return f"model={q(name)}/weights={q(weights)}/layer={q(layer)}"


def vectors_table(image_ids: list[str], matrix):
    """Arrow table (image_id string, vec fixed_size_list<float32>[C]) without copying the matrix."""
    import numpy as np
    import pyarrow as pa

    m = np.ascontiguousarray(matrix, dtype=np.float32)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1])
    return pa.table({"image_id": pa.array(image_ids, pa.string()), "vec": vec})


def file_rows(staged, model_key, run_id):
    """(files, index) Arrow tables that register staged files and their vectors in the catalog."""
    import pyarrow as pa

    files = pa.table(
        {
            "file_id": [s.file_id for s in staged],
            "model_key": [model_key] * len(staged),
            "layer": [s.layer for s in staged],
            "rel_path": [s.rel_path for s in staged],
            "n_rows": [s.n_rows for s in staged],
            "n_bytes": [s.n_bytes for s in staged],
            "run_id": [run_id] * len(staged),
        }
    )
    index = pa.table(
        {
            "model_key": [model_key] * sum(s.n_rows for s in staged),
            "layer": [s.layer for s in staged for _ in s.image_ids],
            "image_id": [i for s in staged for i in s.image_ids],
            "file_id": [s.file_id for s in staged for _ in s.image_ids],
        }
    )
    return files, index


@dataclass
class StagedFile:
    file_id: str
    layer: str
    rel_path: str
    n_rows: int
    n_bytes: int
    image_ids: list[str]


@dataclass
class VerifyReport:
    files: int = 0
    rows: int = 0
    missing: list[str] = field(default_factory=list)  # registered, not on disk
    corrupt: list[str] = field(default_factory=list)  # unreadable or wrong row count
    orphans: list[str] = field(default_factory=list)  # on disk, not registered
    staged: list[str] = field(default_factory=list)  # left in staging by a crash
    dangling_index_rows: int = 0
    interrupted_runs: int = 0
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.orphans or self.staged or self.dangling_index_rows)


HIVE_TYPES = "{'model': 'VARCHAR', 'weights': 'VARCHAR', 'layer': 'VARCHAR'}"
VIEW_GLOB = "activations/**/*.parquet"  # relative to the store folder (DuckDB's file_search_path)


class ActivationFiles:
    """The Parquet files of a store's activations: staging, publishing, the `activations` view, verify."""

    def __init__(self, store):
        self.store = store

    # -- the activations view ------------------------------------------------------------------
    # The view names its files relative to the store folder, and every embstore connection sets
    # DuckDB's file_search_path to that folder: a moved or copied store works at once, also when it
    # is read-only (nothing to rewrite), and a plain DuckDB session runs one documented step first,
    # `SET file_search_path = '<store>'` (or starts inside the store folder). Without that step the
    # view fails with "No files found"; it never reads another folder's files the way an absolute
    # path into a copied store's original did.
    def view_sql(self) -> str:
        """SELECT over every published Parquet file: (image_id, model_key, model, weights, layer, vec FLOAT[])."""
        if not self.any_published():  # a glob that matches nothing fails to bind: a typed empty view
            return ("SELECT NULL::VARCHAR AS image_id, NULL::VARCHAR AS model_key, NULL::VARCHAR AS model, "
                    "NULL::VARCHAR AS weights, NULL::VARCHAR AS layer, NULL::FLOAT[] AS vec WHERE false")  # fmt: skip
        return (
            "SELECT image_id, model || '@' || weights AS model_key, model, weights, layer, vec FROM read_parquet("
            f"{sql_literal(VIEW_GLOB)}, hive_partitioning = true, hive_types = {HIVE_TYPES})"
        )

    def any_published(self) -> bool:
        return any(self.store.activations_root.glob("model=*/weights=*/layer=*/*.parquet"))

    def view_is_current(self, con) -> bool:
        view = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'activations'").fetchall()
        # the cheap check first: walking the activation tree costs ~10 ms on a large store
        if view and VIEW_GLOB in view[0][0] and "model_key" in view[0][0]:
            return True
        return bool(view and "model_key" in view[0][0]) and not self.any_published()

    def refresh_view(self, con) -> None:
        """(Re)define the `activations` view (over the published files, or empty and typed before the
        first) and one typed view per stored layer, `"vectors/<model_key>/<layer>"` (image_id, vec FLOAT[C]):
        a layer has one width, so its vectors work in `array_cosine_similarity` and friends without a cast.
        """
        con.execute(f"CREATE OR REPLACE VIEW activations AS {self.view_sql()}")
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

    def stage(self, spec, layer: str, run_id: str, seq: int, image_ids: list[str], matrix) -> StagedFile:
        import pyarrow.parquet as pq

        rel = f"{partition_dir(spec.name, spec.weights, layer)}/{run_id}-{seq:06d}.parquet"
        tmp = self._staged_path(rel)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        table = vectors_table(image_ids, matrix)
        table = table.replace_schema_metadata({"embstore.model_key": spec.key, "embstore.layer": layer})
        with open(tmp, "wb") as f:
            # dictionary encoding makes float vectors larger (stack-facts §2c); ids are unique
            pq.write_table(table, f, compression="zstd", use_dictionary=False)
            f.flush()
            os.fsync(f.fileno())
        return StagedFile(uuid.uuid4().hex, layer, rel, len(image_ids), tmp.stat().st_size, image_ids)

    def publish(self, staged: list[StagedFile]) -> None:
        dirs = set()
        for s in staged:
            final = self.store.activations_root / s.rel_path
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._staged_path(s.rel_path), final)
            dirs.add(final.parent)
        for d in dirs:
            _fsync_dir(d)

    def discard(self, staged: list[StagedFile]) -> None:
        for s in staged:
            self._staged_path(s.rel_path).unlink(missing_ok=True)

    def recover(self) -> list[str]:
        """Finish or undo what a crash left in staging. Call while holding the ingest lock."""
        with self.store.read() as con:
            registered = {rel for _, rel, _ in Catalog(con).files()}
        actions = []
        for tmp in sorted(self.store.staging_root.rglob(f"*{STAGED_SUFFIX}")):
            rel = str(tmp.relative_to(self.store.staging_root))[: -len(STAGED_SUFFIX)]
            final = self.store.activations_root / rel
            if rel in registered and not final.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                actions.append(f"published committed file {rel}")
            else:
                tmp.unlink()
                actions.append(f"removed uncommitted staged file {rel}")
        return actions

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Check that catalog and files agree; with repair, make them agree.

        Repair publishes committed staged files, deletes uncommitted ones, moves orphan and
        corrupt files to <store>/quarantine, and forgets registered files that are missing or
        corrupt, so the next `embstore ingest` stores those vectors again.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        report = VerifyReport()
        if repair:
            report.repaired += self.recover()
        with self.store.read() as con:
            cat = Catalog(con)
            files = cat.files()
            counts = cat.index_counts()
            report.dangling_index_rows = cat.dangling_index_rows()
            running = cat.running_runs()
        report.interrupted_runs = 0 if writer_running(self.store.path) else running
        report.staged = [
            str(p.relative_to(self.store.staging_root)) for p in self.store.staging_root.rglob("*") if p.is_file()
        ]
        registered = set()
        bad_ids = []
        for file_id, rel, n_rows in files:
            registered.add(rel)
            path = self.store.activations_root / rel
            report.files += 1
            if not path.exists():
                report.missing.append(rel)
                bad_ids.append(file_id)
                continue
            try:
                actual = pq.ParquetFile(path).metadata.num_rows
            except (OSError, pa.ArrowException):  # unreadable or not Parquet: counted as corrupt
                actual = -1
            if actual != n_rows or counts.get(file_id, 0) != n_rows:
                report.corrupt.append(rel)
                bad_ids.append(file_id)
            else:
                report.rows += n_rows
        on_disk = {
            str(p.relative_to(self.store.activations_root))
            for p in self.store.activations_root.rglob("*")
            if p.is_file()
        }
        report.orphans = sorted(on_disk - registered)
        if repair and (
            bad_ids or report.orphans or report.corrupt or report.dangling_index_rows or report.interrupted_runs
        ):
            for rel in report.orphans + report.corrupt:
                self._quarantine(rel)
                report.repaired.append(f"moved {rel} to quarantine/")
            with self.store.transaction() as con:
                cat = Catalog(con)
                if bad_ids:
                    cat.drop_files(bad_ids)
                    report.repaired.append(
                        f"forgot {len(bad_ids)} missing/corrupt file(s); re-run ingest to restore them"
                    )
                if report.dangling_index_rows:
                    cat.drop_dangling_index_rows()
                    report.repaired.append(f"dropped {report.dangling_index_rows} index rows without a file")
                if report.interrupted_runs:
                    cat.mark_stale_runs()
                    report.repaired.append(f"marked {report.interrupted_runs} unfinished run(s) interrupted")
        return report

    def read_layer(self, model_key: str, layer: str):
        """(image_ids, float32 matrix) of every stored vector of one model layer, in file order."""
        with self.store.read() as con:
            rels = [rel for rel, _ in Catalog(con).layer_files(model_key, layer)]
        return self.read_files(rels)

    def read_files(self, rels: list[str]):
        """(image_ids, float32 matrix) of the given registered files, in the given order."""
        import numpy as np
        import pyarrow.dataset as ds

        if not rels:
            return [], np.zeros((0, 0), np.float32)
        # One dataset scan reads the files on arrow's threads, in the given order: ~3x faster than a
        # read_table loop on stores of many small per-batch files (1,563 files: 0.6 s against 1.7 s).
        t = ds.dataset([str(self.store.activations_root / rel) for rel in rels], format="parquet").to_table(
            columns=["image_id", "vec"]
        )
        blocks = [np.asarray(chunk.flatten()).reshape(len(chunk), -1) for chunk in t.column("vec").chunks if len(chunk)]
        if not blocks:
            return [], np.zeros((0, 0), np.float32)
        return t.column("image_id").to_pylist(), np.concatenate(blocks)

    def _staged_path(self, rel: str) -> Path:
        return self.store.staging_root / f"{rel}{STAGED_SUFFIX}"

    def _quarantine(self, rel: str) -> None:
        src = self.store.activations_root / rel
        if src.exists():
            dst = self.store.quarantine_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dst)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
