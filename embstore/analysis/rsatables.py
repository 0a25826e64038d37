"""`embstore analyze rsa`: similarity encoding of every stored layer of a model against a
reference space (seed 004), stored in table rsa_results in network order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embstore.analysis import rsa, stats
from embstore.errors import NotFoundError
from embstore.labels import vectors
from embstore.store.catalog import Catalog
from embstore.store.table import ActivationTable

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


@dataclass
class RsaRow:
    layer: str
    order: int
    acc_2v2: float
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


@dataclass
class RsaReport:
    model_key: str
    reference: str
    concepts: list[int]
    coverage: vectors.Coverage | None
    n_groups: int
    n_permutations: int
    rows: list[RsaRow]


def run_rsa(
    store: StoreCore,
    model: str | None,
    reference: str = "glove",
    *,
    groups: int = 5,
    n_permutations: int = 1000,
    seed: int = 0,
    layers: list[str] | None = None,
    progress=None,
) -> RsaReport:
    """2 vs 2 accuracy with permutation p, RSA r and 1 vs 2 accuracy per layer.

    Concepts: labelled classes with a reference vector and at least `groups` images; image j of
    each concept (by id) goes to group j, so every concept is in every group once.

    >>> run_rsa(StoreCore.open(), "vgg16", "glove").rows[-1].acc_2v2  # doctest: +SKIP
    """
    with store.read() as con:
        key = Catalog(con).resolve_model(model)
        labelled = Catalog(con).labelled_predictions(key)
        stored = [(layer, order) for layer, order, _ in Catalog(con).layers_with_vectors(key)]
    by_class: dict[int, list[str]] = {}
    for image_id, label, _ in labelled:
        by_class.setdefault(label, []).append(image_id)
    enough = sorted(c for c, ids in by_class.items() if len(ids) >= groups)
    coverage, ref_vectors, ref_matrix = None, None, None
    if reference in vectors.WORDNET_SPACES:
        concepts = enough
        ref_matrix = vectors.wordnet_matrix(reference, concepts)
        ref_name = reference
    else:
        space = vectors.open_space(reference)
        concepts, ref_vectors, coverage = vectors.class_vectors(space, enough)
        ref_name = space.name
    if len(concepts) < 4:
        raise NotFoundError(
            f"{key} has {len(concepts)} concept(s) with a reference vector and >= {groups} labelled images; the "
            "2 vs 2 test needs at least 4. Ingest more labelled images or lower `groups=`"
        )
    wanted = [(l, o) for l, o in stored if not layers or l in layers]
    if layers and len(wanted) != len(layers):
        raise NotFoundError(f"layer(s) {sorted(set(layers) - {l for l, _ in wanted})} not stored for {key}")
    group_ids = [[by_class[c][g] for c in concepts] for g in range(groups)]
    misclassified = [(i, t, p) for i, t, p in labelled if t != p and t in concepts and p in concepts]
    correct_of: dict[int, str] = {}
    for i, t, p in labelled:
        if t == p and t in concepts:
            correct_of.setdefault(t, i)
    table = ActivationTable(store)
    needed = {i for gid in group_ids for i in gid} | {i for i, _, _ in misclassified} | set(correct_of.values())
    rows = []
    if ref_matrix is not None:
        w = ref_matrix
    else:  # the reference's similarities, once for every layer
        assert ref_vectors is not None  # a word-vector space gave them
        w = rsa.correlation_matrix(ref_vectors)
    if progress:
        progress(0, len(wanted))
    for layer, order in wanted:
        ids, x = table.vectors_of(key, layer, needed)  # streamed: only the images the tests use
        pos = {i: r for r, i in enumerate(ids)}
        mats = [x[[pos[i] for i in gid]].astype(np.float64) for gid in group_ids]
        enc = rsa.similarity_encoding(ref_vectors, mats, n_permutations=n_permutations, seed=seed, reference_matrix=w)
        prototypes = np.mean(mats, axis=0)
        s, p_rsa = rsa.rsa(ref_vectors, prototypes, reference_matrix=w)
        acc12, n12 = _one_vs_two(ref_vectors, concepts, correct_of, misclassified, x, pos)
        p12 = None if acc12 is None else stats.binomial_greater(round(acc12 * n12), n12)
        rows.append(RsaRow(layer, order, enc.accuracy, enc.p_value, s, p_rsa, acc12, n12, p12))
        if progress:
            progress(1, len(wanted))
    for raw, holm, bh in (("p_value", "p_holm", "p_bh"), ("p_1v2", "p_1v2_holm", "p_1v2_bh")):
        ps = [getattr(r, raw) for r in rows]  # the family: every layer this run tests
        for r, h, b in zip(rows, stats.adjusted(ps, "holm"), stats.adjusted(ps, "bh")):
            setattr(r, holm, h)
            setattr(r, bh, b)
    report = RsaReport(key, ref_name, concepts, coverage, groups, n_permutations, rows)
    with store.transaction() as con:
        RsaTables(con).store(report, seed, ref_vectors)
    return report


def _one_vs_two(ref_vectors, concepts, correct_of, misclassified, x, pos):
    """Seed 004 §3.3 over misclassified images whose true and predicted classes are both concepts."""
    if ref_vectors is None or not misclassified:
        return None, 0
    row_of = {c: r for r, c in enumerate(concepts)}
    correct = np.full((len(concepts), x.shape[1]), np.nan)
    for c, image_id in correct_of.items():
        correct[row_of[c]] = x[pos[image_id]]
    passed = rsa.one_vs_two_many(
        ref_vectors,
        correct,
        x[[pos[i] for i, _, _ in misclassified]],
        [row_of[t] for _, t, _ in misclassified],
        [row_of[p] for _, _, p in misclassified],
    )
    n = len(misclassified)
    return float(passed.sum()) / n, n


STORED_COLUMNS = (
    "model_key",
    "layer",
    "layer_order",
    "reference",
    "n_concepts",
    "acc_2v2",
    "p_value",
    "n_permutations",
    "rsa_spearman",
    "rsa_pearson",
    "acc_1v2",
    "n_1v2",
    "p_1v2",
    "p_holm",
    "p_bh",
    "p_1v2_holm",
    "p_1v2_bh",
    "computed_at",
)


class RsaTables:
    """The similarity-encoding result tables (rsa_results, reference_vectors): every statement on them."""

    def __init__(self, con) -> None:
        self.con = con

    def store(self, report: RsaReport, seed: int, ref_vectors=None) -> None:
        """Replace the rows of `report`'s layers (and its reference vectors); call in a transaction."""
        import pyarrow as pa

        con = self.con
        if ref_vectors is not None and report.coverage is not None:
            con.execute(
                "DELETE FROM reference_vectors WHERE reference = ? AND list_contains(?, label_index)",
                [report.reference, report.concepts],
            )
            con.register(
                "_refs",
                pa.table(
                    {
                        "reference": [report.reference] * len(report.concepts),
                        "label_index": report.concepts,
                        "how": [report.coverage.kept[c] for c in report.concepts],
                        "vec": [v.tolist() for v in ref_vectors],
                    }
                ),
            )
            con.execute("INSERT INTO reference_vectors SELECT reference, label_index, how, vec FROM _refs")
            con.unregister("_refs")
        for r in report.rows:
            con.execute(
                "DELETE FROM rsa_results WHERE model_key = ? AND layer = ? AND reference = ?",
                [report.model_key, r.layer, report.reference],
            )
            con.execute(
                """INSERT INTO rsa_results (model_key, layer, layer_order, reference, n_concepts, n_groups, acc_2v2,
                       p_value, n_permutations, rsa_spearman, rsa_pearson, acc_1v2, n_1v2, p_1v2, seed,
                       p_holm, p_bh, p_1v2_holm, p_1v2_bh)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    report.model_key,
                    r.layer,
                    r.order,
                    report.reference,
                    len(report.concepts),
                    report.n_groups,
                    r.acc_2v2,
                    r.p_value,
                    report.n_permutations,
                    r.rsa_spearman,
                    r.rsa_pearson,
                    r.acc_1v2,
                    r.n_1v2,
                    r.p_1v2,
                    seed,
                    r.p_holm,
                    r.p_bh,
                    r.p_1v2_holm,
                    r.p_1v2_bh,
                ],
            )

    def results(self, models: list[str] | None = None, references: list[str] | None = None) -> list[dict]:
        """Rows of rsa_results as dicts, by model, reference and network order; `references` match by prefix
        (`glove` finds glove-6B-50d)."""
        rows = [
            dict(zip(STORED_COLUMNS, r))
            for r in self.con.execute(
                f"""SELECT {", ".join(STORED_COLUMNS)} FROM rsa_results
                WHERE ? IS NULL OR list_contains(?, model_key) ORDER BY model_key, reference, layer_order""",
                [models, models],
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
