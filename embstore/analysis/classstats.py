"""Per-class sufficient statistics of one model layer: count, mean and M2 per channel (float64).

Computed in one streaming pass over the layer's pinned files, in bounded chunks (Chan et al.'s pairwise merge,
so no sums of squares cancel), then materialised under <store>/indexes/ with a fingerprint of
the files they cover: a store that gained vectors since is recomputed, never served stale.
Prototypes (seed 003 §3.1) and one-vs-rest Welch t-statistics (§3.2) derive from them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embstore.store.cache import cache_write, derived_path
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


@dataclass
class ClassStats:
    labels: np.ndarray  # (K,) indices (within the label set) of the classes present
    n: np.ndarray  # (K,) images per class
    mean: np.ndarray  # (K, C) float64
    m2: np.ndarray  # (K, C) float64: sum of squared deviations from the class mean
    fingerprint: str = ""  # of the files and labels these were computed from

    def prototypes(self) -> np.ndarray:
        return self.mean

    def welch_t(self, min_n: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t, df, valid) of each class against all other images, per channel.

        Classes with fewer than `min_n` images (or whose rest has fewer) are not valid: their t
        is NaN. Where both variances are zero, t is 0 if the means are equal and ±inf is avoided
        by defining t = 0 too (the channel carries no evidence), df = NaN.
        """
        N = self.n.sum()
        n1 = self.n[:, None].astype(np.float64)
        n2 = N - n1
        total = (self.n[:, None] * self.mean).sum(0)
        m1 = self.mean
        m2 = (total[None, :] - n1 * m1) / np.where(n2 > 0, n2, 1)
        # M2 of "everything but c" from the pooled M2, reversing the parallel-variance merge
        overall_mean = total / N
        pooled = self.m2.sum(0) + (self.n[:, None] * (self.mean - overall_mean) ** 2).sum(0)
        rest_m2 = pooled[None, :] - self.m2 - n1 * n2 / N * (m1 - m2) ** 2
        rest_m2 = np.maximum(rest_m2, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t, df = welch(m1, self.m2 / (n1 - 1), n1, m2, rest_m2 / (n2 - 1), n2)
        valid = (self.n >= min_n) & (N - self.n >= min_n)
        t[~valid] = np.nan
        df[~valid] = np.nan
        return t, df, valid


def class_stats(store: StoreCore, model_key: str, layer: str, *, con=None, label_set: str = "imagenet1k") -> ClassStats:
    """The (cached) per-class statistics of the images labelled in `label_set` for `model_key`/`layer`
    (one-vs-rest statistics compare a class with the other images of its set only)."""
    if con is None:
        with store.read() as own:
            return class_stats(store, model_key, layer, con=own, label_set=label_set)
    cat = Catalog(con)
    files = [rel for rel, _ in cat.layer_files(model_key, layer)]
    # labels can change without new files (a relabelled image), so they enter the fingerprint too
    digest = cat.labels_digest(model_key, layer, label_set)
    named = [] if label_set == "imagenet1k" else [label_set]  # imagenet1k's caches from before label sets stay valid
    fingerprint = hashlib.sha256(
        json.dumps([cat.layer_fingerprint(model_key, layer), digest, *named]).encode()
    ).hexdigest()
    name = "classstats.npz" if label_set == "imagenet1k" else f"classstats.{label_set}.npz"
    cache = derived_path(store, model_key, layer, name)
    if cache.exists():
        with np.load(cache) as z:
            if str(z["fingerprint"]) == fingerprint:
                return ClassStats(z["labels"], z["n"], z["mean"], z["m2"], fingerprint)
    labels = Labels(*cat.labelled_vector_arrays(model_key, layer, label_set))
    stats = _compute(store, files, cat.layer_width(model_key, layer), labels)
    stats.fingerprint = fingerprint
    cache_write(  # a read-only or full store keeps them in memory only
        cache,
        lambda f: np.savez(
            f, fingerprint=np.array(fingerprint), labels=stats.labels, n=stats.n, mean=stats.mean, m2=stats.m2
        ),
    )
    return stats


def pairwise_welch(stats: ClassStats, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """(t, df) per channel of class `a` against class `b` (Welch, float64)."""
    pos = {int(c): i for i, c in enumerate(stats.labels)}
    for c in (a, b):
        if c not in pos or stats.n[pos[c]] < 2:
            raise ValueError(f"class {c} has fewer than 2 images")
    i, j = pos[a], pos[b]
    n1, n2 = float(stats.n[i]), float(stats.n[j])
    with np.errstate(divide="ignore", invalid="ignore"):
        return welch(stats.mean[i], stats.m2[i] / (n1 - 1), n1, stats.mean[j], stats.m2[j] / (n2 - 1), n2)


def welch(m1, v1, n1, m2, v2, n2) -> tuple[np.ndarray, np.ndarray]:
    """(t, df) of Welch's unequal-variance t-test from means, variances and counts (float64, broadcast).

    Where both variances are zero the channel carries no evidence: t = 0 and df = NaN.

    >>> t, df = welch(np.array([1.0]), np.array([1.0]), 10.0, np.array([0.0]), np.array([1.0]), 10.0)
    >>> round(float(t[0]), 6), round(float(df[0]), 6)
    (2.236068, 18.0)
    """
    a, b = v1 / n1, v2 / n2
    se2 = a + b
    t = np.where(se2 > 0, (m1 - m2) / np.sqrt(np.where(se2 > 0, se2, 1.0)), 0.0)
    df = np.where(se2 > 0, se2**2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1)), np.nan)
    return t, df


class Labels:
    """Image id -> class index for chunks of ids, by binary search over sorted fixed-width ids: ~25
    bytes per image, where a dict of a million ids costs ~200 (class statistics stay under 2 GiB).

    >>> Labels(["b", "a"], [7, 3])(["a", "c", "b"])
    array([ 3, -1,  7])
    """

    def __init__(self, ids, labels) -> None:
        keys = np.asarray(ids, dtype="S")
        order = np.argsort(keys, kind="stable")
        self.ids, self.labels = keys[order], np.asarray(labels, dtype=np.int64)[order]
        self.size = int(self.labels.max()) + 1 if len(self.labels) else 0  # classes 0 .. size - 1

    def __call__(self, ids) -> np.ndarray:
        if not len(self.ids):
            return np.full(len(ids), -1, np.int64)
        q = np.asarray(ids, dtype="S")
        pos = np.minimum(np.searchsorted(self.ids, q), len(self.ids) - 1)
        return np.where(self.ids[pos] == q, self.labels[pos], -1)


def _compute(store: StoreCore, files, width: int, labels: Labels) -> ClassStats:
    """One streaming pass: per chunk of rows, per-class sums by sort + reduceat, merged pairwise (Chan)."""
    from embstore.store.table import ActivationTable

    n: np.ndarray | None = None
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    for ids, x in ActivationTable(store).iter_files(files, width):
        y = labels(ids)
        keep = y >= 0
        if not keep.any():
            continue
        order = np.argsort(y[keep], kind="stable")
        ys = y[keep][order]
        xs = x[keep][order].astype(np.float64)
        starts = np.r_[0, np.nonzero(np.diff(ys))[0] + 1]
        cls = ys[starts]
        cn = np.diff(np.r_[starts, len(ys)])
        cmean = np.add.reduceat(xs, starts, axis=0) / cn[:, None]
        xs -= np.repeat(cmean, cn, axis=0)
        cm2 = np.add.reduceat(xs * xs, starts, axis=0)
        if n is None or mean is None or m2 is None:  # dense over the set's indices (ImageNet: 1000)
            size = labels.size
            n, mean, m2 = np.zeros(size, np.int64), np.zeros((size, x.shape[1])), np.zeros((size, x.shape[1]))
        # the merge touches classes x channels per chunk (1,854 THINGS classes: twice ImageNet's), so in
        # place, and on views where the chunk holds every class of the set (no gather, no scatter)
        full = len(cls) == len(n)
        n_old = n[cls].astype(np.float64)
        tot = n_old + cn
        delta = np.subtract(cmean, mean if full else mean[cls], out=cmean)
        step = delta * (cn / tot)[:, None]
        delta *= delta
        delta *= (n_old * cn / tot)[:, None]
        cm2 += delta
        if full:
            mean += step
            m2 += cm2
        else:
            mean[cls] += step
            m2[cls] += cm2
        n[cls] += cn
    if n is None or mean is None or m2 is None:
        return ClassStats(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0)), np.zeros((0, 0)))
    present = np.nonzero(n)[0]
    return ClassStats(present, n[present], mean[present], m2[present])
