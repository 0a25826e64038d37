"""What a commit's Parquet codec costs: resnet50-shaped vectors (17 layers of 256-2048 channels,
~80 KB an image) encoded and appended to a Delta table as ingest's commit does, with ZSTD (what
the table uses), SNAPPY and no compression, rounds alternating in one process. Prints images/s
and bytes on disk, as ratios against ZSTD.

The vectors are ReLU'd Gaussian noise (half zeros): their compressibility is not that of real
GAP vectors, so the sizes bound what a codec can save rather than measure it.

    .venv/bin/python bench/commit_codecs.py --images 2048
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTHS = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 4  # resnet50's default layers and `hidden`
CODECS = ("ZSTD", "SNAPPY", "UNCOMPRESSED")


def main() -> None:
    import pyarrow as pa
    from deltalake import ColumnProperties, WriterProperties, write_deltalake

    from embstore.store.encoding import PARTITIONS, encode
    from embstore.store.table import ROW_GROUP_ROWS

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    mats = [np.maximum(rng.standard_normal((args.images, w)), 0).astype(np.float32) for w in WIDTHS]
    ids = [f"{i:064x}" for i in range(args.images)]
    seconds: dict[str, list[float]] = {c: [] for c in CODECS}
    sizes: dict[str, int] = {}
    for _ in range(args.rounds):
        for codec in CODECS:
            props = WriterProperties(
                compression=codec,
                max_row_group_size=ROW_GROUP_ROWS,
                default_column_properties=ColumnProperties(dictionary_enabled=False),
                column_properties={"batch_id": ColumnProperties(dictionary_enabled=True)},
            )
            root = Path(tempfile.mkdtemp(prefix="embstore-codec-"))
            t = time.perf_counter()
            tables = [
                encode(ids, m, batch_id="b", model="resnet50", weights="none", layer=f"l{i}", dtype="float32")
                for i, m in enumerate(mats)
            ]
            write_deltalake(str(root), pa.concat_tables(tables), mode="append", partition_by=PARTITIONS,
                            writer_properties=props)  # fmt: skip
            seconds[codec].append(time.perf_counter() - t)
            sizes[codec] = sum(f.stat().st_size for f in root.rglob("*.parquet"))
            shutil.rmtree(root)
    base = float(np.median(seconds["ZSTD"]))
    print(f"{args.images} images x {len(WIDTHS)} layers, median of {args.rounds} rounds")
    for codec in CODECS:
        s = float(np.median(seconds[codec]))
        print(f"  {codec:13s} {args.images / s:8.0f} images/s  {base / s:5.2f} x ZSTD's speed   "
              f"{sizes[codec] / 2**20:7.1f} MiB  {sizes[codec] / sizes['ZSTD']:5.2f} x ZSTD's size")  # fmt: skip


if __name__ == "__main__":
    main()
