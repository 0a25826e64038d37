"""Failure analysis for labelled images (seed 000 table 1): top-1/top-5 error, the rank and
probability the model gave the true class, and the failures whose predicted and true classes are
close in WordNet (Wu-Palmer similarity) yet rank the true class low.

On imagenet1k, or on another label set whose labels map to ImageNet classes by their WordNet ids
(migration 0016: the true class is then the best-ranked class the label stands for, its probability
their sum); a set without such a mapping is refused in one line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from embstore.errors import UsageError
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


@dataclass
class FailureReport:
    model_key: str
    label_set: str
    n_labelled: int
    top1_error: float | None
    top5_error: float | None
    median_true_rank: float | None
    failures: list[dict]  # worst first: highest rank of the true class
    close: list[dict]  # failures with wup(true, predicted) >= close_at, worst first
    close_at: float
    n_failures: int


def failure_analysis(
    store: StoreCore, model_key: str, *, label_set: str = "imagenet1k", limit: int = 20, close_at: float = 0.8
) -> FailureReport:
    """Errors of `model_key` on the store's images labelled in `label_set`, its worst and its 'close' failures.

    >>> failure_analysis(StoreCore.open(), "resnet50@IMAGENET1K_V2").close[0]["wup"]  # doctest: +SKIP
    """
    from embstore.analysis.labelsets import IMAGENET, LabelNames
    from embstore.labels.imagenet import classes
    from embstore.labels.wordnet import path_similarity, wup_similarity

    with store.read() as con:
        cat = Catalog(con)
        if label_set != IMAGENET:
            if not cat.mapped_labels(label_set):
                raise UsageError(
                    f"no label of set {label_set} maps to the models' ImageNet classes, so there are no errors to "
                    "measure; a label maps when its id (a manifest's label_id column) names the WordNet synset of "
                    "an ImageNet class or of a hypernym of some (a wnid such as n02084071, or dog.n.01)"
                )
        rates = cat.error_rates(label_set).get(model_key, {})
        rows = cat.misclassified(model_key, label_set)
        names = LabelNames.of(con, label_set)
    failures = []
    for i, p, t, pi, pp, r, tp in rows:
        a, b = names.synset(t), classes()[pi].wnid
        failures.append(
            {
                "image_id": i,
                "path": p,
                "true": names.name(t),
                "predicted": classes()[pi].name,
                "predicted_prob": pp,
                "true_rank": r,
                "true_prob": tp,
                "wup": wup_similarity(a, b) if a else None,
                "path_sim": path_similarity(a, b) if a else None,
            }
        )
    close = [f for f in failures if f["wup"] is not None and f["wup"] >= close_at]
    return FailureReport(
        model_key,
        label_set,
        rates.get("labelled", 0),
        rates.get("top1_error"),
        rates.get("top5_error"),
        rates.get("median_true_rank"),
        failures[:limit],
        close[:limit],
        close_at,
        len(failures),
    )
