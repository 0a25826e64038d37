"""Commit overhead of ingest: the same 10 k tiny images at batch 32 through a small CNN (so the
forward pass is cheap and commits show), committed per forward batch (the old cadence), every 5 s
(the default) and once at the end (the least a run can commit). Ratios in one process.

    python bench/commits.py --images 10000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def tiny_net():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip


def main() -> None:
    import embstore

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="embstore-commits-"))
    rng = np.random.default_rng(0)
    imgs = root / "imgs"
    imgs.mkdir()
    for i in range(args.images):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(imgs / f"{i:06d}.png")
    pre = embstore.Preprocessing(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear")
    net = tiny_net()
    results: dict[str, list] = {}
    for _ in range(args.rounds):
        for label, seconds in (("per batch (0 s)", 0.0), ("every 5 s (default)", 5.0), ("once (∞)", 1e9)):
            path = root / "s"
            shutil.rmtree(path, ignore_errors=True)
            store = embstore.open(path, create=True)
            t = time.perf_counter()
            r = store.ingest(imgs, model=net, name="tiny", preprocessing=pre, batch_size=32, commit_seconds=seconds)
            wall = time.perf_counter() - t
            assert r.n_done == args.images and store.verify().ok
            results.setdefault(label, []).append((wall, r.write_s, r.commits))
    base = float(np.median([w for w, _, _ in results["once (∞)"]]))
    print(f"{args.images:,} images of 32 px, batch 32, tiny CNN (ratios against one commit at the end)")
    for label, runs in results.items():
        wall = float(np.median([w for w, _, _ in runs]))
        write = float(np.median([s for _, s, _ in runs]))
        print(
            f"  {label:22} {wall:7.1f} s  {runs[0][2]:5d} commits  time in commits {write:6.1f} s "
            f"({write / wall:5.1%} of the run, overlapped with forward)  run / one-commit run {wall / base:5.2f}"
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
