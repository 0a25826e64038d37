"""Similarity encoding (seed 004 §2): the 2 vs 2 test, its permutation test, classic RSA and the
1 vs 2 test, between a reference space (word vectors, WordNet) and a layer's class embeddings.

Rows of every matrix are concepts in the same order. The 2 vs 2 test on all pairs is
vectorised: each leave-two-out Pearson correlation is rebuilt from whole-row sums, sums of
squares and one matrix product G = W Iᵀ, minus the two left-out columns' terms, so a permutation
costs one k×k matrix product instead of k² small correlations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIE = 1e-10  # matched and mismatched sums closer than this are a tie, and a tie does not pass


def correlation_matrix(x: np.ndarray) -> np.ndarray:
    """Pearson correlation between the rows of `x` (concepts × features), float64."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1)
    norms[norms == 0] = 1.0
    x = x / norms[:, None]
    return x @ x.T


def two_vs_two(w: np.ndarray, i: np.ndarray) -> tuple[float, np.ndarray]:
    """(accuracy, passed[a, b] for a < b) of the 2 vs 2 test between correlation matrices w and i."""
    k = w.shape[0]
    if k < 4:
        raise ValueError("the 2 vs 2 test needs at least 4 concepts")
    passed = _pairs_passed(np.asarray(w, np.float64), np.asarray(i, np.float64))
    upper = np.triu(np.ones((k, k), bool), 1)
    return float(passed[upper].mean()), np.where(upper, passed, False)


def _pairs_passed(w: np.ndarray, i: np.ndarray) -> np.ndarray:
    return _Plan(w).passed(i)


class _Plan:
    """The reference-space half of every leave-two-out correlation, computed once per space.

    For pair (a, b) and rows p of W, q of I with columns a and b left out (n = k − 2 values):
    r = (n·Sxy − Sx·Sy) / sqrt((n·Sxx − Sx²)(n·Syy − Sy²)). Sx, Sxx depend on W only; because I
    is symmetric, the image-side sums of the matched correlation are the transposes of those of
    the mismatched one, so one permutation costs one matrix product and a few k×k operations.
    """

    def __init__(self, w: np.ndarray, dtype=np.float64):
        self.dtype = dtype
        self.w = np.asarray(w, dtype)
        self.n = self.w.shape[0] - 2
        self.dw = np.diag(self.w).copy()
        self.sx = self.w.sum(1)[:, None] - self.dw[:, None] - self.w
        sxx = (self.w * self.w).sum(1)[:, None] - (self.dw**2)[:, None] - self.w**2
        self.dx = self.n * sxx - self.sx**2

    def passed(self, i: np.ndarray) -> np.ndarray:
        i = np.asarray(i, self.dtype)
        n, w, dw, sx = self.n, self.w, self.dw, self.sx
        di = np.diag(i).copy()
        g = w @ i  # = W Iᵀ, I being symmetric
        sy = i.sum(1)[None, :] - i - di[None, :]  # row b of I without columns a, b
        dy = n * ((i * i).sum(1)[None, :] - i * i - (di**2)[None, :]) - sy**2
        cross_num = n * (g - dw[:, None] * i - w * di[None, :]) - sx * sy
        same_num = n * (np.diag(g)[:, None] - (dw * di)[:, None] - w * i) - sx * sy.T
        with np.errstate(invalid="ignore", divide="ignore"):
            cross = np.nan_to_num(cross_num / np.sqrt(self.dx * dy))
            same = np.nan_to_num(same_num / np.sqrt(self.dx * dy.T))
        return (same + same.T) - (cross + cross.T) > TIE


class _NullPlan:
    """The permutation null of the 2 vs 2 test, with the *reference* side permuted.

    Relabelling the concepts of both spaces by one permutation leaves the count of passed pairs
    unchanged, so permuting the layer's rows and columns (P I Pᵀ) counts the same as permuting the
    reference's (Pᵀ W P). Permuting W lets every layer-side term (row sums, squares, 1/sqrt of
    the variance terms) be computed once per group, and the W-side gathers once per permutation
    for all groups; each group then costs one matrix product and a few in-place k×k passes.
    A zero variance term (a constant row) gives a correlation of 0, as `nan_to_num` of 0/0 does.
    """

    def __init__(self, w: np.ndarray, mats: list[np.ndarray], dtype=np.float32):
        plan = _Plan(w, dtype)
        self.n, self.w, self.dw, self.sx = plan.n, plan.w, plan.dw, plan.sx
        self.rdx = _rsqrt(plan.dx)
        self.groups = []
        n = self.n
        for m in mats:
            i = np.asarray(m, dtype)
            di = np.diag(i).copy()
            sy = i.sum(1)[None, :] - i - di[None, :]
            dy = n * ((i * i).sum(1)[None, :] - i * i - (di**2)[None, :]) - sy**2
            rdy = _rsqrt(dy)
            self.groups.append((i, di, sy, np.ascontiguousarray(sy.T), rdy, np.ascontiguousarray(rdy.T)))
        k = self.w.shape[0]
        self.n_pairs = k * (k - 1) // 2

    def accuracy(self, perm: np.ndarray) -> float:
        """Mean over groups of the share of pairs passed with the layer's concepts permuted by `perm`
        (computed as the reference permuted by its inverse)."""
        inverse = np.argsort(perm)
        # two np.take calls gather rows and columns in 1 ms where x[np.ix_(p, p)] takes 2.5 (k = 1000)
        w, sx, rdx = (np.take(np.take(x, inverse, axis=0), inverse, axis=1) for x in (self.w, self.sx, self.rdx))
        dw = self.dw[inverse]
        n = w.dtype.type(self.n)
        out = []
        for i, di, sy, syt, rdy, rdyt in self.groups:
            g = w @ i
            gd = np.diag(g) - dw * di
            # cross[p, q] = r(W_p, I_q); same[p, q] = r(W_p, I_p) with q left out
            cross = g
            cross -= dw[:, None] * i
            cross -= w * di[None, :]
            cross *= n
            cross -= sx * sy
            cross *= rdx
            cross *= rdy
            same = w * i
            np.subtract(gd[:, None], same, out=same)
            same *= n
            same -= sx * syt
            same *= rdx
            same *= rdyt
            same -= cross
            margin = same + same.T
            passed = margin > TIE
            out.append((np.count_nonzero(passed) - np.count_nonzero(passed.diagonal())) / 2 / self.n_pairs)
        return float(np.mean(out))


def _rsqrt(d: np.ndarray) -> np.ndarray:
    """1/sqrt(d) where d > 0, else 0 (a constant row: no correlation)."""
    out = np.zeros_like(d)
    np.divide(1.0, np.sqrt(d, where=d > 0, out=np.zeros_like(d)), out=out, where=d > 0)
    return out


def two_vs_two_loop(w: np.ndarray, i: np.ndarray) -> float:
    """The reference: the paper's definition, one pair at a time (slow; for tests and benchmarks)."""
    k = w.shape[0]
    passed = total = 0
    for a in range(k):
        for b in range(a + 1, k):
            passed += _pair_loop(w, i, a, b)
            total += 1
    return passed / total


def _pair_loop(w, i, a, b) -> bool:
    keep = [c for c in range(w.shape[0]) if c not in (a, b)]

    def corr(x, y):
        return float(np.nan_to_num(np.corrcoef(x, y)[0, 1]))

    wa, wb, ia, ib = w[a, keep], w[b, keep], i[a, keep], i[b, keep]
    return (corr(wa, ia) + corr(wb, ib)) - (corr(wa, ib) + corr(wb, ia)) > TIE


@dataclass
class TwoVsTwo:
    accuracy: float  # averaged over groups
    per_group: list[float]
    p_value: float | None
    n_permutations: int
    null: np.ndarray  # permutation accuracies


def similarity_encoding(
    reference: np.ndarray | None,
    groups: list[np.ndarray],
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    reference_matrix: np.ndarray | None = None,
) -> TwoVsTwo:
    """2 vs 2 accuracy of a layer against a reference space, averaged over image groups, with a
    permutation test that permutes the concept rows of the layer and re-runs everything.

    `reference`: concepts × p (or give `reference_matrix`, a concepts × concepts similarity such as
    WordNet's); `groups`: one concepts × q matrix per group of images (seed 004 §3: each concept
    once per group). p = (1 + #{null ≥ observed}) / (1 + n_permutations).
    """
    if reference_matrix is not None:
        w = np.asarray(reference_matrix, np.float64)
    elif reference is not None:
        w = correlation_matrix(reference)
    else:
        raise ValueError("similarity_encoding needs reference vectors or a reference_matrix")
    mats = [correlation_matrix(g) for g in groups]
    per_group = [two_vs_two(w, m)[0] for m in mats]
    observed = float(np.mean(per_group))
    rng = np.random.default_rng(seed)
    # The null runs in float32 (half the memory traffic): a rounding can only flip a pair whose
    # margin is below ~1e-5, which moves no null distribution; the observed value stays float64.
    null_plan = _NullPlan(w, mats)
    null = np.array([null_plan.accuracy(rng.permutation(w.shape[0])) for _ in range(n_permutations)])
    p = (1 + int((null >= observed).sum())) / (1 + n_permutations) if n_permutations else None
    return TwoVsTwo(observed, per_group, p, n_permutations, null)


def rsa(
    reference: np.ndarray | None, layer: np.ndarray, *, reference_matrix: np.ndarray | None = None
) -> tuple[float, float]:
    """Classic RSA: (Spearman, Pearson) between the upper triangles of the two correlation-distance
    RDMs; `reference_matrix` gives the reference's similarities directly (WordNet's, for one), and
    `reference` is then not read."""
    from scipy.stats import pearsonr, spearmanr

    if reference_matrix is None:
        assert reference is not None, "give the reference's vectors or its similarity matrix"
        reference_matrix = correlation_matrix(reference)
    w = reference_matrix
    upper = np.triu_indices(w.shape[0], 1)
    a = 1 - w[upper]
    b = 1 - correlation_matrix(layer)[upper]
    return float(spearmanr(a, b).statistic), float(pearsonr(a, b).statistic)


def one_vs_two_many(reference: np.ndarray, correct: np.ndarray, images: np.ndarray, true, predicted) -> np.ndarray:
    """`one_vs_two` for many misclassified images at once: passed[j] for image j.

    `reference` (k × d) and `correct` (k × C) are aligned by concept; a row of `correct` that is
    NaN marks a concept without a correctly classified image (left out, like the true and the
    predicted concept of each image). An image with fewer than 3 concepts to compare fails.
    The image-to-correct-image correlations are one matrix product instead of k corrcoef calls each.
    """
    w = _unit_rows(reference) @ _unit_rows(reference).T
    has = np.asarray(~np.isnan(np.asarray(correct, np.float64)).any(axis=1))
    corr = np.full((len(images), len(has)), np.nan)
    corr[:, has] = _unit_rows(images) @ _unit_rows(np.asarray(correct)[has]).T
    passed = np.zeros(len(images), bool)
    for j, (t, p) in enumerate(zip(true, predicted)):
        keep = has.copy()
        keep[[t, p]] = False
        if keep.sum() >= 3:
            a = corr[j, keep]
            passed[j] = _pearson(a, w[t, keep]) > _pearson(a, w[p, keep])
    return passed


def _unit_rows(x) -> np.ndarray:
    """Rows centred and scaled to unit norm (NaN for a constant row, as np.corrcoef gives)."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, x / norms, np.nan)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(_unit_rows(a[None])[0] @ _unit_rows(b[None])[0])


def one_vs_two(reference: np.ndarray, correct: np.ndarray, image: np.ndarray, true: int, predicted: int) -> bool:
    """The 1 vs 2 test for one misclassified image (seed 004 §3.3).

    `reference`: reference vectors of the concepts that have a correctly classified image
    (rows aligned with `correct`, those images' layer vectors) plus, at rows `true` and
    `predicted`, the two concepts in question, which are left out of the comparison set.
    Passed when the image's correlations to the correct images follow the true concept's
    word-space correlations more than the predicted one's.
    """
    keep = [c for c in range(len(correct)) if c not in (true, predicted)]
    ref = np.asarray(reference, np.float64)
    w_true = np.array([np.corrcoef(ref[true], ref[c])[0, 1] for c in keep])
    w_pred = np.array([np.corrcoef(ref[predicted], ref[c])[0, 1] for c in keep])
    i_mis = np.array([np.corrcoef(image, correct[c])[0, 1] for c in keep])
    return float(np.corrcoef(i_mis, w_true)[0, 1]) > float(np.corrcoef(i_mis, w_pred)[0, 1])
