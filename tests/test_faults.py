"""Fault injection against real ingests in real processes: kill -9 at random points, readers and
writers running beside an ingest, a read-only store, a full disk.

Every check ends on the same facts: every image stored exactly once (per layer, no duplicate rows),
`verify` healthy, and what went wrong told in one line.
"""

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

import embstore
from embstore.errors import StoreError
from embstore.store.core import StoreCore

from .conftest import EMBSTORE, make_images, run_embstore, small_tmpfs, writer_lock_held_elsewhere

LAYERS = "layer1.0"  # + hidden
INGEST = ("ingest", "--model", "resnet18", "--weights", "none", "--layers", LAYERS, "--quiet")


def _popen(store: Path, images: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(EMBSTORE), "--store", str(store), *INGEST, "--images", str(images), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _snapshot_count(store: Path, sql: str = "SELECT count(*) FROM images") -> int:
    """What a plain DuckDB client sees in the published snapshot (-1 before there is one)."""
    if not (store / "snapshot.duckdb").exists():
        return -1
    with duckdb.connect(str(store / "snapshot.duckdb"), read_only=True) as con:
        con.execute(f"SET file_search_path = '{store}'")
        return con.execute(sql).fetchall()[0][0]


def _exactly_once(store: Path, n_images: int) -> None:
    """Every image stored once in every layer, nothing else, and verify healthy."""
    with duckdb.connect(str(store / "catalog.duckdb"), read_only=True) as con:
        con.execute(f"SET file_search_path = '{store}'")
        assert con.execute("SELECT count(*), count(DISTINCT image_id) FROM images").fetchall() == [(n_images, n_images)]
        per_layer = con.execute(
            "SELECT layer, count(*), count(DISTINCT image_id) FROM activations GROUP BY layer ORDER BY layer"
        ).fetchall()
        assert per_layer == [("hidden", n_images, n_images), (LAYERS, n_images, n_images)], per_layer
        assert con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchall() == [(0,)]
    res = run_embstore("--store", store, "--json", "verify")
    assert res.returncode == 0 and json.loads(res.stdout)["ok"], res.stdout + res.stderr


def _one_line(res: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    for w in words:
        assert w in res.stderr, res.stderr


@pytest.mark.slow
def test_kill_9_at_20_random_points_then_resume_stores_every_image_once(tmp_path):
    """20 SIGKILLs, each at a random moment after the run has committed again (so inside the forward
    pass, a Delta append or a catalog transaction), then one run to the end."""
    images = tmp_path / "imgs"
    n_images = 360
    make_images(images, n_images, size=32, seed=21)
    store = tmp_path / "store"
    rng = random.Random(15)
    kills, seen = [], _snapshot_count(store)
    for _ in range(20):
        proc = _popen(store, images, "--batch-size", "4", "--commit-seconds", "0")
        deadline = time.monotonic() + 120
        while proc.poll() is None and _snapshot_count(store) <= seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before its kill: {proc.stderr.read()}"
        time.sleep(rng.uniform(0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen = _snapshot_count(store)
        kills.append(seen)
        with duckdb.connect(str(store / "catalog.duckdb"), read_only=True) as con:  # what readers see now
            con.execute(f"SET file_search_path = '{store}'")
            total, distinct = con.execute(
                f"SELECT count(*), count(DISTINCT image_id) FROM activations WHERE layer = '{LAYERS}'"
            ).fetchall()[0]
            recorded = con.execute("SELECT count(DISTINCT image_id) FROM batch_images").fetchall()[0][0]
        assert total == distinct == recorded < n_images  # committed images, each once, after every kill
    assert len(kills) == 20 and 0 < kills[-1] < n_images, kills  # every kill landed mid-run
    res = run_embstore("--store", store, *INGEST, "--images", images, "--json")
    assert res.returncode == 0, res.stderr
    _exactly_once(store, n_images)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux /proc")
def test_decode_processes_die_with_a_killed_ingest_and_leave_the_lock_free(tmp_path):
    """An ingest decoding in worker processes (the CUDA default, and the CPU one where torch leaves
    cores free), killed with SIGKILL: its decode processes end with it, none keeps the store's lock
    (a flock is shared with forked children), and the resume started at once stores every image once."""
    from embstore.ingest.distributed import _alive  # running, not a zombie
    from embstore.store.locks import writer_running

    images = tmp_path / "imgs"
    n_images = 240
    make_images(images, n_images, size=32, seed=23)
    store = tmp_path / "store"
    proc = _popen(store, images, "--workers", "2", "--batch-size", "4", "--commit-seconds", "0")
    deadline = time.monotonic() + 120
    while proc.poll() is None and (len(_children(proc.pid)) < 2 or _snapshot_count(store) < 1):
        assert time.monotonic() < deadline, "no decode processes and commits within 120 s"
        time.sleep(0.02)
    workers = _children(proc.pid)
    assert proc.poll() is None and len(workers) >= 2, "the run ended before its kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 2
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(w) for w in workers), "decode processes outlived the killed ingest"
    assert not writer_running(store)
    res = run_embstore("--store", store, "--json", *INGEST, "--images", images, "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert 0 < json.loads(res.stdout)["n_done"] < n_images  # the kill landed mid-run
    _exactly_once(store, n_images)


@pytest.mark.slow
def test_readers_and_other_writers_beside_a_live_ingest(tmp_path):
    """While an ingest commits every 0.2 s: CLI readers and plain DuckDB readers never fail; a second
    ingest, a repair and an analysis are refused with one line naming the writer (exit 3); the
    ingest still stores every image once."""
    images = tmp_path / "imgs"
    n_images = 480
    make_images(images, n_images, size=32, seed=22)
    store = tmp_path / "store"
    first = run_embstore("--store", store, *INGEST, "--images", images, "--limit", "8")
    assert first.returncode == 0, first.stderr
    proc = _popen(store, images, "--batch-size", "8", "--commit-seconds", "0.2")
    deadline = time.monotonic() + 60  # the others start once it holds the writer lock
    while f"pid {proc.pid}," not in (store / "ingest.lock").read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    plain = {"reads": 0, "states": set(), "errors": []}

    def plain_reader():  # plain DuckDB, read-only, on the published snapshot, all along: never a lock
        while proc.poll() is None:
            try:
                plain["states"].add(_snapshot_count(store, "SELECT count(*) FROM activations"))
            except duckdb.Error as exc:
                plain["errors"].append(str(exc).splitlines()[0])
            plain["reads"] += 1

    thread = threading.Thread(target=plain_reader)
    thread.start()
    try:
        readers = {"status": 0, "similar": 0, "sql": 0}
        refused = set()
        while proc.poll() is None:
            if len(refused) < 3:
                for name, args in (
                    ("ingest", INGEST + ("--images", str(images))),
                    ("repair", ("verify", "--repair")),
                    ("analyze", ("analyze", "prototypes", "--layer", LAYERS)),
                ):
                    if name in refused or proc.poll() is not None:
                        continue
                    res = run_embstore("--store", store, *args)
                    if proc.poll() is None:  # the ingest was still running when it answered
                        _one_line(res, 3, "another embstore writer (pid", "`embstore ", "since 20")
                        refused.add(name)
            for name, args in (
                ("status", ("--json", "status")),
                ("similar", ("--json", "query", "similar", "knot", "--k", "3")),
                ("sql", ("--json", "sql", "SELECT count(*) AS n FROM activations")),
            ):
                res = run_embstore("--store", store, *args)
                assert res.returncode == 0, (name, res.stderr)
                json.loads(res.stdout)
                readers[name] += 1
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        thread.join()
    assert proc.returncode == 0, proc.stderr.read()
    assert plain["errors"] == [], plain["errors"][:3]
    assert refused == {"ingest", "repair", "analyze"}, refused
    assert min(readers.values()) >= 1 and plain["reads"] >= 100, (readers, plain["reads"])
    assert len(plain["states"]) >= 2, plain["states"]  # the snapshot moved while the run committed
    _exactly_once(store, n_images)
    assert _snapshot_count(store) == n_images  # and at the end it is the catalog


def test_writers_wait_for_the_writer_lock_with_wait_and_refuse_without(tmp_path):
    """`--wait SECONDS`: a writing command waits for another process's writer lock (told whom it waits
    for), runs once it is released, and gives up with one line after the time; without it, exit 3 at once."""
    store = embstore.open(tmp_path / "store", create=True)
    with writer_lock_held_elsewhere(store):  # this test process: another process to the CLI
        t = time.monotonic()
        res = run_embstore("--store", store.path, "verify", "--repair")
        _one_line(res, 3, f"another embstore writer (pid {os.getpid()},", "--wait SECONDS")
        assert time.monotonic() - t < 20, "refused at once"

        t = time.monotonic()
        res = run_embstore("--store", store.path, "verify", "--repair", "--wait", "1.5", "--quiet")
        assert time.monotonic() - t >= 1.5
        _one_line(res, 3, f"(pid {os.getpid()},", "(waited 1.5 s)")

        res = run_embstore("--store", store.path, "--wait", "-1", "verify", "--repair")
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr

    with writer_lock_held_elsewhere(store, release_after=2.0):  # it finishes while the next one waits
        res = run_embstore("--store", store.path, "verify", "--repair", env={"EMBSTORE_WAIT": "120"})
        assert res.returncode == 0, res.stderr
        assert "verify --repair`" in (store.path / "ingest.lock").read_text()  # it held the lock after the holder
        assert f"waiting up to 120 s for another embstore writer (pid {os.getpid()}," in res.stderr, res.stderr

    seen = []  # the library: the same wait, and a callback told whom it waits for
    waiting = embstore.open(store.path, wait=30, on_wait=seen.append)
    with writer_lock_held_elsewhere(store, release_after=0.5), waiting.core.writer_lock():
        assert len(seen) == 1 and f"pid {os.getpid()}," in seen[0], seen


def _read_only_mount(path: Path):
    """A context making `path` read-only: a read-only tmpfs remount when root may mount, else
    permissions for a non-root user; None when neither can be had here."""
    if os.geteuid() != 0:

        @contextlib.contextmanager
        def chmod():
            modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
            for p in modes:
                p.chmod(modes[p] & ~0o222)
            try:
                yield
            finally:
                for p, m in modes.items():
                    p.chmod(m)

        return chmod()
    probe = path.parent / "mount-probe"
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True)
    if ok.returncode != 0:
        return None
    subprocess.run(["umount", str(probe)], check=True)

    @contextlib.contextmanager
    def mounted():
        keep = path.with_name(path.name + ".src")
        path.rename(keep)
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(path)], check=True)
        try:
            shutil.copytree(keep, path, dirs_exist_ok=True, symlinks=True)
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
            path.rmdir()
            keep.rename(path)

    return mounted()


def test_a_read_only_store_moved_or_not_answers_every_read_command(tmp_path):
    """On a read-only disk: status, verify, queries (their index built in memory), sql, failures and
    the report all work; writes fail with one line naming the path."""
    images = tmp_path / "imgs"
    make_images(images / "n03627232", 4, size=48, seed=3)  # knot
    make_images(images / "n02799071", 4, size=48, seed=4)  # baseball
    for name, args in (("s", ()), ("moved", ())):
        res = run_embstore("--store", tmp_path / name, *INGEST, "--images", images, *args)
        assert res.returncode == 0, res.stderr
    shutil.move(tmp_path / "moved", tmp_path / "elsewhere")  # a store moved, then mounted read-only
    for name in ("s", "elsewhere"):
        store = tmp_path / name
        shutil.rmtree(store / "indexes")  # nothing cached: every query must build what it needs
        (store / "indexes").mkdir()
        ro = _read_only_mount(store)
        if ro is None:
            pytest.skip("cannot make a read-only store here (root without mount)")
        with ro:
            for args in (
                ("status",),
                ("verify",),
                ("query", "similar", "knot", "--k", "1"),
                ("query", "similar", "knot", "--k", "1", "--method", "tstat", "--layer", LAYERS),
                ("query", "images", str(images / "n03627232" / "img_3_0000.png"), "--k", "2"),
                ("sql", "SELECT count(*) FROM activations"),
                ("analyze", "failures"),
                ("report", "--out", str(tmp_path / f"{name}.html")),
            ):
                res = run_embstore("--store", store, *args)
                assert res.returncode == 0, (name, args, res.stderr)
            assert "baseball" in run_embstore("--store", store, "query", "similar", "knot", "--k", "1").stdout
            res = run_embstore("--store", store, *INGEST, "--images", images, "--limit", "1")
            assert res.returncode != 0 and res.stderr.count("\n") == 1 and str(store) in res.stderr, res.stderr
            assert "Traceback" not in res.stderr


class PanicException(BaseException):
    """What pyo3 raises for a panic in delta-rs: a BaseException, not an Exception."""


FAILED_APPENDS = {
    "full disk": (lambda half: OSError(errno.ENOSPC, "No space left on device", str(half)), "No space left on device"),
    "no file descriptor left (a Rust panic)": (
        lambda half: PanicException(
            'Failed to create a tokio runtime for IO.: Os { code: 24, kind: Uncategorized, message: "Too many open '
            'files" }'
        ),
        "Too many open files",
    ),
}


@pytest.mark.parametrize("failure", FAILED_APPENDS)
def test_a_failed_append_stops_the_run_with_one_line_and_loses_nothing(tmp_path, monkeypatch, failure):
    """The writer fails (ENOSPC; delta-rs's panic when no descriptor is left) on its third append after
    leaving half a file behind: the run stops with one line, the half file is gone, verify is healthy,
    and the next run completes."""
    import deltalake

    make_error, reason = FAILED_APPENDS[failure]

    images = tmp_path / "imgs"
    n_images = 40
    make_images(images, n_images, size=32, seed=23)
    store = embstore.open(tmp_path / "store", create=True)
    real = deltalake.write_deltalake
    calls = {"n": 0}
    half = store.core.activations_root / "model=resnet18" / "weights=none" / "layer=hidden" / "part-half.parquet"

    def full_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            half.parent.mkdir(parents=True, exist_ok=True)
            half.write_bytes(b"PAR1" + b"\0" * 1000)  # what a writer cut off mid-file leaves
            raise make_error(half)
        return real(*args, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", full_disk)
    with pytest.raises(StoreError) as err:
        store.ingest(images, model="resnet18", weights="none", layers=[LAYERS], batch_size=4, commit_seconds=0)
    message = str(err.value)
    assert "\n" not in message and reason in message and "run the same command again" in message, message
    assert not half.exists()
    report = store.verify()
    assert report.ok, report
    with store.core.read() as con:
        stored = con.execute("SELECT count(*) FROM images").fetchall()[0][0]
    assert stored == 8  # the two batches committed before the full disk
    monkeypatch.setattr(deltalake, "write_deltalake", real)
    result = store.ingest(images, model="resnet18", weights="none", layers=[LAYERS], batch_size=4)
    assert result.n_skipped == 8 and result.n_done == n_images - 8
    store.close()
    _exactly_once(store.path, n_images)


def _limit_open_files(soft: int, hard: int | None = None):
    import resource

    def apply():
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if hard is None else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, limit))

    return apply


def test_too_few_open_files_are_refused_in_one_line_and_a_low_soft_limit_is_raised(tmp_path):
    """Under `ulimit -n 16` DuckDB aborted the process and delta-rs panicked with a traceback: now one
    line (exit 1) before anything is made. A soft limit of 16 under a higher hard one is raised."""
    import resource

    images = tmp_path / "imgs"
    make_images(images, 6, size=32, seed=25)
    store = tmp_path / "store"
    args = [str(EMBSTORE), "--store", str(store), *INGEST, "--images", str(images)]
    res = subprocess.run(args, capture_output=True, text=True, preexec_fn=_limit_open_files(16, 16), timeout=300)
    _one_line(res, 1, "may open only 16 files at once", "ulimit -n")
    assert not store.exists()
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 64:
        pytest.skip("the hard limit here is too low to raise the soft one")
    res = subprocess.run(args, capture_output=True, text=True, preexec_fn=_limit_open_files(16), timeout=300)
    assert res.returncode == 0, res.stderr
    _exactly_once(store, 6)


def test_a_really_full_disk_is_refused_before_writing(tmp_path):
    """On a 16 MiB tmpfs (root only) the CLI says 'no space left' in one line, exit 1, leaves no data
    file, and after the disk grows the same command completes the run."""
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        images = tmp_path / "imgs"
        n_images = 60
        make_images(images, n_images, size=32, seed=24)
        store = disk / "s"
        args = ("--store", store, "ingest", "--model", "resnet18", "--weights", "none", "--layers", "all",
                "--images", images, "--batch-size", "4", "--commit-seconds", "0", "--quiet")  # fmt: skip
        res = run_embstore(*args)
        _one_line(res, 1, "no space left on device", str(store / "activations"))
        logged = {p.name for p in (store / "activations").rglob("*.parquet")}
        with duckdb.connect(str(store / "catalog.duckdb"), read_only=True) as con:
            pinned = {Path(r).name for (r,) in con.execute("SELECT rel_path FROM table_files").fetchall()}
        assert logged == pinned  # no half-written file beside the committed ones
        assert json.loads(run_embstore("--store", store, "--json", "verify").stdout)["ok"]
        subprocess.run(["mount", "-o", "remount,size=400m", str(disk)], check=True)
        res = run_embstore(*args)
        assert res.returncode == 0, res.stderr
        with duckdb.connect(str(store / "catalog.duckdb"), read_only=True) as con:
            con.execute(f"SET file_search_path = '{store}'")
            rows = con.execute("SELECT count(*), count(DISTINCT image_id || layer) FROM activations").fetchall()
            layers = con.execute("SELECT count(DISTINCT layer) FROM activations").fetchall()[0][0]
        assert rows[0][0] == rows[0][1] == n_images * layers


if __name__ == "__main__":  # pragma: no cover - run one check by hand
    sys.exit(pytest.main([__file__, "-x", "-q"]))


def _other_process_opens(path: Path, read_only: bool) -> str:
    code = (
        "import duckdb, sys\n"
        "try:\n"
        f"    duckdb.connect(sys.argv[1], read_only={read_only}).close(); print('opened')\n"
        "except duckdb.IOException as e:\n"
        "    print('locked' if 'lock' in str(e).lower() else e)\n"
    )
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True).stdout.strip()


def test_catalog_connections_hold_the_file_only_while_open_and_udfs_outlive_them(tmp_path):
    """Connections are the file attached to one DuckDB instance kept by the process (no instance
    opened and closed per connection: that trims the heap the forward pass reuses). Other
    processes see the same lock windows: locked while a connection is open, free once it ends."""
    store = embstore.open(tmp_path / "s", create=True)
    catalog = store.core.catalog_path
    with store.core.write() as con:
        assert _other_process_opens(catalog, read_only=True) == "locked"
        with store.core.read() as inner:  # this process reads through its own read-write attachment
            assert inner.execute("SELECT count(*) FROM runs").fetchall() == [(0,)]
        con.execute("SELECT 1").fetchall()
    assert _other_process_opens(catalog, read_only=False) == "opened"
    with store.core.read():
        assert _other_process_opens(catalog, read_only=False) == "locked"
        assert _other_process_opens(catalog, read_only=True) == "opened"  # readers share the file
    assert _other_process_opens(catalog, read_only=False) == "opened"
    # UDFs live on the kept instance: a cursor that registered them and closed cannot take them along
    assert store.sql("SELECT vec_norm([3, 4]::FLOAT[]) AS n").fetchall() == [(5.0,)]
    store.close()
    with store.core.read() as con:
        assert con.execute("SELECT vec_norm([6, 8]::FLOAT[])").fetchall() == [(10.0,)]
    assert store.sql("SELECT imagenet_name(616), vec_norm([0, 2]::FLOAT[])").fetchall() == [("knot", 2.0)]
    store.close()
    # a second Store object of the same path in this process shares the attachment, never a second
    # instance on the file (two instances of one process would not lock each other out)
    other = embstore.Store(StoreCore.open(tmp_path / "s", lock_timeout=0.5))
    with store.core.read(), other.core.read() as con:
        assert con.execute("SELECT count(*) FROM images").fetchall() == [(0,)]
    assert store.sql("SELECT 1").fetchall() == [(1,)]  # a kept reader
    with pytest.raises(StoreError, match="this process holds the catalog read-only"):
        with other.core.write():
            pass
    store.close()
    with other.core.write() as con:
        con.execute("SELECT 1").fetchall()
