"""Read-path speed on a 10k-image store, as ratios against baselines run in the same process.

Whole process: `embstore query similar knot --k 9 --method classifier` (and the prototype method)
against `python -c "import duckdb, faiss"` (target: classifier <= 1.5x). In process, warm:
`store.similar_classes(...)` per call (target <= 10 ms) against one matrix product of the same
shape in numpy.

The store is synthetic (1000 classes x 10 images, four conv layers + hidden, written through the
real commit path with `embstore.testing`), so no network runs. The first query materialises
per-class statistics (reported as 'cold'); later ones read them and check their fingerprint.

    uv run --no-sync python bench/query_latency.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import embstore

EMBSTORE = str(Path(sys.executable).parent / "embstore")


# Processes run as users run them: Python caches compiled bytecode (this machine's environment
# sets PYTHONDONTWRITEBYTECODE, which would recompile every imported module in every process).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - t


def per_call(fn, n: int) -> float:
    fn()  # warm
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="embstore-qbench-"))
    store = embstore.open(root / "store", create=True)
    t = time.perf_counter()
    embstore.testing.populate(
        store,
        n_classes=1000,
        per_class=10,
        layers={"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512, "hidden": 1280},
    )
    build = time.perf_counter() - t
    base = [EMBSTORE, "--store", str(store.path), "query", "similar", "knot", "--k", "9"]
    commands = {
        "baseline  python -c 'import duckdb, faiss'": [sys.executable, "-c", "import duckdb, faiss"],
        "query similar knot --k 9 --method classifier": base + ["--method", "classifier"],
        "query similar knot --k 9 (prototype)": base,
        "query images <id> --k 10": [EMBSTORE, "--store", str(store.path), "query", "images", "00000000000000000042"],
    }
    wall(commands["baseline  python -c 'import duckdb, faiss'"])  # writes the bytecode caches once
    cold = {name: wall(cmd) for name, cmd in list(commands.items())[1:]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):  # interleaved, so machine noise hits all alike
        for name, cmd in commands.items():
            times[name].append(wall(cmd))
    med = {name: statistics.median(v) for name, v in times.items()}
    b = med["baseline  python -c 'import duckdb, faiss'"]
    print(f"store: 10,000 images x 5 layers (64..1280 channels), built in {build:.1f} s; medians of {args.rounds}")
    for name, m in med.items():
        extra = f"  cold {cold[name]:.3f} s" if name in cold else ""
        print(f"  {name:46s} {m:.3f} s  ratio {m / b:.2f}x{extra}")
    print("  target: classifier whole process <= 1.5x the baseline")

    w = np.random.default_rng(0).normal(size=(1000, 1280)).astype(np.float32)
    numpy_ms = per_call(lambda: w @ w[616], 200) * 1e3
    print(f"in process, warm, per call (numpy baseline: one 1000x1280 matrix-vector product, {numpy_ms:.3f} ms)")
    for method in ("classifier", "prototype", "tstat", "hidden"):
        ms = per_call(lambda m=method: store.similar_classes("knot", k=9, method=m), 20) * 1e3
        print(f"  store.similar_classes('knot', k=9, method={method!r:12s}) {ms:7.2f} ms  ratio {ms / numpy_ms:6.1f}x")
    store.core.keep_reader()  # as the CLI does: one read-only connection for the process
    for method in ("classifier", "prototype"):
        ms = per_call(lambda m=method: store.similar_classes("knot", k=9, method=m), 20) * 1e3
        print(f"  same, with a kept reader ({method!r:12s})              {ms:7.2f} ms  ratio {ms / numpy_ms:6.1f}x")
    print("  target: <= 10 ms")
    store.close()


if __name__ == "__main__":
    main()
