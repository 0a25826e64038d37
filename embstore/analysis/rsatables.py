"""`embstore analyze rsa`: similarity encoding of every stored layer of a model against a
reference space (seed 004) on one label set's concepts (analysis.concepts), stored in table
rsa_results in network order."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embstore.analysis import concepts as concept_sets
from embstore.analysis import rsa, stats
from embstore.analysis.labelsets import IMAGENET, LabelNames
from embstore.errors import NotFoundError, UsageError
from embstore.labels import vectors
from embstore.store.catalog import Catalog
from embstore.store.table import ActivationTable

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


@dataclass
class RsaRow:
    layer: str
    order: int
    acc_2v2: float  # mean over the image groups
    p_value: float | None
    rsa_spearman: float
    rsa_pearson: float
    acc_1v2: float | None
    n_1v2: int
    p_1v2: float | None = None  # exact one-sided binomial p of acc_1v2 against 0.5
    # adjusted across the layers of the run (stats.adjusted): Holm and Benjamini-Hochberg
    p_holm: float | None = None
    p_bh: float | None = None
    p_1v2_holm: float | None = None
    p_1v2_bh: float | None = None
    acc_groups: list[float] = field(default_factory=list)  # per image group
    acc_sd: float | None = None  # SD across groups (ddof 1)
    acc_ci: tuple[float, float] | None = None  # concept bootstrap, 95 %
    eq1_mean: float | None = None  # seed 004 Eq. 1, mean over pairs and groups
    eq2_mean: float | None = None  # Eq. 2
    rsa_kendall_a: float | None = None
    rsa_spearman_ci: tuple[float, float] | None = None
    rsa_pearson_ci: tuple[float, float] | None = None
    rsa_kendall_ci: tuple[float, float] | None = None
    p_1v2_perm: float | None = None  # the reference's concepts permuted
    _resamples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


@dataclass
class RsaReport:
    model_key: str
    reference: str
    concepts: list[int]
    coverage: vectors.Coverage | None
    n_groups: int
    n_permutations: int
    rows: list[RsaRow]
    n_boot: int = 0
    seed: int = 0
    concepts_sha: str = ""
    scope_1v2: str = "all"
    warnings: list[str] = field(default_factory=list)
    label_set: str = IMAGENET
    concept_set: concept_sets.ConceptSet | None = None


SCOPES_1V2 = ("all", "within-group")


def concepts_fingerprint(reference: str, concepts: list[int]) -> str:
    """sha256 of the reference and its ordered concept list: equal fingerprints, equal resamples."""
    import hashlib

    return hashlib.sha256(f"{reference}:{','.join(map(str, concepts))}".encode()).hexdigest()


def run_rsa(
    store: StoreCore,
    model: str | None,
    reference: str = "glove",
    *,
    groups: int = 5,
    n_permutations: int = 1000,
    seed: int = 0,
    layers: list[str] | None = None,
    n_boot: int = 1000,
    scope_1v2: str = "all",
    alpha: float = 0.05,
    label_set: str | None = None,
    concepts: list[str] | str | Path | None = None,
    intersect: list[str] | None = None,
    progress=None,
) -> RsaReport:
    """2 vs 2 accuracy with permutation p and concept-bootstrap interval, RSA (Spearman, Pearson,
    Kendall τ-a) with intervals, and the 1 vs 2 test with binomial and permutation p, per layer.

    Concepts: classes of `label_set` (default: Catalog.choose_label_set) with at least `groups`
    images, those the reference covers, or a fixed set (`concepts`, `intersect`: analysis.concepts);
    image j of each concept (by id) goes to group j, so every concept is in every group once. The
    1 vs 2 test needs the model's predictions among the set's classes, so runs on imagenet1k only;
    its scope (`scope_1v2`): "all" misclassified images against the first correctly classified image of each
    concept, or "within-group" (seed 004 §3.3: one group's misclassified images against that
    group's correctly classified ones). `alpha` only checks that the permutations can reach it.

    >>> run_rsa(StoreCore.open(), "vgg16", "glove").rows[-1].acc_2v2  # doctest: +SKIP
    """
    if scope_1v2 not in SCOPES_1V2:
        raise UsageError(f"unknown 1 vs 2 scope {scope_1v2!r}; choose one of {', '.join(SCOPES_1V2)}")
    if n_boot and n_boot < 100:
        raise UsageError(f"n_boot must be 0 (no intervals) or at least 100 for a 95 % interval, not {n_boot}")
    ref = vectors.Reference(reference)
    with store.read() as con:
        cat = Catalog(con)
        key = cat.resolve_model(model)
        label_set = cat.choose_label_set(label_set)
        names = LabelNames.of(con, label_set)
        labelled: list[tuple[str, int, int | None]]
        if label_set == IMAGENET:
            labelled = list(cat.labelled_predictions(key))
        else:  # no prediction in the set's classes: the models' heads are ImageNet's
            labelled = [(i, c, None) for i, c in cat.labelled_images(key, label_set)]
        stored = [(layer, order) for layer, order, _ in cat.layers_with_vectors(key)]
    by_class: dict[int, list[str]] = {}
    for image_id, label, _ in labelled:
        by_class.setdefault(label, []).append(image_id)
    enough = sorted(c for c, ids in by_class.items() if len(ids) >= groups)
    chosen = concept_sets.choose(names, enough, ref, concepts=concepts, intersect=intersect)
    concepts_ = list(chosen.indices)
    if len(concepts_) < 4:
        raise NotFoundError(
            f"{key} has {len(concepts_)} concept(s) in label set {label_set} with >= {groups} labelled images "
            f"({chosen.source}); the 2 vs 2 test needs at least 4. Ingest more labelled images or lower `groups=`"
        )
    wanted = [(l, o) for l, o in stored if not layers or l in layers]
    if layers and len(wanted) != len(layers):
        raise NotFoundError(f"layer(s) {sorted(set(layers) - {l for l, _ in wanted})} not stored for {key}")
    group_ids = [[by_class[c][g] for c in concepts_] for g in range(groups)]
    warnings = []
    if label_set == IMAGENET:
        scopes = _one_vs_two_scopes(labelled, concepts_, group_ids, scope_1v2)
    else:
        scopes = []
        warnings.append(f"no 1 vs 2 test on label set {label_set}: it needs the model's predicted class among "
                        "the set's classes, and the models' heads are ImageNet's")  # fmt: skip
    table = ActivationTable(store)
    needed = {i for gid in group_ids for i in gid} | {i for sc in scopes for i in sc.images()}
    rows = []
    coverage = ref.cover(names.terms(enough))  # the concepts are among these candidates
    if ref.space is None:  # the reference's similarities, once for every layer
        w = vectors.wordnet_matrix(ref.spec, [str(t.wnid) for t in names.terms(concepts_)])
    else:
        w = rsa.correlation_matrix(np.stack([coverage.vectors[c] for c in concepts_]))
    weights = rsa.concept_weights(len(concepts_), n_boot, seed)
    if progress:
        progress(0, len(wanted))
    for layer, order in wanted:
        ids, x = table.vectors_of(key, layer, needed)  # streamed: only the images the tests use
        pos = {i: r for r, i in enumerate(ids)}
        mats = [x[[pos[i] for i in gid]].astype(np.float64) for gid in group_ids]
        enc = rsa.similarity_encoding(
            None, mats, n_permutations=n_permutations, seed=seed, reference_matrix=w, n_boot=n_boot
        )
        prototype_corr = rsa.correlation_matrix(np.mean(mats, axis=0))
        measures = rsa.rsa_measures(w, prototype_corr)
        boot = rsa.rsa_resampled(w, prototype_corr, weights) if n_boot else {}
        boot["acc_2v2"] = enc.boot
        test12 = _one_vs_two(w, scopes, x, pos, n_permutations, seed)
        ci = {name: stats.percentile_interval(v) if n_boot else None for name, v in boot.items()}
        rows.append(
            RsaRow(
                layer, order, enc.accuracy, enc.p_value, measures["spearman"], measures["pearson"],
                test12.accuracy, test12.n, test12.p_binomial,
                acc_groups=enc.per_group,
                acc_sd=float(np.std(enc.per_group, ddof=1)) if groups > 1 else None,
                acc_ci=ci.get("acc_2v2"), eq1_mean=enc.eq1, eq2_mean=enc.eq2,
                rsa_kendall_a=measures["kendall_a"], rsa_spearman_ci=ci.get("spearman"),
                rsa_pearson_ci=ci.get("pearson"), rsa_kendall_ci=_finite(ci.get("kendall_a")),
                p_1v2_perm=test12.p_permutation, _resamples=boot,
            )
        )  # fmt: skip
        if progress:
            progress(1, len(wanted))
    for raw, holm, bh in (("p_value", "p_holm", "p_bh"), ("p_1v2", "p_1v2_holm", "p_1v2_bh")):
        ps = [getattr(r, raw) for r in rows]  # the family: every layer this run tests
        for r, h, b in zip(rows, stats.adjusted(ps, "holm"), stats.adjusted(ps, "bh")):
            setattr(r, holm, h)
            setattr(r, bh, b)
    report = RsaReport(
        key, ref.name, concepts_, coverage, groups, n_permutations, rows, n_boot, seed,
        concepts_fingerprint(ref.name, concepts_), scope_1v2, warnings, label_set, chosen,
    )  # fmt: skip
    floor = stats.floor_warning(alpha, n_permutations, len(rows)) if n_permutations else None
    if floor:
        report.warnings.append(floor)
    with store.transaction() as con:
        RsaTables(con).store(report, seed, ref.space is not None)
    return report


def _finite(ci):
    return None if ci is None or any(v != v for v in ci) else ci


@dataclass
class _Scope:
    """Misclassified images (id, true row, predicted row) and the correctly classified image of each
    concept they are compared with (row -> image id)."""

    misclassified: list[tuple[str, int, int]]
    correct_of: dict[int, str]

    def images(self) -> set[str]:
        return {i for i, _, _ in self.misclassified} | set(self.correct_of.values())


def _one_vs_two_scopes(labelled, concepts, group_ids, scope: str) -> list[_Scope]:
    """The 1 vs 2 test's image sets: one over all labelled images, or one per group (seed 004)."""
    row_of = {c: r for r, c in enumerate(concepts)}
    truth = {i: (t, p) for i, t, p in labelled}
    if scope == "all":
        pools = [[i for i, _, _ in labelled]]
    else:
        pools = [list(gid) for gid in group_ids]
    out = []
    for pool in pools:
        mis = [(i, row_of[truth[i][0]], row_of[truth[i][1]]) for i in pool
               if truth[i][0] != truth[i][1] and truth[i][0] in row_of and truth[i][1] in row_of]  # fmt: skip
        correct: dict[int, str] = {}
        for i in pool:
            t, p = truth[i]
            if t == p and t in row_of:
                correct.setdefault(row_of[t], i)
        out.append(_Scope(mis, correct))
    return out


def _one_vs_two(w, scopes: list[_Scope], x, pos, n_permutations: int, seed: int) -> rsa.OneVsTwo:
    """Seed 004 §3.3 over misclassified images whose true and predicted classes are both concepts;
    every scope's images compared with that scope's correctly classified images, pooled."""
    k = w.shape[0]
    corr, true, predicted = [], [], []
    for sc in scopes:
        if not sc.misclassified:
            continue
        correct = np.full((k, x.shape[1]), np.nan)
        for row, image_id in sc.correct_of.items():
            correct[row] = x[pos[image_id]]
        corr.append(rsa.image_correlations(correct, x[[pos[i] for i, _, _ in sc.misclassified]]))
        true += [t for _, t, _ in sc.misclassified]
        predicted += [p for _, _, p in sc.misclassified]
    if not true:
        return rsa.OneVsTwo(None, 0, None, None, n_permutations)
    return rsa.one_vs_two_test(w, np.vstack(corr), true, predicted, n_permutations=n_permutations, seed=seed)


STORED_COLUMNS = (
    "model_key",
    "layer",
    "layer_order",
    "reference",
    "label_set",
    "concept_set",
    "concept_source",
    "n_concepts",
    "n_groups",
    "acc_2v2",
    "acc_groups",
    "acc_sd",
    "acc_ci_low",
    "acc_ci_high",
    "eq1_mean",
    "eq2_mean",
    "p_value",
    "n_permutations",
    "rsa_spearman",
    "rsa_spearman_ci_low",
    "rsa_spearman_ci_high",
    "rsa_pearson",
    "rsa_pearson_ci_low",
    "rsa_pearson_ci_high",
    "rsa_kendall_a",
    "rsa_kendall_ci_low",
    "rsa_kendall_ci_high",
    "acc_1v2",
    "n_1v2",
    "p_1v2",
    "p_1v2_perm",
    "scope_1v2",
    "p_holm",
    "p_bh",
    "p_1v2_holm",
    "p_1v2_bh",
    "n_boot",
    "seed",
    "concepts_sha",
    "computed_at",
)
RESAMPLED = ("acc_2v2", "rsa_spearman", "rsa_pearson", "rsa_kendall_a")  # rsa_resamples' arrays


class RsaTables:
    """The similarity-encoding tables (rsa_results, rsa_resamples, rsa_tests, reference_vectors,
    concept_sets): every statement on them."""

    def __init__(self, con) -> None:
        self.con = con

    def store(self, report: RsaReport, seed: int, word_space: bool = False) -> None:
        """Replace the rows of `report`'s layers, record its concept set and (`word_space`) the reference's
        coverage of the label set's candidate concepts; call in a transaction."""
        import pyarrow as pa

        con = self.con
        cs = report.concept_set
        if cs is not None:
            con.execute(
                """INSERT OR IGNORE INTO concept_sets (concept_set, label_set, n, label_indices, names)
                   VALUES (?, ?, ?, ?, ?)""",
                [cs.sha, cs.label_set, len(cs.indices), list(cs.indices), list(cs.names)],
            )
        if word_space and report.coverage is not None:
            cov = report.coverage
            looked_up = sorted(cov.names)
            con.execute(
                "DELETE FROM reference_vectors WHERE reference = ? AND label_set = ? AND list_contains(?, label_index)",
                [report.reference, report.label_set, looked_up],
            )
            con.register(
                "_refs",
                pa.table(
                    {
                        "reference": [report.reference] * len(looked_up),
                        "label_set": [report.label_set] * len(looked_up),
                        "label_index": looked_up,
                        "how": [cov.kept.get(c, "missing") for c in looked_up],
                        "vec": [cov.vectors[c].tolist() if c in cov.vectors else None for c in looked_up],
                    },
                    schema=pa.schema(
                        [
                            ("reference", pa.string()),
                            ("label_set", pa.string()),
                            ("label_index", pa.int32()),
                            ("how", pa.string()),
                            ("vec", pa.list_(pa.float64())),
                        ]
                    ),
                ),
            )
            con.execute("INSERT INTO reference_vectors BY NAME SELECT * FROM _refs")
            con.unregister("_refs")
        for r in report.rows:
            self._delete(report.model_key, r.layer, report.reference, report.label_set)
            values = {
                "model_key": report.model_key, "layer": r.layer, "layer_order": r.order,
                "reference": report.reference, "label_set": report.label_set,
                "concept_set": cs.sha if cs is not None else None,
                "concept_source": cs.source if cs is not None else None,
                "n_concepts": len(report.concepts), "n_groups": report.n_groups,
                "acc_2v2": r.acc_2v2, "acc_groups": r.acc_groups, "acc_sd": r.acc_sd,
                "eq1_mean": r.eq1_mean, "eq2_mean": r.eq2_mean, "p_value": r.p_value,
                "n_permutations": report.n_permutations, "rsa_spearman": r.rsa_spearman,
                "rsa_pearson": r.rsa_pearson, "rsa_kendall_a": r.rsa_kendall_a, "acc_1v2": r.acc_1v2,
                "n_1v2": r.n_1v2, "p_1v2": r.p_1v2, "p_1v2_perm": r.p_1v2_perm, "scope_1v2": report.scope_1v2,
                "p_holm": r.p_holm, "p_bh": r.p_bh, "p_1v2_holm": r.p_1v2_holm, "p_1v2_bh": r.p_1v2_bh,
                "n_boot": report.n_boot, "seed": seed, "concepts_sha": report.concepts_sha,
            }  # fmt: skip
            for name, ci in (("acc", r.acc_ci), ("rsa_spearman", r.rsa_spearman_ci),
                             ("rsa_pearson", r.rsa_pearson_ci), ("rsa_kendall", r.rsa_kendall_ci)):  # fmt: skip
                values[f"{name}_ci_low"], values[f"{name}_ci_high"] = ci or (None, None)
            con.execute(
                f"INSERT INTO rsa_results ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                list(values.values()),
            )
            if report.n_boot:
                arrays = [r._resamples[k].tolist() for k in ("acc_2v2", "spearman", "pearson", "kendall_a")]
                con.execute(
                    f"INSERT INTO rsa_resamples (model_key, layer, reference, label_set, {', '.join(RESAMPLED)}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [report.model_key, r.layer, report.reference, report.label_set, *arrays],
                )

    def _delete(self, model_key: str, layer: str, reference: str, label_set: str) -> None:
        """Remove one result, its resamples and every comparison made with it (now stale)."""
        for table in ("rsa_results", "rsa_resamples"):
            self.con.execute(
                f"DELETE FROM {table} WHERE model_key = ? AND layer = ? AND reference = ? AND label_set = ?",
                [model_key, layer, reference, label_set],
            )
        self.con.execute(
            """DELETE FROM rsa_tests WHERE reference = ? AND label_set = ? AND ((model_a = ? AND layer_a = ?)
               OR (model_b = ? AND layer_b = ?))""",
            [reference, label_set, model_key, layer, model_key, layer],
        )

    def read(self, model_key: str, layer: str | None, reference: str, label_set: str = IMAGENET) -> dict:
        """One stored result with its resampled arrays (key `resamples`); `layer` None: the deepest."""
        rows = [r for r in self.results([model_key], [reference], [label_set]) if layer is None or r["layer"] == layer]
        if not rows:
            where = "" if label_set == IMAGENET else f" on label set {label_set}"
            raise NotFoundError(
                f"no similarity-encoding result for {model_key}{':' + layer if layer else ''} against "
                f"{reference}{where}; run `embstore analyze rsa --model {model_key} --vectors {reference}`"
            )
        row = rows[-1]
        got = self.con.execute(
            f"""SELECT {", ".join(RESAMPLED)} FROM rsa_resamples
                WHERE model_key = ? AND layer = ? AND reference = ? AND label_set = ?""",
            [row["model_key"], row["layer"], row["reference"], row["label_set"]],
        ).fetchall()
        row["resamples"] = dict(zip(RESAMPLED, (np.asarray(v, np.float64) for v in got[0]))) if got else {}
        return row

    def store_test(self, t) -> None:
        """Replace the rows of comparison `t` (an RsaComparison); call in a transaction."""
        for m in t.measures:
            self.con.execute(
                """DELETE FROM rsa_tests WHERE reference = ? AND label_set = ? AND model_a = ? AND layer_a = ?
                   AND model_b = ? AND layer_b = ? AND measure = ?""",
                [t.reference, t.label_set, *t.a, *t.b, m["measure"]],
            )
            self.con.execute(
                """INSERT INTO rsa_tests (reference, label_set, model_a, layer_a, model_b, layer_b, measure,
                       n_concepts, concepts_sha, value_a, value_b, delta, ci_low, ci_high, p_value, method, n_boot,
                       seed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [t.reference, t.label_set, *t.a, *t.b, m["measure"], t.n_concepts, t.concepts_sha, m["a"], m["b"],
                 m["a - b"], m["ci_low"], m["ci_high"], m["p"], t.method, t.n_boot, t.seed],
            )  # fmt: skip

    def tests(self) -> list[dict]:
        """Every stored comparison (rsa_tests) as dicts, newest first, a measure a row."""
        cur = self.con.execute(
            """SELECT reference, label_set, model_a, layer_a, model_b, layer_b, measure, n_concepts, value_a, value_b,
                      delta,
                      ci_low, ci_high, p_value, method, n_boot, seed
               FROM rsa_tests ORDER BY computed_at DESC, model_a, layer_a, model_b, layer_b, measure"""
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def results(
        self, models: list[str] | None = None, references: list[str] | None = None, label_sets: list[str] | None = None
    ) -> list[dict]:
        """Rows of rsa_results as dicts, by model, reference, label set and network order; `references` match
        by prefix (`glove` finds glove-6B-50d)."""
        rows = [
            dict(zip(STORED_COLUMNS, r))
            for r in self.con.execute(
                f"""SELECT {", ".join(STORED_COLUMNS)} FROM rsa_results
                WHERE (? IS NULL OR list_contains(?, model_key)) AND (? IS NULL OR list_contains(?, label_set))
                ORDER BY model_key, reference, label_set, layer_order""",
                [models, models, label_sets, label_sets],
            ).fetchall()
        ]
        if references:
            known = sorted({r["reference"] for r in rows})
            chosen = {k for k in known if any(k == q or k.startswith(q) for q in references)}
            missing = [q for q in references if not any(k == q or k.startswith(q) for k in known)]
            if missing:
                raise NotFoundError(
                    f"no similarity-encoding results for reference {missing[0]!r}; stored: "
                    f"{', '.join(known) or 'none'} (run `embstore analyze rsa --vectors …`)"
                )
            rows = [r for r in rows if r["reference"] in chosen]
        return rows

    def concept_set(self, sha: str) -> dict | None:
        """One recorded concept set (label_set, n, label_indices, names), or None."""
        cur = self.con.execute(
            "SELECT concept_set, label_set, n, label_indices, names FROM concept_sets WHERE concept_set = ?",
            [sha],
        )
        got = cur.fetchall()
        return dict(zip([d[0] for d in cur.description], got[0])) if got else None
