"""`engine="local"`: decoding and the network in this process (and its decode workers).

Where torch's threads use every core (on CPU) decoding (on all cores) and commits take turns with
the network instead of preempting it; elsewhere decoding runs ahead in `workers` processes (by
default one per core torch leaves free, devices.auto_workers) or, with workers=0, in a thread,
and forward batches go on while the committer commits. Same shape as the Ray engine
(ingest/distributed.py): `execute(work, net, progress)` hands every forward batch to
`work.consume` (ingest/commit.py).
"""

from __future__ import annotations

import functools
import os
import time
from typing import TYPE_CHECKING, Any

from embstore.ingest import tuning
from embstore.ingest.devices import channels_last_for, place, spare_cores
from embstore.ingest.extraction import Decoded, Failed, ForwardBatch
from embstore.ingest.images import Preprocess, decode_item

if TYPE_CHECKING:
    from embstore.ingest.commit import Committer
    from embstore.ingest.options import IngestOptions


class LocalEngine:
    """Runs one ingest's forward passes here, on the device `options` ask for (resolved now)."""

    def __init__(self, options: IngestOptions):
        self.options = options
        self.placement = place(options.device, amp=options.amp, channels_last=options.channels_last,
                               workers=options.workers)  # fmt: skip
        self.device: Any = self.placement.device  # a torch.device: where the network is loaded
        self.notes = list(self.placement.notes)
        self.workers = self.placement.workers

    def described(self) -> dict:
        """What ran, as the run records it."""
        gpu = self.placement.gpu
        return {"device": str(self.device), "workers": self.workers, "amp": gpu.amp,
                "channels_last": gpu.channels_last}  # fmt: skip

    def execute(self, work: Committer, net, progress) -> None:
        """Decode, forward on this engine's device (on CPU with freed tensor memory kept in the heap:
        tuning.py) and hand every batch to `work.consume`."""
        from torch.utils.data import DataLoader

        from embstore.ingest.extraction import Extractor

        opts, dev, gpu = self.options, self.device, self.placement.gpu
        images = _Images(work.todo, work.spec.preprocessing, opts.max_pixels)
        workers = self.workers = min(self.workers, -(-len(images) // opts.batch_size))  # no process without a batch
        loader: Any = DataLoader(
            images,  # type: ignore[arg-type]  # map-style: __len__ and __getitem__
            batch_size=opts.batch_size,
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
            batches = _in_turns(images, opts.batch_size)
        else:
            batches = _prefetch(loader)
        extractor = Extractor(
            net, work.chosen, amp=gpu.amp, channels_last=channels_last_for(gpu.channels_last, dev.type)
        )
        normalise = Preprocess(work.spec.preprocessing).normalise
        todo = work.todo

        def forward():
            t0 = time.perf_counter()
            for x, ok, bad in batches:
                t1 = time.perf_counter()
                # on CUDA the results are still on their way when the next batch starts: the writer waits for them
                pending = extractor.start(normalise(x.to(dev, non_blocking=True))) if x is not None else None
                t2 = time.perf_counter()
                yield ForwardBatch(
                    [Decoded(todo[b["i"]], b["image_id"], b["info"]) for b in ok],
                    [Failed(todo[b["i"]], b["error"]) for b in bad],
                    {},
                    None,
                    load_s=t1 - t0,
                    forward_s=t2 - t1,
                    pending=pending,
                )
                t0 = time.perf_counter()

        try:
            with tuning.tensor_heap(dev.type == "cpu"), tuning.prompt_handoff():
                work.consume(forward(), progress, overlap=not in_turns)
        finally:
            extractor.close()


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
    """(uint8 images stacked, decoded items without their pixels, failed items) of one batch."""
    import torch

    ok = [b for b in batch if "error" not in b]
    x = torch.stack([b["x"] for b in ok]) if ok else None
    for b in ok:
        del b["x"]
    return x, ok, [b for b in batch if "error" in b]


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
