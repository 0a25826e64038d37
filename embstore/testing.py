"""Synthetic stores with known class structure, written through the real commit path.

For tests and benchmarks that need thousands of labelled images without running a network:
vectors are drawn per class around class centres, stored as Parquet files registered in the
catalog exactly as ingest does, with predictions and (for a `hidden` layer) classifier weights.

    >>> import embstore, tempfile
    >>> store = embstore.open(tempfile.mkdtemp(), create=True)
    >>> data = embstore.testing.populate(store, n_classes=4, per_class=3, layers={"conv": 8, "hidden": 6})
    >>> store.status()["vectors"], data["vectors"]["hidden"].shape
    (24, (12, 6))
    >>> store.similar_classes("tench", k=2, method="classifier").rows[0].rank
    1
"""

from __future__ import annotations

import numpy as np

from embstore.ingest.spec import ModelSpec, Preprocessing
from embstore.store.catalog import Catalog
from embstore.store.files import ActivationFiles, file_rows

SPEC = ModelSpec("synthetic_net", "synthetic", "seed0", Preprocessing(256, 224, (0.5,) * 3, (0.5,) * 3, "bilinear"))


def populate(
    store,
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
) -> dict:
    """Write n_classes × per_class labelled images with vectors for each layer {name: channels}.

    `centres` may give a layer's (n_classes × channels) class centres; others are drawn at random.
    `predicted` maps image rows to a wrong top-1 class (true class then ranked 2); others are right.
    `paths` may give one real image file per row (class-major order): ids are then their content ids,
    as ingest would record them, so thumbnails and figures can use them.

    A layer named `hidden` also gets classifier weights (1000 × channels: the class centres for the
    stored classes, random rows for the others), so the `classifier` similarity method answers.

    Returns {"ids": [...], "labels": array, "vectors": {layer: matrix}, "classifier": matrix or None}
    for reference checks.
    """
    import pyarrow as pa

    layers = layers or {"conv_a": 16, "conv_b": 32, "hidden": 24}
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
    vectors, drawn_centres = {}, {}
    for name, dim in layers.items():
        c = (centres or {}).get(name)
        c = rng.gamma(2.0, 1.0, size=(n_classes, dim)) if c is None else np.asarray(c)
        drawn_centres[name] = c
        vectors[name] = np.maximum(c[labels] + rng.normal(0, noise, size=(len(labels), dim)), 0).astype(np.float32)
    files = ActivationFiles(store)
    run_id = f"synthetic-{seed}"
    with store.transaction() as con:
        cat = Catalog(con)
        cat.upsert_model(spec, "0" * 64)
        from embstore.ingest.layers import LayerInfo

        cat.upsert_layers(
            spec.key,
            [
                LayerInfo(
                    n, o, d, "hidden" if n == "hidden" else "conv", "identity" if n == "hidden" else "gap_relu", True
                )
                for o, (n, d) in enumerate(layers.items())
            ],
        )
        cat.start_run(run_id, spec.key, {"synthetic": True}, len(ids))
    for seq, start in enumerate(range(0, len(ids), batch)):
        sl = slice(start, start + batch)
        staged = [files.stage(spec, name, run_id, seq, ids[sl], vectors[name][sl]) for name in layers]
        with store.transaction() as con:
            cat = Catalog(con)
            cat.insert_images(
                pa.table(
                    {
                        "image_id": ids[sl],
                        "path": where[sl],
                        "file_size": [0] * len(ids[sl]),
                        "file_mtime": [0.0] * len(ids[sl]),
                        "width": [1] * len(ids[sl]),
                        "height": [1] * len(ids[sl]),
                        "mode": ["RGB"] * len(ids[sl]),
                        "label_raw": [str(int(c)) for c in labels[sl]],
                        "label_wnid": [None] * len(ids[sl]),
                        "label_index": pa.array(labels[sl], pa.int32()),
                        "label_name": [None] * len(ids[sl]),
                        "source": ["synthetic"] * len(ids[sl]),
                        "extra": [None] * len(ids[sl]),
                    }
                )
            )
            rows = range(start, min(start + batch, len(ids)))
            top1 = [int((predicted or {}).get(r, labels[r])) for r in rows]
            cat.insert_predictions(
                pa.table(
                    {
                        "model_key": [spec.key] * len(rows),
                        "image_id": ids[sl],
                        "top5_index": [[t, int(labels[r]), 997, 998, 999] for t, r in zip(top1, rows)],
                        "top5_prob": [[0.5, 0.1, 0.1, 0.1, 0.1]] * len(rows),
                        "true_rank": [1 if t == labels[r] else 2 for t, r in zip(top1, rows)],
                        "true_prob": [0.5 if t == labels[r] else 0.1 for t, r in zip(top1, rows)],
                        "run_id": [run_id] * len(rows),
                    }
                )
            )
            cat.register_files(*file_rows(staged, spec.key, run_id))
        files.publish(staged)
    weights = None
    if "hidden" in layers:
        from embstore.ingest import classifier

        # its own generator, so the vectors above stay what they were for a given seed
        weights = np.random.default_rng([seed, 1]).normal(0, 1, size=(1000, layers["hidden"]))
        weights[:n_classes] = drawn_centres["hidden"][:1000]
        classifier.save_matrix(store, spec.key, weights)
    with store.write() as con:
        Catalog(con).finish_run(run_id, "completed")
    store.refresh_view()
    return {"ids": ids, "labels": labels, "vectors": vectors, "classifier": weights}
