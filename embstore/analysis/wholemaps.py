"""Seed 004's 2 vs 2 test on whole feature maps (issue 35: "presumably correlates whole feature
maps"): the concepts, groups and reference of a stored similarity-encoding run, each group's
image correlations computed from the whole flattened ReLU maps by Gram accumulation
(ingest/gram.py), never stored. The stored run (`analyze rsa`) holds the same test on each
channel's global average, so the two readings are compared on exactly the same design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embstore.analysis import rsa
from embstore.analysis.labelsets import LabelNames
from embstore.errors import NotFoundError
from embstore.labels import vectors
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.analysis.rsatables import RsaReport
    from embstore.store.core import StoreCore


@dataclass
class WholeMapLayer:
    layer: str
    acc_2v2: float
    p_value: float | None
    acc_groups: list[float]
    width: int  # C·H·W values a map
    correlations: list[np.ndarray]  # per group, concepts × concepts


@dataclass
class WholeMaps:
    model_key: str
    reference: str
    concepts: list[int]
    n_groups: int
    n_permutations: int
    forward_passes: int
    layers: list[WholeMapLayer]


def whole_map_two_vs_two(
    store: StoreCore,
    report: RsaReport,
    layers: list[str] | None,
    reference: str,
    *,
    n_permutations: int | None = None,
    batch_size: int = 16,
    budget_bytes: int | None = None,
) -> WholeMaps:
    """The 2 vs 2 accuracy and permutation p of `layers` (None: the run's conv maps) on whole maps,
    on `report`'s design.

    >>> whole_map_two_vs_two(core, store.rsa("vgg16"), ["features.29"], "glove").layers[0].acc_2v2  # doctest: +SKIP
    """
    from embstore.ingest import gram
    from embstore.ingest import layers as layers_mod
    from embstore.ingest.layersets import select
    from embstore.ingest.models import stored_network

    concepts, groups = report.concepts, report.n_groups
    with store.read() as con:
        cat = Catalog(con)
        labelled = cat.labelled_images(report.model_key, report.label_set)
        names = LabelNames.of(con, report.label_set)
        net, pre, name = stored_network(con, report.model_key, "whole maps need the network")
    by_class: dict[int, list[str]] = {}
    for image_id, label in sorted(labelled):  # as run_rsa: image j of each concept (by id) in group j
        by_class.setdefault(label, []).append(image_id)
    missing = [c for c in concepts if len(by_class.get(c, [])) < groups]
    if missing:
        raise NotFoundError(f"{len(missing)} concept(s) of the stored run have fewer than {groups} images now")
    group_ids = [[by_class[c][g] for c in concepts] for g in range(groups)]
    with store.read() as con:
        paths = Catalog(con).image_paths([i for gid in group_ids for i in gid])
    found = layers_mod.discover(net, name, pre.size)
    if layers is None:  # every conv map of the run (another reduction of a map, `NAME~max`, is no map)
        run = {r.layer for r in report.rows}
        layers = [l.name for l in found if l.name in run and l.kind == "conv" and len(l.size) == 2]
        if not layers:
            raise NotFoundError(f"the run of {report.model_key} holds no conv layer's maps to correlate whole")
    chosen = [l for l in select(found, layers, name, pre.size) if l.name != "hidden"]
    corr, passes = gram.map_correlations(
        net, pre, chosen, [[paths[i] for i in gid] for gid in group_ids], batch_size=batch_size,
        budget_bytes=budget_bytes or gram.DEFAULT_BUDGET,
    )  # fmt: skip
    ref = vectors.Reference(reference)
    if ref.space is None:
        w = vectors.wordnet_matrix(ref.spec, [str(t.wnid) for t in names.terms(concepts)])
    else:
        coverage = ref.cover(names.terms(concepts))
        w = rsa.correlation_matrix(np.stack([coverage.vectors[c] for c in concepts]))
    n_perm = report.n_permutations if n_permutations is None else n_permutations
    out = []
    for l in chosen:
        enc = rsa.similarity_encoding(None, None, n_permutations=n_perm, seed=report.seed, reference_matrix=w,
                                      correlations=corr[l.name])  # fmt: skip
        out.append(WholeMapLayer(l.name, enc.accuracy, enc.p_value, enc.per_group,
                                 l.channels * l.size[0] * l.size[1], corr[l.name]))  # fmt: skip
    return WholeMaps(report.model_key, ref.name, list(concepts), groups, n_perm, passes, out)
