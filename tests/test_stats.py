"""The statistics of seed 000's comparisons (analysis/stats.py, analysis/comparisons.py), against
independent references (scipy's exact binomial test, hand-written resampling loops, brute-force AUC)
and by simulation: null p-values uniform, interval coverage, a planted difference found."""

import numpy as np
import pytest
from scipy import stats as sp
from scipy.stats import binomtest

from embstore.analysis import stats
from embstore.analysis.comparisons import compare_arrays
from embstore.errors import UsageError


def _brute_auc(pos, neg) -> float:
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def test_exact_binomial_and_mcnemar_equal_scipys_binomtest():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 60))
        k = int(rng.integers(0, n + 1))
        if n:
            assert stats.binomial_two_sided(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-12)
            assert stats.binomial_greater(k, n) == pytest.approx(
                binomtest(k, n, 0.5, alternative="greater").pvalue, rel=1e-12
            )
        a, b = rng.random(50) < 0.3, rng.random(50) < 0.4
        a_only, b_only, p = stats.mcnemar_exact(a, b)
        assert (a_only, b_only) == (int((~a & b).sum()), int((a & ~b).sum()))
        d = a_only + b_only
        assert p == (1.0 if d == 0 else pytest.approx(binomtest(a_only, d, 0.5).pvalue, rel=1e-12))


def test_auc_of_resamples_equals_a_brute_force_count_with_ties():
    rng = np.random.default_rng(1)
    pos, neg = np.round(rng.normal(0.5, 1, size=(30, 40)), 1), np.round(rng.normal(0, 1, size=(30, 40)), 1)
    got = stats.aucs_of_resamples(pos, neg)
    assert got == pytest.approx([_brute_auc(p, q) for p, q in zip(pos, neg)], abs=1e-12)


def test_triplet_resample_aucs_equal_ranking_each_resample(monkeypatch):
    rng = np.random.default_rng(6)
    cr, cu = np.round(rng.normal(0.3, 1, 90), 1), np.round(rng.normal(0, 1, 90), 1)  # with ties
    idx = stats.resamples(90, 50, seed=1)
    fast = stats.aucs_of_triplet_resamples(cr, cu, idx)
    np.testing.assert_allclose(fast, stats.aucs_of_resamples(cr[idx], cu[idx]), atol=1e-12)
    monkeypatch.setattr(stats, "PAIRWISE_MAX", 10)  # the ranking path beyond the limit
    np.testing.assert_allclose(stats.aucs_of_triplet_resamples(cr, cu, idx), fast, atol=1e-12)


def test_paired_bootstrap_is_reproducible_and_equals_a_hand_loop():
    rng = np.random.default_rng(2)
    n, n_boot = 60, 300
    ra, ua = rng.normal(0.4, 1, n), rng.normal(0, 1, n)
    rb, ub = ra + rng.normal(0, 0.5, n), ua + rng.normal(0, 0.5, n)
    wa, wb = ra <= ua, rb <= ub
    out = compare_arrays(wa, wb, (ra, ua), (rb, ub), n_boot=n_boot, seed=7)
    assert out == compare_arrays(wa, wb, (ra, ua), (rb, ub), n_boot=n_boot, seed=7)  # the seed fixes it
    assert out != compare_arrays(wa, wb, (ra, ua), (rb, ub), n_boot=n_boot, seed=8)
    # the same draws, one resample at a time, every statistic computed by hand
    draw = np.random.default_rng(7)
    d_err, d_auc = [], []
    for _ in range(n_boot):
        i = draw.integers(0, n, size=n)
        d_err.append(wa[i].mean() - wb[i].mean())
        d_auc.append(_brute_auc(ra[i], ua[i]) - _brute_auc(rb[i], ub[i]))
    assert out["d_error_ci"] == pytest.approx(tuple(np.percentile(d_err, [2.5, 97.5])), abs=1e-12)
    assert out["d_auc_ci"] == pytest.approx(tuple(np.percentile(d_auc, [2.5, 97.5])), abs=1e-12)
    far = min(sum(d <= 0 for d in d_auc), sum(d >= 0 for d in d_auc))
    assert out["d_auc_p"] == pytest.approx(min(1, 2 * (far + 1) / (n_boot + 1)))
    assert out["auc_a"] == pytest.approx(_brute_auc(ra, ua)) and out["d_error"] == pytest.approx(wa.mean() - wb.mean())


def test_mcnemar_p_values_are_never_anti_conservative_under_the_null():
    """Two models that err alike (independently, at the same rate) on 400 triplets, 300 times. An
    exact test of a discrete count is conservative: its null p-values are not uniform but lie above
    it (P(p <= a) <= a), so the check is the one-sided KS test of exactly that, and the rate at 0.05."""
    rng = np.random.default_rng(3)
    ps = []
    for _ in range(300):
        rate = rng.uniform(0.2, 0.4)
        ps.append(stats.mcnemar_exact(rng.random(400) < rate, rng.random(400) < rate)[2])
    ps = np.array(ps)
    # H0 of alternative="greater": the p-values' CDF lies at or below the uniform's (the test is valid)
    assert sp.kstest(ps, "uniform", alternative="greater").pvalue > 0.01, np.percentile(ps, [5, 25, 50, 75])
    assert (ps < 0.05).mean() <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)
    assert (ps < 0.5).mean() > 0.35  # and not uselessly conservative (~150 discordant triplets each)


def test_a_95_percent_auc_interval_covers_the_true_auc_95_percent_of_the_time():
    """Related cosines ~ N(0.6, 1), unrelated ~ N(0, 1): true AUC Φ(0.6/√2); 400 triplets, 300 draws."""
    rng = np.random.default_rng(4)
    true = sp.norm.cdf(0.6 / np.sqrt(2))
    covered = 0
    for k in range(300):
        cr, cu = rng.normal(0.6, 1, 400), rng.normal(0, 1, 400)
        idx = stats.resamples(400, 400, seed=k)
        low, high = stats.percentile_interval(stats.aucs_of_triplet_resamples(cr, cu, idx))
        covered += low <= true <= high
    assert 0.92 <= covered / 300 <= 0.98, covered / 300


def test_a_planted_difference_of_40_triplets_is_found():
    """Model b matches 40 of the 400 triplets that a misses (and otherwise agrees): McNemar and the
    paired interval both see it; the same models with nothing planted are not told apart."""
    rng = np.random.default_rng(5)
    n = 400
    ra, ua = rng.normal(0.5, 1, n), rng.normal(0, 1, n)
    wa = ra <= ua
    planted = rng.choice(np.nonzero(wa)[0], 40, replace=False)
    rb, ub = ra.copy(), ua.copy()
    rb[planted] = ub[planted] + 0.5  # b matches these
    wb = rb <= ub
    out = compare_arrays(wa, wb, (ra, ua), (rb, ub), n_boot=1000, seed=0)
    assert (out["a_only"], out["b_only"]) == (0, 40) and out["mcnemar_p"] < 1e-10
    assert out["d_error"] == pytest.approx(0.1) and out["d_error_ci"][0] > 0  # a errs more, surely
    assert out["d_auc"] < 0 and out["d_auc_ci"][1] < 0 and out["d_auc_p"] < 0.01
    same = compare_arrays(wa, wa, (ra, ua), (ra, ua), n_boot=1000, seed=0)
    assert same["mcnemar_p"] == 1.0 and same["d_error_ci"] == (0.0, 0.0)


def test_permutation_floor_is_one_over_n_plus_one():
    assert stats.permutation_floor(1000) == pytest.approx(1 / 1001)
    assert stats.permutation_floor(999) >= 0.001  # 999 permutations cannot give the paper's p < 0.001


def _holm_by_hand(ps):
    """Holm's step-down as a textbook states it: the i-th smallest p times (m - i), made monotone."""
    m, out, running = len(ps), [0.0] * len(ps), 0.0
    for i, k in enumerate(sorted(range(m), key=lambda k: ps[k])):
        running = max(running, min(1.0, (m - i) * ps[k]))
        out[k] = running
    return out


def test_holm_and_benjamini_hochberg_equal_a_hand_loop_and_scipy():
    rng = np.random.default_rng(8)
    for _ in range(100):
        ps = list(rng.uniform(0, 1, int(rng.integers(1, 40))) ** 3)  # many small ones
        assert stats.adjusted(ps, "holm") == pytest.approx(_holm_by_hand(ps), abs=1e-12)
        assert stats.adjusted(ps, "bh") == pytest.approx(list(sp.false_discovery_control(ps)), abs=1e-12)
        assert stats.adjusted(ps, "none") == pytest.approx(ps)
    # a layer without a test is left out of the family and stays untested
    assert stats.adjusted([0.01, None, 0.04, float("nan")], "holm") == [pytest.approx(0.02), None, 0.04, None]
    with pytest.raises(ValueError, match="choose one of holm, bh, none"):
        stats.adjusted([0.1], "bonferroni")


def test_an_alpha_below_what_the_permutations_can_reach_is_one_line_naming_the_count():
    assert stats.floor_warning(0.05, 1000) is None and stats.floor_warning(0.001, 1000) is None  # 1/1001 < 0.001
    raw = stats.floor_warning(0.001, 999)
    assert "1/1000" in raw and "--permutations 1000 or more" in raw and "\n" not in raw
    holm = stats.floor_warning(0.05, 1000, family=60)  # Holm's smallest p over 60 layers: 60/1001
    assert "60/1001" in holm and "--permutations 1200 or more" in holm
    assert stats.floor_warning(0.05, 1200, family=60) is None
    with pytest.raises(UsageError, match="between 0 and 1"):
        stats.floor_warning(1.5, 100)


def test_spearman_across_models_and_its_interval_equal_scipy_and_a_hand_loop():
    """Fig. 6's correlation: ρ is scipy's; the interval is the percentile interval of scipy's ρ on
    the documented resamples of the models (degenerate resamples left out)."""
    from types import SimpleNamespace

    from embstore.analysis.comparisons import error_correlation

    rng = np.random.default_rng(4)
    top1 = rng.uniform(0.2, 0.4, 8)
    err = 0.1 + 0.5 * top1 + rng.normal(0, 0.02, 8)
    auc = 1 - (0.05 + 0.3 * top1 + rng.normal(0, 0.03, 8))
    results = [SimpleNamespace(model_key=f"m{i}", error=e, auc=a) for i, (e, a) in enumerate(zip(err, auc))]
    got = error_correlation(results, {f"m{i}": t for i, t in enumerate(top1)}, n_boot=300, seed=2)
    assert got.rho_error == pytest.approx(sp.spearmanr(err, top1).statistic, abs=1e-12)
    assert got.rho_auc == pytest.approx(sp.spearmanr(1 - auc, top1).statistic, abs=1e-12)
    loop = []
    for idx in np.random.default_rng(2).integers(0, 8, size=(300, 8)):
        if len(set(err[idx])) > 1 and len(set(top1[idx])) > 1:
            loop.append(sp.spearmanr(err[idx], top1[idx]).statistic)
    assert got.ci_error == pytest.approx(tuple(np.percentile(loop, [2.5, 97.5])), abs=1e-12)
    assert got.ci_error[0] <= got.rho_error <= got.ci_error[1] and "over 8 models" in got.legend()
    two = error_correlation(results[:2], {"m0": 0.2, "m1": 0.3})
    assert two.rho_error is None and "needs >= 3 models" in two.legend()
