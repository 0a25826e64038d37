"""The catalog's file format: written so that DuckDB 1.x clients open it too.

Measured: the DuckDB 1.4.4 and 1.5.6 CLIs open a STORAGE_VERSION 'v1.0.0' file written by DuckDB 2.0
(tables, FLOAT[n] arrays, macros), and writes through a plain `duckdb.connect` keep that format;
1.4.4 refuses 'v1.5.0', and both refuse 2.0's own default ('v2.0.0'). So the catalog is created in
'v1.0.0', and a catalog made by an earlier embstore in 2.0's format is rewritten once, on open.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from embstore.store.cache import atomic_path
from embstore.store.duck import sql_literal

STORAGE_VERSION = "v1.0.0"


def create(path: Path) -> None:
    """An empty catalog file at `path` in STORAGE_VERSION."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {sql_literal(str(path))} AS new_catalog (STORAGE_VERSION '{STORAGE_VERSION}')")
        con.execute("DETACH new_catalog")
    finally:
        con.close()


def is_current(con: Any) -> bool:
    """Whether the catalog open on `con` is stored in STORAGE_VERSION."""
    tags = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    return bool(tags) and (tags[0][0] or {}).get("storage_version", "").rstrip("+") == STORAGE_VERSION


def convert(path: Path, search_path: Path) -> None:
    """Rewrite the catalog at `path` in STORAGE_VERSION: copy it whole into a new file, then swap.

    Call holding the store's writer lock. Attaching the old file read-write fails while any other
    process has it open, so nobody can be reading or writing it during the copy; the rename is
    atomic, so a crash leaves either the old catalog or the new one, never a mix.
    """
    import duckdb

    # a fixed name: what a killed conversion left is removed first (DuckDB would attach it as it is)
    leftover = f".{path.name}.{STORAGE_VERSION}.tmp"
    path.with_name(leftover).unlink(missing_ok=True)
    with atomic_path(path, tmp_name=leftover) as new:
        con = duckdb.connect()
        try:
            con.execute(f"SET file_search_path = {sql_literal(str(search_path))}")  # views bind while copied
            con.execute(f"ATTACH {sql_literal(str(path))} AS old_catalog")
            con.execute(f"ATTACH {sql_literal(str(new))} AS new_catalog (STORAGE_VERSION '{STORAGE_VERSION}')")
            con.execute("COPY FROM DATABASE old_catalog TO new_catalog")
            con.execute("DETACH new_catalog")
            con.execute("DETACH old_catalog")
        finally:
            con.close()


def publish_snapshot(con: Any, path: Path, snapshot: Path) -> bool:
    """Copy the catalog at `path` to `snapshot` and swap it in atomically; False when it cannot now.

    Called on the writer's read-write connection `con`, which keeps every other process out of the
    file: a CHECKPOINT moves everything into the file itself, whose bytes are then one consistent
    state. Readers of `snapshot` never take a lock any writer waits for, and one already open keeps
    reading the version it opened (the rename leaves its file in place).
    """
    import duckdb

    try:
        con.execute("CHECKPOINT")
    except duckdb.Error:  # another transaction of this process is open: next time
        return False
    wal = path.with_name(path.name + ".wal")
    if wal.exists() and wal.stat().st_size:
        return False
    import shutil

    try:
        with atomic_path(snapshot) as tmp:
            shutil.copyfile(path, tmp)
    except OSError:  # a full or read-only disk: the previous snapshot stays
        return False
    return True


def restore(catalog: Path, snapshot: Path, quarantine: Path) -> str:
    """Replace the damaged `catalog` by `snapshot` (the damaged file and its WAL moved to
    `quarantine`; the caller holds the writer lock); what was done, in one line."""
    import shutil
    import time

    import duckdb

    from embstore.errors import CatalogDamagedError

    try:
        with duckdb.connect(str(snapshot), read_only=True) as con:
            con.execute("SELECT count(*) FROM batch_images").fetchall()
    except duckdb.Error as exc:
        first = " ".join(str(exc).split())[:200]
        raise CatalogDamagedError(
            f"the catalog {catalog} is damaged and its snapshot {snapshot} cannot replace it: {first}"
        ) from exc
    stamp = time.strftime("%Y%m%d-%H%M%S")
    quarantine.mkdir(parents=True, exist_ok=True)
    for damaged in (catalog, catalog.with_name(catalog.name + ".wal")):
        if damaged.exists():
            os.replace(damaged, quarantine / f"{damaged.name}.damaged-{stamp}")
    with atomic_path(catalog) as tmp:
        shutil.copyfile(snapshot, tmp)
    taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.stat().st_mtime))
    return (
        f"restored the damaged catalog from its snapshot of {taken} "
        f"(the damaged file is in quarantine/{catalog.name}.damaged-{stamp})"
    )
