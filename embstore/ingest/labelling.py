"""Which label set an ingest's labels belong to, and each label's index in it (issue 34).

A label (a class folder's name, a manifest's `label` cell) belongs to one named label set:
`imagenet1k` (resolved by index, wnid, name or synonym, as ever) or any other vocabulary (THINGS,
ecoset, a lab's own categories), whose names are kept as given and numbered in order of first
appearance. The choice, made once per run before anything is stored:

- `labels=None` (the default): every label names an ImageNet class -> imagenet1k; none does -> a
  label set named after the input (its folder's or manifest's name; a note says so); some do and
  some do not -> one line naming those that do not (a mistyped class folder is the usual cause).
- `labels="imagenet1k"`: every label must name an ImageNet class.
- `labels=NAME`: every label is a name of set NAME, made or extended by this run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from embstore.errors import UsageError
from embstore.labels.imagenet import classes
from embstore.labels.wordnet import classes_under, wnid

IMAGENET = "imagenet1k"
_SET_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass
class LabelPlan:
    """label_raw -> (label_set, label_index, label_name, label_wnid) for one run's input."""

    label_set: str | None  # None: the input carries no labels
    index: dict[str, int] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    wnids: dict[str, str] = field(default_factory=dict)
    new: list[tuple[int, str, str | None, str | None]] = field(default_factory=list)  # (index, name, id, category)
    new_classes: dict[int, list[int]] = field(default_factory=dict)  # new label -> the ImageNet classes it maps to
    # (label set, index) -> ImageNet classes, of every mapped label of the store, this run's new ones
    # included (read by the run under its lock, after it added them)
    class_map: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def fields(self, label_raw: str | None) -> dict:
        """The image row's label columns for `label_raw` (all None when it has none)."""
        if label_raw is None or label_raw not in self.index:
            return {"label_set": None, "label_wnid": None, "label_index": None, "label_name": None}
        return {
            "label_set": self.label_set,
            "label_wnid": self.wnids.get(label_raw),
            "label_index": self.index[label_raw],
            "label_name": self.names[label_raw],
        }

    def imagenet_classes(self, label: tuple[str, int] | None) -> list[int]:
        """The ImageNet classes a (label set, index) stands for: itself in imagenet1k, those a label of
        another set maps to (migration 0016), else none."""
        if label is None:
            return []
        return [label[1]] if label[0] == IMAGENET else self.class_map.get(label, [])


def check_set_name(name: str) -> str:
    """`name`, or a UsageError saying what a label set's name may be."""
    if not _SET_NAME.match(name):
        raise UsageError(
            f"label set name {name!r} is not usable: lower-case letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, at most 64 characters (e.g. things, ecoset, my-lab)"
        )
    return name


def default_set_name(images) -> str:
    """A label set's name from the input: its folder's (or manifest file's) name, made usable."""
    if images is None:
        return "labels"
    p = Path(str(images)).expanduser()
    stem = p.stem if p.suffix.lower() in (".csv", ".parquet", ".tsv") else p.name
    slug = re.sub(r"[^a-z0-9_.-]+", "-", stem.lower()).strip("-.")[:64]
    return slug if slug and slug != IMAGENET and _SET_NAME.match(slug) else "labels"


def plan_labels(
    counts: dict[str, int],
    requested: str | None,
    known: dict[str, list[str]],
    default_name: str,
    details: dict[str, tuple[str | None, str | None]] | None = None,
) -> LabelPlan:
    """The plan for an input whose labels are `counts` ({label_raw: images}); `known` holds the
    names (in index order) of the store's existing sets other than imagenet1k; `details` an
    optional (id, category) per label from the manifest's `label_id` / `category` columns."""
    if not counts:
        return LabelPlan(None)
    if requested is not None:
        check_set_name(requested)
    found = {label: classes().lookup(label) for label in counts} if requested in (None, IMAGENET) else {}
    missing = sorted((label for label, c in found.items() if c is None), key=lambda s: (-counts[s], s))
    if requested == IMAGENET or (requested is None and not missing):
        if missing:
            raise UsageError(f"{_naming_none(missing, counts)}; name ImageNet classes, or pick another --labels set")
        return LabelPlan(
            IMAGENET,
            {label: c.index for label, c in found.items() if c is not None},
            {label: c.name for label, c in found.items() if c is not None},
            {label: c.wnid for label, c in found.items() if c is not None},
        )
    if requested is None and len(missing) < len(counts):
        some = next(label for label, c in found.items() if c is not None)
        raise UsageError(
            f"the labels mix ImageNet classes (e.g. {some!r}) with labels that name none — "
            f"{_naming_none(missing, counts)}; rename those, or pass --labels NAME to file every label under "
            "a label set of its own"
        )
    name = requested or default_name
    existing = known.get(name, [])
    index = {n: i for i, n in enumerate(existing)}
    plan = LabelPlan(name)
    for label in sorted(counts, key=lambda s: (s.casefold(), s)):  # new names numbered in a stable order
        if label not in index:
            index[label] = len(index)
            label_id, category = (details or {}).get(label, (None, None))
            plan.new.append((index[label], label, label_id, category))
            # only the bundled synsets (ImageNet's classes and their hypernyms) can map
            mapped = classes_under(synset) if (synset := wnid(label_id, required=False)) else []
            if mapped:
                plan.new_classes[index[label]] = mapped
        plan.index[label], plan.names[label] = index[label], label
    if requested is None:
        plan.notes.append(
            f"{len(counts)} label(s) name no ImageNet class, so they form label set '{name}' "
            f"({len(plan.new)} new, {len(existing)} known; name it with --labels NAME)"
        )
    elif plan.new:
        plan.notes.append(f"label set '{name}': {len(plan.new)} new label(s), {len(existing)} known before")
    if plan.new_classes:
        plan.notes.append(
            f"{len(plan.new_classes)} of the {len(plan.new)} new label(s) name WordNet synsets of ImageNet classes "
            "(their label_id), so the models' errors and failures are measured on their images"
        )
    return plan


def _naming_none(missing: list[str], counts: dict[str, int]) -> str:
    shown = "; ".join(
        f"{label!r} ({counts[label]} image{'s' if counts[label] != 1 else ''}).{classes().nearest(label, 3)}".rstrip(
            "."
        )
        for label in missing[:5]
    )
    more = f"; and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"{len(missing)} label(s) name no ImageNet class: {shown}{more}"
