"""The concepts similarity encoding runs on (seed 004, issue 34).

A concept is a class of one label set with at least `groups` labelled images of the model. By
default a run takes those the reference space covers, so curves for different references rest on
different concept sets (as embstore always did). A fixed set instead: `concepts` (a file of one
name or id a line, or a list) must all be usable, or the run stops naming those that are not; and
`intersect` (references and concept files) takes the concepts every one of them has — seed 004's
166 concepts are such an intersection of four spaces. The set is recorded (table concept_sets) and
named by its fingerprint with every result, so curves on different sets are never compared unawares.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from embstore.errors import NotFoundError, UnknownClassError, UsageError
from embstore.labels import vectors


@dataclass(frozen=True)
class ConceptSet:
    label_set: str
    indices: tuple[int, ...]  # ascending label indices
    names: tuple[str, ...]
    source: str  # how chosen, in words

    @property
    def sha(self) -> str:
        """sha256 of the label set and its ordered indices: equal sets, equal fingerprints (any reference)."""
        return hashlib.sha256(f"{self.label_set}:{','.join(map(str, self.indices))}".encode()).hexdigest()


def read_list(path: str | Path) -> list[str]:
    """The concepts of a file: one name or id a line; blank lines and lines starting with # skipped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise NotFoundError(f"concept file {path} not found (one concept name or id a line)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"concept file {path} is not UTF-8 text; give one concept name or id a line") from None
    names = [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]
    if not names:
        raise UsageError(f"concept file {path} names no concept; give one concept name or id a line")
    return names


def resolve(label_names, wanted: list[str], where: str) -> list[int]:
    """The label indices `wanted` names in the set of `label_names` (a LabelNames); unknown or repeated
    names: one UnknownClassError/UsageError naming them."""
    found: dict[int, str] = {}
    bad, repeated = [], []
    for w in wanted:
        try:
            idx = label_names.resolve(w).index
        except UnknownClassError as exc:
            bad.append(str(exc))
            continue
        if idx in found:
            repeated.append(f"'{w}' (= '{found[idx]}')")
        found.setdefault(idx, w)
    if bad:
        more = f"; and {len(bad) - 2} more" if len(bad) > 2 else ""
        raise UnknownClassError(f"{len(bad)} concept(s) of {where} unknown: {'; '.join(bad[:2])}{more}")
    if repeated:
        raise UsageError(f"{where} names a concept twice: {', '.join(repeated[:3])}")
    return sorted(found)


def is_reference(item: str) -> bool:
    """Whether an --intersect item is a reference space rather than a concept file."""
    if item in vectors.PACKAGED_SPACES + vectors.WORDNET_SPACES:
        return True
    path = Path(item).expanduser()
    return path.is_dir() or (path.is_file() and vectors.looks_like_vectors(path))


def choose(
    label_names,
    candidates: list[int],
    reference: vectors.Reference,
    *,
    concepts: list[str] | str | Path | None = None,
    intersect: list[str] | None = None,
) -> ConceptSet:
    """The concept set of one run: from `candidates` (classes with enough images), those `reference`
    covers; or exactly `concepts`; or those every item of `intersect` has (module docstring)."""
    if concepts is not None and intersect:
        raise UsageError("give either a concept list or --intersect, not both (put the list in --intersect)")
    terms = {t.index: t for t in label_names.terms(candidates)}
    covered = set(reference.cover(list(terms.values())).kept)
    if concepts is not None:
        if isinstance(concepts, (str, Path)):
            where, listed = f"concept file {Path(concepts).name}", read_list(concepts)
        else:
            where, listed = "the concept list", list(concepts)
        wanted = resolve(label_names, listed, where)
        few = [label_names.name(i) for i in wanted if i not in terms]
        if few:
            raise NotFoundError(f"{len(few)} concept(s) of {where} have too few labelled images of this model: "
                                f"{_some(few)}; ingest more or lower groups")  # fmt: skip
        missing = [label_names.name(i) for i in wanted if i not in covered]
        if missing:
            raise NotFoundError(
                f"{len(missing)} concept(s) of {where} have no vector in {reference.name}: {_some(missing)}; "
                f"drop them, or use --intersect {reference.spec},FILE to take the common ones"
            )
        return _made(label_names, wanted, where.replace("concept file", "file"))
    if not intersect:
        return _made(label_names, sorted(covered), f"covered by {reference.name}")
    keep = set(covered)
    named = []
    for item in intersect:
        if is_reference(item):
            other = reference if item == reference.spec else vectors.Reference(item)
            keep &= set(other.cover(list(terms.values())).kept)
            named.append(other.name)
        else:
            keep &= set(resolve(label_names, read_list(item), f"concept file {Path(item).name}"))
            named.append(Path(item).name)
    if reference.name not in named:
        named.append(reference.name)
    return _made(label_names, sorted(keep), "intersect " + ",".join(named))


def _made(label_names, indices: list[int], source: str) -> ConceptSet:
    return ConceptSet(label_names.label_set, tuple(indices), tuple(label_names.name(i) for i in indices), source)


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
