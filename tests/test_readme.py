"""Every SQL block of the README runs on a real store (docs that cannot rot)."""

import re

from embstore import synthetic
from embstore.analysis import class_tables
from embstore.sql import run_sql
from embstore.store import Store

from .conftest import ROOT


def test_readme_sql_blocks_run(tmp_path):
    blocks = re.findall(r"```sql\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 6
    store = Store.open(tmp_path / "s", create=True)
    synthetic.populate(store, n_classes=620, per_class=2, layers={"hidden": 8}, seed=0)
    class_tables(store, "prototypes", None, ["hidden"])
    results = [run_sql(store, block) for block in blocks]
    by_text = dict(zip(blocks, results))
    knot = next(rows for text, (_, rows) in by_text.items() if "label_index = 616" in text)
    assert len(knot) == 9 and all(-1 <= r[2] <= 1 for r in knot)
    stored = next(rows for text, (_, rows) in by_text.items() if "what is stored" in text)
    assert stored == [("synthetic_net", "seed0", "hidden", 1240, 8)]
