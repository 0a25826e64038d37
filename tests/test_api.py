"""The public Python API: what a notebook user sees after `import embstore`."""

import json
import subprocess
import sys

import numpy as np
import pytest

import embstore

from .conftest import ROOT, make_images, run_embstore


@pytest.fixture
def synthetic(tmp_path):
    store = embstore.open(tmp_path / "store", create=True)
    data = embstore.testing.populate(store, n_classes=6, per_class=4, layers={"conv_a": 8, "hidden": 5}, batch=7)
    yield store, data
    store.close()


def test_import_and_read_paths_load_no_torch_faiss_or_matplotlib(tmp_path):
    store = embstore.open(tmp_path / "store", create=True)
    embstore.testing.populate(store, n_classes=3, per_class=2)
    store.close()
    code = (
        "import sys, embstore\n"
        "s = embstore.open(sys.argv[1])\n"
        "assert s.status()['images'] == 6\n"
        "assert s.vectors(layer='conv_a').numpy().shape == (6, 16)\n"
        "assert s.sql('SELECT count(*) FROM activations').fetchall() == [(18,)]\n"
        "assert s.run_sql('SELECT imagenet_name(1)')[1] == [('goldfish',)]\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'faiss', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_public_names_version_typing_marker_and_module_entry_point():
    for name in embstore.__all__:
        assert hasattr(embstore, name), name
    assert embstore.__version__ == "0.1.0"
    assert (ROOT / "embstore" / "py.typed").is_file()
    assert "embstore.open(" in embstore.__doc__
    for name in (
        "ingest",
        "vectors",
        "similar_classes",
        "nearest_images",
        "sql",
        "status",
        "verify",
        "match_triplets",
        "failures",
        "class_tables",
        "rsa",
        "report",
        "figure",
    ):
        method = getattr(embstore.Store, name)
        assert method.__doc__ and method.__doc__.strip(), name
    done = subprocess.run([sys.executable, "-m", "embstore", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "query" in done.stdout


def test_vectors_are_the_stored_rows_with_ids_and_labels_aligned(synthetic):
    store, data = synthetic
    v = store.vectors("synthetic_net", "conv_a")
    assert repr(v).endswith("not read yet>")
    order = [data["ids"].index(i) for i in v.image_ids]
    np.testing.assert_array_equal(v.numpy(), data["vectors"]["conv_a"][order])
    np.testing.assert_array_equal(v.labels, data["labels"][order])
    # one class by name, wnid or index; some images by id
    only = store.vectors(layer="conv_a", labels=["goldfish", "n01440764"])
    assert sorted(set(only.labels.tolist())) == [0, 1] and len(only) == 8
    picked = store.vectors(layer="hidden", images=data["ids"][:3])
    assert sorted(picked.image_ids) == sorted(data["ids"][:3])
    np.testing.assert_array_equal(
        picked.numpy(), data["vectors"]["hidden"][[data["ids"].index(i) for i in picked.image_ids]]
    )
    # every conversion holds the same rows
    frame = v.to_pandas()
    assert list(frame["image_id"]) == v.image_ids
    np.testing.assert_array_equal(frame[[f"v{i}" for i in range(8)]].to_numpy(), v.numpy())
    table = v.to_arrow()
    assert str(table.schema.field("vec").type) == "fixed_size_list<item: float>[8]"
    np.testing.assert_array_equal(np.stack(table.column("vec").to_numpy(zero_copy_only=False)), v.numpy())
    assert v.to_polars()["image_id"].to_list() == v.image_ids
    np.testing.assert_array_equal(v.to_torch().numpy(), v.numpy())
    # RSA users' own tool: a Dataset whose correlation RDM is numpy's 1 - corrcoef of the same rows
    from rsatoolbox.rdm import calc_rdm

    dataset = v.to_rsatoolbox()
    assert list(dataset.obs_descriptors["image_id"]) == v.image_ids
    np.testing.assert_array_equal(dataset.obs_descriptors["label"], v.labels)
    rdm = calc_rdm(dataset, method="correlation").get_matrices()[0]
    np.testing.assert_allclose(rdm, 1 - np.corrcoef(v.numpy().astype(np.float64)), atol=1e-12)


def test_unknown_model_layer_and_class_name_the_choices(synthetic):
    store, _ = synthetic
    with pytest.raises(embstore.UnknownModelError, match="never ingested"):
        store.vectors("resnet50", "hidden")
    with pytest.raises(embstore.UnknownLayerError, match="Did you mean: conv_a"):
        store.vectors(layer="conv_A")
    with pytest.raises(embstore.UnknownClassError):
        store.vectors(layer="hidden", labels=["no such class"])
    with pytest.raises(embstore.UsageError, match="choose one of prototype"):
        store.similar_classes("knot", method="nearest")


def test_similar_classes_and_sql_relation(synthetic):
    store, data = synthetic
    answer = store.similar_classes("tench", k=3, layer="conv_a")
    means = np.stack([data["vectors"]["conv_a"][data["labels"] == c].astype(np.float64).mean(0) for c in range(6)])
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    expected = np.argsort(-(unit[1:] @ unit[0]))[:3] + 1
    assert [r.detail["index"] for r in answer.rows] == expected.tolist()
    frame = answer.to_pandas()
    assert list(frame["rank"]) == [1, 2, 3] and np.allclose(frame["score"], np.sort(unit[1:] @ unit[0])[::-1][:3])
    rel = store.sql("SELECT layer, count(*) AS n FROM activations GROUP BY layer ORDER BY layer")
    assert rel.fetchall() == [("conv_a", 24), ("hidden", 24)]
    assert list(rel.df()["n"]) == [24, 24]
    with pytest.raises(Exception, match="read-only"):
        store.sql("DELETE FROM images").fetchall()


class TinyNet:
    """Built lazily so importing this test module needs no torch."""

    @staticmethod
    def make(head: bool):
        import torch.nn as nn

        layers = [
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 4, 3, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ]
        if head:
            layers.append(nn.Linear(4, 10))
        return nn.Sequential(*layers)


def test_ingest_of_any_torch_module_with_its_preprocessing(tmp_path):
    import torch

    from embstore.ingest.images import Preprocess, read_rgb

    torch.manual_seed(0)
    net = TinyNet.make(head=True).train()
    pre = embstore.Preprocessing(36, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear")
    paths = make_images(tmp_path / "imgs", 5, size=40)
    store = embstore.open(tmp_path / "store", create=True)
    with pytest.raises(embstore.UsageError, match="needs name="):
        store.ingest(tmp_path / "imgs", model=net, preprocessing=pre)
    with pytest.raises(embstore.UsageError, match="needs preprocessing="):
        store.ingest(tmp_path / "imgs", model=net, name="tiny")
    result = store.ingest(tmp_path / "imgs", model=net, name="tiny", preprocessing=pre, layers="0,2")
    assert result.status == "completed" and result.n_done == 5
    assert net.training, "the caller's training mode is restored"
    assert net[0].weight.is_contiguous(), "the caller's memory layout is restored (ran channels-last on CPU)"
    assert result.model_key.startswith("tiny@module-")
    # an independent forward pass with the same preprocessing, in eval mode
    net.eval()
    x = torch.stack([Preprocess(pre)(read_rgb(str(p))[1]) for p in paths])
    with torch.no_grad():
        conv = net[0](x)
        hidden = net[:5](x)
    got = store.vectors("tiny", "0")
    ids = [read_rgb(str(p))[0] for p in paths]
    np.testing.assert_allclose(
        got.numpy()[[got.image_ids.index(i) for i in ids]], torch.relu(conv).mean((2, 3)), rtol=1e-5, atol=1e-6
    )
    hid = store.vectors("tiny", "hidden")
    np.testing.assert_allclose(hid.numpy()[[hid.image_ids.index(i) for i in ids]], hidden, rtol=1e-5, atol=1e-6)
    again = store.ingest(tmp_path / "imgs", model=net, name="tiny", preprocessing=pre, layers="0,2")
    assert again.n_done == 0 and again.n_skipped == 5
    # a feature extractor without a classification head: its output is `hidden`, no predictions
    body = TinyNet.make(head=False)
    plain = store.ingest(tmp_path / "imgs", model=body, name="tiny_body", preprocessing=pre)
    assert plain.n_done == 5
    assert store.vectors("tiny_body", "hidden").numpy().shape == (5, 4)
    assert store.sql(f"SELECT count(*) FROM predictions WHERE model_key = '{plain.model_key}'").fetchall() == [(0,)]
    # a new image cannot be embedded on the fly: the store cannot rebuild a module it was handed
    new_image = make_images(tmp_path / "new", 1, seed=9)[0]
    with pytest.raises(embstore.NotFoundError, match="torch module"):
        store.nearest_images(new_image, model="tiny", layer="hidden")


def test_answers_are_remembered_until_the_catalog_changes(tmp_path):
    import shutil

    store = embstore.open(tmp_path / "store", create=True)
    # tench's nearest class is 4 (hammerhead); goldfish (1) is far from it
    centres = {
        "hidden": np.array([[6, 1, 1, 1, 1], [1, 1, 1, 1, 6], [1, 6, 1, 1, 1], [1, 1, 6, 1, 1], [5, 3, 1, 1, 1]], float)
    }
    embstore.testing.populate(store, n_classes=5, per_class=4, layers={"hidden": 5}, centres=centres)
    first = store.similar_classes("tench", k=4, method="prototype", layer="hidden")
    memo_files = list((store.path / "indexes" / "memo").glob("*.npz"))
    assert memo_files, "answers are remembered on disk for the next process"
    store.close()
    embstore.open(store.path).close()  # the first open after a change checks the catalog once (and remembers)
    # a new process asks again: the answer comes without importing DuckDB or opening the catalog
    code = (
        "import sys, json, embstore\n"
        "s = embstore.open(sys.argv[1])\n"
        "a = s.similar_classes('tench', k=4, method='prototype', layer='hidden')\n"
        "print(json.dumps([[r.label, r.score] for r in a.rows]), 'duckdb' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True, text=True)
    rows, duckdb_loaded = out.stdout.rsplit(" ", 1)
    assert [tuple(r) for r in __import__("json").loads(rows)] == [(r.label, r.score) for r in first.rows]
    assert duckdb_loaded.strip() == "False", out.stderr[-1000:]
    # a torn memo file is ignored and rewritten
    memo_files[0].write_bytes(b"not an npz")
    again = embstore.open(store.path).similar_classes("tench", k=4, method="prototype", layer="hidden")
    assert [(r.label, r.score) for r in again.rows] == [(r.label, r.score) for r in first.rows]
    # more images move goldfish right next to tench: the next answer sees them (another writer, same process)
    shifted = {"hidden": np.tile(centres["hidden"][0], (2, 1))}
    data = embstore.testing.populate(store, n_classes=2, per_class=40, layers={"hidden": 5}, centres=shifted, seed=7)
    after = store.similar_classes("tench", k=4, method="prototype", layer="hidden")
    v = store.vectors(layer="hidden")
    means = np.stack([v.numpy()[v.labels == c].astype(np.float64).mean(0) for c in range(5)])
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    expected = (np.argsort(-(unit[1:] @ unit[0])) + 1).tolist()
    assert [r.detail["index"] for r in after.rows] == expected and expected[0] == 1
    assert first.rows[0].detail["index"] == 4
    assert len(data["ids"]) == 80
    # a copied store, original gone: opening it re-points the view at the copy's own files
    shutil.copytree(store.path, tmp_path / "copy")
    shutil.rmtree(store.path)
    copy = embstore.open(tmp_path / "copy")
    assert copy.sql("SELECT count(*) FROM activations").fetchall() == [(100,)]


def test_optional_converters_name_the_package_to_install(synthetic, monkeypatch):
    store, _ = synthetic
    v = store.vectors(layer="hidden")
    for name in ("polars", "rsatoolbox", "rsatoolbox.data"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ImportError
    with pytest.raises(embstore.MissingDependencyError, match="pip install polars"):
        v.to_polars()
    with pytest.raises(embstore.MissingDependencyError, match="pip install rsatoolbox"):
        v.to_rsatoolbox()
    assert isinstance(embstore.MissingDependencyError("x"), ImportError)


def test_each_stored_layer_has_a_typed_view_for_array_functions(synthetic):
    store, data = synthetic
    views = store.sql("SELECT view_name FROM duckdb_views() WHERE starts_with(view_name, 'vectors/') ORDER BY 1")
    assert views.fetchall() == [("vectors/synthetic_net@seed0/conv_a",), ("vectors/synthetic_net@seed0/hidden",)]
    rel = store.sql('SELECT image_id, vec FROM "vectors/synthetic_net@seed0/conv_a" ORDER BY image_id')
    assert rel.types[1] == "FLOAT[8]"
    got = dict(rel.fetchall())
    for i, image_id in enumerate(data["ids"]):
        np.testing.assert_array_equal(np.array(got[image_id], np.float32), data["vectors"]["conv_a"][i])
    # array functions take the typed vectors directly: cosine of two stored vectors, checked with numpy
    a, b = data["ids"][0], data["ids"][5]
    cos = store.sql(
        'SELECT array_cosine_similarity(x.vec, y.vec) FROM "vectors/synthetic_net@seed0/conv_a" x, '
        f"\"vectors/synthetic_net@seed0/conv_a\" y WHERE x.image_id = '{a}' AND y.image_id = '{b}'"
    ).fetchall()[0][0]
    u, v = data["vectors"]["conv_a"][0].astype(np.float64), data["vectors"]["conv_a"][5].astype(np.float64)
    assert cos == pytest.approx(u @ v / np.linalg.norm(u) / np.linalg.norm(v), rel=1e-6)


def test_similar_classes_from_python_picks_its_method_as_the_cli_does(tmp_path):
    """No images of espresso: the default (no method) answers by the classifier, as `query similar`
    does; with images (tench) it is the prototype. The façade once defaulted to prototype and raised."""
    store = embstore.open(tmp_path / "s", create=True)
    embstore.testing.populate(store, n_classes=4, per_class=3, layers={"conv_a": 8, "hidden": 6})
    espresso = store.similar_classes("espresso", k=3)
    assert espresso.method == "classifier" and len(espresso.rows) == 3
    assert [r.label for r in espresso.rows] == [
        r.label for r in store.similar_classes("espresso", k=3, method="classifier").rows
    ]
    with pytest.raises(embstore.NotFoundError):
        store.similar_classes("espresso", k=3, method="prototype")
    assert store.similar_classes("tench", k=2).method == "prototype"
    cli = run_embstore("--store", store.path, "--json", "query", "similar", "espresso", "--k", "3")
    assert cli.returncode == 0, cli.stderr
    assert [r["name"] for r in json.loads(cli.stdout)["results"]] == [r.label for r in espresso.rows]


def test_ingest_options_are_one_typed_object_shared_with_the_cli(tmp_path):
    """`IngestOptions` is what Store.ingest's keywords, the CLI's flags and the engines read: a
    mistyped keyword is a UsageError naming the field, and every flag's default is the field's."""
    import dataclasses
    import inspect

    from embstore_cli import app

    make_images(tmp_path / "imgs", 2, size=32)
    store = embstore.open(tmp_path / "s", create=True)
    with pytest.raises(embstore.UsageError, match="unknown ingest option 'batchsize'. Did you mean: batch_size"):
        store.ingest(tmp_path / "imgs", model="resnet18", weights="none", batchsize=8)
    assert not (tmp_path / "s").exists() or store.status()["runs"] == 0  # refused before any work
    assert embstore.IngestOptions(layers=["layer1.0", "layer2.0"]).layers == ("layer1.0", "layer2.0")
    defaults = {f.name: f.default for f in dataclasses.fields(embstore.IngestOptions)}
    flags = {n: p.default.default for n, p in inspect.signature(app.ingest).parameters.items() if n in defaults}
    assert len(flags) >= 15 and all(flags[n] == defaults[n] for n in flags), {
        n: (flags[n], defaults[n]) for n in flags if flags[n] != defaults[n]
    }
