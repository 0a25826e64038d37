import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cosine

import embstore
from embstore import search
from embstore import testing as synthetic
from embstore.analysis.classstats import class_stats
from embstore.analysis.similarity import similar_classes
from embstore.errors import NotFoundError, UnknownClassError, UnknownLayerError, UnknownModelError
from embstore.labels.imagenet import classes
from embstore.search import nearest_images


@pytest.fixture
def syn(tmp_path):
    store = embstore.open(tmp_path / "syn", create=True)
    data = synthetic.populate(store, n_classes=30, per_class=8, seed=3)
    return store, data


def _brute_force_classes(matrix_by_class: dict[int, np.ndarray], target: int, k: int):
    """Cosine of every other class vector to the target's, by an explicit loop (scipy)."""
    scores = {c: 1 - cosine(v, matrix_by_class[target]) for c, v in matrix_by_class.items() if c != target}
    return sorted(scores.items(), key=lambda kv: -kv[1])[:k]


def test_flat_image_search_equals_numpy_brute_force_exactly(syn):
    store, data = syn
    x = data["vectors"]["hidden"].astype(np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for q in (0, 17, 101):
        answer = nearest_images(store.core, data["ids"][q], k=10, index="flat")
        sims = xn @ xn[q]
        sims[q] = -np.inf
        order = np.argsort(-sims, kind="stable")[:10]
        assert [n.label for n in answer.rows] == [data["ids"][i] for i in order]
        np.testing.assert_allclose([n.score for n in answer.rows], sims[order], rtol=0, atol=1e-6)


def test_prototype_and_hidden_methods_match_a_brute_force_loop(syn):
    store, data = syn
    labels = data["labels"]
    for layer, method in (("conv_b", "prototype"), ("hidden", "hidden")):
        means = {c: data["vectors"][layer][labels == c].astype(np.float64).mean(0) for c in np.unique(labels)}
        got = similar_classes(store.core, "7", k=9, method=method, layer=layer if method == "prototype" else None)
        ref = _brute_force_classes(means, 7, 9)
        assert [n.detail["index"] for n in got.rows] == [c for c, _ in ref]
        np.testing.assert_allclose([n.score for n in got.rows], [s for _, s in ref], atol=1e-6)
        assert all(n.detail["images"] == 8 for n in got.rows)
    concat = {
        c: np.concatenate([data["vectors"][l][labels == c].astype(np.float64).mean(0) for l in ("conv_a", "conv_b")])
        for c in np.unique(labels)
    }
    got = similar_classes(store.core, "7", k=5)  # default: prototype over all conv layers
    assert got.layer == "all"
    assert [n.detail["index"] for n in got.rows] == [c for c, _ in _brute_force_classes(concat, 7, 5)]


def test_welch_t_one_vs_rest_agrees_with_scipy_to_1e9(syn):
    store, data = syn
    st = class_stats(store.core, "synthetic_net@seed0", "conv_a")
    t, df, valid = st.welch_t()
    x = data["vectors"]["conv_a"].astype(np.float64)
    for row, c in enumerate(st.labels[:6]):
        res = stats.ttest_ind(x[data["labels"] == c], x[data["labels"] != c], equal_var=False)
        np.testing.assert_allclose(t[row], res.statistic, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(df[row], res.df, rtol=1e-9)
    assert valid.all()
    tvec = {int(c): t[i] for i, c in enumerate(st.labels)}
    got = similar_classes(store.core, "3", k=9, method="tstat", layer="conv_a")
    assert [n.detail["index"] for n in got.rows] == [c for c, _ in _brute_force_classes(tvec, 3, 9)]


def test_classifier_method_needs_no_images(store, tmp_path):
    from embstore.ingest.models import load
    from embstore.ingest.run import ingest

    from .conftest import make_images

    make_images(tmp_path / "imgs", 2)
    ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="layer4.1")
    net, _, _ = load("resnet18", "none")
    w = net.fc.weight.detach().numpy().astype(np.float64)
    got = similar_classes(store.core, "knot", k=9, method="classifier")
    ref = _brute_force_classes(dict(enumerate(w)), classes().resolve("knot").index, 9)
    assert [n.detail["index"] for n in got.rows] == [c for c, _ in ref]
    with pytest.raises(NotFoundError, match="no labelled images for resnet18@none.*embstore ingest --model resnet18"):
        similar_classes(store.core, "knot", method="prototype", layer="layer4.1")


def test_stale_index_and_class_stats_are_rebuilt_never_served(syn):
    store, data = syn
    first = nearest_images(store.core, data["ids"][0], k=3)
    assert first.notes[1].startswith("index flat (rebuilt)")
    assert "(rebuilt)" not in nearest_images(store.core, data["ids"][0], k=3).notes[1]
    before = class_stats(store.core, "synthetic_net@seed0", "hidden").n.sum()
    more = synthetic.populate(store, n_classes=30, per_class=2, seed=4)
    after = nearest_images(store.core, data["ids"][0], k=500)
    assert "(rebuilt)" in after.notes[1]
    assert set(more["ids"]) <= {n.label for n in after.rows}
    assert class_stats(store.core, "synthetic_net@seed0", "hidden").n.sum() == before + 60


def test_answers_say_when_a_gpu_machine_searched_on_cpu_and_why(syn, tmp_path, monkeypatch):
    import faiss

    store, data = syn
    if search.gpu_count() or search.NVIDIA_DEVICE.exists():
        pytest.skip("a GPU machine: tests/test_gpu.py checks where its searches ran")
    answer = nearest_images(store.core, data["ids"][0], k=3, index="flat")
    assert not any("GPU" in n or "on CPU" in n for n in answer.notes), answer.notes  # no GPU: nothing to say
    (tmp_path / "nvidiactl").touch()
    monkeypatch.setattr(search, "NVIDIA_DEVICE", tmp_path / "nvidiactl")  # a driver, but a CPU-only faiss
    answer = nearest_images(store.core, data["ids"][0], k=3, index="flat")
    assert answer.notes[-1].endswith(", exact, on CPU: this faiss build has no GPU support (install the `gpu` extra)")
    monkeypatch.setattr(search, "gpu_count", lambda: 1)  # faiss with a GPU, an index kind without a GPU version
    assert search.searched_on(faiss.IndexHNSWFlat(4, 8)) == "on CPU: faiss has no GPU version of IndexHNSWFlat"


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_report_measured_recall(tmp_path, kind):
    store = embstore.open(tmp_path / "s", create=True)
    synthetic.populate(store, n_classes=40, per_class=50, layers={"hidden": 64}, seed=5)
    idx = search.image_index(store.core, "synthetic_net@seed0", "hidden", kind)
    assert idx.kind == kind and 0.9 <= idx.recall_at_10 <= 1.0
    exact = search.image_index(store.core, "synthetic_net@seed0", "hidden", "flat")
    q = search.normalise(np.stack([exact.vector(i) for i in range(0, 2000, 97)]))
    _, a = idx.search(q, 10)
    _, e = exact.search(q, 10)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a.tolist(), e.tolist())])
    assert overlap >= 0.85


def test_missing_things_get_one_clear_error(tmp_path, syn):
    empty = embstore.open(tmp_path / "empty", create=True)
    with pytest.raises(NotFoundError, match="holds no vectors yet; run `embstore ingest"):
        similar_classes(empty.core, "knot")
    store, data = syn
    with pytest.raises(UnknownModelError, match="never ingested.*embstore ingest --model vgg16"):
        similar_classes(store.core, "knot", model="vgg16")
    with pytest.raises(NotFoundError, match="class knot .* has 0 image"):
        similar_classes(store.core, "knot", method="prototype")
    # with no method, a class without labelled images is answered from the classifier weights, and said so
    auto = similar_classes(store.core, "knot", k=3)
    assert auto.method == "classifier" and len(auto.rows) == 3
    assert (
        auto.notes[0] == "method classifier: knot has no labelled images for synthetic_net@seed0, so its "
        "final-layer weights are used"
    )
    labelled = similar_classes(store.core, "5", k=3)
    assert labelled.method == "prototype" and labelled.notes[0].startswith("method prototype: ")
    with pytest.raises(UnknownLayerError, match="Did you mean: .*conv_a.*Stored layers: conv_a, conv_b, hidden"):
        similar_classes(store.core, "5", layer="conv_c")
    with pytest.raises(UnknownClassError, match="Did you mean"):
        similar_classes(store.core, "knott")
    with pytest.raises(NotFoundError, match="neither a stored image id nor an image file"):
        nearest_images(store.core, "no-such-thing")


def test_query_commands_do_not_import_torch_and_print_json(syn):
    store, data = syn
    code = (
        "import sys, json; from embstore_cli.app import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "sys.stderr.write('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    for args in (
        ["query", "similar", "7", "--k", "3", "--json"],
        ["query", "images", data["ids"][5], "--k", "4", "--json"],
    ):
        res = subprocess.run(
            [sys.executable, "-c", code, "--store", str(store.path), *args], capture_output=True, text=True
        )
        assert res.stderr.endswith("NO-TORCH"), res.stderr[-500:]
        out = json.loads(res.stdout)
        assert len(out["results"]) == int(args[4])


def test_csv_output_lists_rank_name_score(syn, capsys):
    from embstore_cli.app import main

    store, _ = syn
    with pytest.raises(SystemExit) as e:
        main(["--store", str(store.path), "query", "similar", "7", "--k", "4", "--csv"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert e.value.code == 0
    assert lines[0] == "rank,name,score,images,wnid" and len(lines) == 5
    assert [int(l.split(",")[0]) for l in lines[1:]] == [1, 2, 3, 4]
