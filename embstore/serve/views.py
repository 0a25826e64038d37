"""What each page of `embstore serve` shows, as JSON: one function per page, reading a Store.

A page's answer from the library is the CLI's `--json` of the same command, through the one
`to_json` shape (status = `embstore status --json`, a class's neighbours = `embstore query similar
--json`, an image's = `embstore query images --json`, SQL = `embstore sql --json`); what a page adds
(thumbnails, top-5, failures, stored analyses, a map) is read from the catalog here. A part of a
page that cannot be computed (a method that needs more images) says why in its place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from embstore.errors import EmbstoreError, NotFoundError, UsageError
from embstore.results import to_json
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.api import Store

MAX_SQL_ROWS = 5000  # rows a page receives; the count says how many there were
MAX_MAP_POINTS = 200_000
CLASS_IMAGES = 48
CASES_SHOWN = 3


def status(store: Store) -> dict:
    """`embstore status --json` (remembered until the snapshot changes: its error rates scan every prediction)."""
    return store.core.cached(("serve-status",), lambda: store.status().to_json())


def overview(store: Store) -> dict:
    """The store page: status, each model's layers, the runs (newest first), the errors, the classes."""
    return store.core.cached(("serve-overview",), lambda: _overview(store))


def _overview(store: Store) -> dict:
    with store.core.read() as con:
        cat = Catalog(con)
        models = cat.models_overview()
        layers = {m["model_key"]: cat.layers_overview(m["model_key"]) for m in models}
        runs = cat.runs_overview(50)
        by_reason, newest = cat.errors_overview(20)
        sets = [s["label_set"] for s in cat.label_sets() if s["images"]]
        classes = {s: cat.labelled_classes(s) for s in sets}
        running = cat.running_runs()
    return to_json(
        {"status": status(store), "models": models, "layers": layers, "runs": runs, "running": running,
         "errors": {"by_reason": by_reason, "newest": newest}, "classes": classes}
    )  # fmt: skip


def class_page(store: Store, name: str, q: Mapping[str, str]) -> dict:
    """A class: its images, its nearest classes (`embstore query similar --json`), its prototype's
    top channels and a model's failures on it (seed 000 table 1, with the top-5)."""
    from embstore.analysis.labelsets import find_class

    k = _int(q, "k", 9, 1, 1000)
    with store.core.read() as con:
        cat = Catalog(con)
        names, ref = find_class(con, name, q.get("labels"))
        n_images, images = cat.class_images(ref.label_set, ref.index, _int(q, "images", CLASS_IMAGES, 0, 10_000))
        model_keys = cat.stored_model_keys()
        model_key = cat.resolve_model(q.get("model")) if model_keys else None
        layers = [r[0] for r in cat.layers_with_vectors(model_key)] if model_key else []
        failures = cat.class_failures(model_key, ref.label_set, ref.index, 20) if model_key else []
    # the query's own options, so the answer is `embstore query similar NAME [options] --json`'s
    similar = _part(
        lambda: store.similar_classes(
            name, k=k, model=q.get("model"), layer=q.get("layer"), method=q.get("method"), label_set=q.get("labels")
        )
    )
    for f in failures:
        f["top5"] = _top5(f.pop("top5_index"), f.pop("top5_prob"))
    layer = q.get("layer") if q.get("layer") not in (None, "all") else ("hidden" if "hidden" in layers else None)
    channels = _part(lambda: _top_channels(store, model_key, layer, ref, 10)) if layer and model_key else None
    return to_json(
        {"class": {"name": ref.name, "index": ref.index, "id": ref.ident, "label_set": ref.label_set,
                   "images": n_images},
         "images": images, "models": model_keys, "model": model_key, "layers": layers, "layer": layer,
         "similar": similar, "channels": channels, "failures": failures}
    )  # fmt: skip


def image_page(store: Store, image_id: str, q: Mapping[str, str]) -> dict:
    """An image: its catalog row, each model's top-5, its nearest images (`embstore query images --json`)."""
    k = _int(q, "k", 10, 1, 1000)
    with store.core.read() as con:
        cat = Catalog(con)
        card = cat.image_card(image_id)
        if card is None:
            raise NotFoundError(f"no stored image with id {image_id!r}")
        predictions = cat.image_predictions(image_id)
        model_keys = cat.stored_model_keys()
        model_key = cat.resolve_model(q.get("model")) if model_keys else None
        layers = [r[0] for r in cat.layers_with_vectors(model_key)] if model_key else []
    for p in predictions:
        p["top5"] = _top5(p.pop("top5_index"), p.pop("top5_prob"))
    layer = q.get("layer") or "hidden"
    nearest = None
    if model_key:  # the query's own options: `embstore query images ID [options] --json`
        nearest = _part(lambda: store.nearest_images(image_id, k=k, model=q.get("model"), layer=layer))
    return to_json(
        {"image": card, "predictions": predictions, "models": model_keys, "model": model_key, "layers": layers,
         "layer": layer, "nearest": nearest}
    )  # fmt: skip


def analyses(store: Store) -> dict:
    """Stored matching results per manifest (with each model's best / worst / luck cases) and the
    stored 2 vs 2 / RSA curves per layer with their intervals."""
    from embstore.analysis.matching import CASES, cases, roc_curve
    from embstore.analysis.matchingtables import MatchingTables
    from embstore.analysis.rsatables import RsaTables

    matching = []
    with store.core.read() as con:
        tables = MatchingTables(con)
        rates = Catalog(con).error_rates()
        for sha, n, computed in tables.manifests():
            rated = tables.has_ratings(sha)
            shown = {}
            for model_key in tables.models(sha):
                m = tables.read(sha, model_key)
                order = cases(m.cos_related, m.cos_unrelated)
                fpr, tpr = roc_curve(m.cos_related, m.cos_unrelated)
                shown[model_key] = {
                    "layer": m.layer,
                    "auc": m.auc,
                    "roc": {"fpr": np.round(fpr, 5), "tpr": np.round(tpr, 5)},
                    "error": m.error,
                    "top1_error": rates.get(model_key, {}).get("top1_error"),  # seed 000 fig. 6
                    # seed 000 fig. 4: (human rating, cosine) of every rated pair
                    "ratings": {"related": np.c_[m.ratings[:, 0], m.cos_related].round(5),
                                "unrelated": np.c_[m.ratings[:, 1], m.cos_unrelated].round(5)} if rated else None,
                    **{c: [{"triplet": int(t), "ids": list(m.ids[t]), "cos_related": float(m.cos_related[t]),
                            "cos_unrelated": float(m.cos_unrelated[t])} for t in order[c][:CASES_SHOWN]]
                       for c in CASES},
                }  # fmt: skip
            matching.append({"manifest_sha": sha, "triplets": n, "computed": computed,
                             "summary": tables.summary(sha), "cases": shown})  # fmt: skip
        rsa = RsaTables(con).results()
    return to_json({"matching": matching, "rsa": rsa})


def projection(store: Store, q: Mapping[str, str]) -> dict:
    """A 2-D map of one layer: class prototypes (`of=classes`) or images (`of=images`), by PCA
    (or UMAP, `method=umap`, where umap-learn is installed)."""
    of, method = q.get("of", "classes"), q.get("method", "pca")
    if of not in ("classes", "images"):
        raise UsageError(f"of={of!r}: choose classes or images")
    if method not in ("pca", "umap"):
        raise UsageError(f"method={method!r}: choose pca or umap")
    limit = _int(q, "limit", 100_000, 1, MAX_MAP_POINTS)
    layer = q.get("layer") or "hidden"
    from embstore.analysis.labelsets import LabelNames

    with store.core.read() as con:
        cat = Catalog(con)
        model_key = cat.resolve_model(q.get("model"))
        cat.require_layer(model_key, layer)
        label_set = cat.choose_label_set(q.get("labels"))
        names = LabelNames.of(con, label_set)

    def compute() -> dict:
        if of == "classes":  # the class means (prototypes), as the class pages' statistics
            stats = _class_stats(store, model_key, layer, label_set)
            x, labels = stats.mean, stats.labels
            ids = [names.name(int(c)) for c in labels]
        else:
            vectors = store.vectors(model_key, layer, label_set=label_set)
            x, ids, labels = vectors.numpy(), vectors.image_ids, vectors.labels
            if len(ids) > limit:  # an even sample, the same on every call
                pick = np.linspace(0, len(ids) - 1, limit).round().astype(int)
                x, labels, ids = x[pick], labels[pick], [ids[i] for i in pick]
        xy, explained = _umap(x) if method == "umap" else _pca(x)
        present = sorted({int(c) for c in labels if c >= 0})
        return to_json(
            {"model": model_key, "layer": layer, "of": of, "method": method, "label_set": label_set,
             "n": len(ids), "explained": explained, "x": np.round(xy[:, 0], 5), "y": np.round(xy[:, 1], 5),
             "ids": ids, "labels": labels, "names": {c: names.name(c) for c in present}}
        )  # fmt: skip

    return store.core.cached(("serve-map", model_key, layer, of, method, label_set, limit), compute)


def sql(store: Store, query: str) -> dict:
    """`embstore sql --json` (the confined, read-only connection), at most MAX_SQL_ROWS rows."""
    if not query.strip():
        raise UsageError("q: give an SQL query")
    result = store.run_sql(query)
    if len(result.rows) <= MAX_SQL_ROWS:
        return result.to_json()
    return {**result._replace(rows=result.rows[:MAX_SQL_ROWS]).to_json(), "truncated": len(result.rows)}


# -- helpers -----------------------------------------------------------------------------------
def _int(q: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    text = q.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name}={text!r}: not a whole number") from None
    if not lo <= value <= hi:
        raise UsageError(f"{name}={value}: must be between {lo} and {hi}")
    return value


def _top5(indices, probs) -> list[dict]:
    """A stored top-5 (ImageNet class indices, probabilities) as named classes."""
    from embstore.labels.imagenet import classes

    return [{"name": classes()[int(c)].name, "index": int(c), "prob": float(p)} for c, p in zip(indices, probs)]


def _part(compute) -> Any:
    """A part of a page: its JSON, or {"error": the one-line reason} where it cannot be computed."""
    try:
        return to_json(compute())
    except EmbstoreError as exc:
        return {"error": " ".join(str(exc).split()), "type": type(exc).__name__}


def _top_channels(store: Store, model_key: str, layer: str, ref, n: int) -> dict:
    """The class prototype's (mean vector's) `n` largest channels at `layer`."""
    stats = _class_stats(store, model_key, layer, ref.label_set)
    row = np.nonzero(stats.labels == ref.index)[0]
    if not len(row):
        return {"layer": layer, "images": 0, "top": []}
    mean = stats.mean[row[0]]
    top = np.argsort(-mean, kind="stable")[:n]
    return {"layer": layer, "images": int(stats.n[row[0]]),
            "top": [{"channel": int(c), "mean": float(mean[c])} for c in top]}  # fmt: skip


def _class_stats(store: Store, model_key: str, layer: str, label_set: str):
    """Every class's count and mean at `layer` (seed 003's prototypes): one streaming pass, cached
    on disk by analysis/classstats.py and in this process until the catalog changes."""
    from embstore.analysis.classstats import class_stats

    return store.core.cached(
        ("serve-class-stats", model_key, layer, label_set),
        lambda: class_stats(store.core, model_key, layer, label_set=label_set),
    )


def _pca(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The first two principal components' scores (signs fixed: largest loading positive) and their
    shares of the variance."""
    if len(x) < 2:
        return np.zeros((len(x), 2)), [0.0, 0.0]
    c = x.astype(np.float64) - x.mean(axis=0)
    if c.shape[1] <= 4096:
        vals, vecs = np.linalg.eigh(c.T @ c)
        order = np.argsort(-vals)[:2]
        comps, var = vecs[:, order].T, vals[order]
        total = float(vals.clip(min=0).sum())
    else:
        _, sv, comps = np.linalg.svd(c, full_matrices=False)
        comps, var, total = comps[:2], sv[:2] ** 2, float((sv**2).sum())
    if comps.shape[0] < 2:
        comps = np.vstack([comps, np.zeros((2 - comps.shape[0], c.shape[1]))])
        var = np.r_[var, np.zeros(2 - len(var))]
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    return c @ comps.T, [float(v / total) if total > 0 else 0.0 for v in var]


def _umap(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    try:
        import umap
    except ImportError:
        from embstore.errors import MissingDependencyError

        raise MissingDependencyError("method=umap needs umap-learn: pip install umap-learn (or method=pca)") from None
    return umap.UMAP(n_components=2, random_state=0).fit_transform(x), []
