"""`ingest --engine ray`: the same store as a single-process ingest, on a local Ray cluster of 2 CPUs
(the size at which a greedy actor pool starves the read tasks and hangs); killed workers and a
killed or interrupted driver; and no process of the cluster left behind."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest

import embstore
from embstore.ingest.distributed import owned_processes
from tests.conftest import EMBSTORE, make_images, run_embstore

pytest.importorskip("ray.data")
pytestmark = pytest.mark.slow

MODEL = ["--model", "resnet18", "--weights", "none", "--layers", "layer3,layer4", "--batch-size", "8"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_photos")
    for k, cls in enumerate(("knot", "chain", "baseball", "golf ball")):
        make_images(root / cls, 25, size=40, seed=10 + k)
    (root / "knot" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory):
    """The single-process store of the same images."""
    path = tmp_path_factory.mktemp("ray_ref") / "store"
    res = run_embstore("--store", path, "ingest", "--images", photos, *MODEL)
    assert res.returncode == 0, res.stderr
    return embstore.open(path)


def _sorted(store, layer):
    v = store.vectors("resnet18@none", layer)
    order = np.argsort(v.image_ids, kind="stable")
    return [v.image_ids[i] for i in order], v.numpy()[order]


def _assert_same_store(store, reference) -> None:
    """Same image ids, vectors within 1e-5, same predictions; every image stored exactly once."""
    for layer in ("layer3", "layer4", "hidden"):
        ids, x = _sorted(store, layer)
        ref_ids, ref = _sorted(reference, layer)
        assert ids == ref_ids and len(ids) == 100 and len(set(ids)) == 100
        np.testing.assert_allclose(x, ref, atol=1e-5, rtol=0)
    q = "SELECT image_id, top5_index, true_rank FROM predictions ORDER BY image_id"
    assert store.run_sql(q)[1] == reference.run_sql(q)[1]
    q = "SELECT count(*), count(DISTINCT image_id || layer) FROM activations"
    assert store.run_sql(q)[1] == [(300, 300)]
    assert store.verify().ok


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _workers() -> list[int]:
    out = []
    for pid in owned_processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"MapWorker" in f.read():
                    out.append(pid)
        except OSError:
            continue
    return out


def test_ray_ingest_equals_single_process_and_leaves_nothing_running(photos, reference, tmp_path):
    path = tmp_path / "store"
    res = run_embstore("--store", path, "ingest", "--images", photos, *MODEL, "--engine", "ray", "--cpus", "2",
                       timeout=400)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cannot decode" in res.stdout or "broken.png" in res.stdout  # the bad file is reported like locally
    assert owned_processes() == []
    store = embstore.open(path)
    _assert_same_store(store, reference)
    config = store.run_sql("SELECT config->>'engine', config->>'device', config->>'channels_last', n_errors FROM runs")
    assert config[1] == [("ray", "ray: 1 CPU actor(s) on 1 node(s)", "true", 1)]  # CPU actors: channels-last
    # the stored schema is the engine's business alone
    from deltalake import DeltaTable

    def schema(s):
        return DeltaTable(s.core.location.table_uri).schema().to_arrow()

    assert schema(store) == schema(reference)


def test_killed_worker_is_retried_or_resumed_exactly_once(photos, reference, tmp_path):
    path = tmp_path / "store"
    args = ["--store", path, "ingest", "--images", photos, *MODEL, "--engine", "ray", "--cpus", "2",
            "--commit-seconds", "0"]  # fmt: skip
    proc = subprocess.Popen([str(EMBSTORE), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        victim = _wait_for(_workers, 120, "a model actor")[0]
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Ray restarts the actor and retries its batch; were the run to fail instead, the rerun stores the rest
    if proc.returncode != 0:
        assert "Traceback" not in err.decode(), err.decode()
        res = run_embstore(*args, timeout=400)
        assert res.returncode == 0, res.stderr
    _wait_for(lambda: owned_processes() == [], 120, "the cluster's processes to end")
    _assert_same_store(embstore.open(path), reference)


def _system_process(name: bytes) -> int | None:
    for pid in owned_processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if name in f.read().split(b"\0")[0]:
                    return pid
        except OSError:
            continue
    return None


@pytest.mark.parametrize("victim", ["driver-SIGKILL", "driver-SIGINT", "raylet-SIGKILL"])
def test_killed_or_interrupted_driver_leaves_no_process_and_resumes(photos, reference, tmp_path, victim):
    """Ctrl-C is the driver's own to report; a killed driver, or one Ray's core worker ends when its
    raylet dies (no Python runs), is reported by the watchdog: one line, the run marked interrupted."""
    path = tmp_path / "store"
    args = ["--store", path, "ingest", "--images", photos, *MODEL, "--engine", "ray", "--cpus", "2",
            "--commit-seconds", "0"]  # fmt: skip
    # a suite started in the background (`nohup … &`) hands its children SIGINT ignored: the child
    # gets the default handling back, as a command typed at a terminal has it
    proc = subprocess.Popen([str(EMBSTORE), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        _wait_for(_workers, 600, "a model actor")  # generous: a loaded machine only makes it slower
        assert len(owned_processes()) >= 3  # the count below counts something: gcs, raylet, workers
        time.sleep(2.0)
        if victim == "raylet-SIGKILL":
            raylet = _system_process(b"raylet")
            assert raylet is not None
            os.kill(raylet, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL if victim == "driver-SIGKILL" else signal.SIGINT)
        _, err = proc.communicate(timeout=600)  # until the watchdog, which shares its stderr, is done too
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    text = err.decode()
    assert "Traceback" not in text, text
    ours = [line for line in text.splitlines() if line.startswith("embstore:")]
    assert len(ours) == 1, text
    _wait_for(lambda: owned_processes() == [], 120, "every process of the killed run's cluster to end")
    status, message = embstore.open(path).run_sql("SELECT status, message FROM runs")[1][0]
    if victim == "driver-SIGINT":
        assert status == "interrupted" and message == "interrupted by the user"
    elif victim == "raylet-SIGKILL" and "ended abruptly" not in ours[0]:
        # Ray decides which comes first: the driver's Python seeing the lost actor (then it says so
        # itself and closes the run), or its core worker ending the process (then the watchdog does)
        assert ours[0].startswith("embstore: error: the Ray cluster lost work"), ours
        assert status == "failed" and "the Ray cluster lost work" in message
    else:
        assert "ended abruptly" in ours[0] and "is marked interrupted" in ours[0], ours
        assert status == "interrupted" and "ended abruptly" in message
    res = run_embstore("--store", path, "ingest", "--images", photos, *MODEL)  # resume without Ray: the same store
    assert res.returncode == 0, res.stderr
    _assert_same_store(embstore.open(path), reference)


def test_gpu_options_fall_back_on_cpu_with_a_note(photos, tmp_path):
    store = embstore.open(tmp_path / "s", create=True)
    plain = store.ingest(photos / "chain", model="resnet18", weights="none", layers=["layer4"], device="cpu",
                         channels_last=False)  # fmt: skip
    other = embstore.open(tmp_path / "t", create=True)
    res = other.ingest(photos / "chain", model="resnet18", weights="none", layers=["layer4"], device="cpu",
                       amp="fp16")  # fmt: skip
    assert res.notes == ["autocast fp16 needs a CUDA device: running float32 on cpu"]
    assert plain.notes == []
    config = other.run_sql("SELECT config->>'amp', config->>'channels_last' FROM runs")[1]
    assert config == [("off", "true")], "channels-last is the default on CPU"
    assert store.run_sql("SELECT config->>'channels_last' FROM runs")[1] == [("false",)]
    for layer in ("layer4", "hidden"):
        a, b = _sorted(store, layer), _sorted(other, layer)
        assert a[0] == b[0]
        np.testing.assert_allclose(a[1], b[1], atol=1e-5, rtol=1e-5)  # channels-last: same values, other kernels


def test_engine_options_are_checked_before_any_work(tmp_path, photos):
    res = run_embstore("--store", tmp_path / "s", "ingest", "--images", photos, *MODEL, "--engine", "spark")
    assert res.returncode == 2 and "unknown engine 'spark'" in res.stderr and "Traceback" not in res.stderr
    res = run_embstore("--store", tmp_path / "s", "ingest", "--images", photos, *MODEL, "--cpus", "2")
    assert res.returncode == 2 and "--engine ray" in res.stderr
    res = run_embstore("--store", tmp_path / "s", "ingest", "--images", photos, *MODEL, "--amp", "fp8")
    assert res.returncode == 2 and "unknown amp 'fp8'" in res.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "nodes",
    [
        [{"CPU": 1.0}],
        [{"CPU": 2.0}],
        [{"CPU": 1.0}, {"CPU": 1.0}],
        [{"CPU": 3.0}, {"CPU": 16.0}],
        [{"CPU": 64.0}],
        [{"CPU": 8.0, "GPU": 1.0}],
        [{"CPU": 1.0, "GPU": 1.0}],
        [{"CPU": 2.0, "GPU": 4.0}, {"CPU": 4.0}],
    ],
)
def test_resource_plan_leaves_every_node_room_to_read(nodes):
    """The property that keeps a run from hanging: on every node the actors Ray may place there
    (as many as fit) still leave CPU for one read task."""
    from embstore.ingest.devices import GpuOptions
    from embstore.ingest.distributed import plan_resources

    plan = plan_resources(nodes, "auto", GpuOptions(amp="fp16"))
    assert plan["actors"] >= 1 and plan["read_cpus"] > 0
    placed = 0
    for r in nodes:
        if plan["num_gpus"]:
            fit = int(r.get("GPU", 0))
        else:
            fit = int(r.get("CPU", 0) // plan["num_cpus"]) if plan["num_cpus"] else 0
        fit = min(fit, plan["actors"] - placed)
        placed += fit
        left = r.get("CPU", 0) - fit * plan["num_cpus"]
        assert fit == 0 or left >= plan["read_cpus"] - 1e-9, (r, plan)
    assert placed == plan["actors"], plan  # every actor has a node
    assert plan["amp"] == ("fp16" if plan["num_gpus"] else "off")
    assert plan["channels_last"] == (not plan["num_gpus"]), "on by default for CPU actors only"
