"""Reductions beyond the global average (issue 35): NAME~max and NAME~gridKxK, each a layer of its
own, equal to float64 numpy references on the same maps (adaptive grid cells as torch defines them:
rows floor(i·H/K) to ceil((i+1)·H/K))."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import embstore
from embstore.errors import EmbstoreError
from embstore.ingest.extraction import reduce
from embstore.ingest.layers import LayerInfo
from embstore.ingest.run import ingest
from embstore.store.sql import run_sql
from embstore.store.table import ActivationTable

from .conftest import make_images, run_embstore


def _max(a):
    return np.maximum(a, 0).max(axis=(2, 3))


def _grid(a, k):
    """(B, C·K·K) channel-major, each cell the mean of its rows and columns of the ReLU map."""
    b, c, h, w = a.shape
    r = np.maximum(a, 0)
    out = np.empty((b, c, k, k))
    for i in range(k):
        for j in range(k):
            rows = slice(i * h // k, math.ceil((i + 1) * h / k))
            cols = slice(j * w // k, math.ceil((j + 1) * w / k))
            out[:, :, i, j] = r[:, :, rows, cols].mean(axis=(2, 3))
    return out.reshape(b, -1)


@pytest.mark.parametrize("layout", ["nchw", "nchw_channels_last_memory", "nhwc"])
def test_max_and_grid_equal_numpy_on_any_layout_and_uneven_maps(layout):
    t = torch.randn(3, 6, 7, 9, generator=torch.Generator().manual_seed(5))
    ref = t.numpy().astype(np.float64)
    if layout == "nchw_channels_last_memory":
        t = t.contiguous(memory_format=torch.channels_last)
    if layout == "nhwc":
        t = t.permute(0, 2, 3, 1).contiguous()
    last = layout == "nhwc"
    got_max = reduce(t, LayerInfo("x~max", 0, 6, "conv", "max_relu", False, channels_last=last))
    np.testing.assert_allclose(got_max.numpy(), _max(ref), rtol=1e-6, atol=1e-7)
    for k in (1, 2, 3):
        got = reduce(t, LayerInfo(f"x~grid{k}x{k}", 0, 6 * k * k, "conv", f"grid_relu:{k}x{k}", False,
                                  channels_last=last))  # fmt: skip
        np.testing.assert_allclose(got.numpy(), _grid(ref, k), rtol=1e-6, atol=1e-7)
    assert np.allclose(_grid(ref, 1), np.maximum(ref, 0).mean(axis=(2, 3)))  # a 1x1 grid is the GAP


def test_reduced_layers_are_stored_beside_their_map_and_equal_a_feature_extractor(tmp_path):
    """resnet18: a block (hooks), a second call of a module (per-call hooks) and a functional node
    (the traced graph) reduced by max and grids, against torchvision's create_feature_extractor."""
    from torchvision.models import ResNet18_Weights, resnet18
    from torchvision.models.feature_extraction import create_feature_extractor

    make_images(tmp_path / "imgs", 3, size=240, seed=7)
    store = embstore.open(tmp_path / "s", create=True)
    asked = {"layer3": None, "layer3~max": ("layer3", "max"), "layer3~grid2x2": ("layer3", 2),
             "layer1.0.relu_1~max": ("layer1.0.relu_1", "max"), "layer4.1~grid3x3": ("layer4.1", 3),
             "layer3~srp64": ("layer3", "srp")}  # fmt: skip
    ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers=",".join(asked))
    torch.manual_seed(0)
    net = resnet18(weights=None).eval()
    for m in net.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    fx = create_feature_extractor(net, ["layer3", "layer1.0.relu_1", "layer4.1"])
    prep = ResNet18_Weights.IMAGENET1K_V1.transforms()
    with store.core.read() as con:
        path_of = dict(con.execute("SELECT image_id, path FROM images").fetchall())
    table = ActivationTable(store.core)
    for name, how in asked.items():
        ids, stored = table.read_layer("resnet18@none", name)
        with torch.no_grad():
            out = fx(torch.stack([prep(Image.open(path_of[i]).convert("RGB")) for i in ids]))
        if how is None:
            want = np.maximum(out["layer3"].double().numpy(), 0).mean(axis=(2, 3))
        else:
            a = out[how[0]].double().numpy()
            if how[1] == "srp":
                from embstore.ingest.extraction import srp_matrix

                flat = np.maximum(a, 0).reshape(len(a), -1)
                want = flat @ srp_matrix(flat.shape[1], 64, 0).toarray()
            else:
                want = _max(a) if how[1] == "max" else _grid(a, how[1])
        # a projection sums ~sqrt(C·H·W) signed float32 terms: its error scales with the values
        atol = 1e-5 * (np.abs(want).max() if "srp" in name else 1)
        np.testing.assert_allclose(stored, want, rtol=1e-4, atol=atol, err_msg=name)
    _, rows = run_sql(store.core, "SELECT layer, channels, reduction FROM layers WHERE layer LIKE '%~%' ORDER BY 1")
    assert rows == [("layer1.0.relu_1~max", 64, "max_relu"), ("layer3~grid2x2", 1024, "grid_relu:2x2"),
                    ("layer3~max", 256, "max_relu"), ("layer3~srp64", 64, "srp_relu:64:0"),
                    ("layer4.1~grid3x3", 4608, "grid_relu:3x3")]  # fmt: skip


def test_a_functional_node_reduced_by_the_traced_graph_and_bad_reductions_refused(tmp_path):
    from torchvision.models import resnet18

    from embstore.ingest.extraction import Extractor
    from embstore.ingest.layers import discover
    from embstore.ingest.layersets import select

    net = resnet18(weights=None).eval()
    layers = discover(net, "resnet18", 64)
    chosen = select(layers, "layer2.0.add,layer2.0.add~max,layer2.0.add~grid2x2", "resnet18")
    ex = Extractor(net, chosen)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    got, _ = ex(x)
    ex.close()
    assert ex.capture == "fx"
    from torchvision.models.feature_extraction import create_feature_extractor

    with torch.no_grad():
        a = create_feature_extractor(net, ["layer2.0.add"])(x)["layer2.0.add"].double().numpy()
    np.testing.assert_allclose(got["layer2.0.add~max"], _max(a), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["layer2.0.add~grid2x2"], _grid(a, 2), rtol=1e-5, atol=1e-6)
    for bad, says in (("hidden~max", "no spatial map"), ("layer4~grid9x9", "needs K <="),
                      ("layer3~mean", "unknown reduction 'mean'"), ("layer3~grid2x3", "unknown reduction"),
                      ("nolayer~max", "no layer 'nolayer'")):  # fmt: skip
        with pytest.raises(EmbstoreError, match=says):
            select(layers, bad, "resnet18")


def test_the_pixels_layer_is_the_preprocessed_input_whole_or_in_cells(tmp_path):
    """`pixels` and `pixels~grid4x4` equal numpy on the batch the library's preprocessing makes (the
    network's input), stored first (ord -1) with their widths and reductions."""
    from embstore.ingest.images import Preprocess, read_rgb
    from embstore.spec import Preprocessing

    make_images(tmp_path / "imgs", 2, size=90, seed=9)
    store = embstore.open(tmp_path / "s", create=True)
    pre = Preprocessing(72, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
    ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="pixels,pixels~grid4x4,layer1",
           preprocessing=pre)  # fmt: skip
    with store.core.read() as con:
        path_of = dict(con.execute("SELECT image_id, path FROM images").fetchall())
    table = ActivationTable(store.core)
    _, ((key,),) = run_sql(store.core, "SELECT model_key FROM models")  # resnet18@none~pre-<sha8>
    ids, whole = table.read_layer(key, "pixels")
    _, cells = table.read_layer(key, "pixels~grid4x4")
    p = Preprocess(pre)
    x = np.stack([p(read_rgb(path_of[i], min_side=pre.resize)[1]).numpy() for i in ids]).astype(np.float64)
    assert x.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(whole, x.reshape(2, -1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        cells, x.reshape(2, 3, 4, 16, 4, 16).mean(axis=(3, 5)).reshape(2, -1), rtol=1e-5, atol=1e-6
    )
    _, rows = run_sql(store.core, "SELECT layer, ord, channels, reduction FROM layers ORDER BY ord, layer LIMIT 2")
    assert rows == [("pixels", -1, 3 * 64 * 64, "identity"), ("pixels~grid4x4", -1, 48, "grid:4x4")]


def test_two_vs_two_on_pixels_reaches_one_when_classes_differ_only_in_colour(tmp_path):
    """Six classes of flat colours (each image a shade off its class's colour); a reference space
    whose vector of a class is its colour as the network receives it: 2 vs 2 on `pixels~grid1x1`
    (the input's channel means) is 1.0 — the pixel level of seed 004's curves, end to end."""
    from embstore.analysis.rsatables import run_rsa

    rng = np.random.default_rng(3)
    colours = rng.integers(20, 236, size=(6, 3))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    lines = []
    for c, rgb in enumerate(colours):
        folder = tmp_path / "colours" / f"colour{c}"
        folder.mkdir(parents=True)
        for k in range(5):  # distinct bytes (one image per content), the same colour to within 2/255
            Image.fromarray(np.full((40, 40, 3), rgb + k - 2, np.uint8)).save(folder / f"{k}.png")
        lines.append(f"colour{c} " + " ".join(f"{v:.6f}" for v in (rgb / 255 - mean) / std))
    (tmp_path / "colours.txt").write_text("\n".join(lines) + "\n")
    store = embstore.open(tmp_path / "s", create=True)
    ingest(store.core, "resnet18", str(tmp_path / "colours"), weights="none", layers="pixels~grid1x1,layer1")
    report = run_rsa(store.core, None, str(tmp_path / "colours.txt"), groups=5, n_permutations=0, n_boot=0)
    acc = {r.layer: r.acc_2v2 for r in report.rows}
    assert report.label_set == "colours" and len(report.concepts) == 6
    assert acc["pixels~grid1x1"] == 1.0 and list(acc)[0] == "pixels~grid1x1", acc  # first in network order


def test_sparse_random_projection_equals_numpy_and_keeps_distances(tmp_path):
    """NAME~srpK: the ReLU map flattened channel-major times srp_matrix (numpy, float64), the matrix
    seeded (the same twice), of the documented density and scale; over random maps it keeps squared
    distances on average (Johnson-Lindenstrauss: mean ratio 1 within 3 %)."""
    from embstore.ingest.extraction import srp_matrix

    t = torch.randn(40, 8, 9, 9, generator=torch.Generator().manual_seed(2))
    d, k = 8 * 9 * 9, 256
    got = reduce(t, LayerInfo("x~srp256", 0, k, "conv", "srp_relu:256:0", False)).numpy().astype(np.float64)
    r = srp_matrix(d, k, 0)
    flat = np.maximum(t.numpy().astype(np.float64), 0).reshape(40, -1)
    np.testing.assert_allclose(got, flat @ r.toarray(), rtol=1e-5, atol=1e-5)
    nhwc = reduce(t.permute(0, 2, 3, 1).contiguous(), LayerInfo("x~srp256", 0, k, "conv", "srp_relu:256:0", False,
                                                              channels_last=True))  # fmt: skip
    np.testing.assert_allclose(nhwc.numpy(), got, rtol=1e-5, atol=1e-5)
    assert (srp_matrix(d, k, 0) != r).nnz == 0 and (srp_matrix(d, k, 1) != r).nnz > 0
    assert r.nnz / (d * k) == pytest.approx(1 / math.sqrt(d), rel=0.05)
    assert set(np.round(np.abs(r.data), 12)) == {round(math.sqrt(math.sqrt(d) / k), 12)}
    i, j = np.triu_indices(40, 1)
    ratio = ((got[i] - got[j]) ** 2).sum(1) / ((flat[i] - flat[j]) ** 2).sum(1)
    assert ratio.mean() == pytest.approx(1.0, abs=0.03)
    from torchvision.models import resnet18

    from embstore.ingest.layers import discover
    from embstore.ingest.layersets import select

    chosen = select(discover(resnet18(weights=None).eval(), "resnet18", 64), "layer1~srp512", "resnet18")
    assert [(l.name, l.channels, l.reduction) for l in chosen][0] == ("layer1~srp512", 512, "srp_relu:512:0")


def test_all_conv_layers_of_seed_003_are_the_global_averages_not_the_other_reductions(store):
    """`similar_classes` with no layer concatenates every conv layer's GAP vector (seed 003 eq. 2):
    NAME~max beside NAME is another reduction of the same map, not one more layer."""
    from embstore import testing as synthetic

    synthetic.populate(store, n_classes=6, per_class=4, layers={"conv_a": 6, "conv_a~max": 6, "hidden": 4}, seed=3)
    cls = store.similar_classes("0", k=3, method="prototype", layer="conv_a").rows[0].label
    every = store.similar_classes(cls, k=5, method="prototype")
    assert every.layer == "all"
    assert [(r.label, r.score) for r in every.rows] == [
        (r.label, r.score) for r in store.similar_classes(cls, k=5, method="prototype", layer="conv_a").rows
    ]


def test_pca_basis_is_a_numpy_svd_of_the_reference_maps_and_projects_later_images(tmp_path):
    """`fit-pca` on 12 reference images: mean and components equal a numpy SVD of torchvision's maps
    (create_feature_extractor, the same seeded random resnet18) to 1e-5; `layer3~pca4` of 3 other
    images equals their centred maps projected on those components; what is refused says why."""
    from torchvision.models import ResNet18_Weights, resnet18
    from torchvision.models.feature_extraction import create_feature_extractor

    from embstore.ingest.pca import BASES

    make_images(tmp_path / "ref", 12, size=240, seed=8)
    make_images(tmp_path / "new", 3, size=240, seed=9)
    store = embstore.open(tmp_path / "s", create=True)
    with pytest.raises(EmbstoreError, match="no 4-component PCA basis of layer3 for resnet18@none.*embstore fit-pca"):
        ingest(store.core, "resnet18", str(tmp_path / "new"), weights="none", layers="layer3~pca4")
    basis = store.fit_pca("resnet18", "layer3", 4, tmp_path / "ref", "ref-12", weights="none")
    assert (basis.n_images, basis.width, len(basis.explained)) == (12, 256 * 14 * 14, 4)
    ingest(store.core, "resnet18", str(tmp_path / "new"), weights="none", layers="layer3~pca4")

    torch.manual_seed(0)
    net = resnet18(weights=None).eval()
    fx = create_feature_extractor(net, ["layer3"])
    prep = ResNet18_Weights.IMAGENET1K_V1.transforms()

    def maps(paths):
        with torch.no_grad():
            out = fx(torch.stack([prep(Image.open(p).convert("RGB")) for p in paths]))["layer3"]
        return np.maximum(out.double().numpy(), 0).reshape(len(paths), -1)

    with store.core.read() as con:
        path_of = dict(con.execute("SELECT image_id, path FROM images").fetchall())
        ref_ids = con.execute("SELECT image_ids FROM pca_bases").fetchall()[0][0]
    from embstore.ingest.images import read_rgb

    ref_paths = {read_rgb(str(p))[0]: p for p in sorted((tmp_path / "ref").iterdir())}
    x = maps([ref_paths[i] for i in ref_ids])
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    want = vt[:4] * np.sign(vt[np.arange(4), np.abs(vt[:4]).argmax(axis=1)])[:, None]
    with np.load(store.path / BASES / f"{basis.sha}.npz") as arrays:
        np.testing.assert_allclose(arrays["mean"], mean, atol=1e-5)
        np.testing.assert_allclose(arrays["components"], want, atol=1e-5)
    np.testing.assert_allclose(basis.explained, s[:4] ** 2 / (s**2).sum(), rtol=1e-6)
    ids, stored = ActivationTable(store.core).read_layer("resnet18@none", "layer3~pca4")
    projected = (maps([path_of[i] for i in ids]) - mean) @ want.T
    np.testing.assert_allclose(stored, projected, rtol=1e-4, atol=1e-4 * np.abs(projected).max())
    _, rows = run_sql(store.core, "SELECT channels, reduction FROM layers WHERE layer = 'layer3~pca4'")
    assert rows == [(4, f"pca_relu:4:{basis.sha}")]
    with pytest.raises(EmbstoreError, match="already has a 4-component basis of layer3"):
        store.fit_pca("resnet18", "layer3", 4, tmp_path / "ref", "again", weights="none")
    with pytest.raises(EmbstoreError, match="a 12-component basis needs more than 12"):
        store.fit_pca("resnet18", "layer3", 12, tmp_path / "ref", "too-few", weights="none")
    with pytest.raises(EmbstoreError, match="one conv layer's maps"):
        store.fit_pca("resnet18", "flatten", 2, tmp_path / "ref", "flat", weights="none")


def test_two_vs_two_on_whole_maps_by_gram_accumulation_equals_the_in_memory_computation(tmp_path):
    """Seed 004 on whole flattened ReLU maps: each group's correlations from Gram accumulation equal
    np.corrcoef of torchvision's flattened maps, and the 2 vs 2 accuracy and permutation p equal
    the in-memory test on those maps; a budget of two blocks recomputes (more passes, same numbers)."""
    from torchvision.models import ResNet18_Weights, resnet18
    from torchvision.models.feature_extraction import create_feature_extractor

    from embstore.analysis import rsa
    from embstore.labels import vectors
    from embstore.labels.imagenet import classes

    from .conftest import blob_picture

    rng = np.random.default_rng(4)
    for name in ("knot", "chain", "baseball", "golf ball", "tennis ball", "espresso"):
        for j in range(6):
            blob_picture(tmp_path / "imgs" / name / f"{j}.png", rng)
    store = embstore.open(tmp_path / "s", create=True)
    ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="layer1,layer2")
    report = store.rsa("resnet18@none", "glove", permutations=49, n_boot=0, layers=["layer1"])
    block = 4 * (64 * 56 * 56 + 128 * 28 * 28) * 8
    small = store.whole_map_two_vs_two(report, ["layer1", "layer2"], batch_size=4, budget_bytes=2 * block)
    large = store.whole_map_two_vs_two(report, ["layer1", "layer2"], batch_size=4)
    assert (small.forward_passes, large.forward_passes) == (15, 10)  # 5 groups of 6 images, blocks of 4

    torch.manual_seed(0)
    net = resnet18(weights=None).eval()
    fx = create_feature_extractor(net, ["layer1", "layer2"])
    prep = ResNet18_Weights.IMAGENET1K_V1.transforms()
    _, rows = run_sql(store.core, "SELECT image_id, path, label_index FROM images ORDER BY label_index, image_id")
    by_class: dict = {}
    for _, path, label in rows:
        by_class.setdefault(label, []).append(path)
    coverage = vectors.Reference("glove").cover(vectors.imagenet_terms(report.concepts))
    w = np.corrcoef(np.stack([coverage.vectors[c] for c in report.concepts]))
    assert [classes()[c].name for c in report.concepts] and len(report.concepts) == 6
    for i, layer in enumerate(("layer1", "layer2")):
        flat = []
        for g in range(report.n_groups):
            with torch.no_grad():
                out = fx(torch.stack([prep(Image.open(by_class[c][g]).convert("RGB")) for c in report.concepts]))
            flat.append(np.maximum(out[layer].double().numpy(), 0).reshape(len(report.concepts), -1))
        want = rsa.similarity_encoding(None, flat, n_permutations=49, seed=report.seed, reference_matrix=w)
        for got in (small.layers[i], large.layers[i]):
            assert got.layer == layer and got.width == flat[0].shape[1]
            for c, x in zip(got.correlations, flat):
                np.testing.assert_allclose(c, np.corrcoef(x), atol=1e-9)
            assert got.acc_2v2 == pytest.approx(want.accuracy, abs=1e-12) and got.p_value == want.p_value
    cli = run_embstore("--store", tmp_path / "s", "--json", "analyze", "rsa", "--model", "resnet18@none", "--layer",
                       "layer1", "--permutations", "49", "--n-boot", "0", "--whole-maps")  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    (row,) = json.loads(cli.stdout)["whole_maps"]["layers"]  # no layer named: the run's conv maps (layer1)
    assert (row["layer"], row["acc_2v2"], row["p_value"]) == (
        "layer1",
        small.layers[0].acc_2v2,
        small.layers[0].p_value,
    )
