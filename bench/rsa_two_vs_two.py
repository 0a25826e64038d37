"""2 vs 2 test with permutations at scale: 1000 concepts x 1000 permutations on this CPU, against
the brute-force loop of the paper's definition timed on a sample of pairs in the same run, and
against the previous null (the layer's rows permuted and every term recomputed per permutation
and group), timed on a sample of permutations in the same run.
Then the statistics of issue 33, each against the 2 vs 2 run itself (the same process): the
concept bootstrap of the 2 vs 2 accuracy (every resample re-runs the whole test), the bootstrap of
the three RSA measures, and a paired layer test read from two layers' resampled accuracies.
Targets: <= 45 s, >= 20x the loop; the 2 vs 2 concept bootstrap (1000 resamples) <= 3x the run.

    .venv/bin/python bench/rsa_two_vs_two.py --concepts 1000 --permutations 1000 --boot 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from embstore.analysis import stats
from embstore.analysis.rsa import (
    _pair_loop,
    _Plan,
    _resampled_accuracy,
    concept_weights,
    correlation_matrix,
    rsa_resampled,
    similarity_encoding,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concepts", type=int, default=1000)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--sample-pairs", type=int, default=300)
    ap.add_argument("--sample-permutations", type=int, default=50)
    ap.add_argument("--groups", type=int, default=1, help="image groups (seed 004: 5)")
    ap.add_argument("--boot", type=int, default=1000, help="concept bootstrap resamples (0: skip)")
    args = ap.parse_args()
    k = args.concepts
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(k, 20))
    ref = latent @ rng.normal(size=(20, 50)) + rng.normal(size=(k, 50))  # "word vectors", 50-d
    layers = [latent @ rng.normal(size=(20, 512)) + 2 * rng.normal(size=(k, 512)) for _ in range(args.groups)]
    layer = layers[0]  # a 512-channel layer

    t = time.perf_counter()
    result = similarity_encoding(ref, layers, n_permutations=args.permutations, seed=0)
    ours = time.perf_counter() - t

    # the previous null: per permutation and group, the layer's matrix permuted and every term rebuilt
    plan = _Plan(correlation_matrix(ref), np.float32)
    mats = [correlation_matrix(g).astype(np.float32) for g in layers]
    t = time.perf_counter()
    for _ in range(args.sample_permutations):
        perm = rng.permutation(k)
        for m in mats:
            plan.passed(m[np.ix_(perm, perm)])
    before = (time.perf_counter() - t) / args.sample_permutations * args.permutations

    w, i = correlation_matrix(ref), correlation_matrix(layer)
    pairs = [tuple(sorted(rng.choice(k, 2, replace=False))) for _ in range(args.sample_pairs)]
    t = time.perf_counter()
    for a, b in pairs:
        _pair_loop(w, i, a, b)
    per_pair = (time.perf_counter() - t) / len(pairs)
    n_pairs = k * (k - 1) // 2
    loop_total = per_pair * n_pairs * (1 + args.permutations)
    print(f"{k} concepts ({n_pairs:,} pairs), {args.permutations} permutations, {args.groups} group(s)")
    print(f"2v2 accuracy {result.accuracy:.4f}, p = {result.p_value:.4g}, null mean {result.null.mean():.4f}")
    print(f"vectorised, whole test + permutations : {ours:8.1f} s   (target <= 45 s)")
    print(
        f"previous null, {args.sample_permutations} sampled permutations : {before:8.1f} s extrapolated "
        f"-> this one is {before / ours:.2f}x faster"
    )
    print(
        f"brute-force loop, {len(pairs)} sampled pairs : {per_pair * 1e3:8.3f} ms/pair -> "
        f"{loop_total / 3600:.1f} h extrapolated for the same work"
    )
    print(f"speed-up                               : {loop_total / ours:8.0f}x   (target >= 20x)")
    if not args.boot:
        return
    w = correlation_matrix(ref)
    mats = [correlation_matrix(g) for g in layers]
    weights = concept_weights(k, args.boot, seed=0)
    t = time.perf_counter()
    boot = np.array([_resampled_accuracy(w, mats, m) for m in weights])
    boot_s = time.perf_counter() - t
    t = time.perf_counter()
    rsa_boot = rsa_resampled(w, correlation_matrix(np.mean(layers, axis=0)), weights)
    rsa_s = time.perf_counter() - t
    other = [correlation_matrix(g + rng.normal(size=g.shape)) for g in layers]  # a second, noisier layer
    boot_b = np.array([_resampled_accuracy(w, other, m) for m in weights[:50]])
    t = time.perf_counter()
    d = boot[:50] - boot_b
    low, high = stats.percentile_interval(d)
    p = stats.bootstrap_p(d)
    paired_s = time.perf_counter() - t
    lo, hi = stats.percentile_interval(boot)
    print(f"2v2 95% CI over {args.boot} concept resamples: {lo:.4f} - {hi:.4f}; "
          f"RSA Spearman CI {stats.percentile_interval(rsa_boot['spearman'])}")  # fmt: skip
    print(f"2v2 concept bootstrap, {args.boot} resamples : {boot_s:8.1f} s = {boot_s / ours:.2f}x the 2v2 run "
          "(target <= 3x)")  # fmt: skip
    print(f"RSA bootstrap (Spearman, Pearson{', tau-a' if k <= 300 else ''}) : {rsa_s:8.1f} s = "
          f"{rsa_s / ours:.2f}x the 2v2 run")  # fmt: skip
    print(f"paired layer test from stored resamples : {paired_s * 1e3:8.2f} ms = {paired_s / ours:.1e}x the run "
          f"(Δ CI {low:+.3f} - {high:+.3f}, p {p:.3g} on 50 resamples)")  # fmt: skip


if __name__ == "__main__":
    main()
