"""The store's own rows never reach outside it (issue 37 items 1-3): a crafted catalog row, a symbolic link
in the table's folder or a crafted Delta log entry grants no read, and no maintenance command reads,
moves or deletes what it names; each case tried as an attacker would, then checked for what changed."""

import contextlib
import json
import os
import shutil

import pytest

import embstore

from .conftest import run_embstore


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small real store (resnet18, random weights, two layers, the bundled photos), copied per test."""
    root = tmp_path_factory.mktemp("hardening")
    done = run_embstore("--store", root / "s", "ingest", "--images", embstore.sample_images(), "-m", "resnet18",
                        "--weights", "none", "--layers", "layer4", "-q")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root / "s"


@pytest.fixture
def store(base, tmp_path):
    path = tmp_path / "s"
    shutil.copytree(base, path, symlinks=True)
    return path


@pytest.fixture
def secret(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "secret.csv"
    path.write_text("secret,value\nalpha,42\n")
    return path


def _sql(store, *args):
    return run_embstore("--store", store, "--json", "sql", *args)


@pytest.mark.parametrize("row", ["absolute", "relative"])
def test_a_crafted_catalog_row_grants_no_read_and_repair_touches_no_file(store, secret, row):
    name = str(secret) if row == "absolute" else os.path.relpath(secret, store)
    crafted = _sql(store, "--write", f"INSERT INTO table_files VALUES ('{name}', 'resnet18@none', 'zz', 1, 1)")
    assert crafted.returncode == 0, crafted.stderr  # the row goes in: it is what a later session trusts that matters
    for query in (f"SELECT * FROM read_text('{name}')", f"SELECT * FROM read_csv('{secret}')"):
        read = _sql(store, query)
        assert read.returncode == 2 and "Permission Error" in read.stderr and "alpha,42" not in read.stdout, query
    shell = run_embstore("--store", store, "shell", "--write", input_text=(
        f"INSERT INTO table_files VALUES ('{secret}', 'resnet18@none', 'yy', 1, 1);\n"
        f"SELECT content FROM read_text('{secret}');\n"))  # fmt: skip
    assert "alpha,42" not in shell.stdout and "Permission Error" in shell.stderr  # not even in the same session
    check = run_embstore("--store", store, "--json", "verify")
    report = json.loads(check.stdout)
    assert check.returncode == 1 and not report["ok"] and name in report["outside"]
    repair = run_embstore("--store", store, "--json", "verify", "--repair")
    assert repair.returncode == 0, repair.stderr
    assert json.loads(repair.stdout)["ok"]
    assert json.loads(run_embstore("--store", store, "--json", "verify").stdout)["ok"]
    assert secret.read_text() == "secret,value\nalpha,42\n"
    assert not [p for p in (store / "quarantine").rglob("*") if p.is_file()]  # nothing moved in
    rows = _sql(store, "SELECT count(*) AS n FROM table_files WHERE layer IN ('zz', 'yy')")
    assert json.loads(rows.stdout)["rows"] == [{"n": 0}]


def test_a_part_file_replaced_by_a_link_is_never_read_and_repair_removes_only_the_link(store, secret):
    part = next(p for p in (store / "activations").rglob("*.parquet") if "layer=layer4" in str(p))
    part.unlink()
    part.symlink_to(secret)
    read = _sql(store, "SELECT count(*) FROM activations")
    assert read.returncode == 2 and "Permission Error" in read.stderr and "alpha,42" not in read.stdout + read.stderr
    with pytest.raises(embstore.StoreError, match="outside its activations table"):
        embstore.open(store).vectors(model="resnet18", layer="layer4").numpy()
    check = json.loads(run_embstore("--store", store, "--json", "verify").stdout)
    rel = str(part.relative_to(store))
    assert not check["ok"] and check["outside"] == [rel]
    repair = run_embstore("--store", store, "verify", "--repair")
    assert repair.returncode == 0, repair.stderr
    assert "a symbolic link to" in repair.stdout and secret.read_text().endswith("alpha,42\n")
    assert not part.exists() and not part.is_symlink()
    resumed = run_embstore("--store", store, "ingest", "-m", "resnet18", "--weights", "none", "--layers", "layer4")
    assert resumed.returncode == 0, resumed.stderr  # the lost vectors come back
    assert json.loads(run_embstore("--store", store, "--json", "verify").stdout)["ok"]


def test_a_crafted_log_entry_is_refused_by_compact_and_listed_by_verify(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    outside = tmp_path / "outside" / "x.parquet"
    outside.parent.mkdir()
    pq.write_table(pa.table({"image_id": ["evil"]}), outside)
    before = outside.read_bytes()
    log = store / "activations" / "_delta_log"
    last = max(int(p.stem) for p in log.glob("*.json"))
    add = {"add": {"path": os.path.relpath(outside, store / "activations"), "size": len(before),
                   "partitionValues": {"model": "resnet18", "weights": "none", "layer": "layer4"},
                   "modificationTime": 1, "dataChange": True, "stats": json.dumps({"numRecords": 1})}}  # fmt: skip
    (log / f"{last + 1:020d}.json").write_text(json.dumps(add) + "\n")
    compact = run_embstore("--store", store, "compact")
    assert compact.returncode == 1 and compact.stderr.count("\n") == 1 and "compact refuses" in compact.stderr
    check = run_embstore("--store", store, "--json", "verify")
    assert check.returncode == 1 and json.loads(check.stdout)["outside"] == [f"activations/{add['add']['path']}"]
    repair = run_embstore("--store", store, "verify", "--repair")
    assert "restore the table's _delta_log" in repair.stdout and "Traceback" not in repair.stderr
    assert outside.read_bytes() == before  # read by nobody, moved by nobody
    read = _sql(store, "SELECT count(*) AS n FROM activations WHERE image_id = 'evil'")
    assert read.returncode == 0 and json.loads(read.stdout)["rows"] == [{"n": 0}]


def test_retain_hours_below_one_is_never_rounded_down_to_an_immediate_delete(store):
    done = run_embstore("--store", store, "--json", "compact", "--retain-hours", "0.5")
    assert done.returncode == 0, done.stderr
    assert any("kept replaced files 1 h" in note for note in json.loads(done.stdout)["notes"])


def test_a_statement_duckdb_cannot_name_is_one_line(store):
    for args in (["UPDATE EXTENSIONS"], ["--write", "UPDATE EXTENSIONS"]):
        done = run_embstore("--store", store, "sql", *args)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, args


def test_damaged_index_files_are_built_again_and_damaged_classifier_weights_said(store):
    coffee = embstore.sample_images() / "coffee.png"
    query = ["--store", store, "--json", "query", "images", coffee, "--layer", "layer4"]
    first = run_embstore(*query)
    assert first.returncode == 0, first.stderr
    files = [p for p in (store / "indexes").rglob("*") if p.is_file() and p.parent.name != "memo"]
    assert any(p.suffix == ".faiss" for p in files)
    for p in files:
        p.write_bytes(b"garbage")
    again = run_embstore(*query)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["results"] == json.loads(first.stdout)["results"]
    similar = run_embstore("--store", store, "query", "similar", "knot", "--method", "classifier")
    assert similar.returncode != 0 and similar.stderr.count("\n") == 1 and "no classifier weights" in similar.stderr
    redo = run_embstore("--store", store, "ingest", "-m", "resnet18", "--weights", "none", "--layers", "layer4")
    assert redo.returncode == 0
    assert run_embstore("--store", store, "query", "similar", "knot", "--method", "classifier").returncode == 0


@pytest.mark.parametrize("run_fails", [True, False])
def test_a_run_end_that_cannot_be_recorded_leaves_the_stopping_error_and_one_line(tmp_path, monkeypatch, run_fails):
    """A full disk hits both the last commit and the record of the run's end (issue 37 item 4): the error
    that stopped the run is the one raised; after a run that went well, one StoreError says what was kept."""
    import duckdb

    from embstore.store.catalog import Catalog
    from embstore.store.table import ActivationTable

    def full(*args, **kwargs):
        raise duckdb.TransactionException("TransactionContext Error: Failed to commit: could not write: No space left")

    monkeypatch.setattr(Catalog, "finish_run", full)
    if run_fails:
        monkeypatch.setattr(ActivationTable, "commit", lambda *a, **k: (_ for _ in ()).throw(
            embstore.StoreError("cannot write to activations table: no space left on device")))  # fmt: skip
    store = embstore.open(tmp_path / "s", create=True)
    expected = "no space left on device" if run_fails else "stored its vectors .* its end could not be recorded"
    with pytest.raises(embstore.StoreError, match=expected):
        store.ingest(embstore.sample_images(), model="resnet18", weights="none", layers="layer4")
    monkeypatch.undo()
    later = store.ingest(embstore.sample_images(), model="resnet18", weights="none", layers="layer4")
    assert any("interrupted" in line for line in later.recovered)  # the next writer marks the row
    assert store.sql("SELECT count(*) FROM runs WHERE status = 'running'").fetchall() == [(0,)]


def test_native_output_is_held_and_dropped_when_the_call_fails(capfd):
    from embstore.store.table import _rust_output_held

    with pytest.raises(RuntimeError), _rust_output_held():
        os.write(2, b"thread 'tokio-rt-worker' panicked at buffered.rs: Already shut down\n")
        raise RuntimeError("delta-rs failed")
    with _rust_output_held():
        os.write(2, b"a warning worth keeping\n")
    err = capfd.readouterr().err
    assert "panicked" not in err and "a warning worth keeping" in err


def test_compact_on_a_full_disk_is_one_line_and_changes_nothing(tmp_path):
    """Issue 37 item 5: on a full tmpfs (root only) compact says so in one line, exit 1, no Rust panic
    output, the table unchanged; with room again it compacts."""
    from .conftest import small_tmpfs

    with small_tmpfs(tmp_path / "disk", "48m") as disk:
        s = disk / "s"
        store = embstore.open(s, create=True)
        for n in (1, 2, 3):  # three runs: three small files per layer to merge
            store.ingest(embstore.sample_images(), model="resnet18", weights="none", layers="layer4", limit=n,
                         compact=False)  # fmt: skip
        store.close()
        before = sorted(p.name for p in (s / "activations").rglob("*.parquet"))
        fill = disk / "fill"
        with open(fill, "wb") as f:  # every free byte taken
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
        full = run_embstore("--store", s, "compact")
        assert full.returncode == 1 and full.stderr.count("\n") == 1, full.stderr
        assert "no space left" in full.stderr and "panicked" not in full.stderr and "Traceback" not in full.stderr
        assert sorted(p.name for p in (s / "activations").rglob("*.parquet")) == before
        fill.unlink()
        again = run_embstore("--store", s, "--json", "compact")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["rewritten"] == 6
