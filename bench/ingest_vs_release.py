"""Whole ingest of this tree against an earlier release's, alternating in one bench run.

Each side runs in its own subprocess over the same JPEGs (this venv, the side's source tree on
PYTHONPATH; the earlier release is checked out with `git worktree`): a full ingest and a one-batch
ingest into fresh stores, so the marginal rate (images beyond one batch / time beyond the one-batch
run) leaves out the fixed costs (imports, model load, layer discovery, compaction). Rounds
alternate the sides so that machine noise hits both alike. Ratio = this tree / the release.

`--layers` is what this tree ingests (default: the release's default set, `blocks` here); with
`--also relu` this tree also ingests that set each round, reported against its own blocks rate.

    .venv/bin/python bench/ingest_vs_release.py --release 5a3b3fd --model efficientnet_lite0 --images 256
    .venv/bin/python bench/ingest_vs_release.py --release 5a3b3fd --model resnet50 --images 128 --also relu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNNER = """
import json, sys, time
from embstore.store.core import StoreCore
from embstore.ingest.run import ingest
store, model, images, weights, batch, layers, limit = sys.argv[1:8]
r = ingest(StoreCore.open(store, create=True), model, images, weights=weights, batch_size=int(batch), layers=layers,
           limit=int(limit) if limit != "0" else None)
print(json.dumps({"n": r.n_done, "s": r.seconds, "layers": len(r.layers)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", default="5a3b3fd", help="git revision of the earlier release")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default=None, help="default: DEFAULT for efficientnet_lite*, else none")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", default="default")
    ap.add_argument("--also", default=None, help="another layer set this tree ingests each round (e.g. relu)")
    args = ap.parse_args()
    weights = args.weights or ("DEFAULT" if args.model.startswith("efficientnet_lite") else "none")
    sys.path.insert(0, str(ROOT / "bench"))
    from ingest_throughput import make_photos

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        release = tmp / "release"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(release), args.release],
                       check=True, capture_output=True)  # fmt: skip
        try:
            make_photos(tmp / "photos", args.images)
            sides = [("release " + args.release, release, "default"), ("this tree", ROOT, args.layers)]
            if args.also:
                sides.append((f"this tree, {args.also}", ROOT, args.also))
            rates: dict[str, list[float]] = {label: [] for label, _, _ in sides}
            widths: dict[str, int] = {}
            for k in range(args.rounds):
                for label, root, layers in sides:
                    full = _run(root, tmp / f"s{k}{len(rates[label])}{label[:4]}", tmp / "photos", args, weights,
                                layers, 0)  # fmt: skip
                    one = _run(root, tmp / f"o{k}{len(rates[label])}{label[:4]}", tmp / "photos", args, weights,
                               layers, args.batch_size)  # fmt: skip
                    rates[label].append((full["n"] - one["n"]) / (full["s"] - one["s"]))
                    widths[label] = full["layers"]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(release)], check=False)
    print(f"model {args.model}@{weights}, {args.images} images, batch {args.batch_size}, {args.rounds} alternating "
          f"rounds, {os.cpu_count()} cores; marginal images/s (beyond a one-batch run)")  # fmt: skip
    for label, values in rates.items():
        print(f"  {label:24}: {np.median(values):7.2f} images/s median {[round(v, 2) for v in values]}"
              f"  ({widths[label]} layers)")  # fmt: skip
    base = rates[sides[0][0]]
    ratio = [a / b for a, b in zip(rates["this tree"], base)]
    print(
        f"ratio this tree / release  : {np.median(ratio):.3f} median of {[round(v, 3) for v in ratio]}  "
        "(target >= 0.97)"
    )
    if args.also:
        extra = [a / b for a, b in zip(rates[sides[2][0]], rates["this tree"])]
        print(f"ratio {args.also} / {args.layers:14}: {np.median(extra):.3f} median of {[round(v, 3) for v in extra]}")


def _run(root: Path, store: Path, images: Path, args, weights: str, layers: str, limit: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, str(store), args.model, str(images), weights, str(args.batch_size), layers,
         str(limit)],
        check=True, capture_output=True, text=True, env=env, cwd=root,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
