"""GAP of ReLU over a channels-last map on CPU: ingest's cascade sum vs a product with ones.

Ingest pools channels-last maps of `PER_IMAGE_ELEMENTS` or more an image at a time
(embstore/ingest/extraction.py `_gap_relu_of_rows`): each image's ReLU map in a scratch, summed
over its pixel rows. This compares, in one process on the same maps, that sum with the
(1 × N) · (N × C) product with ones it replaced, and with torch's batch-wide `relu(x).mean`: time
as a ratio against the product, and each one's largest relative error against float64 numpy.

    .venv/bin/python bench/gap_reduce.py [--threads N] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from embstore.ingest.extraction import _gap_relu_of_rows

SHAPES = ((64, 112), (256, 56), (512, 28), (1024, 14), (64, 48))  # channels, side


def by_product(rows):
    n_images, n_rows, channels = rows.shape
    out = torch.empty(n_images, channels)
    scratch = torch.empty(n_rows, channels)
    ones = torch.ones(1, n_rows)
    for i in range(n_images):
        torch.clamp_min(rows[i], 0, out=scratch)
        torch.mm(ones, scratch, out=out[i : i + 1])
    return out.div_(n_rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, best of {args.rounds}")
    for channels, side in SHAPES:
        x = torch.randn(args.batch_size, channels, side, side, generator=gen).add_(0.3)
        x = x.contiguous(memory_format=torch.channels_last)
        rows = x.permute(0, 2, 3, 1).reshape(args.batch_size, -1, channels)
        ref = np.maximum(x.numpy().astype(np.float64), 0).mean(axis=(2, 3))
        ways = {
            "ones product": (by_product, rows),
            "cascade sum (ingest)": (_gap_relu_of_rows, rows),
            "relu(x).mean batch": (lambda t: torch.relu(t).mean(dim=(2, 3)), x),
        }
        best, error = {}, {}
        for _ in range(args.rounds):  # alternate, so machine noise hits every side alike
            for name, (way, arg) in ways.items():
                t = time.perf_counter()
                got = way(arg)
                best[name] = min(best.get(name, np.inf), time.perf_counter() - t)
                error[name] = float(np.max(np.abs(got.numpy() - ref) / np.abs(ref)))
        base = best["ones product"]
        cells = "  ".join(f"{name} {best[name] / base:5.2f}× err {error[name]:.1e}" for name in ways)
        print(f"{channels:5}×{side:<3}  product {base * 1e3:6.2f} ms  |  {cells}")


if __name__ == "__main__":
    main()
