"""The final classification layer's weights, kept in the store at ingest time so the
`classifier` similarity method answers without building the network (and without torch)."""

from __future__ import annotations

import os

import numpy as np


def path(store, model_key: str):
    name, weights = model_key.split("@", 1)
    from embstore.store.files import partition_dir

    return store.indexes_root / partition_dir(name, weights, "classifier") / "weights.npy"


def save(store, model_key: str, net) -> None:
    """Write the (classes × features) weight matrix of `net`'s classifier once per model."""
    from embstore.ingest.layers import final_classifier

    target = path(store, model_key)
    if target.exists():
        return
    _, module = final_classifier(net)
    w = module.weight.detach().cpu().float().numpy().reshape(module.weight.shape[0], -1)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".weights-{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, w)
    os.replace(tmp, target)


def load(store, model_key: str) -> np.ndarray | None:
    p = path(store, model_key)
    return np.load(p) if p.exists() else None
