"""The papers' comparisons, tested: is one (model, layer) better than another on the same data?

Seed 000 (matching):
"ResNet-200 matches best" rests on one or two points of matching error over 400 triplets. Two stored
matching results on the same triplets (`embstore analyze matching`) are compared pair by pair:
McNemar's exact test on the triplets one matches and the other misses, and a paired bootstrap of
the differences in error and in ROC AUC (the same resampled triplets for both sides, so what the
two share cancels). The result is stored in `matching_tests` with its resample count and seed.

Across models (seed 000 fig. 6, "matching performances show a significant correlation with the
ImageNet performances"): Spearman's ρ of matching error, and of AUC error, against top-1 error,
with a bootstrap interval over the models (`error_correlation`).

Seed 004 (similarity encoding): "accuracy drops between activation layers 16 and 17", "Inception
peaks at mixed9". Two results against one reference on the same concepts are compared by the paired
concept bootstrap: `analyze rsa` stored each measure on every resample of the concepts, and equal
concept lists with equal seed and count mean the same resamples, so the difference of the two
arrays is the bootstrap distribution of the difference (what the two layers share cancels). Stored
in `rsa_tests`, one row per measure.
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


@dataclass
class RsaComparison:
    """a against b against one reference on the same concepts; differences are a minus b."""

    reference: str
    a: tuple[str, str]  # (model key, layer)
    b: tuple[str, str]
    n_concepts: int
    concepts_sha: str
    measures: list[dict]  # one per measure: measure, a, b, a - b, ci_low, ci_high, p
    n_boot: int
    seed: int
    method: str = "paired concept bootstrap"
    label_set: str = "imagenet1k"

    def rows(self) -> list[dict]:
        """The comparison as rows (2 vs 2 accuracy, RSA Spearman, Pearson, Kendall τ-a), for tables and --json."""
        return [{**m, "test": f"{self.method} ({self.n_boot} resamples)"} for m in self.measures]


RSA_COMPARED = {"acc_2v2": "2 vs 2 accuracy", "rsa_spearman": "RSA Spearman", "rsa_pearson": "RSA Pearson",
                "rsa_kendall_a": "RSA Kendall τ-a"}  # fmt: skip


def compare_rsa(
    store: StoreCore, a: str, b: str, *, reference: str = "glove", label_set: str | None = None
) -> RsaComparison:
    """Compare two stored similarity-encoding results, each `model` or `model:layer` (default layer:
    the deepest with results), against `reference` (a prefix: glove finds glove-6B-50d), on one label
    set's concepts (default: Catalog.choose_label_set)."""
    from embstore.analysis.rsatables import RsaTables
    from embstore.store.catalog import Catalog

    with store.read() as con:
        tables = RsaTables(con)
        label_set = Catalog(con).choose_label_set(label_set)
        x, y = (tables.read(*_model_layer(con, name), reference, label_set) for name in (a, b))
    if (x["model_key"], x["layer"]) == (y["model_key"], y["layer"]):
        raise UsageError(f"compare two different results, not {x['model_key']}:{x['layer']} with itself")
    names = [f"{r['model_key']}:{r['layer']}" for r in (x, y)]
    if x["reference"] != y["reference"]:
        raise UsageError(f"{names[0]} and {names[1]} were computed against different references "
                         f"({x['reference']}, {y['reference']}); pass --vectors with the full name")  # fmt: skip
    if x["concepts_sha"] is None or y["concepts_sha"] is None or not x["resamples"] or not y["resamples"]:
        raise NotFoundError(f"{names[0] if not x['resamples'] else names[1]} has no concept resamples (computed "
                            "before this version, or with --n-boot 0); run `embstore analyze rsa` again")  # fmt: skip
    same = (x["concepts_sha"], x["n_boot"], x["seed"]) == (y["concepts_sha"], y["n_boot"], y["seed"])
    if not same:
        raise NotFoundError(
            f"{names[0]} and {names[1]} rest on different concept resamples (concepts {x['n_concepts']} vs "
            f"{y['n_concepts']}, n_boot {x['n_boot']} vs {y['n_boot']}, seed {x['seed']} vs {y['seed']}); run "
            "`embstore analyze rsa` for both with the same --groups, --n-boot and --seed"
        )
    measures = []
    for measure, label in RSA_COMPARED.items():
        stored = {"acc_2v2": "acc_2v2"}.get(measure, measure)
        va, vb = x[stored], y[stored]
        if va is None or vb is None:
            continue
        deltas = x["resamples"][measure] - y["resamples"][measure]
        known = not np.isnan(deltas).all()
        low, high = stats.percentile_interval(deltas) if known else (None, None)
        p = stats.bootstrap_p(deltas) if known else None
        measures.append({"measure": measure, "label": label, "a": float(va), "b": float(vb), "a - b": float(va - vb),
                         "ci_low": low, "ci_high": high, "p": p})  # fmt: skip
    result = RsaComparison(x["reference"], (x["model_key"], x["layer"]), (y["model_key"], y["layer"]),
                           x["n_concepts"], x["concepts_sha"], measures, x["n_boot"], x["seed"],
                           label_set=label_set)  # fmt: skip
    with store.transaction() as con:
        RsaTables(con).store_test(result)
    return result


@dataclass
class ErrorCorrelation:
    """Spearman's ρ across models of matching error (and of AUC error, 1 − AUC) against top-1 error."""

    models: list[str]  # those with a top-1 error (labelled images in the store)
    rho_error: float | None
    ci_error: tuple[float, float] | None
    rho_auc: float | None
    ci_auc: tuple[float, float] | None
    n_boot: int
    seed: int

    def legend(self) -> str:
        """One line for a figure, e.g. 'Spearman ρ with top-1 error over 5 models: matching 0.90 [0.30, 1.00]…'."""
        if self.rho_error is None:
            return f"ρ with top-1 error needs >= {MIN_MODELS} models with labelled images ({len(self.models)} here)"
        ci_e, ci_a = self.ci_error or (np.nan, np.nan), self.ci_auc or (np.nan, np.nan)
        return (f"Spearman ρ with top-1 error over {len(self.models)} models (95 % CI over models):\n"
                f"matching error {self.rho_error:.2f} [{ci_e[0]:.2f}, {ci_e[1]:.2f}], "
                f"AUC error {self.rho_auc:.2f} [{ci_a[0]:.2f}, {ci_a[1]:.2f}]")  # fmt: skip


MIN_MODELS = 3  # a rank correlation of two models is ±1 whatever they are


def error_correlation(results, top1: dict[str, float | None], *, n_boot: int = 1000, seed: int = 0) -> ErrorCorrelation:
    """Fig. 6's claim as a number: ρ(matching error, top-1 error) and ρ(1 − AUC, top-1 error) across
    `results` (one matching result per model: .model_key, .error, .auc), bootstrapping the models."""
    have = [r for r in results if top1.get(r.model_key) is not None]
    models = [r.model_key for r in have]
    if len(have) < MIN_MODELS:
        return ErrorCorrelation(models, None, None, None, None, n_boot, seed)
    t1 = [top1[r.model_key] for r in have]
    rho_e, ci_e = stats.spearman_with_interval([r.error for r in have], t1, n_boot=n_boot, seed=seed)
    rho_a, ci_a = stats.spearman_with_interval([1 - r.auc for r in have], t1, n_boot=n_boot, seed=seed)
    return ErrorCorrelation(models, rho_e, ci_e, rho_a, ci_a, n_boot, seed)
