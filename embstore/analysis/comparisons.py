"""Seed 000's comparisons, tested: is one (model, layer) better at matching than another?

"ResNet-200 matches best" rests on one or two points of matching error over 400 triplets. Two stored
matching results on the same triplets (`embstore analyze matching`) are compared pair by pair:
McNemar's exact test on the triplets one matches and the other misses, and a paired bootstrap of
the differences in error and in ROC AUC (the same resampled triplets for both sides, so what the
two share cancels). The result is stored in `matching_tests` with its resample count and seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embstore.analysis import stats
from embstore.analysis.matching import resolve_manifest
from embstore.analysis.matchingtables import MatchingTables
from embstore.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


@dataclass
class MatchingComparison:
    """a against b on one manifest's triplets; differences are a minus b (negative error: a better)."""

    manifest_sha: str
    a: tuple[str, str]  # (model key, layer)
    b: tuple[str, str]
    n_triplets: int
    error_a: float
    error_b: float
    d_error: float
    d_error_ci: tuple[float, float]
    a_only: int  # triplets a matches and b misses
    b_only: int
    mcnemar_p: float
    auc_a: float
    auc_b: float
    d_auc: float
    d_auc_ci: tuple[float, float]
    d_auc_p: float
    n_boot: int
    seed: int

    def rows(self) -> list[dict]:
        """The comparison as two rows (error, AUC), for tables and --json."""
        return [
            {"measure": "matching error", "a": self.error_a, "b": self.error_b, "a - b": self.d_error,
             "ci_low": self.d_error_ci[0], "ci_high": self.d_error_ci[1], "p": self.mcnemar_p,
             "test": f"McNemar exact ({self.a_only} vs {self.b_only} discordant)"},
            {"measure": "ROC AUC", "a": self.auc_a, "b": self.auc_b, "a - b": self.d_auc,
             "ci_low": self.d_auc_ci[0], "ci_high": self.d_auc_ci[1], "p": self.d_auc_p,
             "test": f"paired bootstrap ({self.n_boot} resamples)"},
        ]  # fmt: skip


def compare_arrays(wrong_a, wrong_b, pairs_a, pairs_b, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The statistics of the comparison from per-triplet outcomes: `wrong_x` (N,) bools and
    `pairs_x` = (cosine related, cosine unrelated), each (N,), of the same N triplets."""
    wa, wb = np.asarray(wrong_a, bool), np.asarray(wrong_b, bool)
    (ra, ua), (rb, ub) = (np.asarray(p, np.float64) for p in pairs_a), (np.asarray(p, np.float64) for p in pairs_b)
    n = len(wa)
    idx = stats.resamples(n, n_boot, seed)  # one draw for both sides: the test is paired
    d_err = wa[idx].mean(axis=1) - wb[idx].mean(axis=1)
    d_auc = stats.aucs_of_triplet_resamples(ra, ua, idx) - stats.aucs_of_triplet_resamples(rb, ub, idx)
    a_only, b_only, p = stats.mcnemar_exact(wa, wb)
    auc_a, auc_b = stats.auc_of_pairs(ra, ua), stats.auc_of_pairs(rb, ub)
    return {
        "n_triplets": n,
        "error_a": float(wa.mean()),
        "error_b": float(wb.mean()),
        "d_error": float(wa.mean() - wb.mean()),
        "d_error_ci": stats.percentile_interval(d_err),
        "a_only": a_only,
        "b_only": b_only,
        "mcnemar_p": p,
        "auc_a": auc_a,
        "auc_b": auc_b,
        "d_auc": auc_a - auc_b,
        "d_auc_ci": stats.percentile_interval(d_auc),
        "d_auc_p": stats.bootstrap_p(d_auc),
        "n_boot": n_boot,
        "seed": seed,
    }


def compare_matching(
    store: StoreCore,
    a: str,
    b: str,
    *,
    manifest: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> MatchingComparison:
    """Compare two stored matching results, each named `model` or `model:layer` (default layer:
    hidden, else the deepest with results), on `manifest` (a file, a sha prefix; default the newest)."""
    if n_boot < 100:
        raise UsageError(f"n_boot must be at least 100 for a 95 % interval, not {n_boot}")
    with store.read() as con:
        sha = resolve_manifest(con, manifest)
        tables = MatchingTables(con)
        sides = [tables.read(sha, *_model_layer(con, name)) for name in (a, b)]
    x, y = sides
    if x.ids != y.ids:
        raise NotFoundError(
            f"{x.model_key}:{x.layer} and {y.model_key}:{y.layer} were matched on different images of manifest "
            f"{sha[:12]}; run `embstore analyze matching` again for both"
        )
    if (x.model_key, x.layer) == (y.model_key, y.layer):
        raise UsageError(f"compare two different results, not {x.model_key}:{x.layer} with itself")
    out = compare_arrays(x.wrong, y.wrong, (x.cos_related, x.cos_unrelated), (y.cos_related, y.cos_unrelated),
                         n_boot=n_boot, seed=seed)  # fmt: skip
    result = MatchingComparison(sha, (x.model_key, x.layer), (y.model_key, y.layer), **out)
    with store.transaction() as con:
        MatchingTables(con).store_test(result)
    return result


def _model_layer(con, name: str) -> tuple[str, str | None]:
    """(stored model key, layer or None) of `model` or `model:layer`."""
    from embstore.store.catalog import Catalog

    prefix = "timm:" if name.startswith("timm:") else ""  # a timm model's name holds a colon itself
    model, _, layer = name[len(prefix) :].partition(":")
    return Catalog(con).resolve_model(prefix + model), layer or None
