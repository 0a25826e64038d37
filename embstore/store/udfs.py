"""Python functions registered on DuckDB connections, in one place (arrow-vectorised).

vec_norm(FLOAT[]) -> DOUBLE         L2 norm of a vector
wordnet_wup(INTEGER, INTEGER) -> DOUBLE    WordNet 3.0 Wu-Palmer similarity of two ImageNet classes
wordnet_path(INTEGER, INTEGER) -> DOUBLE   WordNet 3.0 path similarity of two ImageNet classes

Class names are SQL macros stored in the catalog (`imagenet_name(i)`, `imagenet_wnid(i)` over the
`imagenet_classes` table, migration 0005), so they work in any DuckDB client.
"""

from __future__ import annotations

import functools


def register(con) -> None:
    """Register every embstore UDF on `con` (remove-then-create, so it can be called twice)."""
    import duckdb
    import numpy as np
    import pyarrow as pa
    from duckdb.sqltypes import DOUBLE, FLOAT, INTEGER

    from embstore.labels.imagenet import classes

    wnids = np.array([c.wnid for c in classes().rows], dtype=object)

    def vec_norm(v):
        arr = v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
        lengths = arr.value_lengths().fill_null(0).to_numpy().astype(np.int64)
        sq = np.asarray(arr.flatten(), dtype=np.float64) ** 2  # flatten skips null lists
        out = np.zeros(len(arr))
        nonempty = lengths > 0
        if nonempty.any():
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[nonempty]
            out[nonempty] = np.sqrt(np.add.reduceat(sq, starts))
        return pa.array(out, pa.float64(), mask=arr.is_null().to_numpy(zero_copy_only=False))

    def wordnet(kind):
        from embstore.labels.wordnet import path_similarity, wup_similarity

        fn = functools.lru_cache(maxsize=1 << 16)(wup_similarity if kind == "wup" else path_similarity)

        def pairwise(a, b):
            out = [
                None if x is None or y is None or not (0 <= x < 1000 and 0 <= y < 1000) else fn(wnids[x], wnids[y])
                for x, y in zip(a.to_pylist(), b.to_pylist())
            ]
            return pa.array(out, pa.float64())

        return pairwise

    for name, fn, params, ret in (
        ("wordnet_wup", wordnet("wup"), [INTEGER, INTEGER], DOUBLE),
        ("wordnet_path", wordnet("path"), [INTEGER, INTEGER], DOUBLE),
        ("vec_norm", vec_norm, [duckdb.list_type(FLOAT)], DOUBLE),
    ):
        try:
            con.remove_function(name)
        except duckdb.InvalidInputException:  # not registered on this connection yet
            pass
        con.create_function(name, fn, params, ret, type="arrow", null_handling="special")
