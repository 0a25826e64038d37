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
