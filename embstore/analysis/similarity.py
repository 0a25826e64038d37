"""Nearest classes (seed 003) and nearest images, answered from the store.

Methods for classes: `prototype` (cosine of class-mean GAP vectors, one layer or all conv
layers concatenated, §3.1), `tstat` (cosine of one-vs-rest Welch t vectors, §3.2), `hidden`
(class means of the penultimate vector, §4) and `classifier` (cosine of the final layer's
weight rows; needs no images).
"""

from __future__ import annotations

import numpy as np

from embstore import search
from embstore.analysis.classstats import class_stats
from embstore.errors import EmbstoreError, NotFoundError, UnknownLayerError, UsageError
from embstore.ingest import classifier as classifier_weights
from embstore.ingest.layers import HIDDEN
from embstore.labels.imagenet import classes
from embstore.results import Answer, Neighbour
from embstore.store.catalog import Catalog

METHODS = ("prototype", "tstat", "hidden", "classifier")


def similar_classes(
    store, cls: str, *, k: int = 9, model: str | None = None, layer: str | None = None, method: str = "prototype"
) -> Answer:
    """The k classes nearest to `cls` under `method`.

    >>> similar_classes(Store.open(), "knot", k=9).rows[0].label  # doctest: +SKIP
    'chain'
    """
    if method not in METHODS:
        raise UsageError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    target = classes().resolve(cls)
    with store.read() as con:  # one catalog connection per query: each open costs ~20-50 ms
        return _similar_classes(store, con, target, k, model, layer, method)


def _similar_classes(store, con, target, k, model, layer, method) -> Answer:
    model_key = Catalog(con).resolve_model(model)
    counts = Catalog(con).class_image_counts(model_key)
    if method == "classifier":
        w = classifier_weights.load(store, model_key)
        if w is None:
            raise NotFoundError(
                f"no classifier weights stored for {model_key}; re-run `embstore ingest --model "
                f"{model_key.split('@')[0]}` once to record them"
            )
        labels, vectors, used = np.arange(w.shape[0]), w.astype(np.float64), "classifier"
    else:
        used = HIDDEN if method == "hidden" else (layer or "all")
        labels, vectors = _class_vectors(store, con, model_key, used, method)
    rows = np.nonzero(labels == target.index)[0]
    if not len(rows):
        n = counts.get(target.index, 0)
        need = "at least 2 labelled images" if method == "tstat" else "labelled images"
        raise NotFoundError(
            f"class {target.name} ({target.wnid}) has {n} image(s) for {model_key}; {method} needs {need}. "
            f"Ingest some with `embstore ingest --model {model_key.split('@')[0]} --images DIR` (one folder per "
            "wnid or class name), or use --method classifier"
        )
    finite = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    if not finite[rows[0]]:
        raise NotFoundError(
            f"class {target.name} ({target.wnid}) has {counts.get(target.index, 0)} image(s) for {model_key}: "
            f"too few (or no variance) for {method}; ingest more with `embstore ingest --model "
            f"{model_key.split('@')[0]} --images DIR`"
        )
    base = search.normalise(vectors[finite])
    base_labels = labels[finite]
    q = search.normalise(vectors[rows[0]][None, :])
    scores, idx = search.exact_search(base, q, k + 1)
    out = []
    for s, i in zip(scores[0], idx[0]):
        if i < 0 or base_labels[i] == target.index:
            continue
        c = classes()[int(base_labels[i])]
        out.append(
            Neighbour(
                len(out) + 1, float(s), c.name, {"wnid": c.wnid, "index": c.index, "images": counts.get(c.index, 0)}
            )
        )
    notes = []
    if (~finite).any() and method != "classifier":
        notes.append(f"{int((~finite).sum())} class(es) left out: too few images or no variance")
    return Answer(f"{target.name} ({target.wnid})", model_key, used, method, out[:k], notes)


# -- resolution -----------------------------------------------------------------------------
def _class_vectors(store, con, model_key: str, layer: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, one vector per class) for prototype/tstat/hidden; 'all' concatenates conv layers."""
    if layer == "all":
        names = [n for n, _, kind in Catalog(con).layers_with_vectors(model_key) if kind == "conv"]
        if not names:
            raise UnknownLayerError(f"{model_key} has no stored convolutional layers; pass --layer")
    else:
        Catalog(con).require_layer(model_key, layer)
        names = [layer]
    parts, labels = [], None
    for name in names:
        st = class_stats(store, model_key, name, con=con)
        if labels is None:
            labels = st.labels
        elif not np.array_equal(labels, st.labels):
            raise EmbstoreError(f"layers of {model_key} cover different images; re-run ingest to complete them")
        parts.append(st.welch_t()[0] if method == "tstat" else st.prototypes())
    if labels is None or not len(labels):
        raise NotFoundError(
            f"no labelled images for {model_key}; ingest some with `embstore ingest --model "
            f"{model_key.split('@')[0]} --images DIR` (one folder per wnid or class name, or a "
            "manifest with a label column), or use --method classifier"
        )
    return labels, np.concatenate(parts, axis=1)
