import numpy as np
import pytest

import embstore
from embstore import testing as synthetic
from embstore.analysis import rsa
from embstore.analysis.rsatables import run_rsa
from embstore.errors import NotFoundError
from embstore.labels import vectors
from embstore.labels.imagenet import classes
from embstore.store.sql import run_sql


def test_glove_coverage_of_the_1000_classes_matches_the_offline_notes():
    space = vectors.open_space("glove")
    kept, matrix, cov = vectors.class_vectors(space, range(1000))
    summary = cov.summary()
    assert summary["name"] == 975 and summary["name"] + summary["synonym"] == 987
    assert summary["dropped"] == 0 and matrix.shape == (1000, 50)
    assert cov.kept[classes().resolve("brambling").index] == "hypernym:finch"
    cat = space.phrase("cat")
    nearest = np.argsort(-(space.matrix @ cat) / np.linalg.norm(space.matrix, axis=1))[:3]
    words = {w for w, i in space.index.items() if i in set(nearest.tolist())}
    assert "dog" in words


def test_word_vector_files_in_both_text_formats_and_binary(tmp_path):
    words = {"tench": [1.0, 0.0, 2.0], "goldfish": [0.5, 0.5, 0.5]}
    (tmp_path / "g.txt").write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in words.items()))
    (tmp_path / "w.txt").write_text("2 3\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in words.items()))
    with open(tmp_path / "w.bin", "wb") as f:
        f.write(b"2 3\n")
        for w, v in words.items():
            f.write(w.encode() + b" " + np.asarray(v, np.float32).tobytes() + b"\n")
    for path in ("g.txt", "w.txt", "w.bin"):
        space = vectors.open_space(str(tmp_path / path))
        np.testing.assert_allclose(space.phrase("tench"), words["tench"])
    with pytest.raises(NotFoundError, match="not found"):
        vectors.open_space(str(tmp_path / "nope.txt"))


def test_rsa_table_for_a_layer_that_encodes_the_word_vectors(tmp_path):
    space = vectors.open_space("glove")
    n = 24
    _, glove, _ = vectors.class_vectors(space, range(n))
    rng = np.random.default_rng(0)
    centres = {"encodes": np.abs(glove @ rng.normal(size=(50, 64))), "noise": rng.gamma(2, 1, size=(n, 16))}
    store = embstore.open(tmp_path / "s", create=True)
    data = synthetic.populate(
        store, n_classes=n, per_class=5, layers={"noise": 16, "encodes": 64}, centres=centres, noise=0.5
    )
    report = run_rsa(store.core, None, "glove", groups=5, n_permutations=99, seed=1)
    by_layer = {r.layer: r for r in report.rows}
    assert [r.layer for r in report.rows] == ["noise", "encodes"]  # network order
    assert by_layer["encodes"].acc_2v2 > 0.8 and by_layer["encodes"].p_value == pytest.approx(0.01)
    assert 0.3 < by_layer["noise"].acc_2v2 < 0.7
    # the stored numbers are the library's functions applied to the documented grouping
    y, x = data["labels"], data["vectors"]["encodes"]
    groups = [np.stack([x[np.nonzero(y == c)[0][g]] for c in range(n)]) for g in range(5)]
    w = rsa.correlation_matrix(glove)
    expected = np.mean([rsa.two_vs_two(w, rsa.correlation_matrix(m))[0] for m in groups])
    assert by_layer["encodes"].acc_2v2 == pytest.approx(expected, abs=1e-12)
    _, rows = run_sql(store.core, "SELECT layer, acc_2v2, p_value, reference FROM rsa_results ORDER BY layer_order")
    assert [r[0] for r in rows] == ["noise", "encodes"] and rows[1][3] == "glove-6B-50d"
    assert rows[1][1] == pytest.approx(by_layer["encodes"].acc_2v2)
    # the stored RSA r: scipy on the upper triangles of 1 - Pearson RDMs of GloVe and of the class
    # prototypes (each concept's mean over its 5 group images), computed here without embstore
    from scipy.stats import pearsonr, spearmanr

    iu = np.triu_indices(n, 1)
    ref_rdm = (1 - np.corrcoef(glove))[iu]
    _, stored = run_sql(store.core, "SELECT layer, rsa_spearman, rsa_pearson FROM rsa_results ORDER BY layer_order")
    for layer, s_rsa, p_rsa in stored:
        xl = data["vectors"][layer].astype(np.float64)
        protos = np.stack([np.mean([xl[np.nonzero(y == c)[0][g]] for g in range(5)], axis=0) for c in range(n)])
        layer_rdm = (1 - np.corrcoef(protos))[iu]
        assert s_rsa == pytest.approx(spearmanr(ref_rdm, layer_rdm).statistic, abs=1e-9), layer
        assert p_rsa == pytest.approx(pearsonr(ref_rdm, layer_rdm).statistic, abs=1e-9), layer
    assert stored[1][1] > 0.3 and abs(stored[0][1]) < 0.15, stored  # the encoding layer follows GloVe, noise not
    # p-values corrected across the run's layers, stored beside the raw ones
    _, ps = run_sql(store.core, "SELECT p_value, p_holm, p_bh FROM rsa_results ORDER BY layer_order")
    raw = [r[0] for r in ps]
    low, high = sorted(raw)  # two layers: Holm doubles the smaller p, and the larger stays at least that
    holm = {low: min(1, 2 * low), high: min(1, max(2 * low, high))}
    assert [r[1] for r in ps] == pytest.approx([holm[p] for p in raw])
    from scipy.stats import false_discovery_control

    assert [r[2] for r in ps] == pytest.approx(list(false_discovery_control(raw)))
    wn = run_rsa(store.core, None, "wordnet-wup", groups=5, n_permutations=0)
    assert all(r.p_value is None for r in wn.rows) and len(wn.concepts) == n


def test_too_few_concepts_is_one_clear_error(tmp_path):
    store = embstore.open(tmp_path / "s", create=True)
    synthetic.populate(store, n_classes=3, per_class=5)
    with pytest.raises(NotFoundError, match="needs at least 4"):
        run_rsa(store.core, None, "glove", n_permutations=0)


@pytest.mark.slow
def test_sentence_embedding_space_from_the_offline_minilm_package():
    space = vectors.open_space("minilm")
    kept, matrix, cov = vectors.class_vectors(space, range(1000))
    assert matrix.shape == (1000, 384) and cov.summary()["name"] == 1000
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    knot = classes().resolve("knot").index
    nearest = [classes()[i].name for i in np.argsort(-(unit @ unit[knot]))[1:4]]
    assert {"bow tie", "Windsor tie", "bolo tie"} & set(nearest)


def test_one_vs_two_counts_misclassified_images_and_vectors_are_joinable(tmp_path):
    space = vectors.open_space("glove")
    n = 12
    _, glove, _ = vectors.class_vectors(space, range(n))
    rng = np.random.default_rng(3)
    centres = {"hidden": np.abs(glove @ rng.normal(size=(50, 32)))}
    # images 5..9 are class 1; call two of them class 7 (wrong), and one image of class 2 class 40 (not a concept)
    wrong = {5: 7, 6: 7, 10: 40}
    store = embstore.open(tmp_path / "s", create=True)
    data = synthetic.populate(
        store, n_classes=n, per_class=5, layers={"hidden": 32}, centres=centres, noise=0.3, predicted=wrong
    )
    report = run_rsa(store.core, None, "glove", groups=3, n_permutations=0)
    row = report.rows[0]
    assert row.n_1v2 == 2  # the image predicted as class 40 has no concept for its prediction
    # reference: the same test, written out from the paper for the two images
    ids, x = data["ids"], data["vectors"]["hidden"]
    correct = {c: min(i for r, i in enumerate(ids) if data["labels"][r] == c and r not in wrong) for c in range(n)}
    pos = {i: r for r, i in enumerate(ids)}
    passed = 0
    for r in (5, 6):
        members = [c for c in range(n) if c not in (1, 7)]
        w_true = [np.corrcoef(glove[1], glove[c])[0, 1] for c in members]
        w_pred = [np.corrcoef(glove[7], glove[c])[0, 1] for c in members]
        i_mis = [np.corrcoef(x[r], x[pos[correct[c]]])[0, 1] for c in members]
        passed += np.corrcoef(i_mis, w_true)[0, 1] > np.corrcoef(i_mis, w_pred)[0, 1]
    assert row.acc_1v2 == passed / 2
    _, rows = run_sql(
        store.core, "SELECT count(*), count(DISTINCT label_index), any_value(len(vec)) FROM reference_vectors"
    )
    assert rows == [(n, n, 50)]
    _, sims = run_sql(store.core, "SELECT round(wordnet_wup(616, 616), 6), round(wordnet_path(616, 488), 4)")
    assert sims == [(1.0, pytest.approx(0.1111, abs=1e-4))]
