"""`embstore ingest`: run a network over images and store every chosen layer's pooled vector.

Resumable and idempotent: what is already stored for the model, weights and layers is skipped.
This module is the run: its options checked (before torch loads), the model and layers chosen,
what is to do found, the run recorded, an engine (ingest/local.py, or Ray's, ingest/distributed.py)
computing the forward batches that the committer (ingest/commit.py) stores every few seconds, so
a killed run loses at most the uncommitted seconds and the next run carries on; a completed run
ends by compacting the table.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from embstore.errors import StoreError, UsageError
from embstore.ingest import classifier, models, pca
from embstore.ingest import layers as layers_mod
from embstore.ingest.commit import Committer
from embstore.ingest.extraction import capture_mode
from embstore.ingest.images import Discovery, ImageSource, discover
from embstore.ingest.labelling import IMAGENET, LabelPlan, default_set_name, plan_labels
from embstore.ingest.layersets import select
from embstore.ingest.options import IngestOptions
from embstore.store.catalog import Catalog
from embstore.store.table import ActivationTable, CompactReport

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

ENGINE_CLASSES = {"local": "embstore.ingest.local:LocalEngine", "ray": "embstore.ingest.distributed:RayEngine"}


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
    label_set: str | None = None  # where the input's labels went (ingest/labelling.py); None: no labels
    new_labels: int = 0  # labels this run added to label_set
    # (path, its label, the label the same bytes have), each (label set, index), for files whose content
    # is stored under another label
    content_label_conflicts: list[tuple[str, tuple, tuple]] = field(default_factory=list)
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
    store: StoreCore, model, images: str | None, options: IngestOptions | None = None, *, progress=None, **changes
) -> IngestResult:
    """Ingest `images` through `model` into `store` (what `embstore.Store.ingest` runs).

    `images`: a folder, a class-per-folder tree, or a CSV/Parquet manifest; None: every image
    already in the store (the way to add a model to an image set). `model` is a name from
    `embstore.list_models()` or any `torch.nn.Module` (with `name` and `preprocessing`; recorded
    with the hash of its weights). How it runs: `options` (an IngestOptions, documented there)
    with `changes` to its fields. `progress(done, total)` is called after each batch.

    >>> ingest(StoreCore.open("s", create=True), "efficientnet_lite0", "photos/")  # doctest: +SKIP
    IngestResult(run_id='…', model_key='efficientnet_lite0@tf-lite0', status='completed', …)
    """
    # every argument is checked before torch is imported (seconds), the cheapest first
    opts = IngestOptions.of(options, **changes).check()
    if not isinstance(model, str) and opts.weights != "DEFAULT":
        raise UsageError(
            "weights= is for a model name; a torch module brings its own weights (recorded as module-<sha12>)"
        )
    if isinstance(model, str):
        models.check_name(model)
        # unknown weights, a missing weights file, a bad preprocessing field
        described = models.describe(model, opts.weights).with_preprocessing(opts.preprocessing)
    found = discover(images, limit=opts.limit) if images is not None else _stored_images(store, opts.limit)
    problems = found.problems()  # recorded as errors of the run, never dropped
    with_labels = images is not None  # the store's own images keep the labels they have
    plan = _label_plan(store, found, opts, images) if with_labels else LabelPlan(None)
    usable = [i for i in found.images if not i.problem]
    layers = opts.layer_request()
    if isinstance(model, str) and (known := layers_mod.cached(model, described.preprocessing.size)) is not None:
        # an unknown layer name, or a PCA layer without its basis, from the cached description of the network
        pca.resolve(store, described.key, select(known, layers, model, described.preprocessing.size))
    store.check_writable_now()  # a busy store is refused before torch and the network load (seconds)
    engine = _engine(opts)  # checks what it needs (Ray's import, the device)
    if isinstance(model, str):
        net, spec, sha = models.load(model, opts.weights)
        spec = spec.with_preprocessing(opts.preprocessing)
        provenance = models.provenance_note(model, opts.weights, spec)
    else:
        net, spec, sha = models.from_module(model, opts.name, opts.preprocessing)  # type: ignore[arg-type]  # checked there
        provenance = None
    was_training = net.training
    net.eval()  # a module the caller passed gets its own mode back at the end
    all_layers = layers_mod.discover(net, spec.name, spec.preprocessing.size)
    if isinstance(model, str):
        layers_mod.remember(model, spec.preprocessing.size, all_layers)
    chosen = pca.resolve(store, spec.key, select(all_layers, layers, spec.name, spec.preprocessing.size))
    if opts.engine == "ray" and any(l.reduction.startswith("pca_relu:") for l in chosen):
        raise UsageError("NAME~pcaK layers run on the local engine only (the Ray actors do not load PCA bases)")
    names = [layer.name for layer in chosen]
    net.to(engine.device)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    result = IngestResult(
        run_id,
        spec.key,
        "running",
        names,
        n_images=len(found.images),
        n_ignored=found.ignored,
        device=engine.described()["device"],
        dtype=opts.dtype,
        notes=list(engine.notes) + ([provenance] if provenance else []),
    )
    if found.conflicts:
        path, kept, dropped = found.conflicts[0]
        result.notes.append(
            f"{len(found.conflicts)} image(s) are listed twice with different labels; the first label is used "
            f"(e.g. {path}: {kept!r}, not {dropped!r})"
        )
    config = {
        "model": spec.name,
        "weights": opts.weights if isinstance(model, str) else spec.weights,
        "layers": names,
        "layer_request": opts.layer_request(),
        "capture": capture_mode(chosen),  # hooks | fx (ingest/extraction.py)
        "images": str(images) if images is not None else "(the store's images)",
        "batch_size": opts.batch_size,
        **engine.described(),  # device, workers, amp, channels_last: as the engine will run them
        "engine": opts.engine if opts.address is None else f"{opts.engine} {opts.address}",
        "limit": opts.limit,
        "max_pixels": opts.max_pixels,
        "dtype": opts.dtype,
        "commit_seconds": opts.commit_seconds,
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
            cat.upsert_layers(spec.key, chosen, opts.dtype)
            todo, skipped = _pending(cat, spec.key, names, usable)
            if with_labels:  # planned again under the lock: the indices of new labels are this writer's
                plan = _label_plan(store, found, opts, images, cat)
                if plan.label_set is not None and plan.label_set != IMAGENET:
                    cat.add_labels(plan.label_set, plan.new, plan.new_classes)
                result.label_set, result.new_labels = plan.label_set, len(plan.new)
                result.notes += plan.notes
            plan.class_map = cat.label_class_map()  # stored images keep their labels: any set's may be ranked
            cat.start_run(run_id, spec.key, config, len(found.images))
            cat.add_run_counts(run_id, n_skipped=len(skipped), n_errors=len(problems))
            cat.insert_errors(run_id, problems)
            if with_labels:
                _labels_given(cat, usable, run_id, opts.relabel, result, plan)
        result.n_errors, result.errors = len(problems), list(problems)
        if stale:
            result.recovered.append(f"marked {stale} unfinished earlier run(s) interrupted")
        result.n_skipped = len(skipped)
        started = time.perf_counter()
        message = None
        try:
            work = Committer(store, table, spec, chosen, todo, result, opts, plan)
            engine.execute(work, net, progress)
            described = engine.described()  # what ran, now that it has run
            config.update(described)
            result.device, result.workers = described["device"], described["workers"]
            result.notes += [n for n in engine.notes if n not in result.notes]
            if result.content_label_conflicts:
                result.notes.append(_content_conflict_note(result.content_label_conflicts))
            if opts.compact and result.n_done:
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


def _engine(opts: IngestOptions):
    """The engine `opts.engine` names: both have `device` (where this process loads the network),
    `notes`, `described()` (what runs) and `execute(committer, net, progress)`."""
    module, name = ENGINE_CLASSES[opts.engine].split(":")
    return getattr(importlib.import_module(module), name)(opts)


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


def _labels_given(cat: Catalog, images: list[ImageSource], run_id: str, relabel: bool, result, plan: LabelPlan) -> None:
    """Stored images the input labels otherwise: relabelled (history kept) or reported, never dropped."""
    import pyarrow as pa

    labelled = [i for i in images if i.label_raw is not None]
    given = pa.table({"path": [i.path for i in labelled], "label_raw": [i.label_raw for i in labelled],
                      "label_set": pa.array([plan.label_set] * len(labelled), pa.string())})  # fmt: skip
    changes = cat.label_changes(given) if given.num_rows else []
    if not changes:
        return
    first = changes[0]
    example = f"e.g. {first[1]}: {first[2]!r} → {first[3]!r}"
    if relabel:
        rows = [{"image_id": c[0], "label_raw": c[3], **plan.fields(c[3])} for c in changes]
        result.n_relabelled = cat.relabel(pa.Table.from_pylist(rows), run_id)
        result.notes.append(f"relabelled {len(changes)} stored image(s) ({example}); old labels kept in label_history")
    else:
        result.n_label_conflicts = len(changes)
        result.notes.append(
            f"{len(changes)} stored image(s) have another label in the input ({example}); "
            "kept the stored labels: pass --relabel to update them"
        )


def _content_conflict_note(conflicts: list[tuple[str, tuple, tuple]]) -> str:
    from embstore.labels.imagenet import classes

    def text(label: tuple) -> str:
        label_set, index = label
        return classes()[index].name if label_set == IMAGENET else f"label {index} of set {label_set}"

    path, given, known = conflicts[0]
    return (
        f"{len(conflicts)} file(s) hold the same bytes as an image stored under another label; an image has "
        f"one label, so the first one stays (e.g. {path}: {text(given)}, stored as {text(known)})"
    )


def _label_plan(
    store: StoreCore, found: Discovery, opts: IngestOptions, images, cat: Catalog | None = None
) -> LabelPlan:
    """The label set and indices of the input's labels (ingest/labelling.py), against the store's sets."""
    counts: dict[str, int] = {}
    details: dict[str, tuple[str | None, str | None]] = {}
    for img in found.images:
        if img.label_raw is None or img.problem:
            continue
        counts[img.label_raw] = counts.get(img.label_raw, 0) + 1
        ident, category = img.extra.get("label_id"), img.extra.get("category")
        details.setdefault(
            img.label_raw, (None if ident is None else str(ident), None if category is None else str(category))
        )
    if cat is not None:
        known = cat.custom_label_names()
    elif counts and store.catalog_path.exists():
        with store.read() as con:
            known = Catalog(con).custom_label_names()
    else:
        known = {}
    return plan_labels(counts, opts.label_set, known, default_set_name(images), details)


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
