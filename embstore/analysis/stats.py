"""The inference the papers' comparisons need: bootstrap intervals, paired tests, exact binomial p.

Pure numpy (scipy only for ranks), each function checked in tests against an independent reference
(scipy.stats.binomtest, a hand-written resampling loop) and by simulation (null p-values uniform,
interval coverage). Resampling is by the unit the claim generalises over: triplets for matching
(seed 000), seeded and recorded with every result.
"""

from __future__ import annotations

from math import comb

import numpy as np

LEVEL = 0.95  # every interval embstore reports


def resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot × n) row indices, each row a bootstrap resample of range(n) with replacement; the
    same (n, n_boot, seed) gives the same rows, so paired statistics use one draw for both sides.

    >>> resamples(3, 2, seed=0).shape
    (2, 3)
    """
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile bootstrap interval of `values` (NaNs, from degenerate resamples, left out)."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return float("nan"), float("nan")
    tail = round(100 * (1 - level) / 2, 9)  # 2.5 for 95 %, not 2.5000000000000018
    return float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))


def auc_of_pairs(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC of scores `positive` (label 1) against `negative` (label 0): the Mann–Whitney
    probability that a positive outscores a negative, ties counting half."""
    return float(aucs_of_resamples(np.asarray(positive)[None, :], np.asarray(negative)[None, :])[0])


def aucs_of_resamples(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """AUC of each row of (B × n) positive and (B × m) negative scores, by average ranks per row."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    n, m = pos.shape[1], neg.shape[1]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    return (ranks[:, :n].sum(axis=1) - n * (n + 1) / 2) / (n * m)


PAIRWISE_MAX = 2000  # triplets up to which the n × n comparison matrix (32 MB at the limit) is used


def aucs_of_triplet_resamples(positive: np.ndarray, negative: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """AUC of each resample `idx` (B × n rows of `resamples`) of n paired scores (a triplet's related
    and unrelated cosine resampled together). Up to PAIRWISE_MAX triplets as a quadratic form of the
    resample counts with the n × n win matrix (one matrix product, ~50 × faster than ranking each
    resample); beyond it, by ranks. Equal either way (tests)."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    n, b = len(pos), len(idx)
    if n > PAIRWISE_MAX:
        return aucs_of_resamples(pos[idx], neg[idx])
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    counts = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
    return ((counts @ wins) * counts).sum(axis=1) / (n * n)


def spearman_with_interval(x, y, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Spearman's ρ of paired values and its percentile bootstrap interval over the pairs (each
    resample ranked on its own; a resample with a constant side has no ρ and is left out)."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    idx = np.vstack([np.arange(len(x))[None, :], resamples(len(x), n_boot, seed)])
    rx, ry = rankdata(x[idx], axis=1), rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    return float(rho[0]), percentile_interval(rho[1:])


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n trials against p = 1/2 (the smaller tail, doubled).

    >>> binomial_two_sided(0, 5)
    0.0625
    """
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(comb(n, i) for i in range(low + 1)) / 2**n
    return min(1.0, 2 * tail)


def binomial_greater(k: int, n: int) -> float:
    """Exact one-sided p of at least k successes in n trials when each has probability 1/2."""
    if n == 0:
        return 1.0
    return sum(comb(n, i) for i in range(k, n + 1)) / 2**n


def mcnemar_exact(wrong_a: np.ndarray, wrong_b: np.ndarray) -> tuple[int, int, float]:
    """(a right where b is wrong, a wrong where b is right, exact two-sided p) on paired 0/1 outcomes:
    under the null that a and b err alike, each discordant pair goes either way with chance 1/2."""
    a, b = np.asarray(wrong_a, bool), np.asarray(wrong_b, bool)
    a_better, b_better = int((~a & b).sum()), int((a & ~b).sum())
    return a_better, b_better, binomial_two_sided(a_better, a_better + b_better)


def bootstrap_p(deltas: np.ndarray) -> float:
    """Two-sided p of a paired bootstrap of differences: 2 (s + 1) / (B + 1), s the resampled
    differences on the far side of zero (so never below 2 / (B + 1): B draws cannot say less)."""
    d = np.asarray(deltas, np.float64)
    d = d[~np.isnan(d)]
    if not len(d):
        return float("nan")
    side = int(min((d <= 0).sum(), (d >= 0).sum()))
    return float(min(1.0, 2 * (side + 1) / (len(d) + 1)))


def permutation_floor(n_permutations: int) -> float:
    """The smallest p a permutation test of `n_permutations` can give, (0 + 1) / (n + 1)."""
    return 1.0 / (n_permutations + 1)


def floor_warning(alpha: float, n_permutations: int, family: int = 1) -> str | None:
    """One line when `n_permutations` cannot give a p below `alpha` (raw, or after Holm's correction
    over `family` tests, whose smallest adjusted p is family / (n + 1)), naming the count needed.

    >>> floor_warning(0.0005, 1000)[:61]
    'α = 0.0005 is below the smallest p 1000 permutations can give'
    """
    from math import floor

    if not 0 < alpha < 1:
        from embstore.errors import UsageError

        raise UsageError(f"alpha must lie between 0 and 1, not {alpha}")
    raw = floor(1 / alpha + 1e-9)  # the fewest permutations n with 1 / (n + 1) < alpha
    holm = floor(family / alpha + 1e-9)
    if n_permutations < raw:
        return (
            f"α = {alpha:g} is below the smallest p {n_permutations} permutations can give "
            f"(1/{n_permutations + 1} ≈ {permutation_floor(n_permutations):.2g}), so no permutation p can fall "
            f"below it: use --permutations {raw} or more"
            + (f" ({holm} for Holm over {family} layers)" if family > 1 else "")
        )
    if family > 1 and n_permutations < holm:
        return (
            f"α = {alpha:g} is below the smallest Holm-adjusted p over {family} layers that {n_permutations} "
            f"permutations can give ({family}/{n_permutations + 1} ≈ {family / (n_permutations + 1):.2g}): "
            f"use --permutations {holm} or more"
        )
    return None


CORRECTIONS = ("holm", "bh", "none")


def check_correction(method: str) -> str:
    """`method`, or a UsageError naming the corrections there are."""
    if method not in CORRECTIONS:
        from embstore.errors import UsageError

        raise UsageError(f"unknown correction '{method}'; choose one of {', '.join(CORRECTIONS)}")
    return method


def adjusted(p_values, method: str) -> list[float | None]:
    """`p_values` (None or NaN: no test) adjusted across the ones given: Holm's step-down ("holm",
    family-wise error), Benjamini–Hochberg ("bh", false discovery rate) or as they are ("none").

    >>> [round(p, 3) for p in adjusted([0.01, 0.04, 0.03], "holm")]
    [0.03, 0.06, 0.06]
    >>> [round(p, 3) for p in adjusted([0.01, 0.04, 0.03], "bh")]
    [0.03, 0.04, 0.04]
    """
    check_correction(method)
    given = [k for k, p in enumerate(p_values) if p is not None and p == p]
    out: list[float | None] = [None] * len(p_values)
    if not given:
        return out
    p = np.array([p_values[k] for k in given], np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method == "bh":
        adj = np.minimum.accumulate(m / np.arange(m, 0, -1) * ranked[::-1])[::-1]
    else:
        adj = ranked
    adj = np.minimum(adj, 1.0)
    for pos, k in enumerate(order):
        out[given[k]] = float(adj[pos])
    return out
