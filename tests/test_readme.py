"""Every SQL block of the README runs on a real store (docs that cannot rot)."""

import re

import embstore
from embstore import testing as synthetic
from embstore.analysis.tasks import class_tables
from embstore.store.sql import run_sql

from .conftest import ROOT


def test_readme_sql_blocks_run(tmp_path):
    blocks = re.findall(r"```sql\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 6
    store = embstore.open(tmp_path / "s", create=True)
    synthetic.populate(store, n_classes=620, per_class=2, layers={"hidden": 8}, seed=0)
    class_tables(store.core, "prototypes", None, ["hidden"])
    # the documented plain-DuckDB step names the store folder
    results = [run_sql(store.core, block.replace("'<store>'", f"'{store.path}'")) for block in blocks]
    by_text = dict(zip(blocks, results))
    knot = next(rows for text, (_, rows) in by_text.items() if "label_index = 616" in text)
    assert len(knot) == 9 and all(-1 <= r[2] <= 1 for r in knot)
    stored = next(rows for text, (_, rows) in by_text.items() if "what is stored" in text)
    assert stored == [("synthetic_net", "seed0", "hidden", 1240, 8)]
    # the same blocks in a plain DuckDB session (the package alone, after the documented step), except
    # those calling embstore's Python functions, which only embstore's own sessions register
    store.close()
    import duckdb

    con = duckdb.connect(str(store.core.catalog_path), read_only=True)
    plain = 0
    for block, (_, expected) in zip(blocks, results):
        if any(name in block for name in ("vec_norm", "wordnet_wup", "wordnet_path")):
            continue
        *setup, last = [stmt for stmt in con.extract_statements(block.replace("'<store>'", f"'{store.path}'"))]
        for stmt in setup:
            con.execute(stmt)
        assert con.execute(last).fetchall() == expected, block
        plain += 1
    con.close()
    assert plain >= len(blocks) - 1


def test_ci_runs_the_readme_test_command_and_every_readme_command_exists():
    readme = (ROOT / "README.md").read_text()
    test_command = re.search(r"\*\*Run the test suite\*\*.*?```bash\n(.*?)\n```", readme, flags=re.S).group(1)
    assert test_command in (ROOT / ".ci" / "run").read_text()
    from typer.main import get_command

    from embstore_cli.app import app

    root = get_command(app)
    for line in re.findall(r"^embstore ([a-z][^\s#]*(?: [a-z][^\s#-]*)?)", readme, flags=re.M):
        words = line.split()
        group = root.commands.get(words[0])
        assert group is not None, f"README names an unknown command: embstore {line}"
        if hasattr(group, "commands") and len(words) > 1:
            assert words[1] in group.commands, f"README names an unknown command: embstore {line}"


def test_readme_python_section_runs_as_written(tmp_path, monkeypatch):
    """The "From Python" block, verbatim, against a store holding the demo's photos."""
    import embstore

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## From Python\n.*?```python\n(.*?)```", readme, flags=re.S).group(1)
    store = embstore.open(tmp_path / "demo-store", create=True)
    store.ingest(embstore.sample_images(), model="efficientnet_lite0", batch_size=8)
    store.close()
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(block, "README.md (From Python)", "exec"), names)
    n_photos = len(list(embstore.sample_images().iterdir()))
    assert names["X"].shape == (n_photos, 1280)
    assert list(names["frame"].columns[:3]) == ["image_id", "label", "v0"]
    assert names["result"].model_key.startswith("my_resnet18@module-") and names["result"].n_done == n_photos
    assert (tmp_path / "demo-store" / "report.html").stat().st_size > 10_000
