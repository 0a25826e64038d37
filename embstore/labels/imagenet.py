"""ImageNet-1k classes: index ↔ WordNet id ↔ torchvision name ↔ WordNet synonyms.

Read from `data/imagenet1k.tsv` (see `data/build_imagenet1k.py`), so resolving a label never
imports torch.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from embstore.errors import UnknownClassError, did_you_mean
from embstore.resources import data_dir

_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str
    name: str
    synonyms: tuple[str, ...]


def _norm(text: str) -> str:
    return " ".join(re.split(r"[\s_\-]+", text.strip().lower()))


class ClassTable:
    """Lookup of the 1000 ImageNet classes by index, wnid, name or synonym.

    >>> classes().resolve("knot").wnid
    'n03627232'
    """

    def __init__(self, rows: list[ImageNetClass]):
        self.rows = rows
        self._by_wnid = {r.wnid: r for r in rows}
        self._by_name = {_norm(r.name): r for r in rows}
        self._by_synonym: dict[str, list[ImageNetClass]] = {}
        for r in rows:
            for s in r.synonyms:
                self._by_synonym.setdefault(_norm(s), []).append(r)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> ImageNetClass:
        return self.rows[index]

    def candidates(self, label: str) -> list[ImageNetClass]:
        """Every class `label` may mean: exact index/wnid/name first, else all synonym matches."""
        text = str(label).strip()
        if text.isdigit() and int(text) < len(self.rows):
            return [self.rows[int(text)]]
        if _WNID.match(text):
            return [self._by_wnid[text]] if text in self._by_wnid else []
        key = _norm(text)
        if key in self._by_name:
            return [self._by_name[key]]
        return list(self._by_synonym.get(key, []))

    def lookup(self, label: str) -> ImageNetClass | None:
        """The class `label` names unambiguously, else None (used for image labels)."""
        found = self.candidates(label)
        return found[0] if len(found) == 1 else None

    def resolve(self, label: str) -> ImageNetClass:
        """Like lookup, but an unknown or ambiguous label raises with the nearest names."""
        found = self.candidates(label)
        if len(found) == 1:
            return found[0]
        if found:
            options = ", ".join(f"{c.name} ({c.wnid})" for c in found)
            raise UnknownClassError(f"class '{label}' is ambiguous: {options}; give a name or wnid")
        raise UnknownClassError(f"unknown ImageNet class '{label}'.{self.nearest(label)}")

    def nearest(self, label: str, n: int = 5) -> str:
        """' Did you mean: a, b?' for the class names and synonyms nearest `label`, or ''."""
        return did_you_mean(_norm(label), [r.name for r in self.rows] + list(self._by_synonym), n=n)


@functools.cache
def classes() -> ClassTable:
    rows = []
    lines = (data_dir() / "imagenet1k.tsv").read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        index, wnid, name, syn = line.split("\t")
        rows.append(ImageNetClass(int(index), wnid, name, tuple(s for s in syn.split("|") if s)))
    return ClassTable(rows)
