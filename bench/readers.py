"""Plain DuckDB readers during an ingest: how many `duckdb.connect(..., read_only=True)` + query
tries fail, on the writer's catalog.duckdb and on the published snapshot.duckdb (target: 0 of
1000 on the snapshot). A ratio of counts in one run, not a timing.

  python bench/readers.py --tries 1000 --images 600
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tries", type=int, default=1000)
    ap.add_argument("--images", type=int, default=600)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="embstore-readers-"))
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    for i in range(args.images):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "imgs" / f"{i:05d}.png")
    store = root / "store"
    embstore = Path(sys.executable).parent / "embstore"
    base = [str(embstore), "--store", str(store), "ingest", "--model", "resnet18", "--weights", "none", "--quiet"]
    # a first small run makes both files exist; the measured run commits every 0.2 s
    subprocess.run([*base, "--images", str(root / "imgs"), "--limit", "32"], check=True)
    writer = subprocess.Popen([*base, "--images", str(root / "imgs"), "--commit-seconds", "0.2"])
    results = {"catalog.duckdb": [0, 0], "snapshot.duckdb": [0, 0]}  # [tries, failures]
    errors: dict[str, str] = {}
    seen = set()
    while writer.poll() is None and results["snapshot.duckdb"][0] < args.tries:
        for name, counts in results.items():
            counts[0] += 1
            try:
                with duckdb.connect(str(store / name), read_only=True) as con:
                    con.execute(f"SET file_search_path = '{store}'")
                    n = con.execute("SELECT count(*) FROM images").fetchall()[0][0]
                    con.execute("SELECT count(*) FROM activations").fetchall()
                    seen.add((name, n))
            except duckdb.Error as exc:
                counts[1] += 1
                errors.setdefault(name, str(exc).splitlines()[0][:160])
    writer.wait()
    assert writer.returncode == 0
    for name, (tries, failures) in results.items():
        states = len({n for f, n in seen if f == name})
        print(f"{name:16s} {failures:4d} failures in {tries} tries ({failures / tries:.1%}); {states} states seen")
        if name in errors:
            print(f"  first error: {errors[name]}")


if __name__ == "__main__":
    main()
