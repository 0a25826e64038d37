"""The cost of seed 000's statistics, as ratios against baselines run in the same process.

For N triplets and 1000 bootstrap resamples: the AUC interval by the quadratic form of resample
counts (stats.aucs_of_triplet_resamples) against ranking every resample (the plain way); and a
whole two-result comparison (McNemar + paired bootstrap of Δerror and ΔAUC) against the error
interval `analyze matching` has always computed per layer (1000 resamples of the triplets), in
absolute terms too: a comparison is one call, not one per layer.

    uv run --no-sync python bench/matching_stats.py [--triplets 400,2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from embstore.analysis import stats
from embstore.analysis.comparisons import compare_arrays


def best_of(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--triplets", default="400,2000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    for n in (int(v) for v in args.triplets.split(",")):
        measure(n, args.boot, args.rounds)


def measure(n: int, boot: int, rounds: int) -> None:
    rng = np.random.default_rng(0)
    cr, cu = rng.normal(0.5, 1, n), rng.normal(0, 1, n)
    idx = stats.resamples(n, boot, seed=0)

    ranked = best_of(lambda: stats.aucs_of_resamples(cr[idx], cu[idx]), rounds)
    counted = best_of(lambda: stats.aucs_of_triplet_resamples(cr, cu, idx), rounds)
    wrong = (cr <= cu).astype(np.float64)
    error_ci = best_of(lambda: stats.percentile_interval(wrong[stats.resamples(n, boot, 0)].mean(1)),
                       rounds)  # fmt: skip
    both = best_of(
        lambda: compare_arrays(cr <= cu, cr + 0.1 <= cu, (cr, cu), (cr + 0.1, cu), n_boot=boot, seed=0),
        rounds,
    )
    print(f"{n} triplets, {boot} resamples (medians of {rounds})")
    print(f"  AUC interval by ranking each resample : {ranked * 1e3:8.1f} ms  ratio 1.00x")
    print(f"  AUC interval by resample counts       : {counted * 1e3:8.1f} ms  ratio {counted / ranked:.2f}x")
    print(f"  the error interval (as always)        : {error_ci * 1e3:8.1f} ms  ratio 1.00x")
    print(f"  a comparison of two results           : {both * 1e3:8.1f} ms  ratio {both / error_ci:.2f}x")


if __name__ == "__main__":
    main()
