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
) -> Vectors:
    """A lazily read `Vectors` of `model`/`layer`; names are checked now, files read on first use."""
    from embstore.labels.imagenet import classes

    with store.read() as con:
        cat = Catalog(con)
        model_key = cat.resolve_model(model)
        cat.require_layer(model_key, layer)
    wanted_labels = None if labels is None else {classes().resolve(str(c)).index for c in labels}
    wanted_ids = None if images is None else set(images)

    def read() -> tuple[list[str], np.ndarray, np.ndarray]:
        ids, x = (
            ActivationTable(store).read_layer(model_key, layer)
            if wanted_ids is None
            else ActivationTable(store).vectors_of(model_key, layer, wanted_ids)
        )
        with store.read() as con:
            known = Catalog(con).image_labels(ids)
        y = np.array([known.get(i, -1) for i in ids], dtype=np.int64)
        keep = np.ones(len(ids), bool)
        if wanted_ids is not None:
            keep &= np.array([i in wanted_ids for i in ids], bool)
        if wanted_labels is not None:
            keep &= np.isin(y, list(wanted_labels))
        if keep.all():
            return ids, x, y
        return [i for i, k in zip(ids, keep) if k], x[keep], y[keep]

    return Vectors(model_key, layer, read)
