"""`embstore serve` at scale (issue 36): first views of each page and nearest images, warm, on synthetic
stores (`embstore.testing.populate`, 1000 classes), server-side (HTTP round trip of a page's /api answer)
and in a real headless Chromium (navigation until the page has rendered its data). Targets: a page's
first view <= 1 s warm at 1 M images; nearest images <= 100 ms warm at 100 k vectors.

    python bench/serve.py                                  # 1 M images + 100 k (≈ 10 min on 2 cores)
    python bench/serve.py --large 100000 --small 10000     # quicker

Ratios are the numbers to read (2 noisy cores): each page at the large store against the same page at
the small store, and the HTTP nearest-images answer against the library call it wraps, in this process.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import embstore

LAYERS = {"hidden": 128}
REPEAT = 9


def build(root: Path, n: int) -> embstore.Store:
    store = embstore.open(root / f"store-{n}", create=True)
    t = time.perf_counter()
    embstore.testing.populate(store, n_classes=1000, per_class=n // 1000, layers=LAYERS, keep_vectors=False,
                              batch=50_000, dtype="float32")  # fmt: skip
    print(f"  built {n:,} images in {time.perf_counter() - t:.0f} s", flush=True)
    return store


def timed_get(url: str, path: str) -> float:
    u = urllib.parse.urlsplit(url)
    con = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    t = time.perf_counter()
    con.request("GET", path)
    r = con.getresponse()
    r.read()
    elapsed = time.perf_counter() - t
    con.close()
    if r.status != 200:
        raise SystemExit(f"GET {path}: {r.status}")
    return elapsed


def pages(store: embstore.Store) -> dict[str, tuple[str, str]]:
    """{page: (page path, its /api path)}."""
    image = store.vectors(None, "hidden", labels=["knot"]).image_ids[0]
    return {
        "store": ("/", "/api/store"),
        "class knot": ("/class/knot", "/api/class/knot"),
        "image": (f"/image/{image}", f"/api/image/{image}"),
        "analyses": ("/analyses", "/api/analyses"),
        "map (classes)": ("/map", "/api/map"),
        "map (images)": ("/map?of=images", "/api/map?of=images"),
        "sql": ("/sql?q=SELECT%20count(*)%20FROM%20images", "/api/sql?q=SELECT%20count(*)%20FROM%20images"),
    }


def measure(store: embstore.Store, browser) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with store.serve(port=0) as server:
        base = server.url.rstrip("/")
        for name, (page_path, api_path) in pages(store).items():
            cold = timed_get(server.url, api_path)
            warm = statistics.median(timed_get(server.url, api_path) for _ in range(REPEAT))
            tab = browser.new_page()
            views = []
            for _ in range(3):
                t = time.perf_counter()
                tab.goto(base + page_path)
                tab.wait_for_selector("body[data-ready]", timeout=600_000)
                views.append(time.perf_counter() - t)
            tab.close()
            out[name] = {"cold": cold, "warm": warm, "browser": min(views[1:])}
        image = pages(store)["image"][1].rsplit("/", 1)[1]
        path = f"/api/image/{image}"
        nearest_http = statistics.median(timed_get(server.url, path) for _ in range(REPEAT))
        t = []
        for _ in range(REPEAT):
            s = time.perf_counter()
            store.nearest_images(image, k=10)
            t.append(time.perf_counter() - s)
        out["nearest images"] = {"warm": nearest_http, "library": statistics.median(t)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", type=int, default=1_000_000, help="images of the large store")
    ap.add_argument("--small", type=int, default=100_000, help="images of the small (baseline) store")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or sys.exit("needs Debian chromium (tests/setup-browser.sh)")
    root = Path(tempfile.mkdtemp(prefix="embstore-serve-bench-"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            results = {}
            for n in (args.small, args.large):
                print(f"{n:,} images × {LAYERS}:", flush=True)
                results[n] = measure(build(root, n), browser)
            browser.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    small, large = results[args.small], results[args.large]
    print(f"\n{'page':18s} {'images':>9s} {'cold ms':>9s} {'warm ms':>9s} {'browser ms':>11s} {'warm ×small':>12s}")
    for name in large:
        for n, r in ((args.small, small[name]), (args.large, large[name])):
            ratio = f"{r['warm'] / small[name]['warm']:.2f}" if n == args.large else ""
            print(f"{name:18s} {n:9,d} {r.get('cold', float('nan')) * 1e3:9.1f} {r['warm'] * 1e3:9.1f} "
                  f"{r.get('browser', float('nan')) * 1e3:11.1f} {ratio:>12s}")  # fmt: skip
    for n, r in ((args.small, small), (args.large, large)):
        near = r["nearest images"]
        print(f"nearest images at {n:,}: HTTP page {near['warm'] * 1e3:.1f} ms, library {near['library'] * 1e3:.1f} ms "
              f"(×{near['warm'] / near['library']:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
