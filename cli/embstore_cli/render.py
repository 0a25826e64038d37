"""Rich rendering of library results; nothing here computes anything."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


class IngestProgress:
    """A progress bar fed by the library's `progress(n, total)` callback."""

    def __enter__(self):
        self._progress = None  # started on the first callback, so early errors print alone
        return self

    def update(self, n: int, total: int) -> None:
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]ingest"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("ingest", total=total, rate="-")
            return
        self._progress.advance(self._task, n)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate=f"{speed:.1f}" if speed else "-")

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc) if self._progress else None


def ingest_summary(r, store_path) -> None:
    t = Table(title=f"ingest {r.model_key} — {r.status}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("store", str(store_path)),
        ("run", r.run_id),
        ("device", r.device),
        ("layers", f"{len(r.layers)} ({', '.join(r.layers[:4])}{', …' if len(r.layers) > 4 else ''})"),
        ("images found", str(r.n_images)),
        ("stored now", str(r.n_done)),
        ("already stored (skipped)", str(r.n_skipped)),
        ("duplicate content", str(r.n_duplicates)),
        ("errors", str(r.n_errors)),
        ("non-image files ignored", str(r.n_ignored)),
        ("time", f"{r.seconds:.1f} s (load {r.load_s:.1f}, forward {r.forward_s:.1f}, write {r.write_s:.1f})"),
        ("throughput", f"{r.images_per_s:.1f} images/s"),
        ("peak memory", f"{r.peak_rss_mb:.0f} MiB"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    for line in r.recovered:
        console.print(f"[yellow]recovered:[/] {line}")
    if r.errors:
        e = Table(title=f"{len(r.errors)} image(s) skipped (see table ingest_errors)")
        e.add_column("path", overflow="fold")
        e.add_column("reason", overflow="fold")
        for path, reason in r.errors[:20]:
            e.add_row(path, reason)
        console.print(e)


def models_table(specs) -> None:
    t = Table(title=f"{len(specs)} models")
    for c in ("model", "source", "default weights", "resize→crop", "mean / std", "interpolation"):
        t.add_column(c)
    for s in specs:
        p = s.preprocessing
        t.add_row(
            s.name,
            s.source,
            s.weights,
            f"{p.resize}→{p.crop}",
            f"{tuple(round(m, 3) for m in p.mean)} / {tuple(round(v, 3) for v in p.std)}",
            p.interpolation,
        )
    console.print(t)
    console.print("Also any timm model as timm:NAME (weights none or a file).")


def layers_table(model, layers) -> None:
    t = Table(title=f"{model}: {len(layers)} layers (* = default set)")
    for c in ("", "layer", "channels", "kind", "reduction"):
        t.add_column(c)
    for l in layers:
        t.add_row("*" if l.default else "", l.name, str(l.channels), l.kind, l.reduction)
    console.print(t)


def verify_report(r) -> None:
    console.print(f"{r.files} files, {r.rows} vectors checked")
    for label, items in (("missing", r.missing), ("corrupt", r.corrupt), ("orphan", r.orphans), ("staged", r.staged)):
        for item in items[:20]:
            console.print(f"[red]{label}:[/] {item}")
    if r.dangling_index_rows:
        console.print(f"[red]index rows without a file:[/] {r.dangling_index_rows}")
    if r.interrupted_runs:
        console.print(f"[yellow]unfinished runs:[/] {r.interrupted_runs}")
    for line in r.repaired:
        console.print(f"[green]repaired:[/] {line}")
    console.print("[green]OK: catalog and files agree[/]" if r.ok else "[red]NOT OK[/]: run `embstore verify --repair`")


def status(s: dict) -> None:
    t = Table(title=f"store {s['path']}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for k in ("images", "labelled", "models", "vectors", "files", "runs", "errors"):
        t.add_row(k, str(s[k]))
    console.print(t)
    if s["per_model"]:
        m = Table(title="models")
        for c in ("model", "layers", "images", "top-1 err", "top-5 err"):
            m.add_column(c)
        for row in s["per_model"]:
            m.add_row(*[("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)) for v in row])
        console.print(m)


def answer(a, *, as_json: bool, as_csv: bool, columns: tuple[str, ...]) -> None:
    """Nearest classes or images as a Rich table, JSON or CSV."""
    rows = [
        {"rank": n.rank, "name": n.label, "score": round(n.score, 6), **{c: n.detail.get(c) for c in columns}}
        for n in a.rows
    ]
    if as_json:
        import json

        print(
            json.dumps(
                {
                    "query": a.query,
                    "model": a.model_key,
                    "layer": a.layer,
                    "method": a.method,
                    "results": rows,
                    "notes": a.notes,
                },
                indent=2,
            )
        )
        return
    if as_csv:
        import csv
        import sys

        w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["rank", "name", "score", *columns])
        w.writeheader()
        w.writerows(rows)
        return
    t = Table(title=f"{a.query} — {a.model_key}, layer {a.layer}, {a.method}")
    for c in ("rank", "name", "score", *columns):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*["" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()])
    console.print(t)
    for note in a.notes:
        console.print(f"[dim]{note}[/]")


def rows(columns, data, *, as_json: bool, as_csv: bool) -> None:
    """Any SQL result."""
    if as_json:
        import json

        print(json.dumps([dict(zip(columns, r)) for r in data], default=str, indent=2))
        return
    if as_csv:
        import csv
        import sys

        w = csv.writer(sys.stdout)
        w.writerow(columns)
        w.writerows(data)
        return
    t = Table()
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in data:
        t.add_row(*["NULL" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in r])
    console.print(t)
    console.print(f"[dim]{len(data)} row(s)[/]")


def matching(report) -> None:
    t = Table(title=f"triplet matching — {len(report.triplets.paths)} triplets (seed 000 table 2)")
    for c in ("model", "layer", "matching error", "95% CI", "AUC", "ImageNet top-1 err"):
        t.add_column(c)
    for r in report.layers:
        top1 = report.top1_error.get(r.model_key)
        t.add_row(
            r.model_key,
            r.layer,
            f"{r.error:.3f}",
            f"{r.ci[0]:.3f}–{r.ci[1]:.3f}",
            f"{r.auc:.3f}",
            "-" if top1 is None else f"{top1:.3f}",
        )
    console.print(t)
    if report.layers:
        last = report.layers[-1]
        console.print(f"cases for {last.model_key} / {last.layer} (triplet numbers; SQL: matching_results):")
        for name, idx in last.cases.items():
            console.print(f"  {name:9s} {idx[:5]}")


def failures(r) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    console.print(
        f"{r.model_key}: {r.n_labelled} labelled images, top-1 error {fmt(r.top1_error)}, "
        f"top-5 error {fmt(r.top5_error)}, median rank of the true class {fmt(r.median_true_rank)}; "
        f"{r.n_failures} top-1 failures"
    )
    for title, items in (
        ("failures, lowest-ranked true class first", r.failures),
        (f"close failures (WordNet Wu-Palmer >= {r.close_at}), lowest-ranked true class first", r.close),
    ):
        t = Table(title=title)
        for c in ("image", "true", "predicted", "p(pred)", "rank(true)", "p(true)", "wup"):
            t.add_column(c, overflow="fold")
        for f in items:
            t.add_row(
                f["path"],
                f["true"],
                f["predicted"],
                f"{f['predicted_prob']:.3f}",
                str(f["true_rank"]),
                f"{f['true_prob']:.4f}",
                f"{f['wup']:.2f}",
            )
        console.print(t)


def rsa(r) -> None:
    cov = r.coverage.summary() if r.coverage else None
    console.print(
        f"{r.model_key} vs {r.reference}: {len(r.concepts)} concepts, {r.n_groups} groups, "
        f"{r.n_permutations} permutations" + (f"; class names: {cov}" if cov else "")
    )
    if r.coverage and r.coverage.dropped:
        console.print("dropped (no vector): " + ", ".join(r.coverage.dropped_names()))
    t = Table(title="similarity encoding by layer (table rsa_results); chance 2v2 = 0.5")
    for c in ("layer", "2v2 acc", "p", "RSA spearman", "RSA pearson", "1v2 acc (n)"):
        t.add_column(c)
    for row in r.rows:
        t.add_row(
            row.layer,
            f"{row.acc_2v2:.3f}",
            "-" if row.p_value is None else f"{row.p_value:.4f}",
            f"{row.rsa_spearman:.3f}",
            f"{row.rsa_pearson:.3f}",
            "-" if row.acc_1v2 is None else f"{row.acc_1v2:.3f} ({row.n_1v2})",
        )
    console.print(t)


def materialised(results) -> None:
    t = Table(title=f"{results[0].table if results else 'nothing'} — query it with `embstore sql`")
    for c in ("model", "layer", "classes", "images", "channels", "left out (<2 images)", "state"):
        t.add_column(c)
    for r in results:
        t.add_row(
            r.model_key,
            r.layer,
            str(r.n_classes),
            str(r.n_images),
            str(r.channels),
            str(r.skipped),
            "recomputed" if r.recomputed else "up to date",
        )
    console.print(t)


def pair(a, b, layer, t, df) -> None:
    import numpy as np

    order = np.argsort(-np.abs(t))[:10]
    tab = Table(title=f"{a.name} vs {b.name} on {layer}: Welch t per channel (10 largest |t|)")
    for c in ("channel", "t", "df"):
        tab.add_column(c)
    for ch in order:
        tab.add_row(str(int(ch)), f"{t[ch]:.3f}", f"{df[ch]:.1f}")
    console.print(tab)


class Status:
    """A spinner on stderr fed by the library's `progress(message)` callback."""

    def __init__(self, title: str):
        self.title = title

    def __enter__(self):
        self._status = Console(stderr=True).status(self.title)
        self._status.__enter__()
        return self

    def update(self, message: str) -> None:
        self._status.update(f"{self.title}: {message}")

    def __exit__(self, *exc):
        return self._status.__exit__(*exc)


def written(paths) -> None:
    for p in paths:
        console.print(f"wrote {p}", soft_wrap=True, highlight=False)  # a path must stay copy-pasteable


def report(r) -> None:
    console.print(
        f"wrote {r.path} ({r.n_bytes / 1e6:.1f} MB, {len(r.figures)} figures, {r.seconds:.1f} s)",
        soft_wrap=True,
        highlight=False,
    )
    for name, why in r.skipped.items():
        console.print(f"  [yellow]not drawn[/yellow] {name}: {why}")
