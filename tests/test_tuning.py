"""The process settings of a CPU forward pass (embstore/ingest/tuning.py): counted, not timed."""

import json
import os
import platform
import resource
import subprocess
import sys
import threading

import pytest

from embstore.ingest import tuning

BLOCK = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB): mmap'd outside tensor_heap()
PAGES = BLOCK // resource.getpagesize()

# Runs in a fresh interpreter: in the suite's process earlier ingests leave free holes in the heap
# that a 64 MiB malloc reuses without faulting, whatever the setting.
MEASURE = f"""
import ctypes, json, resource, sys
from embstore.ingest import tuning

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def faults(rounds=4):
    # minor faults of `rounds` x malloc, write, free of one large block, as a tensor's storage is
    # (the first round, which may grow the heap, not counted)
    def once():
        p = libc.malloc({BLOCK})
        ctypes.memset(p, 1, {BLOCK})
        libc.free(p)
    once()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        once()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

out = {{"outside": faults()}}
with tuning.tensor_heap() as on:
    out["on"] = on
    with tuning.tensor_heap():  # nested: one setting, undone by the outermost exit only
        pass
    out["inside"] = faults()
out["after"] = faults()
with tuning.tensor_heap(enabled=False) as off:
    out["off"] = off
    out["disabled"] = faults()
if "--keep" in sys.argv:  # the setting a Ray model actor takes for its whole life
    import gc
    out["kept"] = tuning.keep_heap_for_process()
    gc.collect()
    out["kept_faults"] = faults()
if "--fork" in sys.argv:  # decode workers: processes forked inside the setting
    import os
    with tuning.tensor_heap():
        for key, init in (("inherited", None), ("decode_worker", tuning.decode_worker)):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                if init:
                    init(0)
                os.write(w, str(faults()).encode())
                os._exit(0)
            os.close(w)
            out[key] = int(os.read(r, 64))
            os.close(r)
            os.waitpid(pid, 0)
        out["parent_after_forks"] = faults()
json.dump(out, sys.stdout)
"""


def _measure(env: dict | None = None, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})  # fmt: skip
    return json.loads(done.stdout)


@pytest.mark.skipif(not tuning.heap_available(), reason="glibc only (and EMBSTORE_CPU_HEAP not 0)")
def test_tensor_heap_keeps_freed_blocks_so_reuse_does_not_fault_and_restores_the_defaults():
    got = _measure()
    assert got["on"] and not got["off"]
    assert got["outside"] >= 4 * PAGES * 0.9, got  # every round maps and faults its block in anew
    assert got["inside"] < 0.05 * got["outside"], got
    assert got["after"] >= 4 * PAGES * 0.9, got  # defaults back: blocks are mmap'd again
    assert got["disabled"] >= 4 * PAGES * 0.9, got  # enabled=False changes nothing


@pytest.mark.skipif(not tuning.heap_available(), reason="glibc only (and EMBSTORE_CPU_HEAP not 0)")
def test_keep_heap_for_process_lasts_past_garbage_collection():
    got = _measure(None, "--keep")
    assert got["kept"]
    assert got["kept_faults"] < 0.05 * got["outside"], got


@pytest.mark.skipif(not tuning.heap_available() or not hasattr(os, "fork"), reason="glibc, fork")
def test_a_decode_worker_forked_inside_the_heap_setting_gets_the_defaults_back_alone():
    """A decode process only decodes: a huge image's buffers must go back to the system, not stay."""
    got = _measure(None, "--fork")
    assert got["inherited"] < 0.05 * got["outside"], got  # what a forked child has without the fix
    assert got["decode_worker"] >= 4 * PAGES * 0.9, got  # mmap'd again: returned at each free
    assert got["parent_after_forks"] < 0.05 * got["outside"], got  # the forward pass's process keeps it


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_embstore_cpu_heap_0_turns_it_off():
    got = _measure({"EMBSTORE_CPU_HEAP": "0"})
    assert not got["on"]
    assert got["inside"] >= 4 * PAGES * 0.9, got
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBSTORE_CPU_HEAP", "0")
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


def test_prompt_handoff_lowers_the_switch_interval_inside_and_the_outermost_exit_restores_it():
    before = sys.getswitchinterval()
    with tuning.prompt_handoff():
        assert sys.getswitchinterval() == pytest.approx(min(before, tuning.FORWARD_SWITCH_INTERVAL))
        with tuning.prompt_handoff():  # nested: one setting
            pass
        assert sys.getswitchinterval() == pytest.approx(min(before, tuning.FORWARD_SWITCH_INTERVAL))
    assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError), tuning.prompt_handoff():
        raise RuntimeError("a failed run restores it too")
    assert sys.getswitchinterval() == before
