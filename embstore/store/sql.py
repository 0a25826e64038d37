"""Ad-hoc SQL over a store's catalog, with every view and embstore UDF available.

`run_sql` (what `embstore sql` and `embstore shell` run) is sandboxed: DuckDB's external access is
off, the only files it may open are the data files the `activations` view names plus the folders
the caller allows, and the configuration is locked so no statement can widen that. Read-only, it
also refuses statements that write files or reach outside the catalog (COPY, EXPORT, ATTACH, …).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from embstore.errors import UsageError
from embstore.results import SqlResult

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

# statements a read-only `embstore sql` refuses before DuckDB sees them (they write files, attach
# other databases or install code); every other statement is still confined by the sandbox
WRITING = {"COPY", "COPY_DATABASE", "EXPORT", "ATTACH", "DETACH", "LOAD", "UPDATE_EXTENSIONS"}


def sandbox(con, files: Sequence[str], allow: Sequence[Path] = ()) -> None:
    """Confine `con` to `files` (read) and the `allow` folders (read and write), then lock it."""
    paths = sorted(set(files))
    con.execute("SET allowed_paths = ?", [paths])
    con.execute("SET allowed_directories = ?", [[str(Path(d).resolve()) + "/" for d in allow]])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")


def run_sql(store: StoreCore, query: str, *, write: bool = False, allow: Sequence[str | Path] = ()) -> SqlResult:
    """(column names, rows) of `query`; read-only unless `write`; files only in the store and `allow`.

    >>> import embstore, tempfile
    >>> run_sql(embstore.open(tempfile.mkdtemp(), create=True).core, "SELECT imagenet_name(616) AS name")
    SqlResult(columns=['name'], rows=[('knot',)])
    """
    import duckdb

    from embstore.store.udfs import register

    folders = [Path(d).expanduser().resolve() for d in allow]
    for d in folders:
        if write and not d.exists():
            d.mkdir(parents=True)  # a folder to write results into
        if not d.is_dir():
            raise UsageError(f"--allow {d}: not a folder")
    with store.sql_connection(write=write) as (con, files):
        register(con)
        sandbox(con, files, folders)
        try:
            statements = [st for st in con.extract_statements(query) if not _sets_search_path_to(st, store.path)]
            if not write:
                _refuse_writing(statements)
            cur = con
            for statement in statements:
                cur = con.execute(statement)
        except duckdb.Error as exc:
            first = _reason(str(exc))
            raise UsageError(f"SQL error: {first}{_hint(first, write)}") from None
        if not statements or cur.description is None:
            return SqlResult([], [])
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
        # JSON columns (runs.config, images.extra) come back decoded, not as JSON text to decode again
        as_json = [i for i, d in enumerate(cur.description) if d[1] == "JSON"]
        if as_json:
            rows = [
                tuple(json.loads(v) if i in as_json and v is not None else v for i, v in enumerate(r)) for r in rows
            ]
        return SqlResult(columns, rows)


def _sets_search_path_to(statement, folder: Path) -> bool:
    """Whether `statement` is `SET file_search_path = '<folder>'`: what the README's plain-DuckDB step
    runs, already set here (and the locked configuration would refuse it)."""
    import re

    if _kind(statement) != "SET":
        return False
    m = re.match(r"\s*SET\s+(?:GLOBAL\s+|SESSION\s+)?file_search_path\s*(?:=|TO)\s*'([^']*)'",
                     statement.query, flags=re.I)  # fmt: skip
    return m is not None and Path(m.group(1)).expanduser().resolve() == folder


def _reason(text: str) -> str:
    """The line of a DuckDB error that says why: its first, or where a Python filesystem (the remote
    table's reader) failed inside it, the exception that traceback ends with.

    >>> _reason("IO Error: Traceback (most recent call last):\\n  File x\\nOSError: bucket unreachable")
    'IO Error: OSError: bucket unreachable'
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return text
    if "Traceback (most recent call last)" in lines[0]:
        head = lines[0].split("Traceback (most recent call last)")[0].rstrip(": ")
        return f"{head}: {lines[-1]}" if head else lines[-1]
    return lines[0]


def _kind(statement) -> str:
    """The statement's type name; "UNKNOWN" for a type DuckDB's Python API has no name for (its
    StatementType enum lags the parser: UPDATE EXTENSIONS is 29, which it cannot name)."""
    try:
        return statement.type.name
    except ValueError:
        return "UNKNOWN"


def _refuse_writing(statements) -> None:
    for statement in statements:
        kind = _kind(statement)
        if kind in WRITING or kind == "UNKNOWN":  # what cannot be named cannot be judged harmless
            verb = statement.query.strip().split(None, 1)[0].upper()
            why = (
                "embstore sql loads no extensions"
                if kind in ("LOAD", "UPDATE_EXTENSIONS") or verb == "UPDATE" and "EXTENSION" in statement.query.upper()
                else "a read-only session runs only statements it knows (`write=True` runs it, still confined)"
                if kind == "UNKNOWN"
                else "read-only SQL writes no files and attaches no databases (`write=True`, and `allow=DIR` "
                "for the folder, to write one)"
            )
            raise UsageError(f"SQL error: {verb} is refused: {why}")


def _hint(first: str, write: bool) -> str:
    if "read-only" in first:
        return " (the store is opened read-only; pass `write=True` to change it)"
    if "disabled by configuration" in first or "configuration has been locked" in first:
        return (
            " (embstore sql opens only the store's own files; `allow=DIR` lets it read"
            + (" and write" if write else "")
            + " files in DIR)"
        )
    return ""
