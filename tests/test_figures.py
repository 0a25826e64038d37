import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from matplotlib.container import BarContainer
from PIL import Image
from sklearn.metrics import roc_curve as sk_roc_curve

import embstore
from embstore.analysis import matching
from embstore.analysis.similarity import similar_classes
from embstore.errors import EmbstoreError, NotFoundError, UnknownLayerError
from embstore.report import figures
from embstore.report.thumbnails import Thumbnails
from embstore.store.sql import run_sql

from .conftest import run_embstore

KIND_OPTIONS = {
    "rsa": {},
    "roc": {},
    "errors": {},
    "cosines": {"models": ["efficientnet_lite0", "efficientnet_lite0"]},  # one model here: itself, r = 1
    "ratings": {},
    "similar": {"cls": "knot", "k": 5},
    "cases": {"n": 3},
    "failures": {"n": 6},
    "predictions": {"n": 8},
}


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_roc_curve_agrees_with_sklearn_including_ties():
    rng = np.random.default_rng(3)
    cr = np.round(rng.normal(0.6, 0.1, 200), 2)  # rounding makes many tied scores
    cu = np.round(rng.normal(0.55, 0.1, 200), 2)
    fpr, tpr = matching.roc_curve(cr, cu)
    sk_fpr, sk_tpr, _ = sk_roc_curve(np.r_[np.ones(200), np.zeros(200)], np.r_[cr, cu], drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)


def test_case_orders_follow_the_margin_by_brute_force():
    rng = np.random.default_rng(4)
    cr, cu = rng.random(40), rng.random(40)
    cu[5] = cr[5]  # a tie is a miss
    got = matching.cases(cr, cu)
    d = cr - cu
    hits = [t for t in range(40) if d[t] > 0]
    misses = [t for t in range(40) if d[t] <= 0]
    assert got["best"] == sorted(hits, key=lambda t: -d[t])
    assert got["good_luck"] == sorted(hits, key=lambda t: d[t])
    assert got["worst"] == sorted(misses, key=lambda t: d[t])
    assert got["bad_luck"] == sorted(misses, key=lambda t: -d[t])
    assert 5 in got["worst"] and 5 not in got["best"]


@pytest.mark.parametrize("kind", figures.KINDS)
def test_every_figure_is_written_as_png_and_svg(figure_store, tmp_path, kind):
    store, _, _ = figure_store
    fig = figures.draw(store.core, kind, **KIND_OPTIONS[kind])
    png, svg = figures.save(fig, tmp_path / f"{kind}.png")
    assert (png.name, svg.name) == (f"{kind}.png", f"{kind}.svg")
    px = _pixels(png)
    w, h = fig.get_size_inches() * figures.DPI
    assert px.shape[:2] == (round(h), round(w))
    assert px.std() > 20 and (px.sum(axis=2) < 600).mean() > 0.01  # drawn on, not a white page
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    if kind in ("similar", "cases", "failures", "predictions"):  # image strips carry their thumbnails inside the SVG
        assert len(root.findall(".//{http://www.w3.org/2000/svg}image")) >= 3


def test_rsa_lines_are_the_stored_accuracies_in_network_order(figure_store):
    store, _, _ = figure_store
    ax = figures.draw(store.core, "rsa").axes[0]
    _, rows = run_sql(store.core, "SELECT layer, acc_2v2 FROM rsa_results ORDER BY layer_order")
    line = next(line for line in ax.get_lines() if line.get_label() == "glove-6B-50d")
    np.testing.assert_allclose(line.get_ydata(), [r[1] for r in rows])
    assert [t.get_text() for t in ax.get_xticklabels()] == [r[0] for r in rows]
    # the band is the stored concept-bootstrap interval of each layer, and the legend says so
    _, cis = run_sql(store.core, "SELECT acc_ci_low, acc_ci_high FROM rsa_results ORDER BY layer_order")
    (band,) = [c for c in ax.collections if c.get_paths()]
    vertices = band.get_paths()[0].vertices
    for x, (low, high) in enumerate(cis):
        at = vertices[np.isclose(vertices[:, 0], x), 1]
        assert low < high and min(at) == pytest.approx(low) and max(at) == pytest.approx(high)
    assert "band: 95 % CI, bootstrap of the concepts" in ax.get_legend().get_title().get_text()
    ones = figures.draw(store.core, "rsa", measure="acc_1v2").axes[0]
    assert ones.get_ylabel() == "1 vs 2 accuracy"
    with pytest.raises(EmbstoreError, match="choose one of"):
        figures.draw(store.core, "rsa", measure="accuracy")


def test_1v2_markers_follow_the_1v2_p_not_the_2v2_p(figure_store, tmp_path):
    """Filled markers of a 1 vs 2 curve are its own binomial p < 0.05 (they were the 2 vs 2 p's)."""
    import shutil

    store = embstore.open(shutil.copytree(figure_store[0].path, tmp_path / "copy"))  # the fixture stays as it is
    with store.core.write() as con:
        con.execute("""UPDATE rsa_results SET p_value = 0.001, acc_1v2 = coalesce(acc_1v2, 0.6),
                       p_1v2 = CASE WHEN layer_order % 2 = 0 THEN 0.01 ELSE 0.5 END""")
        rows = con.execute("SELECT layer, layer_order FROM rsa_results ORDER BY layer_order").fetchall()
    want = [k for k, (_, order) in enumerate(rows) if order % 2 == 0]
    assert 0 < len(want) < len(rows)

    def filled_at(measure, correct="none"):  # the raw p's were edited: the stored corrections do not follow
        ax = figures.draw(store.core, "rsa", measure=measure, correct=correct).axes[0]
        dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
        full = [line for line in dots if line.get_markerfacecolor() != "white"]
        return sorted(int(x) for line in full for x in line.get_xdata()), ax.get_legend().get_title().get_text()

    assert filled_at("acc_1v2") == (want, "filled: binomial p < 0.05\n(uncorrected over the layers)")
    assert filled_at("acc_2v2") == (
        list(range(len(rows))),
        "filled: permutation p < 0.05\n(uncorrected over the layers)\nband: 95 % CI, bootstrap of the concepts",
    )
    # Holm over the curve's layers (adjusted on the fly for rows without stored corrections): 0.01 × the
    # number of layers left is what the smallest p must stay under 0.05 with
    with store.core.write() as con:
        con.execute("UPDATE rsa_results SET p_1v2_holm = NULL, p_1v2_bh = NULL")
    holm_ok = [k for k, (_, order) in enumerate(rows) if order % 2 == 0 and 0.01 * (len(rows) - want.index(k)) < 0.05]
    assert filled_at("acc_1v2", "holm")[0] == holm_ok
    assert filled_at("acc_1v2", "holm")[1].endswith("(Holm-adjusted over the layers)")


def test_roc_errors_and_ratings_show_the_stored_matching_numbers(figure_store):
    store, _, _ = figure_store
    _, rows = run_sql(
        store.core,
        """SELECT cos_related, cos_unrelated, rating_related, rating_unrelated
                                FROM matching_results WHERE layer = 'hidden' ORDER BY triplet""",
    )
    cr, cu, rr, ru = (np.array(c, np.float64) for c in zip(*rows))
    _, summary = run_sql(store.core, "SELECT error, auc FROM matching_summary WHERE layer = 'hidden'")
    error, auc = summary[0]

    roc_ax = figures.draw(store.core, "roc").axes[0]
    curve = next(line for line in roc_ax.get_lines() if "AUC" in line.get_label())
    sk_fpr, sk_tpr, _ = sk_roc_curve(np.r_[np.ones(len(cr)), np.zeros(len(cu))], np.r_[cr, cu], drop_intermediate=False)
    np.testing.assert_allclose(curve.get_xdata(), sk_fpr)
    np.testing.assert_allclose(curve.get_ydata(), sk_tpr)
    assert f"AUC {auc:.3f}" in curve.get_label() and "hidden" in curve.get_label()

    bars = figures.draw(store.core, "errors").axes[0].containers
    _, labelled = run_sql(store.core, "SELECT true_rank FROM predictions WHERE true_rank IS NOT NULL")
    top1 = np.mean([r[0] != 1 for r in labelled])
    heights = [[p.get_height() for p in c.patches] for c in bars if isinstance(c, BarContainer)]
    assert heights == [pytest.approx([top1]), pytest.approx([error]), pytest.approx([1 - auc])]
    assert error == pytest.approx(np.mean(cr <= cu))

    ratings_ax = figures.draw(store.core, "ratings").axes[0]
    ok = cr > cu
    expected = [(rr[ok], cr[ok]), (rr[~ok], cr[~ok]), (ru[ok], cu[ok]), (ru[~ok], cu[~ok])]
    for coll, (x, y) in zip(ratings_ax.collections, expected):
        np.testing.assert_allclose(coll.get_offsets().reshape(-1, 2), np.c_[x, y])


def test_similar_classes_strip_shows_each_methods_ranking_with_example_images(figure_store):
    store, _, _ = figure_store
    fig = figures.draw(store.core, "similar", cls="knot", k=5, methods=("prototype", "hidden", "classifier"))
    image_axes = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(image_axes) == 3 * 6
    thumbs = Thumbnails(store.core)
    _, example = run_sql(
        store.core,
        """SELECT i.image_id FROM images i JOIN predictions p USING (image_id)
                                   WHERE i.label_name = 'knot' ORDER BY p.true_rank, i.image_id LIMIT 1""",
    )
    query_tile = image_axes[0].get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(query_tile), np.asarray(thumbs.get(example[0][0], None)))
    for row, method in enumerate(("prototype", "hidden", "classifier")):
        answer = similar_classes(store.core, "knot", k=5, method=method)
        captions = [ax.get_xlabel() for ax in image_axes[6 * row + 1 : 6 * row + 6]]
        for n, (caption, neighbour) in enumerate(zip(captions, answer.rows), start=1):
            assert caption.startswith(f"{n}. {neighbour.score:.3f}") and neighbour.label.split()[0] in caption
    # a class with no images in the store gets a placeholder, not someone else's picture
    classifier_row = image_axes[13:18]
    stored = {r[0] for r in run_sql(store.core, "SELECT DISTINCT label_index FROM images")[1]}
    for ax, neighbour in zip(classifier_row, similar_classes(store.core, "knot", k=5, method="classifier").rows):
        assert bool(ax.get_images()) == (neighbour.detail["index"] in stored)


def test_cases_strip_shows_the_brute_force_best_and_worst_triplets(figure_store):
    store, _, _ = figure_store
    fig = figures.draw(store.core, "cases", n=2, which=("best", "worst"))
    _, rows = run_sql(
        store.core,
        """SELECT object_id, related_id, unrelated_id, cos_related - cos_unrelated
                                FROM matching_results WHERE layer = 'hidden' ORDER BY triplet""",
    )
    best = max(rows, key=lambda r: r[3])
    worst = min(rows, key=lambda r: r[3])
    thumbs = Thumbnails(store.core)
    for panel, trio in zip(fig.subfigs, (best, worst)):
        tiles = [np.asarray(ax.get_images()[0].get_array()) for ax in panel.axes[:3]]
        for tile, image_id in zip(tiles, trio[:3]):
            np.testing.assert_array_equal(tile, np.asarray(thumbs.get(image_id, None)))
        assert panel.axes[0].get_ylabel() == f"Δ {trio[3]:+.3f}"


def test_failures_strip_starts_with_the_lowest_ranked_true_class(figure_store):
    store, _, _ = figure_store
    fig = figures.draw(store.core, "failures", n=4, per_row=2)
    _, rows = run_sql(
        store.core,
        """SELECT i.label_name, p.true_rank FROM predictions p JOIN images i USING (image_id)
                                WHERE p.true_rank > 1 ORDER BY p.true_rank DESC, image_id LIMIT 4""",
    )
    captions = [ax.get_xlabel() for ax in fig.axes if ax.get_images()]
    assert len(captions) == 4
    for caption, (name, rank) in zip(captions, rows):
        assert caption.startswith(f"true: {name}") and f"rank {rank}," in caption


def test_thumbnails_are_made_once_and_never_show_a_changed_file(figure_store, tmp_path):
    store, _, pictures = figure_store
    figures.draw(store.core, "cases")
    thumbs = Thumbnails(store.core)
    _, rows = run_sql(
        store.core,
        """SELECT m.object_id, i.path FROM matching_results m JOIN images i ON i.image_id = m.object_id
           WHERE m.layer = 'hidden' AND m.matched ORDER BY cos_related - cos_unrelated DESC LIMIT 1""",
    )
    image_id, path = rows[0]  # the object of the best case, drawn above
    cached = thumbs.path(image_id)
    assert cached.is_file() and max(Image.open(cached).size) <= 160
    os.utime(cached, (1, 1))
    thumbs.get(image_id, path)
    assert cached.stat().st_mtime == 1  # served from the cache, not remade
    cached.write_bytes(b"torn")  # a killed writer's leftovers are remade
    assert thumbs.get(image_id, path) is not None and Image.open(cached).size[0] > 0
    other = Thumbnails(embstore.open(tmp_path / "fresh", create=True).core)
    changed = tmp_path / "changed.png"
    changed.write_bytes(open(pictures[1] if str(pictures[1]) != path else pictures[2], "rb").read())
    assert other.get(image_id, str(changed)) is None  # different content under the recorded id
    assert other.get(image_id, str(tmp_path / "gone.png")) is None
    assert not other.path(image_id).exists()
    unwritable = embstore.open(tmp_path / "unwritable", create=True)
    (unwritable.path / "thumbnails").write_text("a file where the cache folder would go")
    drawn = Thumbnails(unwritable.core).get(image_id, path)  # a store we cannot write to still gets its figures
    assert drawn is not None and drawn.size == Image.open(cached).size


def test_figures_explain_what_is_missing(store, figure_store, tmp_path):
    with pytest.raises(NotFoundError, match="embstore analyze matching"):
        figures.draw(store.core, "roc")
    with pytest.raises(NotFoundError, match="embstore analyze rsa"):
        figures.draw(store.core, "rsa")
    with pytest.raises(EmbstoreError, match="choose one of rsa, roc"):
        figures.draw(store.core, "histogram")
    full, manifest, _ = figure_store
    with pytest.raises(UnknownLayerError, match="Did you mean"):
        figures.draw(full.core, "roc", layer="blocks.9")
    with pytest.raises(NotFoundError, match="matches none"):
        figures.draw(full.core, "roc", manifest="ffff")
    assert figures.draw(full.core, "roc", manifest=str(manifest)).axes  # the manifest file itself resolves
    with pytest.raises(EmbstoreError, match="choose png, svg or pdf"):
        figures.save(figures.draw(full.core, "roc"), tmp_path / "x", ("gif",))


def test_plot_commands_write_files_and_fail_in_one_line(figure_store, tmp_path):
    store, _, _ = figure_store
    ok = run_embstore(
        "--store", store.path, "plot", "similar", "knot", "--k", "3", "--method", "hidden", "--out", tmp_path / "sim"
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "sim.png").is_file() and (tmp_path / "sim.svg").is_file()
    bad = run_embstore("--store", store.path, "plot", "cases", "--case", "lucky")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "embstore: error: unknown case 'lucky'; choose from best, worst, good_luck, bad_luck"
    ]


def test_predictions_strip_captions_are_the_stored_top_classes(figure_store):
    store, _, _ = figure_store
    fig = figures.draw(store.core, "predictions", n=6)
    _, rows = run_sql(
        store.core,
        """SELECT imagenet_name(top5_index[1]), imagenet_name(top5_index[2]), i.label_index
                                FROM predictions p JOIN images i USING (image_id) ORDER BY i.path""",
    )
    step = len(rows) // 6
    expected = rows[::step][:6]
    captions = [ax.get_xlabel() for ax in fig.axes if ax.get_images()]
    assert len(captions) == 6
    for caption, (first, second, label) in zip(captions, expected):
        lines = caption.splitlines()
        assert lines[0].startswith(first[:12]) and lines[1].startswith(second[:12])
        assert ("true:" in caption) == (label is not None)


def test_several_models_share_one_figure(tmp_path, monkeypatch):
    """Two models over the same real pictures: one ROC curve and one bar group per model, and 2 vs 2
    lines on a relative-depth axis when the models have different numbers of layers."""
    from embstore import testing as synthetic
    from embstore.analysis.rsatables import run_rsa
    from embstore.analysis.tasks import matching as run_matching
    from embstore.spec import ModelSpec

    from .conftest import blob_picture

    rng = np.random.default_rng(8)
    files = [blob_picture(tmp_path / "imgs" / f"{i:03d}.png", rng) for i in range(8 * 5)]
    store = embstore.open(tmp_path / "s", create=True)
    other = ModelSpec("other_net", "synthetic", "seed1", synthetic.SPEC.preprocessing)
    synthetic.populate(store, n_classes=8, per_class=5, layers={"a": 8, "b": 16, "hidden": 12}, paths=files)
    synthetic.populate(
        store,
        n_classes=8,
        per_class=5,
        layers={"a": 8, "hidden": 20},
        paths=files,
        seed=1,
        spec=other,
        predicted={0: 3, 1: 3, 2: 5},
    )
    manifest = tmp_path / "t.csv"
    manifest.write_text(
        "object,related,unrelated\n" + "".join(f"{files[i]},{files[i + 1]},{files[i + 7]}\n" for i in range(0, 30, 3))
    )
    run_matching(store.core, str(manifest), n_boot=50)
    for model in (synthetic.SPEC.key, other.key):
        run_rsa(store.core, model, "glove", groups=5, n_permutations=9)

    curves = [
        line.get_label() for line in figures.draw(store.core, "roc").axes[0].get_lines() if "AUC" in line.get_label()
    ]
    assert [c.split(" · ")[0] for c in curves] == ["other_net@seed1", "synthetic_net@seed0"]
    bars = [c for c in figures.draw(store.core, "errors").axes[0].containers if isinstance(c, BarContainer)]
    assert [len(c.patches) for c in bars] == [2, 2, 2]
    assert [p.get_height() for p in bars[0].patches] == pytest.approx([3 / 40, 0.0])  # top-1 error per model
    legend = figures.draw(store.core, "errors").axes[0].get_legend().get_title().get_text()
    assert legend == "ρ with top-1 error needs >= 3 models with labelled images (2 here)"
    # seed 000 fig 5a: one point per pair at (cosine of A, cosine of B), correlations in the labels
    from scipy.stats import pearsonr

    ax = figures.draw(store.core, "cosines", models=[other.key, synthetic.SPEC.key]).axes[0]
    a, b = (matching_tables(store, m) for m in (other.key, synthetic.SPEC.key))
    for coll, (x, y) in zip(ax.collections, ((a.cos_related, b.cos_related), (a.cos_unrelated, b.cos_unrelated))):
        np.testing.assert_allclose(coll.get_offsets(), np.c_[x, y])
        assert f"Pearson r {pearsonr(x, y).statistic:.2f}" in coll.get_label()
    with pytest.raises(EmbstoreError, match="exactly two models"):
        figures.draw(store.core, "cosines", models=[other.key])
    ax = figures.draw(store.core, "rsa").axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if "·" in line.get_label()}
    assert sorted(lines) == ["other_net@seed1 · glove-6B-50d", "synthetic_net@seed0 · glove-6B-50d"]
    np.testing.assert_allclose(lines["other_net@seed1 · glove-6B-50d"].get_xdata(), [0, 1])
    np.testing.assert_allclose(lines["synthetic_net@seed0 · glove-6B-50d"].get_xdata(), [0, 0.5, 1])
    only = figures.draw(store.core, "roc", models=["other_net"]).axes[0].get_lines()
    assert sum("AUC" in line.get_label() for line in only) == 1
    with pytest.raises(NotFoundError, match="manifest has no rating_related"):
        figures.draw(store.core, "ratings")
    from embstore.report import html as report

    monkeypatch.setattr(report, "MAX_MODELS", 1)
    built = report.build_report(store.core, tmp_path / "r.html")
    assert [f for f in built.figures if f.startswith("predictions")] == ["predictions-other_net@seed1"]
    assert "Figures for the first 1 of 2 models" in built.path.read_text()
    assert sum(f.startswith("matching-roc") for f in built.figures) == 1  # shared figures are not capped


def _texts_off_canvas(fig) -> list[str]:
    """The drawn texts of `fig` whose extent leaves the canvas (more than a pixel)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    w, h = fig.bbox.width, fig.bbox.height
    out = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip():
            continue
        bb = t.get_window_extent(renderer)
        if bb.x0 < -1 or bb.y0 < -1 or bb.x1 > w + 1 or bb.y1 > h + 1:
            out.append(t.get_text())
    return out


def _font_sizes(fig) -> list[float]:
    from matplotlib.text import Text

    return [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


@pytest.fixture(scope="module")
def perfect_store(tmp_path_factory):
    """8 well-separated classes × 5 real pictures: triplets (related = same class) all matched, AUC 1;
    exactly one image misclassified; the classifier's nearest classes mostly have no stored image."""
    from embstore import testing as synthetic
    from embstore.analysis.tasks import matching as run_matching

    from .conftest import blob_picture

    root = tmp_path_factory.mktemp("perfect")
    rng = np.random.default_rng(3)
    files = [blob_picture(root / "imgs" / f"{i:03d}.png", rng) for i in range(8 * 5)]
    store = embstore.open(root / "s", create=True)
    centres = {"hidden": np.eye(8, 12) * 20 + 1, "a": np.eye(8) * 20 + 1}
    synthetic.populate(store, n_classes=8, per_class=5, layers={"a": 8, "hidden": 12}, paths=files,
                       centres=centres, noise=0.1, predicted={0: 3})  # fmt: skip
    manifest = root / "t.csv"
    triplets = "".join(f"{files[i]},{files[i + 1]},{files[(i + 7) % 40]}\n" for i in range(0, 40, 5))
    manifest.write_text("object,related,unrelated\n" + triplets)
    run_matching(store.core, str(manifest), n_boot=50)
    return store


def test_one_failure_title_stays_on_the_canvas(perfect_store):
    fig = figures.draw(perfect_store.core, "failures", n=10)
    assert sum(bool(ax.get_images()) for ax in fig.axes) == 1  # one failure: a one-tile figure
    assert _texts_off_canvas(fig) == []
    assert fig.get_suptitle().replace("\n", " ").startswith("Worst failures · synthetic_net@seed0")
    assert min(_font_sizes(fig)) >= 8


def test_zero_height_bars_are_labelled_and_a_perfect_roc_curve_is_drawn_above_the_frame(perfect_store):
    _, summary = run_sql(perfect_store.core, "SELECT error, auc FROM matching_summary WHERE layer = 'hidden'")
    assert summary == [(0.0, 1.0)]  # the scene this test is about: no matching error, AUC 1
    ax = figures.draw(perfect_store.core, "errors", layer="hidden").axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    heights = [[p.get_height() for p in c.patches] for c in bars]
    assert heights == [[pytest.approx(1 / 40)], [0.0], [0.0]]
    labels = {t.get_text() for t in ax.texts}
    assert {"0.03", "0.00"} <= labels  # each bar, the zero ones too, says its value
    zero_labels = [t for t in ax.texts if t.get_text() == "0.00"]
    assert len(zero_labels) == 2 and all(t.get_visible() for t in zero_labels)
    fig = figures.draw(perfect_store.core, "roc", layer="hidden")
    roc = fig.axes[0]
    curve = next(line for line in roc.get_lines() if "AUC 1.000" in line.get_label())
    assert curve.get_zorder() > max(s.get_zorder() for s in roc.spines.values())
    assert not curve.get_clip_on() and roc.get_ylim()[1] > 1 and roc.get_xlim()[0] < 0
    assert max(curve.get_ydata()) == 1.0
    assert _texts_off_canvas(fig) == []


def test_similar_strip_says_once_which_classes_have_no_image_and_names_rows_once(perfect_store):
    fig = figures.draw(perfect_store.core, "similar", cls="0", k=9, methods=("hidden", "classifier"))
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_fontsize"))]
    assert not any("not available" in t and t.startswith("image") for t in texts)  # no grey box per class
    notes = [t for t in texts if "have no image in this store" in t]
    assert len(notes) == 1
    query_tiles = [ax for ax in fig.axes if ax.get_xlabel() and ax.xaxis.label.get_fontweight() == "bold"]
    heads = [ax.get_xlabel().split("\n")[0] for ax in query_tiles]
    assert heads == ["hidden", "classifier"]  # not "hidden (hidden)"
    assert _texts_off_canvas(fig) == []
    assert min(_font_sizes(fig)) >= 8


def matching_tables(store, model_key):
    """The stored matching result of `model_key` on the newest manifest (as the figures read it)."""
    from embstore.analysis.matchingtables import MatchingTables

    with store.core.read() as con:
        return MatchingTables(con).read(matching.resolve_manifest(con, None), model_key, None)
