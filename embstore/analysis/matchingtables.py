"""The triplet-matching result tables (matching_results, matching_summary): every statement on them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embstore.errors import NotFoundError, UnknownLayerError, did_you_mean
from embstore.store.catalog import Catalog
from embstore.store.duck import dict_rows


@dataclass
class StoredMatching:
    """One (manifest, model, layer) result read back from matching_results / matching_summary."""

    manifest_sha: str
    model_key: str
    layer: str
    error: float
    ci: tuple[float, float]
    auc: float
    cos_related: np.ndarray
    cos_unrelated: np.ndarray
    ratings: np.ndarray  # (N, 2) related, unrelated; NaN where absent
    ids: list[tuple[str, str, str]]  # (object, related, unrelated) image ids
    paths: dict[str, str]  # image id -> path
    auc_ci: tuple[float, float] = (float("nan"), float("nan"))  # NULL for results computed before version 11

    @property
    def wrong(self) -> np.ndarray:
        """Per triplet: the related image not matched (a tie is not a match)."""
        return self.cos_related <= self.cos_unrelated


class MatchingTables:
    """The stored results of `embstore analyze matching`, on one open catalog connection."""

    def __init__(self, con) -> None:
        self.con = con

    def manifests(self) -> list[tuple[str, int, object]]:
        """(manifest_sha, n_triplets, last computed) of every manifest with results, newest first."""
        return self.con.execute("""SELECT manifest_sha, max(n_triplets), max(computed_at) FROM matching_summary
                              GROUP BY manifest_sha ORDER BY max(computed_at) DESC, manifest_sha""").fetchall()

    def has_ratings(self, sha: str) -> bool:
        """Whether the manifest gave human ratings of its pairs (rating_related / rating_unrelated)."""
        return bool(self.con.execute(
            """SELECT count(*) FROM matching_results WHERE manifest_sha = ?
               AND (NOT isnan(rating_related) OR NOT isnan(rating_unrelated))""", [sha]
        ).fetchall()[0][0])  # fmt: skip

    def resolve(self, manifest: str | None) -> str:
        """The manifest sha for a sha prefix, or None (the newest with results)."""
        known = [m for m, _, _ in self.manifests()]
        if not known:
            raise NotFoundError(
                "no triplet matching results in this store; run `embstore analyze matching MANIFEST` first"
            )
        if manifest is None:
            return known[0]
        hits = [m for m in known if m.startswith(manifest.lower())]
        if len(hits) != 1:
            what = "matches several" if hits else "matches none"
            raise NotFoundError(
                f"manifest '{manifest}' {what} of the stored manifests ({', '.join(m[:12] for m in known)})"
                "; give a manifest file or a longer sha prefix"
            )
        return hits[0]

    def summary(self, manifest_sha: str) -> list[dict]:
        """matching_summary of one manifest as dicts, by model and network order."""
        return dict_rows(
            self.con.execute(
                """SELECT s.model_key, s.layer, s.n_triplets, s.error, s.error_ci_low, s.error_ci_high, s.auc,
                      s.auc_ci_low, s.auc_ci_high, strftime(s.computed_at, '%Y-%m-%d %H:%M') AS computed
               FROM matching_summary s LEFT JOIN layers l USING (model_key, layer)
               WHERE s.manifest_sha = ? ORDER BY s.model_key, l.ord NULLS LAST, s.layer""",
                [manifest_sha],
            )
        )

    def layers(self, manifest_sha: str, model_key: str) -> list[str]:
        """Layers with results for (manifest, model), in network order."""
        return [
            r[0]
            for r in self.con.execute(
                """SELECT s.layer FROM matching_summary s LEFT JOIN layers l USING (model_key, layer)
               WHERE s.manifest_sha = ? AND s.model_key = ? ORDER BY l.ord NULLS LAST, s.layer""",
                [manifest_sha, model_key],
            ).fetchall()
        ]

    def models(self, manifest_sha: str) -> list[str]:
        return [
            r[0]
            for r in self.con.execute(
                "SELECT DISTINCT model_key FROM matching_summary WHERE manifest_sha = ? ORDER BY model_key",
                [manifest_sha],
            ).fetchall()
        ]

    def read(self, manifest_sha: str, model_key: str, layer: str | None = None) -> StoredMatching:
        """The stored result of one model at `layer` (default: 'hidden' if matched, else its deepest layer)."""
        layers = self.layers(manifest_sha, model_key)
        if not layers:
            raise NotFoundError(
                f"no matching results of {model_key} for manifest {manifest_sha[:12]}; models with "
                f"results: {', '.join(self.models(manifest_sha)) or 'none'}"
            )
        if layer is None:
            layer = "hidden" if "hidden" in layers else layers[-1]
        elif layer not in layers:
            raise UnknownLayerError(
                f"no matching results of {model_key} at layer '{layer}'.{did_you_mean(layer, layers)}"
            )
        error, lo, hi, auc, auc_lo, auc_hi = self.con.execute(
            """SELECT error, error_ci_low, error_ci_high, auc, auc_ci_low, auc_ci_high FROM matching_summary
               WHERE manifest_sha = ? AND model_key = ? AND layer = ?""",
            [manifest_sha, model_key, layer],
        ).fetchall()[0]
        rows = self.con.execute(
            """SELECT object_id, related_id, unrelated_id, cos_related, cos_unrelated, rating_related, rating_unrelated
               FROM matching_results WHERE manifest_sha = ? AND model_key = ? AND layer = ? ORDER BY triplet""",
            [manifest_sha, model_key, layer],
        ).fetchall()
        ids = [(o, r, u) for o, r, u, *_ in rows]
        paths = Catalog(self.con).image_paths(sorted({i for trio in ids for i in trio}))
        return StoredMatching(
            manifest_sha,
            model_key,
            layer,
            error,
            (lo, hi),
            auc,
            np.array([r[3] for r in rows], np.float64),
            np.array([r[4] for r in rows], np.float64),
            np.array([[r[5], r[6]] for r in rows], np.float64).reshape(-1, 2),
            ids,
            paths,
            (float("nan") if auc_lo is None else auc_lo, float("nan") if auc_hi is None else auc_hi),
        )

    def replace(self, sha: str, paths: list, ratings: np.ndarray, ids: dict[str, str], results: list) -> None:
        """Replace the stored results of each (model, layer) in `results` for manifest `sha` (call in a transaction)."""
        import pyarrow as pa

        con = self.con
        for r in results:
            fp = Catalog(con).layer_fingerprint(r.model_key, r.layer)
            con.execute(
                "DELETE FROM matching_results WHERE manifest_sha = ? AND model_key = ? AND layer = ?",
                [sha, r.model_key, r.layer],
            )
            con.execute(
                "DELETE FROM matching_summary WHERE manifest_sha = ? AND model_key = ? AND layer = ?",
                [sha, r.model_key, r.layer],
            )
            n = len(paths)
            table = pa.table(
                {
                    "manifest_sha": [sha] * n,
                    "model_key": [r.model_key] * n,
                    "layer": [r.layer] * n,
                    "triplet": list(range(n)),
                    "object_id": [ids[o] for o, _, _ in paths],
                    "related_id": [ids[x] for _, x, _ in paths],
                    "unrelated_id": [ids[u] for _, _, u in paths],
                    "cos_related": r.cos_related,
                    "cos_unrelated": r.cos_unrelated,
                    "matched": r.matched,
                    "rating_related": ratings[:, 0],
                    "rating_unrelated": ratings[:, 1],
                }
            )
            con.register("_m", table)
            con.execute("INSERT INTO matching_results SELECT * FROM _m")
            con.unregister("_m")
            con.execute(
                """INSERT INTO matching_summary (manifest_sha, model_key, layer, n_triplets, error, error_ci_low,
                           error_ci_high, auc, auc_ci_low, auc_ci_high, n_boot, seed, computed_from)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [sha, r.model_key, r.layer, n, r.error, r.ci[0], r.ci[1], r.auc, r.auc_ci[0], r.auc_ci[1], r.n_boot,
                 r.seed, fp],
            )  # fmt: skip
            con.execute(  # a comparison involving this result is out of date now
                """DELETE FROM matching_tests WHERE manifest_sha = ?
                   AND ((model_a = ? AND layer_a = ?) OR (model_b = ? AND layer_b = ?))""",
                [sha, r.model_key, r.layer, r.model_key, r.layer],
            )

    def store_test(self, t) -> None:
        """Record one comparison (analysis/comparisons.py), replacing an earlier one of the same pair."""
        key = [t.manifest_sha, t.a[0], t.a[1], t.b[0], t.b[1]]
        self.con.execute(
            """DELETE FROM matching_tests WHERE manifest_sha = ? AND model_a = ? AND layer_a = ?
               AND model_b = ? AND layer_b = ?""",
            key,
        )
        self.con.execute(
            """INSERT INTO matching_tests (manifest_sha, model_a, layer_a, model_b, layer_b, n_triplets, error_a,
                   error_b, d_error, d_error_ci_low, d_error_ci_high, a_only, b_only, mcnemar_p, auc_a, auc_b, d_auc,
                   d_auc_ci_low, d_auc_ci_high, d_auc_p, n_boot, seed)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [*key, t.n_triplets, t.error_a, t.error_b, t.d_error, *t.d_error_ci, t.a_only, t.b_only, t.mcnemar_p,
             t.auc_a, t.auc_b, t.d_auc, *t.d_auc_ci, t.d_auc_p, t.n_boot, t.seed],
        )  # fmt: skip

    def tests(self) -> list[dict]:
        """Every stored comparison (matching_tests) as dicts, newest first."""
        cur = self.con.execute(
            """SELECT model_a, layer_a, model_b, layer_b, n_triplets, error_a, error_b, d_error, d_error_ci_low,
                      d_error_ci_high, a_only, b_only, mcnemar_p, auc_a, auc_b, d_auc, d_auc_ci_low, d_auc_ci_high,
                      d_auc_p, n_boot, seed, left(manifest_sha, 12) AS manifest
               FROM matching_tests ORDER BY computed_at DESC, model_a, layer_a"""
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
