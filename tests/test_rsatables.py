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
    # within each group (seed 004 §3.3): image 5 (group 0) and 6 (group 1) against their own group's
    # correctly classified images only; image 10 (class 2, group 0) is wrong, so group 0 lacks class 2
    within = run_rsa(store.core, None, "glove", groups=3, n_permutations=19, scope_1v2="within-group").rows[0]
    of_class = {c: sorted((i for r, i in enumerate(ids) if data["labels"][r] == c), key=pos.get) for c in range(n)}
    passed = 0
    for r, g in ((5, 0), (6, 1)):
        members = [c for c in range(n) if c not in (1, 7) and pos[of_class[c][g]] not in wrong]
        assert (g == 0) == (2 not in members)
        w_true = [np.corrcoef(glove[1], glove[c])[0, 1] for c in members]
        w_pred = [np.corrcoef(glove[7], glove[c])[0, 1] for c in members]
        i_mis = [np.corrcoef(x[r], x[pos[of_class[c][g]]])[0, 1] for c in members]
        passed += np.corrcoef(i_mis, w_true)[0, 1] > np.corrcoef(i_mis, w_pred)[0, 1]
    assert (within.n_1v2, within.acc_1v2) == (2, passed / 2) and within.p_1v2_perm is not None
    assert run_sql(store.core, "SELECT DISTINCT scope_1v2 FROM rsa_results")[1] == [("within-group",)]
    _, rows = run_sql(
        store.core, "SELECT count(*), count(DISTINCT label_index), any_value(len(vec)) FROM reference_vectors"
    )
    assert rows == [(n, n, 50)]
    _, sims = run_sql(store.core, "SELECT round(wordnet_wup(616, 616), 6), round(wordnet_path(616, 488), 4)")
    assert sims == [(1.0, pytest.approx(0.1111, abs=1e-4))]


def _resample_loop(w, mats, idx):
    """The 2 vs 2 test re-run by the paper's loop on the concepts `idx` (a resample with copies): a
    concept is never paired with its own copy, and a pair leaves out every copy of both concepts."""
    accs = []
    for m in mats:
        wr, ir = w[np.ix_(idx, idx)], m[np.ix_(idx, idx)]
        passed = total = 0
        for p in range(len(idx)):
            for q in range(p + 1, len(idx)):
                if idx[p] == idx[q]:
                    continue
                keep = [r for r in range(len(idx)) if idx[r] not in (idx[p], idx[q])]

                def corr(x, y):
                    return float(np.nan_to_num(np.corrcoef(x, y)[0, 1]))

                wa, wb, ia, ib = wr[p, keep], wr[q, keep], ir[p, keep], ir[q, keep]
                passed += (corr(wa, ia) + corr(wb, ib)) - (corr(wa, ib) + corr(wb, ia)) > rsa.TIE
                total += 1
        accs.append(passed / total)
    return float(np.mean(accs))


def test_rsa_statistics_stored_per_layer_and_two_layers_compared_from_the_cli(tmp_path):
    """Per-group accuracies, Eq. 1/Eq. 2 sums, concept-bootstrap intervals of the 2 vs 2 accuracy and
    of RSA, each against a hand-written reference; `analyze compare --vectors` tests two layers on
    the same concept resamples, stores the test, and a new result of either side deletes it."""
    import json

    from scipy.stats import kendalltau, pearsonr, spearmanr

    from embstore.analysis import stats

    from .conftest import run_embstore

    space = vectors.open_space("glove")
    n, n_boot, seed = 10, 200, 5
    _, glove, _ = vectors.class_vectors(space, range(n))
    rng = np.random.default_rng(2)
    centres = {"encodes": np.abs(glove @ rng.normal(size=(50, 24))), "noise": rng.gamma(2, 1, size=(n, 8))}
    store = embstore.open(tmp_path / "s", create=True)
    data = synthetic.populate(
        store, n_classes=n, per_class=3, layers={"noise": 8, "encodes": 24}, centres=centres, noise=0.5
    )
    report = run_rsa(store.core, None, "glove", groups=3, n_permutations=19, seed=seed, n_boot=n_boot)
    y = data["labels"]
    w = np.corrcoef(glove)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # the documented resamples, by hand
    for row in report.rows:
        x = data["vectors"][row.layer].astype(np.float64)
        mats = [np.corrcoef(np.stack([x[np.nonzero(y == c)[0][g]] for c in range(n)])) for g in range(3)]
        per_group = [rsa.two_vs_two_loop(w, m) for m in mats]
        assert row.acc_groups == pytest.approx(per_group, abs=1e-12)
        assert row.acc_sd == pytest.approx(np.std(per_group, ddof=1), abs=1e-12)
        eq1 = eq2 = 0.0
        for m in mats:
            for a in range(n):
                for b in range(a + 1, n):
                    keep = [c for c in range(n) if c not in (a, b)]
                    wk, mk = w[:, keep], m[:, keep]
                    eq1 += np.corrcoef(wk[a], mk[a])[0, 1] + np.corrcoef(wk[b], mk[b])[0, 1]
                    eq2 += np.corrcoef(wk[a], mk[b])[0, 1] + np.corrcoef(wk[b], mk[a])[0, 1]
        pairs = 3 * n * (n - 1) / 2
        assert (row.eq1_mean, row.eq2_mean) == pytest.approx((eq1 / pairs, eq2 / pairs), abs=1e-9)
        boot = row._resamples
        for r in range(3):  # the stored resampled accuracies are the loop on the resampled concepts
            assert boot["acc_2v2"][r] == pytest.approx(_resample_loop(w, mats, idx[r]), abs=1e-6)
        assert row.acc_ci == pytest.approx(tuple(np.percentile(boot["acc_2v2"], [2.5, 97.5])))
        # RSA on each resample: scipy on the materialised resampled RDMs (copies never paired); the
        # entries are embstore's own (GloVe gives three sharks one vector: ties np.corrcoef breaks)
        wt = rsa.correlation_matrix(glove)
        proto = rsa.correlation_matrix(
            np.mean([np.stack([x[np.nonzero(y == c)[0][g]] for c in range(n)]) for g in range(3)], 0)
        )
        for r in range(3):
            iu = [(p, q) for p in range(n) for q in range(p + 1, n) if idx[r][p] != idx[r][q]]
            ra = np.array([1 - wt[idx[r][p], idx[r][q]] for p, q in iu])
            rb = np.array([1 - proto[idx[r][p], idx[r][q]] for p, q in iu])
            assert boot["spearman"][r] == pytest.approx(spearmanr(ra, rb).statistic, abs=1e-9)
            assert boot["pearson"][r] == pytest.approx(pearsonr(ra, rb).statistic, abs=1e-9)
            tau_b = kendalltau(ra, rb).statistic
            assert np.isfinite(boot["kendall_a"][r]) and abs(boot["kendall_a"][r]) <= abs(tau_b) + 1e-12
        assert row.rsa_spearman_ci == pytest.approx(stats.percentile_interval(boot["spearman"]))
    _, stored = run_sql(store.core, "SELECT n_boot, seed, len(acc_groups), acc_ci_low <= acc_2v2 FROM rsa_results")
    assert stored == [(n_boot, seed, 3, True)] * 2
    key = report.model_key
    res = run_embstore("--store", store.path, "--json", "analyze", "compare", f"{key}:encodes", f"{key}:noise",
                       "--vectors", "glove")  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = {m["measure"]: m for m in json.loads(res.stdout)["measures"]}
    enc, noise = (r._resamples for r in report.rows[::-1])
    d = enc["acc_2v2"] - noise["acc_2v2"]
    assert got["acc_2v2"]["a - b"] == pytest.approx(report.rows[1].acc_2v2 - report.rows[0].acc_2v2)
    assert (got["acc_2v2"]["ci_low"], got["acc_2v2"]["ci_high"]) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])))
    assert got["acc_2v2"]["p"] == pytest.approx(stats.bootstrap_p(d))
    assert set(got) == {"acc_2v2", "rsa_spearman", "rsa_pearson", "rsa_kendall_a"}
    _, tests = run_sql(store.core, "SELECT layer_a, layer_b, measure, n_boot, seed FROM rsa_tests ORDER BY measure")
    assert tests[0] == ("encodes", "noise", "acc_2v2", n_boot, seed) and len(tests) == 4
    from embstore.report.html import _Page

    page = _Page(store.core, None)
    page.comparisons_section()
    ((title, _, parts),) = page.sections
    html = "".join(parts)
    assert title == "Comparisons" and html.count("paired concept bootstrap") == 4 and "rsa_kendall_a" in html
    # different resamples (another seed for one layer) are refused, and the new result deleted the stale test
    run_rsa(store.core, None, "glove", groups=3, n_permutations=0, seed=seed + 1, n_boot=n_boot, layers=["noise"])
    assert run_sql(store.core, "SELECT count(*) FROM rsa_tests")[1] == [(0,)]
    bad = run_embstore(
        "--store", store.path, "analyze", "compare", f"{key}:encodes", f"{key}:noise", "--vectors", "glove"
    )
    assert bad.returncode != 0 and "different concept resamples" in bad.stderr and bad.stderr.count("\n") == 1
