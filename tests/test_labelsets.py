"""Any label vocabulary (issue 34): THINGS-style names beside ImageNet classes in one store, each
label set's analyses over its own images only, checked against numpy and scipy."""

import json

import numpy as np
import pytest
from scipy import stats as sp

import embstore
from embstore import testing as synthetic
from embstore.errors import EmbstoreError, NotFoundError, UnknownClassError
from embstore.store.sql import run_sql

from .conftest import make_images, run_embstore

THINGS = ["aardvark", "abacus", "accordion", "acorn", "air conditioner", "air mattress", "air pump", "airbag",
          "aircraft carrier", "airplane", "aisle", "alarm clock", "alligator", "almond", "alpaca", "altar",
          "aluminum foil", "ambulance", "amplifier", "anchor"]  # fmt: skip
LAYERS = {"conv_a": 12, "hidden": 8}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """One store: 20 THINGS-named classes × 6 images and 8 ImageNet classes × 5, same model and layers."""
    store = embstore.open(tmp_path_factory.mktemp("labelsets") / "s", create=True)
    things = synthetic.populate(store, per_class=6, layers=LAYERS, seed=1, label_names=THINGS, label_set="things")
    imagenet = synthetic.populate(store, n_classes=8, per_class=5, layers=LAYERS, seed=2)
    return store, things, imagenet


def _means(data, layer):
    y, x = data["labels"], data["vectors"][layer].astype(np.float64)
    return np.stack([x[y == c].mean(axis=0) for c in range(y.max() + 1)])


def test_each_label_set_has_its_own_prototypes_and_welch_t(mixed):
    store, things, imagenet = mixed
    (proto,) = store.class_tables("prototypes", layers=["conv_a"], label_set="things")
    (tstat,) = store.class_tables("tstats", layers=["conv_a"], label_set="things")
    assert (proto.label_set, proto.n_classes, proto.n_images) == ("things", 20, 120)
    _, rows = run_sql(store.core, """SELECT label_index, n, mean FROM class_prototypes
                                     WHERE label_set = 'things' AND layer = 'conv_a' ORDER BY 1""")  # fmt: skip
    np.testing.assert_allclose(np.array([r[2] for r in rows]), _means(things, "conv_a"), atol=1e-9)
    # one-vs-rest within the set: the ImageNet images are not the "rest" of a THINGS class
    y, x = things["labels"], things["vectors"]["conv_a"].astype(np.float64)
    _, trows = run_sql(store.core, """SELECT label_index, t FROM class_tstats
                                      WHERE label_set = 'things' AND layer = 'conv_a' ORDER BY 1""")  # fmt: skip
    assert tstat.n_classes == 20 and len(trows) == 20
    for c, t in trows:
        want = sp.ttest_ind(x[y == c], x[y != c], equal_var=False).statistic
        np.testing.assert_allclose(t, want, rtol=1e-9, atol=1e-9)
    # the default set is imagenet1k (it labels images here), and it sees its own 8 classes only
    (inet,) = store.class_tables("prototypes", layers=["conv_a"])
    assert (inet.label_set, inet.n_classes, inet.n_images) == ("imagenet1k", 8, 40)
    _, irows = run_sql(store.core, """SELECT mean FROM class_prototypes WHERE label_set = 'imagenet1k'
                                      AND layer = 'conv_a' ORDER BY label_index""")  # fmt: skip
    np.testing.assert_allclose(np.array([r[0] for r in irows]), _means(imagenet, "conv_a"), atol=1e-9)
    # class names in SQL without a UDF
    _, names = run_sql(store.core, """SELECT label_name('things', 3), (SELECT count(*) FROM labels
                                      WHERE label_set = 'things'), label_name('imagenet1k', 616)""")  # fmt: skip
    assert names == [("acorn", 20, "knot")]


@pytest.mark.parametrize("method", ["prototype", "tstat", "hidden"])
def test_similar_classes_of_a_things_name_equal_a_numpy_ranking(mixed, method):
    store, things, _ = mixed
    layer = None if method == "hidden" else "conv_a"
    # "aardvark" is no ImageNet class: the store's only set that has it is used, and the notes say so
    got = store.similar_classes("aardvark", k=5, method=method, layer=layer)
    assert "label set things (20 classes)" in got.notes and got.rows[0].detail["label_set"] == "things"
    y = things["labels"]
    x = things["vectors"]["hidden" if method == "hidden" else "conv_a"].astype(np.float64)
    if method == "tstat":
        vecs = np.stack([sp.ttest_ind(x[y == c], x[y != c], equal_var=False).statistic for c in range(20)])
    else:
        vecs = np.stack([x[y == c].mean(axis=0) for c in range(20)])
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = unit @ unit[0]
    order = [c for c in np.argsort(-scores, kind="stable") if c != 0][:5]
    assert [r.label for r in got.rows] == [THINGS[c] for c in order]
    np.testing.assert_allclose([r.score for r in got.rows], scores[order], rtol=1e-5)


def test_a_things_class_refuses_the_classifier_and_unknown_names_get_the_nearest(mixed):
    store, _, _ = mixed
    with pytest.raises(EmbstoreError, match="ranks ImageNet classes") as e:
        store.similar_classes("abacus", method="classifier", label_set="things")
    assert "\n" not in str(e.value)
    with pytest.raises(UnknownClassError, match="Did you mean: aardvark"):
        store.similar_classes("aardvrak", label_set="things")
    with pytest.raises(NotFoundError, match="no label set 'thing'.*Did you mean: things"):
        store.similar_classes("abacus", label_set="thing")
    # the ImageNet side is untouched: knot's neighbours are ImageNet classes of its own images
    assert all("label_set" not in r.detail for r in store.similar_classes("tench", k=3, method="prototype").rows)
    # the seed 003 strip of a THINGS class: its neighbours' names, the classifier row says why not
    from matplotlib.text import Text

    from embstore.report import figures

    fig = figures.draw(store.core, "similar", cls="aardvark", k=3, methods=("prototype", "classifier"))
    texts = [t.get_text() for t in fig.findobj(Text)]
    nearest = [r.label for r in store.similar_classes("aardvark", k=3, method="prototype", layer="all").rows]
    shown = " ".join(" ".join(t.split()) for t in texts)  # names may wrap over lines
    assert all(name in shown for name in nearest), (nearest, shown)
    assert any("classifier: not available — the classifier ranks ImageNet classes" in t for t in texts)
    # vectors of one set: labels are that set's indices, other images -1
    v = store.vectors(layer="conv_a", label_set="things")
    assert sorted(set(v.labels.tolist())) == [-1, *range(20)] and (v.labels == -1).sum() == 40
    acorn = store.vectors(layer="conv_a", label_set="things", labels=["acorn"])
    assert len(acorn.image_ids) == 6 and set(acorn.labels.tolist()) == {3}


def test_a_things_tree_ingests_into_a_label_set_named_after_it_and_extends_it(tmp_path):
    """Folders that name no ImageNet class form a label set named after the tree (a note says so);
    THINGS shares names with ImageNet (abacus, accordion, acorn), so a tree mixing both is one line
    unless `--labels` names the set, which then takes every name, new ones numbered after the known."""
    for k, name in enumerate(("aardvark", "alpaca", "almond")):
        make_images(tmp_path / "things_photos" / name, 2, seed=10 + k)
    base = ["--store", tmp_path / "s", "--json"]
    ingest = ["ingest", "-m", "resnet18", "--weights", "none", "--layers", "layer4"]
    first = run_embstore(*base, *ingest, "--images", tmp_path / "things_photos")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["label_set"], summary["new_labels"]) == ("things_photos", 3)
    assert any("form label set 'things_photos'" in note for note in summary["notes"])
    make_images(tmp_path / "more" / "abacus", 2, seed=20)  # an ImageNet class name too
    make_images(tmp_path / "more" / "alpaca", 1, seed=21)
    mixed = run_embstore(*base, *ingest, "--images", tmp_path / "more")
    assert mixed.returncode == 2 and "'alpaca' (1 image)" in mixed.stderr and "--labels NAME" in mixed.stderr
    again = run_embstore(*base, *ingest, "--images", tmp_path / "more", "--labels", "things_photos")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["new_labels"] == 1
    store = embstore.open(tmp_path / "s")
    _, rows = run_sql(store.core, """SELECT l.label_index, l.name, count(i.image_id) FROM labels l
                                     LEFT JOIN images i USING (label_set, label_index)
                                     WHERE label_set = 'things_photos' GROUP BY ALL ORDER BY 1""")  # fmt: skip
    assert rows == [(0, "aardvark", 2), (1, "almond", 2), (2, "alpaca", 3), (3, "abacus", 2)]
    _, ranks = run_sql(store.core, "SELECT count(*), count(true_rank) FROM predictions")
    assert ranks == [(9, 0)]  # the ImageNet head ranks no class of another set, abacus included
    got = run_embstore(*base, "query", "similar", "alpaca", "--labels", "things_photos", "--method", "prototype",
                       "--layer", "layer4", "--k", "3")  # fmt: skip
    assert got.returncode == 0, got.stderr
    v = store.vectors("resnet18", "layer4", label_set="things_photos")
    x, y = v.numpy().astype(np.float64), v.labels
    means = np.stack([x[y == c].mean(axis=0) for c in range(4)])
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    order = [c for c in np.argsort(-(unit @ unit[2])) if c != 2]
    names = ["aardvark", "almond", "alpaca", "abacus"]
    assert [r["name"] for r in json.loads(got.stdout)["results"]] == [names[c] for c in order]
    bad = run_embstore("--store", tmp_path / "s", *ingest, "--images", tmp_path / "more", "--labels", "Things!")
    assert bad.returncode == 2 and "label set name 'Things!' is not usable" in bad.stderr


def test_failures_on_a_set_whose_ids_name_synsets_equal_an_independent_forward_pass(tmp_path):
    """Labels of another set map to the ImageNet classes their WordNet ids name (a class, or every class
    under a hypernym): top-1/top-5 error, the true class's rank (its best-ranked class) and probability
    (their sum) equal a forward pass of the same network; a label without an id is not scored; a
    relabel into a mapped label re-ranks from the stored top-5; a set with no mapped label is refused."""
    import torch
    from PIL import Image
    from torchvision.models import ResNet18_Weights, resnet18

    from embstore.labels import wordnet
    from embstore.labels.imagenet import classes

    for label, seed in (("pet", 41), ("fish", 42), ("thing", 43)):
        make_images(tmp_path / "img" / label, 3, seed=seed)
    ids = {"pet": "dog.n.01", "fish": "n01440764", "thing": ""}  # a hypernym of 118 classes, tench, none
    rows = [f"{p},{p.parent.name},{ids[p.parent.name]}" for p in sorted((tmp_path / "img").rglob("*.png"))]
    (tmp_path / "m.csv").write_text("path,label,label_id\n" + "\n".join(rows) + "\n")
    store = embstore.open(tmp_path / "s", create=True)
    run = dict(model="resnet18", weights="none", layers="layer1.0")
    done = store.ingest(tmp_path / "m.csv", label_set="lab", **run)
    assert any("2 of the 3 new label(s) name WordNet synsets" in n for n in done.notes)
    dogs = wordnet.classes_under("n02084071")
    assert len(dogs) == 118 and all("n02084071" in wordnet.hypernym_distances(classes()[c].wnid) for c in dogs)
    torch.manual_seed(0)
    net = resnet18(weights=None).eval()
    prep = ResNet18_Weights.IMAGENET1K_V1.transforms()
    want = {}
    with torch.no_grad():
        for line in rows:
            path, label, _ = line.split(",")
            if label != "thing":
                p = torch.softmax(net(prep(Image.open(path).convert("RGB"))[None]).double(), 1)[0]
                cls = dogs if label == "pet" else [0]
                want[path] = (int((p > p[cls].max()).sum()) + 1, float(p[cls].sum()), int(p.argmax()))
    got = run_embstore("--store", tmp_path / "s", "--json", "analyze", "failures", "--labels", "lab", "--k", "50")
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    assert report["label_set"] == "lab" and report["n_labelled"] == 6
    assert report["top1_error"] == pytest.approx(np.mean([r > 1 for r, _, _ in want.values()]))
    assert report["top5_error"] == pytest.approx(np.mean([r > 5 for r, _, _ in want.values()]))
    failed = {p for p, (r, _, _) in want.items() if r > 1}
    assert {f["path"] for f in report["failures"]} == failed and failed  # random weights: some fail
    for f in report["failures"]:
        rank, prob, top = want[f["path"]]
        assert (f["true_rank"], f["predicted"]) == (rank, classes()[top].name)
        assert f["true_prob"] == pytest.approx(prob, rel=1e-4)
        synset = "n02084071" if f["true"] == "pet" else "n01440764"
        assert f["wup"] == wordnet.wup_similarity(synset, classes()[top].wnid)
    # a stored image relabelled into a mapped label: its rank from the stored top-5
    moved = next(line.split(",")[0] for line in rows if ",thing," in line)
    moved_rows = [line.replace(",thing,", ",fish,") if line.startswith(moved + ",") else line for line in rows]
    (tmp_path / "m.csv").write_text("path,label,label_id\n" + "\n".join(moved_rows) + "\n")
    assert store.ingest(tmp_path / "m.csv", label_set="lab", relabel=True, **run).n_relabelled == 1
    _, (row,) = run_sql(store.core, f"""SELECT p.top5_index, p.top5_prob, p.true_rank,
        p.true_prob FROM predictions p JOIN images i USING (image_id) WHERE i.path = '{moved}'""")  # fmt: skip
    top5, probs, rank, prob = row
    assert (rank, prob) == ((top5.index(0) + 1, probs[top5.index(0)]) if 0 in top5 else (None, None))
    assert store.failures(label_set="lab").n_labelled == 7
    # a set of names only: nothing to score, said in one line
    make_images(tmp_path / "names" / "aardvark", 1, seed=44)
    store.ingest(tmp_path / "names", label_set="names", **run)
    with pytest.raises(EmbstoreError, match="no label of set names maps to the models' ImageNet classes"):
        store.failures(label_set="names")


def test_the_report_draws_class_sections_for_each_label_set(mixed, tmp_path):
    """The report's similar-classes figures: one per label set (its largest class), the set named."""
    from embstore.report.html import build_report

    store, _, _ = mixed
    report = build_report(store.core, tmp_path / "r.html")
    key = synthetic.SPEC.key
    assert {f"similar-{key}", f"similar-{key}-things"} <= set(report.figures), report.skipped
    text = (tmp_path / "r.html").read_text()
    assert "of label set things" in text and f"failures-{key}-things" not in text  # names only: no errors
