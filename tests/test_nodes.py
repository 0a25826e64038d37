"""Layers are graph nodes: every node `--layers all` lists is stored under its torchvision name with
the width the catalog records and the values an independent extraction gives; the papers' sets;
stores of the previous release with a module stored as its last call are found and repaired."""

import copy
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.ingest import models
from embstore.ingest.layers import HIDDEN, discover
from embstore.ingest.layersets import aliases, members, select

DATA = Path(__file__).parent / "data"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# (model, crop): small crops keep the suite fast; Inception v3 needs at least 75 pixels
MODELS = [
    ("resnet18", 64),
    ("resnet34", 64),
    ("resnet50", 64),
    ("densenet121", 64),
    ("vgg16", 64),
    ("inception_v3", 80),
    ("efficientnet_b0", 64),
    ("efficientnet_lite0", 64),
]


def _net(name):
    weights = "DEFAULT" if name == "efficientnet_lite0" else "none"  # lite0: the real offline weights
    return models.load(name, weights)[0]


def _inputs(pre, paths):
    """The batch ingest feeds the network: the library's own decoding (tested against torchvision elsewhere)."""
    import torch

    from embstore.ingest.images import Preprocess, read_rgb

    p = Preprocess(pre)
    return torch.stack([p(read_rgb(str(f), min_side=pre.resize)[1]) for f in paths])


def _reference(net, layers, x) -> dict[str, np.ndarray]:
    """Each layer's GAP-of-ReLU (conv), token mean or flat vector, from torchvision's (timm's, for timm
    networks) create_feature_extractor on a copy without in-place ops; modules that are no graph
    node (a block) from a plain forward hook on another copy. Reduced in float64 numpy."""
    import torch

    if type(net).__module__.startswith("timm."):
        from timm.layers import create_feature_extractor
    else:
        from torchvision.models.feature_extraction import create_feature_extractor
    ref = copy.deepcopy(net).eval()
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    graph_nodes = [l.name for l in layers if l.node == l.name]
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        out = {k: v.double().numpy() for k, v in create_feature_extractor(ref, return_nodes=graph_nodes)(x).items()}
    eager = copy.deepcopy(ref)
    mods = dict(eager.named_modules())
    grabbed, handles = {}, []
    for l in layers:
        if l.name == HIDDEN:
            handles.append(_classifier(eager).register_forward_pre_hook(_grab(grabbed, l.name, pre=True)))
        elif l.node != l.name:
            handles.append(mods[l.module].register_forward_hook(_grab(grabbed, l.name)))
    with torch.inference_mode():
        eager(x)
    for h in handles:
        h.remove()
    out.update(grabbed)
    vectors = {}
    for l in layers:
        a = out[l.name]
        if a.ndim == 4:
            vectors[l.name] = np.maximum(a, 0).mean(axis=(2, 3))
        elif a.ndim == 3:
            vectors[l.name] = a.mean(axis=1)
        else:
            vectors[l.name] = a.reshape(a.shape[0], -1)
    return vectors


def _grab(into, name, pre=False):
    def hook(_m, inputs, output=None):
        into[name] = (inputs[0] if pre else output).detach().double().numpy().copy()

    return hook


def _classifier(net):
    from embstore.ingest.layers import find_classifier

    return find_classifier(net)[1]


def _check_store(store, name, layers, reference, ids):
    widths = dict(store.sql(f"SELECT layer, channels FROM layers WHERE model_key LIKE '{name}@%'").fetchall())
    for l in layers:
        v = store.vectors(name, l.name)
        got = dict(zip(v.image_ids, v.numpy()))
        stored = np.stack([got[i] for i in ids])
        assert stored.shape[1] == widths[l.name] == l.channels, l.name
        ref = reference[l.name]
        scale = max(np.abs(ref).max(), 1e-30)
        np.testing.assert_allclose(stored, ref, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{name} {l.name}")


@pytest.mark.parametrize("name, crop", MODELS)
def test_every_node_of_all_is_stored_with_its_width_and_the_independent_extractions_values(tmp_path, name, crop):
    net = _net(name)
    pre = embstore.Preprocessing(crop + crop // 8, crop, MEAN, STD, "bilinear")
    paths = sorted(embstore.sample_images().iterdir())
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in paths:
        shutil.copy(p, folder / p.name)
    layers = discover(net, name, crop)
    assert layers.traced, layers.trace_error
    store = embstore.open(tmp_path / "s", create=True)
    r = store.ingest(folder, model=net, name=name, preprocessing=pre, layers="all", device="cpu", workers=0)
    assert r.status == "completed" and r.n_done == 4 and r.layers == [l.name for l in layers]
    config = store.sql("SELECT config->>'capture', config->>'layer_request' FROM runs").fetchall()[0]
    assert config == ("fx", '"all"') or config == ("fx", "all")
    ids = [store.sql(f"SELECT image_id FROM images WHERE path LIKE '%{p.name}'").fetchall()[0][0] for p in paths]
    _check_store(store, name, layers, _reference(net, layers, _inputs(pre, sorted(folder.iterdir()))), ids)


def test_per_call_nodes_are_captured_by_hooks_with_a_call_counter(tmp_path):
    net = _net("resnet50")
    pre = embstore.Preprocessing(72, 64, MEAN, STD, "bilinear")
    store = embstore.open(tmp_path / "s", create=True)
    r = store.ingest(embstore.sample_images(), model=net, name="resnet50", preprocessing=pre, layers="relu,blocks")
    layers = select(discover(net, "resnet50", 64), "relu,blocks", "resnet50")
    assert store.sql("SELECT config->>'capture' FROM runs").fetchall() == [("hooks",)]
    assert len(r.layers) == 49 + 16 + 1
    paths = sorted(embstore.sample_images().iterdir())
    ids = [store.sql(f"SELECT image_id FROM images WHERE path LIKE '%{p.name}'").fetchall()[0][0] for p in paths]
    _check_store(store, "resnet50", layers, _reference(net, layers, _inputs(pre, paths)), ids)
    # the third call of layer1.0's relu is the block's output; the first is 64 wide, not 256
    v = {n: store.vectors("resnet50", n).numpy() for n in ("layer1.0", "layer1.0.relu", "layer1.0.relu_2")}
    assert v["layer1.0.relu"].shape[1] == 64 and v["layer1.0.relu_2"].shape[1] == 256
    np.testing.assert_array_equal(v["layer1.0"], v["layer1.0.relu_2"])


@pytest.mark.parametrize(
    "name, set_name, count",
    [("resnet50", "relu", 49), ("resnet34", "relu", 33), ("resnet34", "conv", 33), ("resnet34", "seed003", 33),
     ("resnet50", "seed004", 49), ("inception_v3", "seed004", 11), ("vgg16", "seed004", 15), ("vgg16", "relu", 15),
     ("vgg16", "conv", 13), ("resnet34", "conv_raw", 36), ("efficientnet_b0", "act", 33)],
)  # fmt: skip
def test_the_papers_layer_sets_have_their_published_sizes(name, set_name, count):
    layers = embstore.model_layers(name)
    assert len(members(layers, set_name, name)) == count


def test_node_names_are_torchvisions_eval_names_in_order():
    from torchvision.models.feature_extraction import get_graph_node_names

    for name in ("resnet50", "inception_v3", "densenet121"):
        net = _net(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, names = get_graph_node_names(net)
        ours = [l.name for l in discover(net, name, 96 if name == "inception_v3" else 64) if l.node == l.name]
        it = iter(names)
        assert all(n in it for n in ours), "graph layers appear in torchvision's order"
        tensor_ops = {n for n in names if n.rsplit(".", 1)[-1].split("_")[0] in ("relu", "add", "cat", "conv1")}
        assert tensor_ops <= set(ours)


def test_keras_aliases_name_the_papers_layers():
    inception = embstore.model_layers("inception_v3")
    keras = aliases(inception, "inception_v3")
    assert keras["mixed9"] == "Mixed_7b" and len([k for k in keras if k.startswith("mixed")]) == 11
    vgg = aliases(embstore.model_layers("vgg16"), "vgg16")
    assert (vgg["block1_conv1"], vgg["block5_conv3"], vgg["fc1"], vgg["fc2"]) == (
        "features.1",
        "features.29",
        "classifier.1",
        "classifier.4",
    )
    resnet = embstore.model_layers("resnet50")
    assert aliases(resnet, "resnet50")["activation_1"] == "relu"
    assert aliases(resnet, "resnet50")["activation_49"] == "layer4.2.relu_2"
    assert aliases(resnet, "resnet50", "tf_keras")["activation_48"] == "layer4.2.relu_2"
    chosen = select(resnet, "activation_16,activation_17,layer4", "resnet50")
    assert [l.name for l in chosen] == ["layer2.1.relu_2", "layer2.2.relu", "layer4", "hidden"]


def test_unknown_and_untraceable_choices_are_one_line_errors():
    layers = embstore.model_layers("resnet18")
    with pytest.raises(embstore.UnknownLayerError, match=r"no layer 'layer1\.0\.relu_5'.*Did you mean"):
        select(layers, "layer1.0.relu_5", "resnet18")
    with pytest.raises(embstore.UsageError, match="seed 004 chose layers for VGG16"):
        select(embstore.model_layers("efficientnet_b0"), "seed004", "efficientnet_b0")


def test_a_module_called_twice_in_an_untraceable_network_is_refused_naming_what_can_be_captured():
    import torch
    import torch.nn as nn

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.nonlin = nn.ReLU()
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = self.nonlin(self.conv(x))
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
                x = self.nonlin(x)
            return self.fc(x.mean((2, 3)))

    layers = discover(Twice().eval(), "twice", 32)
    assert not layers.traced and "TraceError" in layers.trace_error
    assert [l.name for l in layers] == ["conv", "hidden"] and layers.multi_call == {"nonlin": 2}
    with pytest.raises(embstore.UnknownLayerError, match="runs 2 times.*cannot trace") as err:
        select(layers, "nonlin", "twice")
    assert "\n" not in str(err.value)
    with torch.inference_mode():
        assert Twice()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_ingest_refuses_vectors_whose_width_is_not_the_catalogs(tmp_path, monkeypatch):
    from embstore.ingest import extraction

    real = extraction.reduce

    def wrong(tensor, layer):
        out = real(tensor, layer)
        return out[:, :-1] if layer.name == "layer1.0" else out

    monkeypatch.setattr(extraction, "reduce", wrong)
    store = embstore.open(tmp_path / "s", create=True)
    with pytest.raises(embstore.StoreError, match="layer1.0 of resnet18@none gave 63-wide vectors"):
        store.ingest(embstore.sample_images(), model="resnet18", weights="none", layers="layer1.0", workers=0)
    assert store.sql("SELECT count(*) FROM activations").fetchall() == [(0,)]


def test_a_release_0_1_0_store_with_a_module_stored_as_its_last_call_is_found_and_repaired(tmp_path):
    # made with embstore 0.1.0 (commit 5a3b3fd) on 3 sample images: resnet18@none with layers relu,
    # layer1.0.relu, layer1.0, layer4.1.relu, layer4.1 (the two `.relu` hold the blocks' outputs), and a
    # torch module "tinyres" (torchvision ResNet, one Bottleneck per stage, 10 classes, 64 px) with
    # layer1.0.relu (256 wide, catalogued 64), layer1.0 and layer2.0.conv1
    with tarfile.open(DATA / "store-0.1.0-modules.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    path = tmp_path / "store-0.1.0-modules"
    before = {f.relative_to(path): f.read_bytes() for f in (path / "activations").rglob("*.parquet")}
    store = embstore.open(path)
    report = store.verify()
    assert not report.ok
    assert sorted(w.split(":")[0] for w in report.wrong_layers) == [
        "resnet18@none layer1.0.relu",
        "resnet18@none layer4.1.relu",
        "tinyres@module-c1d2242158e0 layer1.0.relu",
    ]
    assert "256 wide, the catalog says 64" in report.wrong_layers[2]
    # adding to such a layer is refused; the CLI says it in one line
    with pytest.raises(embstore.StoreError, match=r"verify --repair"):
        store.ingest(model="resnet18", weights="none", layers="layer1.0.relu", workers=0)
    kept = {k: v for k, v in before.items() if "relu" not in str(k) or "layer=relu" in str(k)}
    old = {layer: store.vectors("resnet18", layer).numpy() for layer in ("relu", "layer1.0", "layer4.1")}
    repaired = store.verify(repair=True)
    assert repaired.ok and len(repaired.repaired) == 3 and not repaired.wrong_layers
    assert store.verify().ok
    for rel, data in kept.items():  # every other layer's file is untouched, byte for byte
        assert (path / rel).read_bytes() == data
    for layer, x in old.items():
        np.testing.assert_array_equal(store.vectors("resnet18", layer).numpy(), x)
    stored = {r[0] for r in store.sql("SELECT DISTINCT layer FROM activations").fetchall()}
    assert "layer1.0.relu" not in stored and "layer1.0" in stored


def test_a_repaired_store_stores_the_right_node_again(tmp_path):
    with tarfile.open(DATA / "store-0.1.0-modules.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    path = tmp_path / "store-0.1.0-modules"
    images = tmp_path / "imgs"  # the images it was made from, where its catalog says they were
    images.mkdir()
    for n in ("coffee.png", "chelsea.png", "rocket.jpg"):
        shutil.copy(embstore.sample_images() / n, images / n)
    store = embstore.open(path)
    store.verify(repair=True)
    r = store.ingest(images, model="resnet18", weights="none", layers="layer1.0.relu,layer1.0.relu_1", workers=0)
    assert r.n_done == 3
    v = {n: store.vectors("resnet18", n).numpy() for n in ("layer1.0", "layer1.0.relu_1", "layer1.0.relu")}
    np.testing.assert_allclose(v["layer1.0.relu_1"], v["layer1.0"], rtol=1e-6)
    assert not np.allclose(v["layer1.0.relu"], v["layer1.0"])
    assert store.verify().ok
