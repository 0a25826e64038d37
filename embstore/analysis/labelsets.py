"""Which label set an analysis runs on, and the classes it names (issue 34).

Every label-keyed analysis (class statistics, similar classes, ...) runs on one label set: the
one asked for, else `imagenet1k` when it labels images in the store, else the store's only other
set (several: one line naming them). A class is named within its set: imagenet1k by index, wnid,
name or synonym (as ever); any other set by its exact name, its id, or its index.
"""

from __future__ import annotations

from dataclasses import dataclass

from embstore.errors import UnknownClassError, did_you_mean
from embstore.labels.imagenet import classes
from embstore.labels.vectors import Term, imagenet_terms
from embstore.store.catalog import Catalog

IMAGENET = "imagenet1k"


@dataclass(frozen=True)
class ClassRef:
    label_set: str
    index: int
    name: str
    ident: str | None  # imagenet1k: the wnid; others: the label's id if it has one

    def __str__(self) -> str:
        return f"{self.name} ({self.ident})" if self.ident else self.name


def choose_set(con, label_set: str | None) -> str:
    """`label_set` if the store knows it, else the default (module docstring)."""
    return Catalog(con).choose_label_set(label_set)


def find_class(con, cls: str, label_set: str | None) -> tuple[LabelNames, ClassRef]:
    """(the set's names, the class) that `cls` names: in `label_set`, or with none given in the
    default set — unless only another set of the store has a class of exactly that name."""
    names = LabelNames.of(con, choose_set(con, label_set))
    try:
        return names, names.resolve(cls)
    except UnknownClassError:
        if label_set is not None:
            raise
        others = [s for s in Catalog(con).labelled_sets() if s != names.label_set]
        hits = [LabelNames.of(con, s) for s in others if str(cls).strip() in Catalog(con).label_names(s)]
        if len(hits) == 1:
            return hits[0], hits[0].resolve(cls)
        raise


class LabelNames:
    """The names of one label set, index -> name, and a class name resolved within the set."""

    def __init__(self, label_set: str, names: list[str], ids: dict[int, str]):
        self.label_set, self.names, self._ids = label_set, names, ids

    @classmethod
    def of(cls, con, label_set: str) -> LabelNames:
        if label_set == IMAGENET:
            return cls(IMAGENET, [], {})
        return cls(label_set, Catalog(con).label_names(label_set), Catalog(con).label_ids(label_set))

    def record(self) -> list:
        """JSON-able, for the store's memo (`from_record`)."""
        return [self.label_set, self.names, [[i, v] for i, v in self._ids.items()]]

    @classmethod
    def from_record(cls, r: list) -> LabelNames:
        return cls(r[0], r[1], {int(i): v for i, v in r[2]})

    def name(self, index: int) -> str:
        return classes()[index].name if self.label_set == IMAGENET else self.names[index]

    def ref(self, index: int) -> ClassRef:
        if self.label_set == IMAGENET:
            c = classes()[index]
            return ClassRef(IMAGENET, c.index, c.name, c.wnid)
        return ClassRef(self.label_set, index, self.names[index], self._ids.get(index))

    def terms(self, indices) -> list[Term]:
        """The classes `indices` as reference spaces look them up: by name; with WordNet synonyms and a
        wnid where the class is ImageNet's or its id names a WordNet noun synset (a wnid or an NLTK
        name such as aardvark.n.01: labels/wordnet.py)."""
        if self.label_set == IMAGENET:
            return imagenet_terms(indices)
        out = []
        for i in indices:
            name, synset = self.names[int(i)], self.synset(int(i))
            out.append(Term(int(i), name, tuple(s for s in _lemmas(synset) if s != name), synset))
        return out

    def synset(self, index: int) -> str | None:
        """The wnid of the WordNet synset class `index` names by its id (None: no id, or not a synset)."""
        from embstore.labels.wordnet import wnid

        if self.label_set == IMAGENET:
            return classes()[index].wnid
        return wnid(self._ids.get(index))

    def resolve(self, cls: str) -> ClassRef:
        """The class `cls` names in this set, or an UnknownClassError with the nearest names."""
        if self.label_set == IMAGENET:
            return self.ref(classes().resolve(cls).index)
        text = str(cls).strip()
        if text in self.names:
            return self.ref(self.names.index(text))
        folded = [n for n in self.names if n.casefold() == text.casefold()]
        if len(folded) == 1:
            return self.ref(self.names.index(folded[0]))
        by_id = [i for i, v in self._ids.items() if v == text]
        if len(by_id) == 1:
            return self.ref(by_id[0])
        if text.isdigit() and int(text) < len(self.names):
            return self.ref(int(text))
        raise UnknownClassError(f"no class '{cls}' in label set {self.label_set}.{did_you_mean(text, self.names)}")

    def __len__(self) -> int:
        return 1000 if self.label_set == IMAGENET else len(self.names)


def _lemmas(synset: str | None) -> list[str]:
    if synset is None:
        return []
    c = classes().lookup(synset)
    if c is not None:
        return list(c.synonyms)
    from embstore.labels.wordnet import lemmas

    return lemmas(synset)
