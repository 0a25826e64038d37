import base64
import io
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

import embstore
from embstore.report.html import build_report
from embstore.store.sql import run_sql

from .browser import dump_dom, screenshot
from .conftest import run_embstore

SECTIONS = [
    "Store",
    "Models",
    "Layers",
    "Runs",
    "Ingest errors",
    "Triplet matching",
    "Classification failures",
    "Class statistics and similar classes",
    "Similarity encoding",
    "Comparisons",
    "Replications",
]


def _embedded_pngs(text: str) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB"))
        for b in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    ]


def _find(shot: np.ndarray, figure: np.ndarray) -> tuple[int, int] | None:
    """Top-left corner where `figure` appears pixel for pixel in `shot` (drawn at its natural size)."""
    h, w, _ = figure.shape
    colourful = max(range(h), key=lambda r: len(np.unique(figure[r].reshape(-1, 3), axis=0)))
    needle = figure[colourful].tobytes()
    for y in range(colourful, shot.shape[0] - (h - colourful) + 1):
        start = 0
        row = shot[y].tobytes()
        while (x := row.find(needle, start)) >= 0:
            if x % 3 == 0:
                top, left = y - colourful, x // 3
                block = shot[top : top + h, left : left + w].astype(np.int16)
                if block.shape == figure.shape and np.abs(block - figure).mean() < 1.0:
                    return top, left
            start = x + 1
    return None


def test_report_is_self_contained_and_every_figure_shows_in_chromium(figure_store, tmp_path):
    store, _, _ = figure_store
    report = build_report(store.core, tmp_path / "report.html", cls="knot")
    text = report.path.read_text()
    assert report.sections == SECTIONS and not report.skipped
    with_1v2 = run_sql(store.core, "SELECT count(*) FROM rsa_results WHERE acc_1v2 IS NOT NULL")[1][0][0] > 0
    assert {f.split("-")[0] for f in report.figures} == {"predictions", "matching", "failures", "similar", "rsa"}
    assert len(report.figures) == 8 + with_1v2  # predictions, 4 matching, failures, similar, 2v2 [+ 1v2]
    # self-contained: nothing is fetched from anywhere else
    assert len(re.findall(r"(?:src|href)=", text)) == len(re.findall(r"""(?:src|href)=['"](?:data:|#)""", text))
    assert "<script" not in text and "<link" not in text and "url(" not in text
    for needle in (
        "efficientnet_lite0@tf-lite0",
        "blocks.6.0",
        "not an image",
        "broken.jpg",
        "glove-6B-50d",
        "class_prototypes",
    ):
        assert needle in text, needle
    pngs = _embedded_pngs(text)
    assert len(pngs) == len(report.figures)

    dom = dump_dom(report.path)
    assert dom.count("<section") == len(SECTIONS) and dom.count("<img") == len(report.figures)
    height = sum(p.shape[0] for p in pngs) + 5000
    shot_path = screenshot(report.path, tmp_path / "report.png", width=1800, height=height)
    shutil.copy(shot_path, tmp_path.parent / "report-screenshot.png")  # kept for a person to look at
    shot = np.asarray(Image.open(shot_path).convert("RGB"))
    assert shot.std() > 30
    assert (shot[:40] == (0x23, 0x31, 0x3F)).all(axis=2).mean() > 0.5  # the header bar is drawn
    places = [_find(shot, png) for png in pngs]
    missing = [name for name, at in zip(report.figures, places) if at is None]
    assert not missing, f"figures not visible in the screenshot: {missing}"
    assert [top for top, _ in places] == sorted(top for top, _ in places)  # in document order


def test_report_of_an_empty_store_explains_what_to_run(tmp_path):
    store = embstore.open(tmp_path / "empty", create=True)
    report = build_report(store.core, tmp_path / "empty.html")
    text = report.path.read_text()
    assert report.figures == [] and report.sections == SECTIONS
    assert "embstore analyze matching" in text and "embstore analyze rsa" in text and "embstore ingest" in text
    assert "embstore analyze compare MODEL:LAYER MODEL:LAYER --vectors glove" in text
    assert "No paper replicated yet; run `embstore replicate seed000|seed003|seed004`." in text
    shot = np.asarray(Image.open(screenshot(report.path, tmp_path / "empty.png", width=1200, height=900)))
    assert shot.std() > 10 and len(np.unique(shot.reshape(-1, shot.shape[2]), axis=0)) > 50  # text and boxes


def test_report_command_and_thumbnail_cache(figure_store, tmp_path):
    store, _, _ = figure_store
    out = tmp_path / "r.html"
    done = run_embstore("--store", store.path, "report", "--out", out, "--class", "baseball")
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout and " figures, " in done.stdout and "not drawn" not in done.stdout
    cached = sorted((store.path / "thumbnails").rglob("*.jpg"))
    assert cached
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    again = run_embstore("--store", store.path, "report", "--out", out, "--class", "baseball")
    assert again.returncode == 0
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps  # thumbnails reused, not remade
    bad = run_embstore("--store", store.path, "report", "--out", tmp_path)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        f"embstore: error: out={tmp_path} is a folder; give a file name such as {tmp_path / 'report.html'}"
    ]
    unknown = run_embstore("--store", store.path, "report", "--out", out, "--class", "knott")
    assert unknown.returncode != 0 and "unknown ImageNet class 'knott'" in unknown.stderr


def test_report_and_plots_do_not_import_torch(figure_store, tmp_path):
    store, _, _ = figure_store
    code = (
        "import sys; from embstore_cli.app import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "sys.stderr.write('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    for args in (["report", "--out", str(tmp_path / "r.html")], ["plot", "failures", "--out", str(tmp_path / "f")]):
        res = subprocess.run(
            [sys.executable, "-c", code, "--store", str(store.path), *args], capture_output=True, text=True
        )
        assert res.stderr.endswith("NO-TORCH"), res.stderr[-500:]
