"""What int8 storage (--dtype int8) changes against float32, on the same synthetic vectors: bytes,
the top-9 similar classes (prototype, tstat), Welch t-statistics, the 10 nearest images, and the
2 vs 2 test of seed 004 (GloVe reference).

    python bench/compact_dtype.py --classes 100 --per-class 20 --channels 512
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    import embstore
    from embstore import testing
    from embstore.analysis.classstats import class_stats

    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--channels", type=int, default=512)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="embstore-dtype-"))
    stores = {}
    for dtype in ("float32", "int8"):
        s = embstore.open(root / dtype, create=True)
        testing.populate(
            s, n_classes=args.classes, per_class=args.per_class, layers={"hidden": args.channels}, dtype=dtype
        )
        stores[dtype] = s
    f, q = stores["float32"], stores["int8"]
    size = {d: s.sql("SELECT sum(n_bytes) FROM table_files").fetchall()[0][0] for d, s in stores.items()}
    print(f"{args.classes} classes × {args.per_class} images, {args.channels}-d")
    print(f"  stored bytes int8 / float32: {size['int8'] / size['float32']:.3f}")
    vf, vq = f.vectors(layer="hidden").numpy(), q.vectors(layer="hidden").numpy()
    rel = np.abs(vq - vf).max(axis=1) / np.maximum(vf.max(axis=1) - vf.min(axis=1), 1e-12)
    print(f"  max |error| / vector range: {rel.max():.5f} (bound 1/510 = {1 / 510:.5f})")
    for method in ("prototype", "tstat"):
        same, moved = 0, 0
        for c in range(args.classes):
            a = [r.label for r in f.similar_classes(str(c), k=9, method=method, layer="hidden").rows]
            b = [r.label for r in q.similar_classes(str(c), k=9, method=method, layer="hidden").rows]
            same += len(set(a) & set(b))
            moved += a != b
        print(
            f"  top-9 similar ({method}): {same / (9 * args.classes):.4f} of neighbours kept, "
            f"order differs for {moved}/{args.classes} classes"
        )
    tf = class_stats(f, testing.SPEC.key, "hidden").welch_t()[0]
    tq = class_stats(q, testing.SPEC.key, "hidden").welch_t()[0]
    ok = np.isfinite(tf) & np.isfinite(tq)
    print(
        f"  Welch t: max |Δt| {np.abs(tf - tq)[ok].max():.4f}, median |Δt| {np.median(np.abs(tf - tq)[ok]):.5f}, "
        f"sign flips {(np.sign(tf) != np.sign(tq))[ok & (np.abs(tf) > 0.1)].sum()} of {ok.sum()}"
    )
    ids = f.vectors(layer="hidden").image_ids
    kept = []
    for image in ids[:: max(1, len(ids) // 100)]:
        a = {r.label for r in f.nearest_images(image, k=10).rows}
        b = {r.label for r in q.nearest_images(image, k=10).rows}
        kept.append(len(a & b) / 10)
    print(f"  10 nearest images kept: {np.mean(kept):.4f} (over {len(kept)} queries)")
    try:
        rf = f.rsa(reference="glove", permutations=200).rows
        rq = q.rsa(reference="glove", permutations=200).rows
        for a, b in zip(rf, rq):
            print(f"  2 vs 2 accuracy {a.layer}: float32 {a.acc_2v2:.4f}, int8 {b.acc_2v2:.4f}")
    except embstore.EmbstoreError as exc:
        print(f"  2 vs 2: not run ({exc})")
    for s in stores.values():
        s.close()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
