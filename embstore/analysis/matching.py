"""Related/unrelated object matching (seed 000): a triplet manifest against every stored layer.

For each triplet (object, related, unrelated) and each model layer: cosine(object, related) and
cosine(object, unrelated); the triplet is matched when the related one is strictly closer.
Per layer: matching error with a bootstrap 95 % interval, ROC AUC over the 2N pairs scored by
cosine, and the best / worst / good-luck / bad-luck cases (seed 000 figs 7–10).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embstore.analysis import stats
from embstore.analysis.matchingtables import MatchingTables, StoredMatching  # noqa: F401 - re-exported
from embstore.errors import ManifestError, NotFoundError
from embstore.ingest.images import content_id
from embstore.store.catalog import Catalog
from embstore.store.table import ActivationTable

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

ROLES = ("object", "related", "unrelated")


@dataclass
class Triplets:
    paths: list[tuple[str, str, str]]
    ratings: np.ndarray  # (N, 2) human ratings of (related, unrelated) pairs; NaN where absent
    sha: str


@dataclass
class LayerMatching:
    model_key: str
    layer: str
    cos_related: np.ndarray
    cos_unrelated: np.ndarray
    error: float
    ci: tuple[float, float]
    auc: float
    cases: dict[str, list[int]] = field(default_factory=dict)  # best/worst/good_luck/bad_luck -> triplets
    auc_ci: tuple[float, float] = (float("nan"), float("nan"))  # from the same resampled triplets as `ci`
    n_boot: int = 0
    seed: int = 0

    @property
    def matched(self) -> np.ndarray:
        return self.cos_related > self.cos_unrelated


def read_triplets(path: str | Path) -> Triplets:
    """A CSV/Parquet manifest with columns object, related, unrelated [, rating_related, rating_unrelated]."""
    from embstore.ingest.manifest import read_manifest

    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFoundError(f"triplet manifest {path} does not exist")
    m = read_manifest(path, "triplet manifest", required=ROLES, unique=ROLES, rows_are="triplets")
    rows, cols, base = m.rows, m.columns, m.base
    out, ratings = [], []
    for n, row in enumerate(rows):
        trio = []
        for role in ROLES:
            value = row[cols[role]]
            if value is None or not str(value).strip():
                raise ManifestError(f"triplet manifest {path} row {n} has no {role} image")
            p = Path(str(value).strip()).expanduser()
            trio.append(str((p if p.is_absolute() else base / p).resolve()))
        out.append((trio[0], trio[1], trio[2]))
        ratings.append([_float(row.get(cols.get(f"rating_{r}", ""), None)) for r in ("related", "unrelated")])
    absent = sorted({p for trio in out for p in trio if not Path(p).is_file()})
    if absent:
        raise NotFoundError(f"{len(absent)} image(s) of the manifest cannot be read (missing), e.g. {absent[0]}")
    return Triplets(out, np.array(ratings, dtype=np.float64), hashlib.sha256(path.read_bytes()).hexdigest())


def image_ids(triplets: Triplets) -> tuple[dict[str, str], list[str]]:
    """({path: content id}, [paths that cannot be read])."""
    ids, unreadable = {}, []
    for path in sorted({p for trio in triplets.paths for p in trio}):
        try:
            ids[path] = content_id(Path(path).read_bytes())
        except OSError:
            unreadable.append(path)
    return ids, unreadable


def match_layer(
    model_key: str,
    layer: str,
    vectors: dict[str, np.ndarray],
    triplets: Triplets,
    ids: dict[str, str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> LayerMatching:
    """Seed 000's measures for one layer from {image_id: vector}."""

    def cos(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0

    cr = np.array([cos(vectors[ids[o]], vectors[ids[r]]) for o, r, _ in triplets.paths])
    cu = np.array([cos(vectors[ids[o]], vectors[ids[u]]) for o, _, u in triplets.paths])
    wrong = (cr <= cu).astype(np.float64)  # a tie is not a match
    idx = stats.resamples(len(wrong), n_boot, seed)  # triplets resampled: the same draw for error and AUC
    return LayerMatching(
        model_key,
        layer,
        cr,
        cu,
        float(wrong.mean()),
        stats.percentile_interval(wrong[idx].mean(axis=1)),
        roc_auc(np.r_[cr, cu], np.r_[np.ones(len(cr)), np.zeros(len(cu))]),
        cases(cr, cu),
        stats.percentile_interval(stats.aucs_of_triplet_resamples(cr, cu, idx)),
        n_boot,
        seed,
    )


CASES = ("best", "worst", "good_luck", "bad_luck")


def cases(cos_related: np.ndarray, cos_unrelated: np.ndarray) -> dict[str, list[int]]:
    """Triplets ordered for seed 000 figs 7–10: best/good luck are matches with the largest/smallest
    margin cos_related - cos_unrelated, worst/bad luck are misses with the most/least negative one."""
    d = np.asarray(cos_related) - np.asarray(cos_unrelated)
    pos, neg = np.nonzero(d > 0)[0], np.nonzero(d <= 0)[0]
    return {
        "best": pos[np.argsort(-d[pos], kind="stable")].tolist(),
        "worst": neg[np.argsort(d[neg], kind="stable")].tolist(),
        "good_luck": pos[np.argsort(d[pos], kind="stable")].tolist(),
        "bad_luck": neg[np.argsort(-d[neg], kind="stable")].tolist(),
    }


def roc_curve(cos_related: np.ndarray, cos_unrelated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of calling a pair related when its cosine is above a
    threshold, over every threshold (tied scores move together, as in sklearn's roc_curve)."""
    scores = np.r_[cos_related, cos_unrelated]
    labels = np.r_[np.ones(len(cos_related)), np.zeros(len(cos_unrelated))]
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps, fps = np.cumsum(y)[last_of_tie], np.cumsum(1 - y)[last_of_tie]
    return np.r_[0.0, fps / max(fps[-1], 1)], np.r_[0.0, tps / max(tps[-1], 1)]


def resolve_manifest(con, manifest: str | None) -> str:
    """The manifest sha for a manifest file, a sha prefix, or None (the newest with results)."""
    if manifest is not None and Path(manifest).expanduser().is_file():
        sha = read_triplets(manifest).sha
        if sha not in [m for m, _, _ in MatchingTables(con).manifests()]:
            raise NotFoundError(
                f"no matching results for manifest {manifest}; run `embstore analyze matching {manifest}` first"
            )
        return sha
    return MatchingTables(con).resolve(manifest)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the Mann–Whitney rank sum (ties get average ranks, as sklearn counts them half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def triplet_matching(
    store: StoreCore,
    triplets: Triplets,
    *,
    model_keys: list[str],
    layers: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress=None,
) -> list[LayerMatching]:
    """Every (model, layer) result for `triplets`, materialised in matching_results/_summary.

    Images of the manifest not yet ingested for a model raise NotFoundError naming them.
    """
    ids, unreadable = image_ids(triplets)
    if unreadable:
        raise NotFoundError(f"{len(unreadable)} image(s) of the manifest cannot be read, e.g. {unreadable[0]}")
    table = ActivationTable(store)
    results = []
    for model_key in model_keys:
        with store.read() as con:
            stored = {layer: order for layer, order, _ in Catalog(con).layers_with_vectors(model_key)}
            have = Catalog(con).images_with_vectors(model_key, list(set(ids.values())))
        missing = [p for p, i in ids.items() if i not in have]
        if missing:
            raise NotFoundError(
                f"{len(missing)} image(s) of the manifest are not ingested for {model_key}, e.g. {missing[0]}; "
                f"run `embstore analyze matching MANIFEST --model {model_key} --ingest` to ingest them first"
            )
        for layer in sorted(layers or stored, key=lambda l: stored.get(l, 1 << 30)):
            if layer not in stored:
                raise NotFoundError(f"no vectors of layer '{layer}' for {model_key}")
            got, x = table.vectors_of(model_key, layer, ids.values())  # streamed: only the manifest's images
            vectors = {i: x[r] for r, i in enumerate(got)}
            results.append(match_layer(model_key, layer, vectors, triplets, ids, n_boot=n_boot, seed=seed))
            if progress:
                progress(1, len(layers or stored) * len(model_keys))
    with store.transaction() as con:
        MatchingTables(con).replace(triplets.sha, triplets.paths, triplets.ratings, ids, results)
    return results


def write_image_manifest(triplets: Triplets, path: Path) -> Path:
    """A plain `path` manifest of every image the triplets name, for `embstore ingest`."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    paths = sorted({p for trio in triplets.paths for p in trio})
    pcsv.write_csv(pa.table({"path": paths}), path)
    return path


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
