"""The catalog's connections: one held DuckDB instance per catalog file and process, the file
attached to it only while a connection is open.

Opening and closing a DuckDB database instance costs 20-40 ms and calls glibc's `malloc_trim(0)`
(bench/duckdb_trim.py), which hands back the freed tensors that the forward pass beside an ingest
commit reuses: 1.3-1.6 × slower batches on CPU. ATTACH and DETACH on an instance kept open cost
~2 ms and trim nothing. DuckDB takes the file's lock at ATTACH and drops it at DETACH, so other
processes see the same short lock windows as with a connection per use.

Connections are cursors of the held instance, counted: the file stays attached while any is open and
is detached when the last one is released. A read-write attachment serves read-only requests too; a
read-write request waits for read-only users of the same process to finish. Python UDFs and
filesystems are registered on the instance's own connection, which outlives every cursor (DuckDB
keeps a pointer into the connection that registered them; a closed cursor's UDF crashes the process).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from embstore.store.duck import sql_literal

ALIAS = "catalog"  # the name DuckDB gives catalog.duckdb when it opens the file itself: SQL reads the same
IDLE_KEPT = 4  # idle instances a process keeps (a test session opens hundreds of stores)


class Conflict(Exception):
    """Another user in this process holds the catalog in a mode this request cannot share."""


class Instance:
    """One in-memory DuckDB instance that attaches one catalog file while it is in use."""

    def __init__(self, path: Path, search_path: Path) -> None:
        import duckdb

        self.path = path
        self.pid = os.getpid()
        self.root = duckdb.connect(config={"threads": 1})  # catalog statements are small; cores are the network's
        # the activations view names its files relative to the store (see table.py)
        self.root.execute(f"SET GLOBAL file_search_path = {sql_literal(str(search_path))}")
        self.cond = threading.Condition()
        self.mode: str | None = None  # "ro" or "rw" while attached; "own" while a caller has the file to itself
        self.users = 0
        self.registered: set[str] = set()
        self.broken = False  # a DETACH failed: the file may still be attached, so the instance is dropped

    def connect(self, read_only: bool, timeout: float) -> Any:
        """A cursor on the attached catalog (attaching it first), or Conflict after `timeout` s."""
        wanted = "ro" if read_only else "rw"
        with self.cond:
            deadline = time.monotonic() + timeout
            while self.users and not (self.mode == wanted or (self.mode == "rw" and read_only)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Conflict(f"this process holds the catalog {'read-only' if self.mode == 'ro' else 'alone'}")
                self.cond.wait(left)
            if not self.users:
                option = " (READ_ONLY)" if read_only else ""
                self.root.execute(f"ATTACH {sql_literal(str(self.path))} AS {ALIAS}{option}")  # the lock, or raises
                self.mode = wanted
            self.users += 1
        try:
            cur = self.root.cursor()
            cur.execute(f"USE {ALIAS}")
        except BaseException:
            self.release(None)
            raise
        return cur

    def release(self, cur: Any) -> None:
        """Close `cur`; the last user's release detaches the file (DuckDB checkpoints a written one)."""
        if cur is not None:
            cur.close()
        with self.cond:
            self.users -= 1
            if self.users == 0:
                self.mode = None
                try:
                    self.root.execute(f"DETACH {ALIAS}")
                except BaseException:
                    self.broken = True
                    raise
                finally:
                    self.cond.notify_all()

    @contextlib.contextmanager
    def alone(self, timeout: float) -> Iterator[None]:
        """Keep this instance off the file while the caller opens it some other way."""
        with self.cond:
            deadline = time.monotonic() + timeout
            while self.users:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Conflict("this process holds the catalog")
                self.cond.wait(left)
            self.mode, self.users = "own", 1
        try:
            yield
        finally:
            with self.cond:
                self.mode, self.users = None, 0
                self.cond.notify_all()

    def register(self, what: str, add: Callable[[Any], None]) -> None:
        """Run `add(root connection)` once per instance (UDFs, a filesystem)."""
        with self.cond:
            if what not in self.registered:
                add(self.root)
                self.registered.add(what)

    def close(self) -> None:
        self.root.close()


_instances: OrderedDict[Path, Instance] = OrderedDict()
_guard = threading.Lock()


def instance(path: Path, search_path: Path) -> Instance:
    """The instance of this process for the catalog at `path` (made on first use)."""
    with _guard:
        inst = _instances.get(path)
        if inst is not None and inst.broken:
            with contextlib.suppress(Exception):
                inst.close()
            inst = None
        if inst is None or inst.pid != os.getpid():  # a forked child never uses its parent's instance
            inst = _instances[path] = Instance(path, search_path)
        _instances.move_to_end(path)
        idle = [p for p, i in _instances.items() if p != path and not i.users and i.pid == os.getpid()]
        for p in idle[: max(0, len(idle) - IDLE_KEPT)]:
            _instances.pop(p).close()
        return inst
