"""The papers' preprocessing: squash resize, no centre crop, BGR "caffe" colours, equal pixel for
pixel to a hand-written PIL + numpy pipeline; other preprocessing is another model key, never mixed."""

import numpy as np
import pytest
from PIL import Image

import embstore
from embstore.ingest.images import Preprocess
from embstore.ingest.models import describe
from embstore.spec import CAFFE_MEAN_BGR, Preprocessing

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC}  # fmt: skip


def _by_hand(img: Image.Image, pre: Preprocessing) -> np.ndarray:
    """What Keras' load_img(target_size) + preprocess_input (and torchvision's recipe) do, in numpy."""
    w, h = img.size
    if pre.resize_mode == "squash":
        img = img.resize((pre.resize, pre.resize), RESAMPLE[pre.interpolation])
    else:
        s = pre.resize / min(w, h)
        size = (pre.resize, int(h * s)) if w <= h else (int(w * s), pre.resize)
        img = img.resize(size, RESAMPLE[pre.interpolation])
    if pre.crop is not None:
        w, h = img.size
        left, top = int(round((w - pre.crop) / 2.0)), int(round((h - pre.crop) / 2.0))
        img = img.crop((left, top, left + pre.crop, top + pre.crop))
    x = np.asarray(img, dtype=np.float32)  # (H, W, 3) RGB
    if pre.color == "bgr":
        x = x[:, :, ::-1]
    if pre.scale == "unit":
        x = x / np.float32(255.0)
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return x.transpose(2, 0, 1)


def _photo(w=97, h=61, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize(
    "changes",
    [
        "keras-caffe",
        "keras-tf",
        "keras-torch",
        "squash",
        {"resize_mode": "squash", "resize": 80, "crop": 64},
        {"color": "bgr"},
        {"scale": "0-255", "mean": CAFFE_MEAN_BGR[::-1], "std": (1, 1, 1)},
        {"preset": "keras-caffe", "interpolation": "bicubic"},
    ],
)
def test_preprocessing_equals_a_hand_written_pipeline(changes):
    pre = describe("resnet50", "none").with_preprocessing(changes).preprocessing
    for img in (_photo(), _photo(40, 90, 1)):
        got = Preprocess(pre)(img).numpy()
        want = _by_hand(img, pre)
        assert got.shape == want.shape == (3, pre.size, pre.size)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
        if pre.scale == "0-255" and pre.std == (1.0, 1.0, 1.0):  # mean-only: exact pixel values minus means
            np.testing.assert_array_equal(got, want)


def test_the_keras_caffe_preset_is_what_seed_004_describes():
    spec = describe("vgg16", "none").with_preprocessing("keras-caffe")
    p = spec.preprocessing
    assert (p.resize, p.crop, p.resize_mode, p.color, p.scale) == (224, None, "squash", "bgr", "0-255")
    assert p.mean == (103.939, 116.779, 123.68) and p.std == (1.0, 1.0, 1.0) and p.interpolation == "nearest"
    assert spec.key == "vgg16@none~keras-caffe"
    assert describe("inception_v3", "none").with_preprocessing("keras-tf").preprocessing.size == 299


def test_bad_preprocessing_is_refused_before_the_network_loads(tmp_path):
    store = embstore.open(tmp_path / "s", create=True)
    with pytest.raises(embstore.UsageError, match="needs resize_mode='squash'"):
        store.ingest(embstore.sample_images(), model="resnet18", weights="none", preprocessing={"crop": None})
    with pytest.raises(embstore.UsageError, match="unknown color 'grb'; choose one of rgb, bgr"):
        store.ingest(embstore.sample_images(), model="resnet18", weights="none", preprocessing={"color": "grb"})
    with pytest.raises(embstore.UsageError, match="unknown preprocessing preset 'kears'"):
        store.ingest(embstore.sample_images(), model="resnet18", weights="none", preprocessing="kears")
    with pytest.raises(embstore.UsageError, match="crop must be a number of pixels or none"):
        embstore.preprocessing_changes(crop="half")


def test_two_recipes_are_two_models_and_a_key_never_gets_other_preprocessing(tmp_path):
    store = embstore.open(tmp_path / "s", create=True)
    kw = {"model": "resnet18", "weights": "none", "layers": "layer4", "workers": 0}
    a = store.ingest(embstore.sample_images(), **kw)
    b = store.ingest(embstore.sample_images(), preprocessing="keras-caffe", **kw)
    assert (a.model_key, b.model_key) == ("resnet18@none", "resnet18@none~keras-caffe") and b.n_done == 4
    rows = dict(store.sql("SELECT model_key, color FROM models").fetchall())
    assert rows == {"resnet18@none": "rgb", "resnet18@none~keras-caffe": "bgr"}
    x = store.vectors("resnet18@none", "layer4").numpy()
    y = store.vectors("resnet18@none~keras-caffe", "layer4").numpy()
    assert x.shape == y.shape and not np.allclose(x, y)
    # a torch module's key names its weights only: other preprocessing under it is refused
    import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    pre = Preprocessing(72, 64, (0.5,) * 3, (0.5,) * 3, "bilinear")
    store.ingest(embstore.sample_images(), model=net, name="mine", preprocessing=pre, layers="layer4")
    other = Preprocessing(72, 64, (0.5,) * 3, (0.5,) * 3, "bilinear", color="bgr")
    with pytest.raises(embstore.StoreError, match="ingested with other preprocessing"):
        store.ingest(embstore.sample_images(), model=net, name="mine", preprocessing=other, layers="layer4")


def test_weights_choices_are_torchvisions_with_published_accuracy_and_default():
    import math

    import torchvision
    from torchvision.models import get_model_weights

    for name in torchvision.models.list_models(module=torchvision.models):
        enum = get_model_weights(name)
        got = [(w.name, w.top1, w.default) for w in embstore.model_weights(name)]
        want = []
        for w in enum:
            top1 = w.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
            want.append((w.name, None if top1 is None or math.isnan(top1) else top1, w is enum.DEFAULT))
        assert got == want, name
    v1 = {w.name: w for w in embstore.model_weights("resnet50")}["IMAGENET1K_V1"]
    assert v1.top1 == 76.13 and not v1.default  # the 2016 recipe the seeds used; DEFAULT is V2 (80.858)
