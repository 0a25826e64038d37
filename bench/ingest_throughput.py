"""Ingest throughput against a raw `model(x)` loop over the same batches, in one process.

The raw loop gets the already-preprocessed batches for free (no decoding, no hooks, no
writing); ingest does everything: read, hash, decode, preprocess, one hooked forward pass,
Parquet + catalog commits. Ratio = ingest images/s / raw images/s (target >= 0.95).

The raw loop runs three times per round: as a hand-written loop is (glibc's default allocator,
contiguous layout); inside `tuning.tensor_heap()`, the allocator setting ingest uses on CPU; and
inside it in the channels-last layout, ingest's default on CPU. The target ratio is against the
last (the same allocator and layout on both sides: what ingest itself costs); the others show
what those settings give users. `--contiguous` runs ingest in the contiguous layout instead and
compares it with the second. A fourth loop runs ingest's own hooked forward pass (`Extractor`,
pooling every stored layer) on the same batches: ingest / hooked is what decoding, commits and
the loop cost, hooked / raw what the pooling costs.

A run's wall time includes fixed costs that a raw loop leaves out and that vanish at scale (model
load, layer discovery, the last commit, compaction: ~1 s). Each round also ingests one batch into
a fresh store; "at scale" is the marginal rate, (images - one batch) over the time the full run
takes beyond that one-batch run: what a 50k-image ingest sustains.

`--threads N` sets torch's threads (default: all cores). With fewer threads than cores, ingest
decodes (by default in one process per free core) and commits on the cores torch leaves free,
overlapping the forward pass (the layout the issue's target assumes); with all cores, decoding
takes turns with the network. `--workers N` overrides the decode processes (0: a thread).

    .venv/bin/python bench/ingest_throughput.py --model efficientnet_lite0 --images 512
"""

from __future__ import annotations

import argparse
import functools
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from embstore.ingest import layers as layers_mod
from embstore.ingest import models, tuning
from embstore.ingest.extraction import Extractor
from embstore.ingest.images import Preprocess, read_rgb
from embstore.ingest.layersets import select
from embstore.ingest.run import ingest
from embstore.store.core import StoreCore


def make_photos(folder: Path, n: int, size: int = 320) -> list[Path]:
    """JPEGs with smooth structure (closer to photos than noise in decode cost)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        f = rng.uniform(1, 8, 3)
        arr = np.stack([np.sin(xx * f[c] * 6 + yy * f[(c + 1) % 3] * 4 + i) for c in range(3)], -1)
        arr = ((arr + 1) * 127.5 + rng.normal(0, 8, arr.shape)).clip(0, 255).astype(np.uint8)
        p = folder / f"photo_{i:05d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default=None, help="default: DEFAULT for efficientnet_lite*, else none")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="decode processes (default: ingest's own choice)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--contiguous", action="store_true", help="ingest without channels-last (against raw heap)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = args.weights or ("DEFAULT" if args.model.startswith("efficientnet_lite") else "none")
    tmp = Path(tempfile.mkdtemp(prefix="embstore-bench-"))
    paths = make_photos(tmp / "photos", args.images)

    net, spec, _ = models.load(args.model, weights)
    pre = Preprocess(spec.preprocessing)
    batches = [
        torch.stack([pre(read_rgb(str(p))[1]) for p in paths[i : i + args.batch_size]])
        for i in range(0, len(paths), args.batch_size)
    ]
    chosen = select(layers_mod.discover(net, args.model, spec.preprocessing.size), "default", args.model)
    n_layers = len(chosen)
    with torch.inference_mode():
        net(batches[0][:2])  # warm-up

    def raw_loop(heap: bool, channels_last: bool = False) -> float:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net.to(memory_format=fmt)
        inputs = [x.contiguous(memory_format=fmt) for x in batches]
        t = time.perf_counter()
        with torch.inference_mode(), tuning.tensor_heap(heap):
            for x in inputs:
                net(x)
        rate = args.images / (time.perf_counter() - t)
        net.to(memory_format=torch.contiguous_format)
        return rate

    def hooked_loop() -> float:
        """ingest's own forward pass (hooks pooling every stored layer, channels-last) on the same
        decoded batches: what is left between it and ingest is decoding, commits and the loop."""
        extractor = Extractor(net, chosen, channels_last=True)
        t = time.perf_counter()
        with tuning.tensor_heap(True):
            for x in batches:
                extractor(x)
        rate = args.images / (time.perf_counter() - t)
        extractor.close()
        return rate

    warm = StoreCore.open(tmp / "warm", create=True)
    ingest(warm, args.model, str(paths[0]), weights=weights, batch_size=2)  # warm-up, one image
    raw_rates, sys_rates, cl_rates, hooked_rates, ingest_rates, marginal_rates, runs = [], [], [], [], [], [], []
    for k in range(args.rounds):  # alternate, so machine noise hits every side alike
        sys_rates.append(raw_loop(heap=False))
        raw_rates.append(raw_loop(heap=True))
        cl_rates.append(raw_loop(heap=True, channels_last=True))
        if not args.contiguous:
            hooked_rates.append(hooked_loop())
        run = functools.partial(ingest, model=args.model, images=str(tmp / "photos"), weights=weights,
                                batch_size=args.batch_size, workers=args.workers,
                                channels_last=not args.contiguous)  # fmt: skip
        r = run(StoreCore.open(tmp / f"store{k}", create=True))
        assert r.n_done == args.images, r
        ingest_rates.append(r.n_done / r.seconds)
        runs.append(r)
        one = run(StoreCore.open(tmp / f"one{k}", create=True), limit=args.batch_size)  # the fixed costs, + a batch
        marginal_rates.append((r.n_done - one.n_done) / (r.seconds - one.seconds))
    same = raw_rates if args.contiguous else cl_rates  # the raw loop in ingest's own settings
    ratios = [i / r for i, r in zip(ingest_rates, same)]
    r = runs[int(np.argsort(ratios)[len(ratios) // 2])]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"model {spec.key}, {args.images} images ({paths[0].stat().st_size // 1024} KiB JPEG 320x320), "
        f"batch {args.batch_size}, decode workers {r.workers}, {n_layers} layers, "
        f"torch threads {torch.get_num_threads()}, {args.rounds} alternating rounds"
    )
    heap = "heap" if tuning.heap_available() else "heap (n/a)"
    layout = "contiguous" if args.contiguous else "channels-last"
    for label, rates in (("raw model(x), malloc", sys_rates), (f"raw model(x), {heap}", raw_rates),
                         (f"raw, {heap}, channels-last", cl_rates),
                         ("hooked forward (ingest's), same", hooked_rates),
                         (f"embstore ingest, {layout}", ingest_rates)):  # fmt: skip
        if not rates:
            continue
        print(f"{label:34}: {np.median(rates):8.2f} images/s median  {[round(v, 1) for v in rates]}")
    print(
        f"  median round    : load wait {r.load_s:.2f} s, forward {r.forward_s:.2f} s, commit {r.write_s:.2f} s "
        f"(decode and commits take turns with the forward unless a core is spare)"
    )
    fixed = [r.seconds - (r.n_done / m) for r, m in zip(runs, marginal_rates)]
    print(f"  fixed costs     : {np.median(fixed):.2f} s a run (model load, setup, last commit, compaction)")
    versus = "raw heap" if args.contiguous else "raw heap channels-last"
    print(f"ratio ingest/{versus:22}: {np.median(ratios):6.3f} median of {[round(v, 3) for v in ratios]}"
          "   (target >= 0.95: the same settings on both sides)")  # fmt: skip
    steady = [m / r for m, r in zip(marginal_rates, same)]
    print(f"ratio at scale (marginal)   : {np.median(steady):6.3f} median of {[round(v, 3) for v in steady]}"
          f"   ({args.images} - {args.batch_size} images / time beyond a one-batch run)")  # fmt: skip
    for label, base in (("hooked forward", hooked_rates), ("raw heap", raw_rates), ("raw malloc", sys_rates)):
        if not base:
            continue
        gains = [i / r for i, r in zip(ingest_rates, base)]
        print(f"ratio ingest/{label:22}: {np.median(gains):6.3f} median of {[round(v, 3) for v in gains]}")
    print(f"peak RSS                  : {peak:8.0f} MiB (whole process)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
