"""Files derived from stored vectors (search indexes, class statistics, classifier weights): where
they live and how they are written.

    <store>/indexes/model=M/weights=W/layer=L/<name>

Each file is written whole under a temporary name beside its target and renamed into place, so
a reader, or a process killed mid-write, never sees half a file. Derived files can always be
rebuilt from the catalog and the activation files; each records what it was computed from.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from embstore.spec import ModelKey

if TYPE_CHECKING:
    from embstore.store.core import StoreCore


def derived_path(store: StoreCore, model_key: str, layer: str, name: str) -> Path:
    """Where the derived file `name` of one model layer lives.

    >>> from types import SimpleNamespace
    >>> derived_path(SimpleNamespace(indexes_root=Path("/s/indexes")), "resnet18@none", "layer1.0", "flat.faiss")
    PosixPath('/s/indexes/model=resnet18/weights=none/layer=layer1.0/flat.faiss')
    """
    from urllib.parse import quote

    name_part, weights = astuple(ModelKey.parse(model_key))
    q = lambda v: quote(v, safe="")  # noqa: E731 - '/' in a layer name must not make a folder
    return store.indexes_root / f"model={q(name_part)}/weights={q(weights)}/layer={q(layer)}" / name


@contextlib.contextmanager
def atomic_path(path: Path, *, tmp_name: str | None = None) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; renamed onto `path` when the block
    ends well, removed when it raises (the one way embstore replaces a file). `tmp_name` fixes the
    temporary name (a writer that must find its own leftover); by default it is unique per process
    and thread, and matches no reader's pattern.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("abc")
    >>> target.read_text(), [p.name for p in target.parent.iterdir()]
    ('abc', ['x.txt'])
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(tmp_name or f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Create `path` with `write(f)` on a temporary file (flushed to disk), then rename it into place.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "sub" / "x.bin"
    >>> atomic_write(target, lambda f: f.write(b"abc")).read_bytes()
    b'abc'
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return path


def cache_write(path: Path, write: Callable[[BinaryIO], object]) -> bool:
    """`atomic_write`, for a file that can be computed again: False, with nothing left behind, when
    the store cannot take it (read-only, full, not ours), and the caller keeps it in memory."""
    try:
        atomic_write(path, write)
    except OSError:
        return False
    return True
