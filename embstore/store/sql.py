"""Ad-hoc SQL over a store's catalog, with every view and embstore UDF available."""

from __future__ import annotations

import json

from embstore.errors import UsageError


def run_sql(store, query: str, *, write: bool = False) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of `query`; read-only unless `write`.

    >>> import embstore, tempfile
    >>> run_sql(embstore.open(tempfile.mkdtemp(), create=True), "SELECT imagenet_name(616) AS name")
    (['name'], [('knot',)])
    """
    import duckdb

    from embstore.store.udfs import register

    with store.write() if write else store.read() as con:
        register(con)
        try:
            cur = con.execute(query)
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            hint = (
                " (the store is opened read-only; pass write=True / --write to change it)"
                if "read-only" in first
                else ""
            )
            raise UsageError(f"SQL error: {first}{hint}") from None
        if cur.description is None:
            return [], []
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
        # JSON columns (runs.config, images.extra) come back decoded, not as JSON text to decode again
        as_json = [i for i, d in enumerate(cur.description) if d[1] == "JSON"]
        if as_json:
            rows = [
                tuple(json.loads(v) if i in as_json and v is not None else v for i, v in enumerate(r)) for r in rows
            ]
        return columns, rows
