"""The values the three seed papers publish (`data/published_values.json`), each with the sentence
or table row it is read from, verbatim: seed 000's table 2 for its 14 networks (ImageNet top-1
error, POPORO matching error, AUC), seed 004's peak 2 vs 2 accuracies and the layers they fall
in, its concept and image counts and test p-values, seed 003's model and qualitative claims. The
scoreboard of `replicate` (issue 35) sets this store's numbers beside them; tests check every
quote against the seed texts.

Units are the paper's (`%` where it prints percentages). `torchvision` names the model where
torchvision has it; None marks the networks a user must bring (seed 000's ResNet-200,
DenseNet-264/232 and the two DenseNet-cosine-264).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from embstore.resources import data_dir

_FIELDS = ("seed", "source", "model", "torchvision", "measure", "value", "unit", "layer", "quote")


@dataclass(frozen=True)
class Published:
    seed: str  # "000", "003", "004"
    source: str  # where in the paper: "Table 2", "Results", "Methods"
    model: str | None  # as the paper names it
    torchvision: str | None  # torchvision's name, None where torchvision lacks the network
    measure: str  # top1_error, matching_error, auc, peak_2v2, n_concepts, p_1v2, ...
    value: float | None  # None for a qualitative claim (its text in `details`)
    unit: str
    layer: str | None  # as the paper names it
    quote: str  # the sentence or table row, verbatim
    details: dict = field(default_factory=dict, hash=False)  # the reading taken (layer_torchvision, ...)


@functools.cache
def _values() -> tuple[Published, ...]:
    doc = json.loads((data_dir() / "published_values.json").read_text(encoding="utf-8"))
    return tuple(
        Published(**{k: v[k] for k in _FIELDS}, details={k: x for k, x in v.items() if k not in _FIELDS})
        for v in doc["values"]
    )


def published(seed: str | None = None, measure: str | None = None) -> list[Published]:
    """The published values of `seed` (all seeds: None), of one `measure` if given, in the paper's order.

    >>> [v.value for v in published("004", "peak_2v2")]
    [0.9, 0.93, 0.94]
    """
    return [v for v in _values() if seed in (None, v.seed) and measure in (None, v.measure)]
