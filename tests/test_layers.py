"""Default layer sets per family (the seeds' choices) and channel layout, on real torchvision/timm modules."""

import pytest

import embstore

DEFAULTS = {
    # ResNet: every residual block
    "resnet18": [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)],
    # DenseNet: every dense block and transition, and the final norm
    "densenet121": [f"features.{kind}{i}" for i in range(1, 4) for kind in ("denseblock", "transition")]
    + ["features.denseblock4", "features.norm5"],
    # VGG: every conv ReLU, then fc6 and fc7 after ReLU
    "vgg11": [f"features.{i}" for i in (1, 4, 7, 9, 12, 14, 17, 19)] + ["classifier.1", "classifier.4"],
    # Inception v3: the Mixed blocks
    "inception_v3": [
        "Mixed_5b",
        "Mixed_5c",
        "Mixed_5d",
        "Mixed_6a",
        "Mixed_6b",
        "Mixed_6c",
        "Mixed_6d",
        "Mixed_6e",
        "Mixed_7a",
        "Mixed_7b",
        "Mixed_7c",
    ],
    # EfficientNet (torchvision): every MBConv block and the head conv
    "efficientnet_b0": [
        f"features.{s}.{b}" for s, n in ((1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 1)) for b in range(n)
    ]
    + ["features.8"],
    # EfficientNet-Lite (timm, the offline weights' network): every block and the head's norm
    "efficientnet_lite0": [
        f"blocks.{s}.{b}" for s, n in ((0, 1), (1, 2), (2, 2), (3, 3), (4, 3), (5, 4), (6, 1)) for b in range(n)
    ]
    + ["bn2"],
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_layer_set_of_each_family(name):
    layers = embstore.model_layers(name)
    assert [layer.name for layer in layers if layer.default] == DEFAULTS[name] + ["hidden"]
    assert [layer.ord for layer in layers] == sorted(layer.ord for layer in layers)
    assert not any(layer.channels_last for layer in layers), "convolutional networks are channels-first"


@pytest.mark.parametrize("name, channels", [("swin_t", 96), ("timm:swin_tiny_patch4_window7_224", 96)])
def test_channels_last_comes_from_the_output_layout_not_the_name(name, channels):
    layers = {layer.name: layer for layer in embstore.model_layers(name)}
    blocks = [layer for layer in layers.values() if layer.default]
    first = blocks[0]
    assert first.channels_last and first.kind == "conv" and first.channels == channels
    assert sum(layer.channels_last for layer in layers.values()) > len(blocks)


def test_the_bundled_model_list_is_torchvisions_and_checking_a_name_imports_no_torch():
    import subprocess
    import sys

    import torchvision

    lite = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    assert set(torchvision.models.list_models(module=torchvision.models)) == set(embstore.list_models()) - lite
    code = (
        "import sys, embstore\n"
        "from embstore.ingest.models import check_name\n"
        "check_name('densenet121')\n"
        "try:\n    check_name('densenet_121')\nexcept embstore.UnknownModelError as e:\n    print(e)\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Did you mean: densenet121" in out and out.strip().endswith("False")
