"""`embstore replicate` (issue 35): each seed's plan equals its committed snapshot and has the
papers' layer counts; each recipe runs end to end on synthetic images (the real EfficientNet-Lite0
weights and random-init torchvision networks in the papers' networks' places) and fills the
scoreboard with numbers equal to independent computations; an interrupted replicate resumes.

Snapshots: tests/data/replicate/SEED.json; after a deliberate change of a recipe, rewrite them with
EMBSTORE_UPDATE_SNAPSHOTS=1 and read the diff.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

import embstore
from embstore.analysis.toplists import jaccard_at, rbo
from embstore.errors import UsageError

from .conftest import blob_picture, run_embstore

SNAPSHOTS = Path(__file__).parent / "data" / "replicate"
CLASSES = ("knot", "chain", "baseball", "golf ball", "tennis ball", "espresso", "tench", "goldfish", "bullfrog",
           "hammer", "lemon", "broccoli")  # fmt: skip


@pytest.mark.parametrize("seed", ["seed000", "seed003", "seed004"])
def test_the_dry_run_of_each_seed_equals_its_committed_snapshot(seed):
    got = run_embstore("replicate", seed, "--dry-run", "--json")
    assert got.returncode == 0, got.stderr
    plan = json.loads(got.stdout)
    path = SNAPSHOTS / f"{seed}.json"
    if os.environ.get("EMBSTORE_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(plan, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert plan == json.loads(path.read_text(encoding="utf-8"))
    assert plan["needs"]  # no inputs given: the plan says what a real run lacks
    assert all(m["weights"] == "IMAGENET1K_V1" for m in plan["models"])  # never resnet50's 2021 DEFAULT


def test_the_plans_resolve_the_papers_layer_counts():
    """seed 003: every conv layer of ResNet-34 (33); seed 004: ResNet-50's 49 activations, VGG 16's 13
    conv + 3 dense layers, Inception V3's 11 mixed blocks — each after the pixel level, `hidden` kept."""
    (r34,) = embstore.replication_plan("seed003").models
    assert (r34.model, len(r34.layers), r34.layers[-1]) == ("resnet34", 34, "hidden")
    counts = {m.model: m.layers for m in embstore.replication_plan("seed004").models}
    for model, n in {"resnet50": 49, "vgg16": 16, "inception_v3": 11}.items():
        layers = counts[model]
        assert layers[0] == "pixels~grid32x32" and layers[-1] == "hidden" and len(layers) == n + 2, model
    assert counts["vgg16"][-2] == "classifier" and counts["inception_v3"][10] == "Mixed_7b"
    srp = {m.model: m.layers for m in embstore.replication_plan("seed004", pooling="srp").models}["vgg16"]
    assert [x for x in srp if "~srp" in x] == [f"{x}~srp4096" for x in counts["vgg16"][1:14]]  # conv maps only
    assert srp[14:] == counts["vgg16"][14:]  # the dense layers as they are


def test_model_entries_choose_substitute_and_every_difference_is_named():
    p = embstore.replication_plan("seed000", models=["ResNet-18=efficientnet_lite0", "resnet34"], weights="none")
    assert [(m.paper, m.model, m.weights) for m in p.models] == [
        ("ResNet-18", "efficientnet_lite0", "none"), ("ResNet-34", "resnet34", "none")]  # fmt: skip
    assert "ResNet-18: efficientnet_lite0 in its place" in p.differences
    assert "ResNet-34: weights none in place of IMAGENET1K_V1" in p.differences
    # the networks torchvision lacks are always named, with the way out
    assert [n.item for n in p.not_run] == ["ResNet-200", "DenseNet-264 (k=32)", "DenseNet-232 (k=48)",
                                           "DenseNet-cosine-264 (k=32)", "DenseNet-cosine-264 (k=48)"]  # fmt: skip
    assert "--model 'ResNet-200=timm:resnet200' --weights FILE" in p.not_run[0].way_out
    with pytest.raises(UsageError, match="none of seed000's networks.*ResNet-18=efficientnet_lite0"):
        embstore.replication_plan("seed000", models=["efficientnet_lite0"])
    with pytest.raises(UsageError, match="unknown seed 'seed001'"):
        embstore.replication_plan("seed001")
    p4 = embstore.replication_plan("seed004", vectors=["w2v.bin"], permutations=99)
    assert p4.settings["reference"] == "w2v.bin" and p4.settings["intersect"] == ["glove", "w2v.bin"]
    assert "99 permutations in place of 10000" in p4.differences
    assert {r.question for r in p4.readings} >= {'"the final layer" of VGG 16', '"correlation at the pixel level"'}


def test_jaccard_and_rank_biased_overlap_equal_their_definitions():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 30):
        a, b = rng.permutation(n), rng.permutation(n)
        for k in (1, 3, 9):
            x, y = set(a[:k].tolist()), set(b[:k].tolist())
            assert jaccard_at(a, b, k) == len(x & y) / len(x | y)
        for p in (0.5, 0.9):  # Webber et al. 2010: (1-p) sum_d p^(d-1) A_d, A_d = 1 beyond the lists
            direct = sum((1 - p) * p ** (d - 1) * len(set(a[:d]) & set(b[:d])) / d for d in range(1, n + 1)) + p**n
            assert rbo(a, b, p) == pytest.approx(direct, abs=1e-12)
        assert rbo(a, a) == pytest.approx(1.0, abs=1e-12)
    assert rbo([0, 1, 2, 3], [3, 2, 1, 0]) < rbo([0, 1, 2, 3], [0, 1, 3, 2]) < 1
    with pytest.raises(ValueError):
        rbo([0, 1], [0, 2])


def _pictures(root: Path, classes, per_class: int) -> dict[str, list[Path]]:
    rng = np.random.default_rng(3)
    return {c: [blob_picture(root / c / f"{j}.png", rng) for j in range(per_class)] for c in classes}


def test_seed000_fills_table_2_with_independently_checked_numbers(tmp_path):
    pics = _pictures(tmp_path / "imgs", CLASSES[:6], 3)
    flat = [p for ps in pics.values() for p in ps]
    rng = np.random.default_rng(1)
    triplets = [tuple(flat[i] for i in rng.choice(len(flat), 3, replace=False)) for _ in range(10)]
    manifest = tmp_path / "triplets.csv"
    manifest.write_text("object,related,unrelated\n" + "".join(f"{o},{r},{u}\n" for o, r, u in triplets))
    store = embstore.open(tmp_path / "s", create=True)
    inputs = dict(manifest=str(manifest), images=str(tmp_path / "imgs"), n_boot=200)
    store.replicate("seed000", models=["ResNet-18=efficientnet_lite0"], **inputs)  # the real weights
    done = store.replicate("seed000", models=["ResNet-34=resnet18"], weights="none", **inputs)  # random init
    board = {(s.item, s.measure): s for s in done.scoreboard}
    assert len(board) == 43  # table 2: 14 networks x 3 measures, and fig. 6's correlation
    assert board[("", "error_correlation")].store is None and "2 have them" in board[("", "error_correlation")].note
    for paper, key in (("ResNet-18", "efficientnet_lite0@tf-lite0"), ("ResNet-34", "resnet18@none")):
        v = store.vectors(key, "hidden")
        x = dict(zip(v.image_ids, v.numpy().astype(np.float64)))
        unit = {i: v / np.linalg.norm(v) for i, v in x.items()}
        wrong = [unit[_id(store, o)] @ unit[_id(store, r)] <= unit[_id(store, o)] @ unit[_id(store, u)]
                 for o, r, u in triplets]  # fmt: skip
        s = board[(paper, "matching_error")]
        assert s.store == pytest.approx(100 * np.mean(wrong)) and s.ci[0] <= s.store <= s.ci[1]
        assert s.difference == pytest.approx(s.store - s.paper)
        assert "10 triplets (the paper: POPORO's 400)" in s.marks
        top1 = board[(paper, "top1_error")]
        assert top1.store == pytest.approx(100 * store.failures(key).top1_error)
        assert board[(paper, "auc")].store is not None
    assert "efficientnet_lite0 in its place" in board[("ResNet-18", "auc")].marks
    assert "weights none in place of IMAGENET1K_V1" in board[("ResNet-34", "auc")].marks
    assert board[("ResNet-200", "auc")].store is None and "timm:resnet200" in board[("ResNet-200", "auc")].note
    assert board[("ResNet-50", "auc")].store is None and "not run" in board[("ResNet-50", "auc")].note
    again = store.replicate("seed000", models=["ResNet-34=resnet18"], weights="none", **inputs)
    assert [s.ran for s in again.steps] == [False]  # nothing new: the step is kept


def _id(store, path: Path) -> str:
    return store.run_sql(f"SELECT image_id FROM images WHERE path = '{path.resolve()}'")[1][0][0]


def test_seed003_from_the_cli_lists_what_query_similar_answers(tmp_path):
    _pictures(tmp_path / "imgs", CLASSES, 3)
    got = run_embstore("--store", tmp_path / "s", "--json", "replicate", "seed003", "--images", tmp_path / "imgs",
                       "--model", "ResNet34=efficientnet_lite0")  # fmt: skip
    assert got.returncode == 0, got.stderr
    out = json.loads(got.stdout)
    (step,) = out["steps"]
    detail = step["detail"]
    store = embstore.open(tmp_path / "s")
    from embstore.labels import wordnet
    from embstore.labels.imagenet import classes

    wnid = {c.name: c.wnid for c in classes()}
    for method in ("prototype", "tstat", "hidden"):
        for cls in ("knot", "baseball"):
            answer = store.similar_classes(cls, k=9, method=method)
            assert detail["lists"][method][cls] == [r.label for r in answer.rows], (method, cls)
        wup = [np.mean([wordnet.wup_similarity(wnid[c], wnid[r.label])
                        for r in store.similar_classes(c, k=9, method=method).rows]) for c in CLASSES]  # fmt: skip
        assert detail["wup"][method] == pytest.approx(np.mean(wup), abs=1e-12)
    lists = {m: {c: [r.label for r in store.similar_classes(c, k=9, method=m).rows] for c in CLASSES}
             for m in ("prototype", "hidden")}  # fmt: skip
    assert detail["jaccard"]["prototype/hidden"] == pytest.approx(
        np.mean([jaccard_at(lists["prototype"][c], lists["hidden"][c], 9) for c in CLASSES])
    )
    board = {s["measure"]: s for s in out["scoreboard"]}
    assert board["same_classes"]["store"] == detail["jaccard"]["prototype/hidden"]
    more = board["more_cognitive"]
    assert more["store"] == pytest.approx(detail["wup"]["tstat"] - detail["wup"]["hidden"], abs=1e-12)
    assert more["ci"][0] <= more["store"] <= more["ci"][1]
    assert "ResNet34" == board["similar_classes_contain"]["item"] and "efficientnet_lite0 in its place" in \
        board["similar_classes_contain"]["marks"]  # fmt: skip


def test_seed004_runs_end_to_end_and_an_interrupted_replicate_resumes(tmp_path):
    _pictures(tmp_path / "imgs", CLASSES[:6], 5)
    store = embstore.open(tmp_path / "s", create=True)
    inputs = dict(images=str(tmp_path / "imgs"), models=["VGG 16=efficientnet_lite0", "ResNet 50=resnet18"],
                  weights="none", permutations=19, n_boot=100)  # fmt: skip

    def stop_at_the_second_network(message: str) -> None:  # the paper's order: ResNet 50, then VGG 16
        if message.startswith("rsa efficientnet_lite0"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.replicate("seed004", progress=stop_at_the_second_network, **inputs)
    first = store.run_sql("SELECT layer, computed_at FROM rsa_results ORDER BY layer")[1]
    assert first and {k for k, in store.run_sql("SELECT DISTINCT model_key FROM rsa_results")[1]} == {
        "resnet18@none"}  # fmt: skip
    done = store.replicate("seed004", **inputs)
    assert [(s.item, s.ran) for s in done.steps] == [("ResNet 50", False), ("VGG 16", True)]
    assert store.run_sql("SELECT layer, computed_at FROM rsa_results WHERE model_key = 'resnet18@none' "
                         "ORDER BY layer")[1] == first  # fmt: skip
    board = {(s.item, s.measure): s for s in done.scoreboard}
    for paper, key in (("VGG 16", "efficientnet_lite0@none"), ("ResNet 50", "resnet18@none")):
        rows = store.run_sql(f"""SELECT layer, acc_2v2, acc_ci_low, acc_ci_high FROM rsa_results
                                WHERE model_key = '{key}' AND NOT starts_with(layer, 'pixels')""")[1]
        layer, acc, lo, hi = max(rows, key=lambda r: r[1])
        peak = board[(paper, "peak_2v2")]
        assert (peak.store, peak.ci) == (acc, (lo, hi)) and peak.note.startswith(f"at {layer}")
        assert f"{19} permutations in place of 10000" in peak.marks
    assert board[("", "n_concepts")].store == 6 and board[("", "n_images")].store == 30
    assert board[("", "n_groups")].difference == 0
    assert board[("Inception V3", "peak_2v2")].store is None


def test_the_fig_6_correlation_is_spearmans_rho_of_the_networks_errors():
    from scipy.stats import spearmanr

    from embstore.analysis.published import published
    from embstore.analysis.scoreboards import Score, _error_correlation

    rng = np.random.default_rng(2)
    top1, matching = rng.uniform(20, 30, 6), rng.uniform(38, 46, 6)
    rows = [Score("seed000", f"net{i}", m, None, "", v) for i in range(6)
            for m, v in (("top1_error", top1[i]), ("matching_error", matching[i]), ("auc", 0.5))]  # fmt: skip
    rows.append(Score("seed000", "not run", "top1_error", 21.0, "", None))
    (claim,) = published("000", "error_correlation")
    s = _error_correlation(claim, rows)
    assert s.store == pytest.approx(spearmanr(top1, matching).statistic, abs=1e-12)
    assert s.ci[0] <= s.store <= s.ci[1] and "over 6 networks" in s.note
