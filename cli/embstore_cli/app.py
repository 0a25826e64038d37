"""The `embstore` command: parses options, makes one library call, renders the result.

Errors from the library (EmbstoreError) become one line on stderr and an exit code, here in
`main()` and nowhere else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from embstore.errors import EmbstoreError

from . import render

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Store, search and analyse CNN activations.")
query_app = typer.Typer(no_args_is_help=True, help="Nearest classes and nearest images.")
app.add_typer(query_app, name="query")
analyze_app = typer.Typer(no_args_is_help=True, help="Measures of the seed papers, computed from the store.")
app.add_typer(analyze_app, name="analyze")


@app.callback()
def _store_option(
    ctx: typer.Context,
    store: Optional[Path] = typer.Option(
        None, "--store", envvar="EMBSTORE_HOME", help="Store directory (default: $EMBSTORE_HOME, else ~/.embstore)."
    ),
):
    """embstore: a DuckDB + Parquet store of per-layer CNN activations with a query CLI."""
    ctx.obj = {"store": store}


def _store(ctx: typer.Context, *, create: bool = False, reader: bool = False):
    """The store named by --store/$EMBSTORE_HOME; `reader` for one-shot read-only commands."""
    from embstore.store import Store

    return Store.open(ctx.obj["store"], create=create, keep_reader=reader)


@app.command()
def ingest(
    ctx: typer.Context,
    model: str = typer.Option("efficientnet_lite0", "--model", "-m", help="Model name (`embstore models`)."),
    images: Path = typer.Option(..., "--images", "-i", help="Folder, class-per-folder tree, or CSV/Parquet manifest."),
    weights: str = typer.Option("DEFAULT", help="DEFAULT | a weights enum name | none | path to a state dict."),
    layers: str = typer.Option("default", help="default | all | comma-separated layer names (`embstore layers`)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    workers: int = typer.Option(0, min=0, help="Image-decoding worker processes."),
    limit: Optional[int] = typer.Option(None, min=1, help="Ingest at most N images (sorted by path)."),
    max_pixels: int = typer.Option(100_000_000, help="Refuse images with more pixels than this."),
):
    """Run MODEL over IMAGES and store every chosen layer's pooled activations.

    Example: embstore ingest --model densenet121 --images ~/imagenet/val --layers default
    """
    from embstore.ingest import ingest as run_ingest

    store = _store(ctx, create=True)
    with render.IngestProgress() as bar:
        result = run_ingest(store, model, str(images), weights=weights, layers=layers, batch_size=batch_size,
                            device=device, workers=workers, limit=limit, max_pixels=max_pixels, progress=bar.update)
    render.ingest_summary(result, store.path)


@app.command()
def demo(ctx: typer.Context):
    """Ingest the bundled photos with the real EfficientNet-Lite0, then query similar classes and images.

    Example: embstore --store ./demo-store demo
    """
    from embstore.demo import run_demo

    store = _store(ctx, create=True)
    with render.IngestProgress() as bar:
        result = run_demo(store, progress=bar.update)
    render.ingest_summary(result.ingest, store.path)
    render.answer(result.similar, as_json=False, as_csv=False, columns=("images", "wnid"))
    render.answer(result.nearest, as_json=False, as_csv=False, columns=("label", "predicted", "path"))


@app.command("models")
def list_models():
    """List every model `embstore ingest --model` accepts, with weights and preprocessing.

    Example: embstore models
    """
    from embstore.models import available_models, describe

    render.models_table([describe(name) for name in available_models()])


@app.command("layers")
def list_layers(
    model: str = typer.Argument(..., help="Model name."),
):
    """List MODEL's layers in forward order with channel counts; * marks the default set.

    Example: embstore layers resnet50
    """
    from embstore.layers import discover
    from embstore.models import load

    net, spec, _ = load(model, "none")
    render.layers_table(model, discover(net, model, spec.preprocessing.crop))


@app.command()
def verify(
    ctx: typer.Context,
    repair: bool = typer.Option(False, "--repair", help="Make catalog and files agree (see the README)."),
):
    """Check that the catalog and the Parquet files agree; --repair fixes what a crash left.

    Example: embstore verify --repair
    """
    from embstore.activations import ActivationFiles

    report = ActivationFiles(_store(ctx)).verify(repair=repair)
    render.verify_report(report)
    if not report.ok and not repair:
        raise typer.Exit(1)


@app.command()
def status(ctx: typer.Context):
    """Summarise the store: images, models, layers, runs and errors.

    Example: embstore --store ./mystore status
    """
    from embstore.summary import summarise

    render.status(summarise(_store(ctx, reader=True)))


@query_app.command("similar")
def query_similar(
    ctx: typer.Context,
    cls: str = typer.Argument(..., metavar="CLASS", help="Class name, WordNet synonym, wnid or index."),
    k: int = typer.Option(9, "--k", "-k", min=1),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    layer: Optional[str] = typer.Option(None, help="A stored layer, or 'all' conv layers (default for prototype/tstat)."),
    method: str = typer.Option("prototype", help="prototype | tstat | hidden | classifier"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
):
    """The K classes most similar to CLASS (seed 003 methods).

    Example: embstore query similar knot --k 9 --method tstat
    """
    from embstore.similarity import similar_classes

    answer = similar_classes(_store(ctx, reader=True), cls, k=k, model=model, layer=layer, method=method)
    render.answer(answer, as_json=as_json, as_csv=as_csv, columns=("images", "wnid"))


@query_app.command("images")
def query_images(
    ctx: typer.Context,
    image: str = typer.Argument(..., help="Stored image id (or prefix) or path, or any image file."),
    k: int = typer.Option(10, "--k", "-k", min=1),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    layer: str = typer.Option("hidden", help="Stored layer to compare in."),
    index: str = typer.Option("auto", help="auto | flat (exact) | hnsw | ivf"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
):
    """The K stored images nearest to IMAGE by cosine of one layer's vectors.

    Example: embstore query images data/samples/coffee.png --k 3
    """
    from embstore.similarity import nearest_images

    answer = nearest_images(_store(ctx, reader=True), image, k=k, model=model, layer=layer, index=index)
    render.answer(answer, as_json=as_json, as_csv=as_csv, columns=("label", "predicted", "path"))


@app.command()
def sql(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="SQL; every catalog table, view and embstore UDF is available."),
    write: bool = typer.Option(False, "--write", help="Open the catalog read-write."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
):
    """Run ad-hoc SQL on the catalog (read-only unless --write).

    Example: embstore sql "SELECT layer, count(*) FROM activations GROUP BY layer"
    """
    from embstore.sql import run_sql

    columns, rows = run_sql(_store(ctx), query, write=write)
    render.rows(columns, rows, as_json=as_json, as_csv=as_csv)


@analyze_app.command("matching")
def analyze_matching(
    ctx: typer.Context,
    manifest: Path = typer.Argument(..., help="CSV/Parquet: object, related, unrelated[, rating_related, rating_unrelated]."),
    model: list[str] = typer.Option([], "--model", "-m", help="Model(s); default: every stored model."),
    layer: list[str] = typer.Option([], "--layer", help="Layer(s); default: every stored layer."),
    ingest_missing: bool = typer.Option(False, "--ingest", help="Ingest the manifest's images first (needs one --model)."),
    weights: str = typer.Option("DEFAULT", help="Weights for --ingest."),
):
    """Related/unrelated matching error, bootstrap CI and ROC AUC per model and layer (seed 000).

    Example: embstore analyze matching poporo.csv --model resnet50 --layer hidden
    """
    from embstore.analysis import matching

    report = matching(_store(ctx, create=ingest_missing), str(manifest), models=model or None,
                      layers=layer or None, ingest_missing=ingest_missing, weights=weights)
    render.matching(report)


@analyze_app.command("prototypes")
def analyze_prototypes(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    layer: list[str] = typer.Option([], "--layer", help="Layer(s); default: every stored layer."),
):
    """Class prototypes (mean vectors) per layer into table class_prototypes (seed 003 §3.1).

    Example: embstore analyze prototypes --model densenet121 --layer hidden
    """
    from embstore.analysis import class_tables

    render.materialised(class_tables(_store(ctx), "prototypes", model, layer or None))


@analyze_app.command("tstats")
def analyze_tstats(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    layer: list[str] = typer.Option([], "--layer", help="Layer(s); default: every stored layer."),
    pair: Optional[str] = typer.Option(None, help="'CLASS_A,CLASS_B': class A against class B on one --layer."),
):
    """One-vs-rest Welch t per class and channel into table class_tstats (seed 003 §3.2).

    Example: embstore analyze tstats --model vgg16 --layer features.29 --pair knot,chain
    """
    from embstore.analysis import class_pair, class_tables

    if pair:
        if len(layer) != 1 or pair.count(",") != 1:
            raise typer.BadParameter("--pair A,B needs exactly one --layer")
        a, b, (t, df) = class_pair(_store(ctx, reader=True), model, layer[0], *pair.split(","))
        render.pair(a, b, layer[0], t, df)
        return
    render.materialised(class_tables(_store(ctx), "tstats", model, layer or None))


@analyze_app.command("rsa")
def analyze_rsa(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    vectors: str = typer.Option("glove", help="glove | wordnet-wup | wordnet-path | a GloVe/word2vec file."),
    layer: list[str] = typer.Option([], "--layer", help="Layer(s); default: every stored layer."),
    groups: int = typer.Option(5, min=1, help="Image groups; each concept once per group."),
    permutations: int = typer.Option(1000, min=0, help="Permutations for the p-values."),
    seed: int = typer.Option(0, help="Seed of the permutations."),
):
    """2 vs 2 accuracy, permutation p, RSA r and 1 vs 2 accuracy per layer (seed 004) into rsa_results.

    Example: embstore analyze rsa --model vgg16 --vectors glove --permutations 1000
    """
    from embstore.rsatables import run_rsa

    render.rsa(run_rsa(_store(ctx), model, vectors, groups=groups, n_permutations=permutations, seed=seed,
                       layers=layer or None))


@analyze_app.command("failures")
def analyze_failures(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    limit: int = typer.Option(20, min=1, help="How many failures to list."),
    close: float = typer.Option(0.8, min=0.0, max=1.0, help="WordNet Wu-Palmer similarity that makes a failure 'close'."),
):
    """Top-1/top-5 error on labelled images and the failures ranking the true class lowest (seed 000 table 1).

    Example: embstore analyze failures --model densenet121 --limit 10
    """
    from embstore.analysis import failures

    render.failures(failures(_store(ctx, reader=True), model, limit=limit, close_at=close))


def main(argv: list[str] | None = None) -> None:
    import click

    command = typer.main.get_command(app)
    try:
        # non-standalone typer *returns* exit codes (typer.Exit, and 130 for Ctrl-C) instead of raising
        code = command.main(args=argv, prog_name="embstore", standalone_mode=False)
    except EmbstoreError as exc:
        sys.stderr.write(f"embstore: error: {' '.join(str(exc).split())}\n")
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        code = 130
    if code == 130:
        sys.stderr.write("embstore: interrupted; run the same command again to resume\n")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
