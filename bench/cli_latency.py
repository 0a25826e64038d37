"""How fast the CLI checks its arguments: each error path (and the listing commands), whole process,
as a ratio against `python -c "import duckdb"` run interleaved in the same process (target <= 2x).

Every argument a command takes is checked before torch is imported (issue 31 item 6): a missing
`--images` path, an unknown device, a missing weights file or name, an unknown model, an unknown
layer (from the cached description of the network: `embstore layers MODEL` once warms it), and
`embstore models` / `embstore layers` answer from bundled and cached descriptions.

    uv run --no-sync python bench/cli_latency.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EMBSTORE = str(Path(sys.executable).parent / "embstore")
ROOT = Path(__file__).resolve().parents[1]

CASES = {  # name -> (arguments, expected exit code)
    "missing --images path": (["ingest", "--images", "{tmp}/missing"], 2),
    "unknown --device": (["ingest", "--images", "{imgs}", "--device", "gpu"], 2),
    "missing --weights file": (["ingest", "--images", "{imgs}", "-m", "resnet18", "--weights", "{tmp}/w.pth"], 2),
    "unknown --weights name": (["ingest", "--images", "{imgs}", "-m", "resnet18", "--weights", "defualt"], 2),
    "unknown --model": (["ingest", "--images", "{imgs}", "-m", "resnt18"], 2),
    "unknown --layers (cached)": (["ingest", "--images", "{imgs}", "-m", "resnet18", "--layers", "layer9"], 2),
    "unknown --preprocessing": (["ingest", "--images", "{imgs}", "--preprocessing", "kears"], 2),
    "layers resnt50": (["layers", "resnt50"], 2),
    "layers resnet18 (cached)": (["layers", "resnet18"], 0),
    "models": (["models"], 0),
    "status --jsno": (["status", "--jsno"], 2),
}


def wall(cmd: list[str], env: dict, code: int = 0) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    took = time.perf_counter() - t
    if done.returncode != code:
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}, expected {code}: {done.stderr[-300:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    rounds = ap.parse_args().rounds
    tmp = Path(tempfile.mkdtemp(prefix="embstore-cli-latency-"))
    imgs = ROOT / "data" / "samples"
    # as users run it: compiled bytecode cached (this machine's environment turns that off)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["EMBSTORE_CACHE"] = str(tmp / "cache")
    base = [EMBSTORE, "--store", str(tmp / "store")]
    wall(base + ["layers", "resnet18"], env)  # warms the layer description (seconds: torch, one forward pass)
    baseline_cmd = [sys.executable, "-c", "import duckdb"]
    print(f"{'case':<28} {'median s':>9} {'ratio':>7}  (baseline: python -c 'import duckdb')")
    worst = 0.0
    for name, (args, code) in CASES.items():
        cmd = base + [a.format(tmp=tmp, imgs=imgs) for a in args]
        ratios, times = [], []
        for _ in range(rounds):
            b = wall(baseline_cmd, env)
            c = wall(cmd, env, code)
            ratios.append(c / b)
            times.append(c)
        ratio = statistics.median(ratios)
        worst = max(worst, ratio)
        print(f"{name:<28} {statistics.median(times):9.3f} {ratio:6.2f}x")
    print(f"worst ratio {worst:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
