"""The reductions beyond GAP (`NAME~max`, `~grid2x2`, `~srp1024`) against GAP of ReLU, on the same
CPU maps in one process: time of each as a ratio to GAP's, and their share of a resnet50 forward
pass of the same batch (the cost a user adds by asking for them).

    .venv/bin/python bench/reductions.py [--batch 16] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from embstore.ingest.extraction import reduce
from embstore.ingest.layers import LayerInfo

SHAPES = ((256, 56), (512, 28), (1024, 14), (2048, 7))  # resnet50's four stages at 224


def best(fn, rounds: int) -> float:
    fn()  # warm: the projection matrix is built once per layer
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from torchvision.models import resnet50

    net = resnet50(weights=None).eval()
    x = torch.randn(a.batch, 3, 224, 224)
    with torch.inference_mode():
        forward = best(lambda: net(x), max(2, a.rounds // 2))
    print(f"resnet50 forward, batch {a.batch}: {forward * 1000:.0f} ms")
    print(f"{'map':>14} {'reduction':>16} {'ms':>8} {'x GAP':>7} {'% fwd':>7}")
    for c, side in SHAPES:
        t = torch.randn(a.batch, c, side, side).contiguous(memory_format=torch.channels_last)
        gap = None
        ways = [("gap", "gap_relu", c), ("max", "max_relu", c), ("grid2x2", "grid_relu:2x2", 4 * c)]
        for how, reduction, width in ways + [("srp1024", "srp_relu:1024:0", 1024)]:
            layer = LayerInfo(f"x~{how}", 0, width, "conv", reduction, False)
            with torch.inference_mode():
                s = best(lambda layer=layer, t=t: reduce(t, layer), a.rounds)
            gap = gap or s  # the first: GAP
            print(f"{c:>5}x{side}x{side} {how:>16} {s * 1000:8.2f} {s / gap:7.2f} {100 * s / forward:6.1f}%")


if __name__ == "__main__":
    main()
