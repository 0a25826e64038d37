"""ImageNet failure analysis for labelled images (seed 000 table 1): top-1/top-5 error, the rank and
probability the model gave the true class, and the failures whose predicted and true classes are
close in WordNet (Wu-Palmer similarity) yet rank the true class low."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


@dataclass
class FailureReport:
    model_key: str
    n_labelled: int
    top1_error: float | None
    top5_error: float | None
    median_true_rank: float | None
    failures: list[dict]  # worst first: highest rank of the true class
    close: list[dict]  # failures with wup(true, predicted) >= close_at, worst first
    close_at: float
    n_failures: int


def failure_analysis(store: StoreCore, model_key: str, *, limit: int = 20, close_at: float = 0.8) -> FailureReport:
    """Errors of `model_key` on the store's labelled images, its worst and its 'close' failures.

    >>> failure_analysis(StoreCore.open(), "resnet50@IMAGENET1K_V2").close[0]["wup"]  # doctest: +SKIP
    """
    from embstore.labels.imagenet import classes
    from embstore.labels.wordnet import path_similarity, wup_similarity

    with store.read() as con:
        cat = Catalog(con)
        rates = cat.error_rates().get(model_key, {})
        rows = cat.misclassified(model_key)
    names = classes()
    failures = []
    for i, p, t, pi, pp, r, tp in rows:
        a, b = names[t].wnid, names[pi].wnid
        failures.append(
            {
                "image_id": i,
                "path": p,
                "true": names[t].name,
                "predicted": names[pi].name,
                "predicted_prob": pp,
                "true_rank": r,
                "true_prob": tp,
                "wup": wup_similarity(a, b),
                "path_sim": path_similarity(a, b),
            }
        )
    close = [f for f in failures if f["wup"] >= close_at]
    return FailureReport(
        model_key,
        rates.get("labelled", 0),
        rates.get("top1_error"),
        rates.get("top5_error"),
        rates.get("median_true_rank"),
        failures[:limit],
        close[:limit],
        close_at,
        len(failures),
    )
