"""The process settings of a CPU forward pass (embstore/ingest/tuning.py): counted, not timed."""

import ctypes
import os
import platform
import resource
import threading

import pytest

from embstore.ingest import tuning

BLOCK = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB): mmap'd outside tensor_heap()
PAGES = BLOCK // resource.getpagesize()


def _faults_of_reuse(rounds: int = 4) -> int:
    """Minor page faults of `rounds` times malloc, write and free of the same large block, as a
    tensor's storage is (the first round, which grows the heap, not counted). Plain malloc: what
    the setting governs, without a library's own allocation policy on top."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def once():
        p = libc.malloc(BLOCK)
        ctypes.memset(p, 1, BLOCK)
        libc.free(p)

    once()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        once()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not tuning.heap_available(), reason="glibc only (and EMBSTORE_CPU_HEAP not 0)")
def test_tensor_heap_keeps_freed_blocks_so_reuse_does_not_fault_and_restores_the_defaults():
    outside = _faults_of_reuse()
    assert outside >= 4 * PAGES * 0.9, outside  # every round maps and faults its block in anew
    with tuning.tensor_heap() as on:
        assert on
        with tuning.tensor_heap():  # nested: one setting, undone by the outermost exit only
            pass
        inside = _faults_of_reuse()
    assert inside < 0.05 * outside, (inside, outside)
    after = _faults_of_reuse()
    assert after >= 4 * PAGES * 0.9, after  # defaults back: blocks are mmap'd again


def test_tensor_heap_off_and_unavailable_change_nothing(monkeypatch):
    with tuning.tensor_heap(enabled=False) as on:
        assert not on
        if platform.libc_ver()[0] == "glibc":
            assert _faults_of_reuse(2) >= 2 * PAGES * 0.9
    monkeypatch.setenv("EMBSTORE_CPU_HEAP", "0")
    assert not tuning.heap_available()
    with tuning.tensor_heap() as on:
        assert not on


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX priorities")
def test_background_lowers_only_the_calling_thread():
    seen = {}

    def work():
        tuning.background()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["nice"] == tuning.BACKGROUND_NICE
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < tuning.BACKGROUND_NICE
