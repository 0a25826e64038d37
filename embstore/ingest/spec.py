"""What a model is recorded as: its identity and the exact preprocessing of its inputs (no torch here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preprocessing:
    """Exactly what is done to a photo before the network sees it (stored with every model)."""

    resize: int  # shorter side, before the centre crop
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # bilinear | bicubic | nearest


@dataclass(frozen=True)
class ModelSpec:
    """A model as the store records it: name, weights tag, preprocessing and number of classes."""

    name: str
    source: str  # torchvision | efficientnet_lite | timm | module
    weights: str  # enum name, 'none', 'file-<sha12>', 'tf-liteN' or 'module-<sha12>'
    preprocessing: Preprocessing
    num_classes: int = 1000

    @property
    def key(self) -> str:
        return f"{self.name}@{self.weights}"

    def as_row(self) -> dict[str, object]:
        row = asdict(self.preprocessing)
        row.update(name=self.name, source=self.source, weights=self.weights, num_classes=self.num_classes)
        return row
