"""Correlations of whole feature maps without storing them (issue 35): the Gram matrix of each
group's flattened ReLU maps, accumulated block by block over forward passes.

Pearson's r of two images' maps x, y (D = C·H·W values each) needs only their inner product,
sums and squared norms: r = (x·y − Σx Σy / D) / √((x·x − (Σx)²/D)(y·y − (Σy)²/D)). So each
group's n × n Gram matrix and n sums give its correlation matrix exactly. The maps are held for
as many blocks of `batch_size` images as `budget_bytes` allows (at least one block and the one
being paired with it); blocks beyond are recomputed, so memory stays bounded whatever n is, at
the price of more forward passes (none extra when the group fits in the budget).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from embstore.errors import EmbstoreError, UsageError
from embstore.ingest.layers import LayerInfo
from embstore.ingest.layersets import REDUCED

DEFAULT_BUDGET = 1 << 30


def map_correlations(
    net,
    preprocessing,
    layers: list[LayerInfo],
    groups: list[list[str]],
    *,
    batch_size: int = 16,
    budget_bytes: int = DEFAULT_BUDGET,
) -> tuple[dict[str, list[np.ndarray]], int]:
    """({layer: [one n × n correlation matrix of whole ReLU maps per group]}, forward passes run)
    for the image paths of each group, in their order.

    >>> map_correlations(net, pre, [layer3], [paths_a, paths_b])[0]["layer3"][0].shape  # doctest: +SKIP
    (166, 166)
    """
    from embstore.ingest.extraction import Extractor

    maps = [l for l in layers if l.kind == "conv" and len(l.size) == 2]
    if len(maps) != len(layers):
        raise UsageError("whole-map correlations need conv layers' maps: " +
                         ", ".join(l.name for l in layers if l not in maps))  # fmt: skip
    flat = [dataclasses.replace(l, name=f"{l.name}{REDUCED}flat", reduction="flat_relu",
                                channels=l.channels * l.size[0] * l.size[1], default=False) for l in maps]  # fmt: skip
    block_bytes = batch_size * sum(l.channels for l in flat) * 8
    hold = max(1, budget_bytes // block_bytes - 1)  # blocks kept; one more is the block paired with them
    extractor = Extractor(net, flat)
    passes = 0

    def forward(paths: list[str]) -> dict[str, np.ndarray]:
        nonlocal passes
        passes += 1
        vectors, _ = extractor(_batch(paths, preprocessing))
        return {l.name: np.asarray(vectors[f.name], np.float64) for l, f in zip(maps, flat)}

    out: dict[str, list[np.ndarray]] = {l.name: [] for l in maps}
    try:
        for paths in groups:
            n = len(paths)
            blocks = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
            gram = {l.name: np.zeros((n, n)) for l in maps}
            sums = {l.name: np.zeros(n) for l in maps}
            for start in range(0, len(blocks), hold):
                held = [forward([paths[r] for r in blocks[b]]) for b in range(start, min(start + hold, len(blocks)))]
                for i, mi in enumerate(held):
                    for name, x in mi.items():
                        sums[name][blocks[start + i]] = x.sum(axis=1)
                for j in range(start, len(blocks)):
                    mj = held[j - start] if j - start < len(held) else forward([paths[r] for r in blocks[j]])
                    for i, mi in enumerate(held):
                        if start + i > j:
                            continue
                        for name in gram:
                            g = mi[name] @ mj[name].T
                            gram[name][np.ix_(blocks[start + i], blocks[j])] = g
                            gram[name][np.ix_(blocks[j], blocks[start + i])] = g.T
            for l, f in zip(maps, flat):
                out[l.name].append(correlation_from_gram(gram[l.name], sums[l.name], f.channels))
    finally:
        extractor.close()
    return out, passes


def correlation_from_gram(gram: np.ndarray, sums: np.ndarray, d: int) -> np.ndarray:
    """Pearson correlations of n vectors of length d from their Gram matrix and sums."""
    centred = gram - np.outer(sums, sums) / d
    scale = np.sqrt(np.clip(np.diag(centred), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        return centred / np.outer(scale, scale)


def _batch(paths: list[str], preprocessing) -> Any:
    import torch

    from embstore.ingest.images import Preprocess, read_rgb

    pre = Preprocess(preprocessing)
    out = []
    for p in paths:
        try:
            _, rgb, _ = read_rgb(p, min_side=preprocessing.resize)  # decoded exactly as ingest does
        except EmbstoreError as exc:
            raise EmbstoreError(f"{p} could not be read again for its whole maps ({exc}); restore it") from None
        out.append(pre(rgb))
    return torch.stack(out)
