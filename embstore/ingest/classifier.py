"""The final classification layer's weights, kept in the store at ingest time so the
`classifier` similarity method answers without building the network (and without torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from embstore.store.cache import atomic_write, derived_path

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


def path(store: StoreCore, model_key: str):
    return derived_path(store, model_key, "classifier", "weights.npy")


def save(store: StoreCore, model_key: str, net) -> None:
    """Write the (classes × features) weight matrix of `net`'s classifier once per model (if it has one)."""
    from embstore.ingest.layers import find_classifier

    found = find_classifier(net)
    if found is None or load(store, model_key) is not None:  # a damaged copy is written again
        return
    weight = found[1].weight
    save_matrix(store, model_key, weight.detach().cpu().float().numpy().reshape(weight.shape[0], -1))


def save_matrix(store: StoreCore, model_key: str, w: np.ndarray) -> None:
    """Store a (classes × features) classifier weight matrix for `model_key`."""
    atomic_write(path(store, model_key), lambda f: np.save(f, np.ascontiguousarray(w, dtype=np.float32)))


def load(store: StoreCore, model_key: str) -> np.ndarray | None:
    """The stored matrix, or None where there is none or the file is damaged (the next ingest of the
    model writes it again; the classifier method says so meanwhile)."""
    try:
        w = np.load(path(store, model_key), allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return w if w.ndim == 2 and w.dtype == np.float32 else None
