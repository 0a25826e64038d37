"""Similarity encoding (seed 004 §2): the 2 vs 2 test, its permutation test, classic RSA and the
1 vs 2 test, between a reference space (word vectors, WordNet) and a layer's class embeddings.

Rows of every matrix are concepts in the same order. The 2 vs 2 test on all pairs is
vectorised: each leave-two-out Pearson correlation is rebuilt from whole-row sums, sums of
squares and one matrix product G = W Iᵀ, minus the two left-out columns' terms, so a permutation
costs one k×k matrix product instead of k² small correlations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    `weights` m (a bootstrap resample's multiplicity of each concept; default all 1) make every
    sum a weighted one: concept c counts m_c times as a column, pair (a, b) is m_a·m_b tests, and
    a pair leaves out every copy of a and of b (n = Σm − m_a − m_b). That is the test re-run on
    the resampled concept list, where a concept is never paired with its own copy, in one pass.
    """

    def __init__(self, w: np.ndarray, dtype=np.float64, weights: np.ndarray | None = None):
        self.dtype = dtype
        self.w = np.asarray(w, dtype)
        k = self.w.shape[0]
        m = np.ones(k, dtype) if weights is None else np.asarray(weights, dtype)
        self.m = m
        self.weighted = weights is not None
        self.n = (m.sum() - m[:, None] - m[None, :]) if weights is not None else dtype(k - 2)
        self.dw = np.diag(self.w).copy()
        if weights is None:  # plain sums (float32 rounds them as the null's test expects)
            self.sx = self.w.sum(1)[:, None] - self.dw[:, None] - self.w
            sxx = (self.w * self.w).sum(1)[:, None] - (self.dw**2)[:, None] - self.w**2
        else:
            self.sx = (self.w @ m)[:, None] - (m * self.dw)[:, None] - m[None, :] * self.w
            sxx = ((self.w * self.w) @ m)[:, None] - (m * self.dw**2)[:, None] - m[None, :] * self.w**2
        self.dx = self.n * sxx - self.sx**2

    def sums(self, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Eq. 1, Eq. 2) of seed 004 for every pair: the matched correlations' sum
        r(w_a, i_a) + r(w_b, i_b) and the mismatched one's r(w_a, i_b) + r(w_b, i_a)."""
        i = np.asarray(i, self.dtype)
        n, w, dw, sx, m = self.n, self.w, self.dw, self.sx, self.m
        di = np.diag(i).copy()
        if self.weighted:
            g = (w * m[None, :]) @ i  # = W diag(m) Iᵀ, I being symmetric
            sy = (i @ m)[None, :] - (m * di)[None, :] - m[:, None] * i  # row b of I without (copies of) a, b
            dy = n * ((i * i) @ m - m * di**2)[None, :] - n * (m[:, None] * i * i) - sy**2
            cross_num = n * (g - (m * dw)[:, None] * i - m[None, :] * w * di[None, :]) - sx * sy
            same_num = n * (((w * i) @ m)[:, None] - (m * dw * di)[:, None] - m[None, :] * w * i) - sx * sy.T
        else:  # the same with m = 1, as plain sums
            g = w @ i
            sy = i.sum(1)[None, :] - i - di[None, :]
            dy = n * ((i * i).sum(1)[None, :] - i * i - (di**2)[None, :]) - sy**2
            cross_num = n * (g - dw[:, None] * i - w * di[None, :]) - sx * sy
            same_num = n * (np.diag(g)[:, None] - (dw * di)[:, None] - w * i) - sx * sy.T
        with np.errstate(invalid="ignore", divide="ignore"):
            cross = np.nan_to_num(cross_num / np.sqrt(self.dx * dy))
            same = np.nan_to_num(same_num / np.sqrt(self.dx * dy.T))
        return same + same.T, cross + cross.T

    def passed(self, i: np.ndarray) -> np.ndarray:
        eq1, eq2 = self.sums(i)
        return eq1 - eq2 > TIE

    def accuracy(self, i: np.ndarray) -> float:
        """The share of tests passed, pair (a, b) counted m_a·m_b times (a < b)."""
        m = self.m
        tests = np.triu(m[:, None] * m[None, :], 1)
        return float((tests * self.passed(i)).sum() / tests.sum())


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
    eq1: float = float("nan")  # Eq. 1 (matched correlations' sum), mean over pairs and groups
    eq2: float = float("nan")  # Eq. 2 (mismatched), likewise; Eq. 1 > Eq. 2 is a passed test
    boot: np.ndarray = field(default_factory=lambda: np.zeros(0))  # accuracy on each concept resample


def similarity_encoding(
    reference: np.ndarray | None,
    groups: list[np.ndarray] | None,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
    reference_matrix: np.ndarray | None = None,
    n_boot: int = 0,
    correlations: list[np.ndarray] | None = None,
) -> TwoVsTwo:
    """2 vs 2 accuracy of a layer against a reference space, averaged over image groups, with a
    permutation test that permutes the concept rows of the layer and re-runs everything, and
    (`n_boot` > 0) the accuracy re-run on each bootstrap resample of the concepts (`concept_weights`).

    `reference`: concepts × p (or give `reference_matrix`, a concepts × concepts similarity such as
    WordNet's); `groups`: one concepts × q matrix per group of images (seed 004 §3: each concept
    once per group), or `correlations`: each group's concepts × concepts correlation matrix
    already computed (whole maps: ingest/gram.py). p = (1 + #{null ≥ observed}) / (1 + n_permutations).
    """
    if reference_matrix is not None:
        w = np.asarray(reference_matrix, np.float64)
    elif reference is not None:
        w = correlation_matrix(reference)
    else:
        raise ValueError("similarity_encoding needs reference vectors or a reference_matrix")
    mats = (
        [np.asarray(c, np.float64) for c in correlations]
        if correlations is not None
        else [correlation_matrix(g) for g in groups or []]
    )
    k = w.shape[0]
    if k < 4:
        raise ValueError("the 2 vs 2 test needs at least 4 concepts")
    plan = _Plan(w)
    upper = np.triu(np.ones((k, k), bool), 1)
    per_group, eq1, eq2 = [], [], []
    for m in mats:
        e1, e2 = plan.sums(m)
        per_group.append(float((e1 - e2 > TIE)[upper].mean()))
        eq1.append(float(e1[upper].mean()))
        eq2.append(float(e2[upper].mean()))
    observed = float(np.mean(per_group))
    rng = np.random.default_rng(seed)
    # The null runs in float32 (half the memory traffic): a rounding can only flip a pair whose
    # margin is below ~1e-5, which moves no null distribution; the observed value stays float64.
    null_plan = _NullPlan(w, mats)
    null = np.array([null_plan.accuracy(rng.permutation(k)) for _ in range(n_permutations)])
    p = (1 + int((null >= observed).sum())) / (1 + n_permutations) if n_permutations else None
    boot = np.array([_resampled_accuracy(w, mats, m) for m in concept_weights(k, n_boot, seed)])
    return TwoVsTwo(observed, per_group, p, n_permutations, null, float(np.mean(eq1)), float(np.mean(eq2)), boot)


def concept_weights(k: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot × k) multiplicity of each concept in each bootstrap resample of the k concepts
    (`stats.resamples`): the same (k, n_boot, seed) gives the same resamples to every layer and
    model, which is what makes two curves' resampled accuracies a paired comparison."""
    from embstore.analysis import stats

    idx = stats.resamples(k, n_boot, seed)
    return np.stack([np.bincount(row, minlength=k) for row in idx]) if n_boot else np.zeros((0, k), np.int64)


def _resampled_accuracy(w: np.ndarray, mats: list[np.ndarray], weights: np.ndarray) -> float:
    """The 2 vs 2 accuracy (mean over groups) re-run on one concept resample, in float32 like the null
    (`_Plan` with weights, its formulas written in place on the concepts drawn)."""
    f = np.float32
    # a concept drawn 0 times (~37 % of them) is neither a column nor in a pair: drop it first
    present = np.flatnonzero(np.asarray(weights) > 0)
    w = np.take(np.take(np.asarray(w, f), present, axis=0), present, axis=1)
    m = np.asarray(weights, f)[present]
    dw = np.diag(w).copy()
    n = m.sum() - m[:, None] - m[None, :]
    mw = m[None, :] * w
    sx = mw.copy()
    np.subtract((w @ m - m * dw)[:, None], sx, out=sx)
    dx = mw * w
    np.subtract(((w * w) @ m - m * dw**2)[:, None], dx, out=dx)
    dx *= n
    dx -= sx * sx
    rdx = _rsqrt(dx)
    tests = np.triu(m[:, None] * m[None, :], 1)
    total = tests.sum()
    accuracies = []
    for mat in mats:
        i = np.take(np.take(np.asarray(mat, f), present, axis=0), present, axis=1)
        di = np.diag(i).copy()
        mi = m[:, None] * i  # m_a I_ab
        sy = (i @ m - m * di)[None, :] - mi
        dy = mi * i
        np.subtract(((i * i) @ m - m * di**2)[None, :], dy, out=dy)
        dy *= n
        dy -= sy * sy
        rdy = _rsqrt(dy)
        cross = mw @ i  # = W diag(m) Iᵀ: the masked sums of r(w_a, i_b) follow
        cross -= (m * dw)[:, None] * i
        cross -= mw * di[None, :]
        cross *= n
        cross -= sx * sy
        cross *= rdx
        cross *= rdy
        same = mw * i
        np.subtract((((w * i) @ m) - m * dw * di)[:, None], same, out=same)
        same *= n
        same -= sx * sy.T
        same *= rdx
        same *= rdy.T
        same -= cross
        margin = same + same.T
        accuracies.append(float((tests * (margin > TIE)).sum() / total))
    return float(np.mean(accuracies))


RSA_MEASURES = ("spearman", "pearson", "kendall_a")
KENDALL_BOOT_MAX = 300  # concepts up to which Kendall's τ-a gets its bootstrap interval (O(B n² log n))


def rsa(
    reference: np.ndarray | None, layer: np.ndarray, *, reference_matrix: np.ndarray | None = None
) -> tuple[float, float]:
    """Classic RSA: (Spearman, Pearson) between the upper triangles of the two correlation-distance
    RDMs; `reference_matrix` gives the reference's similarities directly (WordNet's, for one), and
    `reference` is then not read."""
    if reference_matrix is None:
        assert reference is not None, "give the reference's vectors or its similarity matrix"
        reference_matrix = correlation_matrix(reference)
    out = rsa_measures(reference_matrix, correlation_matrix(layer), kendall=False)
    return out["spearman"], out["pearson"]


def _rdm_entries(w: np.ndarray, layer_corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    upper = np.triu_indices(w.shape[0], 1)
    return 1 - np.asarray(w, np.float64)[upper], 1 - np.asarray(layer_corr, np.float64)[upper]


def rsa_measures(w: np.ndarray, layer_corr: np.ndarray, *, kendall: bool = True) -> dict[str, float]:
    """Spearman ρ, Pearson r and Kendall's τ-a between the RDMs' upper triangles (1 − similarity).

    τ-a (rsatoolbox's choice for RDMs with tied entries, such as WordNet's) counts ties as neither
    concordant nor discordant over all n(n − 1)/2 pairs; scipy gives τ-b, rescaled here by its
    tie-corrected denominator (`kendall_tau_a`)."""
    from scipy.stats import pearsonr, spearmanr

    a, b = _rdm_entries(w, layer_corr)
    out = {"spearman": float(spearmanr(a, b).statistic), "pearson": float(pearsonr(a, b).statistic)}
    out["kendall_a"] = kendall_tau_a(a, b) if kendall else float("nan")
    return out


def kendall_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-a = (concordant − discordant) / (n(n − 1)/2), in O(n log n) through scipy's τ-b:
    τ-b = (C − D) / sqrt((n0 − tx)(n0 − ty)), tx and ty the pairs tied in x and in y."""
    from scipy.stats import kendalltau

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    n0 = n * (n - 1) / 2
    if n0 == 0:
        return float("nan")

    def tied(v):
        counts = np.unique(v, return_counts=True)[1].astype(np.float64)
        return float((counts * (counts - 1) / 2).sum())

    denom = (n0 - tied(x)) * (n0 - tied(y))
    if denom == 0:
        return 0.0  # one side constant: no pair is concordant or discordant
    return float(kendalltau(x, y).statistic * np.sqrt(denom) / n0)


def rsa_resampled(w: np.ndarray, layer_corr: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each RSA measure on each concept resample (`weights`, B × k multiplicities), the RDMs rebuilt
    from the resampled concepts with a concept's copies never paired with each other: entry (a, b)
    counts m_a·m_b times. Spearman and Pearson are weighted sums over the k(k − 1)/2 entries (ranks
    of tied copies averaged, as scipy ranks the materialised resample); τ-a runs scipy on the
    materialised resample, up to KENDALL_BOOT_MAX concepts (NaN beyond)."""
    a, b = _rdm_entries(w, layer_corr)
    k = w.shape[0]
    upper = np.triu_indices(k, 1)
    ra, rb = _RankPlan(a), _RankPlan(b)
    # everything in a's sorted order: b's ranks come back through one gather, not two scatters
    a_sorted, b_in_a = a[ra.order], b[ra.order]
    moments = {"xx": a_sorted * a_sorted, "yy": b_in_a * b_in_a, "xy": a_sorted * b_in_a}
    b_to_a = np.argsort(rb.order)[ra.order]
    out = {name: np.full(len(weights), np.nan) for name in RSA_MEASURES}
    for r, m in enumerate(np.asarray(weights, np.float64)):
        omega = m[upper[0]] * m[upper[1]]
        omega_a = omega[ra.order]
        out["pearson"][r] = _weighted_pearson(a_sorted, b_in_a, omega_a, **moments)
        rank_b = rb.sorted_ranks(omega[rb.order])[b_to_a]
        out["spearman"][r] = _weighted_pearson(ra.sorted_ranks(omega_a), rank_b, omega_a)
        if k <= KENDALL_BOOT_MAX:
            reps = omega.astype(np.int64)
            out["kendall_a"][r] = kendall_tau_a(np.repeat(a, reps), np.repeat(b, reps))
    return out


class _RankPlan:
    """The sort of one RDM's entries, done once, so that a resample's average ranks (each entry
    repeated `omega` times) cost a cumulative sum, in sorted order."""

    def __init__(self, v: np.ndarray):
        self.order = np.argsort(v, kind="stable")
        s = v[self.order]
        new = np.r_[True, s[1:] != s[:-1]]
        self.ties = not new.all()
        self.starts = np.flatnonzero(new)
        self.group = np.cumsum(new) - 1

    def sorted_ranks(self, omega_sorted: np.ndarray) -> np.ndarray:
        """Average ranks of the entries in sorted order, given their weights in sorted order."""
        gw = np.add.reduceat(omega_sorted, self.starts) if self.ties else omega_sorted
        rank_of_group = np.cumsum(gw) - gw + (gw + 1) / 2
        return rank_of_group[self.group] if self.ties else rank_of_group


def _weighted_pearson(x: np.ndarray, y: np.ndarray, omega: np.ndarray, xx=None, yy=None, xy=None) -> float:
    """Pearson r of x and y with weights omega, from weighted moments (five dot products; `xx`,
    `yy`, `xy` are x², y², x·y when the caller has them)."""
    total = omega.sum()
    sx, sy = omega @ x, omega @ y
    sxx = omega @ (x * x if xx is None else xx) - sx * sx / total
    syy = omega @ (y * y if yy is None else yy) - sy * sy / total
    sxy = omega @ (x * y if xy is None else xy) - sx * sy / total
    return float(sxy / np.sqrt(sxx * syy)) if sxx > 0 and syy > 0 else float("nan")


def one_vs_two_many(reference: np.ndarray, correct: np.ndarray, images: np.ndarray, true, predicted) -> np.ndarray:
    """`one_vs_two` for many misclassified images at once: passed[j] for image j.

    `reference` (k × d) and `correct` (k × C) are aligned by concept; a row of `correct` that is
    NaN marks a concept without a correctly classified image (left out, like the true and the
    predicted concept of each image). An image with fewer than 3 concepts to compare fails.
    """
    w = _unit_rows(reference) @ _unit_rows(reference).T
    return one_vs_two_passed(w, image_correlations(correct, images), np.asarray(true), np.asarray(predicted))


def image_correlations(correct: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(images × k) Pearson correlation of each image's vector with each concept's correctly
    classified image (`correct`, k × C, NaN rows: none), one matrix product."""
    has = np.asarray(~np.isnan(np.asarray(correct, np.float64)).any(axis=1))
    corr = np.full((len(images), len(has)), np.nan)
    corr[:, has] = _unit_rows(images) @ _unit_rows(np.asarray(correct)[has]).T
    return corr


def one_vs_two_passed(w: np.ndarray, corr: np.ndarray, true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """passed[j]: image j's correlations to the correctly classified images (`corr` row j, NaN: no
    such image) follow its true concept's reference similarities (row true[j] of `w`) more than its
    predicted concept's, both concepts left out; fewer than 3 concepts left fails. Vectorised over
    images as masked, centred sums."""
    n_img, k = corr.shape
    cols = np.arange(k)[None, :]
    mask = ~np.isnan(corr) & (cols != true[:, None]) & (cols != predicted[:, None])
    count = mask.sum(axis=1)
    x = _masked_centred(corr, mask, count)
    r_true = _masked_pearson(x, _masked_centred(w[true], mask, count))
    r_pred = _masked_pearson(x, _masked_centred(w[predicted], mask, count))
    with np.errstate(invalid="ignore"):
        return (count >= 3) & (r_true > r_pred)


def _masked_centred(v: np.ndarray, mask: np.ndarray, count: np.ndarray) -> np.ndarray:
    v = np.where(mask, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = v.sum(axis=1) / count
    return np.where(mask, v - mean[:, None], 0.0)


def _masked_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))


@dataclass
class OneVsTwo:
    accuracy: float | None  # share of misclassified images passed; None when none qualifies
    n: int
    p_binomial: float | None  # exact one-sided binomial p against 0.5
    p_permutation: float | None  # (1 + #{null ≥ observed}) / (1 + n_permutations)
    n_permutations: int
    null: np.ndarray = field(default_factory=lambda: np.zeros(0))  # passes under each permutation


def one_vs_two_test(
    w: np.ndarray, corr: np.ndarray, true, predicted, *, n_permutations: int = 1000, seed: int = 0
) -> OneVsTwo:
    """The 1 vs 2 accuracy with two p-values: the exact binomial of its passes against chance (each
    image an independent coin under the null) and a permutation p that permutes the reference's
    concepts (rows and columns of `w`) and re-runs the test, as seed 004 tests its 2 vs 2."""
    from embstore.analysis import stats

    true, predicted = np.asarray(true, np.int64), np.asarray(predicted, np.int64)
    n = len(true)
    if n == 0:
        return OneVsTwo(None, 0, None, None, n_permutations)
    w = np.asarray(w, np.float64)
    passed = int(one_vs_two_passed(w, corr, true, predicted).sum())
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(n_permutations):
        perm = rng.permutation(w.shape[0])
        null.append(one_vs_two_passed(w[np.ix_(perm, perm)], corr, true, predicted).sum())
    p_perm = (1 + int((np.array(null) >= passed).sum())) / (1 + n_permutations) if n_permutations else None
    return OneVsTwo(passed / n, n, stats.binomial_greater(passed, n), p_perm, n_permutations, np.array(null))


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
