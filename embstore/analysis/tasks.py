"""`embstore analyze …`: resolve models, run one measure, return its report."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embstore.analysis.comparisons import ErrorCorrelation, error_correlation
from embstore.analysis.failures import FailureReport, failure_analysis
from embstore.analysis.matching import LayerMatching, Triplets, read_triplets, triplet_matching, write_image_manifest
from embstore.errors import EmbstoreError, NotFoundError, UsageError
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


@dataclass
class MatchingReport:
    triplets: Triplets
    layers: list[LayerMatching]
    top1_error: dict[str, float | None]
    # fig. 6 across models (their hidden layer, else the deepest matched): None with one model
    correlation: ErrorCorrelation | None = None


def matching(
    store: StoreCore,
    manifest: str,
    *,
    models: list[str] | None = None,
    layers: list[str] | None = None,
    ingest_missing: bool = False,
    weights: str = "DEFAULT",
    n_boot: int = 1000,
    progress=None,
) -> MatchingReport:
    """Seed 000's matching measures for every requested model and layer (table 2 when several models).

    >>> matching(StoreCore.open(), "poporo.csv", models=["resnet50"]).layers[0].auc  # doctest: +SKIP
    """
    triplets = read_triplets(manifest)
    if ingest_missing:
        if not models or len(models) != 1:
            raise UsageError("ingest_missing needs exactly one model to ingest the manifest's images with")
        from embstore.ingest.run import ingest

        with tempfile.TemporaryDirectory() as tmp:
            images = write_image_manifest(triplets, Path(tmp) / "images.csv")
            ingest(store, models[0], str(images), weights=weights, layers="default" if not layers else ",".join(layers))
    with store.read() as con:
        keys = [Catalog(con).resolve_model(m) for m in models] if models else Catalog(con).stored_model_keys()
        top1 = {k: Catalog(con).top1_error(k) for k in keys}
    if not keys:
        raise NotFoundError(f"store {store.path} holds no vectors yet; run `embstore ingest` first")
    results = triplet_matching(store, triplets, model_keys=keys, layers=layers, n_boot=n_boot, progress=progress)
    correlation = None
    if len(keys) > 1:
        per_model: dict[str, LayerMatching] = {}
        for r in results:  # network order: the last one seen is the deepest
            if per_model.get(r.model_key) is None or per_model[r.model_key].layer != "hidden":
                per_model[r.model_key] = r
        correlation = error_correlation(list(per_model.values()), top1, n_boot=n_boot)
    return MatchingReport(triplets, results, top1, correlation)


def failures(
    store: StoreCore, model: str | None, *, label_set: str | None = None, limit: int = 20, close_at: float = 0.8
) -> FailureReport:
    with store.read() as con:
        key = Catalog(con).resolve_model(model)
        chosen = Catalog(con).choose_label_set(label_set)
    return failure_analysis(store, key, label_set=chosen, limit=limit, close_at=close_at)


def class_tables(
    store: StoreCore,
    kind: str,
    model: str | None,
    layers: list[str] | None,
    progress=None,
    label_set: str | None = None,
):
    """Materialise prototypes or t-statistics for the given (default: every stored) layer, on one label
    set (default: analysis/labelsets.py)."""
    from embstore.analysis.classtables import materialise
    from embstore.analysis.labelsets import choose_set

    with store.read() as con:
        cat = Catalog(con)
        key = cat.resolve_model(model)
        stored = [layer for layer, _, _ in cat.layers_with_vectors(key)]
        for layer in layers or []:
            cat.require_layer(key, layer)
        chosen = choose_set(con, label_set)
    out = []
    for layer in layers or stored:
        out.append(materialise(store, kind, key, layer, chosen))
        if progress:
            progress(1, len(layers or stored))
    return out


def class_pair(store: StoreCore, model: str | None, layer: str, a: str, b: str, label_set: str | None = None):
    """(class a, class b, (t, df) per channel) of class a against class b on one layer (Welch), both
    of one label set (default: analysis/labelsets.py)."""
    from embstore.analysis.classstats import class_stats, pairwise_welch
    from embstore.analysis.labelsets import LabelNames, choose_set

    with store.read() as con:
        key = Catalog(con).resolve_model(model)
        names = LabelNames.of(con, choose_set(con, label_set))
    ca, cb = names.resolve(a), names.resolve(b)
    stats = class_stats(store, key, layer, label_set=names.label_set)
    counts = {int(c): int(n) for c, n in zip(stats.labels, stats.n)}
    short = [f"{c} has {counts.get(c.index, 0)}" for c in (ca, cb) if counts.get(c.index, 0) < 2]
    if short:
        raise EmbstoreError(
            f"{' and '.join(short)} labelled image(s) for {key} / {layer}; a pair's Welch t needs at least 2 per class"
        )
    return ca, cb, pairwise_welch(stats, ca.index, cb.index)
