"""Where the files that travel with embstore (migrations, bundled data) live.

In a built wheel they sit inside the package (`embstore/migrations`, `embstore/data`, put there
by hatch's force-include); in a source checkout or editable install they sit at the repository
root beside the package. Both places are looked up here and nowhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder `name` ('migrations' or 'data'), wherever this install keeps it."""
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"embstore's '{name}' folder is missing from this install (looked in {_PACKAGE_DIR})")


def migrations_dir() -> Path:
    return resource_dir("migrations")


def data_dir() -> Path:
    return resource_dir("data")


def sample_images_dir() -> Path:
    """Real photos bundled with embstore for the demo and the smoke tests."""
    return data_dir() / "samples"


def cache_dir() -> Path:
    """Where embstore keeps what it measured once and may reuse (layer descriptions): $EMBSTORE_CACHE,
    else $XDG_CACHE_HOME/embstore, else ~/.cache/embstore. Deleting it loses nothing."""
    if os.environ.get("EMBSTORE_CACHE"):
        return Path(os.environ["EMBSTORE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "embstore"
