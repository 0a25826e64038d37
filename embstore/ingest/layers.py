"""Layers of a network: discovery (graph nodes, order, channels, spatial size) and the default set.

A layer is a node of the network's computation graph, named as torchvision's feature extraction
names it (ingest/graph.py): a module called once keeps its module name (`layer1.0`, `features.3`),
a module called more than once is one layer per call (`layer1.0.relu`, `layer1.0.relu_1`, …) and
functional ops are layers too (`layer1.0.add`, `Mixed_5b.cat`, `flatten`). Composite modules
(a ResNet block, an Inception block) are not fx nodes but are layers under their module name: the
output of their one call. `hidden` is the input of the final classifier, i.e. the penultimate vector.

Where torch.fx cannot trace a network, its layers are the modules it calls once (`traced` False,
the reason in `trace_error`); a module called more than once cannot be captured there.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    """One capturable layer: a graph node (or a composite module's one call) and how it is reduced."""

    name: str
    ord: int
    channels: int
    kind: str  # conv | fc | tokens | hidden | pixels
    reduction: (
        str  # gap_relu | identity | token_mean | max_relu | grid_relu:KxK | srp_relu:K:0 | pca_relu:K:SHA | grid:KxK
    )
    default: bool
    channels_last: bool = False
    module: str = ""  # the module called, or (op "function") the module whose forward runs the op
    op: str = "module"  # module | function | hidden
    call: int = 0  # which call of `module` this node is (0: the first)
    calls: int = 1  # how many times `module` runs in one forward pass
    type: str = ""  # the module's class (ReLU, Bottleneck) or the function (add, cat)
    size: tuple[int, ...] = ()  # (H, W) of a conv map, (tokens,) of a token layer
    sets: tuple[str, ...] = ()  # the named sets it belongs to besides blocks and all: relu, act, conv
    node: str = ""  # the graph node whose output this is (itself; a composite module's last node), "" if none


class Layers(list):
    """`discover`'s answer: the layers in forward order, and what could not be traced."""

    traced: bool = True
    trace_error: str | None = None
    multi_call: dict[str, int]  # modules called more than once that are no layer of their own -> calls

    def __init__(self, items=(), *, traced: bool = True, trace_error: str | None = None, multi_call=None):
        super().__init__(items)
        self.traced, self.trace_error, self.multi_call = traced, trace_error, dict(multi_call or {})


def discover(model, model_name: str, crop: int) -> Layers:
    """Every capturable layer of `model`, in forward order, from real runs on a blank batch.

    >>> [l.name for l in discover(resnet18(), "resnet18", 224) if l.default][:2]  # doctest: +SKIP
    ['layer1.0', 'layer1.1']
    """
    import torch

    from embstore.ingest import graph

    was_training = model.training
    model.eval()
    # two images, so that a node's batch dimension is told from its others; random, so that a composite
    # module's output can be matched to the graph node that computes it
    x = torch.randn(2, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    try:
        calls, counts, hidden_shape = _module_calls(model, x)
        try:
            nodes = graph.measure(graph.trace(model), model, x)
            trace_error = None
        except graph.TraceFailed as exc:
            nodes, trace_error = [], str(exc)
    finally:
        model.train(was_training)
    classifier = find_classifier(model)
    head = classifier[0] if classifier is not None else None
    modules = dict(model.named_modules())
    entries = _merge(nodes, calls, counts, traced=trace_error is None)
    single = [e[1] for e in entries if e[0] == "module" and counts.get(e[1], 0) == 1]
    defaults = _default_names(model_name, modules, single)
    out: list[LayerInfo] = []
    for op, name, module, call, type_, shape, act, node in entries:
        if module == head and op == "module":
            continue  # the logits go to predictions
        last = _channels_last(modules.get(module) if op == "module" else None, shape)
        kind, reduction, ch = _kind(shape, last)
        sets = ("relu", "act") if act == "relu" else ("act",) if act == "act" else ()
        out.append(LayerInfo(name, len(out), ch, kind, reduction, name in defaults, last and len(shape) == 4,
                             module, op, call, counts.get(module, 1) if op == "module" else 1,
                             type_ or type(modules[module]).__name__,
                             _size(shape, last), sets, node))  # fmt: skip
    out = _mark_conv(out, nodes)
    last = _channels_last(model, hidden_shape) if len(hidden_shape) == 4 else False
    kind, reduction, ch = _kind(hidden_shape, last)
    out.append(LayerInfo(HIDDEN, len(out), ch, HIDDEN, reduction, True, last, head or "", "hidden", 0, 1,
                         "input of the classifier" if head else "output", _size(hidden_shape, last)))  # fmt: skip
    multi = {name: n for name, n in counts.items() if n > 1 and not any(l.module == name and l.op == "module"
                                                                        for l in out)}  # fmt: skip
    return Layers(out, traced=trace_error is None, trace_error=trace_error, multi_call=multi)


# -- the cached description --------------------------------------------------------------------
def cached(model_name: str, size: int) -> Layers | None:
    """`discover`'s answer for a named model at input `size` as last measured by these same versions
    of embstore's discovery code, torch, torchvision and timm; None where not measured yet (or the
    cache file is unreadable). What `embstore layers` shows and ingest checks names against before
    torch is imported; an ingest still measures the network it runs."""
    path = _cache_file(model_name, size)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        layers = [LayerInfo(**{**d, "size": tuple(d["size"]), "sets": tuple(d["sets"])}) for d in data["layers"]]
        return Layers(layers, traced=data["traced"], trace_error=data["trace_error"], multi_call=data["multi_call"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def remember(model_name: str, size: int, layers: Layers) -> None:
    """Keep `layers` as the description of `model_name` at `size` (see `cached`); a cache that cannot
    be written is skipped, never an error."""
    from embstore.store.cache import atomic_write

    data = {"model": model_name, "size": size, "layers": [asdict(layer) for layer in layers],
            "traced": layers.traced, "trace_error": layers.trace_error, "multi_call": layers.multi_call}  # fmt: skip
    text = json.dumps(data, separators=(",", ":")).encode()
    try:
        atomic_write(_cache_file(model_name, size), lambda f: f.write(text))
    except OSError:
        pass


def _cache_file(model_name: str, size: int) -> Path:
    from embstore.resources import cache_dir

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)
    return cache_dir() / "layers" / f"{safe}-{size}-{_code_version()}.json"


@functools.cache
def _code_version() -> str:
    """A hash of what decides a layer description: this module, the tracer, the sets, and the versions
    of torch, torchvision and timm."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("layers.py", "graph.py", "layersets.py"):
        h.update((here / name).read_bytes())
    for package in ("torch", "torchvision", "timm"):
        try:
            h.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            h.update(package.encode())
    return h.hexdigest()[:16]


def module_call_counts(model, size: int) -> dict[str, int]:
    """{module name: how many times it runs} in one eval-mode forward pass of a blank image.

    >>> module_call_counts(resnet18(), 224)["layer1.0.relu"]  # doctest: +SKIP
    2
    """
    import torch

    was_training = model.training
    model.eval()
    try:
        return _module_calls(model, torch.zeros(1, 3, size, size))[1]
    finally:
        model.train(was_training)


def find_classifier(model) -> tuple[str, Any] | None:
    """(name, module) of the last module producing the class scores (Linear, or SqueezeNet's conv), or None."""
    import torch.nn as nn

    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.out_channels == 1000):
            last = (name, module)
    return last


# -- helpers ------------------------------------------------------------------------------------
def _module_calls(model, x) -> tuple[list[tuple[str, int, tuple, tuple]], dict[str, int], tuple]:
    """[(module name, call, output shape, fingerprint)] of every module call with a per-image tensor
    output, in the order the calls finish; {module: calls} of every module; the shape of `hidden` (the classifier's
    input, else the network's output)."""
    import torch

    from embstore.ingest import graph

    calls: list[tuple[str, int, tuple, tuple]] = []
    counter: dict[str, int] = {}
    handles = []

    def record(name):
        def hook(_module, _inputs, output):
            k = counter.get(name, 0)
            counter[name] = k + 1
            if isinstance(output, torch.Tensor) and output.dim() in (2, 3, 4) and output.shape[0] == x.shape[0]:
                calls.append((name, k, tuple(output.shape), graph.fingerprint(output)))

        return hook

    hidden: dict[str, tuple] = {}

    def pre(_module, inputs):
        hidden["shape"] = tuple(inputs[0].shape)

    def out(_module, _inputs, output):
        hidden["shape"] = tuple(output.shape)

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(record(name)))
    classifier = find_classifier(model)
    if classifier is not None:
        handles.append(classifier[1].register_forward_pre_hook(pre))
    else:  # no classification head (a feature extractor): `hidden` is the network's own output
        handles.append(model.register_forward_hook(out))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls, counter, hidden["shape"]


def _merge(nodes, calls, counts, *, traced: bool) -> list[tuple]:
    """One forward-ordered list of (op, name, module, call, type, shape, act, node): the graph's nodes,
    and the module calls that are no node (composite modules, modules inside a leaf) under the
    module's name where the module runs once, each placed after the last node it contains. A
    composite's `node` is that last node where it computes the module's output (torchvision's rule
    for a module name, checked on the dry run's values), else ""."""
    from embstore.ingest import graph

    entries: list[tuple[tuple, tuple]] = []
    covered = {(n.module, n.call): i for i, n in enumerate(nodes) if n.op == "module"}
    names = {n.name for n in nodes}
    for i, n in enumerate(nodes):
        entries.append(((i, 1, 0), (n.op, n.name, n.module, n.call, n.kind, n.shape, n.act, n.name)))
    last_inside: dict[str, int] = {}
    for i, n in enumerate(nodes):
        parts = n.name.split(".")
        for depth in range(1, len(parts)):
            last_inside[".".join(parts[:depth])] = i
    anchor = -1
    for j, (module, call, shape, print_) in enumerate(calls):
        if (module, call) in covered:
            anchor = covered[(module, call)]
            continue
        if counts.get(module, 0) != 1 or module in names:
            continue  # a module called more than once is only capturable per call, as graph nodes
        where = last_inside.get(module, anchor) if traced else j
        inside = nodes[last_inside[module]] if module in last_inside else None
        node = inside.name if inside is not None and graph.same(inside.fingerprint, print_) else ""
        entries.append(((where, 2, j), ("module", module, module, 0, "", shape, None, node)))
    entries.sort(key=lambda e: e[0])
    return [e[1] for e in entries]


def _mark_conv(layers: list[LayerInfo], nodes) -> list[LayerInfo]:
    """Add the `conv` set: each conv's output after its ReLU (seed 003 eq. 2) — the first activation
    node (a ReLU in ResNets, VGG, Inception, DenseNet; SiLU in EfficientNet) a conv's output reaches
    through normalisation, additions, concatenations and identities (torchvision's
    Conv2dNormActivation, one leaf node, is its own)."""
    from dataclasses import replace

    if not nodes:
        return layers
    users: dict[str, list[str]] = {}
    for n in nodes:
        for src in n.inputs:
            users.setdefault(src, []).append(n.name)
    by_name = {n.name: n for n in nodes}
    through = re.compile(r"(?i)^(batchnorm\w*|groupnorm|layernorm\w*|identity|dropout\w*|stochasticdepth|droppath|"
                         r"add|add_|iadd|cat|concat|drop_path|contiguous|clone)$")  # fmt: skip
    chosen: set[str] = set()
    for n in nodes:
        if n.op == "module" and n.kind == "Conv2dNormActivation" and n.act is not None:
            chosen.add(n.name)  # conv, norm and activation in one leaf node: its output is the one
            continue
        if not (n.op == "module" and n.kind in ("Conv2d", "Conv2dSame", "Conv2dNormActivation")):
            continue
        frontier, seen = list(users.get(n.name, [])), set()
        while frontier:
            name = frontier.pop(0)
            if name in seen:
                continue
            seen.add(name)
            m = by_name[name]
            if m.act is not None:
                chosen.add(name)
            elif through.match(m.kind):
                frontier += users.get(name, [])
    return [replace(l, sets=(*l.sets, "conv")) if l.name in chosen else l for l in layers]


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


def _size(shape: tuple, channels_last: bool) -> tuple[int, ...]:
    if len(shape) == 4:
        return (int(shape[1]), int(shape[2])) if channels_last else (int(shape[2]), int(shape[3]))
    return (int(shape[1]),) if len(shape) == 3 else ()


def _default_names(model_name: str, modules: dict, names: list[str]) -> set[str]:
    import torch.nn as nn

    found = {n for n in names if type(modules[n]).__name__ in BLOCK_TYPES}
    # nested blocks (a block inside a block) are not separate defaults: keep the outermost
    found = {n for n in found if not any(n.startswith(o + ".") for o in found)}
    for prefix, pattern in _FAMILY_EXTRAS.items():
        if model_name.startswith(prefix):
            found |= {n for n in names if pattern.match(n)}
    if model_name.startswith(_RELU_FAMILIES):
        found |= {n for n in names if n.startswith("features.") and isinstance(modules[n], nn.ReLU)}
    return found
