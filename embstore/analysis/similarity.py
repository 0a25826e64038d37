"""Nearest classes (seed 003) and nearest images, answered from the store.

Methods for classes: `prototype` (cosine of class-mean GAP vectors, one layer or all conv
layers concatenated, §3.1), `tstat` (cosine of one-vs-rest Welch t vectors, §3.2), `hidden`
(class means of the penultimate vector, §4) and `classifier` (cosine of the final layer's
weight rows; needs no images).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embstore.ingest import classifier as classifier_weights
from embstore import search
from embstore.store.catalog import Catalog
from embstore.analysis.classstats import class_stats
from embstore.errors import EmbstoreError, NotFoundError, UnknownLayerError, did_you_mean
from embstore.labels.imagenet import classes
from embstore.ingest.layers import HIDDEN

METHODS = ("prototype", "tstat", "hidden", "classifier")


@dataclass
class Neighbour:
    rank: int
    score: float
    label: str  # class name, or image id
    detail: dict = field(default_factory=dict)


@dataclass
class Answer:
    query: str
    model_key: str
    layer: str
    method: str
    rows: list[Neighbour]
    notes: list[str] = field(default_factory=list)


def similar_classes(store, cls: str, *, k: int = 9, model: str | None = None, layer: str | None = None,
                    method: str = "prototype") -> Answer:
    """The k classes nearest to `cls` under `method`.

    >>> similar_classes(Store.open(), "knot", k=9).rows[0].label  # doctest: +SKIP
    'chain'
    """
    if method not in METHODS:
        raise EmbstoreError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    target = classes().resolve(cls)
    with store.read() as con:  # one catalog connection per query: each open costs ~20-50 ms
        return _similar_classes(store, con, target, k, model, layer, method)


def _similar_classes(store, con, target, k, model, layer, method) -> Answer:
    model_key = Catalog(con).resolve_model(model)
    counts = _image_counts(con, model_key)
    if method == "classifier":
        w = classifier_weights.load(store, model_key)
        if w is None:
            raise NotFoundError(f"no classifier weights stored for {model_key}; re-run `embstore ingest --model "
                                f"{model_key.split('@')[0]}` once to record them")
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
            "wnid or class name), or use --method classifier")
    finite = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    if not finite[rows[0]]:
        raise NotFoundError(
            f"class {target.name} ({target.wnid}) has {counts.get(target.index, 0)} image(s) for {model_key}: "
            f"too few (or no variance) for {method}; ingest more with `embstore ingest --model "
            f"{model_key.split('@')[0]} --images DIR`")
    base = search.normalise(vectors[finite])
    base_labels = labels[finite]
    q = search.normalise(vectors[rows[0]][None, :])
    scores, idx = search.exact_search(base, q, k + 1)
    out = []
    for s, i in zip(scores[0], idx[0]):
        if i < 0 or base_labels[i] == target.index:
            continue
        c = classes()[int(base_labels[i])]
        out.append(Neighbour(len(out) + 1, float(s), c.name, {"wnid": c.wnid, "index": c.index,
                                                                "images": counts.get(c.index, 0)}))
    notes = []
    if (~finite).any() and method != "classifier":
        notes.append(f"{int((~finite).sum())} class(es) left out: too few images or no variance")
    return Answer(f"{target.name} ({target.wnid})", model_key, used, method, out[:k], notes)


def nearest_images(store, image: str, *, k: int = 10, model: str | None = None, layer: str = HIDDEN,
                   index: str = "auto") -> Answer:
    """The k stored images nearest to IMAGE (a stored id or path, or any image file).

    >>> nearest_images(Store.open(), "data/samples/coffee.png", k=3).rows[0].detail["path"]  # doctest: +SKIP
    """
    with store.read() as con:
        model_key = Catalog(con).resolve_model(model)
        _check_layer(con, model_key, layer)
        idx = search.image_index(store, model_key, layer, index, con=con)
        image_id, query, how = _query_vector(con, image, idx)
        if query is None:
            query = embed_file(con, str(Path(image).expanduser()), model_key, layer)
        scores, rows = idx.search(search.normalise(query[None, :]), k + 1)
        hits = [(float(s), idx.ids[r]) for s, r in zip(scores[0], rows[0]) if r >= 0 and idx.ids[r] != image_id][:k]
        meta = {i: (p, n, top) for i, p, n, top in con.execute(
            """SELECT i.image_id, i.path, i.label_name, p.top5_index[1] FROM images i
               LEFT JOIN predictions p ON p.image_id = i.image_id AND p.model_key = ?
               WHERE list_contains(?, i.image_id)""", [model_key, [h for _, h in hits]]).fetchall()}
    out = []
    for r, (s, h) in enumerate(hits):
        path, label, top = meta.get(h, (None, None, None))
        predicted = classes()[top].name if top is not None else None
        out.append(Neighbour(r + 1, s, h, {"label": label, "predicted": predicted, "path": path}))
    notes = [f"query {how}", f"index {idx.kind}{' (rebuilt)' if idx.rebuilt else ''}"
             + (f", recall@10 vs exact {idx.recall_at_10:.3f}" if idx.kind != "flat" else ", exact"),
             f"faiss GPUs: {search.gpu_count()}"]
    return Answer(image, model_key, layer, "cosine", out, notes)


# -- resolution -----------------------------------------------------------------------------
def _stored_layers(con, model_key: str) -> list[tuple[str, str]]:
    return [(layer, kind) for layer, _, kind in Catalog(con).layers_with_vectors(model_key)]


def _check_layer(con, model_key: str, layer: str) -> None:
    names = [n for n, _ in _stored_layers(con, model_key)]
    if layer not in names:
        raise UnknownLayerError(f"no vectors of layer '{layer}' for {model_key}.{did_you_mean(layer, names)} "
                                f"Stored layers: {', '.join(names[:12])}{', …' if len(names) > 12 else ''}")


def _class_vectors(store, con, model_key: str, layer: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, one vector per class) for prototype/tstat/hidden; 'all' concatenates conv layers."""
    if layer == "all":
        names = [n for n, kind in _stored_layers(con, model_key) if kind == "conv"]
        if not names:
            raise UnknownLayerError(f"{model_key} has no stored convolutional layers; pass --layer")
    else:
        _check_layer(con, model_key, layer)
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
        raise NotFoundError(f"no labelled images for {model_key}; ingest some with `embstore ingest --model "
                            f"{model_key.split('@')[0]} --images DIR` (one folder per wnid or class name, or a "
                            "manifest with a label column), or use --method classifier")
    return labels, np.concatenate(parts, axis=1)


def _image_counts(con, model_key: str) -> dict[int, int]:
    return dict(con.execute(
        """SELECT i.label_index, count(*) FROM predictions p JOIN images i USING (image_id)
           WHERE p.model_key = ? AND i.label_index IS NOT NULL GROUP BY 1""", [model_key]).fetchall())


def _query_vector(con, image: str, idx) -> tuple[str | None, np.ndarray | None, str]:
    """(stored image id or None, its vector or None when it must be embedded, how it was found)."""
    from embstore.ingest.images import content_id

    position = {i: r for r, i in enumerate(idx.ids)}
    candidate = image if image in position else None
    path = Path(image).expanduser()
    if candidate is None and path.is_file():
        got = con.execute("SELECT image_id FROM images WHERE path = ?", [str(path.resolve())]).fetchall()
        candidate = got[0][0] if got else content_id(path.read_bytes())
    elif candidate is None and len(image) >= 6:
        got = con.execute("SELECT image_id FROM images WHERE starts_with(image_id, ?)", [image]).fetchall()
        if len(got) > 1:
            raise NotFoundError(f"image id prefix '{image}' matches {len(got)} images; give more digits")
        candidate = got[0][0] if got else None
    if candidate in position:
        return candidate, idx.vector(position[candidate]), f"stored image {candidate}"
    if not path.is_file():
        raise NotFoundError(f"'{image}' is neither a stored image id nor an image file")
    return None, None, "embedded on the fly"


def embed_file(con, path: str, model_key: str, layer: str) -> np.ndarray:
    """One new image through the stored model, preprocessing and layer (imports torch)."""
    from embstore.ingest import layers as layers_mod
    from embstore.ingest import models
    from embstore.ingest.extraction import Extractor
    from embstore.ingest.images import Preprocess, read_rgb

    got = con.execute(
        """SELECT m.name, m.weights, m.weights_sha256, r.config FROM models m
           LEFT JOIN runs r ON r.model_key = m.model_key WHERE m.model_key = ?
           ORDER BY r.started_at DESC LIMIT 1""", [model_key]).fetchall()
    name, tag, sha, config = got[0]
    import json

    weights = tag if tag == "none" else json.loads(config)["weights"] if config else "DEFAULT"
    net, spec, now_sha = models.load(name, weights)
    if now_sha != sha:
        raise EmbstoreError(f"the weights available now for {model_key} differ from the stored ones; "
                            "cannot embed a new image consistently")
    chosen = layers_mod.select(layers_mod.discover(net, name, spec.preprocessing.crop), [layer], name)
    _, rgb, _ = read_rgb(path)
    ex = Extractor(net, chosen)
    try:
        vectors, _ = ex(Preprocess(spec.preprocessing)(rgb)[None])
    finally:
        ex.close()
    return vectors[layer][0]
