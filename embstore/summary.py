"""A store's contents at a glance (counts per table, per model top-1/top-5 error)."""

from __future__ import annotations


def summarise(store) -> dict:
    """Counts of images, models, vectors, runs and errors, plus one row per model.

    >>> summarise(Store.open())["images"]  # doctest: +SKIP
    4
    """
    with store.read() as con:
        one = lambda sql: con.execute(sql).fetchall()[0][0]  # noqa: E731
        out = {
            "path": str(store.path),
            "images": one("SELECT count(*) FROM images"),
            "labelled": one("SELECT count(*) FROM images WHERE label_index IS NOT NULL"),
            "models": one("SELECT count(*) FROM models"),
            "vectors": one("SELECT count(*) FROM activation_index"),
            "files": one("SELECT count(*) FROM activation_files"),
            "runs": one("SELECT count(*) FROM runs"),
            "errors": one("SELECT count(*) FROM ingest_errors"),
        }
        out["per_model"] = con.execute(
            """SELECT m.model_key,
                      (SELECT count(*) FROM layers l WHERE l.model_key = m.model_key),
                      (SELECT count(*) FROM predictions p WHERE p.model_key = m.model_key),
                      (SELECT avg((true_rank > 1)::INT) FROM predictions p WHERE p.model_key = m.model_key),
                      (SELECT avg((true_rank > 5)::INT) FROM predictions p WHERE p.model_key = m.model_key)
               FROM models m ORDER BY m.model_key"""
        ).fetchall()
    return out
