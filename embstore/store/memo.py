"""Answers computed from the catalog, remembered until the catalog changes.

The catalog's state is the size, mtime and inode of its database file and of its WAL, plus the
store's own path: every commit by any process changes it, and so does moving the store. It is
read before a value is computed, so a commit racing the computation only costs a recomputation.

In the process, the MEMO_SIZE most recently used values are kept. Values given a codec are also
written under <store>/indexes/memo/, so that a new process (a CLI query) answers a question asked
before without importing DuckDB or opening the catalog. Those files are .npz archives read with
`allow_pickle=False`: arrays and JSON only, never code. A store that cannot be written to simply
does not remember across processes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embstore.store.cache import atomic_write

MEMO_SIZE = 32


@dataclass(frozen=True)
class Codec:
    """How a value becomes {name: array or JSON-able} and back."""

    encode: Callable[[Any], dict[str, Any]]
    decode: Callable[[dict[str, Any]], Any]


JSONABLE = Codec(lambda value: {"value": value}, lambda record: record["value"])  # any JSON-able value


class Memo:
    def __init__(self, store_path: Path, catalog_path: Path, folder: Path) -> None:
        # paths, not the Store: a Store <-> Memo cycle would keep a Store's connections open until
        # the garbage collector ran
        self.store_path, self.catalog_path, self.folder = store_path, catalog_path, folder
        self._values: dict[str, tuple[list, Any]] = {}

    def state(self) -> list:
        """The catalog's state now (see the module docstring)."""
        out: list = [str(self.store_path)]
        catalog = self.catalog_path
        for path in (catalog, catalog.with_name(catalog.name + ".wal")):
            try:
                st = path.stat()
                out.append([st.st_mtime_ns, st.st_size, st.st_ino])
            except FileNotFoundError:
                out.append(None)
        return out

    def get(self, key: tuple, compute: Callable[[], Any], codec: Codec | None = None) -> Any:
        """The remembered value of `key` for the catalog's current state, else `compute()` remembered."""
        state = self.state()
        found, value = self.peek(key, state, codec)
        if found:
            return value
        value = compute()
        self.put(key, value, state, codec)
        return value

    def peek(self, key: tuple, state: list, codec: Codec | None = None) -> tuple[bool, Any]:
        name = _name(key)
        hit = self._values.pop(name, None)
        if hit is not None and hit[0] == state:
            self._values[name] = hit
            return True, hit[1]
        if codec is not None:
            record = self._read(name, key, state)
            try:
                value = codec.decode(record) if record is not None else None
            except (KeyError, ValueError, TypeError):  # written in another layout: compute again
                record = None
            if record is not None:
                self._remember(name, state, value)
                return True, value
        return False, None

    def put(self, key: tuple, value: Any, state: list, codec: Codec | None = None) -> None:
        name = _name(key)
        self._remember(name, state, value)
        if codec is not None:
            self._write(name, key, state, codec.encode(value))

    def _remember(self, name: str, state: list, value: Any) -> None:
        self._values[name] = (state, value)
        while len(self._values) > MEMO_SIZE:
            self._values.pop(next(iter(self._values)))

    def _read(self, name: str, key: tuple, state: list) -> dict[str, Any] | None:
        import numpy as np  # here, not at import: `import embstore` stays light for the CLI

        path = self.folder / f"{name}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"]))
                if meta["key"] != _jsonable(key) or meta["state"] != state:
                    return None
                return {**meta["values"], **{k: z[k] for k in z.files if k != "__meta__"}}
        except (OSError, ValueError, KeyError):  # absent, torn or from another version: compute again
            return None

    def _write(self, name: str, key: tuple, state: list, record: dict[str, Any]) -> None:
        import numpy as np

        arrays: dict[str, Any] = {k: v for k, v in record.items() if isinstance(v, np.ndarray)}
        values = {k: v for k, v in record.items() if not isinstance(v, np.ndarray)}
        meta = json.dumps({"key": _jsonable(key), "state": state, "values": values})
        try:
            atomic_write(
                self.folder / f"{name}.npz",
                lambda f: np.savez(f, __meta__=np.array(meta), **arrays),
            )
        except OSError:  # a read-only or full store: remembered in this process only
            pass


def _jsonable(key: tuple) -> Any:
    return json.loads(json.dumps(key, default=str))


def _name(key: tuple) -> str:
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:24]
