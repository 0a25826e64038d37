import shutil
import subprocess
import sys
import zipfile

import duckdb
import pytest

from embstore.errors import MigrationError
from embstore.resources import migrations_dir
from embstore.store.migrations import discover, migrate

from .conftest import ROOT


def _copy_migrations(tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), folder)
    return folder


def test_blank_catalog_gets_every_table_and_rerun_is_a_noop(tmp_path):
    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    applied = migrate(con)
    assert applied == [m.name for m in discover()]
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {
        "images",
        "models",
        "layers",
        "runs",
        "predictions",
        "ingest_errors",
        "vector_batches",
        "batch_images",
        "table_files",
        "table_state",
        "activations",
        "schema_migrations",
    } <= tables
    assert migrate(con) == []
    assert con.execute("SELECT count(*) FROM schema_migrations").fetchall()[0][0] == len(applied)


def test_edited_applied_migration_is_refused(tmp_path):
    folder = _copy_migrations(tmp_path)
    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    migrate(con, folder)
    first = sorted(folder.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        migrate(con, folder)


def test_failing_migration_rolls_back_completely(tmp_path):
    folder = _copy_migrations(tmp_path)
    (folder / "9998_ok_part.sql").write_text("CREATE TABLE t_ok (x INTEGER);")
    (folder / "9999_broken.sql").write_text("CREATE TABLE t_half (x INTEGER);\nSELECT * FROM no_such_table;")
    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    with pytest.raises(MigrationError, match="9999_broken.sql failed at `SELECT"):
        migrate(con, folder)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "t_ok" in tables and "t_half" not in tables
    versions = [r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()]
    assert 9998 in versions and 9999 not in versions


def test_upgrade_from_previous_schema_applies_only_the_new_file(tmp_path):
    folder = _copy_migrations(tmp_path)
    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    migrate(con, folder)
    (folder / "9000_add_note.sql").write_text("ALTER TABLE images ADD COLUMN note VARCHAR DEFAULT 'x';")
    assert migrate(con, folder) == ["9000_add_note.sql"]
    cols = [
        r[0]
        for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name='images'").fetchall()
    ]
    assert "note" in cols


def test_badly_named_migration_file_is_refused(tmp_path):
    folder = _copy_migrations(tmp_path)
    (folder / "2_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        discover(folder)


def test_built_wheel_carries_migrations_data_and_cli(tmp_path):
    """A non-editable install (the wheel) finds its migrations and data without the source tree."""
    out = tmp_path / "dist"
    subprocess.run(["uv", "build", "--wheel", "-o", str(out), str(ROOT)], check=True, capture_output=True)
    wheel = next(out.glob("embstore-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "embstore/migrations/0001_catalog.sql" in names
    assert "embstore/data/imagenet1k.tsv" in names
    assert "embstore/data/samples/coffee.png" in names
    assert "embstore_cli/app.py" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import embstore.resources as r, embstore.store as s;"
        "print(r.migrations_dir()); st = s.StoreCore.open(sys.argv[2], create=True);"
        "con = st._connect(read_only=True);"
        "print(con.execute('SELECT count(*) FROM schema_migrations').fetchall()[0][0])"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(site), str(tmp_path / "st")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    found, count = res.stdout.split()
    assert found == str(site / "embstore" / "migrations")
    assert int(count) == len(discover())
