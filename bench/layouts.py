"""Contiguous vs channels-last memory layout for ingest's hooked forward pass on CPU, per model.

Ingest runs CNNs in the channels-last layout on CPU by default (embstore/ingest/devices.py). This
measures why, in one process: the same hooked forward pass (the chosen layers' GAP hooks plus the
logits, inside the allocator setting ingest uses) over the same random batch in both layouts,
alternating, best of `--rounds`; it also reports how far the stored vectors move between layouts.

    .venv/bin/python bench/layouts.py resnet50 densenet121 efficientnet_lite0 vit_b_16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from embstore.ingest import layers as layers_mod
from embstore.ingest import models, tuning
from embstore.ingest.extraction import Extractor
from embstore.ingest.layersets import select


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="forward passes per timing")
    args = ap.parse_args()
    print(f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, best of {args.rounds} alternating rounds")
    print(f"{'model':20} {'contiguous':>11} {'channels-last':>14}   ratio   vectors' max relative difference")
    torch.manual_seed(0)
    for name in args.models:
        weights = "DEFAULT" if name.startswith("efficientnet_lite") else "none"
        net, spec, _ = models.load(name, weights)
        net.eval()
        crop = spec.preprocessing.size
        chosen = select(layers_mod.discover(net, name, crop), "default", name)
        x = torch.randn(args.batch_size, 3, crop, crop)
        times: dict[bool, list[float]] = {False: [], True: []}
        vectors: dict[bool, dict] = {}
        with tuning.tensor_heap(True):
            for _ in range(args.rounds):
                for layout in (False, True):
                    ex = Extractor(net, chosen, channels_last=layout)
                    ex(x[:2])  # warm-up: oneDNN primitives, the heap
                    t = time.perf_counter()
                    for _ in range(args.repeats):
                        vectors[layout], _ = ex(x)
                    times[layout].append((time.perf_counter() - t) / (args.repeats * args.batch_size))
                    ex.close()
        diff = max(
            float(np.abs(vectors[False][k] - vectors[True][k]).max() / (np.abs(vectors[False][k]).max() + 1e-12))
            for k in vectors[False]
        )
        a, b = min(times[False]) * 1e3, min(times[True]) * 1e3
        print(f"{name:20} {a:8.2f} ms {b:11.2f} ms   {b / a:5.2f}   {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
