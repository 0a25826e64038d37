"""Process settings that make a CPU forward pass fast beside the work that feeds it.

*A heap for tensors.* glibc serves every block above its mmap threshold (128 KiB, growing to at
most 32 MiB) with a fresh `mmap` and returns it with `munmap` on free, so each activation tensor
of a CNN batch is page-faulted in anew on every forward pass: on this project's 2-core machine
8 M minor faults for 12 batches of efficientnet_lite0, 40 % of the wall time spent in the kernel.
Inside `tensor_heap()` glibc takes every block from its heap and keeps freed memory there
(M_MMAP_MAX 0, M_TRIM_THRESHOLD high); measured per batch of 32: lite0 0.81 → 0.33 s, resnet50
1.99 → 1.14 s, densenet121 1.88 → 1.06 s. The process keeps its peak heap while inside; on the way
out the defaults come back and the free top of the heap is returned (`malloc_trim`). Elsewhere
than glibc, or with EMBSTORE_CPU_HEAP=0, nothing changes.

*Background threads yield.* Decoding and committing run beside torch's intra-op threads. On a
machine with no core to spare a thread that preempts one of them stalls the whole parallel region
at its barrier, so these threads run at the lowest priority (`background()`): they take the cores
when torch leaves them idle and wait otherwise.

*The forward thread gets the interpreter back promptly.* A forward pass is a chain of Python
module calls around kernels that release the interpreter lock. While another thread of the
process runs Python (a commit, a decoding thread, a GPU's page-locking thread), the forward
thread waits at each call until that thread hands the lock back, by default after up to 5 ms
(`sys.getswitchinterval()`); resnet50 makes ~170 such calls a batch. Inside `prompt_handoff()`
the interval is 0.5 ms. Measured on 2 cores, torch on one, decoding in a process, commits in a
thread (bench/ingest_throughput.py --threads 1): resnet50's forward passes over 256 images
16.00 → 14.38 s, ingest 0.902 → 0.960 × its own hooked forward pass alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
import threading

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
KEEP = 2**31 - 1  # bytes of free heap top kept (mallopt takes an int): never trimmed while inside
BACKGROUND_NICE = 19

_lock = threading.Lock()
_depth = 0
PR_SET_PDEATHSIG = 1
FORWARD_SWITCH_INTERVAL = 0.0005  # s: the interpreter's switch interval during forward passes
_handoff_depth = 0
_handoff_saved = 0.005


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist
    except (OSError, AttributeError):
        return None
    return libc


def heap_available() -> bool:
    """Whether `tensor_heap()` changes anything here (glibc, not turned off by EMBSTORE_CPU_HEAP=0)."""
    return os.environ.get("EMBSTORE_CPU_HEAP", "1") != "0" and _libc() is not None


def _enter(libc) -> None:
    global _depth
    with _lock:
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP)
        _depth += 1


def _exit(libc) -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth == 0:
            _defaults(libc)
            libc.malloc_trim(0)


def _defaults(libc) -> None:
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)


@contextlib.contextmanager
def tensor_heap(enabled: bool = True):
    """Keep freed large blocks in glibc's heap while inside (nested uses share one setting); yields
    whether the setting is on."""
    libc = _libc() if enabled and heap_available() else None
    if libc is None:
        yield False
        return
    _enter(libc)
    try:
        yield True
    finally:
        _exit(libc)


@contextlib.contextmanager
def outside_heap():
    """Inside `tensor_heap()`: large blocks mmap'd again while inside, so what a phase of image
    decoding frees (a huge photo's full-size buffer) goes back to the system at once instead of
    staying in the heap; the forward pass's freed memory stays where it is."""
    libc = _libc() if _depth else None
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    try:
        yield
    finally:
        if _depth:
            libc.mallopt(M_MMAP_MAX, 0)


def keep_heap_for_process() -> bool:
    """`tensor_heap()` for the rest of a process that only computes (a Ray model actor); returns
    whether the setting is on. (Not a context manager left open: a suspended generator that is
    garbage-collected runs its `finally`, which undid the setting at once.)"""
    libc = _libc() if heap_available() else None
    if libc is None:
        return False
    _enter(libc)
    return True


def leave_heap() -> None:
    """In a process forked inside `tensor_heap()`: glibc's defaults back for this process alone (a
    decode worker, whose huge-image buffers must go back to the system, not stay in its heap).
    Takes no lock: one held by another thread at the fork would never be released here."""
    global _depth
    libc = _libc() if _depth else None
    if libc is None:
        return
    _depth = 0
    _defaults(libc)


def decode_worker(*_args, parent: int | None = None) -> None:
    """`worker_init_fn` of a decode process forked by `parent`: the lowest priority, glibc's
    defaults, and killed when its parent dies (a decode process must not outlive a killed ingest)."""
    background()
    leave_heap()
    if parent is not None:
        die_with(parent)


def die_with(parent: int) -> None:
    """Linux: this process gets SIGKILL when `parent` (the process that forked it) ends; if it has
    ended already, this process ends now."""
    import signal

    if platform.system() == "Linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before the line above: nobody is left to read
        os._exit(0)


@contextlib.contextmanager
def prompt_handoff(interval: float = FORWARD_SWITCH_INTERVAL):
    """The interpreter's switch interval at most `interval` while inside (nested and concurrent uses
    share one setting; the outermost exit restores what was there)."""
    global _handoff_depth, _handoff_saved
    with _lock:
        if _handoff_depth == 0:
            _handoff_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_handoff_saved, interval))
        _handoff_depth += 1
    try:
        yield
    finally:
        with _lock:
            _handoff_depth -= 1
            if _handoff_depth == 0:
                sys.setswitchinterval(_handoff_saved)


def prompt_handoff_for_process(interval: float = FORWARD_SWITCH_INTERVAL) -> None:
    """`prompt_handoff()` for the rest of a process that only computes (a Ray model actor)."""
    sys.setswitchinterval(min(sys.getswitchinterval(), interval))


def background(*_args) -> None:
    """Lower the calling thread (or worker process) to the lowest CPU priority. Its arguments are
    ignored, so it serves as a thread-pool initializer and a DataLoader `worker_init_fn`."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: run as is
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
