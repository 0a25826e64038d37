"""WordNet 3.0 similarity between ImageNet classes, offline and without nltk at run time.

`data/imagenet1k_wordnet.tsv` holds every hypernym path (root first) of each class, extracted
once from the WordNet 3.0 noun database (see data/build_imagenet_wordnet.py). Path and
Wu-Palmer similarity follow NLTK's definitions, which the tests check against NLTK itself.
"""

from __future__ import annotations

import functools

from embstore.resources import data_dir


@functools.cache
def _paths() -> dict[str, list[list[str]]]:
    lines = (data_dir() / "imagenet1k_wordnet.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return {w: [p.split(",") for p in ps.split("|")] for w, ps in (line.split("\t") for line in lines)}


@functools.cache  # per class, reused by every pair it appears in (callers only read it)
def hypernym_distances(wnid: str) -> dict[str, int]:
    """Hops from `wnid` up to each of its hypernyms (itself at 0)."""
    out: dict[str, int] = {}
    for path in _paths()[wnid]:
        for hops, node in enumerate(reversed(path)):
            out[node] = min(out.get(node, hops), hops)
    return out


@functools.cache
def _depths(wnid: str) -> dict[str, tuple[int, int]]:
    """(min depth, max depth) from the root of every node on `wnid`'s paths."""
    out: dict[str, tuple[int, int]] = {}
    for path in _paths()[wnid]:
        for depth, node in enumerate(path):
            lo, hi = out.get(node, (depth, depth))
            out[node] = (min(lo, depth), max(hi, depth))
    return out


def path_similarity(a: str, b: str) -> float:
    """1 / (1 + shortest hypernym-graph distance) between two class wnids (NLTK's path_similarity).

    >>> round(path_similarity("n03627232", "n02999410"), 4)  # knot, chain
    0.1111
    """
    da, db = hypernym_distances(a), hypernym_distances(b)
    return 1.0 / (1 + min(da[c] + db[c] for c in set(da) & set(db)))


def wup_similarity(a: str, b: str) -> float:
    """Wu-Palmer: 2·depth(lcs) / (len_a + len_b), with NLTK's choice of lowest common subsumer.

    >>> round(wup_similarity("n03627232", "n02999410"), 4)
    0.6
    """
    da, db = hypernym_distances(a), hypernym_distances(b)
    depth_a, depth_b = _depths(a), _depths(b)
    common = set(da) & set(db)
    deepest = max(depth_a[c][0] for c in common)  # NLTK: lowest common hypernyms by min depth
    lcs = sorted(c for c in common if depth_a[c][0] == deepest)[0]
    depth = max(depth_a[lcs][1], depth_b[lcs][1]) + 1
    # NLTK's distance to the subsumer may go up to a shared ancestor and down again
    d_lcs = _prefix_distances(lcs, a, b)
    len_a = min(da[c] + d_lcs[c] for c in set(da) & set(d_lcs))
    len_b = min(db[c] + d_lcs[c] for c in set(db) & set(d_lcs))
    return 2.0 * depth / (len_a + depth + len_b + depth)


def _prefix_distances(node: str, *classes: str) -> dict[str, int]:
    """Hops from an ancestor `node` up to each of its own hypernyms, from the classes' paths."""
    out: dict[str, int] = {}
    for cls in classes:
        for path in _paths()[cls]:
            if node in path:
                prefix = path[: path.index(node) + 1]
                for hops, up in enumerate(reversed(prefix)):
                    out[up] = min(out.get(up, hops), hops)
    return out


def known(wnid: str) -> bool:
    """Whether `wnid` is one of the synsets whose hypernym paths are bundled (the ImageNet classes')."""
    return wnid in _paths()
