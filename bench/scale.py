"""How the store scales: synthetic stores of 10 k, 100 k (and 1 M) images, 1000 classes, a 2048-d and a
512-d layer, built with `embstore.testing.populate`; each measurement runs in its own process, so
its peak RSS is its own (os.wait4) and whole-process times include start-up, as a user sees them.

    python bench/scale.py --sizes 10000,100000          # ~10 min on 2 cores
    python bench/scale.py --sizes 10000,100000,1000000  # add the ImageNet-train scale (~1 h, ~25 GB disk)

Prints one row per measurement and size, and growth ratios 100k/10k and 1M/100k; ratios are the
numbers to read (these machines are noisy), seconds are for orientation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYERS = {"conv": 2048, "hidden": 512}


def child(code: str, *args: str, timeout: float = 7200) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS MiB, JSON the child printed last) of `python -c code args`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status:
        raise SystemExit(f"child failed ({status}): {code[:200]}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return wall, usage.ru_maxrss / 1024, json.loads(lines[-1]) if lines else {}


BUILD = """
import sys, json, embstore
from embstore import testing
n, dtype = int(sys.argv[2]), sys.argv[3]
store = embstore.open(sys.argv[1], create=True)
testing.populate(store, n_classes=1000, per_class=n // 1000, layers={"conv": 2048, "hidden": 512}, batch=5000,
                 keep_vectors=False, dtype=dtype, compact=True)
print(json.dumps({}))
"""

LAYOUT = """
import sys, json, embstore
store = embstore.open(sys.argv[1])
with store.core.read() as con:
    rows = con.execute('''SELECT layer, count(*), sum(n_bytes) / sum(n_rows), max(n_bytes)
                          FROM table_files GROUP BY 1 ORDER BY 1''').fetchall()
    images = con.execute("SELECT count(*) FROM images").fetchall()[0][0]
print(json.dumps({"files": {r[0]: r[1] for r in rows}, "bytes_per_vector": {r[0]: r[2] for r in rows},
                  "largest_file_mb": max(r[3] for r in rows) / 2**20,
                  "catalog_bytes_per_image": (store.core.catalog_path.stat().st_size) / images}))
"""

SIMILAR = """
import sys, json, time, embstore
store = embstore.open(sys.argv[1])
t = time.perf_counter()
store.similar_classes("tench", k=9, layer="conv", method=sys.argv[2])
print(json.dumps({"in_process_s": time.perf_counter() - t}))
"""

NUMPY_PASS = """
import sys, json, time, numpy as np, embstore
store = embstore.open(sys.argv[1])
v = store.vectors(layer="conv")
x, y = v.numpy(), v.labels
t = time.perf_counter()
order = np.argsort(y, kind="stable")
ys = y[order]
starts = np.r_[0, np.nonzero(np.diff(ys))[0] + 1]
xs = x[order].astype(np.float64)
s1 = np.add.reduceat(xs, starts, axis=0)
s2 = np.add.reduceat(xs * xs, starts, axis=0)
print(json.dumps({"numpy_pass_s": time.perf_counter() - t}))
"""

CLASS_STATS = """
import sys, json, time, embstore
from embstore.analysis.classstats import class_stats
from embstore.testing import SPEC
store = embstore.open(sys.argv[1])
t = time.perf_counter()
class_stats(store.core, SPEC.key, "conv").welch_t()
print(json.dumps({"in_process_s": time.perf_counter() - t}))
"""

IMAGES = """
import sys, json, time, numpy as np, embstore
from embstore import search
from embstore.testing import SPEC
store = embstore.open(sys.argv[1])
t = time.perf_counter()
idx = search.image_index(store.core, SPEC.key, "conv", sys.argv[2])
built = time.perf_counter() - t
q = np.stack([idx.vector(r) for r in range(0, len(idx.ids), max(1, len(idx.ids) // 100))][:100])
t = time.perf_counter()
for row in q:
    idx.search(row[None, :], 10)
per_query = (time.perf_counter() - t) / len(q)
print(json.dumps({"index_s": built, "recall_at_10": idx.recall_at_10, "per_query_ms": per_query * 1000,
                  "rebuilt": idx.rebuilt}))
"""

PLAIN_SQL = """
import sys, json, time, duckdb
con = duckdb.connect(sys.argv[1] + "/catalog.duckdb", read_only=True)
con.execute(f"SET file_search_path = '{sys.argv[1]}'")
t = time.perf_counter()
con.execute("SELECT count(*) FROM activations").fetchall()
count_s = time.perf_counter() - t
t = time.perf_counter()
con.execute('''SELECT i.label_index, avg(a.vec[1]), avg(list_sum(a.vec)) FROM activations a
               JOIN images i USING (image_id) WHERE a.layer = 'hidden' GROUP BY 1''').fetchall()
print(json.dumps({"count_s": count_s, "class_mean_s": time.perf_counter() - t}))
"""

CLI = """
import sys, json, embstore_cli.app as app
try:
    app.main(["--store", sys.argv[1], "--quiet", *sys.argv[2:]])
except SystemExit:
    pass
print(json.dumps({}))
"""


def measure(path: Path, n: int, with_int8: bool, skip: set[str]) -> dict:
    m: dict = {}
    wall, rss, _ = child(BUILD, str(path), str(n), "float32")
    m["build s"], m["build peak RSS MiB"] = wall, rss
    _, _, lay = child(LAYOUT, str(path))
    m["files per partition (conv)"] = lay["files"]["conv"]
    m["largest file MiB"] = lay["largest_file_mb"]
    m["bytes/vector conv float32"] = lay["bytes_per_vector"]["conv"]
    m["catalog bytes/image"] = lay["catalog_bytes_per_image"]
    if with_int8:
        small = path.parent / f"{path.name}-int8"
        child(BUILD, str(small), str(n), "int8")
        _, _, lay8 = child(LAYOUT, str(small))
        m["bytes/vector conv int8"] = lay8["bytes_per_vector"]["conv"]
        shutil.rmtree(small)
    for method in ("prototype", "tstat"):
        wall, rss, got = child(SIMILAR, str(path), method)
        m[f"similar {method} cold s (whole process)"], m[f"similar {method} cold RSS MiB"] = wall, rss
        wall, _, got = child(SIMILAR, str(path), method)
        m[f"similar {method} warm s (whole process)"] = wall
        m[f"similar {method} warm s (in process)"] = got["in_process_s"]
    for cache in path.rglob("classstats.npz"):
        cache.unlink()
    wall, rss, got = child(CLASS_STATS, str(path))
    m["class stats s"], m["class stats RSS MiB"] = got["in_process_s"], rss
    if "numpy" not in skip:  # loads the layer, and sorts a float64 copy: 24 GB at 1 M x 2048
        _, _, got = child(NUMPY_PASS, str(path))
        m["numpy pass s"] = got["numpy_pass_s"]
        m["class stats / numpy pass"] = m["class stats s"] / got["numpy_pass_s"]
    for kind in () if "images" in skip else ("flat", "ivf"):
        wall, rss, got = child(IMAGES, str(path), kind)
        m[f"images {kind} build s"], m[f"images {kind} build RSS MiB"] = got["index_s"], rss
        m[f"images {kind} recall@10"] = got["recall_at_10"]
        wall, rss, got = child(IMAGES, str(path), kind)
        m[f"images {kind} per query ms"] = got["per_query_ms"]
        m[f"images {kind} warm load+100 queries s (whole process)"], m[f"images {kind} warm RSS MiB"] = wall, rss
    _, _, got = child(PLAIN_SQL, str(path))
    m["plain SQL count(*) s"], m["plain SQL per-class mean s"] = got["count_s"], got["class_mean_s"]
    for cmd in (["status"], ["verify"]):
        wall, rss, _ = child(CLI, str(path), *cmd)
        m[f"{cmd[0]} s (whole process)"] = wall
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--int8", action="store_true", help="also build int8 stores (bytes per vector)")
    ap.add_argument("--skip", default="", help="comma-separated: numpy, images (for sizes above 100k)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="embstore-scale-"))
    results = {}
    try:
        for n in sizes:
            skip = set(args.skip.split(",")) if n > 100_000 else set()
            results[n] = measure(root / f"s{n}", n, args.int8 and n <= 100_000, skip)
            print(f"-- {n:,} images done", flush=True)
            shutil.rmtree(root / f"s{n}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    keys = list(next(iter(results.values())))
    head = "".join(f"{n:>14,}" for n in sizes)
    growth = [(a, b) for a, b in zip(sizes, sizes[1:])]
    print(f"{'':52}{head}" + "".join(f"{f'{b // 1000}k/{a // 1000}k':>12}" for a, b in growth))
    for k in keys:
        vals = [results[n].get(k, "-") for n in sizes]
        cells = "".join(f"{v:14.3f}" if isinstance(v, float) else f"{v!s:>14}" for v in vals)
        ratios = "".join(
            f"{results[b][k] / results[a][k]:12.2f}"
            if isinstance(results[a].get(k), (int, float)) and results[a][k] and k in results[b]
            else f"{'':12}"
            for a, b in growth
        )
        print(f"{k:52}{cells}{ratios}")


if __name__ == "__main__":
    main()
