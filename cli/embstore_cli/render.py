"""Rendering of library results as Rich tables (fit to the terminal) or JSON; nothing here computes anything.

Under --json every command prints one JSON object on stdout (shapes in the README) and errors print
`{"error": {"type", "message", "exit_code"}}` on stderr.
Over ~450 lines: one renderer per command's result, sharing the table-fitting helpers at the top.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
errors = Console(stderr=True)


@dataclass
class Output:
    """How the user asked to see results (global options)."""

    store: Path | None = None
    json: bool = False
    quiet: bool = False
    wide: bool = False
    wait: float = 0.0  # seconds a writing command waits for another writer


def jsonable(value):
    """Any result in its one JSON shape (`embstore.to_json`: the same as `embstore serve`'s /api)."""
    import embstore

    return embstore.to_json(value)


def emit(payload: dict) -> None:
    print(json.dumps(jsonable(payload), indent=2, ensure_ascii=False))


_PHRASES = {"`embstore.open(path, create=True)`": "`embstore ingest --images DIR`"}
_PARAMETER = re.compile(r"`([a-z_]+)=([^`]*)`")


def cli_message(text: str) -> str:
    """A library message in the CLI's spelling: the library names parameters (`weights=FILE`,
    `write=True`, `engine='ray'`), the CLI its options (`--weights FILE`, `--write`, `--engine ray`).

    >>> cli_message("pass `weights=FILE`, or `weights='none'`; `write=True`; (`amp=`)")
    "pass `--weights FILE`, or `--weights none`; `--write`; (`--amp`)"
    """
    for phrase, cli in _PHRASES.items():
        text = text.replace(phrase, cli)

    def option(m: re.Match) -> str:
        flag, value = "--" + m.group(1).replace("_", "-"), m.group(2).strip("'\"")
        return f"`{flag}`" if value in ("", "True") else f"`{flag} {value}`"

    return _PARAMETER.sub(option, text)


def error(kind: str, message: str, exit_code: int, *, as_json: bool) -> None:
    message = cli_message(message)
    if as_json:
        sys.stderr.write(json.dumps({"error": {"type": kind, "message": message, "exit_code": exit_code}}) + "\n")
    else:
        sys.stderr.write(f"embstore: {'error: ' if exit_code != 130 else ''}{message}\n")


def note(out: Output, text: str) -> None:
    if not out.quiet:
        errors.print(Text(cli_message(text), style="dim"), soft_wrap=True, highlight=False)


def _num(v, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt) if isinstance(v, float) else str(v)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# -- ingest ------------------------------------------------------------------------------------
class IngestProgress:
    """A progress bar (count, rate, elapsed, ETA) fed by the library's `progress(n, total)` callback:
    `n` more done of `total`."""

    def __init__(self, out: Output, label: str = "ingest", unit: str = "img"):
        self.out, self.label, self.unit = out, label, unit
        self._progress: Any = None  # started on the first callback, so early errors print alone

    def __enter__(self):
        return self

    def update(self, n: int, total: int) -> None:
        if self.out.quiet or self.out.json:
            return
        if self._progress is None:
            if total == 0:
                return  # nothing to do: the summary says why
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=errors,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=total, rate=f"… {self.unit}/s")
            self._started, self._done = time.monotonic(), 0
            if not n:
                return
        self._done += n
        elapsed = time.monotonic() - self._started
        rate = f"{self._done / elapsed:.1f} {self.unit}/s" if elapsed > 0 and self._done else f"… {self.unit}/s"
        self._progress.update(self._task, advance=n, rate=rate)

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc) if self._progress else None


def ingest_summary(out: Output, r, store_path) -> None:
    if out.json:
        emit({"store": store_path, **jsonable(r), "images_per_s": r.images_per_s})
        return
    if r.n_images and not (r.n_done or r.n_errors or r.n_duplicates) and r.n_skipped == r.n_images:
        console.print(
            f"nothing to do: all {r.n_images} image(s) are already stored for {r.model_key} "
            f"({_plural(len(r.layers), 'layer')})",
            soft_wrap=True,
        )
    t = Table(title=f"ingest {r.model_key} — {r.status}", show_header=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    rows = [
        ("store", str(store_path)),
        ("run", r.run_id),
        (
            "device",
            f"{r.device}, decoding in {r.workers} process{'' if r.workers == 1 else 'es'}" if r.workers else r.device,
        ),
        ("layers", f"{len(r.layers)} ({', '.join(r.layers[:4])}{', …' if len(r.layers) > 4 else ''})"),
        ("images found", str(r.n_images)),
        ("stored now", str(r.n_done)),
        ("already stored (skipped)", str(r.n_skipped)),
        ("duplicate content", str(r.n_duplicates)),
        ("errors", str(r.n_errors)),
        *([("label set", f"{r.label_set} ({r.new_labels} new label(s))")] if r.label_set else []),
        ("non-image files ignored", str(r.n_ignored)),
        *([("relabelled", str(r.n_relabelled))] if r.n_relabelled else []),
        *(
            [("labels differing (kept)", f"{r.n_label_conflicts}: --relabel updates them")]
            if r.n_label_conflicts
            else []
        ),
        ("time", f"{r.seconds:.1f} s (load {r.load_s:.1f}, forward {r.forward_s:.1f}, write {r.write_s:.1f})"),
        ("commits", f"{r.commits} ({r.dtype})"),
        ("throughput", f"{r.images_per_s:.1f} images/s"),
        ("peak memory", f"{r.peak_rss_mb:.0f} MiB"),
    ]
    if r.compaction is not None:
        c = r.compaction
        rows.append(("compaction", f"{c.files_before} → {c.files_after} files in {c.seconds:.1f} s"))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    for line in r.recovered:
        console.print(Text.assemble(("recovered: ", "yellow"), cli_message(line)))
    for line in r.notes:
        console.print(Text.assemble(("note: ", "yellow"), cli_message(line)))
    if r.errors:
        # paths below the folder they share (named in the title): short, and never two rows alike
        shown = r.errors[:20]
        base = "" if out.wide else _common_folder([path for path, _ in shown])
        under = f" under {base}" if base else ""
        e = Table(title=f"{_plural(len(r.errors), 'image')} skipped{under} (see table ingest_errors)")
        e.add_column("file", overflow="fold")
        e.add_column("reason", overflow="fold")
        for path, reason in shown:
            e.add_row(os.path.relpath(path, base) if base else path, reason)
        console.print(e)


def _common_folder(paths: list[str]) -> str:
    absolute = [p for p in paths if os.path.isabs(p)]
    if len(absolute) != len(paths) or not paths:
        return ""
    return os.path.commonpath([os.path.dirname(p) for p in paths])


def demo(out: Output, result, store_path) -> None:
    if out.json:
        emit(
            {
                "ingest": {"store": store_path, **jsonable(result.ingest)},
                "similar": jsonable(result.similar),
                "nearest": jsonable(result.nearest),
                "failures": jsonable(result.failures),
                "report": _report_json(result.report),
            }
        )
        return
    ingest_summary(out, result.ingest, store_path)
    answer(out, result.similar, fmt="table", kind="classes")
    answer(out, result.nearest, fmt="table", kind="images")
    matching(out, result.matching)
    failures(out, result.failures)
    report(out, result.report)


# -- models and layers ---------------------------------------------------------------------------
def models_table(out: Output, specs, choices) -> None:
    """`specs`: each model's spec with its DEFAULT weights; `choices`: {name: its weights choices}."""
    if out.json:
        emit({"models": [{**jsonable(s), "key": s.key, "weights_choices": [jsonable(w) for w in choices[s.name]]}
                         for s in specs]})  # fmt: skip
        return
    t = Table(title=f"{len(specs)} models")
    t.add_column("model", no_wrap=True)  # names are copied into commands: never wrapped
    t.add_column("DEFAULT weights (top-1 %)", overflow="fold", min_width=13)
    t.add_column("other weights", overflow="fold")
    t.add_column("resize→crop", no_wrap=True)
    t.add_column("interp.", no_wrap=True)
    if out.wide:
        t.add_column("mean / std")
    for s in specs:
        p = s.preprocessing
        default = next((w for w in choices[s.name] if w.default), None)
        shown = s.weights if default is None or default.top1 is None else f"{default.name} ({default.top1:.1f})"
        others = ", ".join(f"{w.name} ({w.top1:.1f})" if w.top1 else w.name for w in choices[s.name] if not w.default)
        cells = [s.name, shown, others, f"{p.resize}→{p.crop}", p.interpolation]
        if out.wide:
            cells.append(f"{tuple(round(m, 3) for m in p.mean)} / {tuple(round(v, 3) for v in p.std)}")
        t.add_row(*cells)
    console.print(t)
    console.print(
        "Top-1: torchvision's published ImageNet-1k single-crop accuracy. resnet50/101/152's DEFAULT is the 2021 "
        "recipe (V2); the 2016 papers used V1: --weights IMAGENET1K_V1. Also any timm model as timm:NAME "
        "(weights none or a file).",
        soft_wrap=True,
    )


def layers_table(out: Output, model, layers, total: int, trace_error: str | None = None) -> None:
    if out.json:
        emit({"model": model, "traced": trace_error is None, "trace_error": trace_error,
              "layers": [jsonable(layer) for layer in layers]})  # fmt: skip
        return
    shown = "" if len(layers) == total else f", {len(layers)} shown"
    t = Table(title=f"{model}: {total} layers{shown} (* = default set)")
    columns = ("", "layer", "module", "call", "type", "channels", "size") + (("sets", "kind") if out.wide else ())
    for c in columns:  # a layer name is never wrapped: it is what the user types next
        t.add_column(c, no_wrap=c == "layer", overflow="fold")
    for layer in layers:
        call = f"{layer.call + 1}/{layer.calls}" if layer.calls > 1 else ""
        cells = ["*" if layer.default else "", layer.name, layer.module, call, layer.type, str(layer.channels),
                 "×".join(map(str, layer.size))]  # fmt: skip
        t.add_row(*cells, *((",".join(layer.sets), layer.kind) if out.wide else ()))
    console.print(t)
    if trace_error:
        console.print(f"note: torch.fx cannot trace {model} ({trace_error}): only modules called once are listed",
                      soft_wrap=True)  # fmt: skip


def layer_aliases(out: Output, model, scheme: str, table: dict) -> None:
    if out.json:
        emit({"model": model, "scheme": scheme, "aliases": table})
        return
    if not table:
        console.print(f"{model} has no {scheme} names (they exist for VGG, ResNet and Inception v3)")
        return
    t = Table(title=f"{model}: {len(table)} {scheme} names")
    for c in (scheme, "layer"):
        t.add_column(c, overflow="fold")
    for alias, name in table.items():
        t.add_row(alias, name)
    console.print(t)


# -- store ---------------------------------------------------------------------------------------
def verify_report(out: Output, r) -> None:
    if out.json:
        emit({**jsonable(r), "ok": r.ok})
        return
    console.print(f"{r.files} files, {r.rows} vectors checked (activations table version {r.table_version})")
    problems = (("missing", r.missing), ("corrupt", r.corrupt), ("count", r.count_mismatches),
                ("wrong layer", r.wrong_layers), ("outside the store (never touched)", r.outside))  # fmt: skip
    for label, items in problems:
        for item in items[:20]:
            console.print(Text.assemble((f"{label}: ", "red"), str(item)), soft_wrap=True)
    if r.uncommitted_batches:
        console.print(f"[red]rows of uncommitted batches:[/] {r.uncommitted_batches} batch(es)")
    if r.interrupted_runs:
        console.print(f"[yellow]unfinished runs:[/] {r.interrupted_runs}")
    if r.unlisted_files:
        console.print(f"[yellow]data files no table version lists[/] (left by a killed writer; readers never see "
                      f"them; --repair deletes them): {len(r.unlisted_files)}", soft_wrap=True)  # fmt: skip
    for line in r.notes:
        console.print(Text.assemble(("note: ", "yellow"), cli_message(line)), soft_wrap=True)
    for line in r.repaired:
        console.print(Text.assemble(("repaired: ", "green"), line), soft_wrap=True)
    console.print("[green]OK: catalog and files agree[/]" if r.ok else "[red]NOT OK[/]: run `embstore verify --repair`")


def compact_report(out: Output, r) -> None:
    if out.json:
        emit(jsonable(r))
        return
    console.print(
        f"{r.files_before} → {r.files_after} data files ({r.rewritten} rewritten), {r.vacuumed} old file(s) "
        f"deleted, table version {r.version}, {r.seconds:.1f} s"
    )
    for note in r.notes:
        console.print(f"[green]repaired:[/] {note}", soft_wrap=True)


def status(out: Output, s: dict) -> None:
    if out.json:
        emit(jsonable(s))
        return
    console.print(f"store {s['path']}", soft_wrap=True, highlight=False)  # a path is never wrapped
    t = Table(show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for k in ("images", "labelled", "models", "vectors", "files", "runs", "errors"):
        t.add_row(k, str(s[k]))
    if set(s.get("label_sets", {})) - {"imagenet1k"}:  # named only where a vocabulary besides ImageNet's is in use
        t.add_row("label sets", ", ".join(f"{name} ({n})" for name, n in s["label_sets"].items()))
    console.print(t)
    if s["per_model"]:
        m = Table(title="models")
        for c in ("model", "layers", "images", "top-1 err", "top-5 err"):
            m.add_column(c, overflow="fold")
        for row in s["per_model"]:
            m.add_row(*[_num(v) for v in row])
        console.print(m)


# -- answers -------------------------------------------------------------------------------------
def answer(out: Output, a, *, fmt: str, kind: str) -> None:
    """Nearest classes (kind 'classes') or images ('images') as a table, JSON, CSV, TSV or JSON lines."""
    if fmt == "json":
        emit(jsonable(a))
        return
    if fmt == "nl":
        for row in jsonable(a)["results"]:
            print(json.dumps(jsonable(row), ensure_ascii=False))
        return
    if kind == "images":  # a file name a person recognises; the id (and full path) with --wide or --json
        columns = ("id", "label", "predicted", "path") if out.wide else ("label", "predicted")
        rows = [
            {"rank": n.rank, "name": Path(n.detail.get("path") or n.label).name, "score": n.score,
             **{c: n.label if c == "id" else n.detail.get(c) for c in columns}}
            for n in a.rows
        ]  # fmt: skip
    else:
        # imagenet1k's classes carry a wnid; another label set's its own id (a THINGS unique id), if any
        columns = ("images", "wnid" if not a.rows or any("wnid" in n.detail for n in a.rows) else "id")
        rows = [{"rank": n.rank, "name": n.label, "score": n.score, **{c: n.detail.get(c) for c in columns}}
                for n in a.rows]  # fmt: skip
    if fmt in ("csv", "tsv"):
        _delimited(fmt, ["rank", "name", "score", *columns], [list(r.values()) for r in rows])
        return
    title = f"{a.query} — {a.model_key}, layer {a.layer}, {a.method}"
    t = Table(title=title if out.wide else None)
    if not out.wide:
        console.print(title, soft_wrap=True, highlight=False)
    t.add_column("rank", justify="right", no_wrap=True)
    t.add_column("name", overflow="fold", ratio=3)
    t.add_column("score", justify="right", no_wrap=True, min_width=6)
    for c in columns:
        t.add_column(c, overflow="fold", ratio=2 if c in ("label", "predicted", "path") else 1)
    for r in rows:
        t.add_row(*["" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()])
    console.print(t)
    for line in a.notes:
        note(out, line)


def rows(out: Output, columns, data, *, fmt: str = "table") -> None:
    """Any SQL result: a table (long lists elided, ids never wrapped), JSON, CSV, TSV or JSON lines."""
    if fmt == "json":
        emit({"columns": list(columns), "rows": [dict(zip(columns, r)) for r in data]})  # = SqlResult.to_json()
        return
    if fmt == "nl":
        for r in data:
            print(json.dumps(jsonable(dict(zip(columns, r))), ensure_ascii=False))
        return
    if fmt in ("csv", "tsv"):
        _delimited(fmt, columns, data)
        return
    cells = [[_cell(v, wide=out.wide) for v in r] for r in data]
    widest = [max([len(str(c)), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    # short values (an elided vector too) and ids are never wrapped; long text folds
    whole = [_is_key(str(c)) or widest[i] <= SHORT for i, c in enumerate(columns)]
    need = [widest[i] if whole[i] else SHORT for i in range(len(columns))]
    shown = list(range(len(columns)))
    if not out.wide:  # as DuckDB's own CLI does: the columns that fit, and the names of the others
        while len(shown) > 1 and sum(need[i] + 3 for i in shown) + 1 > console.width:
            shown.pop()
    t = Table()
    for i in shown:
        t.add_column(columns[i], overflow="fold", no_wrap=whole[i])
    for r in cells:
        t.add_row(*[Text(r[i]) for i in shown])  # values as text, never as Rich markup
    natural = sum(widest[i] + 3 for i in shown) + 1
    (Console(width=natural) if out.wide and natural > console.width else console).print(t)  # --wide: however wide
    hidden = [str(c) for i, c in enumerate(columns) if i not in shown]
    more = f"; {_plural(len(hidden), 'column')} not shown: {', '.join(hidden)} (--wide, --csv or --json)"
    note(out, f"{_plural(len(data), 'row')}{more if hidden else ''}")


def _delimited(fmt: str, columns, data) -> None:
    import csv

    w = csv.writer(sys.stdout, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
    w.writerow(columns)
    w.writerows([[_text(v) for v in r] for r in data])


def _text(v):
    """A value in one CSV/TSV field: lists and structs as JSON."""
    return json.dumps(jsonable(v), ensure_ascii=False) if isinstance(v, (dict, list, tuple)) else v


def _is_key(column: str) -> bool:
    """Columns of ids, keys, names and hashes: never wrapped (a wrapped id cannot be copied)."""
    return column in ("id", "key", "sha", "wnid", "layer", "model", "weights") or column.endswith(
        ("_id", "_key", "_sha", "sha256")
    )


SHORT = 28  # characters: a column whose values are all this short is never wrapped


ELIDE_AFTER = 2  # list values with more items show this many, then how many there are (--wide: all)


def _cell(v, *, wide: bool = False) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)) and len(v) > ELIDE_AFTER and not wide:
        head = ", ".join(_cell(x) if not isinstance(x, float) else f"{x:.3g}" for x in v[:ELIDE_AFTER])
        return f"[{head}, … {len(v)} values]"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(jsonable(v), ensure_ascii=False)
    return str(v)


def shell(out: Output, store_path, run, tables) -> None:
    """Read SQL statements (ended by ';') from the terminal or a pipe and print each result."""
    from embstore import EmbstoreError

    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        errors.print(f"embstore shell on {store_path} — end statements with ';', .tables, .quit", soft_wrap=True)
    buffer: list[str] = []
    while True:
        try:
            line = input("sql> " if not buffer else "...> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and line == "":
            break
        text = line.strip()
        if not buffer and text in (".quit", ".exit", "\\q"):
            break
        if not buffer and text == ".tables":
            rows(out, ["name", "kind"], tables(), fmt="json" if out.json else "table")
            continue
        if text:
            buffer.append(text)
        if buffer and buffer[-1].endswith(";"):
            query, buffer = "\n".join(buffer), []
            try:
                columns, data = run(query)
            except EmbstoreError as exc:
                error(type(exc).__name__, " ".join(str(exc).split()), exc.exit_code, as_json=out.json)
                continue
            if columns:
                rows(out, columns, data, fmt="json" if out.json else "table")


# -- analyses ------------------------------------------------------------------------------------
def matching(out: Output, report) -> None:
    if out.json:
        emit({"triplets": len(report.triplets.paths), "manifest_sha": report.triplets.sha,
              "layers": [{k: v for k, v in jsonable(r).items() if k not in ("cos_related", "cos_unrelated", "matched")}
                         for r in report.layers],
              "top1_error": report.top1_error, "correlation": jsonable(report.correlation)})  # fmt: skip
        return
    t = Table(title=f"triplet matching — {len(report.triplets.paths)} triplets (seed 000 table 2)")
    for c in ("model", "layer", "matching error", "95% CI", "AUC", "AUC 95% CI", "ImageNet top-1 err"):
        t.add_column(c, overflow="fold")
    for r in report.layers:
        top1 = report.top1_error.get(r.model_key)
        t.add_row(r.model_key, r.layer, f"{r.error:.3f}", f"{r.ci[0]:.3f}–{r.ci[1]:.3f}", f"{r.auc:.3f}",
                  f"{r.auc_ci[0]:.3f}–{r.auc_ci[1]:.3f}", _num(top1))  # fmt: skip
    console.print(t)
    if report.correlation is not None:
        console.print(report.correlation.legend().replace("\n", " "))
    if report.layers:
        last = report.layers[-1]
        console.print(f"cases for {last.model_key} / {last.layer} (triplet numbers; SQL: matching_results):")
        for name, idx in last.cases.items():
            console.print(f"  {name:9s} {idx[:5]}")


def comparison(out: Output, c) -> None:
    """Two matching results compared (analysis/comparisons.py)."""
    if out.json:
        emit(jsonable(c))
        return
    a, b = f"{c.a[0]}:{c.a[1]}", f"{c.b[0]}:{c.b[1]}"
    rsa = hasattr(c, "reference")  # an RsaComparison (seed 004), else a MatchingComparison
    on = (
        f"{c.n_concepts} concepts, {c.reference}"
        if rsa
        else f"{c.n_triplets} triplets (manifest {c.manifest_sha[:12]})"
    )
    t = Table(title=f"a = {a}  vs  b = {b} — {on}")
    for col in ("measure", "a", "b", "a − b", "95% CI of a − b", "p", "test"):
        t.add_column(col, overflow="fold")
    for r in c.rows():
        ci = "-" if r["ci_low"] is None else f"{r['ci_low']:+.3f} – {r['ci_high']:+.3f}"
        t.add_row(r.get("label", r["measure"]), f"{r['a']:.3f}", f"{r['b']:.3f}", f"{r['a - b']:+.3f}", ci,
                  "-" if r["p"] is None else _p(r["p"]), r["test"])  # fmt: skip
    console.print(t)
    unit, table = ("concepts (stored by `analyze rsa`)", "rsa_tests") if rsa else ("triplets", "matching_tests")
    console.print(f"paired bootstrap: {c.n_boot} resamples of the {unit}, seed {c.seed} (SQL: {table})")


def _p(p: float) -> str:
    return "nan" if p != p else (f"{p:.2g}" if p < 0.01 else f"{p:.3f}")


def failures(out: Output, r) -> None:
    if out.json:
        emit(jsonable(r))
        return
    console.print(
        f"{r.model_key}: {r.n_labelled} labelled images"
        + ("" if r.label_set == "imagenet1k" else f" of label set {r.label_set}")
        + f", top-1 error {_num(r.top1_error)}, "
        f"top-5 error {_num(r.top5_error)}, median rank of the true class {_num(r.median_true_rank)}; "
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
                f["path"] if out.wide else Path(f["path"]).name,
                f["true"],
                f["predicted"],
                f"{f['predicted_prob']:.3f}",
                _num(f["true_rank"]),  # NULL: relabelled, the new class beyond the stored top-5
                _num(f["true_prob"], ".4f"),
                _num(f["wup"], ".2f"),  # no synset: no WordNet similarity
            )
        console.print(t)


def warn(message: str) -> None:
    """One warning line on stderr (under --json too: stdout stays one JSON object)."""
    sys.stderr.write(f"embstore: warning: {message}\n")


def rsa(out: Output, r, whole=None) -> None:
    for w in r.warnings:
        warn(w)
    if out.json:
        payload = jsonable(r)
        payload["coverage"] = r.coverage.summary() if r.coverage else None
        if whole is not None:  # the correlation matrices stay out: concepts² numbers per group and layer
            payload["whole_maps"] = {**jsonable({k: v for k, v in vars(whole).items() if k != "layers"}),
                                     "layers": [{k: jsonable(v) for k, v in vars(x).items() if k != "correlations"}
                                                for x in whole.layers]}  # fmt: skip
        emit(payload)
        return
    line = f"{r.model_key} vs {r.reference}: {len(r.concepts)} concepts, {r.n_groups} groups, "
    line += f"{r.n_permutations} permutations"
    if r.coverage:
        c = r.coverage.summary()
        if "wnid" in c:
            line += f"; classes with a WordNet synset {c['wnid']}, dropped {c['dropped']}"
        else:
            line += (f"; class names found by name {c['name']}, by synonym {c['synonym']}, by hypernym "
                     f"{c['hypernym']}, dropped {c['dropped']}")  # fmt: skip
    console.print(line)
    if r.concept_set is not None:
        console.print(f"concept set {r.concept_set.sha[:12]} of label set {r.label_set}: {len(r.concepts)} concepts, "
                      f"{r.concept_set.source} (table concept_sets)")  # fmt: skip
    if r.coverage and r.coverage.dropped:
        console.print("dropped (no vector): " + ", ".join(r.coverage.dropped_names()))
    t = Table(title="similarity encoding by layer (table rsa_results); chance 2v2 = 0.5")
    for c in ("layer", "2v2 acc ± SD", "95% CI", "p", "p Holm", "RSA ρ (95% CI)", "τ-a", "1v2 acc (n)",
              "1v2 p binom / perm"):  # fmt: skip
        t.add_column(c, overflow="fold")
    floor = 1 / (r.n_permutations + 1)

    def perm(p):
        return "-" if p is None else (f"≤ {floor:.2g}" if p <= floor else f"{p:.4f}")

    def ci(pair):
        return "-" if pair is None else f"{pair[0]:.3f} – {pair[1]:.3f}"

    for row in r.rows:
        sd = "" if row.acc_sd is None else f" ± {row.acc_sd:.3f}"
        t.add_row(
            row.layer,
            f"{row.acc_2v2:.3f}{sd}",
            ci(row.acc_ci),
            perm(row.p_value),
            "-" if row.p_holm is None else _p(row.p_holm),
            f"{row.rsa_spearman:.3f}" + ("" if row.rsa_spearman_ci is None else f" ({ci(row.rsa_spearman_ci)})"),
            "-" if row.rsa_kendall_a is None else f"{row.rsa_kendall_a:.3f}",
            "-" if row.acc_1v2 is None else f"{row.acc_1v2:.3f} ({row.n_1v2})",
            "-" if row.p_1v2 is None else f"{_p(row.p_1v2)} / {perm(row.p_1v2_perm)}",
        )
    console.print(t)
    if r.n_boot:
        console.print(f"95% CIs: {r.n_boot} bootstrap resamples of the concepts, seed {r.seed}; 1 vs 2 over "
                      f"{'each group' if r.scope_1v2 == 'within-group' else 'all labelled images'}")  # fmt: skip
    if r.n_permutations and any(row.p_value is not None and row.p_value <= floor for row in r.rows):
        console.print(
            f"≤ {floor:.2g}: no permutation of {r.n_permutations} reached the observed accuracy; the smallest p "
            f"{r.n_permutations} permutations can give is 1/{r.n_permutations + 1} (more: --permutations)"
        )
    if whole is not None:
        gap = {row.layer: row.acc_2v2 for row in r.rows}
        w = Table(title=f"2 vs 2 on whole maps (Gram accumulation, {whole.forward_passes} forward passes; not stored)")
        for c in ("layer", "values a map", "2v2 acc, whole maps", "p", "2v2 acc, GAP"):
            w.add_column(c, overflow="fold")
        for x in whole.layers:
            w.add_row(x.layer, f"{x.width:,}", f"{x.acc_2v2:.3f}", perm(x.p_value), _num(gap.get(x.layer)))
        console.print(w)


def materialised(out: Output, results) -> None:
    if out.json:
        emit({"tables": [jsonable(r) for r in results]})
        return
    t = Table(title=f"{results[0].table if results else 'nothing'} — query it with `embstore sql`")
    for c in ("model", "layer", "label set", "classes", "images", "channels", "left out (<2 images)", "state"):
        t.add_column(c, overflow="fold")
    for r in results:
        t.add_row(r.model_key, r.layer, r.label_set, str(r.n_classes), str(r.n_images), str(r.channels), str(r.skipped),
                  "recomputed" if r.recomputed else "up to date")  # fmt: skip
    console.print(t)


def pair(out: Output, a, b, layer, t, df) -> None:
    import numpy as np

    if out.json:
        emit({"a": a.name, "b": b.name, "layer": layer, "t": t, "df": df})
        return
    order = np.argsort(-np.abs(t))[:10]
    tab = Table(title=f"{a.name} vs {b.name} on {layer}: Welch t per channel (10 largest |t|)")
    for c in ("channel", "t", "df"):
        tab.add_column(c)
    for ch in order:
        tab.add_row(str(int(ch)), f"{t[ch]:.3f}", f"{df[ch]:.1f}")
    console.print(tab)


# -- figures and the report ----------------------------------------------------------------------
class Status:
    """A spinner on stderr fed by the library's `progress(message)` callback."""

    def __init__(self, out: Output, title: str):
        self.out, self.title = out, title

    def __enter__(self):
        self._status = None if (self.out.quiet or self.out.json) else errors.status(self.title)
        if self._status is not None:
            self._status.__enter__()
        return self

    def update(self, message: str) -> None:
        if self._status is not None:
            self._status.update(f"{self.title}: {message}")

    def __exit__(self, *exc):
        return self._status.__exit__(*exc) if self._status is not None else None


def written(out: Output, paths) -> None:
    if out.json:
        emit({"written": [str(p) for p in paths]})
        return
    for p in paths:
        console.print(f"wrote {p}", soft_wrap=True, highlight=False)  # a path must stay copy-pasteable


def _report_json(r) -> dict:
    return {"path": str(r.path), "bytes": r.n_bytes, "figures": list(r.figures), "seconds": r.seconds,
            "skipped": r.skipped}  # fmt: skip


def report(out: Output, r) -> None:
    if out.json:
        emit(_report_json(r))
        return
    console.print(
        f"wrote {r.path} ({r.n_bytes / 1e6:.1f} MB, {_plural(len(r.figures), 'figure')}, {r.seconds:.1f} s)",
        soft_wrap=True,
        highlight=False,
    )
    for name, why in r.skipped.items():
        console.print(f"  [yellow]not drawn[/yellow] {name}: {why}")


def plan(out: Output, p) -> None:
    if out.json:
        emit(p.to_dict())
        return
    console.print(f"[bold]{p.seed}[/bold]: {p.paper}", highlight=False)
    for need in p.needs:
        console.print(f"  [yellow]needs[/yellow] {need}", highlight=False)
    t = Table(title="networks")
    for c in ("paper", "model", "weights", "layers", "input"):
        t.add_column(c, overflow="fold")
    for m in p.models:
        shown = (
            ", ".join(m.layers)
            if out.wide or len(m.layers) <= 4
            else f"{len(m.layers)}: {m.layers[0]} … {m.layers[-1]}"
        )
        t.add_row(m.paper, m.model, m.weights, shown, f"{m.preprocessing['resize']}/{m.preprocessing['crop']}")
    console.print(t)
    console.print("settings: " + ", ".join(f"{k} {v}" for k, v in p.settings.items()), highlight=False)
    for i, s in enumerate(p.steps, 1):
        console.print(f"  {i}. {s}", highlight=False)
    for n in p.not_run:
        console.print(f"  [yellow]not run[/yellow] {n.item}: {n.why}; {n.way_out}", highlight=False)
    for r in p.readings:
        console.print(f"  [cyan]reading[/cyan] {r.question}: {r.taken} (other: {r.other})", highlight=False)
    for d in p.differences:
        console.print(f"  [magenta]differs[/magenta] {d}", highlight=False)


def replication(out: Output, r) -> None:
    if out.json:
        emit({"plan": r.plan.to_dict(), "steps": jsonable(r.steps), "scoreboard": jsonable(r.scoreboard)})
        return
    for s in r.steps:
        console.print(f"{s.step} {s.model_key} ({s.item}): {'ran' if s.ran else 'done before, kept'}", highlight=False)
    scoreboard(out, r.scoreboard)


def scoreboard(out: Output, scores) -> None:
    t = Table(title="scoreboard: the paper beside this store")
    for c in ("network", "measure", "paper", "here", "95% CI", "Δ", "marks / note"):
        t.add_column(c, overflow="fold")
    for s in scores:
        paper = _num(s.paper, ".4g") + (s.unit if s.unit == "%" else "") if s.paper is not None else "(claim)"
        ci = f"{s.ci[0]:.4g}–{s.ci[1]:.4g}" if s.ci else ""
        t.add_row(s.item, s.measure, paper, _num(s.store, ".4g"), ci, _num(s.difference, "+.3g"),
                  "; ".join([*s.marks, s.note] if s.note else s.marks))  # fmt: skip
    console.print(t)


def basis(out: Output, b) -> None:
    if out.json:
        emit(jsonable(b))
        return
    console.print(
        f"{b.model_key} {b.layer}: {b.k} components of {b.width:,} values fitted on {b.n_images} images "
        f"('{b.name}'), explaining {sum(b.explained):.1%} of their variance; basis {b.sha[:12]} in {b.path}",
        soft_wrap=True, highlight=False,
    )  # fmt: skip
    for path, why in b.failed:
        warn(f"reference image not decoded: {path}: {why}")
    console.print(f"ingest it with --layers {b.layer}~pca{b.k}", highlight=False)


def serving(out: Output, url: str) -> None:
    if out.json:
        emit({"url": url})
    else:
        console.print(f"embstore serve: {url} (Ctrl-C stops it)", soft_wrap=True, highlight=False)
    sys.stdout.flush()
