"""`ingest(engine="ray")`: decoding and the network on a Ray Data cluster; commits stay here.

    read tasks: image files -> decoded, resized and cropped uint8 tensors (Ray Data tasks)
    model actors: normalise, then pooled vectors + logits (a pool, one GPU each where there are GPUs)
    this process: gathers the actors' output and commits it with the activations table's protocol

This process stays the catalog's and the table's single writer, so the store is the one a
single-process ingest makes (same ids, same predictions, vectors equal to float rounding) and
resume, repair and the crash guarantees are unchanged: workers write nothing, a killed worker's
batch is retried by Ray (actors restart) or, if the run fails, stored by the next run.

Resources leave room for reading: on CPU nodes an actor asks for 3/4 of a node's CPUs and the
read tasks share the last quarter, one task per 2 cores, so reads always find a CPU (an actor pool
holding every CPU starves the reads and hangs) and do not preempt the actor's threads (more decode
processes than that cost ~7 % on 2 cores). On GPU clusters each actor asks for one GPU and up to
one CPU, and each read task for up to one CPU (`plan_resources`).

A local cluster (no `address`) is this command's own: every process Ray starts carries a marker
in its environment, and everything carrying it is killed when the command ends, on Ctrl-C, and
by a small watchdog process when this one is killed (Ray's workers can outlive `ray.shutdown()`
and a killed driver). A cluster at `address` is left running; Ray ends the job's actors.

This process can end without running a line of Python: Ray's core worker exits the process when
its raylet dies (a Ray system process killed, or out of memory), as a SIGKILL would. The watchdog
then speaks for it: it ends the cluster, marks the run interrupted (what the next writer would do)
and writes the one `embstore:` line to this process's stderr (`watch`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from embstore.errors import EmbstoreError, EngineError, MissingDependencyError, UsageError
from embstore.ingest.devices import GpuOptions, channels_last_for, check_amp, check_device, resolve_device
from embstore.ingest.extraction import Decoded, Failed, ForwardBatch

if TYPE_CHECKING:
    from embstore.ingest.commit import Committer
    from embstore.ingest.options import IngestOptions

OWNER_ENV = "EMBSTORE_RAY_OWNER"
READ_SHARE = 0.25  # of a node's CPUs: what its actors leave to the read tasks
THREADS_PER_ACTOR = 8  # a CPU node with more cores gets more actors rather than wider ones


class RayEngine:
    """Runs one ingest's forward passes on Ray Data (see the module docstring)."""

    def __init__(self, options: IngestOptions):
        address, cpus, device = options.address, options.cpus, options.device
        check_device(device)
        check_amp(options.amp)  # the actors decide what runs; this process only loads the model
        if cpus is not None and cpus < 1:
            raise UsageError(f"cpus must be at least 1, not {cpus} (`cpus=`)")
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is not None and cpus is not None:
            raise UsageError(f"cpus sizes a local cluster; the cluster at {address} has its own (drop `cpus=`)")
        if address is None:
            # under `uv run` (any ancestor) Ray would start its workers through `uv run` with this
            # folder uploaded as their working dir: they never register and the run hangs. A local
            # cluster's workers belong in this very interpreter. Read when ray is first imported.
            os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        try:
            import ray  # noqa: F401
            import ray.data  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(
                "engine 'ray' needs Ray Data: pip install 'embstore[ray]' (or 'ray[data]')"
            ) from exc
        self.options, self.address, self.cpus = options, address, cpus
        self.gpu = GpuOptions(options.amp, options.channels_last)  # as asked: a plan decides (`_plan`)
        self.device = resolve_device("cpu")  # where this process loads the network (to ship it)
        self.notes: list[str] = []
        self.device_used = device
        self.amp_used = options.amp
        self.channels_last_used: bool | None = options.channels_last  # as asked until a plan decides

    def described(self) -> dict:
        """What runs (once executed: what ran), as the run records it."""
        return {"device": self.device_used, "workers": 0, "amp": self.amp_used,
                "channels_last": self.channels_last_used}  # fmt: skip

    def execute(self, work: Committer, net, progress) -> None:
        """Compute every image of `work.todo` on the cluster and hand each batch to `work.consume`
        (Ray Data shows its own progress: `progress` is not called)."""
        if not work.todo:
            return
        with _cluster(self.address, self.cpus, run={"store": str(work.store.path), "run_id": work.result.run_id}):
            plan = self._plan(self.gpu)
            work.consume(self._batches(work, net, plan, self.options.batch_size, self.options.max_pixels), None)

    def _plan(self, gpu) -> dict:
        import ray

        plan = plan_resources([n["Resources"] for n in ray.nodes() if n.get("Alive")], self.device, gpu)
        self.device_used, self.amp_used = plan.pop("described"), plan["amp"]
        self.channels_last_used = plan["channels_last"]
        if gpu.amp != plan["amp"]:
            self.notes.append(f"autocast {gpu.amp} needs CUDA actors: running float32 on CPU")
        return plan

    def _batches(self, work: Committer, net, plan: dict, batch_size: int, max_pixels: int):
        import ray

        spec, chosen = work.spec, work.chosen
        items = [{"i": i, "path": str(img.path)} for i, img in enumerate(work.todo)]
        blocks = max(1, min(len(items) // batch_size + 1, 10_000))
        ds: Any = ray.data.from_items(items, override_num_blocks=blocks)  # Ray's stubs lag its API
        ds = ds.map_batches(
            decode_batch,
            fn_kwargs={"pre": spec.preprocessing, "max_pixels": max_pixels},
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=plan["read_cpus"],
        )
        ds = ds.map_batches(
            ForwardActor,
            fn_constructor_kwargs={
                "net": [ray.put(net.cpu())],  # in a list: the actors fetch it once, by reference
                "layers": chosen,
                "classes": spec.num_classes,
                "plan": plan,
                "pre": spec.preprocessing,
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
            num_cpus=plan["num_cpus"],
            num_gpus=plan["num_gpus"],
        )
        names = [layer.name for layer in chosen]
        try:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                yield _forward_batch(out, names, work.todo)
        except EmbstoreError:
            raise
        except Exception as exc:  # RayError, and what a dead system process (GCS, dashboard agent) raises
            text = " ".join(str(exc).split())[:300]
            kind = "" if isinstance(exc, ray.exceptions.RayError) else f"{type(exc).__name__}: "
            raise EngineError(f"the Ray cluster lost work it could not retry: {kind}{text}") from exc


def plan_resources(nodes: list[dict], device: str, gpu) -> dict:
    """Actors, their CPUs/GPUs/threads and each read task's CPUs for a cluster whose nodes have the
    given Ray resources ({"CPU": …, "GPU": …}); every node fits its actors AND a read task.

    >>> from embstore.ingest.devices import GpuOptions
    >>> p = plan_resources([{"CPU": 2.0}], "auto", GpuOptions())
    >>> p["actors"], p["num_cpus"], p["read_cpus"], p["threads"]
    (1, 1.5, 0.5, 2)
    """
    gpus = int(sum(r.get("GPU", 0) for r in nodes))
    if device == "cuda" and gpus < 1:
        raise UsageError("device 'cuda' asked for, but the Ray cluster has no GPU; use device 'cpu' or 'auto'")
    if gpus and device != "cpu":
        # a GPU actor needs up to one CPU to feed it; the other CPUs decode, one read task each
        # (on a node with few CPUs per GPU, half of them each way, so reads always fit)
        gpu_nodes = [r for r in nodes if r.get("GPU", 0) > 0]
        per_gpu = min(r.get("CPU", 0) / r["GPU"] for r in gpu_nodes)
        fewest = min(r.get("CPU", 0) for r in gpu_nodes)
        if fewest <= 0:
            raise EngineError("the Ray cluster's GPU nodes have no CPUs to decode with")
        return {"actors": gpus, "num_cpus": min(1.0, per_gpu / 2), "num_gpus": 1, "threads": 1,
                "read_cpus": min(1.0, fewest / 2), "device": "cuda", "amp": gpu.amp,
                "channels_last": channels_last_for(gpu.channels_last, "cuda"),
                "described": f"ray: {gpus} GPU actor(s)"}  # fmt: skip
    per_node = [r.get("CPU", 0) for r in nodes if r.get("CPU", 0) > 0]
    if not per_node:
        raise EngineError("the Ray cluster has no CPUs to run on")
    smallest = min(per_node)
    threads = max(1, min(int(smallest), THREADS_PER_ACTOR))
    actors_per_node = max(1, int(smallest) // threads)
    actors = actors_per_node * len(per_node)
    return {
        "actors": actors,
        "num_cpus": smallest * (1 - READ_SHARE) / actors_per_node,
        "num_gpus": 0,
        "threads": threads,
        # one read task per 2 cores: more decode processes than that preempt the actor's threads
        "read_cpus": smallest * READ_SHARE / max(1, int(smallest) // 2),
        "device": "cpu",
        "amp": "off",
        "channels_last": channels_last_for(gpu.channels_last, "cpu"),
        "described": f"ray: {actors} CPU actor(s) on {len(per_node)} node(s)",
    }


def decode_batch(batch: dict, pre, max_pixels: int) -> dict:
    """Ray read task: decode, resize and crop a batch of paths (failures become rows with an error).
    It runs at the lowest CPU priority, so a model actor on the same node keeps its cores, and
    never imports torch: a read worker starts in ~0.2 s instead of ~4 and holds ~600 MiB less."""
    from embstore.ingest import tuning
    from embstore.ingest.images import Preprocess, decode_item

    tuning.background()

    preprocess = Preprocess(pre)
    rows = [decode_item(int(i), str(p), preprocess, max_pixels, array=True)
            for i, p in zip(batch["i"], batch["path"])]  # fmt: skip
    shape = next((tuple(r["x"].shape) for r in rows if "x" in r), (3, pre.size, pre.size))
    x = np.zeros((len(rows), *shape), np.uint8)  # normalised by the actor: 1/4 of the bytes to ship
    for k, r in enumerate(rows):
        if "x" in r:
            x[k] = r["x"]
    return {
        "i": np.array([r["i"] for r in rows], np.int64),
        "image_id": np.array([r.get("image_id", "") for r in rows], object),
        "info": np.array([json.dumps(r.get("info", {})) for r in rows], object),
        "error": np.array([r.get("error", "") for r in rows], object),
        "x": x,
    }


class ForwardActor:
    """Ray actor: the network with its hooks, built once; each call runs one batch forward."""

    def __init__(self, net, layers, classes: int, plan: dict, pre):
        import ray
        import torch

        from embstore.ingest import tuning
        from embstore.ingest.extraction import Extractor
        from embstore.ingest.images import Preprocess

        torch.set_num_threads(plan["threads"])
        self.dev = torch.device(plan["device"])
        if self.dev.type == "cpu":  # this process only computes: its tensors' memory stays in the heap
            tuning.keep_heap_for_process()
        tuning.prompt_handoff_for_process()  # Ray's own threads run Python beside the forward pass
        model = ray.get(net[0]).to(self.dev).eval()
        self.extractor = Extractor(model, layers, amp=plan["amp"], channels_last=plan["channels_last"])
        self.widths = {layer.name: layer.channels for layer in layers}
        self.classes = classes
        self.preprocess = Preprocess(pre)

    def __call__(self, batch: dict) -> dict:
        import torch

        t0 = time.perf_counter()
        ok = batch["error"] == ""
        n = len(ok)
        out = {key: batch[key] for key in ("i", "image_id", "info", "error")}
        vectors, logits = {}, None
        if ok.any():
            x = torch.from_numpy(np.ascontiguousarray(batch["x"][ok]))
            if self.dev.type == "cuda":  # uint8 over the bus, normalised on the GPU
                x = x.pin_memory().to(self.dev, non_blocking=True)
            vectors, logits = self.extractor(self.preprocess.normalise(x))
        for k, (name, width) in enumerate(self.widths.items()):
            full = np.zeros((n, width), np.float32)
            if name in vectors:
                full[ok] = vectors[name]
            out[f"v{k}"] = full
        if self.extractor.has_classifier:
            full = np.zeros((n, self.classes), np.float32)
            if logits is not None:
                full[ok] = logits
            out["logits"] = full
        out["forward_s"] = np.full(n, (time.perf_counter() - t0) / max(n, 1))
        return out


def _forward_batch(out: dict, names: list[str], todo) -> ForwardBatch:
    """A forward batch of the actors' output, each row joined to its source in `todo` (by "i")."""
    ok_mask = np.array([e == "" for e in out["error"]], bool)
    ok, bad = [], []
    for k in range(len(ok_mask)):
        source = todo[int(out["i"][k])]
        if ok_mask[k]:
            ok.append(Decoded(source, str(out["image_id"][k]), json.loads(out["info"][k])))
        else:
            bad.append(Failed(source, str(out["error"][k])))
    vectors = {name: np.ascontiguousarray(out[f"v{k}"][ok_mask]) for k, name in enumerate(names)}
    logits = np.ascontiguousarray(out["logits"][ok_mask]) if "logits" in out else None
    return ForwardBatch(ok, bad, vectors, logits, load_s=0.0, forward_s=float(out["forward_s"].sum()))


# -- the cluster's lifetime ------------------------------------------------------------------------
@contextlib.contextmanager
def _cluster(address: str | None, cpus: int | None, run: dict):
    """Connect to `address`, or start a local cluster owned by this command (and end it after).
    `run` ({"store": path, "run_id": id}) is what the watchdog closes if this process dies."""
    import ray

    if ray.is_initialized():  # the caller's own session (a notebook): use it and leave it running
        yield
        return
    owner = None if address is not None else uuid.uuid4().hex
    if owner is not None:
        os.environ[OWNER_ENV] = owner  # inherited by every process the local cluster starts
    watchdog = _start_watchdog(owner, run)
    try:
        try:
            ray.init(
                address=address or "local",  # "local": a new cluster, even when another runs on this machine
                num_cpus=None if address is not None else (cpus or os.cpu_count() or 1),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            text = " ".join(str(exc).split())[:300]
            where = f" at {address}" if address else ""
            raise EngineError(f"cannot start or reach the Ray cluster{where}: {text}") from exc
        with _ray_data_console_quiet():
            yield
    finally:
        try:
            ray.shutdown()
        finally:
            if owner is not None:
                os.environ.pop(OWNER_ENV, None)
                kill_owned(owner)
            _release_watchdog(watchdog)


@contextlib.contextmanager
def _ray_data_console_quiet():
    """Ray Data's console lines off while the run lasts (a progress report every 10 s where stderr is
    no terminal, a failure's stack trace before this command's one line); its log file keeps them all."""
    handlers = [h for h in logging.getLogger("ray.data").handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]  # fmt: skip
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for h, level in zip(handlers, levels):
            h.setLevel(level)


def _start_watchdog(owner: str | None, run: dict):
    """A process that outlives this one (see `watch`); the pipe to its stdin is not inherited by
    Ray's processes, so its end closes exactly when this process ends."""
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    code = "import sys; from embstore.ingest.distributed import watch; watch(sys.argv[1])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, owner or ""],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=None,  # this process's stderr: where its last line goes if this process cannot write it
        env=env,
        start_new_session=True,  # a Ctrl-C to the terminal's group must not end it before the cleanup
    )
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(run) + "\n").encode())
    proc.stdin.flush()
    return proc


def _release_watchdog(proc) -> None:
    """This process ends the run itself: tell the watchdog so, and let it go."""
    with contextlib.suppress(OSError):  # BrokenPipeError: it is gone already
        proc.stdin.write(b"done\n")
        proc.stdin.flush()
    with contextlib.suppress(OSError):
        proc.stdin.close()  # it wakes, finds nothing left, and exits
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def watch(owner: str) -> None:
    """The watchdog: wait for the driver's end of stdin to close. Without a `done` line first, the
    driver died without a word (SIGKILL, or Ray's core worker exiting it when its raylet died):
    end the local cluster's processes, mark the run interrupted and say so on the driver's stderr."""
    lines = sys.stdin.read().splitlines()
    if owner:
        kill_owned(owner)
    if not lines or lines[-1] == "done":
        return
    run = json.loads(lines[0])
    sys.stderr.write(f"embstore: {_close_abandoned_run(run['store'], run['run_id'])}\n")
    sys.stderr.flush()


def _close_abandoned_run(path: str, run_id: str) -> str:
    """Mark `run_id` interrupted (if it is still `running`) and say what happened, in one line."""
    from embstore.store.catalog import Catalog
    from embstore.store.core import StoreCore

    said = (
        "the ingest process ended abruptly (it was killed, or a Ray system process died and Ray ended it); "
        "everything it committed is kept"
    )
    try:
        store = StoreCore.open(path, wait=30.0)
        with store.writer_lock(), store.write() as con:
            marked = Catalog(con).interrupt_run(run_id, "the ingest process ended abruptly (killed, or Ray ended it)")
    except EmbstoreError as exc:  # another writer took the store first: it marks the run itself
        return f"{said}; run {run_id} is left to the next writer to mark interrupted ({exc})"
    state = "is marked interrupted" if marked else "was already closed"
    return f"{said}; run {run_id} {state}: run the same ingest again to store the rest"


def owned_processes(owner: str | None = None) -> list[int]:
    """Pids of processes whose environment carries the marker (of `owner`, or of any owner)."""
    want = f"{OWNER_ENV}={owner}".encode() if owner else f"{OWNER_ENV}=".encode()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:  # gone, or another user's
            continue
        if any(v == want if owner else v.startswith(want) for v in env):
            found.append(int(entry))
    return found


def kill_owned(owner: str, grace: float = 3.0) -> int:
    """End every process carrying `owner`'s marker: SIGTERM, then SIGKILL after `grace` seconds."""
    pids = owned_processes(owner)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False
