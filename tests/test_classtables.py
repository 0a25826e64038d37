import numpy as np
import pytest
from scipy import stats

import embstore
from embstore import testing as synthetic
from embstore.analysis.similarity import similar_classes
from embstore.analysis.tasks import class_pair, class_tables
from embstore.errors import EmbstoreError, NotFoundError
from embstore.store.sql import run_sql


@pytest.fixture
def multi_file(tmp_path):
    """20 classes x 10 images spread over many small files, plus 5 classes with a single image."""
    store = embstore.open(tmp_path / "s", create=True)
    a = synthetic.populate(store, n_classes=20, per_class=10, seed=0, batch=37)
    b = synthetic.populate(store, n_classes=25, per_class=1, seed=1, batch=7)
    # seed 1 draws classes 0..24 once each: classes 20..24 end up with exactly one image
    x = {l: np.concatenate([a["vectors"][l], b["vectors"][l]]).astype(np.float64) for l in a["vectors"]}
    return store, np.concatenate([a["labels"], b["labels"]]), x


def test_prototypes_table_equals_numpy_class_means(multi_file):
    store, y, x = multi_file
    done = class_tables(store.core, "prototypes", None, ["conv_b"])
    assert done[0].recomputed and done[0].n_classes == 25
    _, rows = run_sql(store.core, "SELECT label_index, n, mean FROM class_prototypes WHERE layer = 'conv_b'")
    for label, n, mean in rows:
        assert n == (y == label).sum()
        np.testing.assert_allclose(mean, x["conv_b"][y == label].mean(0), rtol=1e-12, atol=1e-12)
    _, sql_rows = run_sql(store.core, "SELECT label_index, n, mean FROM class_means('synthetic_net@seed0', 'conv_b')")
    for label, n, mean in sql_rows:  # the pure-SQL macro a duckdb shell can use agrees too
        assert n == (y == label).sum()
        np.testing.assert_allclose(mean, x["conv_b"][y == label].mean(0), rtol=1e-9)


@pytest.mark.parametrize("chunk_rows", [8192, 5])  # 5: per-class statistics merged across ~50 chunks
def test_tstats_table_agrees_with_scipy_and_leaves_out_single_image_classes(multi_file, monkeypatch, chunk_rows):
    from embstore.store import table

    monkeypatch.setattr(table, "CHUNK_ROWS", chunk_rows)
    store, y, x = multi_file
    done = class_tables(store.core, "tstats", None, ["conv_a"])[0]
    assert (done.n_classes, done.skipped) == (20, 5)
    _, rows = run_sql(store.core, "SELECT label_index, t, df FROM class_tstats WHERE layer = 'conv_a' ORDER BY 1")
    assert [r[0] for r in rows] == list(range(20))
    for label, t, df in rows:
        ref = stats.ttest_ind(x["conv_a"][y == label], x["conv_a"][y != label], equal_var=False)
        np.testing.assert_allclose(t, ref.statistic, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(df, ref.df, rtol=1e-9)
    with pytest.raises(NotFoundError, match="has 1 image.*too few"):
        similar_classes(store.core, "22", method="tstat", layer="conv_a")
    got = similar_classes(store.core, "3", method="tstat", layer="conv_a", k=30)
    assert len(got.rows) == 19 and all(np.isfinite(n.score) for n in got.rows)
    assert {n.detail["index"] for n in got.rows}.isdisjoint({20, 21, 22, 23, 24})


def test_tables_are_recomputed_only_when_the_store_changes(multi_file):
    store, _, _ = multi_file
    assert class_tables(store.core, "tstats", None, ["hidden"])[0].recomputed
    assert not class_tables(store.core, "tstats", None, ["hidden"])[0].recomputed
    synthetic.populate(store, n_classes=20, per_class=2, seed=2)
    again = class_tables(store.core, "tstats", None, ["hidden"])[0]
    assert again.recomputed and again.n_images == 200 + 40 + 20


def test_pairwise_welch_and_zero_variance_channels(tmp_path):
    store = embstore.open(tmp_path / "s", create=True)
    data = synthetic.populate(store, n_classes=6, per_class=5, layers={"conv_a": 8, "hidden": 4}, seed=9)
    y, xa = data["labels"], data["vectors"]["conv_a"].astype(np.float64)
    a, b, (t, df) = class_pair(store.core, None, "conv_a", "2", "4")
    ref = stats.ttest_ind(xa[y == 2], xa[y == 4], equal_var=False)
    np.testing.assert_allclose(t, np.nan_to_num(ref.statistic), rtol=1e-9, atol=1e-9)
    with pytest.raises(EmbstoreError, match=r"has 0 labelled image\(s\) for .*needs at least 2 per class"):
        class_pair(store.core, None, "conv_a", "2", "7")
    # a channel with no variance anywhere: t is defined as 0, df NULL; no NaN reaches rankings
    const = embstore.open(tmp_path / "c", create=True)
    centres = np.random.default_rng(3).gamma(2.0, 1.0, size=(4, 3))
    centres[:, 0] = -100.0  # far below zero: ReLU makes channel 0 exactly 0 for every image
    d = synthetic.populate(const, n_classes=4, per_class=3, layers={"conv_a": 3}, seed=3, centres={"conv_a": centres})
    assert d["vectors"]["conv_a"].shape[1] == 3 and not d["vectors"]["conv_a"][:, 0].any()
    class_tables(const.core, "tstats", None, ["conv_a"])
    _, rows = run_sql(const.core, "SELECT t[1], df[1], t[2] FROM class_tstats")
    assert all(t0 == 0.0 and df0 is None and np.isfinite(t1) for t0, df0, t1 in rows)
