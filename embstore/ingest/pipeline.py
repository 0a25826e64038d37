"""`embstore ingest`: run a network over images and store every chosen layer's pooled vector.

Resumable and idempotent: what is already stored for the model, weights and layers is skipped.
Forward batches are gathered and committed every few seconds (`commit_seconds`, or sooner past
`commit_bytes`) with the activations table's protocol (store/table.py), so a killed run loses at
most the uncommitted seconds and the next run carries on; commits cost the same whatever the
forward batch size. A completed run ends by compacting the table.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from embstore.errors import StoreError, UsageError
from embstore.ingest import classifier, models, tuning
from embstore.ingest import layers as layers_mod
from embstore.ingest.devices import (
    GpuOptions,
    Placement,
    channels_last_for,
    check_amp,
    check_placement,
    place,
    resolve_device,
    spare_cores,
)
from embstore.ingest.extraction import ForwardBatch, capture_mode
from embstore.ingest.images import DEFAULT_MAX_PIXELS, Discovery, ImageSource, Preprocess, decode_item, discover
from embstore.ingest.layersets import select
from embstore.spec import Preprocessing
from embstore.store.catalog import Catalog
from embstore.store.encoding import check_dtype
from embstore.store.table import ActivationTable, CompactReport, Part, new_batch_id

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

COMMIT_SECONDS = 5.0
COMMIT_BYTES = 256 << 20
ENGINES = ("local", "ray")


@dataclass
class IngestResult:
    run_id: str
    model_key: str
    status: str
    layers: list[str]
    n_images: int = 0
    n_done: int = 0
    n_skipped: int = 0
    n_errors: int = 0
    n_duplicates: int = 0
    n_ignored: int = 0
    n_relabelled: int = 0  # stored images given the input's new label (relabel=True)
    n_label_conflicts: int = 0  # stored images whose input names another label, left as they were
    unmatched_labels: dict[str, int] = field(default_factory=dict)  # labels naming no class -> images
    # (path, its label, the label the same bytes have) for files whose content is stored under another label
    content_label_conflicts: list[tuple[str, int, int]] = field(default_factory=list)
    seconds: float = 0.0
    load_s: float = 0.0
    forward_s: float = 0.0
    write_s: float = 0.0
    peak_rss_mb: float = 0.0
    device: str = "cpu"
    workers: int = 0  # decode processes used (0: decoded in this process)
    commits: int = 0
    dtype: str = "float32"
    errors: list[tuple[str, str]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what ran otherwise than asked (GPU options off CUDA)
    compaction: CompactReport | None = None

    @property
    def images_per_s(self) -> float:
        return self.n_done / self.seconds if self.seconds else 0.0


def ingest(
    store: StoreCore,
    model,
    images: str | None,
    *,
    weights: str = "DEFAULT",
    layers: str | list[str] = "blocks",
    batch_size: int = 32,
    device: str = "auto",
    workers: int | None = None,
    limit: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    preprocessing: Preprocessing | str | dict | None = None,
    progress=None,
    dtype: str = "float32",
    commit_seconds: float = COMMIT_SECONDS,
    commit_bytes: int = COMMIT_BYTES,
    compact: bool = True,
    amp: str = "off",
    channels_last: bool | None = None,
    engine: str = "local",
    address: str | None = None,
    cpus: int | None = None,
    relabel: bool = False,
) -> IngestResult:
    """Ingest `images` through `model` into `store` (what `embstore.Store.ingest` runs).

    `images`: a folder, a class-per-folder tree, or a CSV/Parquet manifest; None: every image
    already in the store (the way to add a model to an image set). Resumable: what is stored is
    skipped. `model` is a name from `embstore.list_models()` or any `torch.nn.Module`; a module
    needs `name` and `preprocessing`, and is recorded with the hash of its weights. `layers`: named
    sets (blocks, relu, act, conv, seed003, seed004, all), graph node names and Keras names
    (ingest/layersets.py). `preprocessing` for a named model: a preset ("keras-caffe", "keras-tf",
    "keras-torch", "squash"), a Preprocessing, or {field: value} changes to the model's own; the
    model key then names it (`resnet50@IMAGENET1K_V1~keras-caffe`). `progress(done, total)` is
    called after each batch. `dtype` int8 stores ~0.3 × the float32 bytes (per-vector scale and
    offset; readers still get float32); commits happen every `commit_seconds` or `commit_bytes` of
    vectors, whichever first; a completed run ends with a compaction unless `compact=False`.
    `amp` (fp16 | bf16) autocasts the forward pass and `channels_last` changes the memory layout
    (both recorded with the run; amp falls back to float32 off CUDA, with a note; channels-last is
    on by default on CPU, where it runs CNNs 1.2-2 × faster: devices.py). `workers` decode
    processes (default on CPU: one per core torch's threads leave free, and where they use every
    core, threads taking turns with the network; on CUDA up to 8).
    A stored image whose input now names another label is reported in `result.notes`, and with
    `relabel` updated (the old label kept in `label_history`).

    `engine="ray"` runs decoding and the network on a Ray Data cluster (`address`, default a local
    one with `cpus` CPUs): decode tasks feed a pool of model actors (one GPU each where there are
    GPUs) and this process, the catalog's single writer, commits what they return.

    >>> ingest(StoreCore.open("s", create=True), "efficientnet_lite0", "photos/")  # doctest: +SKIP
    IngestResult(run_id='…', model_key='efficientnet_lite0@tf-lite0', status='completed', …)
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, not {batch_size}")
    if engine not in ENGINES:
        raise UsageError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)} (`engine=`)")
    if engine == "local" and (address is not None or cpus is not None):
        raise UsageError("`address=` and `cpus=` are options of the ray engine; add `engine='ray'`")
    check_dtype(dtype)
    if not isinstance(model, str) and weights != "DEFAULT":
        raise UsageError(
            "weights= is for a model name; a torch module brings its own weights (recorded as module-<sha12>)"
        )
    # every argument is checked before torch is imported (seconds), the cheapest first
    check_placement(device, amp, workers)
    if isinstance(model, str):
        models.check_name(model)
        # unknown weights, a missing weights file, a bad preprocessing field
        described = models.describe(model, weights).with_preprocessing(preprocessing)
    found = discover(images, limit=limit) if images is not None else _stored_images(store, limit)
    problems = found.problems()  # recorded as errors of the run, never dropped
    usable = [i for i in found.images if not i.problem]
    if isinstance(model, str) and (known := layers_mod.cached(model, described.preprocessing.size)) is not None:
        select(known, layers, model)  # an unknown layer name, from the cached description of the network
    store.check_writable_now()  # a busy store is refused before torch and the network load (seconds)
    if engine == "ray":
        from embstore.ingest.distributed import RayEngine

        ray_engine = RayEngine(address=address, cpus=cpus, device=device)  # checks that ray imports
        check_amp(amp)  # the actors decide what runs; this process only loads the model
        placement = Placement(resolve_device("cpu"), GpuOptions(amp, channels_last), workers=0)
    else:
        placement = place(device, amp=amp, channels_last=channels_last, workers=workers)
    dev = placement.device
    if isinstance(model, str):
        net, spec, sha = models.load(model, weights)
        spec = spec.with_preprocessing(preprocessing)
        provenance = models.provenance_note(model, weights, spec)
    else:
        net, spec, sha = models.from_module(model, name, preprocessing)  # type: ignore[arg-type]  # checked there
        provenance = None
    was_training = net.training
    net.eval()  # a module the caller passed gets its own mode back at the end
    all_layers = layers_mod.discover(net, spec.name, spec.preprocessing.size)
    if isinstance(model, str):
        layers_mod.remember(model, spec.preprocessing.size, all_layers)
    chosen = select(all_layers, layers, spec.name)
    names = [layer.name for layer in chosen]
    net.to(dev)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    result = IngestResult(
        run_id,
        spec.key,
        "running",
        names,
        n_images=len(found.images),
        n_ignored=found.ignored,
        device=str(dev) if engine == "local" else "ray",
        dtype=dtype,
        notes=list(placement.notes) + ([provenance] if provenance else []),
        unmatched_labels=found.unmatched_labels(),
    )
    if result.unmatched_labels:
        result.notes.append(_unmatched_note(result.unmatched_labels))
    if found.conflicts:
        path, kept, dropped = found.conflicts[0]
        result.notes.append(
            f"{len(found.conflicts)} image(s) are listed twice with different labels; the first label is used "
            f"(e.g. {path}: {kept!r}, not {dropped!r})"
        )
    config = {
        "model": spec.name,
        "weights": weights if isinstance(model, str) else spec.weights,
        "layers": names,
        "layer_request": layers if isinstance(layers, str) or layers is None else list(layers),
        "capture": capture_mode(chosen),  # hooks | fx (ingest/extraction.py)
        "images": str(images) if images is not None else "(the store's images)",
        "batch_size": batch_size,
        "device": str(dev) if engine == "local" else device,
        "workers": placement.workers,
        "amp": placement.gpu.amp,
        "channels_last": placement.gpu.channels_last,  # the ray engine's actors decide: set below
        "engine": engine if address is None else f"{engine} {address}",
        "limit": limit,
        "max_pixels": max_pixels,
        "dtype": dtype,
        "commit_seconds": commit_seconds,
        "preprocessing": spec.as_row(),
    }
    table = ActivationTable(store)
    with store.writer_lock():
        result.recovered = table.reconcile()
        with store.transaction() as con:
            cat = Catalog(con)
            stale = cat.mark_stale_runs()
            known_sha = cat.model_sha(spec.key)
            if known_sha is not None and known_sha != sha:
                raise StoreError(
                    f"{spec.key} in this store was ingested with other weights (sha256 {known_sha[:12]}…, now "
                    f"{sha[:12]}…); use another store, or `weights=FILE` to keep them apart"
                )
            cat.upsert_model(spec, sha)
            classifier.save(store, spec.key, net)
            cat.check_layer_identity(spec.key, chosen)
            cat.upsert_layers(spec.key, chosen, dtype)
            todo, skipped = _pending(cat, spec.key, names, usable)
            cat.start_run(run_id, spec.key, config, len(found.images))
            cat.add_run_counts(run_id, n_skipped=len(skipped), n_errors=len(problems))
            cat.insert_errors(run_id, problems)
            _labels_given(cat, usable, run_id, relabel, result)
        result.n_errors, result.errors = len(problems), list(problems)
        if stale:
            result.recovered.append(f"marked {stale} unfinished earlier run(s) interrupted")
        result.n_skipped = len(skipped)
        started = time.perf_counter()
        message = None
        try:
            run = _Run(store, table, spec, chosen, todo, result)
            run.dtypes = {name: dtype for name in names}
            run.commit_seconds, run.commit_bytes = commit_seconds, commit_bytes
            if engine == "ray":
                ray_engine.execute(run, net, batch_size=batch_size, max_pixels=max_pixels, gpu=placement.gpu)
                result.device = config["device"] = ray_engine.device_used
                config["amp"] = ray_engine.amp_used
                config["channels_last"] = ray_engine.channels_last_used
                result.notes += ray_engine.notes
            else:
                run.execute(
                    net,
                    dev,
                    batch_size=batch_size,
                    workers=placement.workers,
                    max_pixels=max_pixels,
                    gpu=placement.gpu,
                    progress=progress,
                )
                config["workers"] = result.workers = run.workers
            if result.content_label_conflicts:
                result.notes.append(_content_conflict_note(result.content_label_conflicts))
            if compact and result.n_done:
                result.compaction = table.compact()
            result.status = "completed"
            attempted = len(todo) + len(problems)
            if attempted and not result.n_done and result.n_errors == attempted:
                result.status = "failed"  # nothing stored: every image failed (the errors say why)
                message = f"all {attempted} image(s) failed to load; nothing was stored (see ingest_errors)"
        except KeyboardInterrupt:
            result.status, message = "interrupted", "interrupted by the user"
            raise
        except BaseException as exc:
            result.status, message = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            result.seconds = time.perf_counter() - started
            result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            net.train(was_training)
            _finish_run(store, run_id, result.status, message, config, failing=sys.exc_info()[1])
    return result


def _finish_run(store: StoreCore, run_id: str, status: str, message, config: dict, *, failing) -> None:
    """Record the run's end. Where that fails too (a full disk), the error that stopped the run is the
    one told; after a run that went well, one line says what was kept. The run's row stays `running`
    either way, and the next writer marks it interrupted (everything committed stays)."""
    try:
        with store.write() as con:
            Catalog(con).finish_run(run_id, status, message, config)
    except StoreError as exc:
        if failing is None:
            raise StoreError(
                f"run {run_id} stored its vectors (every commit is kept) but its end could not be recorded: {exc}"
            ) from exc


def _labels_given(cat: Catalog, images: list[ImageSource], run_id: str, relabel: bool, result) -> None:
    """Stored images the input labels otherwise: relabelled (history kept) or reported, never dropped."""
    import pyarrow as pa

    given = pa.table({"path": [i.path for i in images if i.label_raw is not None],
                      "label_raw": [i.label_raw for i in images if i.label_raw is not None]})  # fmt: skip
    changes = cat.label_changes(given) if given.num_rows else []
    if not changes:
        return
    first = changes[0]
    example = f"e.g. {first[1]}: {first[2]!r} → {first[3]!r}"
    if relabel:
        rows = [{"image_id": c[0], "label_raw": c[3], **ImageSource(c[1], c[3], "").label()} for c in changes]
        result.n_relabelled = cat.relabel(pa.Table.from_pylist(rows), run_id)
        result.notes.append(f"relabelled {len(changes)} stored image(s) ({example}); old labels kept in label_history")
    else:
        result.n_label_conflicts = len(changes)
        result.notes.append(
            f"{len(changes)} stored image(s) have another label in the input ({example}); "
            "kept the stored labels: pass --relabel to update them"
        )


def _content_conflict_note(conflicts: list[tuple[str, int, int]]) -> str:
    from embstore.labels.imagenet import classes

    path, given, known = conflicts[0]
    return (
        f"{len(conflicts)} file(s) hold the same bytes as an image stored under another label; an image has "
        f"one label, so the first one stays (e.g. {path}: {classes()[given].name}, stored as "
        f"{classes()[known].name})"
    )


def _unmatched_note(unmatched: dict[str, int]) -> str:
    """'2 labels name no ImageNet class …' with the nearest class names of the most common ones."""
    from embstore.labels.imagenet import classes

    worst = sorted(unmatched.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = "; ".join(f"'{label}' ({n} image{'s' if n != 1 else ''}).{classes().nearest(label, 3)}".rstrip(".")
                      for label, n in worst[:5])  # fmt: skip
    more = f"; and {len(worst) - 5} more" if len(worst) > 5 else ""
    return (
        f"{len(worst)} label(s) name no ImageNet class, so {sum(unmatched.values())} image(s) are stored "
        f"unlabelled (the label kept as label_raw): {shown}{more}"
    )


def _stored_images(store: StoreCore, limit: int | None) -> Discovery:
    """Every image the store already holds (by path), for running another model over them."""
    if store.catalog_path.exists():
        with store.read() as con:
            rows = Catalog(con).image_sources()
    else:
        rows = []
    if not rows:
        raise UsageError(
            f"the store at {store.path} holds no images yet; give the images to ingest with `images=DIR` "
            "(a folder, a class-per-folder tree, or a CSV/Parquet manifest)"
        )
    images = [
        ImageSource(path, label, source, json.loads(extra) if extra else {}) for path, label, source, extra in rows
    ]
    return Discovery(images[:limit] if limit else images, 0)


def _pending(cat: Catalog, model_key: str, names: list[str], images) -> tuple[list, list]:
    """Split candidates into (to do, already stored) using path + size + mtime, then image ids."""
    import pyarrow as pa

    known = cat.known_paths(pa.table({"path": [i.path for i in images]}))
    complete = cat.complete_images(model_key, names)
    todo, skipped = [], []
    for img in images:
        hit = known.get(img.path)
        if hit and hit[0] in complete:
            try:
                st = os.stat(img.path)
            except OSError:
                todo.append(img)  # let the loader record why it is gone
                continue
            if st.st_size == hit[1] and abs(st.st_mtime - hit[2]) < 1e-6:
                skipped.append(img)
                continue
        todo.append(img)
    return todo, skipped


class _Images:
    """Map-style dataset: one decoded, preprocessed image or the reason it failed."""

    def __init__(self, items, pre, max_pixels: int):
        self.items = items
        self.preprocess = Preprocess(pre)
        self.max_pixels = max_pixels

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):  # uint8: normalised a batch at a time by the forward loop (on the device)
        return decode_item(i, self.items[i].path, self.preprocess, self.max_pixels, normalise=False)


def _collate(batch):
    import torch

    ok = [b for b in batch if "error" not in b]
    x = torch.stack([b["x"] for b in ok]) if ok else None
    for b in ok:
        del b["x"]
    return x, ok, [b for b in batch if "error" in b]


class _Run:
    """One run's batches: decode, forward, and commit. Where torch's threads use every core (on
    CPU) decoding (on all cores) and commits take turns with the network instead of preempting
    it; elsewhere decoding runs ahead in `workers` processes (by default one per core torch
    leaves free, devices.auto_workers) or, with workers=0, in a thread, and forward batches go on
    while the writer commits (`consume`).

    The writer (a thread, or the forward loop itself between batches) gathers forward batches
    and commits them together every `commit_seconds` (or `commit_bytes`), in order, each
    commit atomic. A kill therefore loses at most the uncommitted seconds, never part of a commit.
    """

    dtypes: dict[str, str]
    commit_seconds: float = COMMIT_SECONDS
    commit_bytes: int = COMMIT_BYTES

    def __init__(self, store: StoreCore, table: ActivationTable, spec, chosen, todo, result: IngestResult):
        self.store, self.table, self.spec, self.chosen, self.todo = store, table, spec, chosen, todo
        self.result = result
        self.dtypes = {}
        self.seen: dict[str, int | None] = {}  # image ids stored by this run -> their label index
        self.gathered: list[ForwardBatch] = []
        self.gathered_bytes = 0
        self.last_commit = time.perf_counter()
        self.workers = 0  # decode processes that ran

    def execute(self, net, dev, *, batch_size: int, workers: int, max_pixels: int, gpu: GpuOptions, progress) -> None:
        """Decode, forward on `dev` (on CPU with freed tensor memory kept in the heap: tuning.py) and commit."""
        from torch.utils.data import DataLoader

        from embstore.ingest.extraction import Extractor

        images = _Images(self.todo, self.spec.preprocessing, max_pixels)
        workers = self.workers = min(workers, -(-len(images) // batch_size))  # no process without a batch
        loader: Any = DataLoader(
            images,  # type: ignore[arg-type]  # map-style: __len__ and __getitem__
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=dev.type == "cuda",  # page-locked batches: the copy below overlaps the forward pass
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
            worker_init_fn=functools.partial(tuning.decode_worker, parent=os.getpid()) if workers else None,
        )
        in_turns = not workers and dev.type == "cpu" and not spare_cores()
        if workers:
            batches = loader
        elif in_turns:  # decoding and committing take turns with the network (measured: 2-4 % faster)
            batches = _in_turns(images, batch_size)
        else:
            batches = _prefetch(loader)
        extractor = Extractor(
            net, self.chosen, amp=gpu.amp, channels_last=channels_last_for(gpu.channels_last, dev.type)
        )
        normalise = Preprocess(self.spec.preprocessing).normalise

        def forward():
            t0 = time.perf_counter()
            for x, ok, bad in batches:
                t1 = time.perf_counter()
                # on CUDA the results are still on their way when the next batch starts: the writer waits for them
                pending = extractor.start(normalise(x.to(dev, non_blocking=True))) if x is not None else None
                t2 = time.perf_counter()
                yield ForwardBatch(ok, bad, {}, None, load_s=t1 - t0, forward_s=t2 - t1, pending=pending)
                t0 = time.perf_counter()

        try:
            with tuning.tensor_heap(dev.type == "cpu"), tuning.prompt_handoff():
                self.consume(forward(), progress, overlap=not in_turns)
        finally:
            extractor.close()

    def consume(self, batches, progress, *, overlap: bool = True) -> None:
        """Hand each forward batch to one writer thread (which gathers and commits) while the next
        ones are computed, or with `overlap` False gather and commit between forward batches; the
        last gathered batches are committed at the end.

        Up to `commit_bytes` of vectors may wait for the writer while it commits: on a GPU a forward
        batch takes milliseconds and a commit up to a second, and a network that waited for each
        commit ran at a fifth of its speed (H100, README). The writer's failure stops the loop at
        the next batch, and nothing queued after it is committed."""
        import collections
        from concurrent.futures import ThreadPoolExecutor

        total = len(self.todo)
        if progress:
            progress(0, total)
        queued: collections.deque = collections.deque()  # (future of take, bytes of its vectors)
        waiting = 0
        writer = ThreadPoolExecutor(1, "embstore-commit", tuning.background) if overlap else _InTurns()
        try:
            for batch in batches:
                self.result.load_s += batch.load_s
                self.result.forward_s += batch.forward_s
                nbytes = batch.nbytes
                queued.append((writer.submit(self.take, batch), nbytes))
                waiting += nbytes
                while queued and (queued[0][0].done() or waiting > self.commit_bytes):
                    done, n = queued.popleft()
                    waiting -= n
                    _wait(done, progress, total)
            while queued:
                _wait(queued.popleft()[0], progress, total)
            writer.submit(self.commit).result()
        except BaseException:
            writer.shutdown(wait=True, cancel_futures=True)  # a take already running finishes its commit
            raise
        writer.shutdown(wait=True)

    def take(self, batch: ForwardBatch) -> int:
        """Gather one forward batch; commit what is gathered once it is due. Returns the images it covered."""
        self.gathered.append(batch.ready())
        self.gathered_bytes += batch.nbytes
        due = time.perf_counter() - self.last_commit >= self.commit_seconds or self.gathered_bytes >= self.commit_bytes
        if due:
            self.commit()
        return len(batch.ok) + len(batch.bad)

    def commit(self) -> None:
        """Commit the gathered batches: their new vectors as batches of the activations table, with
        images, predictions, errors and run counts in the same catalog transaction."""
        import numpy as np

        gathered, self.gathered, self.gathered_bytes = self.gathered, [], 0
        self.last_commit = time.perf_counter()
        if not gathered:
            return
        t0 = time.perf_counter()
        spec, todo, run_id = self.spec, self.todo, self.result.run_id
        ok = [b for batch in gathered for b in batch.ok]
        errors = [(todo[b["i"]].path, b["error"]) for batch in gathered for b in batch.bad]
        vectors = {
            layer.name: np.concatenate([b.vectors[layer.name] for b in gathered if b.ok]) for layer in self.chosen if ok
        }
        for layer in self.chosen:
            if layer.name in vectors and vectors[layer.name].shape[1] != layer.channels:
                raise StoreError(
                    f"layer {layer.name} of {spec.key} gave {vectors[layer.name].shape[1]}-wide vectors where the "
                    f"catalog records {layer.channels} channels; nothing of this batch was stored (a bug: please "
                    "report it with the model and layer)"
                )
        given = [b.logits for b in gathered if b.ok and b.logits is not None]
        logits = np.concatenate(given) if given else None
        ids = [b["image_id"] for b in ok]
        if ids:
            with self.store.read() as con:
                stored = Catalog(con).stored_layers(spec.key, ids)
                labels = Catalog(con).image_labels(ids)  # a stored image's label is its own, whatever names it now
        else:
            stored, labels = {}, {}
        groups: dict[tuple[str, ...], list[int]] = {}  # the layers an image still needs -> its rows
        new_images, duplicates = [], 0
        for row, b in enumerate(ok):
            iid = b["image_id"]
            given = todo[b["i"]].label()["label_index"]
            known = self.seen.get(iid, labels.get(iid))
            if given is not None and known is not None and given != known:  # the same bytes, another label
                self.result.content_label_conflicts.append((todo[b["i"]].path, given, known))
            missing = tuple(layer.name for layer in self.chosen if layer.name not in stored.get(iid, set()))
            if iid in self.seen or not missing:
                duplicates += 1
            else:
                self.seen[iid] = given
                new_images.append(row)
                groups.setdefault(missing, []).append(row)
        parts = [
            Part(new_batch_id(), [ok[r]["image_id"] for r in rows], {name: vectors[name][rows] for name in layers})
            for layers, rows in groups.items()
        ]

        def record(cat: Catalog) -> None:
            if ok:
                cat.insert_images(_image_rows(todo, ok))
                cat.forget_errors([todo[b["i"]].path for b in ok])  # it loads now
            if new_images and logits is not None:
                cat.insert_predictions(_prediction_rows(todo, ok, new_images, logits, spec, run_id, labels))
            cat.insert_errors(run_id, errors)
            cat.add_run_counts(
                run_id,
                n_done=len(new_images),
                n_errors=len(errors),
                n_duplicates=duplicates,
                load_s=sum(b.load_s for b in gathered),
                forward_s=sum(b.forward_s for b in gathered),
                write_s=time.perf_counter() - t0,
            )

        self.table.commit(spec, run_id, parts, self.dtypes, record)
        r = self.result
        r.commits += 1
        r.n_done += len(new_images)
        r.n_errors += len(errors)
        r.n_duplicates += duplicates
        r.errors += errors
        r.write_s += time.perf_counter() - t0


class _InTurns:
    """An executor that runs what it is given at once, in the calling thread."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass

    def submit(self, fn, *args):
        from concurrent.futures import Future

        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)
        return done


def _wait(pending, progress, total) -> None:
    if pending is None:
        return
    n = pending.result()  # re-raises what the commit raised
    if progress:
        progress(n, total)


def _prefetch(iterable, depth: int = 2):
    """Iterate `iterable` in a background thread, `depth` items ahead (PIL decoding drops the GIL)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def fill():
        tuning.background()
        try:
            for item in iterable:
                q.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)
        q.put(done)

    threading.Thread(target=fill, name="embstore-decode", daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def _in_turns(dataset: _Images, batch_size: int):
    """Decode each batch when the forward loop asks for it, on as many threads as torch computes
    with: the decoding and the network take turns at all the cores instead of preempting each
    other (PIL drops the GIL while it decodes and resizes)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    with ThreadPoolExecutor(max(1, torch.get_num_threads()), "embstore-decode") as pool:
        for start in range(0, len(dataset), batch_size):
            rows = range(start, min(start + batch_size, len(dataset)))
            with tuning.outside_heap():  # a huge image's buffer is returned, not kept for tensors
                batch = _collate(list(pool.map(dataset.__getitem__, rows)))
            yield batch


def _image_rows(todo, ok):
    import pyarrow as pa

    rows = []
    for b in ok:
        src = todo[b["i"]]
        info = b["info"]
        rows.append(
            {
                "image_id": b["image_id"],
                "path": src.path,
                "file_size": info["file_size"],
                "file_mtime": info["file_mtime"],
                "width": info["width"],
                "height": info["height"],
                "mode": info["mode"],
                "label_raw": src.label_raw,
                **src.label(),
                "source": src.source,
                "extra": json.dumps(src.extra) if src.extra else None,
            }
        )
    schema = pa.schema(
        [
            ("image_id", pa.string()),
            ("path", pa.string()),
            ("file_size", pa.int64()),
            ("file_mtime", pa.float64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("mode", pa.string()),
            ("label_raw", pa.string()),
            ("label_wnid", pa.string()),
            ("label_index", pa.int32()),
            ("label_name", pa.string()),
            ("source", pa.string()),
            ("extra", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _prediction_rows(todo, ok, rows, logits, spec, run_id, stored_labels: dict[str, int]):
    """Top-5 and the true class's rank/probability of each new row; the true class is the stored
    image's label where the store has one (a folder without labels does not unlabel it), else the input's."""
    import numpy as np
    import pyarrow as pa

    z = logits[rows].astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    top5 = np.argsort(-prob, axis=1, kind="stable")[:, :5]
    out: dict[str, list] = {
        "model_key": [],
        "image_id": [],
        "top5_index": [],
        "top5_prob": [],
        "true_rank": [],
        "true_prob": [],
        "run_id": [],
    }
    for k, r in enumerate(rows):
        iid = ok[r]["image_id"]
        label = stored_labels.get(iid, todo[ok[r]["i"]].label()["label_index"]) if spec.num_classes == 1000 else None
        out["model_key"].append(spec.key)
        out["image_id"].append(ok[r]["image_id"])
        out["top5_index"].append(top5[k].tolist())
        out["top5_prob"].append(prob[k, top5[k]].astype(np.float32).tolist())
        out["true_rank"].append(None if label is None else int((prob[k] > prob[k, label]).sum()) + 1)
        out["true_prob"].append(None if label is None else float(prob[k, label]))
        out["run_id"].append(run_id)
    return pa.table(out)
