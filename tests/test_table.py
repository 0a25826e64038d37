"""The Delta activations table: conversion of old stores, compact vectors, compaction, snapshot reads."""

import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

import embstore
from embstore import testing as synthetic
from embstore.store.encoding import dequantize, quantize

DATA = Path(__file__).parent / "data"


def _count(store, sql):
    with store.core.read() as con:
        return con.execute(sql).fetchall()


def test_a_store_made_by_release_0_1_0_is_converted_on_open(tmp_path):
    # made with embstore 0.1.0 (commit 77c316a): populate(n_classes=3, per_class=3, layers={conv_a: 4,
    # hidden: 6}, batch=4) -> 3 Parquet files per layer and an activation_index row per vector
    with tarfile.open(DATA / "store-0.1.0.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    old = tmp_path / "store-0.1.0"
    before = {}
    for f in sorted((old / "activations").rglob("*.parquet")):
        layer = f.parent.name.split("=", 1)[1]
        t = pq.read_table(f)
        for i, v in zip(t.column("image_id").to_pylist(), t.column("vec").to_pylist()):
            before[(layer, i)] = np.array(v, np.float32)
    assert len(before) == 18
    store = embstore.open(old)
    tables = {name for name, _ in store.tables()}
    assert "legacy_activation_files" not in tables and "vector_batches" in tables
    assert not list((old / "activations").rglob("synthetic-0-*.parquet")), "old files are deleted once converted"
    for layer in ("conv_a", "hidden"):
        v = store.vectors("synthetic_net", layer)
        got = dict(zip(v.image_ids, v.numpy()))
        assert got.keys() == {i for lay, i in before if lay == layer}
        for i, x in got.items():
            np.testing.assert_array_equal(x, before[(layer, i)])
    assert store.verify().ok
    assert _count(store, "SELECT count(*), count(DISTINCT (layer, image_id)) FROM activations") == [(18, 18)]
    assert store.similar_classes("tench", k=2, method="classifier").rows
    # its labels are imagenet1k's (migration 14), and the class statistics are numpy's on the old vectors
    assert _count(store, "SELECT label_set, count(*) FROM images GROUP BY 1") == [("imagenet1k", 9)]
    (proto,) = store.class_tables("prototypes", layers=["conv_a"])
    label_of = dict(_count(store, "SELECT image_id, label_index FROM images"))
    for c, mean in _count(store, "SELECT label_index, mean FROM class_prototypes ORDER BY 1"):
        rows = [v for (lay, i), v in before.items() if lay == "conv_a" and label_of[i] == c]
        np.testing.assert_allclose(mean, np.mean(rows, axis=0), rtol=1e-6)
    assert (proto.label_set, proto.n_classes, proto.n_images) == ("imagenet1k", 3, 9)
    # resuming onto the converted store stores nothing twice
    with store.core.read() as con:
        assert con.execute("SELECT count(*) FROM batch_images").fetchall() == [(9,)]


def test_int8_vectors_are_within_half_a_step_everywhere_and_smaller(tmp_path):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.gamma(2, 1, (300, 512)) + rng.normal(0, 0.7, (300, 512)), 0).astype(np.float32)
    x[0] = 3.0  # a constant vector decodes exactly
    q, lo, step = quantize(x)
    y = dequantize(q, lo, step)
    assert np.all(np.abs(y - x) <= step[:, None] / 2 * 1.0001 + 1e-7) and np.array_equal(y[0], x[0])
    sizes = {}
    for dtype in ("float32", "int8"):
        store = embstore.open(tmp_path / dtype, create=True)
        data = synthetic.populate(store, n_classes=10, per_class=30, layers={"conv": 512, "hidden": 64}, dtype=dtype)
        sizes[dtype] = _count(store, "SELECT sum(n_bytes) FROM table_files WHERE layer = 'conv'")[0][0]
        ref = dict(zip(data["ids"], data["vectors"]["conv"]))
        v = store.vectors(layer="conv")
        api = v.numpy()
        assert api.dtype == np.float32
        err = np.abs(api - np.stack([ref[i] for i in v.image_ids]))
        if dtype == "float32":
            assert err.max() == 0
        else:
            steps = np.array([(ref[i].max() - ref[i].min()) / 255 for i in v.image_ids])
            assert np.all(err <= steps[:, None] / 2 * 1.001 + 1e-6)
        # plain SQL decodes to the very same FLOAT values the API returns
        with store.core.read() as con:
            rows = con.execute("SELECT image_id, vec FROM activations WHERE layer = 'conv'").fetchall()
        sql = {i: np.array(vec, np.float32) for i, vec in rows}
        assert all(np.array_equal(sql[i], api[r]) for r, i in enumerate(v.image_ids))
        assert store.similar_classes("tench", k=3, layer="conv").rows
    assert sizes["int8"] <= 0.55 * sizes["float32"], sizes


def test_a_layer_keeps_its_dtype(tmp_path):
    store = embstore.open(tmp_path / "s", create=True)
    synthetic.populate(store, n_classes=2, per_class=2, layers={"conv": 4})
    with pytest.raises(embstore.UsageError, match="stored as float32"):
        synthetic.populate(store, n_classes=2, per_class=2, layers={"conv": 4}, seed=1, dtype="int8")
    with pytest.raises(embstore.UsageError, match="no half floats"):
        store.ingest("nowhere", model="resnet18", dtype="float16")


def test_compaction_merges_files_and_a_moved_store_reads_in_plain_duckdb(tmp_path):
    store = embstore.open(tmp_path / "s", create=True)
    synthetic.populate(store, n_classes=10, per_class=20, layers={"conv": 16, "hidden": 8}, batch=10, compact=False)
    assert _count(store, "SELECT count(*) FROM table_files")[0][0] == 40
    before = _count(store, "SELECT layer, count(*), sum(list_sum(vec)) FROM activations GROUP BY 1 ORDER BY 1")
    report = store.compact(retain_hours=0)
    assert (report.files_before, report.files_after) == (40, 2) and report.vacuumed == 40
    assert _count(store, "SELECT count(*) FROM table_files")[0][0] == 2
    after = _count(store, "SELECT layer, count(*), sum(list_sum(vec)) FROM activations GROUP BY 1 ORDER BY 1")
    assert [r[:2] for r in after] == [r[:2] for r in before]
    assert all(abs(a[2] - b[2]) < 1e-3 * abs(b[2]) for a, b in zip(after, before))
    assert store.verify().ok
    store.close()
    moved = tmp_path / "moved"
    shutil.move(store.path, moved)
    con = duckdb.connect(str(moved / "catalog.duckdb"), read_only=True)
    con.execute(f"SET file_search_path = '{moved}'")
    assert con.execute("SELECT count(*), count(DISTINCT image_id) FROM activations").fetchall() == [(400, 200)]
    # and polars/deltalake read the same rows without embstore
    from deltalake import DeltaTable

    t = DeltaTable(str(moved / "activations")).to_pyarrow_table(columns=["image_id", "layer"])
    assert t.num_rows == 400


def test_readers_during_repeated_compaction_never_fail_or_double_count(tmp_path):
    store = embstore.open(tmp_path / "s", create=True)
    synthetic.populate(store, n_classes=5, per_class=40, layers={"conv": 8}, batch=5, compact=False)
    writer = subprocess.Popen(
        [sys.executable, "-c", _COMPACT_LOOP, str(store.path), "8", "5", "1"], stderr=subprocess.PIPE, text=True
    )  # retention 1 h: files replaced by a compaction stay for readers of the previous snapshot
    seen, errors, last = 0, [], 200
    try:
        while writer.poll() is None:
            try:
                with store.core.read() as con:
                    ((total, distinct),) = con.execute(
                        "SELECT count(*), count(DISTINCT image_id) FROM activations"
                    ).fetchall()
                assert total == distinct >= last, (total, distinct, last)  # never a row twice, never fewer
                last = total
                seen += 1
            except embstore.StoreBusyError as exc:  # the catalog lock is held for a commit: never for long
                errors.append(str(exc))
            time.sleep(0.01)
    finally:
        writer.kill()
    assert writer.returncode == 0, writer.stderr.read()[-2000:]
    assert seen > 10 and not errors and last == 200 + 8 * 3 * 5
    assert embstore.open(store.path).verify().ok


# a writer that appends batches and compacts, over and over (for the reader and kill tests)
_COMPACT_LOOP = """
import os, sys, numpy as np, embstore
from embstore.store.table import ActivationTable, Part, new_batch_id
from embstore.store.catalog import Catalog
from embstore.testing import SPEC
store = embstore.open(sys.argv[1])
table = ActivationTable(store.core)
rounds = int(sys.argv[2])
for r in range(rounds):
    with store.core.writer_lock():
        for k in range(3):  # three small commits of new image ids, then a compaction
            ids = [f"p{os.getpid()}r{r:04d}k{k}i{i:03d}" for i in range(int(sys.argv[3]))]
            x = np.random.default_rng(r).random((len(ids), 8), dtype=np.float32)
            table.commit(SPEC, "loop", [Part(new_batch_id(), ids, {"conv": x})], {}, lambda cat: None)
        table.compact(retain_hours=float(sys.argv[4]))
"""


@pytest.mark.slow
def test_kill_9_at_random_points_of_commits_and_compaction_loses_and_doubles_nothing(tmp_path):
    store = embstore.open(tmp_path / "s", create=True)
    synthetic.populate(store, n_classes=5, per_class=10, layers={"conv": 8}, batch=5, compact=False)
    rng = np.random.default_rng(7)
    kills = restored = 0
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _COMPACT_LOOP, str(store.path), "1000", "7", "0"])
        time.sleep(float(rng.uniform(1.5, 4.0)))  # start-up takes ~1 s: the rest lands in commits and compactions
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        try:
            s = embstore.open(store.path)
        except embstore.CatalogDamagedError:
            # DuckDB itself reported the catalog corrupt after one kill in ~100 (CI of stop 22, not
            # reproduced in 180 more): repair restores the last snapshot, and nothing may double
            restored += 1
            s = embstore.open(store.path, restore_catalog=True)
        s.verify(repair=True)
        report = s.verify()
        assert report.ok, report
        with s.core.read() as con:
            total, distinct = con.execute("SELECT count(*), count(DISTINCT image_id) FROM activations").fetchall()[0]
            recorded = con.execute("SELECT count(*) FROM batch_images").fetchall()[0][0]
        assert total == distinct == recorded, (total, distinct, recorded)
        s.close()
    assert kills >= 10 and restored <= 1, (kills, restored)
