"""`embstore report` on a 50k-image store. Target: under a minute.

The store: 50,000 real JPEG pictures (500 classes × 100), with vectors for EfficientNet-Lite0's 18
default layers (16…1280 channels; `--layers small`: 5 layers) written through the real commit
path (`synthetic.populate`, 500 images per file; `--per-file 32` is what ingest's default batch
size writes), 5 %
misclassified, 1,000 ingest errors, 400 rated triplets matched on every layer, prototypes of
'hidden' materialised and similarity encoding against GloVe (100 permutations).

Timed, alternating: a cold report (thumbnail cache and per-class statistics caches deleted first)
and a warm one (both cached). Baseline, in the same process: one plain pass reading every stored
vector of the store from its Parquet files (what any analysis of the whole store costs at least).

    .venv/bin/python bench/report_build.py --classes 500 --per-class 100
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from embstore import testing as synthetic
from embstore.analysis.rsatables import run_rsa
from embstore.analysis.tasks import class_tables, matching
from embstore.report.html import build_report
from embstore.store.catalog import Catalog
from embstore.store.core import StoreCore
from embstore.store.table import ActivationTable

# EfficientNet-Lite0's default layer set, as `embstore ingest` stores it (4,368 floats per image)
LITE0 = {
    "blocks.0.0": 16,
    "blocks.1.0": 24,
    "blocks.1.1": 24,
    "blocks.2.0": 40,
    "blocks.2.1": 40,
    "blocks.3.0": 80,
    "blocks.3.1": 80,
    "blocks.3.2": 80,
    "blocks.4.0": 112,
    "blocks.4.1": 112,
    "blocks.4.2": 112,
    "blocks.5.0": 192,
    "blocks.5.1": 192,
    "blocks.5.2": 192,
    "blocks.5.3": 192,
    "blocks.6.0": 320,
    "bn2": 1280,
    "hidden": 1280,
}
SMALL = {"conv_a": 64, "conv_b": 128, "conv_c": 256, "conv_d": 512, "hidden": 1024}
LAYERS = LITE0


def pictures(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        im = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(im)
        for x, y, r, c in zip(
            rng.integers(0, 64, 3), rng.integers(0, 64, 3), rng.integers(4, 20, 3), rng.integers(0, 255, (3, 3))
        ):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in c))
        p = folder / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        p.parent.mkdir(exist_ok=True)
        im.save(p, quality=90)
        out.append(p)
    return out


def build(root: Path, n_classes: int, per_class: int, per_file: int) -> StoreCore:
    t = time.perf_counter()
    n = n_classes * per_class
    files = pictures(root / "imgs", n)
    rng = np.random.default_rng(1)
    wrong = {
        int(r): int((r // per_class + 1 + rng.integers(0, n_classes - 1)) % n_classes)
        for r in rng.choice(n, n // 20, replace=False)
    }
    store = StoreCore.open(root / "store", create=True)
    synthetic.populate(
        store, n_classes=n_classes, per_class=per_class, layers=LAYERS, batch=per_file, predicted=wrong, paths=files
    )
    with store.transaction() as con:
        Catalog(con).insert_errors(
            "synthetic-0",
            [
                (
                    f"/data/broken/{i}.jpg",
                    f"corrupt or truncated image: {['broken data stream', 'image file is truncated'][i % 2]}",
                )
                for i in range(1000)
            ],
        )
    rows = ["object,related,unrelated,rating_related,rating_unrelated"]
    for _ in range(400):
        c, other = rng.choice(n_classes, 2, replace=False)
        o, r = rng.choice(per_class, 2, replace=False)
        u = rng.integers(per_class)
        rows.append(
            f"{files[c * per_class + o]},{files[c * per_class + r]},{files[other * per_class + u]},"
            f"{rng.uniform(3, 5):.2f},{rng.uniform(1, 3):.2f}"
        )
    (root / "triplets.csv").write_text("\n".join(rows) + "\n")
    matching(store, str(root / "triplets.csv"))
    class_tables(store, "prototypes", None, ["hidden"])
    run_rsa(store, None, "glove", groups=5, n_permutations=100)
    print(
        f"store built in {time.perf_counter() - t:.0f} s: {n:,} images, {len(LAYERS)} layers, "
        f"{-(-n // per_file) * len(LAYERS):,} Parquet files"
    )
    return store


def read_everything(store) -> float:
    t = time.perf_counter()
    files = ActivationTable(store)
    for layer in LAYERS:
        files.read_layer(synthetic.SPEC.key, layer)
    return time.perf_counter() - t


def drop_caches(store) -> None:
    shutil.rmtree(store.path / "thumbnails", ignore_errors=True)
    for cache in store.indexes_root.rglob("classstats.npz"):
        cache.unlink()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=500)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--layers", choices=("lite0", "small"), default="lite0")
    ap.add_argument("--per-file", type=int, default=500, help="images per Parquet file (ingest: --batch-size)")
    args = ap.parse_args()
    global LAYERS
    LAYERS = LITE0 if args.layers == "lite0" else SMALL
    root = Path(tempfile.mkdtemp(prefix="embstore-rbench-"))
    store = build(root, args.classes, args.per_class, args.per_file)
    cold, warm, base, thumbs = [], [], [], []
    for i in range(args.rounds):
        base.append(read_everything(store))
        drop_caches(store)
        r = build_report(store, root / f"cold{i}.html", cls="tench")
        cold.append(r.seconds)
        thumbs.append(len(list((store.path / "thumbnails").rglob("*.jpg"))))
        made = {p: p.stat().st_mtime_ns for p in (store.path / "thumbnails").rglob("*.jpg")}
        w = build_report(store, root / f"warm{i}.html", cls="tench")
        warm.append(w.seconds)
        remade = sum(p.stat().st_mtime_ns != m for p, m in made.items())
        print(
            f"round {i}: read every vector {base[-1]:.2f} s | report cold {r.seconds:.2f} s "
            f"({thumbs[-1]} thumbnails made, {len(r.figures)} figures, {r.n_bytes / 1e6:.1f} MB) | "
            f"warm {w.seconds:.2f} s ({remade} thumbnails remade) | skipped: {sorted(r.skipped) or 'none'}"
        )
    c, w, b = np.median(cold), np.median(warm), np.median(base)
    print(
        f"\nmedian: cold report {c:.2f} s = {c / b:.2f}x one read of every vector ({b:.2f} s); "
        f"warm {w:.2f} s = {w / b:.2f}x; warm/cold {w / c:.2f}"
    )
    print(f"target: < 60 s for {args.classes * args.per_class:,} images -> {'met' if c < 60 else 'MISSED'}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
