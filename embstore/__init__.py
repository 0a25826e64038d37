"""embstore: a DuckDB + Parquet store of per-layer CNN activations, with search and the seed papers' analyses.

    >>> store = embstore.open("~/.embstore")                    # doctest: +SKIP
    >>> store.ingest("photos/", model="densenet121")            # doctest: +SKIP
    >>> store.similar_classes("knot", k=9).to_pandas()          # doctest: +SKIP

Also exported: IngestOptions, the results (IngestResult, Vectors, Answer of Neighbour, VerifyReport, CompactReport,
MatchingReport, MatchingComparison, FailureReport, Materialised, RsaReport, RsaComparison, Report, Plan, Replication,
ModelSpec, Preprocessing, WeightsChoice, Layers of LayerInfo), EmbstoreError (embstore.errors' root). No torch import.
"""

from __future__ import annotations

from typing import Any

from embstore.api import (
    Store,
    describe_model,
    layer_aliases,
    layer_set,
    list_models,
    model_layers,
    model_weights,
    open,
    replication_plan,
    sample_data,
    sample_images,
    save_figure,
)
from embstore.api import (
    preprocessing_changes as preprocessing_changes,
)
from embstore.errors import EmbstoreError as EmbstoreError
from embstore.ingest.options import IngestOptions as IngestOptions
from embstore.results import Answer as Answer
from embstore.results import Neighbour as Neighbour
from embstore.results import Vectors as Vectors
from embstore.results import to_json

# the types `Store`'s verbs return, each from the module that makes it (imported on first use)
_RESULTS = {
    "IngestResult": "embstore.ingest.run",
    "VerifyReport": "embstore.store.tablecheck",
    "CompactReport": "embstore.store.table",
    "MatchingReport": "embstore.analysis.tasks",
    "MatchingComparison": "embstore.analysis.comparisons",
    "RsaComparison": "embstore.analysis.comparisons",
    "FailureReport": "embstore.analysis.failures",
    "RsaReport": "embstore.analysis.rsatables",
    "Materialised": "embstore.analysis.classtables",
    "Report": "embstore.report.html",
    "Plan": "embstore.analysis.recipes",
    "Replication": "embstore.analysis.replicate",
    "ModelSpec": "embstore.spec",
    "Preprocessing": "embstore.spec",
    "WeightsChoice": "embstore.ingest.models",
    "LayerInfo": "embstore.ingest.layers",
    "Layers": "embstore.ingest.layers",
}

# what a user calls (preprocessing_changes is the CLI's text-option helper). EmbstoreError and the
# types users get back (above, and _RESULTS) are exported too (`X as X`), each documented by its own
# `help(embstore.IngestResult)`: in `help(embstore)` they were ~1,300 lines of it
__all__ = [
    "Store",
    "__version__",
    "describe_model",
    "layer_aliases",
    "layer_set",
    "list_models",
    "model_layers",
    "model_weights",
    "open",
    "replication_plan",
    "sample_data",
    "sample_images",
    "save_figure",
    "to_json",
]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _RESULTS:
        return getattr(importlib.import_module(_RESULTS[name]), name)
    if name == "__version__":  # read from the installed metadata on first use (13 ms of every CLI start)
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("embstore")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    if name == "testing":  # the synthetic-store helper, imported on first use
        return importlib.import_module("embstore.testing")
    from embstore import errors

    if name.endswith("Error") and isinstance(getattr(errors, name, None), type):  # embstore.UsageError, …
        return getattr(errors, name)
    raise AttributeError(f"module 'embstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
