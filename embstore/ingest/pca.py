"""Principal-component bases of whole feature maps (issue 35): `NAME~pcaK` stores each image's
ReLU map of NAME, flattened channel-major (C·H·W values), minus the reference mean, projected on
the first K principal components of a reference image set's maps, fitted once here.

The fit: every reference image through the network with the model's own preprocessing, the
flattened ReLU maps X (N × C·H·W, float64), their mean μ, the SVD of X − μ; the components are
the first K right singular vectors, each signed so that its largest-magnitude entry is positive.
The arrays go to <store>/bases/<sha>.npz and a row of `pca_bases` (migration 0018) names them;
one basis per (model, layer, K), so a layer name always means one projection. Memory: the N
reference maps (N · C·H·W · 8 bytes), refused above MAX_FIT_BYTES.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embstore.errors import NotFoundError, UsageError
from embstore.ingest.layers import LayerInfo
from embstore.ingest.layersets import REDUCED

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

BASES = "bases"  # the folder under the store
MAX_FIT_BYTES = 8 << 30
_PENDING = "pca_relu:"


@dataclass
class Basis:
    model_key: str
    layer: str
    k: int
    sha: str
    name: str
    n_images: int
    width: int
    explained: list[float]  # each component's share of the reference maps' variance
    path: Path
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # reference images not decoded


def fit(
    store: StoreCore,
    model: str,
    layer: str,
    k: int,
    images: str,
    name: str,
    *,
    weights: str = "DEFAULT",
    batch_size: int = 16,
    max_pixels: int | None = None,
) -> Basis:
    """Fit the K-component basis of `layer`'s maps on the reference `images` (named `name`), once.

    >>> fit(StoreCore.open(), "resnet18", "layer3", 64, "ref/", "ref-500").explained[:2]  # doctest: +SKIP
    """
    from embstore.ingest import models
    from embstore.ingest.images import DEFAULT_MAX_PIXELS, discover
    from embstore.ingest.layersets import select

    if not name.strip():
        raise UsageError("name the reference image set (--name), e.g. imagenet-val-500")
    if k < 1:
        raise UsageError(f"k must be at least 1, not {k}")
    described = models.describe(model, weights)
    with store.read() as con:
        known = PcaBases(con).get(described.key, layer, k)
    if known is not None:
        raise UsageError(
            f"{described.key} already has a {k}-component basis of {layer} (fitted on '{known['name']}', "
            f"{len(known['image_ids'])} images): a layer name means one projection; fit another k, or use another store"
        )
    found = discover(images)
    sources = [i for i in found.images if not i.problem]
    if len(sources) <= k:
        raise UsageError(f"{len(sources)} reference image(s) in {images}: a {k}-component basis needs more than {k}")
    net, spec, _ = models.load(model, weights)
    net.eval()
    from embstore.ingest.layers import discover as discover_layers

    base = _one_map(select(discover_layers(net, spec.name, spec.preprocessing.size), layer, spec.name), layer, model)
    width = base.channels * base.size[0] * base.size[1]
    need = len(sources) * width * 8
    if need > MAX_FIT_BYTES:
        raise UsageError(
            f"{len(sources)} maps of {layer} ({width:,} values each) need {need / (1 << 30):.1f} GiB to fit; "
            f"use fewer reference images (at most {MAX_FIT_BYTES // (width * 8):,}) or a deeper layer"
        )
    ids, maps, failed = _maps(net, spec, base, sources, batch_size, max_pixels or DEFAULT_MAX_PIXELS)
    if len(ids) <= k:
        raise UsageError(f"only {len(ids)} reference image(s) could be decoded; a {k}-component basis needs more")
    mean, components, explained = principal_components(maps, k)
    buf = io.BytesIO()
    np.savez(buf, mean=mean, components=components)
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    folder = store.path / BASES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha}.npz"
    path.write_bytes(buf.getvalue())
    with store.writer_lock(), store.transaction() as con:
        PcaBases(con).insert(spec.key, layer, k, sha, name.strip(), images, ids, width, explained)
    return Basis(spec.key, layer, k, sha, name.strip(), len(ids), width, explained, path, failed)


def principal_components(maps: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(mean, K × D components, explained-variance shares) of the rows of `maps`, signed as documented."""
    x = np.asarray(maps, np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:k]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    total = float((s**2).sum())
    explained = [float(v / total) if total else 0.0 for v in s[:k] ** 2]
    return mean.astype(np.float32), comps.astype(np.float32), explained


def resolve(store: StoreCore, model_key: str, chosen: list[LayerInfo]) -> list[LayerInfo]:
    """`chosen` with each `NAME~pcaK` layer's basis named (its sha) and loaded for the extractor."""
    from embstore.ingest import extraction

    out = []
    for layer in chosen:
        if not layer.reduction.startswith(_PENDING) or layer.reduction.count(":") != 1:
            out.append(layer)
            continue
        base, k = layer.name.split(REDUCED)[0], int(layer.reduction.split(":")[1])
        row = None
        if store.catalog_path.exists():  # a store not made yet holds no basis
            with store.read() as con:
                row = PcaBases(con).get(model_key, base, k)
        if row is None:
            raise NotFoundError(
                f"no {k}-component PCA basis of {base} for {model_key}; fit one on reference images first: "
                f"`embstore fit-pca --model {model_key.split('@')[0]} --layer {base} --k {k} --images REF --name NAME`"
            )
        path = store.path / BASES / f"{row['sha']}.npz"
        if not path.is_file():
            raise NotFoundError(f"the PCA basis file {path} is missing; restore it, or fit the basis in a new store")
        with np.load(path) as arrays:
            extraction.use_basis(row["sha"], arrays["mean"], arrays["components"])
        out.append(dataclasses.replace(layer, reduction=f"{layer.reduction}:{row['sha']}"))
    return out


def _one_map(found: list[LayerInfo], layer: str, model: str) -> LayerInfo:
    maps = [l for l in found if l.name != "hidden"]
    if len(maps) != 1 or maps[0].kind != "conv" or len(maps[0].size) != 2:
        raise UsageError(f"a PCA basis is fitted on one conv layer's maps; '{layer}' of {model} is not one")
    return maps[0]


def _maps(net, spec, base: LayerInfo, sources, batch_size: int, max_pixels: int):
    """(content ids, N × C·H·W float64 maps, [(path, why)] not decoded) of the reference images."""
    import torch

    from embstore.ingest.extraction import Extractor
    from embstore.ingest.images import Preprocess, decode_item

    flat = dataclasses.replace(base, name=f"{base.name}{REDUCED}flat", reduction="flat_relu",
                               channels=base.channels * base.size[0] * base.size[1], default=False)  # fmt: skip
    pre = Preprocess(spec.preprocessing)
    extractor = Extractor(net, [flat])
    ids: list[str] = []
    rows: list[Any] = []
    failed: list[tuple[str, str]] = []
    try:
        for start in range(0, len(sources), batch_size):
            got = [decode_item(i, s.path, pre, max_pixels) for i, s in enumerate(sources[start : start + batch_size])]
            failed += [(sources[start + g["i"]].path, g["error"]) for g in got if "error" in g]
            ok = [g for g in got if "error" not in g]
            if not ok:
                continue
            vectors, _ = extractor(torch.stack([g["x"] for g in ok]))
            rows.append(np.asarray(vectors[flat.name], np.float64))
            ids += [g["image_id"] for g in ok]
    finally:
        extractor.close()
    return ids, np.concatenate(rows) if rows else np.zeros((0, flat.channels)), failed


class PcaBases:
    """The `pca_bases` table (migration 0018), on one open catalog connection."""

    def __init__(self, con) -> None:
        self.con = con

    def get(self, model_key: str, layer: str, k: int) -> dict | None:
        cur = self.con.execute(
            "SELECT sha, name, images, image_ids, width, explained FROM pca_bases WHERE model_key = ? AND layer = ? "
            "AND k = ?",
            [model_key, layer, k],
        )
        got = cur.fetchall()
        return dict(zip([d[0] for d in cur.description], got[0])) if got else None

    def insert(self, model_key, layer, k, sha, name, images, ids, width, explained) -> None:
        self.con.execute(
            """INSERT INTO pca_bases (model_key, layer, k, sha, name, images, image_ids, width, explained)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [model_key, layer, k, sha, name, str(images), ids, width, explained],
        )
