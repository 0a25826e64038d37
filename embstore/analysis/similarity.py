"""Nearest classes (seed 003) and nearest images, answered from the store.

Methods for classes: `prototype` (cosine of class-mean GAP vectors, one layer or all conv
layers concatenated, §3.1), `tstat` (cosine of one-vs-rest Welch t vectors, §3.2), `hidden`
(class means of the penultimate vector, §4) and `classifier` (cosine of the final layer's
weight rows; needs no images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from embstore import search
from embstore.analysis.classstats import class_stats
from embstore.analysis.labelsets import IMAGENET, ClassRef, LabelNames, find_class
from embstore.errors import EmbstoreError, NotFoundError, UnknownLayerError, UsageError
from embstore.ingest import classifier as classifier_weights
from embstore.ingest.layers import HIDDEN
from embstore.ingest.layersets import REDUCED
from embstore.results import Answer, Neighbour
from embstore.spec import ModelKey
from embstore.store.catalog import Catalog
from embstore.store.memo import JSONABLE, Codec

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

METHODS = ("prototype", "tstat", "hidden", "classifier")


def similar_classes(
    store: StoreCore,
    cls: str,
    *,
    k: int = 9,
    model: str | None = None,
    layer: str | None = None,
    method: str | None = None,
    label_set: str | None = None,
) -> Answer:
    """The k classes nearest to `cls` under `method`; with no method, prototype when the class has
    labelled images in the store, else the classifier weights (the notes say which was used).
    `label_set`: the label set `cls` and its neighbours belong to (default: analysis/labelsets.py);
    `classifier` ranks ImageNet classes only (the models' heads are ImageNet's).

    >>> similar_classes(StoreCore.open(), "knot", k=9).rows[0].label  # doctest: +SKIP
    'chain'
    """
    if method is not None and method not in METHODS:
        raise UsageError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    # a catalog connection costs ~20-50 ms to open: only a new question, or a store that changed
    # since it was last asked, opens one
    names, target = _find_class(store, cls, label_set)
    label_set = names.label_set  # the one asked for, or the default
    if method == "classifier" and label_set != IMAGENET:
        raise UsageError(
            f"method classifier ranks ImageNet classes (a model's final layer), not label set {label_set}'s; "
            "use prototype, tstat or hidden"
        )
    model_key, model_note = store.cached(("model", model), lambda: _resolve_model(store, model), JSONABLE)
    notes = [model_note] if model_note else []
    if label_set != IMAGENET:
        notes.append(f"label set {label_set} ({len(names)} classes)")
    if method is None:
        method, why = _best_method(store, model_key, layer, target)
        notes.append(f"method {method}: {why}")
    space = class_space(store, model_key, layer, method, label_set)
    rows = np.nonzero(space.labels == target.index)[0]
    if not len(rows):
        n = space.counts.get(target.index, 0)
        need = "at least 2 labelled images" if method == "tstat" else "labelled images"
        raise NotFoundError(
            f"class {target} has {n} image(s) for {model_key}; {method} needs {need}. "
            f"Ingest some with `embstore ingest --model {ModelKey.parse(model_key).name} --images DIR` (one folder per "
            "wnid or class name), or use method='classifier'"
        )
    if target.index not in space.row_of:
        raise NotFoundError(
            f"class {target} has {space.counts.get(target.index, 0)} image(s) for {model_key}: "
            f"too few (or no variance) for {method}; ingest more with `embstore ingest --model "
            f"{ModelKey.parse(model_key).name} --images DIR`"
        )
    q = space.base[space.row_of[target.index]][None, :]
    scores, idx = space.index.search(q, min(k + 1, len(space.base_labels)))
    out: list = []
    for s, i in zip(scores[0], idx[0]):
        if i < 0 or space.base_labels[i] == target.index:
            continue
        c = names.ref(int(space.base_labels[i]))
        detail = {"wnid" if label_set == IMAGENET else "id": c.ident, "index": c.index,
                  "images": space.counts.get(c.index, 0)}  # fmt: skip
        if label_set != IMAGENET:
            detail["label_set"] = label_set
        out.append(Neighbour(len(out) + 1, float(s), c.name, detail))
    if space.left_out and method != "classifier":
        notes.append(f"{space.left_out} class(es) left out: too few images or no variance")
    if len(out) < k:
        notes.append(f"only {len(out)} other class(es) can be ranked by {method} here; {k} asked")
    return Answer(str(target), model_key, space.used, method, out[:k], notes)


def _find_class(store: StoreCore, cls: str, label_set: str | None) -> tuple[LabelNames, ClassRef]:
    """(the label set's names, the class `cls` names), memoised like the spaces."""

    def find() -> list:
        with store.read() as con:
            names, ref = find_class(con, cls, label_set)
        return [names.record(), ref.index]

    record, index = store.cached(("class", cls, label_set), find, JSONABLE)
    names = LabelNames.from_record(record)
    return names, names.ref(index)


def class_space(store: StoreCore, model_key: str, layer: str | None, method: str, label_set: str) -> _ClassSpace:
    """One normalised vector per class under `method` (memoised per store state): `.base[row_of[c]]`."""
    return store.cached(
        ("classes", model_key, layer, method, label_set),
        lambda: _ClassSpace.build(store, model_key, layer, method, label_set),
        _ClassSpace.CODEC,
    )


def _best_method(store: StoreCore, model_key: str, layer: str | None, target: ClassRef) -> tuple[str, str]:
    """prototype when `target` has a usable class mean for this model, else classifier (ImageNet
    classes only); and why."""
    try:
        space = class_space(store, model_key, layer, "prototype", target.label_set)
    except UnknownLayerError:  # a wrong layer name is the caller's to fix, not a reason to switch method
        raise
    except NotFoundError:  # no labelled images at all
        space = None
    if space is not None and target.index in space.row_of:
        return "prototype", f"{target.name} has {space.counts.get(target.index, 0)} labelled image(s) in this store"
    if target.label_set != IMAGENET:
        raise NotFoundError(
            f"class {target} has no labelled images for {model_key}, and the classifier ranks ImageNet classes "
            f"only; ingest images of it into label set {target.label_set}"
        )
    return "classifier", f"{target.name} has no labelled images for {model_key}, so its final-layer weights are used"


def _resolve_model(store: StoreCore, model: str | None) -> list:
    """[model key, note on the choice or None] (a list: the memo stores it as JSON)."""
    with store.read() as con:
        return list(Catalog(con).resolve_model_noted(model))


@dataclass
class _ClassSpace:
    """One vector per class under one method, L2-normalised in a FAISS flat index: built once per
    store state (see `StoreCore.cached`), then each query is one search."""

    used: str  # the layer (or 'all', 'classifier') the vectors come from
    labels: np.ndarray  # every class with a vector
    base: np.ndarray  # normalised vectors of the usable classes (finite, not all zero)
    base_labels: np.ndarray
    row_of: dict[int, int]  # class index -> row of base
    counts: dict[int, int]  # labelled images per class
    left_out: int
    index: Any  # faiss.IndexFlatIP

    CODEC: ClassVar[Codec]

    def record(self) -> dict:
        return {
            "used": self.used,
            "labels": self.labels,
            "base": self.base,
            "base_labels": self.base_labels,
            "counts": [[int(c), int(n)] for c, n in self.counts.items()],
            "left_out": self.left_out,
        }

    @classmethod
    def from_record(cls, r: dict) -> _ClassSpace:
        base_labels = r["base_labels"]
        return cls(
            r["used"],
            r["labels"],
            r["base"],
            base_labels,
            {int(c): i for i, c in enumerate(base_labels)},
            {c: n for c, n in r["counts"]},
            r["left_out"],
            search.flat_index(r["base"]),
        )

    @classmethod
    def build(cls, store: StoreCore, model_key: str, layer: str | None, method: str, label_set: str) -> _ClassSpace:
        with store.read() as con:
            return cls._build(store, con, model_key, layer, method, label_set)

    @classmethod
    def _build(
        cls, store: StoreCore, con, model_key: str, layer: str | None, method: str, label_set: str
    ) -> _ClassSpace:
        counts = Catalog(con).class_image_counts(model_key, label_set)
        if method == "classifier":
            w = classifier_weights.load(store, model_key)
            if w is None:
                raise NotFoundError(
                    f"no classifier weights stored for {model_key}; re-run `embstore ingest --model "
                    f"{ModelKey.parse(model_key).name}` once to record them"
                )
            labels, vectors, used = np.arange(w.shape[0]), w, "classifier"
        else:
            used = HIDDEN if method == "hidden" else (layer or "all")
            labels, vectors = _class_vectors(store, con, model_key, used, method, label_set)
        finite = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
        base = search.normalise(vectors[finite])
        base_labels = labels[finite]
        return cls(
            used,
            labels,
            base,
            base_labels,
            {int(c): r for r, c in enumerate(base_labels)},
            counts,
            int((~finite).sum()),
            search.flat_index(base),
        )


_ClassSpace.CODEC = Codec(_ClassSpace.record, _ClassSpace.from_record)


# -- resolution -----------------------------------------------------------------------------
def _class_vectors(
    store: StoreCore, con, model_key: str, layer: str, method: str, label_set: str
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, one vector per class) for prototype/tstat/hidden; 'all' concatenates conv layers."""
    if layer == "all":
        # the conv maps' global averages (eq. 2): another reduction of a map (NAME~max) is no layer of its own
        names = [n for n, _, kind in Catalog(con).layers_with_vectors(model_key) if kind == "conv" and REDUCED not in n]
        if not names:
            raise UnknownLayerError(f"{model_key} has no stored convolutional layers; name a layer (layer=…)")
    else:
        Catalog(con).require_layer(model_key, layer)
        names = [layer]
    parts, labels = [], None
    for name in names:
        st = class_stats(store, model_key, name, con=con, label_set=label_set)
        if labels is None:
            labels = st.labels
        elif not np.array_equal(labels, st.labels):
            raise EmbstoreError(f"layers of {model_key} cover different images; re-run ingest to complete them")
        parts.append(st.welch_t()[0] if method == "tstat" else st.prototypes())
    if labels is None or not len(labels):
        of_set = "" if label_set == IMAGENET else f"of label set {label_set} "
        raise NotFoundError(
            f"no labelled images {of_set}for {model_key}; ingest some with `embstore ingest --model "
            f"{ModelKey.parse(model_key).name} --images DIR` (one folder per wnid or class name, or a "
            "manifest with a label column), or use method='classifier'"
        )
    return labels, np.concatenate(parts, axis=1)
