"""The GPU path on a CUDA machine: autocast, channels-last, pinned decode workers and the faiss GPU
index against the CPU's results.

CI machines have no GPU, so here every test is skipped; `bench/on_device.sh` runs this module (and
the GPU benchmarks) on a lent GPU machine. The CPU fallbacks of the same options (one-line notes,
no failure) are tested in test_ingest.py and test_search.py, which run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, make_images

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/on_device.sh)")

# Relative error (Frobenius, per layer) of GPU vectors against float32 on the CPU. cuDNN's float32
# convolutions run in TF32 (10-bit mantissa, torch's default), fp16 has a 10-bit mantissa and bf16
# a 7-bit one; the errors compound over resnet18's 18 layers, and GAP then averages them down.
TOLERANCE = {"off": 1e-2, "fp16": 1e-2, "bf16": 5e-2}


def _vectors(store, layer):
    v = store.vectors("resnet18@none", layer)
    order = np.argsort(v.image_ids)
    return np.asarray(v.image_ids)[order], v.numpy()[order]


def _run_config(store) -> dict:
    ((config,),) = store.sql("SELECT config FROM runs").fetchall()
    return json.loads(config)


@pytest.fixture(scope="module")
def cpu_store(tmp_path_factory):
    import embstore

    root = tmp_path_factory.mktemp("gpu")
    images = root / "imgs"
    make_images(images, 48, size=72)
    store = embstore.open(root / "cpu", create=True)
    r = store.ingest(images, model="resnet18", weights="none", device="cpu", batch_size=16)
    assert r.n_done == 48
    return images, store


@pytest.mark.parametrize("amp", ["off", "fp16", "bf16"])
def test_cuda_ingest_equals_cpu_within_its_precision_and_records_what_ran(cpu_store, tmp_path, amp):
    import embstore

    images, cpu = cpu_store
    store = embstore.open(tmp_path / "cuda", create=True)
    r = store.ingest(images, model="resnet18", weights="none", device="cuda", amp=amp, batch_size=16)
    assert (r.n_done, r.n_errors, r.notes) == (48, 0, [])
    assert r.device.startswith("cuda") and r.workers >= 1  # decoded in pinned-memory worker processes
    config = _run_config(store)
    assert (config["device"], config["amp"], config["channels_last"]) == (r.device, amp, False)
    for layer in r.layers:
        ids_cpu, ref = _vectors(cpu, layer)
        ids, got = _vectors(store, layer)
        assert ids.tolist() == ids_cpu.tolist()
        assert got.dtype == np.float32 and np.isfinite(got).all()
        err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        print(f"amp {amp} {layer}: relative error {err:.2e} vs float32 on CPU")
        assert err < TOLERANCE[amp], (layer, err)


def test_channels_last_on_cuda_changes_the_layout_not_the_vectors(cpu_store, tmp_path):
    import embstore

    images, cpu = cpu_store
    store = embstore.open(tmp_path / "cl", create=True)
    r = store.ingest(images, model="resnet18", weights="none", device="cuda", channels_last=True, batch_size=16)
    assert r.n_done == 48 and _run_config(store)["channels_last"] is True
    _, ref = _vectors(cpu, "hidden")
    _, got = _vectors(store, "hidden")
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < TOLERANCE["off"]


def test_faiss_gpu_index_answers_as_the_cpu_index_with_resources_made_once():
    faiss = pytest.importorskip("faiss")
    from embstore import search

    rng = np.random.default_rng(1)
    base = search.normalise(rng.standard_normal((20_000, 96)).astype(np.float32))
    queries = search.normalise(rng.standard_normal((200, 96)).astype(np.float32))
    cpu = faiss.IndexFlatIP(96)
    cpu.add(base)
    ref_scores, ref_rows = cpu.search(queries, 10)
    index = search.flat_index(base)
    if search.gpu_count() == 0:  # a CPU-only faiss on a GPU machine: CPU search, and the answer says why
        assert search.searched_on(index) == "on CPU: this faiss build has no GPU support (install the `gpu` extra)"
        pytest.skip("this faiss build has no GPU support: the GPU index was not exercised")
    assert search.searched_on(index) == "on GPU 0"
    scores, rows = index.search(queries, 10)
    # exhaustive search in float32 either way; the GPU's GEMM sums in another order, so a near
    # tie may swap two neighbours: rows agree where scores are apart by more than rounding
    assert np.abs(scores - ref_scores).max() < 1e-5
    apart = np.abs(np.diff(ref_scores, axis=1)) > 1e-5
    assert (rows[:, :-1] == ref_rows[:, :-1])[apart].all()
    assert search.flat_index(base[:100]) is not index and search._gpu_resources() is search._gpu_resources()


def test_nearest_images_on_a_cuda_store_equal_brute_force_and_say_where_they_ran(cpu_store, tmp_path):
    import embstore
    from embstore import search

    images, _ = cpu_store
    store = embstore.open(tmp_path / "nn", create=True)
    store.ingest(images, model="resnet18", weights="none", device="cuda", amp="fp16", batch_size=16)
    ids, vectors = _vectors(store, "hidden")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    answer = store.nearest_images(ids[0], k=5, index="flat")
    cosine = unit[1:] @ unit[0]
    expected = ids[1:][np.argsort(-cosine, kind="stable")[:5]]
    assert [n.label for n in answer.rows] == expected.tolist()
    assert np.allclose([n.score for n in answer.rows], np.sort(cosine)[::-1][:5], atol=1e-5)
    where = "on GPU 0" if search.gpu_count() else "on CPU: this faiss build has no GPU support"
    assert any(where in note for note in answer.notes), answer.notes


def test_cli_ingest_on_cuda_with_autocast(cpu_store, tmp_path):
    images, _ = cpu_store
    path = os.pathsep.join([str(ROOT), str(ROOT / "cli"), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-m", "embstore", "--json", "--store", str(tmp_path / "cli"), "ingest", "--images",
         str(images), "--model", "resnet18", "--weights", "none", "--device", "cuda", "--amp", "bf16"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    r = json.loads(out.stdout)
    assert (r["n_done"], r["device"], r["notes"]) == (48, "cuda", [])
