"""`embstore report`: one self-contained HTML file describing a store and every analysis in it.

Sections: the store's contents, models, layers, runs and ingest errors, then each computed
analysis with its tables and figures (triplet matching, failures, class statistics and similar
classes, similarity encoding), then the stored comparisons between results with their tests.
Figures and thumbnails are embedded as PNG data URIs, the CSS inline: the file opens anywhere,
offline. A figure that cannot be drawn says why in its place.

>>> build_report(StoreCore.open(), "report.html").figures  # doctest: +SKIP
['matching-errors', 'matching-roc', ...]
"""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from embstore.analysis.labelsets import IMAGENET
from embstore.errors import EmbstoreError, UsageError
from embstore.store.cache import atomic_write
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

MAX_ROWS = 200  # rows shown per table; the count says how many there are
MAX_MODELS = 4  # per-model figures of each kind; the report says when there are more


@dataclass
class Report:
    path: Path
    n_bytes: int
    seconds: float
    sections: list[str]
    figures: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # figure -> why it was not drawn


def build_report(
    store: StoreCore,
    out: str | Path,
    *,
    cls: str | None = None,
    manifest: str | None = None,
    k: int = 9,
    n_cases: int = 4,
    n_failures: int = 10,
    progress=None,
) -> Report:
    """Write the HTML report of `store` to `out`; `cls` picks the similar-classes figure's class
    (default: the class with the most labelled images)."""
    started = time.perf_counter()
    out = Path(out).expanduser()
    if out.is_dir():
        raise UsageError(f"out={out} is a folder; give a file name such as {out / 'report.html'}")
    target = None
    if cls is not None:
        from embstore.analysis.labelsets import find_class

        with store.read() as con:
            target = find_class(con, cls, None)[1]  # an unknown class is an error, not a missing figure
    page = _Page(store, progress)
    page.store_section()
    page.matching_section(manifest, n_cases)
    page.failures_section(n_failures)
    page.classes_section(target, k)
    page.rsa_section()
    page.comparisons_section()
    page.replications_section()
    text = page.render()
    atomic_write(out, lambda f: f.write(text.encode()))
    return Report(
        out,
        len(text.encode()),
        time.perf_counter() - started,
        [t for t, _, _ in page.sections],
        page.figures,
        page.skipped,
    )


class _Page:
    def __init__(self, store: StoreCore, progress):
        self.store = store
        self.progress = progress or (lambda message: None)
        self.sections: list[tuple[str, str, list[str]]] = []  # (title, anchor, html parts)
        self.figures: list[str] = []
        self.skipped: dict[str, str] = {}
        self.models: list[dict] = []  # Catalog.models_overview(), read once by store_section

    # -- sections ----------------------------------------------------------------------------
    def store_section(self) -> None:
        self.progress("store contents")
        with self.store.read() as con:
            cat = Catalog(con)
            s = {"path": str(self.store.path), **cat.summary()}
            models = self.models = cat.models_overview()
            layers = {m["model_key"]: cat.layers_overview(m["model_key"]) for m in models}
            runs = cat.runs_overview(MAX_ROWS)
            by_reason, newest = cat.errors_overview(MAX_ROWS)
        counts = {k: s[k] for k in ("images", "labelled", "models", "vectors", "files", "runs", "errors")}
        self._section(
            "Store",
            [
                f"<p class=path>{_e(s['path'])}</p>",
                "<div class=counts>"
                + "".join(f"<div><b>{v:,}</b><span>{_e(k)}</span></div>" for k, v in counts.items())
                + "</div>",
            ],
        )
        self._section(
            "Models",
            [
                _table(
                    models,
                    s["models"],
                    empty="No model has been ingested yet; run `embstore ingest --model NAME --images DIR`.",
                )
            ]
            + [
                self._figure(f"predictions-{m}", "predictions", f"Stored images and top-2 predictions · {m}", model=m)
                for m in _first([m["model_key"] for m in models if m["images"]])
            ]
            + _more([m for m in models if m["images"]], "plot predictions"),
        )
        self._section(
            "Layers",
            [f"<h3>{_e(m)}</h3>" + _table(rows, len(rows)) for m, rows in layers.items()] or ["<p>No layers yet.</p>"],
        )
        self._section("Runs", [_table(runs, s["runs"], empty="No ingest runs yet.")])
        self._section(
            "Ingest errors",
            [
                f"<p>{s['errors']:,} image(s) could not be ingested.</p>",
                "<h3>By reason</h3>" + _table(by_reason, len(by_reason)) if by_reason else "",
                "<h3>Newest</h3>" + _table(newest, s["errors"]) if newest else "",
            ],
        )

    def matching_section(self, manifest, n_cases) -> None:
        from embstore.analysis import matching
        from embstore.analysis.matchingtables import MatchingTables

        with self.store.read() as con:
            manifests = MatchingTables(con).manifests()
            summaries = {sha: MatchingTables(con).summary(sha) for sha, _, _ in manifests}
            models = {sha: MatchingTables(con).models(sha) for sha, _, _ in manifests}
            rated = {sha for sha, _, _ in manifests if MatchingTables(con).has_ratings(sha)}
        if manifest is not None:
            with self.store.read() as con:
                wanted = matching.resolve_manifest(con, manifest)
            manifests = [m for m in manifests if m[0] == wanted]
        parts = (
            []
            if manifests
            else [_hint("No triplet matching yet", "embstore analyze matching TRIPLETS.csv --model NAME")]
        )
        for sha, n, _ in manifests:
            parts.append(f"<h3>Manifest {sha[:12]} · {n} triplets</h3>")
            parts.append(_table(summaries[sha], len(summaries[sha])))
            tag = sha[:8]
            parts.append(
                self._figure(
                    f"matching-errors-{tag}",
                    "errors",
                    "Matching, AUC and top-1 error by model (seed 000 fig. 6)",
                    manifest=sha,
                )
            )
            parts.append(self._figure(f"matching-roc-{tag}", "roc", "ROC curves (seed 000 fig. 5)", manifest=sha))
            if sha not in rated:  # not a failure: this manifest asks for no ratings figure
                parts.append(
                    "<p>This manifest gives no human ratings (rating_related, rating_unrelated columns), "
                    "so there is no ratings figure (seed 000 fig. 4).</p>"
                )
            for model in _first(models[sha]):
                if sha in rated:
                    parts.append(
                        self._figure(
                            f"matching-ratings-{tag}-{model}",
                            "ratings",
                            f"Cosine against human ratings · {model} (seed 000 fig. 4)",
                            manifest=sha,
                            model=model,
                        )
                    )
                parts.append(
                    self._figure(
                        f"matching-cases-{tag}-{model}",
                        "cases",
                        f"Best, worst and luck cases · {model} (seed 000 figs. 7–10)",
                        manifest=sha,
                        model=model,
                        n=n_cases,
                    )
                )
            parts += _more(models[sha], "plot cases --model NAME")
        self._section("Triplet matching", parts)

    def failures_section(self, n) -> None:
        with self.store.read() as con:
            cat = Catalog(con)
            scored = [(s, sorted(cat.error_rates(s))) for s in cat.labelled_sets()]  # imagenet1k first
        scored = [(s, models) for s, models in scored if models]
        parts = (
            []
            if scored
            else [
                _hint(
                    "No predictions on labelled images", "embstore ingest --model NAME --images DIR_WITH_CLASS_FOLDERS"
                )
            ]
        )
        for label_set, models in scored:
            of = "" if label_set == IMAGENET else f" · label set {label_set}"
            caption = f"Worst classification failures · {{model}}{of} (seed 000 table 1)"
            parts += self._per_model("failures", label_set, models, caption, "plot failures --model NAME", n=n)
        self._section("Classification failures", parts)

    def classes_section(self, target, k) -> None:
        from embstore.analysis.classtables import ClassTables
        from embstore.analysis.labelsets import LabelNames

        with self.store.read() as con:
            cat = Catalog(con)
            overview = ClassTables(con).overview()
            # per label set: the class asked for (on its own set), else the set's largest class
            picks = []
            for label_set in [target.label_set] if target else cat.labelled_sets():
                largest = cat.largest_classes(1, label_set)
                if target is None and not largest:
                    continue
                name = target.name if target else LabelNames.of(con, label_set).name(largest[0][0])
                models = cat.models_with_labelled_vectors(label_set)
                picks.append((label_set, name, models))
        parts = [
            _table(
                overview,
                len(overview),
                empty="No class prototypes or t-statistics materialised yet "
                "(`embstore analyze prototypes` / `tstats`); a similar-classes figure computes what it needs.",
            )
        ]
        if not any(models for _, _, models in picks):
            parts.append(_hint("No labelled images to rank classes with", "embstore ingest --model NAME --images DIR"))
        for label_set, name, models in picks:
            of = "" if label_set == IMAGENET else f" of label set {label_set}"
            caption = f"Classes nearest to {name}{of} · {{model}} (seed 003 figs. 1–2)"
            command = f"plot similar '{name}' --model NAME"
            parts += self._per_model("similar", label_set, models, caption, command, cls=name, k=k)
        self._section("Class statistics and similar classes", parts)

    def rsa_section(self) -> None:
        from embstore.analysis.rsatables import RsaTables

        with self.store.read() as con:
            rows = RsaTables(con).results()
        if not rows:
            self._section(
                "Similarity encoding",
                [_hint("No similarity encoding yet", "embstore analyze rsa --model NAME --vectors glove")],
            )
            return
        mixed = len({(r["concept_set"], r["n_concepts"]) for r in rows}) > 1
        note = "; the curves rest on different concept sets, each line names its set" if mixed else ""
        parts = [self._figure("rsa-2v2", "rsa", f"2 vs 2 accuracy by layer (seed 004 figs. 1–3){note}",
                              mixed_concepts=True)]  # fmt: skip
        if any(r["acc_1v2"] is not None for r in rows):
            parts.append(
                self._figure(
                    "rsa-1v2",
                    "rsa",
                    f"1 vs 2 accuracy on misclassified images (seed 004 fig. 4){note}",
                    measure="acc_1v2",
                    mixed_concepts=True,
                )  # fmt: skip
            )
        shown = [{k: (v[:8] if k == "concept_set" and v else v) for k, v in r.items()
                  if k not in ("computed_at", "concepts_sha")} for r in rows]  # fmt: skip
        parts.append(_table(shown, len(shown)))
        self._section("Similarity encoding", parts)

    def comparisons_section(self) -> None:
        """The stored tests between two results: matching (seed 000) and similarity encoding (seed 004)."""
        from embstore.analysis.matchingtables import MatchingTables
        from embstore.analysis.rsatables import RsaTables

        with self.store.read() as con:
            matching, rsa = MatchingTables(con).tests(), RsaTables(con).tests()
        parts = [
            "<h3>Matching: McNemar's exact test and a paired bootstrap of the triplets (a − b)</h3>",
            _table(matching[:MAX_ROWS], len(matching), empty="No matching comparison yet; run "
                   "`embstore analyze compare MODEL_A[:LAYER] MODEL_B[:LAYER]`."),
            "<h3>Similarity encoding: paired bootstrap of the concepts (a − b)</h3>",
            _table(rsa[:MAX_ROWS], len(rsa), empty="No similarity-encoding comparison yet; run "
                   "`embstore analyze compare MODEL:LAYER MODEL:LAYER --vectors glove`."),
        ]  # fmt: skip
        self._section("Comparisons", parts)

    def replications_section(self) -> None:
        """Each replicated seed's scoreboard: the paper's numbers beside this store's (issue 35)."""
        from embstore.analysis.replicate import replicated_seeds, scoreboard

        self.progress("scoreboards")
        parts = []
        for seed in replicated_seeds(self.store):
            rows = [{"network": s.item, "measure": s.measure,
                     "paper": s.paper if s.paper is not None else s.paper_text, "here": s.store,
                     "95% CI": f"{s.ci[0]:.4g} – {s.ci[1]:.4g}" if s.ci else None, "difference": s.difference,
                     "computed differently": "; ".join(s.marks) or None, "note": s.note or None}
                    for s in scoreboard(self.store, seed)]  # fmt: skip
            parts += [f"<h3>{_e(seed)}</h3>", _table(rows, len(rows))]
        if not parts:
            parts = ["<p class=empty>No paper replicated yet; run `embstore replicate seed000|seed003|seed004`.</p>"]
        self._section("Replications", parts)

    # -- pieces ------------------------------------------------------------------------------
    def _per_model(self, kind: str, label_set: str, models: list[str], caption: str, command: str, **options):
        """A `kind` figure of `label_set` for each of the first models (`caption` with a {model} field),
        and how to draw the others."""
        suffix = "" if label_set == IMAGENET else f"-{label_set}"
        figures = [
            self._figure(
                f"{kind}-{m}{suffix}", kind, caption.replace("{model}", m), model=m, label_set=label_set, **options
            )
            for m in _first(models)
        ]
        return figures + _more(models, command + ("" if label_set == IMAGENET else f" --labels {label_set}"))

    def _figure(self, name: str, kind: str, caption: str, **options) -> str:
        from embstore.report.canvas import png_bytes
        from embstore.report.figures import draw

        self.progress(f"figure {name}")
        try:
            fig = draw(self.store, kind, **options)
        except EmbstoreError as exc:
            self.skipped[name] = str(exc)
            return (
                f"<figure class=skipped id='fig-{_e(name)}'><figcaption>{_e(caption)}: not drawn — {_e(exc)}"
                "</figcaption></figure>"
            )
        data = base64.b64encode(png_bytes(fig)).decode()
        self.figures.append(name)
        return (
            f"<figure id='fig-{_e(name)}'><img alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )

    def _section(self, title: str, parts: list[str]) -> None:
        anchor = title.lower().replace(" ", "-")
        self.sections.append((title, anchor, parts))

    def render(self) -> str:
        nav = "".join(f"<a href='#{a}'>{_e(t)}</a>" for t, a, _ in self.sections)
        body = "".join(f"<section id='{a}'><h2>{_e(t)}</h2>{''.join(parts)}</section>" for t, a, parts in self.sections)
        when = datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            f"<!doctype html><html lang=en><head><meta charset=utf-8><title>embstore report · "
            f"{_e(Path(self.store.path).name)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>embstore report</h1><p>{_e(str(self.store.path))} · generated {when} by embstore "
            f"{_e(_version())} · {len(self.figures)} figures</p><nav>{nav}</nav></header><main>{body}</main>"
            "</body></html>"
        )


def _first(models: list) -> list:
    return models[:MAX_MODELS]


def _more(models: list, command: str) -> list[str]:
    """A note when per-model figures stopped at MAX_MODELS."""
    if len(models) <= MAX_MODELS:
        return []
    return [
        f"<p class=more>Figures for the first {MAX_MODELS} of {len(models)} models; draw the others with "
        f"<code>embstore {_e(command)}</code>.</p>"
    ]


def _table(rows: list[dict], total: int, *, empty: str = "Nothing yet.") -> str:
    if not rows:
        return f"<p class=empty>{_e(empty)}</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    more = f"<p class=more>showing {len(rows):,} of {total:,}</p>" if total > len(rows) else ""
    return f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}"


def _cell(value) -> str:
    if value is None:
        return "<span class=null>—</span>"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _e(value)


def _hint(what: str, command: str) -> str:
    return f"<p class=empty>{_e(what)}; run <code>{_e(command)}</code>.</p>"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embstore")
    except PackageNotFoundError:
        return "dev"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#23313f;color:#fff;padding:14px 24px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0 0 8px;opacity:.85;font-size:12px}nav a{color:#cfe3ff;margin-right:14px;font-size:13px}
main{padding:8px 24px 40px}section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:16px 0;
padding:4px 18px 14px}h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:4px}h3{font-size:15px}
.counts{display:flex;flex-wrap:wrap;gap:10px}.counts div{background:#f0f4f8;border-radius:6px;padding:8px 14px;
min-width:90px}.counts b{display:block;font-size:20px}.counts span{font-size:12px;color:#555}
.scroll{overflow-x:auto;max-height:480px;overflow-y:auto}table{border-collapse:collapse;font-size:12px}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;white-space:nowrap}
th{background:#f5f5f5;position:sticky;top:0}td{font-variant-numeric:tabular-nums}
figure{margin:14px 16px 14px 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;display:block;border:1px solid #eee}
figcaption{font-size:12px;color:#444;margin-top:4px}figure.skipped figcaption{color:#a33}
.empty,.more,.null{color:#777}.path{font-family:monospace}code{background:#f0f0f0;padding:1px 4px}
"""
