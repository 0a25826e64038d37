import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embstore.store import Store

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "store", create=True)


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, so DEFAULT weights are genuinely not available."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def run_embstore(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """The installed `embstore` command in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(EMBSTORE), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=timeout)
