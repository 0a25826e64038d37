"""Apply `migrations/NNNN_name.sql` to a catalog, in order, each in one transaction.

An applied file is recorded with its SHA-256; a later edit of it is refused rather than
silently diverging from stores created before the edit.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from embstore.errors import MigrationError
from embstore.resources import migrations_dir
from embstore.store.duck import transaction

_NAME = re.compile(r"^(\d{4})_[A-Za-z0-9_]+\.sql$")

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    checksum VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder: Path | None = None) -> list[Migration]:
    """The migration files of `folder` (default: embstore's own), sorted by version."""
    folder = folder or migrations_dir()
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file {path.name} is not named NNNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migrations share version {version:04d}: {found[version].name}, {path.name}")
        found[version] = Migration(version, path.name, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def pending(con, folder: Path | None = None) -> bool:
    """Whether `con`'s catalog lacks a migration (or holds one that has since changed)."""
    import duckdb

    try:
        applied = dict(con.execute("SELECT version, checksum FROM schema_migrations").fetchall())
    except duckdb.CatalogException:  # no ledger yet
        return True
    return any(applied.get(m.version) != m.checksum for m in discover(folder))


def migrate(con, folder: Path | None = None) -> list[str]:
    """Apply pending migrations on `con` (a read-write DuckDB connection); return the names applied.

    >>> migrate(duckdb.connect("catalog.duckdb"))  # doctest: +SKIP
    ['0001_catalog.sql']
    """
    con.execute(_LEDGER)
    applied = dict(con.execute("SELECT version, checksum FROM schema_migrations").fetchall())
    done: list[str] = []
    for mig in discover(folder):
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                raise MigrationError(
                    f"migration {mig.name} was edited after it was applied to this store; "
                    "add a new migration file instead of changing a released one"
                )
            continue
        try:
            statements = con.extract_statements(mig.sql)
        except Exception as exc:
            raise MigrationError(f"migration {mig.name} does not parse: {exc}") from exc
        with transaction(con):
            for stmt in statements:
                try:
                    con.execute(stmt)
                except Exception as exc:
                    raise MigrationError(f"migration {mig.name} failed at `{_head(stmt)}`: {exc}") from exc
            con.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                [mig.version, mig.name, mig.checksum],
            )
        done.append(mig.name)
    return done


def _head(stmt) -> str:
    text = " ".join(str(getattr(stmt, "query", stmt)).split())
    return text[:80] + ("…" if len(text) > 80 else "")
