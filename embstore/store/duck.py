"""Small helpers over a DuckDB connection, written once: a transaction, rows as dicts, quoting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def transaction(con: Any) -> Iterator[Any]:
    """BEGIN on `con`, COMMIT when the block ends, ROLLBACK if it raises (anything, Ctrl-C too).

    >>> import duckdb
    >>> con = duckdb.connect()
    >>> _ = con.execute("CREATE TABLE t (x INTEGER)")
    >>> try:
    ...     with transaction(con):
    ...         _ = con.execute("INSERT INTO t VALUES (1)")
    ...         raise KeyError("boom")
    ... except KeyError:
    ...     pass
    >>> con.execute("SELECT count(*) FROM t").fetchall()
    [(0,)]
    """
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def dict_rows(cur: Any) -> list[dict]:
    """The rows of an executed DuckDB cursor as {column: value} dicts."""
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def sql_literal(value: str) -> str:
    """Quote a string for the few places DuckDB takes no parameter (DDL of views).

    >>> sql_literal("it's")
    "'it''s'"
    """
    return "'" + str(value).replace("'", "''") + "'"


def quote_identifier(name: str) -> str:
    """Quote a table/view/column name for SQL, whatever characters it holds.

    >>> quote_identifier('vectors/resnet18@none/layer1.0')
    '"vectors/resnet18@none/layer1.0"'
    """
    return '"' + str(name).replace('"', '""') + '"'
