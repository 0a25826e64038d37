"""Named layer sets (`--layers blocks|relu|act|conv|seed003|seed004|all`) and the Keras names the
papers use (`mixed9`, `block1_conv1`, `fc1`, `activation_16`), resolved to graph nodes.

| set      | what it holds                                                                          |
|----------|----------------------------------------------------------------------------------------|
| blocks   | the family's blocks (ResNet residual blocks, DenseNet blocks + transitions, Inception  |
|          | Mixed blocks, VGG conv ReLUs + fc6/fc7, EfficientNet blocks + head); `default` is this |
| relu     | every ReLU node (nn.ReLU/ReLU6, F.relu; timm's norm+act with a ReLU)                    |
| act      | every activation node (ReLU and SiLU, Hardswish, GELU, …)                               |
| conv     | each conv's output after its activation (seed 003 eq. 2: resnet34 has 33)              |
| conv_raw | every Conv2d node's own output (eq. 2 read literally: ReLU on the conv before its BN;   |
|          | stored as GAP of ReLU like every map; resnet34 has 36, its 3 shortcut convs included)  |
| seed003  | = conv (seed 003 used every conv layer of ResNet-34)                                    |
| seed004  | per family, as seed 004 (Keras): VGG every conv ReLU + fc6/fc7, ResNet every           |
|          | activation (= relu, 49 for resnet50), Inception v3 the 11 Mixed blocks                 |
| all      | every node                                                                             |

Reductions beyond the global average (issue 35): `NAME~max` (the channel's spatial maximum, of the
ReLU map like every map) and `NAME~gridKxK` (the ReLU map averaged over a K×K grid of cells,
flattened channel-major: C·K·K values, cell (i, j) of channel c at c·K² + i·K + j) are layers of
their own beside `NAME`, stored under that name with `layers.reduction` max_relu / grid_relu:KxK;
`NAME` may be a node, an alias or a set (`blocks~max`). `NAME~srpK` is a seeded sparse random
projection of the whole flattened ReLU map (C·H·W values) to K (reduction srp_relu:K:0; the
matrix: extraction.srp_matrix), for comparing whole maps without storing them; `NAME~pcaK` its
projection on the first K principal components of the maps of a reference image set, fitted once
(`embstore fit-pca`, ingest/pca.py; reduction pca_relu:K:<basis sha>). Only 4-D maps reduce so.

`pixels` is the network's input as it receives it (the preprocessed image, RGB order of the
model's recipe), a layer before the first (ord -1) as seed 004 starts its curves "at the pixel
level": flattened whole (3·S·S values, channel-major) or `pixels~gridKxK` (each channel averaged
over K×K cells, no ReLU: 3·K·K values); reduction `identity` / `grid:KxK`.

`hidden` (the classifier's input) is always kept. Keras aliases (`aliases(…, "keras")`): VGG
`blockN_convM`, `blockN_pool`, `flatten`, `fc1`, `fc2`, `predictions` (the logits); ResNet
`activation_K` numbered from 1 in forward order as Keras 2.0-2.2 named them, the paper's era
(`tf_keras` numbers `activation`, `activation_1`, … as tf.keras does); Inception v3
`mixed0`…`mixed10` = `Mixed_5b`…`Mixed_7c`.
"""

from __future__ import annotations

import dataclasses
import re

from embstore.errors import UnknownLayerError, UsageError, did_you_mean
from embstore.ingest.layers import HIDDEN, LayerInfo, Layers

SETS = ("blocks", "default", "relu", "act", "conv", "conv_raw", "seed003", "seed004", "all")
ALIAS_SCHEMES = ("keras", "tf_keras")
REDUCED = "~"  # NAME~max, NAME~grid2x2: another reduction of NAME's map
PIXELS = "pixels"
_GRID = re.compile(r"^grid([1-9]\d?)x\1$")
_SRP = re.compile(r"^srp([1-9]\d{0,4})$")
_PCA = re.compile(r"^pca([1-9]\d{0,3})$")
PCA_PENDING = "pca_relu:{k}"  # the basis's sha is added by ingest/pca.py resolve
_RESNETS = ("resnet", "resnext", "wide_resnet")


def select(
    layers: list[LayerInfo], request: str | list[str] | None, model_name: str, input_size: int | None = None
) -> list[LayerInfo]:
    """The layers `--layers` asks for: set names, node names and Keras aliases, comma-separated or
    as a list (`hidden` always kept), in forward order; `pixels` (the input of `input_size`) first.

    >>> [l.name for l in select(discover(resnet50(), "resnet50", 224), "relu", "resnet50")][:3]  # doctest: +SKIP
    ['relu', 'layer1.0.relu', 'layer1.0.relu_1']
    """
    if request is None:
        request = "blocks"
    names = request.split(",") if isinstance(request, str) else list(request)
    names = [n.strip() for n in names if n.strip()] or ["blocks"]
    by_name = {l.name: l for l in layers}
    keras = {**aliases(layers, model_name, "tf_keras"), **aliases(layers, model_name, "keras")}
    wanted = {HIDDEN}
    reduced: dict[str, list[str]] = {}  # base layer -> its other reductions asked for
    out: list[LayerInfo] = []
    for n in names:
        base, _, how = n.partition(REDUCED)
        if base == PIXELS:
            if not any(l.name == n for l in out):
                out.append(pixels(input_size, how, model_name))
            continue
        if base in SETS:
            found = [l.name for l in members(layers, base, model_name)]
        elif base in by_name:
            found = [base]
        elif base in keras:
            found = [keras[base]]
        else:
            raise UnknownLayerError(_unknown(layers, base, model_name, [*by_name, *keras, *SETS]))
        if not how:
            wanted |= set(found)
            continue
        for name in found:
            reduced.setdefault(name, []).append(how)
    for l in layers:
        if l.name in wanted:
            out.append(l)
        out += [reduce_as(l, how, model_name) for how in dict.fromkeys(reduced.get(l.name, []))]
    return out


def pixels(input_size: int | None, how: str, model_name: str) -> LayerInfo:
    """The `pixels` layer: the network's input, whole or `gridKxK` cell means."""
    if input_size is None:
        raise UsageError(f"the pixels layer needs the input size of {model_name}'s preprocessing")
    grid = _GRID.match(how)
    if how and grid is None:
        raise UsageError(f"unknown reduction '{how}' of {PIXELS}; use {PIXELS} (whole) or {PIXELS}{REDUCED}grid8x8")
    k = int(grid.group(1)) if grid else input_size
    if k > input_size:
        raise UsageError(f"the input of {model_name} is {input_size}x{input_size}: a {how} needs K <= that")
    return LayerInfo(
        f"{PIXELS}{REDUCED}{how}" if how else PIXELS, -1, 3 * k * k, "pixels", f"grid:{k}x{k}" if grid else "identity",
        False, op="input", type="preprocessed input", size=(input_size, input_size),
    )  # fmt: skip


def reduce_as(layer: LayerInfo, how: str, model_name: str) -> LayerInfo:
    """`layer`'s map reduced another way (`max`, `gridKxK`), as a layer of its own named NAME~how."""
    grid, srp, pca = _GRID.match(how), _SRP.match(how), _PCA.match(how)
    if how != "max" and grid is None and srp is None and pca is None:
        raise UsageError(
            f"unknown reduction '{how}' in {layer.name}{REDUCED}{how}; use {layer.name}{REDUCED}max, "
            f"{layer.name}{REDUCED}grid2x2 (any KxK, K <= 99), {layer.name}{REDUCED}srp1024 (K <= 99999) "
            f"or {layer.name}{REDUCED}pca64 (a fitted basis: `embstore fit-pca`)"
        )
    if layer.kind != "conv" or len(layer.size) != 2:
        raise UsageError(
            f"layer {layer.name} of {model_name} is no spatial map ({layer.kind}); only conv maps reduce by "
            f"{how} — its vector is already the whole output"
        )
    if srp:
        width, reduction = int(srp.group(1)), f"srp_relu:{int(srp.group(1))}:0"
    elif pca:
        width, reduction = int(pca.group(1)), PCA_PENDING.format(k=int(pca.group(1)))
    else:
        k = int(grid.group(1)) if grid else 1
        if grid and k > min(layer.size):
            raise UsageError(
                f"{layer.name} of {model_name} is {layer.size[0]}x{layer.size[1]}: a {how} needs K <= that"
            )
        width, reduction = layer.channels * k * k, "max_relu" if how == "max" else f"grid_relu:{k}x{k}"
    return dataclasses.replace(
        layer, name=f"{layer.name}{REDUCED}{how}", channels=width, reduction=reduction, default=False
    )


def members(layers: list[LayerInfo], set_name: str, model_name: str) -> list[LayerInfo]:
    """The layers of one named set (without `hidden` unless the set holds it)."""
    if set_name in ("blocks", "default"):
        return [l for l in layers if l.default and l.name != HIDDEN]
    if set_name == "all":
        return list(layers)
    if set_name == "seed003":
        set_name = "conv"
    if set_name == "seed004":
        return _seed004(layers, model_name)
    if set_name == "conv_raw":
        found = [l for l in layers if l.op == "module" and l.type in ("Conv2d", "Conv2dSame")]
        if not found:
            raise UsageError(f"{model_name} has no Conv2d node; `embstore layers {model_name}` lists its layers")
        return found
    if set_name == "conv" and isinstance(layers, Layers) and not layers.traced:
        raise UsageError(
            f"the conv set follows the graph's data flow, and torch.fx cannot trace {model_name} "
            f"({layers.trace_error}); name the layers instead (`embstore layers {model_name}`)"
        )
    found = [l for l in layers if set_name in l.sets]
    if not found:
        raise UsageError(f"{model_name} has no layer in the {set_name} set; `embstore layers {model_name}` lists them")
    return found


def aliases(layers: list[LayerInfo], model_name: str, scheme: str = "keras") -> dict[str, str]:
    """{Keras layer name: node name} for the families the papers ran in Keras (VGG, ResNet, Inception v3).

    >>> aliases(discover(inception_v3(), "inception_v3", 299), "inception_v3")["mixed9"]  # doctest: +SKIP
    'Mixed_7b'
    """
    if scheme not in ALIAS_SCHEMES:
        raise UsageError(f"unknown alias scheme '{scheme}'; choose one of {', '.join(ALIAS_SCHEMES)}")
    out: dict[str, str] = {}
    if model_name.startswith("vgg"):
        block, conv = 1, 0
        for l in layers:
            if not l.name.startswith("features.") or l.op != "module":
                continue
            if l.type == "ReLU":
                conv += 1
                out[f"block{block}_conv{conv}"] = l.name  # a Keras Conv2D includes its ReLU
            elif l.type == "MaxPool2d":
                out[f"block{block}_pool"] = l.name
                block, conv = block + 1, 0
        fc = [l.name for l in layers if l.name.startswith("classifier.") and l.type == "ReLU"]
        out.update(zip(("fc1", "fc2"), fc))
        if any(l.name == "classifier" for l in layers):
            out["predictions"] = "classifier"  # the last Dense, its logits (Keras applies the softmax in it)
        if "flatten" in {l.name for l in layers}:
            out["flatten"] = "flatten"
    elif model_name.startswith(_RESNETS):
        relus = [l.name for l in layers if "relu" in l.sets]
        for k, name in enumerate(relus):
            out[f"activation_{k + 1}" if scheme == "keras" else ("activation" if k == 0 else f"activation_{k}")] = name
    elif model_name == "inception_v3":
        mixed = [l.name for l in layers if l.op == "module" and l.name.startswith("Mixed_") and "." not in l.name]
        out.update({f"mixed{k}": name for k, name in enumerate(mixed)})
    return out


def _seed004(layers: list[LayerInfo], model_name: str) -> list[LayerInfo]:
    if model_name.startswith("vgg") or model_name == "inception_v3":
        return members(layers, "blocks", model_name)  # VGG: conv ReLUs + fc6/fc7; Inception: Mixed blocks
    if model_name.startswith(_RESNETS):
        return members(layers, "relu", model_name)
    raise UsageError(
        f"seed 004 chose layers for VGG16, ResNet50 and Inception v3, not {model_name}; "
        f"choose blocks, relu, act, conv or all"
    )


def _unknown(layers: list[LayerInfo], name: str, model_name: str, choices: list[str]) -> str:
    multi = getattr(layers, "multi_call", {})
    where = f"`embstore layers {model_name}` lists them"
    if name in multi:
        if isinstance(layers, Layers) and not layers.traced:
            return (
                f"module {name} of {model_name} runs {multi[name]} times per forward pass, and torch.fx cannot trace "
                f"{model_name} ({layers.trace_error}), so only modules called once can be captured; {where}"
            )
        inside = [l.name for l in layers if l.name.startswith(name + ".")][-3:]
        return (
            f"module {name} of {model_name} runs {multi[name]} times per forward pass and its output is no single "
            f"graph node; name the nodes of each call (e.g. {', '.join(inside)}); {where}"
        )
    return f"model {model_name} has no layer '{name}'.{did_you_mean(name, choices)} Sets: {', '.join(SETS)}; {where}."
