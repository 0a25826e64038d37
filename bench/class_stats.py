"""Prototypes + one-vs-rest Welch t for 1000 classes x every channel of a layer, from >= 100k
synthetic activation rows, against one numpy float64 pass over the same data in memory.

embstore streams the layer's Parquet files (reading them is inside its time; numpy's matrix is
already in RAM), so the ratio is conservative. Target: <= 1.5x numpy. Memory: embstore's peak
Python/numpy allocation (tracemalloc) against the layer's size.

Then the same rows labelled with a THINGS-sized vocabulary (1,854 classes, issue 34) against 1000
classes, alternated in one process, with the rows class-major (as a class-per-folder ingest stores
them) and shuffled (every file holds nearly every class). Target: <= 1.2x the 1000-class time.

    .venv/bin/python bench/class_stats.py --rows 100000 --channels 2048
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from embstore import testing as synthetic
from embstore.analysis.classstats import Labels, _compute, class_stats
from embstore.store.core import StoreCore


def numpy_pass(x: np.ndarray, y: np.ndarray):
    """The reference: class sums and sums of squares in float64, then means and one-vs-rest t."""
    order = np.argsort(y, kind="stable")
    xs, ys = x[order].astype(np.float64), y[order]
    starts = np.r_[0, np.nonzero(np.diff(ys))[0] + 1]
    n = np.diff(np.r_[starts, len(ys)]).astype(np.float64)[:, None]
    s = np.add.reduceat(xs, starts, axis=0)
    ss = np.add.reduceat(xs * xs, starts, axis=0)
    mean = s / n
    v1 = (ss - s * mean) / (n - 1)
    N, S, SS = n.sum(), s.sum(0), ss.sum(0)
    n2 = N - n
    m2 = (S - s) / n2
    v2 = ((SS - ss) - (S - s) * m2) / (n2 - 1)
    return mean, (mean - m2) / np.sqrt(v1 / n + v2 / n2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    store = StoreCore.open(Path(tempfile.mkdtemp(prefix="embstore-cbench-")) / "s", create=True)
    per_class = args.rows // 1000
    data = synthetic.populate(store, n_classes=1000, per_class=per_class, layers={"conv": args.channels}, batch=10_000)
    x, y = data["vectors"]["conv"], data["labels"]
    key = synthetic.SPEC.key
    with store.read() as con:
        files = [r[0] for r in con.execute("SELECT rel_path FROM table_files ORDER BY 1").fetchall()]
    labels = Labels(data["ids"], y)
    ours, ref = [], []
    for _ in range(args.rounds):  # alternate, so machine noise hits both alike
        t = time.perf_counter()
        mean_ref, t_ref = numpy_pass(x, y)
        ref.append(time.perf_counter() - t)
        t = time.perf_counter()
        st = _compute(store, files, args.channels, labels)
        t_ours = st.welch_t()[0]
        ours.append(time.perf_counter() - t)
    assert np.allclose(st.mean, mean_ref, rtol=1e-9) and np.allclose(t_ours, t_ref, rtol=1e-6)
    tracemalloc.start()
    _compute(store, files, args.channels, labels).welch_t()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t = time.perf_counter()
    class_stats(store, key, "conv")  # materialise once (includes the catalog reads)
    class_stats(store, key, "conv")
    cached = time.perf_counter() - t
    o, r = float(np.median(ours)), float(np.median(ref))
    print(
        f"{len(y):,} rows x {args.channels} channels, 1000 classes, {len(files)} Parquet files "
        f"({x.nbytes / 2**20:.0f} MiB float32)"
    )
    print(f"numpy float64 pass (in RAM) : {r:.2f} s median of {args.rounds} {[round(v, 2) for v in ref]}")
    print(f"embstore streaming (+ IO)   : {o:.2f} s median {[round(v, 2) for v in ours]}")
    print(f"ratio embstore/numpy        : {o / r:.2f}x   (target <= 1.5x)")
    print(
        f"embstore peak allocation    : {peak / 2**20:.0f} MiB (layer is {x.nbytes / 2**20:.0f} MiB float32, "
        f"{x.nbytes * 2 / 2**20:.0f} MiB as float64)"
    )
    print(f"first materialise + cached read: {cached:.2f} s")
    # a vocabulary of 1,854 classes (THINGS) over the same rows against 1000 classes, in two layouts:
    # class-major (as an ingest of a class-per-folder tree stores them: a file holds few classes) and
    # shuffled (every file holds nearly every class: the per-file merge is classes x channels)
    rng = np.random.default_rng(1)
    n_rows = len(y)
    layouts = {
        "class-major": {k: (np.arange(n_rows) * k) // n_rows for k in (1000, 1854)},
        "shuffled": {k: rng.permutation(np.arange(n_rows) % k) for k in (1000, 1854)},
    }
    for layout, by_size in layouts.items():
        times: dict[int, list[float]] = {1000: [], 1854: []}
        for _ in range(args.rounds):  # alternated
            for k, yk in by_size.items():
                t = time.perf_counter()
                st = _compute(store, files, args.channels, Labels(data["ids"], yk))
                st.welch_t()
                times[k].append(time.perf_counter() - t)
        yk = by_size[1854]
        assert len(st.labels) == 1854 and np.allclose(st.mean[7], x[yk == 7].astype(np.float64).mean(0), rtol=1e-9)
        a, b = float(np.median(times[1000])), float(np.median(times[1854]))
        print(f"1,854 vs 1000 classes, {layout:<11}: {b:.2f} s vs {a:.2f} s -> {b / a:.2f}x   (target <= 1.2x)")


if __name__ == "__main__":
    main()
