"""What a DuckDB connection opened and closed beside the forward pass costs the forward pass.

Every DuckDB database instance calls glibc's `malloc_trim(0)` when it starts (its scheduler's
threads are relaunched) and when it closes (`Allocator::FlushAll`), at most about once per 100 ms.
`malloc_trim` hands every free page of every heap arena back to the system, including the freed
tensors that `tuning.tensor_heap()` keeps in the heap for the next forward pass, which must then
fault them in again. An ingest commit opens the catalog once or twice (its connections are short so
that other processes can read), so each commit that overlaps a forward pass slows it.

This bench runs the hooked forward pass (`Extractor`, every default layer, inside the heap setting,
as ingest runs it) on one random batch, alone and with a thread that opens and closes a DuckDB file
every `--every` seconds, and prints the median seconds per batch as ratios against running alone,
rounds alternating in one process. Measured (AMD EPYC, 2 cores, densenet121, torch on 1 thread):
every 0.5 s 1.31 ×, every 0.1 s 1.57 ×; with `malloc_trim` made a no-op (LD_PRELOAD of a one-line
library) 1.01 × and 1.01 ×: the trim is the whole cost.

Since then the store keeps one DuckDB instance per catalog and process and attaches the catalog file
to it for each connection (store/attached.py). The bench times both: a plain `duckdb.connect` opened
and closed, as before, and the store's own `Store.read()`, on the same file.

  .venv/bin/python bench/duckdb_trim.py --model densenet121 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import numpy as np
import torch

WAYS = {"connect": "duckdb.connect + close", "store": "Store.read() (attach + detach)"}


def main() -> None:
    import duckdb

    from embstore.ingest import layers, models, tuning
    from embstore.ingest.extraction import Extractor
    from embstore.ingest.layersets import select

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="densenet121")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: a core left for the thread)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=4, help="forward batches per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--every", default="0.5,0.1", help="seconds between connections, comma-separated")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net, spec, _ = models.load(args.model, "none")
    net.eval()
    chosen = select(layers.discover(net, spec.name, spec.preprocessing.size), None, spec.name)
    extractor = Extractor(net, chosen, channels_last=True)
    crop = spec.preprocessing.size
    x = torch.randn(args.batch_size, 3, crop, crop)
    import embstore

    store = embstore.open(tempfile.mkdtemp(prefix="embstore-trim-"), create=True)
    path = store.core.catalog_path

    def churn(stop: threading.Event, how: str, every: float) -> None:
        while not stop.wait(every):
            if how == "connect":  # as Store._connect opened the catalog before store/attached.py
                duckdb.connect(str(path), read_only=True, config={"threads": 1}).close()
            else:
                with store.core.read() as con:
                    con.execute("SELECT count(*) FROM runs").fetchall()

    def per_batch(setting: tuple[str, float] | None) -> float:
        stop = threading.Event()
        side = threading.Thread(target=churn, args=(stop, *setting)) if setting else None
        if side:
            side.start()
        times = []
        for _ in range(args.batches):
            t = time.perf_counter()
            extractor(x)
            times.append(time.perf_counter() - t)
        stop.set()
        if side:
            side.join()
        return float(np.median(times))

    settings: list[tuple[str, float] | None] = [None] + [
        (how, float(v)) for how in ("connect", "store") for v in args.every.split(",")
    ]
    results: dict[tuple[str, float] | None, list[float]] = {s: [] for s in settings}
    with tuning.tensor_heap(), tuning.prompt_handoff():
        extractor(x)  # warm-up
        for _ in range(args.rounds):
            for s in settings:
                results[s].append(per_batch(s))
    alone = float(np.median(results[None]))
    print(f"{args.model}, batch {args.batch_size}, torch threads {args.threads}, median of {args.rounds} rounds")
    for s in settings:
        label = "alone" if s is None else f"{WAYS[s[0]]} every {s[1]} s"
        median = float(np.median(results[s]))
        print(f"  {label:48s} {median:6.3f} s per batch   {median / alone:5.2f} ×")


if __name__ == "__main__":
    main()
