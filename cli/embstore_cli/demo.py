"""The embedded default job: real photos through the real pretrained EfficientNet-Lite0."""

from __future__ import annotations

from dataclasses import dataclass

from embstore.ingest.pipeline import IngestResult, ingest
from embstore.resources import sample_images_dir
from embstore.analysis.similarity import Answer, nearest_images, similar_classes


@dataclass
class DemoResult:
    ingest: IngestResult
    similar: Answer
    nearest: Answer
    report: object  # report.Report: <store>/report.html


def run_demo(store, *, progress=None) -> DemoResult:
    """Ingest the bundled photos with EfficientNet-Lite0, ask the store two questions, write its report.

    Similar classes use the `classifier` method because the bundled photos carry no labels;
    nearest images use the penultimate ('hidden') vectors of the ingested photos.

    >>> run_demo(Store.open("demo-store", create=True)).similar.rows[0].label  # doctest: +SKIP
    'coffee mug'
    """
    photos = sample_images_dir()
    result = ingest(store, "efficientnet_lite0", str(photos), batch_size=8, progress=progress)
    similar = similar_classes(store, "espresso", k=9, model="efficientnet_lite0", method="classifier")
    nearest = nearest_images(store, str(photos / "coffee.png"), k=3, model="efficientnet_lite0")
    from embstore.report.html import build_report

    return DemoResult(result, similar, nearest, build_report(store, store.path / "report.html"))
