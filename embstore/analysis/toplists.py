"""How seed 003's methods agree, and how sensible their neighbours are: Jaccard@k of two methods'
top-k lists, rank-biased overlap (Webber, Moffat & Zobel 2010) of their whole rankings, and the
mean WordNet Wu-Palmer similarity of a class to its top-k, each over every class all methods rank.

A ranking is a class's other classes by the method's cosine, best first. RBO over two complete
rankings of the same n items is exact: (1-p) Σ_{d<=n} p^(d-1) A_d + p^n, A_d the overlap of the
two depth-d prefixes over d (Webber et al. eq. 7 with A_d = 1 beyond n); p = 0.9 weighs the first
10 ranks by about 86 %.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from embstore.errors import EmbstoreError

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


def jaccard_at(a, b, k: int) -> float:
    """|a[:k] ∩ b[:k]| / |a[:k] ∪ b[:k]|.

    >>> jaccard_at([1, 2, 3], [3, 2, 9], 3)
    0.5
    """
    x, y = set(list(a)[:k]), set(list(b)[:k])
    return len(x & y) / len(x | y) if x | y else 1.0


def rbo(a, b, p: float = 0.9) -> float:
    """Rank-biased overlap of two complete rankings of the same items (1: the same order).

    >>> round(rbo([1, 2, 3], [1, 2, 3]), 12)
    1.0
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or set(a.tolist()) != set(b.tolist()):
        raise ValueError("rbo here compares two complete rankings of the same items")
    n = len(a)
    if n == 0:
        return 1.0
    # depth at which each item enters each prefix; it is in both depth-d prefixes from max(rank_a, rank_b)
    rank_b = {v: r for r, v in enumerate(b.tolist())}
    both = np.zeros(n, dtype=np.int64)
    for r, v in enumerate(a.tolist()):
        both[max(r, rank_b[v])] += 1
    overlap = np.cumsum(both) / np.arange(1, n + 1)  # A_d
    weights = (1 - p) * p ** np.arange(n)
    return float(weights @ overlap + p**n)


@dataclass
class Agreement:
    """Per method pair Jaccard@k and RBO, per method mean Wu-Palmer of its top-k, over `n_classes`."""

    model_key: str
    k: int
    p: float
    n_classes: int
    methods: list[str]
    jaccard: dict[str, float] = field(default_factory=dict)  # "prototype/hidden" -> mean
    rbo: dict[str, float] = field(default_factory=dict)
    wup: dict[str, float] = field(default_factory=dict)  # method -> mean over classes
    wup_ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # class bootstrap, 95 %
    wup_difference: dict[str, tuple[float, tuple[float, float]]] = field(default_factory=dict)  # "a-b": paired
    lists: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # method -> class -> top-k names


def agreement(
    store: StoreCore,
    model_key: str,
    methods: list[str],
    *,
    k: int = 9,
    p: float = 0.9,
    label_set: str = "imagenet1k",
    show: tuple[str, ...] = (),
    n_boot: int = 1000,
    seed: int = 0,
) -> Agreement:
    """The methods' agreement and Wu-Palmer quality over every class all of them rank; `show`: the
    classes whose top-k lists to keep (seed 003's knot and baseball)."""
    from embstore.analysis import stats
    from embstore.analysis.labelsets import LabelNames
    from embstore.analysis.similarity import class_space
    from embstore.labels import wordnet

    spaces = {m: class_space(store, model_key, None, m, label_set) for m in methods}
    common = set.intersection(*(set(s.row_of) for s in spaces.values()))
    with store.read() as con:
        names = LabelNames.of(con, label_set)
    synset = {c: names.synset(c) for c in common}
    classes = sorted(common)
    rankings = {}
    for m, s in spaces.items():
        rows = [s.row_of[c] for c in classes]
        sims = s.base[rows] @ s.base[rows].T
        np.fill_diagonal(sims, -np.inf)
        order = np.argsort(-sims, axis=1, kind="stable")[:, : len(classes) - 1]
        rankings[m] = np.asarray(classes)[order]
    out = Agreement(model_key, k, p, len(classes), list(methods))
    for i, m in enumerate(methods):
        for o in methods[i + 1 :]:
            pair = f"{m}/{o}"
            out.jaccard[pair] = float(np.mean([jaccard_at(x, y, k) for x, y in zip(rankings[m], rankings[o])]))
            out.rbo[pair] = float(np.mean([rbo(x, y, p) for x, y in zip(rankings[m], rankings[o])]))
    per_class: dict[str, np.ndarray] = {}
    scored = [j for j, c in enumerate(classes) if synset[c]]

    def wup(a: int, b: int) -> float:
        x, y = synset[a], synset[b]
        return wordnet.wup_similarity(x, y) if x and y else float("nan")

    for m in methods:  # sorted: the same neighbours, the same mean
        per_class[m] = np.array([np.mean(sorted(wup(classes[j], int(n)) for n in rankings[m][j][:k])) for j in scored])
    idx = stats.resamples(len(scored), n_boot, seed) if n_boot and scored else None
    for i, m in enumerate(methods):
        out.wup[m] = float(np.nanmean(per_class[m])) if scored else float("nan")
        if idx is not None:
            out.wup_ci[m] = stats.percentile_interval(np.nanmean(per_class[m][idx], axis=1))
        for o in methods[i + 1 :]:
            if idx is not None:
                d = per_class[m] - per_class[o]
                out.wup_difference[f"{m}-{o}"] = (
                    float(np.nanmean(d)),
                    stats.percentile_interval(np.nanmean(d[idx], axis=1)),
                )
    for cls in show:
        try:
            hit = names.resolve(cls).index
        except EmbstoreError:  # the paper's class is not in this label set: nothing to show
            continue
        if hit not in common:
            continue
        j = classes.index(hit)
        for m in methods:
            out.lists.setdefault(m, {})[cls] = [names.name(int(c)) for c in rankings[m][j][:k]]
    return out
