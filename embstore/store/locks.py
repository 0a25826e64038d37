"""The store's writer lock: one process writes activations at a time.

An advisory `flock` on <store>/ingest.lock holding the writer's pid. The OS drops it when its
process dies, so a killed ingest never leaves it stale. A writer refuses at once when another
process holds it, or waits up to `wait` seconds for it (told once, through `on_wait`, who it waits for).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from embstore.errors import StoreBusyError

LOCK_FILE = "ingest.lock"
_local = threading.local()  # .held: {store: depth} of the locks this thread holds (an analysis that ingests)
_descriptors: set[int] = set()  # of the locks this process holds


def _forget_in_child() -> None:
    """After a fork (decode processes): the child closes its copies of the lock's descriptors. A
    flock belongs to the open file, which a forked child shares: a child still alive after its
    parent was killed would otherwise hold the store's lock and refuse the resume."""
    for fd in _descriptors:
        with contextlib.suppress(OSError):
            os.close(fd)
    _descriptors.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


@contextlib.contextmanager
def writer_lock(store_path: Path, *, wait: float = 0.0, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock for the block, or raise StoreBusyError naming the pid that holds it (after
    waiting up to `wait` seconds for it to be released; `on_wait(holder)` is called when waiting starts).

    Re-entrant within a thread (`analyze matching --ingest-missing` holds it and ingests); another
    thread of the same process is refused like another process.
    """
    key = Path(store_path)
    _held = _local.__dict__.setdefault("held", {})
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    with _flock(key, wait, on_wait):
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]


def probe_writer(store_path: Path, *, wait: float = 0.0, on_wait: Callable[[str], None] | None = None) -> None:
    """Raise StoreBusyError as `writer_lock` would (after `wait`) if another writer holds the lock now;
    take it for an instant only, and leave the holder recorded in the lock file as it was (so that
    whoever reads it sees the real writer, not a probe)."""
    if _local.__dict__.get("held", {}).get(Path(store_path)):
        return  # this thread holds it
    with _flock(Path(store_path), wait, on_wait, record=False):
        pass


@contextlib.contextmanager
def _flock(
    store_path: Path, wait: float = 0.0, on_wait: Callable[[str], None] | None = None, *, record: bool = True
) -> Iterator[None]:
    import fcntl

    fd = os.open(store_path / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    _descriptors.add(fd)
    try:
        deadline, delay, told = time.monotonic() + max(wait, 0.0), 0.05, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            holder = os.pread(fd, 1024, 0).decode(errors="replace").strip() or "an unknown process"
            left = deadline - time.monotonic()
            if left <= 0:
                waited, hint = (
                    (f" (waited {wait:g} s)", "wait longer or stop it")
                    if wait > 0
                    else ("", "try again when it finishes, or wait for it (`wait=SECONDS`)")
                )
                raise StoreBusyError(
                    f"another embstore writer ({holder}) is writing to {store_path}{waited}; {hint}"
                ) from None
            if not told and on_wait is not None:
                on_wait(holder)
                told = True
            time.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)
        if record:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder().encode(), 0)
        yield
    finally:
        _descriptors.discard(fd)
        os.close(fd)  # closing the descriptor releases the flock


def _holder() -> str:
    """'pid N, `command`, since HH:MM:SS': who holds the lock, for the message of whoever waits."""
    import sys
    import time

    command = " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)) or "python"
    if len(command) > 120:
        command = command[:117] + "..."
    return f"pid {os.getpid()}, `{command}`, since {time.strftime('%Y-%m-%d %H:%M:%S')}"


def writer_running(store_path: Path) -> bool:
    """True when some process holds the lock right now."""
    import fcntl

    lock_path = store_path / LOCK_FILE
    if not lock_path.exists():
        return False
    try:
        fd = os.open(lock_path, os.O_RDONLY)  # a read-only store can still be asked
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
