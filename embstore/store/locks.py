"""The store's writer lock: one process writes activations at a time.

An advisory `flock` on <store>/ingest.lock holding the writer's pid. The OS drops it when its
process dies, so a killed ingest never leaves it stale.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from embstore.errors import StoreBusyError

LOCK_FILE = "ingest.lock"


@contextlib.contextmanager
def writer_lock(store_path: Path) -> Iterator[None]:
    """Hold the lock for the block, or raise StoreBusyError naming the pid that holds it."""
    import fcntl

    fd = os.open(store_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise StoreBusyError(
                f"another ingest (pid {holder}) is writing to {store_path}; wait for it or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def writer_running(store_path: Path) -> bool:
    """True when some process holds the lock right now."""
    import fcntl

    lock_path = store_path / LOCK_FILE
    if not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
