"""Materialise class prototypes and Welch t-statistics as catalog tables (queryable in SQL).

A table's rows for (model, layer) are replaced only when the statistics' fingerprint differs
from the one recorded with them, so they are never stale and never recomputed for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embstore.analysis.classstats import class_stats
from embstore.store.duck import dict_rows

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


@dataclass
class Materialised:
    table: str
    model_key: str
    layer: str
    label_set: str
    n_classes: int
    n_images: int
    channels: int
    skipped: int  # classes left out (tstat: fewer than 2 images)
    recomputed: bool


def materialise(store: StoreCore, kind: str, model_key: str, layer: str, label_set: str = "imagenet1k") -> Materialised:
    """Write class_prototypes or class_tstats rows of `model_key`/`layer`/`label_set` if out of date.

    >>> materialise(StoreCore.open(), "tstats", "resnet50@IMAGENET1K_V2", "layer4.2").n_classes  # doctest: +SKIP
    """
    import pyarrow as pa

    table = {"prototypes": "class_prototypes", "tstats": "class_tstats"}[kind]
    stats = class_stats(store, model_key, layer, label_set=label_set)
    channels = stats.mean.shape[1] if stats.mean.size else 0
    with store.read() as con:
        recorded = ClassTables(con).computed_from(table, model_key, layer, label_set)
    keep = np.ones(len(stats.labels), bool)
    if kind == "tstats":
        t, df, keep = stats.welch_t()
    fresh = recorded != [stats.fingerprint]
    if fresh:
        rows = {
            "model_key": [model_key] * int(keep.sum()),
            "layer": [layer] * int(keep.sum()),
            "label_set": [label_set] * int(keep.sum()),
            "label_index": stats.labels[keep].astype(np.int32),
            "n": stats.n[keep].astype(np.int32),
        }
        if kind == "prototypes":
            rows["mean"] = [m.tolist() for m in stats.mean[keep]]
        else:
            rows["t"] = [v.tolist() for v in t[keep]]
            rows["df"] = pa.array([[None if np.isnan(x) else x for x in v] for v in df[keep]], pa.list_(pa.float64()))
        rows["computed_from"] = [stats.fingerprint] * int(keep.sum())
        arrow = pa.table(rows)
        with store.transaction() as con:
            ClassTables(con).replace(table, model_key, layer, label_set, arrow)
    return Materialised(
        table,
        model_key,
        layer,
        label_set,
        int(keep.sum()),
        int(stats.n[keep].sum()),
        channels,
        int((~keep).sum()),
        fresh,
    )


class ClassTables:
    """The materialised class tables (class_prototypes, class_tstats): every statement on them."""

    TABLES = ("class_prototypes", "class_tstats")

    def __init__(self, con) -> None:
        self.con = con

    def computed_from(self, table: str, model_key: str, layer: str, label_set: str) -> list[str]:
        """The fingerprints the stored rows of (model, layer, set) were computed from (one when current)."""
        return [
            r[0]
            for r in self.con.execute(
                f"""SELECT DISTINCT computed_from FROM {self._table(table)}
                    WHERE model_key = ? AND layer = ? AND label_set = ?""",
                [model_key, layer, label_set],
            ).fetchall()
        ]

    def replace(self, table: str, model_key: str, layer: str, label_set: str, rows) -> None:
        """Replace the rows of (model, layer, set) with the Arrow table `rows`; call in a transaction."""
        table = self._table(table)
        self.con.execute(
            f"DELETE FROM {table} WHERE model_key = ? AND layer = ? AND label_set = ?", [model_key, layer, label_set]
        )
        self.con.register("_rows", rows)
        try:
            cols = ", ".join(rows.column_names)
            self.con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _rows")
        finally:
            self.con.unregister("_rows")

    def overview(self) -> list[dict]:
        """What is materialised: one row per (table, model, layer) with classes, images and when."""
        return dict_rows(
            self.con.execute(
                """SELECT 'class_prototypes' AS "table", model_key, layer, label_set, count(*) AS classes,
                      sum(n) AS images, strftime(max(computed_at), '%Y-%m-%d %H:%M') AS computed
               FROM class_prototypes GROUP BY model_key, layer, label_set
               UNION ALL
               SELECT 'class_tstats', model_key, layer, label_set, count(*), sum(n),
                      strftime(max(computed_at), '%Y-%m-%d %H:%M')
               FROM class_tstats GROUP BY model_key, layer, label_set
               ORDER BY 1, 2, 3, 4"""
            )
        )

    def _table(self, table: str) -> str:
        if table not in self.TABLES:  # table names are identifiers, never user text: checked, not bound
            raise ValueError(f"not a class table: {table!r}")
        return table
