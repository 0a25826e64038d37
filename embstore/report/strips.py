"""Image-strip figures: similar classes with an example image each (seed 003 figs 1–2), the best /
worst / luck cases of triplet matching (seed 000 figs 7–10) and the worst classification failures
(seed 000 table 1). Images come from the store's thumbnail cache (`thumbnails`)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from embstore.errors import NotFoundError, UsageError
from embstore.report.canvas import CAPTION, new_figure, title
from embstore.report.thumbnails import Thumbnails
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

CASE_TITLES = {
    "best": "best: matched, largest margin",
    "worst": "worst: missed, largest margin",
    "good_luck": "good luck: matched, smallest margin",
    "bad_luck": "bad luck: missed, smallest margin",
}


def similar(
    store: StoreCore,
    *,
    cls: str,
    k: int = 9,
    model: str | None = None,
    layer: str | None = None,
    methods: tuple[str, ...] = ("prototype", "tstat", "hidden", "classifier"),
    label_set: str | None = None,
):
    """One row per method: the query class, then its k nearest classes of its label set, each with
    one example image from the store (a correctly classified one where there is one) and the cosine."""
    from embstore.analysis.labelsets import IMAGENET, find_class
    from embstore.analysis.similarity import METHODS, similar_classes

    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UsageError(f"unknown method '{bad[0] if bad else ''}'; choose from {', '.join(METHODS)}")
    with store.read() as con:
        _, target = find_class(con, cls, label_set)
    answers, failed = [], []
    for method in methods:
        if method == "classifier" and target.label_set != IMAGENET:
            failed.append((method, f"the classifier ranks ImageNet classes, not label set {target.label_set}'s"))
            continue
        try:
            answers.append(similar_classes(store, cls, k=k, model=model, layer=layer, method=method,
                                           label_set=target.label_set))  # fmt: skip
        except NotFoundError as exc:  # e.g. no classifier weights, or too few images for t-statistics
            failed.append((method, str(exc)))
    if not answers:
        raise NotFoundError(f"no method could rank classes near {target.name}: {failed[0][1]}")
    wanted = {target.index} | {row.detail["index"] for a in answers for row in a.rows}
    with store.read() as con:
        examples = Catalog(con).example_images(sorted(wanted), answers[0].model_key, target.label_set)
    thumbs = Thumbnails(store).get_many(list(examples.values()))
    picture = {c: thumbs.get(image_id) for c, (image_id, _) in examples.items()}
    shown = {target.index} | {row.detail["index"] for a in answers for row in a.rows}
    no_image = sorted(c for c in shown if picture.get(c) is None)
    rows = len(answers) + len(failed) + bool(no_image)
    fig = new_figure(1.45 * (k + 1) + 0.4, 1.95 * rows + 0.5)
    title(fig, f"Classes nearest to {target.name} · {answers[0].model_key}")
    grid = fig.add_gridspec(rows, k + 1)
    for r, a in enumerate(answers):
        # the method, and the layer where it is not the method's own (hidden, classifier)
        head = a.method if a.layer in (a.method, "", None) else f"{a.method}\n({a.layer})"
        cells = [(target.name, target.index, head, True)]
        cells += [(row.label, row.detail["index"], f"{row.rank}. {row.score:.3f}", False) for row in a.rows]
        for c, (name, index, note, is_query) in enumerate(cells):
            ax = fig.add_subplot(grid[r, c])
            _tile(ax, picture.get(index), f"{note}\n{_wrap(name)}", bold=is_query, missing="blank")
    for r, (method, reason) in enumerate(failed, start=len(answers)):
        ax = fig.add_subplot(grid[r, :])
        ax.axis("off")
        ax.text(
            0.0,
            0.5,
            f"{method}: not available — {_wrap(reason, 140)}",
            fontsize=CAPTION,
            va="center",
            transform=ax.transAxes,
            color="0.35",
        )
    if no_image:  # said once, not as a grey box per class
        ax = fig.add_subplot(grid[rows - 1, :])
        ax.axis("off")
        ax.text(0.0, 0.5, f"{len(no_image)} of the {len(shown)} classes shown have no image in this store "
                f"(names only): ingest labelled images of them to see examples", fontsize=CAPTION,
                va="center", transform=ax.transAxes, color="0.35")  # fmt: skip
    return fig


def cases(
    store: StoreCore,
    *,
    manifest: str | None = None,
    model: str | None = None,
    layer: str | None = None,
    n: int = 4,
    which: tuple[str, ...] = ("best", "worst", "good_luck", "bad_luck"),
):
    """For each case kind, up to n triplets as rows of object | related | unrelated thumbnails,
    with both cosines and their difference."""
    from embstore.analysis import matching
    from embstore.analysis.matchingtables import MatchingTables

    bad = [w for w in which if w not in matching.CASES]
    if bad or not which:
        raise UsageError(f"unknown case '{bad[0] if bad else ''}'; choose from {', '.join(matching.CASES)}")
    if n < 1:
        raise UsageError("n must be at least 1")
    with store.read() as con:
        sha = matching.resolve_manifest(con, manifest)
        key = Catalog(con).resolve_model(model) if model else MatchingTables(con).models(sha)[0]
        r = MatchingTables(con).read(sha, key, layer)
    order = matching.cases(r.cos_related, r.cos_unrelated)
    chosen = {w: order[w][:n] for w in which}
    ids = [(i, r.paths.get(i)) for w in which for t in chosen[w] for i in r.ids[t]]
    thumbs = Thumbnails(store).get_many(ids)
    fig = new_figure(3.6 * len(which) + 0.3, 1.45 * n + 1.1)
    title(fig, f"Triplet matching cases · {r.model_key} · {r.layer} · error {r.error:.1%}")
    panels = fig.subfigures(1, len(which), wspace=0.02) if len(which) > 1 else [fig]
    for panel, w in zip(panels, which):
        panel.suptitle(CASE_TITLES[w], fontsize=CAPTION + 1)
        axes = panel.subplots(n, 3, squeeze=False)
        for row in range(n):
            if row >= len(chosen[w]):
                for ax in axes[row]:
                    ax.axis("off")
                continue
            t = chosen[w][row]
            cr, cu = r.cos_related[t], r.cos_unrelated[t]
            notes = [f"object #{t}", f"related {cr:.3f}", f"unrelated {cu:.3f}"]
            for ax, image_id, note in zip(axes[row], r.ids[t], notes):
                _tile(ax, thumbs.get(image_id), note)
            axes[row][0].set_ylabel(f"Δ {cr - cu:+.3f}", fontsize=CAPTION)
        if not chosen[w]:
            axes[0][1].text(0.5, 0.5, "none", ha="center", va="center", transform=axes[0][1].transAxes)
    return fig


def failures(
    store: StoreCore, *, model: str | None = None, n: int = 10, per_row: int = 5, label_set: str | None = None
):
    """The n worst top-1 failures (highest rank of the true class), each image with its true and
    predicted class, the rank and probability of the true class."""
    from embstore.analysis.tasks import failures as failure_report

    report = failure_report(store, model, label_set=label_set, limit=n)
    if report.n_labelled == 0:
        raise NotFoundError(
            f"{report.model_key} has no predictions on labelled images; ingest a labelled folder "
            "(one folder per wnid or class name) first"
        )
    if not report.failures:
        raise NotFoundError(f"{report.model_key} classified all {report.n_labelled} labelled images correctly")
    tiles = [
        (
            f["image_id"],
            f["path"],
            f"true: {_wrap(f['true'], 24)}\nrank {_or_dash(f['true_rank'])}, p {_or_dash(f['true_prob'], '.3f')}"
            f"\npred: {_wrap(f['predicted'], 24)} ({f['predicted_prob']:.2f})",
        )
        for f in report.failures[:n]
    ]
    return _gallery(
        store,
        tiles,
        f"Worst failures · {report.model_key} · top-1 error {report.top1_error:.1%}, "
        f"top-5 error {report.top5_error:.1%} on {report.n_labelled} labelled images"
        + ("" if report.label_set == "imagenet1k" else f" of {report.label_set}"),
        per_row,
        (2.5, 2.8),
    )


def predictions(store: StoreCore, *, model: str | None = None, n: int = 12, per_row: int = 6):
    """n stored images (spread evenly by path) with the model's top-1 and top-2 classes, and the true
    class where the image is labelled."""
    from embstore.labels.imagenet import classes

    with store.read() as con:
        key = Catalog(con).resolve_model(model)
        rows = Catalog(con).sample_predictions(key, n)
    if not rows:
        raise NotFoundError(f"no predictions stored for {key}")
    names = classes()
    short = lambda index: _wrap(names[index].name, 20).splitlines()[0]  # noqa: E731
    tiles = []
    for r in rows:
        (a, b), (pa, pb) = r["top5_index"][:2], r["top5_prob"][:2]
        if r["label_index"] is None:
            truth = ""
        elif r["label_set"] == "imagenet1k":
            truth = f"\ntrue: {short(r['label_index'])} (rank {r['true_rank']})"
        else:  # another vocabulary: its name, which the ImageNet head does not rank
            truth = f"\n{r['label_set']}: {_wrap(r['label_name'], 20).splitlines()[0]}"
        tiles.append((r["image_id"], r["path"], f"{short(a)} {pa:.2f}\n{short(b)} {pb:.2f}{truth}"))
    return _gallery(store, tiles, f"Stored images and predictions · {key}", per_row, (2.2, 2.6))


def _or_dash(value, fmt: str = "") -> str:
    """A value for a caption; a missing one (NULL rank or probability) as "–", never a crash."""
    return "–" if value is None else format(value, fmt)


def _gallery(
    store: StoreCore, tiles: list[tuple[str, str, str]], heading: str, per_row: int, cell: tuple[float, float]
):
    """(image_id, path, caption) tiles in rows of `per_row`, each `cell` inches."""
    thumbs = Thumbnails(store).get_many([(i, p) for i, p, _ in tiles])
    per_row = min(per_row, len(tiles))
    rows = -(-len(tiles) // per_row)
    fig = new_figure(max(cell[0] * per_row, 5.0), cell[1] * rows + 0.9)  # a one-tile figure still fits its title
    title(fig, heading, fontsize=10)
    for ax, tile in zip(fig.subplots(rows, per_row, squeeze=False).flat, tiles + [None] * (rows * per_row)):
        if tile is None:
            ax.axis("off")
        else:
            _tile(ax, thumbs.get(tile[0]), tile[2])
    return fig


def _tile(ax, image, caption: str, *, bold: bool = False, missing: str = "box") -> None:
    """An image with its caption below; no image: a grey box saying so (`missing="box"`: the file is
    gone), or the caption alone (`"blank"`: the figure says once what has no image)."""
    if image is None and missing == "blank":
        for spine in ax.spines.values():
            spine.set_visible(False)
    elif image is None:
        ax.set_facecolor("0.9")
        ax.text(0.5, 0.5, "image\nnot available", ha="center", va="center", fontsize=CAPTION - 1, color="0.4",
                transform=ax.transAxes)  # fmt: skip
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(caption, fontsize=CAPTION, fontweight="bold" if bold else "normal")


def _wrap(text: str, width: int = 18) -> str:
    return "\n".join(textwrap.wrap(text, width)[:3]) or text
