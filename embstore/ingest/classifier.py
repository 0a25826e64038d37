"""The final classification layer's weights, kept in the store at ingest time so the
`classifier` similarity method answers without building the network (and without torch)."""

from __future__ import annotations

import numpy as np

from embstore.store.cache import atomic_write, derived_path


def path(store, model_key: str):
    return derived_path(store, model_key, "classifier", "weights.npy")


def save(store, model_key: str, net) -> None:
    """Write the (classes × features) weight matrix of `net`'s classifier once per model (if it has one)."""
    from embstore.ingest.layers import find_classifier

    target = path(store, model_key)
    found = find_classifier(net)
    if target.exists() or found is None:
        return
    weight = found[1].weight
    save_matrix(store, model_key, weight.detach().cpu().float().numpy().reshape(weight.shape[0], -1))


def save_matrix(store, model_key: str, w: np.ndarray) -> None:
    """Store a (classes × features) classifier weight matrix for `model_key`."""
    atomic_write(path(store, model_key), lambda f: np.save(f, np.ascontiguousarray(w, dtype=np.float32)))


def load(store, model_key: str) -> np.ndarray | None:
    p = path(store, model_key)
    return np.load(p) if p.exists() else None
