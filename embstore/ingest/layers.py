"""Layers of a network: discovery (names, order, channel counts) and the default sets.

A layer is identified by its module name in the network (torchvision's node names for module
outputs), plus `hidden`: the input of the final classifier, i.e. the penultimate vector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from embstore.errors import UnknownLayerError, did_you_mean

HIDDEN = "hidden"

# Module classes whose outputs are the "blocks" of their family (seed 003/004 layer choices).
BLOCK_TYPES = {
    "BasicBlock",
    "Bottleneck",  # ResNet, ResNeXt, Wide ResNet
    "_DenseBlock",
    "_Transition",  # DenseNet
    "InceptionA",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "Inception",  # Inception v3, GoogLeNet
    "MBConv",
    "FusedMBConv",  # torchvision EfficientNet
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "_InvertedResidual",  # timm EfficientNet(-Lite), MobileNet, MNASNet, ShuffleNet
    "ResBottleneckBlock",
    "CNBlock",
    "Fire",  # RegNet, ConvNeXt, SqueezeNet
    "EncoderBlock",
    "SwinTransformerBlock",
    "SwinTransformerBlockV2",
    "MaxVitLayer",
}
_FAMILY_EXTRAS = {  # extra default layers by model-name prefix
    "densenet": re.compile(r"^features\.norm5$"),
    "efficientnet_b": re.compile(r"^features\.8$"),
    "efficientnet_v2": re.compile(r"^features\.7$"),
    "efficientnet_lite": re.compile(r"^bn2$"),
    "timm:tf_efficientnet": re.compile(r"^bn2$"),
    "vgg": re.compile(r"^classifier\.[14]$"),  # fc6, fc7 after ReLU
    "alexnet": re.compile(r"^classifier\.[25]$"),
    "mobilenet_v2": re.compile(r"^features\.18$"),
    "mobilenet_v3": re.compile(r"^features\.1[26]$"),
}
_RELU_FAMILIES = ("vgg", "alexnet")  # every conv "after ReLU" = the ReLU modules of `features`


@dataclass(frozen=True)
class LayerInfo:
    name: str
    ord: int
    channels: int
    kind: str  # conv | fc | tokens | hidden
    reduction: str  # gap_relu | identity | token_mean
    default: bool
    channels_last: bool = False


def discover(model, model_name: str, crop: int) -> list[LayerInfo]:
    """Every capturable layer of `model`, in forward order, from one dry run on a blank image.

    >>> [l.name for l in discover(resnet18(), "resnet18", 224) if l.default][:2]  # doctest: +SKIP
    ['layer1.0', 'layer1.1']
    """
    import torch

    classifier = find_classifier(model)
    seen: dict[str, tuple] = {}
    layouts: dict[str, bool] = {}
    handles = []
    modules = dict(model.named_modules())

    def record(name):
        def hook(_module, _inputs, output):
            if name not in seen and isinstance(output, torch.Tensor) and output.dim() in (2, 3, 4):
                seen[name] = tuple(output.shape)

        return hook

    for name, module in modules.items():
        if name:
            handles.append(module.register_forward_hook(record(name)))
    hidden_shape = {}

    def pre(_module, inputs):
        hidden_shape["shape"] = tuple(inputs[0].shape)

    def out(_module, _inputs, output):
        hidden_shape["shape"] = tuple(output.shape)

    if classifier is not None:
        handles.append(classifier[1].register_forward_pre_hook(pre))
    else:  # no classification head (a feature extractor): `hidden` is the network's own output
        handles.append(model.register_forward_hook(out))
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, 3, crop, crop))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    for name, shape in seen.items():
        layouts[name] = _channels_last(modules[name], shape)
    defaults = _default_names(model_name, modules, list(seen))
    out_layers = []
    for order, (name, shape) in enumerate(seen.items()):
        if classifier is not None and name == classifier[0]:
            continue  # the logits go to predictions
        kind, reduction, ch = _kind(shape, layouts[name])
        out_layers.append(
            LayerInfo(name, order, ch, kind, reduction, name in defaults, layouts[name] and len(shape) == 4)
        )
    shape = hidden_shape["shape"]
    last = _channels_last(model, shape) if len(shape) == 4 else False
    kind, reduction, ch = _kind(shape, last)
    out_layers.append(LayerInfo(HIDDEN, len(seen), ch, HIDDEN, reduction, True, last))
    return out_layers


def select(layers: list[LayerInfo], request: str | list[str] | None, model_name: str) -> list[LayerInfo]:
    """The layers `--layers` asks for: 'default', 'all' or a comma list of names (hidden always kept)."""
    if request is None or request == "default":
        chosen = [l for l in layers if l.default]
    elif request == "all":
        chosen = list(layers)
    else:
        names = request.split(",") if isinstance(request, str) else list(request)
        names = [n.strip() for n in names if n.strip()]
        by_name = {l.name: l for l in layers}
        for n in names:
            if n not in by_name:
                raise UnknownLayerError(
                    f"model {model_name} has no layer '{n}'.{did_you_mean(n, by_name)} "
                    f"`embstore layers {model_name}` lists them."
                )
        wanted = set(names) | {HIDDEN}
        chosen = [l for l in layers if l.name in wanted]
    return sorted(chosen, key=lambda l: l.ord)


def find_classifier(model) -> tuple[str, Any] | None:
    """(name, module) of the last module producing the class scores (Linear, or SqueezeNet's conv), or None."""
    import torch.nn as nn

    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.out_channels == 1000):
            last = (name, module)
    return last


def _channels_last(module, shape: tuple) -> bool:
    """Whether a 4-d output is (B, H, W, C): as the module declares it (timm's `output_fmt`), else by its shape.

    On the square dry-run input a (B, C, H, W) map has H == W; a (B, H, W, C) map has its two
    spatial sizes in positions 1 and 2 instead (Swin, ConvNeXt blocks in timm, torchvision's Swin).
    """
    if len(shape) != 4:
        return False
    fmt = getattr(module, "output_fmt", None)
    if fmt is not None:
        return str(getattr(fmt, "value", fmt)).upper() == "NHWC"
    return shape[1] == shape[2] and shape[2] != shape[3]


def _kind(shape: tuple, channels_last: bool) -> tuple[str, str, int]:
    if len(shape) == 4:
        return "conv", "gap_relu", int(shape[3] if channels_last else shape[1])
    if len(shape) == 3:
        return "tokens", "token_mean", int(shape[2])
    return "fc", "identity", int(shape[1])


def _default_names(model_name: str, modules: dict, seen: list[str]) -> set[str]:
    import torch.nn as nn

    names = {n for n in seen if type(modules[n]).__name__ in BLOCK_TYPES}
    # nested blocks (a block inside a block) are not separate defaults: keep the outermost
    names = {n for n in names if not any(n.startswith(o + ".") for o in names)}
    for prefix, pattern in _FAMILY_EXTRAS.items():
        if model_name.startswith(prefix):
            names |= {n for n in seen if pattern.match(n)}
    if model_name.startswith(_RELU_FAMILIES):
        names |= {n for n in seen if n.startswith("features.") and isinstance(modules[n], nn.ReLU)}
    return names
