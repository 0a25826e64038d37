import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

import embstore
from embstore.analysis.matching import roc_auc
from embstore.analysis.tasks import failures, matching
from embstore.errors import EmbstoreError, ManifestError, NotFoundError, UsageError
from embstore.ingest.run import ingest
from embstore.resources import migrations_dir
from embstore.store.migrations import discover, migrate
from embstore.store.sql import run_sql
from embstore.store.table import ActivationTable

from .conftest import make_images


@pytest.fixture
def triplet_store(store, tmp_path):
    paths = make_images(tmp_path / "imgs", 15, seed=21)
    manifest = tmp_path / "triplets.csv"
    rows = ["object,related,unrelated,rating_related,rating_unrelated"]
    for t in range(5):
        o, r, u = paths[3 * t : 3 * t + 3]
        rows.append(f"imgs/{o.name},imgs/{r.name},{u},{t + 1},{5 - t}")
    manifest.write_text("\n".join(rows) + "\n")
    return store, manifest, paths


def test_roc_auc_agrees_with_sklearn_including_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        scores = np.round(rng.normal(size=60), 1)  # rounding makes ties
        labels = np.r_[np.ones(30), np.zeros(30)]
        assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_matching_equals_a_brute_force_computation(triplet_store):
    store, manifest, paths = triplet_store
    with pytest.raises(NotFoundError, match="not ingested.*--ingest"):
        ingest(store.core, "resnet18", str(paths[0]), weights="none", layers="layer4.1")
        matching(store.core, str(manifest))
    report = matching(
        store.core,
        str(manifest),
        models=["resnet18"],
        ingest_missing=True,
        weights="none",
        layers=["layer4.1", "hidden"],
    )
    assert [r.layer for r in report.layers] == ["layer4.1", "hidden"]
    with store.core.read() as con:
        id_of = dict(con.execute("SELECT path, image_id FROM images").fetchall())
    for r in report.layers:
        ids, x = ActivationTable(store.core).read_layer("resnet18@none", r.layer)
        vec = {i: x[k].astype(np.float64) for k, i in enumerate(ids)}
        cr, cu = [], []
        for t in range(5):
            o, rel, un = (vec[id_of[str(p)]] for p in paths[3 * t : 3 * t + 3])
            cr.append(o @ rel / np.linalg.norm(o) / np.linalg.norm(rel))
            cu.append(o @ un / np.linalg.norm(o) / np.linalg.norm(un))
        cr, cu = np.array(cr), np.array(cu)
        np.testing.assert_allclose(r.cos_related, cr, atol=1e-9)
        np.testing.assert_allclose(r.cos_unrelated, cu, atol=1e-9)
        assert r.error == pytest.approx(np.mean(cr <= cu))
        assert r.auc == pytest.approx(roc_auc_score(np.r_[np.ones(5), np.zeros(5)], np.r_[cr, cu]))
        assert 0 <= r.ci[0] <= r.error <= r.ci[1] <= 1
        d = cr - cu
        if (d > 0).any():
            assert r.cases["best"][0] == int(np.argmax(np.where(d > 0, d, -np.inf)))
            assert r.cases["good_luck"][0] == int(np.argmin(np.where(d > 0, d, np.inf)))
        if (d <= 0).any():
            assert r.cases["worst"][0] == int(np.argmin(d))
            assert r.cases["bad_luck"][0] == int(np.argmax(np.where(d <= 0, d, -np.inf)))
    cols, rows = run_sql(
        store.core,
        "SELECT layer, count(*), avg((NOT matched)::INT), any_value(auc) FROM matching_results "
        "JOIN matching_summary USING (manifest_sha, model_key, layer) GROUP BY layer ORDER BY layer",
    )
    assert [(l, n) for l, n, _, _ in rows] == [("hidden", 5), ("layer4.1", 5)]
    by_layer = {r.layer: r for r in report.layers}
    for layer, _, err, auc in rows:
        assert err == pytest.approx(by_layer[layer].error) and auc == pytest.approx(by_layer[layer].auc)


def test_bad_triplet_manifests_fail_clearly(store, tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("object,related\na.png,b.png\n")
    with pytest.raises(ManifestError, match="lacks column.*unrelated"):
        matching(store.core, str(bad))
    with pytest.raises(NotFoundError, match="does not exist"):
        matching(store.core, str(tmp_path / "none.csv"))
    good = tmp_path / "good.csv"
    good.write_text("object,related,unrelated\na.png,b.png,c.png\n")
    with pytest.raises(NotFoundError, match="3 image.* cannot be read"):
        matching(store.core, str(good), models=["resnet18"], ingest_missing=True, weights="none")
    make_images(tmp_path, 1)
    good.write_text(f"object,related,unrelated\n{tmp_path / 'img_0_0000.png'},img_0_0000.png,img_0_0000.png\n")
    with pytest.raises(UsageError, match="ingest_missing needs exactly one model"):
        matching(store.core, str(good), ingest_missing=True)


def test_failure_analysis_matches_an_independent_forward_pass(store, tmp_path):
    from torchvision.models import ResNet18_Weights, resnet18

    make_images(tmp_path / "tree" / "tench", 3, seed=31)
    make_images(tmp_path / "tree" / "n03627232", 3, seed=32)
    ingest(store.core, "resnet18", str(tmp_path / "tree"), weights="none", layers="layer1.0")
    report = failures(store.core, "resnet18", limit=50)
    torch.manual_seed(0)
    net = resnet18(weights=None).eval()
    prep = ResNet18_Weights.IMAGENET1K_V1.transforms()
    with store.core.read() as con:
        rows = con.execute("SELECT path, label_index FROM images").fetchall()
    ranks = {}
    with torch.no_grad():
        for path, label in rows:
            p = torch.softmax(net(prep(Image.open(path).convert("RGB"))[None]).double(), 1)[0]
            ranks[path] = (int((p > p[label]).sum()) + 1, float(p[label]))
    assert report.n_labelled == 6
    assert report.top1_error == pytest.approx(np.mean([r > 1 for r, _ in ranks.values()]))
    assert report.top5_error == pytest.approx(np.mean([r > 5 for r, _ in ranks.values()]))
    for f in report.failures:
        assert f["true_rank"] == ranks[f["path"]][0]
        assert f["true_prob"] == pytest.approx(ranks[f["path"]][1], rel=1e-4)
    assert [f["true_rank"] for f in report.failures] == sorted((f["true_rank"] for f in report.failures), reverse=True)
    from embstore.labels.imagenet import classes
    from embstore.labels.wordnet import wup_similarity

    for f in report.failures:
        assert f["wup"] == wup_similarity(classes().resolve(f["true"]).wnid, classes().resolve(f["predicted"]).wnid)
    assert report.close == [f for f in report.failures if f["wup"] >= 0.8]
    everything_close = failures(store.core, "resnet18", limit=50, close_at=0.0)
    assert len(everything_close.close) == everything_close.n_failures == len(report.failures)


def test_sql_has_views_and_udfs_and_is_read_only_by_default(store, tmp_path):
    make_images(tmp_path / "imgs", 2)
    ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="layer1.0")
    ids, x = ActivationTable(store.core).read_layer("resnet18@none", "layer1.0")
    cols, rows = run_sql(
        store.core,
        "SELECT image_id, vec_norm(vec) AS n, imagenet_name(616) AS c FROM activations "
        "WHERE layer = 'layer1.0' ORDER BY image_id",
    )
    assert cols == ["image_id", "n", "c"]
    expected = dict(zip(ids, np.linalg.norm(x.astype(np.float64), axis=1)))
    for image_id, n, c in rows:
        assert n == pytest.approx(expected[image_id], rel=1e-6) and c == "knot"
    with pytest.raises(EmbstoreError, match="read-only; pass `write=True`"):
        run_sql(store.core, "DELETE FROM runs")
    run_sql(store.core, "CREATE TABLE notes (x INTEGER)", write=True)
    with pytest.raises(EmbstoreError, match="SQL error: .*no_such"):
        run_sql(store.core, "SELECT * FROM no_such")


def test_store_from_the_previous_schema_is_upgraded_on_open(tmp_path):
    old = tmp_path / "old_migrations"
    old.mkdir()
    shutil.copy(migrations_dir() / "0001_catalog.sql", old)
    (tmp_path / "s").mkdir()
    import duckdb

    con = duckdb.connect(str(tmp_path / "s" / "catalog.duckdb"))
    migrate(con, old)
    con.close()
    store = embstore.open(tmp_path / "s")
    cols, rows = run_sql(store.core, "SELECT count(*) FROM matching_summary")
    assert rows == [(0,)]
    _, versions = run_sql(store.core, "SELECT version FROM schema_migrations ORDER BY 1")
    assert [v for (v,) in versions] == [m.version for m in discover()] and len(versions) >= 3


def test_matching_table_covers_every_stored_model(triplet_store):
    store, manifest, _ = triplet_store
    for model in ("resnet18", "mobilenet_v3_small"):
        matching(store.core, str(manifest), models=[model], ingest_missing=True, weights="none", layers=["hidden"])
    report = matching(store.core, str(manifest), layers=["hidden"])
    assert [r.model_key for r in report.layers] == ["mobilenet_v3_small@none", "resnet18@none"]
    assert set(report.top1_error) == {"mobilenet_v3_small@none", "resnet18@none"}
    _, rows = run_sql(store.core, "SELECT count(*) FROM matching_summary WHERE layer = 'hidden'")
    assert rows == [(2,)]


def test_two_layers_compared_on_the_same_triplets_from_the_cli(triplet_store):
    """`analyze compare` reads both stored results, tests them pair by pair and stores the test; the
    numbers are the statistics module's on the stored per-triplet cosines; a new result of either
    side makes the stored test go (it would be out of date)."""
    import json

    from embstore.analysis.comparisons import compare_arrays

    from .conftest import run_embstore

    store, manifest, _ = triplet_store
    matching(store.core, str(manifest), models=["resnet18"], ingest_missing=True, weights="none",
             layers=["layer4.1", "hidden"])  # fmt: skip
    res = run_embstore("--store", store.path, "--json", "analyze", "compare", "resnet18:layer4.1", "resnet18",
                       "--n-boot", "200", "--seed", "3")  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["a"] == ["resnet18@none", "layer4.1"] and got["b"] == ["resnet18@none", "hidden"]  # default: hidden
    _, rows = run_sql(store.core, """SELECT layer, cos_related, cos_unrelated FROM matching_results
                                     WHERE model_key = 'resnet18@none' ORDER BY layer, triplet""")  # fmt: skip
    side = {layer: (np.array([r[1] for r in rows if r[0] == layer]), np.array([r[2] for r in rows if r[0] == layer]))
            for layer in ("layer4.1", "hidden")}  # fmt: skip
    (ra, ua), (rb, ub) = side["layer4.1"], side["hidden"]
    want = compare_arrays(ra <= ua, rb <= ub, (ra, ua), (rb, ub), n_boot=200, seed=3)
    for key in ("n_triplets", "error_a", "error_b", "a_only", "b_only", "mcnemar_p", "d_auc", "d_auc_p"):
        assert got[key] == pytest.approx(want[key]), key
    assert tuple(got["d_error_ci"]) == pytest.approx(want["d_error_ci"])
    _, stored = run_sql(store.core, "SELECT layer_a, layer_b, n_boot, seed, mcnemar_p FROM matching_tests")
    assert stored == [("layer4.1", "hidden", 200, 3, pytest.approx(want["mcnemar_p"]))]
    bad = run_embstore("--store", store.path, "analyze", "compare", "resnet18:hidden", "resnet18:hidden")
    assert bad.returncode == 2 and "with itself" in bad.stderr and bad.stderr.count("\n") == 1
    matching(store.core, str(manifest), models=["resnet18"], layers=["hidden"])
    assert run_sql(store.core, "SELECT count(*) FROM matching_tests")[1] == [(0,)]
