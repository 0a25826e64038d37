"""The embedded default job: real photos through the real pretrained EfficientNet-Lite0, using
only embstore's public API (this is what a first script of a new user looks like)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import embstore


@dataclass
class DemoResult:
    ingest: Any  # IngestResult
    similar: embstore.Answer
    nearest: embstore.Answer
    report: Any  # Report: <store>/report.html


def run_demo(store: embstore.Store, *, progress=None) -> DemoResult:
    """Ingest the bundled photos with EfficientNet-Lite0, ask the store two questions, write its report.

    Similar classes use the `classifier` method because the bundled photos carry no labels;
    nearest images use the penultimate ('hidden') vectors of the ingested photos.
    """
    photos = embstore.sample_images()
    result = store.ingest(photos, model="efficientnet_lite0", batch_size=8, progress=progress)
    similar = store.similar_classes("espresso", k=9, model="efficientnet_lite0", method="classifier")
    nearest = store.nearest_images(photos / "coffee.png", k=3, model="efficientnet_lite0")
    return DemoResult(result, similar, nearest, store.report(store.path / "report.html"))
