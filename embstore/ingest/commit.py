"""The writer of an ingest run: forward batches in, atomic commits of vectors and catalog rows out.

Whichever engine computed them (ingest/local.py, ingest/distributed.py), forward batches come here
through `Committer.consume`: gathered, then committed every few seconds with the activations
table's protocol (store/table.py) together with the images, predictions, errors and run counts
of the same catalog transaction. Up to `commit_bytes` of vectors may queue while a commit runs.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from embstore.errors import StoreError
from embstore.ingest import tuning
from embstore.ingest.extraction import Decoded, ForwardBatch
from embstore.ingest.labelling import LabelPlan
from embstore.store.catalog import Catalog
from embstore.store.table import ActivationTable, Part, new_batch_id

if TYPE_CHECKING:
    from embstore.ingest.options import IngestOptions
    from embstore.ingest.run import IngestResult
    from embstore.store.core import StoreCore


class Committer:
    """One run's writer: it takes the forward batches an engine computes (`consume`), gathers them
    and commits them together every `commit_seconds` (or `commit_bytes`), in order, each commit
    atomic. A kill therefore loses at most the uncommitted seconds, never part of a commit.

    The engine reads what to compute from it: `todo` (the images), `spec` and `chosen` (the layers).
    """

    def __init__(
        self,
        store: StoreCore,
        table: ActivationTable,
        spec,
        chosen,
        todo,
        result: IngestResult,
        options: IngestOptions,
        labels: LabelPlan,
    ):
        self.store, self.table, self.spec, self.chosen, self.todo = store, table, spec, chosen, todo
        self.labels = labels  # label_raw -> label set and index (ingest/labelling.py)
        self.result = result
        self.dtypes = {layer.name: options.dtype for layer in chosen}
        self.commit_seconds, self.commit_bytes = options.commit_seconds, options.commit_bytes
        self.seen: dict[str, tuple | None] = {}  # image ids stored by this run -> their (label set, index)
        self.gathered: list[ForwardBatch] = []
        self.gathered_bytes = 0
        self.last_commit = time.perf_counter()

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
        spec, run_id = self.spec, self.result.run_id
        ok = [d for batch in gathered for d in batch.ok]
        errors = [(f.source.path, f.error) for batch in gathered for f in batch.bad]
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
        ids = [d.image_id for d in ok]
        if ids:
            with self.store.read() as con:
                stored = Catalog(con).stored_layers(spec.key, ids)
                labels = Catalog(con).image_labels(ids)  # a stored image's label is its own, whatever names it now
        else:
            stored, labels = {}, {}
        groups: dict[tuple[str, ...], list[int]] = {}  # the layers an image still needs -> its rows
        new_images, duplicates = [], 0
        for row, d in enumerate(ok):
            iid = d.image_id
            f = self.labels.fields(d.source.label_raw)
            label: tuple | None = None if f["label_index"] is None else (f["label_set"], f["label_index"])
            known = self.seen.get(iid, labels.get(iid))
            if label is not None and known is not None and label != known:  # the same bytes, another label
                self.result.content_label_conflicts.append((d.source.path, label, known))
            missing = tuple(layer.name for layer in self.chosen if layer.name not in stored.get(iid, set()))
            if iid in self.seen or not missing:
                duplicates += 1
            else:
                self.seen[iid] = label
                new_images.append(row)
                groups.setdefault(missing, []).append(row)
        parts = [
            Part(new_batch_id(), [ok[r].image_id for r in rows], {name: vectors[name][rows] for name in layers})
            for layers, rows in groups.items()
        ]

        def record(cat: Catalog) -> None:
            if ok:
                cat.insert_images(_image_rows(ok, self.labels))
                cat.forget_errors([d.source.path for d in ok])  # it loads now
            if new_images and logits is not None:
                cat.insert_predictions(_prediction_rows(ok, new_images, logits, spec, run_id, labels, self.labels))
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


def _image_rows(ok: list[Decoded], plan: LabelPlan):
    import pyarrow as pa

    rows = []
    for d in ok:
        src, info = d.source, d.info
        rows.append(
            {
                "image_id": d.image_id,
                "path": src.path,
                "file_size": info["file_size"],
                "file_mtime": info["file_mtime"],
                "width": info["width"],
                "height": info["height"],
                "mode": info["mode"],
                "label_raw": src.label_raw,
                **plan.fields(src.label_raw),
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
            ("label_set", pa.string()),
            ("label_wnid", pa.string()),
            ("label_index", pa.int32()),
            ("label_name", pa.string()),
            ("source", pa.string()),
            ("extra", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _prediction_rows(ok: list[Decoded], rows, logits, spec, run_id, stored_labels: dict[str, tuple], plan: LabelPlan):
    """Top-5 and the true class's rank/probability of each new row; the true class is the stored
    image's label where the store has one (a folder without labels does not unlabel it), else the
    input's — where it is or maps to ImageNet classes (the head's) and the head has 1000 outputs."""
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
        iid = ok[r].image_id
        f = plan.fields(ok[r].source.label_raw)
        label = stored_labels.get(iid) or (None if f["label_index"] is None else (f["label_set"], f["label_index"]))
        # the ImageNet class(es) the label stands for: rank of the best-ranked one, their summed probability
        target = plan.imagenet_classes(label) if spec.num_classes == 1000 else []
        best = prob[k, target].max() if target else None
        out["model_key"].append(spec.key)
        out["image_id"].append(iid)
        out["top5_index"].append(top5[k].tolist())
        out["top5_prob"].append(prob[k, top5[k]].astype(np.float32).tolist())
        out["true_rank"].append(None if best is None else int((prob[k] > best).sum()) + 1)
        out["true_prob"].append(None if best is None else float(prob[k, target].sum()))
        out["run_id"].append(run_id)
    return pa.table(out)
