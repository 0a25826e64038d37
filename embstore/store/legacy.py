"""Converting a store made before catalog version 6 (one Parquet file per batch per layer, and a
catalog row per vector) into the Delta activations table, once, on open.

Same protocol as every commit (see table.py): the old files' rows are appended to the Delta table
as batches — one per model, run and set of layers an image got — then ONE catalog transaction
records those batches, pins the table and drops the old registry. A crash before that commit
leaves appended rows of unrecorded batches, which `reconcile()` deletes before the conversion
runs again; the old files are deleted only after the commit.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from embstore.store.table import ActivationTable

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


def convert_legacy(store: StoreCore) -> list[str]:
    """Move the vectors of the legacy Parquet files into the Delta table. Call holding the writer lock."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embstore.store.catalog import Catalog
    from embstore.store.encoding import encode, schema

    table = ActivationTable(store)
    with store.read() as con:
        if not Catalog(con).has_legacy_files():
            return []
        n_files = len(Catalog(con).legacy_files())
    if not n_files:  # a new store: nothing to convert
        with store.transaction() as con:
            Catalog(con).drop_legacy_files()
        return []
    actions = table.reconcile()  # rows of an earlier, interrupted conversion
    with store.read() as con:
        files = Catalog(con).legacy_files()
        groups = Catalog(con).legacy_image_layers()
    batch_of: dict[tuple[str, str, str], str] = {}
    batches: dict[str, tuple[str, str, list[str], list[str]]] = {}  # id -> (model_key, run, layers, images)
    for model_key, run_id, image_id, layers in groups:
        bid = "legacy-" + hashlib.sha256(f"{model_key}\0{run_id}\0{chr(0).join(layers)}".encode()).hexdigest()[:16]
        batch_of[(model_key, run_id, image_id)] = bid
        batches.setdefault(bid, (model_key, run_id, layers, []))[3].append(image_id)

    def rows():
        for _, model_key, name, weights, layer, rel, run_id in files:
            t = pq.read_table(store.activations_root / rel, columns=["image_id", "vec"])
            ids = t.column("image_id").to_pylist()
            if not ids:
                continue
            x = np.asarray(t.column("vec").combine_chunks().flatten(), np.float32).reshape(len(ids), -1)
            by_batch: dict[str, list[int]] = {}
            for r, i in enumerate(ids):
                by_batch.setdefault(batch_of[(model_key, run_id, i)], []).append(r)
            for bid, rs in by_batch.items():
                yield from encode(
                    [ids[r] for r in rs], x[rs], batch_id=bid, model=name, weights=weights, layer=layer, dtype="float32"
                ).to_batches()

    if files:
        table.append(pa.RecordBatchReader.from_batches(schema(), rows()))
    with store.transaction() as con:
        cat = Catalog(con)
        by_model: dict[tuple[str, str], list] = {}
        for bid, (model_key, run_id, layers, images) in batches.items():
            by_model.setdefault((model_key, run_id), []).append((bid, layers, images, 0))
        for (model_key, run_id), recs in by_model.items():
            cat.record_batches(model_key, run_id, recs)
        dt = table.delta()
        if dt is not None:
            table.pin(con, dt)
        cat.drop_legacy_files()
    for _, _, _, _, _, rel, _ in files:
        path = store.activations_root / rel
        if path.exists():
            path.unlink()
    _remove_empty_dirs(store.activations_root)
    actions.append(f"converted {len(files)} Parquet file(s) into the Delta activations table ({len(batches)} batches)")
    return actions


def _remove_empty_dirs(root) -> None:
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if d.name != "_delta_log" and not any(d.iterdir()):
            d.rmdir()
