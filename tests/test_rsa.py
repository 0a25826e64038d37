import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from embstore.analysis.rsa import _pair_loop, correlation_matrix, rsa, similarity_encoding, two_vs_two, two_vs_two_loop


def _spaces(k, p=12, q=20, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(k, 5))
    ref = latent @ rng.normal(size=(5, p)) + noise * rng.normal(size=(k, p))
    layer = latent @ rng.normal(size=(5, q)) + noise * rng.normal(size=(k, q))
    return ref, layer


@pytest.mark.parametrize("k, seed, noise", [(4, 0, 1.0), (5, 1, 0.5), (9, 2, 2.0), (17, 3, 1.0), (30, 4, 5.0)])
def test_vectorised_two_vs_two_equals_the_papers_loop_exactly(k, seed, noise):
    ref, layer = _spaces(k, noise=noise, seed=seed)
    w, i = correlation_matrix(ref), correlation_matrix(layer)
    acc, passed = two_vs_two(w, i)
    assert acc == two_vs_two_loop(w, i)
    for a in range(k):
        for b in range(a + 1, k):
            assert passed[a, b] == _pair_loop(w, i, a, b)


def test_correlation_matrix_is_numpy_corrcoef():
    ref, _ = _spaces(25)
    np.testing.assert_allclose(correlation_matrix(ref), np.corrcoef(ref), atol=1e-12)


def test_related_spaces_beat_chance_and_permutations_say_so():
    ref, layer = _spaces(40, noise=0.5, seed=5)
    rng = np.random.default_rng(1)
    groups = [layer + 0.3 * rng.normal(size=layer.shape) for _ in range(5)]
    result = similarity_encoding(ref, groups, n_permutations=200, seed=0)
    assert result.accuracy > 0.8 and len(result.per_group) == 5
    assert result.p_value == pytest.approx(1 / 201)
    assert 0.35 < result.null.mean() < 0.65  # the null sits at chance
    unrelated = similarity_encoding(ref, [np.random.default_rng(9).normal(size=layer.shape)], n_permutations=200)
    assert unrelated.p_value > 0.01


def test_permutation_of_one_space_reruns_the_whole_method():
    ref, layer = _spaces(12, seed=7)
    perm = np.random.default_rng(0).permutation(12)
    w, i = correlation_matrix(ref), correlation_matrix(layer)
    permuted_embeddings = two_vs_two(w, correlation_matrix(layer[perm]))[0]
    permuted_matrix = two_vs_two(w, i[perm][:, perm])[0]
    assert permuted_embeddings == permuted_matrix


def test_rsa_agrees_with_scipy_on_rdm_upper_triangles():
    ref, layer = _spaces(30, seed=8)
    s, p = rsa(ref, layer)
    iu = np.triu_indices(30, 1)
    a, b = 1 - np.corrcoef(ref)[iu], 1 - np.corrcoef(layer)[iu]
    assert s == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert p == pytest.approx(pearsonr(a, b).statistic, abs=1e-12)


def test_float32_null_plan_decides_like_float64():
    from embstore.analysis.rsa import _Plan

    ref, layer = _spaces(200, p=30, q=60, noise=1.0, seed=11)
    w, i = correlation_matrix(ref), correlation_matrix(layer)
    assert np.array_equal(_Plan(w).passed(i), _Plan(w, np.float32).passed(i.astype(np.float32)))


def test_permutation_null_is_the_method_rerun_on_permuted_rows():
    ref, layer = _spaces(25, seed=12)
    result = similarity_encoding(ref, [layer], n_permutations=30, seed=4)
    rng = np.random.default_rng(4)
    w = correlation_matrix(ref)
    expected = [two_vs_two(w, correlation_matrix(layer[rng.permutation(25)]))[0] for _ in range(30)]
    np.testing.assert_allclose(result.null, expected, atol=1e-12)
    assert result.p_value == (1 + sum(e >= result.accuracy for e in expected)) / 31


def test_one_vs_two_passes_when_the_image_looks_like_its_true_class():
    from embstore.analysis.rsa import one_vs_two

    ref, layer = _spaces(20, noise=0.2, seed=13)
    true, predicted = 3, 11
    rng = np.random.default_rng(0)
    looks_true = layer[true] + 0.05 * rng.normal(size=layer.shape[1])
    looks_predicted = layer[predicted] + 0.05 * rng.normal(size=layer.shape[1])
    assert one_vs_two(ref, layer, looks_true, true, predicted)
    assert not one_vs_two(ref, layer, looks_predicted, true, predicted)


def test_one_vs_two_for_many_images_equals_the_per_image_loop():
    from embstore.analysis.rsa import one_vs_two, one_vs_two_many

    ref, layer = _spaces(30, noise=0.6, seed=5)
    rng = np.random.default_rng(2)
    correct = layer + 0.3 * rng.normal(size=layer.shape)
    correct[[4, 9, 17, 22, 28]] = np.nan  # concepts with no correctly classified image
    trues = rng.integers(0, 30, 60)
    preds = (trues + rng.integers(1, 30, 60)) % 30
    images = layer[trues] * 0.5 + layer[preds] * 0.5 + 0.4 * rng.normal(size=(60, layer.shape[1]))
    got = one_vs_two_many(ref, correct, images, trues, preds)
    expected = []
    for img, t, p in zip(images, trues, preds):
        members = [c for c in range(30) if not np.isnan(correct[c]).any() and c not in (t, p)]
        order = members + [t, p]
        sub = np.vstack([correct[members], np.zeros((2, layer.shape[1]))])
        expected.append(one_vs_two(ref[order], sub, img, len(members), len(members) + 1))
    assert got.tolist() == expected and 10 < sum(expected) < 50
    few = np.full_like(correct, np.nan)
    few[:4] = correct[:4] if not np.isnan(correct[:4]).any() else layer[:4]
    assert not one_vs_two_many(ref, few, images[:1], [0], [1]).any()  # 2 concepts left to compare: fails


def test_kendall_tau_a_equals_a_brute_force_count_with_ties():
    from embstore.analysis.rsa import kendall_tau_a

    rng = np.random.default_rng(3)
    for n, levels in ((2, 3), (7, 3), (40, 5), (60, 1000)):
        x, y = rng.integers(0, levels, n).astype(float), rng.integers(0, levels, n).astype(float)
        concordance = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i in range(n) for j in range(i + 1, n))
        assert kendall_tau_a(x, y) == pytest.approx(concordance / (n * (n - 1) / 2), abs=1e-12), (n, levels)
    assert kendall_tau_a(np.ones(5), np.arange(5.0)) == 0.0  # one side constant: no pair ordered


def test_rsa_measures_on_each_concept_resample_equal_scipy_on_the_materialised_resample():
    from scipy.stats import kendalltau

    from embstore.analysis.rsa import concept_weights, kendall_tau_a, rsa_resampled

    ref, layer = _spaces(9, seed=6)
    w, i = correlation_matrix(ref), correlation_matrix(layer)
    weights = concept_weights(9, 5, seed=2)
    got = rsa_resampled(w, i, weights)
    idx = np.random.default_rng(2).integers(0, 9, size=(5, 9))
    assert (np.stack([np.bincount(r, minlength=9) for r in idx]) == weights).all()
    for r, row in enumerate(idx):
        pairs = [(p, q) for p in range(9) for q in range(p + 1, 9) if row[p] != row[q]]  # no copy with itself
        a = np.array([1 - w[row[p], row[q]] for p, q in pairs])
        b = np.array([1 - i[row[p], row[q]] for p, q in pairs])
        assert got["spearman"][r] == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
        assert got["pearson"][r] == pytest.approx(pearsonr(a, b).statistic, abs=1e-12)
        assert got["kendall_a"][r] == pytest.approx(kendall_tau_a(a, b), abs=1e-12)
        assert abs(got["kendall_a"][r]) <= abs(kendalltau(a, b).statistic) + 1e-12  # ties shrink τ-a


def test_concept_bootstrap_of_two_vs_two_equals_the_loop_on_resampled_concepts():
    from embstore.analysis.rsa import _Plan, _resampled_accuracy, concept_weights

    ref, layer = _spaces(11, noise=0.8, seed=7)
    w, i = correlation_matrix(ref), correlation_matrix(layer)
    idx = np.random.default_rng(4).integers(0, 11, size=(4, 11))
    for row, m in zip(idx, concept_weights(11, 4, seed=4)):
        passed = total = 0
        for p in range(11):
            for q in range(p + 1, 11):
                if row[p] == row[q]:
                    continue  # a concept is never tested against its own copy
                keep = [r for r in range(11) if row[r] not in (row[p], row[q])]  # every copy of both left out
                wr, ir = w[np.ix_(row, row)], i[np.ix_(row, row)]

                def corr(x, y):
                    return float(np.nan_to_num(np.corrcoef(x, y)[0, 1]))

                wa, wb, ia, ib = wr[p, keep], wr[q, keep], ir[p, keep], ir[q, keep]
                passed += (corr(wa, ia) + corr(wb, ib)) - (corr(wa, ib) + corr(wb, ia)) > 1e-10
                total += 1
        assert _Plan(w, weights=m).accuracy(i) == pytest.approx(passed / total, abs=1e-12)
        assert _resampled_accuracy(w, [i], m) == pytest.approx(passed / total, abs=1e-6)  # float32, in place
    ones = np.ones(11)
    assert _Plan(w, weights=ones).accuracy(i) == pytest.approx(two_vs_two(w, i)[0], abs=1e-12)


def test_one_vs_two_permutation_p_is_the_test_rerun_on_a_permuted_reference():
    from embstore.analysis.rsa import image_correlations, one_vs_two_passed, one_vs_two_test

    ref, layer = _spaces(20, noise=0.4, seed=8)
    rng = np.random.default_rng(5)
    correct = layer + 0.2 * rng.normal(size=layer.shape)
    trues = rng.integers(0, 20, 30)
    preds = (trues + rng.integers(1, 20, 30)) % 20
    images = 0.7 * layer[trues] + 0.3 * layer[preds] + 0.3 * rng.normal(size=(30, layer.shape[1]))
    w, corr = correlation_matrix(ref), image_correlations(correct, images)
    got = one_vs_two_test(w, corr, trues, preds, n_permutations=49, seed=3)
    passed = int(one_vs_two_passed(w, corr, trues, preds).sum())
    perm_rng = np.random.default_rng(3)
    null = []
    for _ in range(49):
        perm = perm_rng.permutation(20)
        null.append(one_vs_two_passed(correlation_matrix(ref[perm]), corr, trues, preds).sum())
    assert got.accuracy == passed / 30 and passed > 20
    assert got.p_permutation == (1 + sum(v >= passed for v in null)) / 50
    from scipy.stats import binomtest

    assert got.p_binomial == pytest.approx(binomtest(passed, 30, 0.5, alternative="greater").pvalue, rel=1e-12)


def test_two_vs_two_and_one_vs_two_permutation_nulls_are_calibrated():
    """Unrelated spaces, 200 draws. The reported p (ties with the observed count against it) is never
    anti-conservative; the permutation distribution itself is right: the randomised p that splits the
    ties uniformly, (#{null > obs} + U·(#{null = obs} + 1)) / (n + 1), is uniform (KS p > 0.01). (With
    8 concepts and 12 images both statistics are coarse, so the reported p alone is not uniform.)"""
    from scipy.stats import kstest

    from embstore.analysis.rsa import image_correlations, one_vs_two_test

    rng = np.random.default_rng(11)
    reported: dict[str, list] = {"2v2": [], "1v2": []}
    randomised: dict[str, list] = {"2v2": [], "1v2": []}

    def record(name, p, null, observed):
        reported[name].append(p)
        above, tied = (null > observed + 1e-12).sum(), (np.abs(null - observed) <= 1e-12).sum()
        randomised[name].append((above + rng.uniform() * (tied + 1)) / (len(null) + 1))

    for _ in range(200):
        ref, layer = rng.normal(size=(8, 6)), rng.normal(size=(8, 10))
        enc = similarity_encoding(ref, [layer], n_permutations=99, seed=int(rng.integers(1 << 30)))
        record("2v2", enc.p_value, enc.null, enc.accuracy)
        trues = rng.integers(0, 8, 12)
        preds = (trues + rng.integers(1, 8, 12)) % 8
        corr = image_correlations(layer, rng.normal(size=(12, 10)))
        got = one_vs_two_test(correlation_matrix(ref), corr, trues, preds, n_permutations=99,
                              seed=int(rng.integers(1 << 30)))  # fmt: skip
        record("1v2", got.p_permutation, got.null, got.accuracy * got.n)
    for name in reported:
        assert kstest(randomised[name], "uniform").pvalue > 0.01, name
        assert np.mean(np.array(reported[name]) <= 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 200), name
        assert np.mean(np.array(reported[name]) <= 0.5) > 0.3, name  # and not uselessly conservative
