"""How vectors are stored in the activations table, and read back as float32.

One Arrow schema for every row: `image_id`, `batch_id`, the partition columns `model`, `weights`,
`layer`, then either `vec` (float32 list) or the compact encoding `q` (int8 list) with `q_lo` and
`q_step` (float32): per vector, x ≈ q_lo + (q + 128) · q_step, FAISS SQ8's scheme with one scale
and offset per vector. Delta Lake has no half float ("Invalid data type for Delta Lake: Float16"),
so int8 is the compact type; it stores ~0.3 × the float32 bytes and errs by at most q_step / 2.

The `activations` view decodes `q` with the same float32 arithmetic (see `SQL_DECODE`), so SQL,
the API, FAISS and the statistics all see the same FLOAT values.

>>> import numpy as np
>>> x = np.array([[0.0, 1.0, 2.5], [3.0, 3.0, 3.0]], np.float32)
>>> t = encode(["b", "a"], x, batch_id="b1", model="m", weights="w", layer="l", dtype="int8")
>>> t.column("image_id").to_pylist()  # rows sorted by image id
['a', 'b']
>>> ids, y = decode(t, 3)
>>> ids, np.abs(y - x[[1, 0]]).max() <= 2.5 / 255 / 2 + 1e-7
(['a', 'b'], np.True_)
"""

from __future__ import annotations

import numpy as np

DTYPES = ("float32", "int8")
PARTITIONS = ["model", "weights", "layer"]
# in SQL: the stored vector as FLOAT[], whichever encoding its row uses (same arithmetic as decode())
SQL_DECODE = "coalesce(vec, list_transform(q, lambda v: (v + 128)::FLOAT * q_step + q_lo))"


def schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("image_id", pa.string()),
            ("batch_id", pa.string()),
            ("model", pa.string()),
            ("weights", pa.string()),
            ("layer", pa.string()),
            ("vec", pa.list_(pa.float32())),
            ("q", pa.list_(pa.int8())),
            ("q_lo", pa.float32()),
            ("q_step", pa.float32()),
        ]
    )


def check_dtype(dtype: str) -> str:
    from embstore.errors import UsageError

    if dtype in ("float16", "half", "bfloat16"):
        raise UsageError(
            f"dtype {dtype}: Delta Lake stores no half floats; use int8 (per-vector scale and offset, "
            "~0.3 × the float32 bytes) or float32"
        )
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype '{dtype}'; choose {' or '.join(DTYPES)}")
    return dtype


def quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q int8, lo, step) per row of float32 `x`: x ≈ lo + (q + 128) * step."""
    x = np.asarray(x, np.float32)
    lo = x.min(axis=1)
    step = (x.max(axis=1) - lo) / np.float32(255)
    step[step == 0] = 1  # a constant vector: every q is -128, decoded exactly as lo
    q = np.rint((x - lo[:, None]) / step[:, None]) - 128
    return np.clip(q, -128, 127).astype(np.int8), lo, step.astype(np.float32)


def dequantize(q: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) + np.float32(128)) * step[:, None] + lo[:, None]


def encode(image_ids, matrix, *, batch_id: str, model: str, weights: str, layer: str, dtype: str):
    """Arrow table of one layer's vectors for the activations table, rows sorted by image id."""
    import pyarrow as pa

    m = np.ascontiguousarray(matrix, dtype=np.float32)
    order = np.argsort(np.asarray(image_ids, dtype=object), kind="stable")
    m = m[order]
    n, c = m.shape
    offsets = pa.array(np.arange(0, (n + 1) * c, c, dtype=np.int32))
    const = lambda v: pa.array([v] * n, pa.string())  # noqa: E731
    if dtype == "int8":
        q, lo, step = quantize(m)
        vec = pa.nulls(n, pa.list_(pa.float32()))
        qcol = pa.ListArray.from_arrays(offsets, pa.array(q.reshape(-1)))
        lo_col, step_col = pa.array(lo), pa.array(step)
    else:
        vec = pa.ListArray.from_arrays(offsets, pa.array(m.reshape(-1)))
        qcol = pa.nulls(n, pa.list_(pa.int8()))
        lo_col = step_col = pa.nulls(n, pa.float32())
    return pa.table(
        [pa.array([image_ids[i] for i in order], pa.string()), const(batch_id), const(model), const(weights),
         const(layer), vec, qcol, lo_col, step_col],
        schema=schema(),
    )  # fmt: skip


def decode(batch, width: int) -> tuple[list[str], np.ndarray]:
    """(image ids, float32 matrix n × width) of a record batch or table of the activations table."""
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else None
        if batch is None:
            return [], np.zeros((0, width), np.float32)
    n = batch.num_rows
    ids = batch.column("image_id").to_pylist()
    names = batch.schema.names
    vec = batch.column("vec")
    plain = np.asarray(vec.is_valid()) if vec.null_count else np.ones(n, bool)
    x = np.empty((n, width), np.float32)
    if plain.any():
        x[plain] = np.asarray(vec.flatten(), np.float32).reshape(-1, width)
    if not plain.all():
        if "q" not in names:
            raise ValueError("stored vectors without values: the activations table is damaged")
        q = np.asarray(batch.column("q").flatten()).reshape(-1, width)
        lo = batch.column("q_lo").to_numpy(zero_copy_only=False)[~plain]
        step = batch.column("q_step").to_numpy(zero_copy_only=False)[~plain]
        x[~plain] = dequantize(q, lo.astype(np.float32), step.astype(np.float32))
    return ids, x
