"""Reading stored vectors back for the public API: one layer, optionally some images or classes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from embstore.results import Vectors
from embstore.store.catalog import Catalog
from embstore.store.table import ActivationTable

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


def layer_vectors(
    store: StoreCore,
    model: str | None,
    layer: str,
    *,
    images: Sequence[str] | None = None,
    labels: Sequence[int | str] | None = None,
    label_set: str | None = None,
) -> Vectors:
    """A lazily read `Vectors` of `model`/`layer`; names are checked now, files read on first use.
    Labels are indices in `label_set` (default: Catalog.choose_label_set), -1 for images it does
    not label; `labels` keeps the images of those classes (names, or indices, of that set)."""
    from embstore.errors import UnknownClassError, did_you_mean
    from embstore.labels.imagenet import classes

    with store.read() as con:
        cat = Catalog(con)
        model_key = cat.resolve_model(model)
        cat.require_layer(model_key, layer)
        chosen = cat.choose_label_set(label_set)
        names = cat.label_names(chosen) if chosen != "imagenet1k" else []
    if labels is None:
        wanted_labels = None
    elif chosen == "imagenet1k":
        wanted_labels = {classes().resolve(str(c)).index for c in labels}
    else:
        wanted_labels = set()
        for c in labels:
            text = str(c)
            if text not in names and not (text.isdigit() and int(text) < len(names)):
                raise UnknownClassError(f"no class '{c}' in label set {chosen}.{did_you_mean(text, names)}")
            wanted_labels.add(names.index(text) if text in names else int(text))
    wanted_ids = None if images is None else set(images)

    def read() -> tuple[list[str], np.ndarray, np.ndarray]:
        ids, x = (
            ActivationTable(store).read_layer(model_key, layer)
            if wanted_ids is None
            else ActivationTable(store).vectors_of(model_key, layer, wanted_ids)
        )
        with store.read() as con:
            known = Catalog(con).image_labels(ids)
        y = np.array([known[i][1] if i in known and known[i][0] == chosen else -1 for i in ids], dtype=np.int64)
        keep = np.ones(len(ids), bool)
        if wanted_ids is not None:
            keep &= np.array([i in wanted_ids for i in ids], bool)
        if wanted_labels is not None:
            keep &= np.isin(y, list(wanted_labels))
        if keep.all():
            return ids, x, y
        return [i for i, k in zip(ids, keep) if k], x[keep], y[keep]

    return Vectors(model_key, layer, read)
