import contextlib
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import embstore

ROOT = Path(__file__).resolve().parents[1]
# layer descriptions are cached (ingest/layers.py): one cache for the session and its subprocesses,
# never the user's
os.environ.setdefault("EMBSTORE_CACHE", tempfile.mkdtemp(prefix="embstore-test-cache-"))
EMBSTORE = Path(sys.executable).parent / "embstore"


def make_images(folder: Path, n: int, *, size: int = 40, seed: int = 0, fmt: str = "png") -> list[Path]:
    """n distinct small RGB images (random blobs) in `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        p = folder / f"img_{seed}_{i:04d}.{fmt}"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


@contextlib.contextmanager
def writer_lock_held_elsewhere(store: embstore.Store, release_after: float | None = None):
    """The store's writer lock held by another thread (its own descriptor: to other threads and
    processes, another writer) for the block, or until `release_after` seconds."""
    held, release = threading.Event(), threading.Event()

    def other_writer():
        with store.core.writer_lock():
            held.set()
            release.wait(120)

    thread = threading.Thread(target=other_writer)
    thread.start()
    held.wait(60)
    if release_after is not None:
        threading.Timer(release_after, release.set).start()
    try:
        yield
    finally:
        release.set()
        thread.join()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    """A tmpfs of `size` mounted at `path` for the block (root only: the test is skipped otherwise)."""
    import shutil

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    path.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.fixture
def store(tmp_path) -> embstore.Store:
    return embstore.open(tmp_path / "store", create=True)


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, so DEFAULT weights are genuinely not available."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def run_embstore(*args, cwd=None, env=None, timeout=300, input_text=None) -> subprocess.CompletedProcess:
    """The installed `embstore` command in a subprocess (`input_text` on its stdin)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(EMBSTORE), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=full_env,
                          timeout=timeout, input=input_text)  # fmt: skip


FIGURE_CLASSES = ("knot", "chain", "baseball", "golf ball", "tennis ball", "espresso")


def blob_picture(path: Path, rng, size=(96, 80)) -> Path:
    """A small picture of coloured discs on a background, so thumbnails are easy to tell apart."""
    from PIL import ImageDraw

    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x, y = rng.integers(0, min(size), 2)
        r = int(rng.integers(5, 25))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


@pytest.fixture(scope="session")
def figure_store(tmp_path_factory):
    """A small real store with every analysis the figures draw: 6 labelled classes × 5 pictures plus the
    bundled sample photos ingested with the real EfficientNet-Lite0 weights, 8 rated triplets matched,
    class prototypes materialised and similarity encoding against GloVe."""
    from embstore.analysis.rsatables import run_rsa
    from embstore.analysis.tasks import class_tables, matching
    from embstore.ingest.run import ingest
    from embstore.resources import sample_images_dir

    root = tmp_path_factory.mktemp("figure_store")
    rng = np.random.default_rng(0)
    pictures = [blob_picture(root / "imgs" / name / f"{j}.png", rng) for name in FIGURE_CLASSES for j in range(5)]
    (root / "samples").mkdir()
    for sample in sorted(sample_images_dir().iterdir()):
        (root / "samples" / sample.name).write_bytes(sample.read_bytes())
    (root / "samples" / "broken.jpg").write_text("not a picture")  # one ingest error for the report
    store = embstore.open(root / "store", create=True)
    ingest(store.core, "efficientnet_lite0", str(root / "imgs"))
    ingest(store.core, "efficientnet_lite0", str(root / "samples"))  # unlabelled: no class folders
    rows = ["object,related,unrelated,rating_related,rating_unrelated"]
    for _ in range(8):
        o, r, u = (pictures[i] for i in rng.choice(len(pictures), 3, replace=False))
        rows.append(f"{o},{r},{u},{rng.uniform(3, 5):.2f},{rng.uniform(1, 3):.2f}")
    manifest = root / "triplets.csv"
    manifest.write_text("\n".join(rows) + "\n")
    matching(store.core, str(manifest), n_boot=200)
    class_tables(store.core, "prototypes", None, ["hidden"])
    run_rsa(store.core, None, "glove", groups=5, n_permutations=19)
    return store, manifest, pictures
