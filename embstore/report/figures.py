"""The seeds' figures, drawn from what the store holds (matplotlib, no pyplot state).

Charts live here: 2 vs 2 accuracy by layer (seed 004 figs 1–3), ROC curves (seed 000 fig 5b-c),
two models' per-pair cosines (fig 5a), matching / AUC / top-1 error bars (fig 6) and cosine
against human ratings (fig 4). Image
strips (seed 003 figs 1–2, seed 000 figs 7–10, failure cases, predictions) are in `strips`. Every function
returns a `matplotlib.figure.Figure`; `save` writes it as PNG and SVG.

>>> save(roc(StoreCore.open()), "figs/roc")  # doctest: +SKIP
[PosixPath('figs/roc.png'), PosixPath('figs/roc.svg')]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from embstore.errors import NotFoundError, UsageError
from embstore.report.canvas import CAPTION, DPI, FORMATS, new_figure, png_bytes, save  # noqa: F401 - re-exported
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

KINDS = ("rsa", "roc", "errors", "cosines", "ratings", "similar", "cases", "failures", "predictions")
RELATED, UNRELATED = "#d62728", "#1f77b4"  # red / blue, as in seed 000 figs 4-5
RSA_MEASURES = {
    "acc_2v2": "2 vs 2 accuracy",
    "acc_1v2": "1 vs 2 accuracy",
    "rsa_spearman": "RSA (Spearman r)",
    "rsa_pearson": "RSA (Pearson r)",
    "rsa_kendall_a": "RSA (Kendall τ-a)",
}
TESTED_BY = {"acc_2v2": "p_value", "acc_1v2": "p_1v2"}  # each measure's own p (RSA r: none stored)
ADJUSTED = {  # the stored column of each test's p under each correction
    "p_value": {"holm": "p_holm", "bh": "p_bh", "none": "p_value"},
    "p_1v2": {"holm": "p_1v2_holm", "bh": "p_1v2_bh", "none": "p_1v2"},
}
BANDS = {  # the stored interval of each measure (concept bootstrap)
    "acc_2v2": ("acc_ci_low", "acc_ci_high"),
    "rsa_spearman": ("rsa_spearman_ci_low", "rsa_spearman_ci_high"),
    "rsa_pearson": ("rsa_pearson_ci_low", "rsa_pearson_ci_high"),
    "rsa_kendall_a": ("rsa_kendall_ci_low", "rsa_kendall_ci_high"),
}
CORRECTION_NAMES = {"holm": "Holm-adjusted", "bh": "Benjamini-Hochberg-adjusted", "none": "uncorrected"}


def draw(store: StoreCore, kind: str, **options):
    """The figure of `kind` (one of KINDS) with that kind's options."""
    from embstore.report import strips

    makers: dict[str, Any] = {
        "rsa": rsa_by_layer,
        "roc": roc,
        "errors": errors,
        "cosines": cosines,
        "ratings": ratings,
        "similar": strips.similar,
        "cases": strips.cases,
        "failures": strips.failures,
        "predictions": strips.predictions,
    }
    if kind not in makers:
        raise UsageError(f"unknown figure '{kind}'; choose one of {', '.join(KINDS)}")
    return makers[kind](store, **options)


# -- seed 004: similarity encoding by layer ----------------------------------------------------
def rsa_by_layer(
    store: StoreCore,
    *,
    models: list[str] | None = None,
    references: list[str] | None = None,
    measure: str = "acc_2v2",
    correct: str = "holm",
    label_sets: list[str] | None = None,
    mixed_concepts: bool = False,
):
    """One line per (model, reference space, label set) across the model's layers, its 95 %
    concept-bootstrap interval as a band where stored; filled markers where the measure's own p,
    corrected across the curve's layers (`correct`: holm, bh or none), is < 0.05. With several models
    the x axis is relative depth (0 = first stored layer). Curves on different concept sets are
    refused unless `mixed_concepts` (then each line's label names its set's size and fingerprint);
    a result stored before concept sets were recorded counts as a set of its own."""
    from embstore.analysis import stats
    from embstore.analysis.rsatables import RsaTables

    if measure not in RSA_MEASURES:
        raise UsageError(f"unknown measure '{measure}'; choose one of {', '.join(RSA_MEASURES)}")
    stats.check_correction(correct)  # refused before any read
    with store.read() as con:
        keys = [Catalog(con).resolve_model(m) for m in models] if models else None
        rows = RsaTables(con).results(keys, references, label_sets)
    if not rows:
        raise NotFoundError("no similarity-encoding results to plot; run `embstore analyze rsa` first")
    lines: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        lines.setdefault((r["model_key"], r["reference"], r["label_set"]), []).append(r)
    sets = {line: _concept_key(pts) for line, pts in lines.items()}
    if len(set(sets.values())) > 1 and not mixed_concepts:
        listed = "; ".join(f"{m} · {ref}: {k}" for (m, ref, _), k in sorted(sets.items())[:4])
        raise UsageError(
            f"these curves rest on different concept sets ({listed}); fix one set with `analyze rsa --intersect "
            "REF,REF` or `--concepts FILE`, or pass --mixed-concepts to overlay them anyway"
        )
    one_model = len({m for m, _, _ in lines}) == 1
    one_set = len({s for _, _, s in lines}) == 1
    banded = False
    names = [n for _, n in sorted({(r["layer_order"], r["layer"]) for r in rows})]
    fig = new_figure(max(6.0, min(14.0, 2.5 + 0.32 * len(names))) if one_model else 7.5, 4.6)
    ax = fig.add_subplot()
    for i, ((model, ref, label_set), pts) in enumerate(sorted(lines.items())):
        y = np.array([np.nan if p[measure] is None else p[measure] for p in pts], np.float64)
        x = (
            np.array([names.index(p["layer"]) for p in pts])
            if one_model
            else np.linspace(0, 1, len(pts))
            if len(pts) > 1
            else np.zeros(1)
        )
        colour = f"C{i % 10}"
        label = ref if one_model else f"{model} · {ref}"
        label += "" if one_set else f" · {label_set}"
        label += f" · {sets[(model, ref, label_set)]}" if len(set(sets.values())) > 1 else ""
        ax.plot(x, y, "-", color=colour, label=label, linewidth=1.6)
        band = BANDS.get(measure)
        if band and any(p[band[0]] is not None for p in pts):
            low, high = (np.array([np.nan if p[c] is None else p[c] for p in pts], np.float64) for c in band)
            ax.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
            banded = True
        tested = TESTED_BY.get(measure)
        if tested is None:
            sig = np.ones(len(pts), bool)
        else:
            ps = [p[ADJUSTED[tested][correct]] for p in pts]
            if correct != "none" and all(q is None for q in ps):  # results stored before corrections were
                ps = stats.adjusted([p[tested] for p in pts], correct)
            sig = np.array([q is not None and q < 0.05 for q in ps], bool)
        ax.plot(x[sig], y[sig], "o", color=colour, markersize=5)
        ax.plot(x[~sig], y[~sig], "o", markerfacecolor="white", color=colour, markersize=5)
    if one_model:
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=CAPTION - 1)
        ax.set_xlabel("layer (network order)")
        ax.set_title(f"{RSA_MEASURES[measure]} by layer: {next(iter(lines))[0]}")
    else:
        ax.set_xlabel("relative depth (first → last stored layer)")
        ax.set_title(f"{RSA_MEASURES[measure]} by layer")
    if measure.startswith("acc"):
        ax.axhline(0.5, color="0.5", linestyle=":", linewidth=1, label="chance")
        shown = [p[c] for p in rows for c in (measure, *BANDS.get(measure, ())) if p[c] is not None]
        lowest = min(shown, default=0.5)  # 0.0 is a value
        ax.set_ylim(min(0.3, lowest - 0.05), 1.02)
    ax.set_ylabel(RSA_MEASURES[measure])
    ax.grid(alpha=0.3)
    title = {"p_value": "filled: permutation p < 0.05", "p_1v2": "filled: binomial p < 0.05"}.get(
        TESTED_BY.get(measure, ""), "no test of this measure is stored"
    )
    if measure in TESTED_BY:
        title += f"\n({CORRECTION_NAMES[correct]} over the layers)"
    if banded:
        title += "\nband: 95 % CI, bootstrap of the concepts"
    ax.legend(fontsize=CAPTION - 1, loc="best", title=title, title_fontsize=CAPTION - 1)
    return fig


# -- seed 000: triplet matching ------------------------------------------------------------------
def _matching(con, manifest, models, layer):
    """The stored matching result of each model (default: every model with results) for one manifest."""
    from embstore.analysis import matching
    from embstore.analysis.matchingtables import MatchingTables

    sha = matching.resolve_manifest(con, manifest)
    keys = [Catalog(con).resolve_model(m) for m in models] if models else MatchingTables(con).models(sha)
    return [MatchingTables(con).read(sha, k, layer) for k in keys]


def roc(store: StoreCore, *, manifest: str | None = None, models: list[str] | None = None, layer: str | None = None):
    """ROC curves of 'related' called by cosine over every threshold, one per model, AUC in the legend."""
    from embstore.analysis.matching import roc_curve

    with store.read() as con:
        results = _matching(con, manifest, models, layer)
    fig = new_figure(5.6, 5.2)
    ax = fig.add_subplot()
    for i, r in enumerate(results):
        fpr, tpr = roc_curve(r.cos_related, r.cos_unrelated)
        # above the frame (spines: zorder 2.5) and unclipped: an AUC = 1 curve runs along the top edge
        ax.plot(fpr, tpr, color=f"C{i % 10}", linewidth=1.8, label=f"{r.model_key} · {r.layer}  AUC {r.auc:.3f}",
                zorder=3 + i, clip_on=False)  # fmt: skip
    ax.plot([0, 1], [0, 1], ":", color="0.5", linewidth=1)
    ax.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
        xlabel="false positive rate (unrelated called related)",
        ylabel="true positive rate",
        title=f"ROC of related vs unrelated by cosine ({len(results[0].ids)} triplets)",
    )
    ax.set_xticks(np.linspace(0, 1, 6))  # rates: 0 to 1, not the padding around them
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=CAPTION - 1, loc="lower right")
    return fig


def errors(store: StoreCore, *, manifest: str | None = None, models: list[str] | None = None, layer: str | None = None):
    """Per model: ImageNet top-1 error (labelled images in the store), matching error with its bootstrap
    95 % interval, and AUC error = 1 − AUC (seed 000 fig 6); the legend gives Spearman's ρ of the two
    matching errors against top-1 error across the models, with a bootstrap interval over models."""
    from embstore.analysis.comparisons import error_correlation

    with store.read() as con:
        results = _matching(con, manifest, models, layer)
        top1 = {r.model_key: Catalog(con).top1_error(r.model_key) for r in results}
    fig = new_figure(max(5.5, 1.4 + 1.1 * len(results)), 4.4)
    ax = fig.add_subplot()
    x = np.arange(len(results))
    width = 0.26
    t1 = np.array([np.nan if top1[r.model_key] is None else top1[r.model_key] for r in results])
    bars = [ax.bar(x - width, np.nan_to_num(t1), width, color="0.55", label="top-1 error (labelled images)")]
    err = np.array([r.error for r in results])
    ci = np.array([[r.error - r.ci[0] for r in results], [r.ci[1] - r.error for r in results]])
    bars.append(ax.bar(x, err, width, yerr=ci, capsize=3, color="#ff7f0e", label="matching error (95 % CI)"))
    bars.append(ax.bar(x + width, [1 - r.auc for r in results], width, color="#9467bd", label="AUC error (1 − AUC)"))
    # every bar says its value, so a zero-height bar (no error) is there to read, not missing
    ax.bar_label(bars[0], labels=["n/a" if np.isnan(v) else f"{v:.2f}" for v in t1], fontsize=CAPTION - 1,
                 padding=2)  # fmt: skip
    ax.bar_label(bars[1], labels=[f"{v:.2f}" for v in err], fontsize=CAPTION - 1, padding=2)
    ax.bar_label(bars[2], labels=[f"{1 - r.auc:.2f}" for r in results], fontsize=CAPTION - 1, padding=2)
    ax.set_xticks(x, [f"{r.model_key}\n{r.layer}" for r in results], fontsize=CAPTION - 1,
                  rotation=20 if len(x) > 4 else 0)  # fmt: skip
    ax.axhline(0.5, color="0.5", linestyle=":", linewidth=1)
    ax.set(
        xlim=(-0.6, len(x) - 0.4),
        ylim=(0, 1.4),  # room for the legend and its ρ above the bars
        ylabel="error rate",
        title="Matching, AUC and classification error by model",
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=CAPTION - 1, loc="upper right", title=error_correlation(results, top1).legend(),
              title_fontsize=CAPTION - 1)  # fmt: skip
    return fig


def cosines(store: StoreCore, *, manifest: str | None = None, models: list[str] | None = None,
            layer: str | None = None):  # fmt: skip
    """Per-pair cosines of one model against another's on the same triplets, related pairs red and
    unrelated blue, with their Pearson r (seed 000 fig 5a: "almost in linear relationship")."""
    from scipy.stats import pearsonr

    if not models or len(models) != 2:
        raise UsageError("the cosines figure compares exactly two models: give --model A --model B")
    with store.read() as con:
        a, b = _matching(con, manifest, models, layer)
    if a.ids != b.ids:
        raise NotFoundError(f"{a.model_key} and {b.model_key} were matched on different images of the manifest; "
                            "run `embstore analyze matching` again for both")  # fmt: skip
    fig = new_figure(5.6, 5.4)
    ax = fig.add_subplot()
    both = pearsonr(np.r_[a.cos_related, a.cos_unrelated], np.r_[b.cos_related, b.cos_unrelated]).statistic
    for x, y, colour, name in ((a.cos_related, b.cos_related, RELATED, "related"),
                               (a.cos_unrelated, b.cos_unrelated, UNRELATED, "unrelated")):  # fmt: skip
        r = pearsonr(x, y).statistic if len(x) > 2 else float("nan")
        ax.scatter(x, y, s=14, color=colour, alpha=0.7, linewidths=0, label=f"{name} pairs (Pearson r {r:.2f})")
    low = min(a.cos_related.min(), a.cos_unrelated.min(), b.cos_related.min(), b.cos_unrelated.min())
    high = max(a.cos_related.max(), a.cos_unrelated.max(), b.cos_related.max(), b.cos_unrelated.max())
    ax.plot([low, high], [low, high], ":", color="0.5", linewidth=1)
    ax.set(xlabel=f"cosine, {a.model_key} · {a.layer}", ylabel=f"cosine, {b.model_key} · {b.layer}",
           title=f"Per-pair cosines, {len(a.ids)} triplets: all pairs r = {both:.2f}")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=CAPTION - 1, loc="upper left")
    return fig


def ratings(store: StoreCore, *, manifest: str | None = None, model: str | None = None, layer: str | None = None):
    """cosine(object, related) and cosine(object, unrelated) against the human ratings of those pairs:
    red related, blue unrelated; o where the triplet was matched correctly, x where not (seed 000 fig 4)."""
    with store.read() as con:
        r = _matching(con, manifest, [model] if model else None, layer)[0]
    if np.isnan(r.ratings).all():
        raise NotFoundError(
            "the triplet manifest has no rating_related / rating_unrelated columns; add human "
            "ratings to it and re-run `embstore analyze matching`"
        )
    ok = r.cos_related > r.cos_unrelated
    fig = new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    for cos, rating, colour, name in (
        (r.cos_related, r.ratings[:, 0], RELATED, "related"),
        (r.cos_unrelated, r.ratings[:, 1], UNRELATED, "unrelated"),
    ):
        ax.scatter(
            rating[ok],
            cos[ok],
            s=26,
            facecolors="none",
            edgecolors=colour,
            linewidths=1.2,
            label=f"{name}, matched (o)",
        )
        ax.scatter(
            rating[~ok], cos[~ok], s=26, marker="x", color=colour, linewidths=1.2, label=f"{name}, not matched (x)"
        )
    ax.set(
        xlabel="human rating of the pair",
        ylabel="cosine similarity of the features",
        title=f"{r.model_key} · {r.layer}: {ok.sum()} matched, {(~ok).sum()} not",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=CAPTION - 1, loc="best")
    return fig


def _concept_key(pts: list[dict]) -> str:
    """A curve's concept set in words: its size and fingerprint ("unrecorded" before version 15)."""
    got = {(p["concept_set"], p["n_concepts"]) for p in pts}
    if None in {c for c, _ in got}:
        return f"{pts[0]['n_concepts']} concepts, unrecorded ({pts[0]['model_key']}, {pts[0]['reference']})"
    if len(got) > 1:  # layers computed by runs on different sets
        return "layers on " + " and ".join(f"{n} concepts {sha[:8]}" for sha, n in sorted(got))
    sha, n = got.pop()
    return f"{n} concepts {sha[:8]}"
