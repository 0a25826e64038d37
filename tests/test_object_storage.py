"""A store whose activations table lives in object storage (S3 through a local moto server), and
readers outside embstore (deltalake, polars) that read a store's activations without it."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import embstore
from embstore.errors import EmbstoreError
from tests.conftest import make_images, run_embstore

BUCKET = "embstore-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a free local port, for this module; stopped at its end."""
    with moto_server() as (_, env):
        yield env


@contextlib.contextmanager
def moto_server():
    """(process, environment) of a moto S3 server on a free local port, for the block."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto server did not start")
            time.sleep(0.2)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ALLOW_HTTP": "true",
    }
    try:
        yield proc, env
    finally:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    import boto3

    for k, v in s3_endpoint.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3")
    if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=BUCKET)
    return client


def _objects(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.mark.slow
def test_ingest_query_and_sql_against_s3(tmp_path, s3, s3_endpoint):
    """`embstore ingest --activations s3://…` keeps the vectors in the bucket and the catalog local;
    query similar / query images / sql / verify / compact then work against it, and the vectors equal
    a local store's."""
    photos = tmp_path / "photos"
    for cls in ("knot", "chain", "baseball"):
        make_images(photos / cls, 4, size=48, seed=hash(cls) % 1000)
    uri = f"s3://{BUCKET}/runs/one"
    common = ["--images", photos, "--model", "resnet18", "--weights", "none", "--layers", "layer3,layer4"]
    res = run_embstore("--store", tmp_path / "remote", "ingest", "--activations", uri, *common, env=s3_endpoint)
    assert res.returncode == 0, res.stderr
    keys = _objects(s3, "runs/one/")
    assert any(k.startswith("runs/one/_delta_log/") for k in keys)
    data = [k for k in keys if k.endswith(".parquet")]
    assert data and all("model=resnet18/weights=none/" in k for k in data)
    assert not list((tmp_path / "remote").rglob("*.parquet")), "vectors must not be written locally"

    res = run_embstore("--store", tmp_path / "local", "ingest", *common)
    assert res.returncode == 0, res.stderr

    remote, local = embstore.open(tmp_path / "remote"), embstore.open(tmp_path / "local")
    assert remote.core.location.table_uri == uri and remote.core.location.remote
    for layer in ("layer3", "layer4", "hidden"):
        a_ids, a = _sorted(remote.vectors("resnet18@none", layer))
        b_ids, b = _sorted(local.vectors("resnet18@none", layer))
        assert a_ids == b_ids and len(a_ids) == 12
        np.testing.assert_array_equal(a, b)

    store = str(tmp_path / "remote")
    res = run_embstore("--store", store, "query", "similar", "knot", "--model", "resnet18@none", "--k", "2",
                       env=s3_endpoint)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "chain" in res.stdout and "baseball" in res.stdout
    image = sorted((photos / "chain").iterdir())[0]
    res = run_embstore("--store", store, "query", "images", image, "--model", "resnet18@none", "--k", "3",
                       env=s3_endpoint)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert image.name in res.stdout
    res = run_embstore("--store", store, "sql", "SELECT count(*) AS n, count(DISTINCT image_id) AS d FROM activations",
                       "--csv", env=s3_endpoint)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "36,12" in res.stdout.replace(" ", "")

    res = run_embstore("--store", store, "--json", "verify", env=s3_endpoint)
    assert res.returncode == 0, res.stdout + res.stderr
    checked = json.loads(res.stdout)
    assert checked["ok"] and checked["unlisted_files"] == [] and checked["files"] > 0, checked
    res = run_embstore("--store", store, "compact", "--retain-hours", "0", env=s3_endpoint)
    assert res.returncode == 0, res.stderr
    after = [k for k in _objects(s3, "runs/one/") if k.endswith(".parquet")]
    assert len(after) == 3  # one file per layer partition
    again = _sorted(remote.vectors("resnet18@none", "layer4"))[1]
    np.testing.assert_array_equal(again, _sorted(local.vectors("resnet18@none", "layer4"))[1])

    # `embstore serve` reads the S3 store through its published snapshot like a local one
    import urllib.request

    with remote.serve(port=0) as server:
        with urllib.request.urlopen(server.url + "api/class/knot?model=resnet18@none&k=2&layer=layer4") as r:
            page = json.loads(r.read())
    res = run_embstore("--store", store, "--json", "query", "similar", "knot", "--model", "resnet18@none", "--k", "2",
                       "--layer", "layer4", env=s3_endpoint)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert page["similar"] == json.loads(res.stdout) and page["class"]["images"] == 4


def test_remote_location_errors_are_one_line(tmp_path, s3):
    with pytest.raises(EmbstoreError, match="bucket 'no-such-bucket' .* does not exist"):
        embstore.open(tmp_path / "a", create=True, activations="s3://no-such-bucket/x")
    with pytest.raises(EmbstoreError, match="unsupported scheme 'ftp'"):
        embstore.open(tmp_path / "b", create=True, activations="ftp://host/x")
    store = embstore.open(tmp_path / "c", create=True, activations=f"s3://{BUCKET}/c")
    with pytest.raises(EmbstoreError, match="keeps its table where it was made"):
        embstore.open(tmp_path / "c", activations=f"s3://{BUCKET}/elsewhere")
    assert embstore.open(tmp_path / "c").core.location.table_uri == store.core.location.table_uri


def test_store_on_s3_with_populate_matches_deltalake_and_polars(tmp_path, s3):
    """Readers that know nothing of embstore (deltalake, polars.scan_delta) see the same rows."""
    from embstore.testing import populate

    store = embstore.open(tmp_path / "st", create=True, activations=f"s3://{BUCKET}/pop")
    populate(store, n_classes=4, per_class=5, layers={"hidden": 16}, seed=3)
    _same_rows_outside_embstore(store)


def test_local_store_readable_by_deltalake_and_polars(tmp_path):
    from embstore.testing import populate

    store = embstore.open(tmp_path / "st", create=True)
    populate(store, n_classes=3, per_class=4, layers={"hidden": 8}, seed=1)
    _same_rows_outside_embstore(store)


def _same_rows_outside_embstore(store) -> None:
    import polars as pl
    from deltalake import DeltaTable

    uri = store.core.location.table_uri
    via_delta = DeltaTable(uri).to_pyarrow_table()
    via_polars = pl.scan_delta(uri).filter(pl.col("layer") == "hidden").collect()
    for model_key, *_ in store.status()["per_model"]:
        name, weights = model_key.split("@", 1)
        want_ids, want = _sorted(store.vectors(model_key, "hidden"))
        rows = {
            r["image_id"]: r["vec"]
            for r in via_delta.to_pylist()
            if r["model"] == name and r["weights"] == weights and r["layer"] == "hidden"
        }
        assert sorted(rows) == want_ids
        np.testing.assert_array_equal(np.array([rows[i] for i in want_ids], np.float32), want)
        sub = via_polars.filter((pl.col("model") == name) & (pl.col("weights") == weights)).sort("image_id")
        assert sub["image_id"].to_list() == want_ids
        np.testing.assert_array_equal(np.array(sub["vec"].to_list(), np.float32), want)


def _sorted(vectors) -> tuple[list[str], np.ndarray]:
    order = np.argsort(vectors.image_ids, kind="stable")
    return [vectors.image_ids[i] for i in order], vectors.numpy()[order]


def test_a_new_store_on_an_unreachable_endpoint_is_not_created(tmp_path, monkeypatch):
    """Issue 37 item 11: the endpoint is checked before anything of the store is made."""
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "AWS_ALLOW_HTTP": "true"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    with pytest.raises(EmbstoreError, match="cannot reach activations table s3://nowhere/x"):
        embstore.open(tmp_path / "u", create=True, activations="s3://nowhere/x")
    assert not (tmp_path / "u" / "catalog.duckdb").exists()


@pytest.mark.slow
def test_a_hung_or_gone_endpoint_is_one_line_and_frees_the_store(tmp_path):
    """Issue 37 item 6: with the object store stopped (SIGSTOP: it accepts and never answers) an ingest
    ends after about twice $EMBSTORE_REMOTE_TIMEOUT a request with one line naming the wait, the writer
    lock released; with it gone, `embstore sql` says why in one line (not "Traceback …")."""
    import boto3

    from embstore.store.locks import writer_running

    with moto_server() as (proc, env):
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="t",
                     aws_secret_access_key="t").create_bucket(Bucket="bkt-hang")  # fmt: skip
        s = tmp_path / "s"
        make_images(tmp_path / "imgs", 2)
        args = ["--store", s, "ingest", "--images", tmp_path / "imgs", "-m", "resnet18", "--weights", "none"]
        first = run_embstore(*args, "--layers", "layer4", "--activations", "s3://bkt-hang/t", env=env)
        assert first.returncode == 0, first.stderr
        os.kill(proc.pid, signal.SIGSTOP)
        try:  # a short wait only here: a healthy request on a busy machine may well take 2 s
            hung = run_embstore(*args, "--layers", "layer3", env={**env, "EMBSTORE_REMOTE_TIMEOUT": "2"})
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert hung.returncode == 1 and hung.stderr.count("\n") == 1, hung.stderr
        assert "EMBSTORE_REMOTE_TIMEOUT" in hung.stderr and "Traceback" not in hung.stderr
        assert not writer_running(s)
        proc.kill()
        proc.wait(timeout=60)
        gone = run_embstore("--store", s, "sql", "SELECT count(*) FROM activations", env=env)
        assert gone.returncode == 2 and gone.stderr.count("\n") == 1, gone.stderr
        assert "Traceback" not in gone.stderr
