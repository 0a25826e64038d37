"""Whole-process wall time of `embstore query similar knot --k 9` on a 10k-image store,
against `python -c "import duckdb, faiss"` in the same run (target: <= 0.5 s and <= 2x).

The store is synthetic (1000 classes x 10 images, four conv layers + hidden, written through
the real commit path), so no network runs. The first query materialises per-class statistics
(reported as 'cold'); later ones read them and check their fingerprint.

    .venv/bin/python bench/query_latency.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from embstore import testing as synthetic
from embstore.store.store import Store

EMBSTORE = str(Path(sys.executable).parent / "embstore")


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(rounds: int = 7) -> None:
    root = Path(tempfile.mkdtemp(prefix="embstore-qbench-"))
    store = Store.open(root / "store", create=True)
    t = time.perf_counter()
    synthetic.populate(
        store,
        n_classes=1000,
        per_class=10,
        layers={"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512, "hidden": 1280},
    )
    build = time.perf_counter() - t
    query = [EMBSTORE, "--store", str(store.path), "query", "similar", "knot", "--k", "9"]
    images = [EMBSTORE, "--store", str(store.path), "query", "images", "00000000000000000042", "--k", "10"]
    baseline = [sys.executable, "-c", "import duckdb, faiss"]
    cold = wall(query)
    cold_images = wall(images)
    base, warm, warm_images = [], [], []
    for _ in range(rounds):  # interleaved, so machine noise hits all three alike
        base.append(wall(baseline))
        warm.append(wall(query))
        warm_images.append(wall(images))
    b, q, qi = statistics.median(base), statistics.median(warm), statistics.median(warm_images)
    print(f"store: 10,000 images x 5 layers (64..1280 channels), built in {build:.1f} s")
    print(f"python -c 'import duckdb, faiss'     : {b:.3f} s median of {rounds}")
    print(
        f"embstore query similar knot --k 9    : {q:.3f} s median (cold first call {cold:.3f} s)  "
        f"ratio {q / b:.2f}x  (targets <= 0.5 s, <= 2x)"
    )
    print(
        f"embstore query images <id> --k 10    : {qi:.3f} s median (cold first call, builds index, "
        f"{cold_images:.3f} s)  ratio {qi / b:.2f}x"
    )


if __name__ == "__main__":
    main()
