"""The embedded default job: real photos through the real pretrained EfficientNet-Lite0, then every
analysis the bundled data allows, using only embstore's public API (a new user's first script)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import embstore


@dataclass
class DemoResult:
    ingest: Any  # IngestResult
    similar: embstore.Answer
    nearest: embstore.Answer
    matching: Any  # MatchingReport
    failures: Any  # FailureReport
    report: Any  # Report: <store>/report.html


def run_demo(store: embstore.Store, *, progress=None) -> DemoResult:
    """Ingest the labelled bundled photos with EfficientNet-Lite0, ask the store what it can answer, write its report.

    - top-1/top-5 error and failures on the three labelled photos (seed 000 table 1);
    - the classes nearest to espresso: one labelled photo per class is too few for prototypes to
      mean much, so the classifier weights (seed 003), drawn with example images;
    - the stored images nearest to the coffee photo;
    - triplet matching on three hand-made triplets of the photos (seed 000);
    - class prototypes of the penultimate layer as a SQL table.
    What needs more images (2 vs 2 similarity encoding, t-statistics) the report says once, with the command.
    """
    data = embstore.sample_data()
    result = store.ingest(data / "demo" / "photos.csv", model="efficientnet_lite0", batch_size=8, progress=progress)
    similar = store.similar_classes("espresso", k=9, model="efficientnet_lite0", method="classifier")
    nearest = store.nearest_images(data / "samples" / "coffee.png", k=3, model="efficientnet_lite0")
    matching = store.match_triplets(
        data / "demo" / "triplets.csv", models=["efficientnet_lite0"], layers=["hidden"], n_boot=200
    )
    store.class_tables("prototypes", "efficientnet_lite0", ["hidden"])
    failures = store.failures("efficientnet_lite0")
    report = store.report(store.path / "report.html", cls="espresso")
    return DemoResult(result, similar, nearest, matching, failures, report)
