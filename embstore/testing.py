"""Synthetic stores with known class structure, written through the real commit path.

For tests and benchmarks that need thousands of labelled images without running a network:
vectors are drawn per class around class centres, committed to the activations table exactly as
ingest does, with predictions and (for a `hidden` layer) classifier weights.

    >>> import embstore, tempfile
    >>> store = embstore.open(tempfile.mkdtemp(), create=True)
    >>> data = embstore.testing.populate(store, n_classes=4, per_class=3, layers={"conv": 8, "hidden": 6})
    >>> store.status()["vectors"], data["vectors"]["hidden"].shape
    (24, (12, 6))
    >>> store.similar_classes("tench", k=2, method="classifier").rows[0].rank
    1
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from embstore.spec import ModelSpec, Preprocessing
from embstore.store.catalog import Catalog
from embstore.store.table import ActivationTable, Part, new_batch_id

if TYPE_CHECKING:
    from embstore.api import Store
    from embstore.store.core import StoreCore

SPEC = ModelSpec("synthetic_net", "synthetic", "seed0", Preprocessing(256, 224, (0.5,) * 3, (0.5,) * 3, "bilinear"))


def populate(
    store: Store | StoreCore,
    *,
    n_classes: int = 20,
    per_class: int = 10,
    layers: dict[str, int] | None = None,
    seed: int = 0,
    batch: int = 5000,
    spec: ModelSpec = SPEC,
    centres: dict | None = None,
    noise: float = 0.7,
    predicted: dict[int, int] | None = None,
    paths: list | None = None,
    dtype: str = "float32",
    keep_vectors: bool = True,
    compact: bool = True,
    progress=None,
    label_names: list[str] | None = None,
    label_set: str = "synthetic",
) -> dict:
    """Write n_classes × per_class labelled images with vectors for each layer {name: channels}.

    `centres` may give a layer's (n_classes × channels) class centres; others are drawn at random.
    `predicted` maps image rows to a wrong top-1 class (true class then ranked 2); others are right.
    `paths` may give one real image file per row (class-major order): ids are then their content ids,
    as ingest would record them, so thumbnails and figures can use them. Vectors are drawn and
    committed `batch` images at a time (memory bounded by the batch; `keep_vectors=False` for
    benchmarks that build millions), stored as `dtype`, and the table compacted at the end.

    `label_names` (one per class, e.g. THINGS' "aardvark", "abacus", …) label the images in label set
    `label_set` (made or extended, indices in the given order; `n_classes` is then their number) in
    place of the first n ImageNet classes; predictions then rank no true class (the head is ImageNet's).

    `store` is a public `embstore.Store` or its core.
    A layer named `hidden` also gets classifier weights (1000 × channels: the class centres for the
    stored classes, random rows for the others), so the `classifier` similarity method answers.

    Returns {"ids": [...], "labels": array, "vectors": {layer: matrix}, "classifier": matrix or None}
    for reference checks.
    """
    import pyarrow as pa

    from embstore.api import Store

    store = store.core if isinstance(store, Store) else store
    layers = layers or {"conv_a": 16, "conv_b": 32, "hidden": 24}
    n_classes = len(label_names) if label_names is not None else n_classes
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    ids = [f"{seed:04d}{i:016d}" for i in range(len(labels))]
    where = [f"/synthetic/{i}.png" for i in ids]
    if paths is not None:
        from pathlib import Path

        from embstore.ingest.images import content_id

        if len(paths) != len(labels):
            raise ValueError(f"populate: {len(paths)} paths for {len(labels)} images")
        ids = [content_id(Path(p).read_bytes()) for p in paths]
        where = [str(Path(p).resolve()) for p in paths]
    drawn_centres = {}
    for name, dim in layers.items():
        c = (centres or {}).get(name)
        drawn_centres[name] = rng.gamma(2.0, 1.0, size=(n_classes, dim)) if c is None else np.asarray(c)
    kept: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    table = ActivationTable(store)
    run_id = f"synthetic-{seed}"
    with store.writer_lock():
        with store.transaction() as con:
            cat = Catalog(con)
            cat.upsert_model(spec, "0" * 64)
            from embstore.ingest.layers import LayerInfo

            kind = lambda n: ("hidden", "identity") if n == "hidden" else ("conv", "gap_relu")  # noqa: E731
            cat.upsert_layers(
                spec.key, [LayerInfo(n, o, d, *kind(n), True) for o, (n, d) in enumerate(layers.items())], dtype
            )
            cat.start_run(run_id, spec.key, {"synthetic": True}, len(ids))
            if label_names is not None:
                known = cat.label_names(label_set)
                cat.add_labels(label_set, [(len(known) + k, n, None, None) for k, n in enumerate(label_names)
                                           if n not in known])  # fmt: skip
                offset = {n: i for i, n in enumerate(cat.label_names(label_set))}
                names_index = np.array([offset[n] for n in label_names])
        for seq, start in enumerate(range(0, len(ids), batch)):
            rows = range(start, min(start + batch, len(ids)))
            sl = slice(start, rows.stop)
            noise_rng = np.random.default_rng([seed, 2, seq])  # per batch: memory bounded by the batch
            vectors = {
                name: np.maximum(
                    drawn_centres[name][labels[sl]] + noise_rng.normal(0, noise, size=(len(rows), dim)), 0
                ).astype(np.float32)
                for name, dim in layers.items()
            }
            if keep_vectors:
                for name in layers:
                    kept[name].append(vectors[name])
            top1 = [int((predicted or {}).get(r, labels[r])) for r in rows]

            def record(cat: Catalog, sl=sl, rows=rows, top1=top1) -> None:
                if label_names is None:
                    cat.insert_images(_image_rows(ids[sl], where[sl], labels[sl]))
                else:
                    cat.insert_images(_image_rows(ids[sl], where[sl], names_index[labels[sl]], label_set, label_names,
                                                  labels[sl]))  # fmt: skip
                cat.insert_predictions(
                    pa.table(
                        {
                            "model_key": [spec.key] * len(rows),
                            "image_id": ids[sl],
                            "top5_index": [[t, int(labels[r]), 997, 998, 999] for t, r in zip(top1, rows)],
                            "top5_prob": [[0.5, 0.1, 0.1, 0.1, 0.1]] * len(rows),
                            "true_rank": pa.array(
                                [None if label_names else 1 if t == labels[r] else 2 for t, r in zip(top1, rows)],
                                pa.int32(),
                            ),  # fmt: skip
                            "true_prob": pa.array(
                                [None if label_names else 0.5 if t == labels[r] else 0.1 for t, r in zip(top1, rows)],
                                pa.float32(),
                            ),  # fmt: skip
                            "run_id": [run_id] * len(rows),
                        }
                    )
                )

            table.commit(spec, run_id, [Part(new_batch_id(), ids[sl], vectors)], dict.fromkeys(layers, dtype), record)
            if progress:
                progress(rows.stop, len(ids))
        weights = None
        if "hidden" in layers:
            from embstore.ingest import classifier

            # its own generator, so the vectors above stay what they were for a given seed
            weights = np.random.default_rng([seed, 1]).normal(0, 1, size=(1000, layers["hidden"]))
            weights[:n_classes] = drawn_centres["hidden"][:1000]
            classifier.save_matrix(store, spec.key, weights)
        with store.write() as con:
            Catalog(con).finish_run(run_id, "completed")
        if compact:
            table.compact(retain_hours=0)
    vectors = {name: np.concatenate(kept[name]) for name in layers} if keep_vectors else {}
    return {"ids": ids, "labels": labels, "vectors": vectors, "classifier": weights}


def _image_rows(ids, where, labels, label_set="imagenet1k", names=None, rows=None):
    """Image rows labelled `labels` of `label_set` (imagenet1k: label_raw is the index; otherwise the
    name of `names` at each of `rows`)."""
    import pyarrow as pa

    n = len(ids)
    return pa.table(
        {
            "image_id": ids,
            "path": where,
            "file_size": [0] * n,
            "file_mtime": [0.0] * n,
            "width": [1] * n,
            "height": [1] * n,
            "mode": ["RGB"] * n,
            "label_raw": [str(int(c)) for c in labels] if names is None else [names[int(r)] for r in rows],
            "label_set": [label_set] * n,
            "label_wnid": pa.array([None] * n, pa.string()),
            "label_index": pa.array(labels, pa.int32()),
            "label_name": pa.array([None] * n, pa.string()) if names is None else [names[int(r)] for r in rows],
            "source": ["synthetic"] * n,
            "extra": [None] * n,
        }
    )
