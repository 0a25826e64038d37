"""Ingest engines on the same images, as ratios measured in one process:

1. single-process ingest vs `--engine ray` on one node with the same CPUs (target ≥ 0.9 ×);
   the cluster is started before the clock (its start, ~5-20 s, is printed apart: it is paid
   once per command, not per image), the actors' start and the model's shipping are inside it.
   Every configuration runs twice, on the first half of the images and on all of them: besides
   the whole run's rate, the *marginal* rate (the second half's images over the extra seconds)
   is the throughput with the fixed costs (process starts, imports, model load) taken out;
2. Ray on two simulated nodes of 1 CPU each vs one node of 1 CPU (`ray.cluster_utils.Cluster`;
   target ≥ 1.7 ×);
3. with --raw: `ingest` vs the bare `model(x)` loop over the same preprocessed batches on the
   chosen device (with --amp on CUDA: target ≥ 0.9 ×).

  python bench/engines.py --images 512 --model resnet18
  python bench/engines.py --images 512 --model resnet50 --device cuda --amp fp16 --raw --skip ray,nodes
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((rng.random((160, 200, 3)) * 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def timed_ingest(root: Path, images: Path, args, **kw) -> tuple[float, float, object]:
    """(seconds for all images, marginal images/s, result): a run on half the images, then on all."""
    import embstore

    walls = []
    for n in (args.batch_size, args.images // 2, args.images):  # the first, untimed, pays one-off costs
        path = root / "store"
        shutil.rmtree(path, ignore_errors=True)
        store = embstore.open(path, create=True)
        t = time.perf_counter()
        r = store.ingest(images, model=args.model, weights="none", batch_size=args.batch_size, compact=False,
                         limit=n, **kw)  # fmt: skip
        walls.append(time.perf_counter() - t)
        assert r.n_done == n, (r.n_done, r.status)
    return walls[2], (args.images - args.images // 2) / (walls[2] - walls[1]), r


def raw_forward(images: Path, args) -> float:
    """Seconds of the bare `model(x)` loop over the same batches, preprocessed and moved to the device up front."""
    import torch

    from embstore.ingest import models
    from embstore.ingest.devices import autocast_dtype, channels_last_for
    from embstore.ingest.images import Preprocess, read_rgb

    net, spec, _ = models.load(args.model, "none")
    dev = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    net.to(dev).eval()
    channels_last = channels_last_for(args.channels_last, dev.type)  # as ingest decides
    if channels_last:
        net.to(memory_format=torch.channels_last)
    pre = Preprocess(spec.preprocessing)
    xs = torch.stack([pre(read_rgb(str(p))[1]) for p in sorted(images.iterdir())])
    # on the device and in the layout before the clock: the loop times model(x) alone
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batches = [xs[i : i + args.batch_size].to(dev).contiguous(memory_format=memory_format)
               for i in range(0, len(xs), args.batch_size)]  # fmt: skip
    dtype = autocast_dtype(args.amp) if dev.type == "cuda" else None
    autocast = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for x in batches[:3]:  # warm-up (cuDNN autotune, allocator), in the timed loop's precision
            net(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for x in batches:
            net(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t


def main() -> None:
    import os

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # as the engine does (see distributed.py)
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="off")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                    help="default: ingest's own choice (on for CPU)")  # fmt: skip
    ap.add_argument("--workers", type=int, default=None, help="decode processes (default: ingest's own choice)")
    ap.add_argument("--raw", action="store_true", help="also time the bare model(x) loop")
    ap.add_argument("--skip", default="", help="comma-separated: ray, nodes")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    root = Path(tempfile.mkdtemp(prefix="embstore-engines-"))
    images = root / "imgs"
    make_images(images, args.images)
    rate = lambda wall: args.images / wall  # noqa: E731
    print(f"{args.images} images (200×160 JPEG), {args.model} weights none, batch {args.batch_size}")

    wall, local_m, r = timed_ingest(
        root, images, args, device=args.device, amp=args.amp, channels_last=args.channels_last, workers=args.workers
    )
    local = rate(wall)
    print(f"  single-process ingest ({r.device}, amp {args.amp}, {r.workers} decode workers): {wall:6.1f} s  "
          f"{local:7.1f} img/s (marginal {local_m:5.1f})   1.00 ×")  # fmt: skip
    print(f"    of which waiting for decoded batches {r.load_s:.2f} s, forward {r.forward_s:.2f} s, "
          f"commits {r.write_s:.2f} s ({r.commits}, overlapping the forward pass)")  # fmt: skip
    for note in r.notes:
        print(f"    note: {note}")
    if args.raw:
        raw = rate(raw_forward(images, args))
        print(f"  bare model(x), same batches:       {args.images / raw:6.1f} s  {raw:7.1f} img/s"
              f"   ingest / raw = {local / raw:.2f} × whole run, {local_m / raw:.2f} × marginal")  # fmt: skip

    if "ray" not in skip:
        import os

        import ray

        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        start = time.perf_counter() - t
        try:
            wall, ray_m, r = timed_ingest(root, images, args, engine="ray", device=args.device, amp=args.amp,
                                          channels_last=args.channels_last)  # fmt: skip
        finally:
            ray.shutdown()
        print(f"  ray, one node of {os.cpu_count()} CPUs ({r.device}): {wall:6.1f} s  {rate(wall):7.1f} img/s"
              f" (marginal {ray_m:5.1f})   {rate(wall) / local:.2f} × single-process, marginal "
              f"{ray_m / local_m:.2f} ×   (cluster start {start:.1f} s, not counted)")  # fmt: skip

    if "nodes" not in skip:
        from ray.cluster_utils import Cluster

        walls, marginal = {}, {}
        for n_nodes in (1, 2):
            # cluster_utils gives a node a 150 MiB object store by default: real nodes have GBs, and
            # with 150 MiB Ray Data's budget stalls the read tasks
            node = {"num_cpus": 1, "object_store_memory": 1 << 30}
            cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
            for _ in range(n_nodes - 1):
                cluster.add_node(**node)
            cluster.wait_for_nodes()
            import ray

            ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
            try:
                walls[n_nodes], marginal[n_nodes], r = timed_ingest(root, images, args, engine="ray", device="cpu",
                                                                    channels_last=args.channels_last)  # fmt: skip
            finally:
                ray.shutdown()
                cluster.shutdown()
            print(f"  ray, {n_nodes} node(s) of 1 CPU ({r.device}): {walls[n_nodes]:6.1f} s  "
                  f"{rate(walls[n_nodes]):7.1f} img/s (marginal {marginal[n_nodes]:5.1f})")  # fmt: skip
        print(f"  scaling, 2 nodes / 1 node: {walls[1] / walls[2]:.2f} × whole run, "
              f"{marginal[2] / marginal[1]:.2f} × marginal")  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
