"""The `embstore` command: parses options, makes one library call, renders the result.

Errors from the library (EmbstoreError) become one line on stderr (a JSON object under --json)
and an exit code, here in `main()` and nowhere else. Exit codes: 0 done; 1 the operation found a
problem or failed (`verify` on a damaged store); 2 a usage error (bad option value, unknown
model/layer/class, missing path); 3 the store is busy (another writer); 130 interrupted (Ctrl-C;
run the same command again to resume).
Over ~450 lines: one Typer function per command (their options and help text are the CLI's
interface, each a few lines), and nothing else; rendering is render.py's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from embstore import EmbstoreError, IngestOptions
from embstore_cli import render
from embstore_cli._typer import typer

ALLOW_HELP = "A folder SQL may read (with --write, also write); repeatable."
INGEST = IngestOptions()  # the ingest flags' defaults are its fields' (each option is defined once, there)
HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Store, search and analyse CNN activations.", context_settings=HELP
)
query_app = typer.Typer(no_args_is_help=True, help="Nearest classes and nearest images.")
app.add_typer(query_app, name="query")
analyze_app = typer.Typer(no_args_is_help=True, help="Measures of the seed papers, computed from the store.")
app.add_typer(analyze_app, name="analyze")
plot_app = typer.Typer(no_args_is_help=True, help="The seed papers' figures as PNG + SVG, drawn from the store.")
app.add_typer(plot_app, name="plot")


GLOBAL_FLAGS = ("--json", "--quiet", "-q", "--wide")
GLOBAL_VALUES = ("--store", "--wait")


def _print_version(value: bool) -> None:
    if value:
        import embstore

        typer.echo(f"embstore {embstore.__version__}")
        raise typer.Exit(0)


@app.callback()
def _globals(
    ctx: typer.Context,
    store: Optional[Path] = typer.Option(
        None, "--store", envvar="EMBSTORE_HOME", help="Store directory (default: $EMBSTORE_HOME, else ~/.embstore)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print results (and errors) as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes."),
    wide: bool = typer.Option(False, "--wide", help="Every column, however wide (default: fit the terminal)."),
    wait: float = typer.Option(
        0.0,
        "--wait",
        min=0.0,
        envvar="EMBSTORE_WAIT",
        metavar="SECONDS",
        help="When another process is writing to the store, wait up to this long for it (default 0: refuse at once).",
    ),
    version: bool = typer.Option(
        False, "--version", "-V", is_eager=True, callback=_print_version, help="Print embstore's version and exit."
    ),
):
    """embstore: a DuckDB + Parquet store of per-layer CNN activations with a query CLI.

    --store, --wait, --json, --quiet and --wide may also follow the subcommand.
    """
    ctx.obj = render.Output(store=store, json=as_json, quiet=quiet, wide=wide, wait=wait)


_CSV = typer.Option(False, "--csv", help="Print CSV.")
_LABELS = typer.Option(
    None, "--labels", help="Label set (default: imagenet1k when it labels images, else the store's only one)."
)
_TSV = typer.Option(False, "--tsv", help="Print tab-separated values.")
_NL = typer.Option(False, "--nl", help="Print JSON lines: one object per row.")


def _format(ctx: typer.Context, **flags: bool) -> str:
    """The one output format asked for (table unless --json, --csv, --tsv or --nl); two is a usage error."""
    asked = [name for name, on in {"json": ctx.obj.json, **flags}.items() if on]
    if len(asked) > 1:
        import click

        raise click.UsageError(f"choose one output format, not {' and '.join('--' + a for a in asked)}")
    return asked[0] if asked else "table"


def _count(k: int, *old: Optional[int]) -> int:
    """How many: --k, or a command's earlier spelling of it (--n, --limit: hidden aliases)."""
    return next((v for v in old if v is not None), k)


def _store(
    ctx: typer.Context,
    *,
    create: bool = False,
    reader: bool = False,
    activations: Optional[str] = None,
    restore_catalog: bool = False,
):
    """The store named by --store/$EMBSTORE_HOME; `reader` for one-shot read-only commands;
    `restore_catalog` (verify --repair) replaces a damaged catalog by its last snapshot."""
    import embstore

    # `reader`: one kept read-only connection serves every query of this short process;
    # `create`: a new store is made only when first written, so a failed check leaves nothing
    out = ctx.obj
    store = embstore.open(
        out.store,
        create=create,
        keep_reader=reader,
        defer_creation=create,
        activations=activations,
        wait=out.wait,
        on_wait=lambda holder: render.note(out, f"waiting up to {out.wait:g} s for another embstore writer ({holder})"),
        restore_catalog=restore_catalog,
    )
    ctx.call_on_close(store.close)
    return store


@app.command()
def ingest(
    ctx: typer.Context,
    model: str = typer.Option("efficientnet_lite0", "--model", "-m", help="Model name (`embstore models`)."),
    images: Optional[Path] = typer.Option(
        None,
        "--images",
        "-i",
        help="Folder, class-per-folder tree, or CSV/Parquet manifest (default: the images already in the store).",
    ),
    weights: str = typer.Option(INGEST.weights, help="DEFAULT | a weights enum name | none | path to a state dict."),
    layers: str = typer.Option(
        INGEST.layers,
        help="Sets (blocks, relu, act, conv, conv_raw, seed003, seed004, all), layer names and Keras names "
        "(mixed9, fc1), comma-separated (`embstore layers MODEL`).",
    ),
    preprocessing: Optional[str] = typer.Option(
        None,
        "--preprocessing",
        help="A recipe: torchvision (the model's own), keras-caffe (squash, BGR 0-255 minus the means), keras-tf "
        "([-1, 1]), keras-torch, squash. Other preprocessing is kept apart in the model key (…~keras-caffe).",
    ),
    resize_mode: Optional[str] = typer.Option(None, help="shorter (then a centre crop) | squash (both sides)."),
    resize: Optional[int] = typer.Option(None, min=1, help="Shorter side (or both sides, with squash) in pixels."),
    crop: Optional[str] = typer.Option(None, help="Centre crop in pixels, or none (needs --resize-mode squash)."),
    color: Optional[str] = typer.Option(None, help="rgb | bgr: the channel order the network expects."),
    scale: Optional[str] = typer.Option(None, help="unit (pixels / 255) | 0-255 (raw pixels)."),
    mean: Optional[str] = typer.Option(None, help="Per-channel mean, a,b,c (in --scale's units)."),
    std: Optional[str] = typer.Option(None, help="Per-channel std, a,b,c (1,1,1: mean subtraction only)."),
    interpolation: Optional[str] = typer.Option(None, help="bilinear | bicubic | nearest."),
    batch_size: int = typer.Option(INGEST.batch_size, "--batch-size", "-b", min=1),
    device: str = typer.Option(INGEST.device, help="auto | cpu | cuda"),
    workers: Optional[int] = typer.Option(
        None,
        min=0,
        help="Image-decoding worker processes (default: one per core torch's threads leave free on CPU, "
        "up to 8 on CUDA; 0: a thread).",
    ),
    limit: Optional[int] = typer.Option(None, min=1, help="Ingest at most N images (sorted by path)."),
    max_pixels: int = typer.Option(INGEST.max_pixels, help="Refuse images with more pixels than this."),
    dtype: str = typer.Option(
        INGEST.dtype, help="float32 | int8 (per-vector scale and offset: ~0.3 × the bytes; readers get float32)."
    ),
    commit_seconds: float = typer.Option(
        INGEST.commit_seconds, min=0, help="Commit stored vectors every N seconds of work."
    ),
    compact: bool = typer.Option(
        INGEST.compact, "--compact/--no-compact", help="Compact the activations table at the end."
    ),
    amp: str = typer.Option(INGEST.amp, help="off | fp16 | bf16: autocast on CUDA (recorded with the run)."),
    channels_last: Optional[bool] = typer.Option(
        None,
        "--channels-last/--no-channels-last",
        help="Memory layout of the network (default: channels-last on CPU, 1.2-2 x faster for CNNs; off on CUDA).",
    ),
    engine: str = typer.Option(INGEST.engine, help="local | ray (Ray Data: decode tasks and a pool of model actors)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address for --engine ray (default: a local one)."),
    cpus: Optional[int] = typer.Option(None, min=1, help="CPUs of the local Ray cluster (default: all)."),
    activations: Optional[str] = typer.Option(
        None, help="Where a NEW store keeps its activations table: a folder or s3://bucket/prefix (gs://, az://)."
    ),
    relabel: bool = typer.Option(
        INGEST.relabel,
        "--relabel",
        help="Update stored images the input labels otherwise (old labels kept in label_history).",
    ),
    label_set: Optional[str] = typer.Option(
        None,
        "--labels",
        help="Label set of the input's labels: imagenet1k, or a NAME made or extended (THINGS, your own); "
        "default: imagenet1k if every label is an ImageNet class, else a set named after IMAGES.",
    ),
):
    """Run MODEL over IMAGES (default: every image already stored) and store each chosen layer's pooled activations.

    Example: embstore ingest --model densenet121 --images ~/imagenet/val --layers blocks
    """
    import embstore

    pre = embstore.preprocessing_changes(
        preset=preprocessing, resize_mode=resize_mode, resize=resize, crop=crop, color=color, scale=scale, mean=mean,
        std=std, interpolation=interpolation,
    )  # fmt: skip
    options = embstore.IngestOptions(
        weights=weights, layers=layers, preprocessing=pre, batch_size=batch_size, limit=limit, max_pixels=max_pixels,
        device=device, workers=workers, amp=amp, channels_last=channels_last, dtype=dtype,
        commit_seconds=commit_seconds, compact=compact, engine=engine, address=address, cpus=cpus, relabel=relabel,
        label_set=label_set,
    )  # fmt: skip
    store = _store(ctx, create=True, activations=activations)
    with render.IngestProgress(ctx.obj) as bar:  # the ray engine shows Ray Data's own progress instead
        result = store.ingest(images, model=model, options=options, progress=bar.update)
    render.ingest_summary(ctx.obj, result, store.path)
    if result.status == "failed":  # every image failed: the summary and the errors say which and why
        render.error("IngestError", f"all {result.n_errors} image(s) failed to load; nothing was stored", 1,
                     as_json=ctx.obj.json)  # fmt: skip
        raise typer.Exit(1)


@app.command()
def demo(ctx: typer.Context):
    """Ingest the bundled photos with the real EfficientNet-Lite0, query similar classes and images, write a report.

    Example: embstore --store ./demo-store demo
    """
    from embstore_cli.demo import run_demo

    store = _store(ctx, create=True)
    with render.IngestProgress(ctx.obj) as bar:
        result = run_demo(store, progress=bar.update)
    render.demo(ctx.obj, result, store.path)


@app.command("models")
def list_models(ctx: typer.Context):
    """List every model `embstore ingest --model` accepts, with weights and preprocessing.

    Example: embstore models
    """
    import embstore

    names = embstore.list_models()
    render.models_table(
        ctx.obj, [embstore.describe_model(name) for name in names], {n: embstore.model_weights(n) for n in names}
    )


@app.command("layers")
def list_layers(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model name."),
    default: bool = typer.Option(False, "--default", help="Only the default set (what `ingest` stores)."),
    layer_set: str = typer.Option(
        None, "--set", help="Only one named set: blocks, relu, act, conv, conv_raw, seed003, seed004 or all."
    ),
    aliases: str = typer.Option(
        None, "--aliases", help="Show the Keras names the papers use: keras (activation_1…) or tf_keras."
    ),
):
    """List MODEL's layers (graph nodes) in forward order: module, call, type, channels, size; * marks the default set.

    Example: embstore layers resnet50 --set relu
    """
    import embstore

    if aliases is not None:
        render.layer_aliases(ctx.obj, model, aliases, embstore.layer_aliases(model, aliases))
        return
    layers = embstore.model_layers(model)
    shown = embstore.layer_set(model, "blocks" if default else layer_set, layers) if default or layer_set else layers
    render.layers_table(ctx.obj, model, shown, len(layers), layers.trace_error)


@app.command()
def verify(
    ctx: typer.Context,
    repair: bool = typer.Option(False, "--repair", help="Make catalog and files agree (see the README)."),
):
    """Check that the catalog and the Parquet files agree; --repair fixes what a crash left.

    Example: embstore verify --repair
    """
    report = _store(ctx, restore_catalog=repair).verify(repair=repair)
    render.verify_report(ctx.obj, report)
    if not report.ok and not repair:
        raise typer.Exit(1)


@app.command("compact")
def compact_cmd(
    ctx: typer.Context,
    target_size_mb: float = typer.Option(128, "--target-size-mb", min=1, help="Size of the merged files."),
    retain_hours: float = typer.Option(
        1, "--retain-hours", min=0, help="Keep replaced files this long for readers of an older snapshot."
    ),
):
    """Merge the activations table's small files and delete replaced files older than --retain-hours.

    Example: embstore compact --target-size-mb 128
    """
    report = _store(ctx).compact(target_size_mb=target_size_mb, retain_hours=retain_hours)
    render.compact_report(ctx.obj, report)


@app.command()
def status(ctx: typer.Context):
    """Summarise the store: images, models, layers, runs and errors.

    Example: embstore --store ./mystore status
    """
    render.status(ctx.obj, _store(ctx, reader=True).status())


@query_app.command("similar")
def query_similar(
    ctx: typer.Context,
    cls: str = typer.Argument(..., metavar="CLASS", help="Class name, WordNet synonym, wnid or index."),
    k: int = typer.Option(9, "--k", "-k", min=1, help="How many classes."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    layer: Optional[str] = typer.Option(
        None, help="A stored layer, or 'all' conv layers (default for prototype/tstat)."
    ),
    method: Optional[str] = typer.Option(
        None,
        help="prototype | tstat | hidden | classifier (default: prototype if CLASS has labelled images, "
        "else classifier)",
    ),
    label_set: Optional[str] = _LABELS,
    as_csv: bool = _CSV,
    as_tsv: bool = _TSV,
    as_nl: bool = _NL,
):
    """The K classes most similar to CLASS (seed 003 methods).

    Example: embstore query similar knot --k 9 --method tstat
    Example: embstore query similar aardvark --labels things --method prototype
    """
    fmt = _format(ctx, csv=as_csv, tsv=as_tsv, nl=as_nl)
    answer = _store(ctx, reader=True).similar_classes(
        cls, k=k, model=model, layer=layer, method=method, label_set=label_set
    )
    render.answer(ctx.obj, answer, fmt=fmt, kind="classes")


@query_app.command("images")
def query_images(
    ctx: typer.Context,
    image: str = typer.Argument(..., help="Stored image id (or prefix) or path, or any image file."),
    k: int = typer.Option(10, "--k", "-k", min=1, help="How many images."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    layer: str = typer.Option("hidden", help="Stored layer to compare in."),
    index: str = typer.Option("auto", help="auto | flat (exact) | hnsw | ivf"),
    as_csv: bool = _CSV,
    as_tsv: bool = _TSV,
    as_nl: bool = _NL,
):
    """The K stored images nearest to IMAGE by cosine of one layer's vectors.

    Example: embstore query images data/samples/coffee.png --k 3
    """
    fmt = _format(ctx, csv=as_csv, tsv=as_tsv, nl=as_nl)
    with render.Status(ctx.obj, "searching (an index is built on first use)"):
        answer = _store(ctx, reader=True).nearest_images(image, k=k, model=model, layer=layer, index=index)
    render.answer(ctx.obj, answer, fmt=fmt, kind="images")


@app.command()
def sql(
    ctx: typer.Context,
    query: str = typer.Argument(
        ..., help="SQL ('-': read it from stdin); every catalog table, view and embstore UDF is available."
    ),
    write: bool = typer.Option(False, "--write", help="Open the catalog read-write."),
    allow: list[Path] = typer.Option([], "--allow", help=ALLOW_HELP),
    as_csv: bool = _CSV,
    as_tsv: bool = _TSV,
    as_nl: bool = _NL,
):
    """Run ad-hoc SQL on the catalog (read-only unless --write). It opens only the store's own files
    and the folders given with --allow: no other file, no network, no extension install.

    Example: embstore sql "SELECT layer, count(*) FROM activations GROUP BY layer"
    """
    fmt = _format(ctx, csv=as_csv, tsv=as_tsv, nl=as_nl)
    if query == "-":
        query = sys.stdin.read()
    columns, rows = _store(ctx).run_sql(query, write=write, allow=allow)
    render.rows(ctx.obj, columns, rows, fmt=fmt)


@app.command()
def shell(
    ctx: typer.Context,
    write: bool = typer.Option(False, "--write", help="Open the catalog read-write."),
    allow: list[Path] = typer.Option([], "--allow", help=ALLOW_HELP),
):
    """An interactive SQL prompt on the store (end statements with ';', quit with .quit or Ctrl-D);
    confined like `embstore sql`.

    Example: embstore shell
    """
    store = _store(ctx)
    render.shell(ctx.obj, store.path, lambda query: store.run_sql(query, write=write, allow=allow), store.tables)


@analyze_app.command("matching")
def analyze_matching(
    ctx: typer.Context,
    manifest: Path = typer.Argument(
        ..., help="CSV/Parquet: object, related, unrelated[, rating_related, rating_unrelated]."
    ),
    model: list[str] = typer.Option([], "--model", "-m", help="Model(s); default: every stored model."),
    layer: list[str] = typer.Option([], "--layer", help="Layer(s); default: every stored layer."),
    ingest_missing: bool = typer.Option(
        False, "--ingest", help="Ingest the manifest's images first (needs one --model)."
    ),
    weights: str = typer.Option("DEFAULT", help="Weights for --ingest."),
):
    """Related/unrelated matching error, bootstrap CI and ROC AUC per model and layer (seed 000).

    Example: embstore analyze matching poporo.csv --model resnet50 --layer hidden
    """
    with render.IngestProgress(ctx.obj, "matching", "layer") as bar:
        report = _store(ctx, create=ingest_missing).match_triplets(
            manifest,
            models=model or None,
            layers=layer or None,
            ingest_missing=ingest_missing,
            weights=weights,
            progress=bar.update,
        )
    render.matching(ctx.obj, report)


@analyze_app.command("compare")
def analyze_compare(
    ctx: typer.Context,
    a: str = typer.Argument(..., help="MODEL or MODEL:LAYER (default layer: hidden, else the deepest matched)."),
    b: str = typer.Argument(..., help="The other MODEL or MODEL:LAYER."),
    manifest: Optional[str] = typer.Option(None, help="Manifest file or sha prefix (default: the newest)."),
    vectors: Optional[str] = typer.Option(
        None, help="Compare similarity-encoding results against this reference instead (glove, wordnet-wup, …)."
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=100, help="Bootstrap resamples of the triplets."),
    seed: int = typer.Option(0, help="Seed of the resampling (recorded with the result)."),
    label_set: Optional[str] = _LABELS,
):
    """Is A better than B? Matching (seed 000): McNemar's exact test, paired bootstrap of Δerror and ΔAUC;
    with --vectors (seed 004): a paired concept bootstrap of Δ2v2 accuracy and ΔRSA.

    Both must have results on the same triplets (`analyze matching`) or concepts (`analyze rsa`, whose
    --n-boot and --seed then fix the resamples).
    Example: embstore analyze compare resnet152 resnet50:layer4 --manifest poporo.csv
    Example: embstore analyze compare resnet50:layer3.5.relu_2 resnet50:layer4.0.relu --vectors glove
    """
    if vectors is not None:
        if manifest is not None:
            raise typer.BadParameter("give --manifest (matching) or --vectors (similarity encoding), not both")
        render.comparison(ctx.obj, _store(ctx).compare_rsa(a, b, reference=vectors, label_set=label_set))
        return
    render.comparison(ctx.obj, _store(ctx).compare_matching(a, b, manifest=manifest, n_boot=n_boot, seed=seed))


@analyze_app.command("prototypes")
def analyze_prototypes(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    layer: list[str] = typer.Option([], "--layer", help="Layer(s); default: every stored layer."),
    label_set: Optional[str] = _LABELS,
):
    """Class prototypes (mean vectors) per layer into table class_prototypes (seed 003 §3.1).

    Example: embstore analyze prototypes --model densenet121 --layer hidden
    """
    with render.IngestProgress(ctx.obj, "prototypes", "layer") as bar:
        results = _store(ctx).class_tables("prototypes", model, layer or None, progress=bar.update, label_set=label_set)
    render.materialised(ctx.obj, results)


@analyze_app.command("tstats")
def analyze_tstats(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    layer: list[str] = typer.Option([], "--layer", help="Layer(s); default: every stored layer."),
    pair: Optional[str] = typer.Option(None, help="'CLASS_A,CLASS_B': class A against class B on one --layer."),
    label_set: Optional[str] = _LABELS,
):
    """One-vs-rest Welch t per class and channel into table class_tstats (seed 003 §3.2).

    Example: embstore analyze tstats --model vgg16 --layer features.29 --pair knot,chain
    """
    if pair:
        if len(layer) != 1 or pair.count(",") != 1:
            raise typer.BadParameter("--pair A,B needs exactly one --layer")
        first, second = pair.split(",")
        a, b, (t, df) = _store(ctx, reader=True).class_pair(
            first, second, layer=layer[0], model=model, label_set=label_set
        )
        render.pair(ctx.obj, a, b, layer[0], t, df)
        return
    with render.IngestProgress(ctx.obj, "t-statistics", "layer") as bar:
        results = _store(ctx).class_tables("tstats", model, layer or None, progress=bar.update, label_set=label_set)
    render.materialised(ctx.obj, results)


@analyze_app.command("rsa")
def analyze_rsa(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    vectors: str = typer.Option("glove", help="glove | wordnet-wup | wordnet-path | a GloVe/word2vec file."),
    layer: list[str] = typer.Option([], "--layer", help="Layer(s); default: every stored layer."),
    groups: int = typer.Option(5, min=1, help="Image groups; each concept once per group."),
    permutations: int = typer.Option(1000, min=0, help="Permutations for the p-values."),
    seed: int = typer.Option(0, help="Seed of the permutations and the concept resamples (recorded)."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples of the concepts (0: no CIs)."),
    within_group: bool = typer.Option(
        False, "--within-group", help="1 vs 2 within each group's images, as seed 004 (default: all images)."
    ),
    alpha: float = typer.Option(0.05, help="Significance level; warns when the permutations cannot reach it."),
    label_set: Optional[str] = _LABELS,
    concepts: Optional[Path] = typer.Option(
        None, "--concepts", help="File of the concepts to use, one name or id a line (every one must be usable)."
    ),
    intersect: Optional[str] = typer.Option(
        None, help="Comma-separated references and concept files: use the concepts all of them have."
    ),
    whole_maps: bool = typer.Option(
        False, "--whole-maps", help="Also the 2 vs 2 on each conv layer's whole maps (exact; printed, not stored)."
    ),
):
    """2 vs 2 and 1 vs 2 accuracy, RSA, p-values and concept-bootstrap CIs per layer (seed 004) into rsa_results.

    Concepts: the label set's classes with >= --groups images that the reference covers, or one fixed
    set (--concepts, --intersect), recorded with each result (table concept_sets).
    Example: embstore analyze rsa --model vgg16 --vectors glove --permutations 1000
    Example: embstore analyze rsa --vectors wordnet-wup --intersect glove,wordnet-wup
    Example: embstore analyze rsa --model vgg16 --layer features.29 --whole-maps
    """
    with render.IngestProgress(ctx.obj, "2 vs 2", "layer") as bar:
        report = _store(ctx).rsa(
            model,
            vectors,
            groups=groups,
            permutations=permutations,
            seed=seed,
            layers=layer or None,
            n_boot=n_boot,
            scope_1v2="within-group" if within_group else "all",
            alpha=alpha,
            label_set=label_set,
            concepts=concepts,
            intersect=[x.strip() for x in intersect.split(",") if x.strip()] if intersect else None,
            progress=bar.update,
        )
    whole = _store(ctx).whole_map_two_vs_two(report, layer or None, vectors) if whole_maps else None
    render.rsa(ctx.obj, report, whole)


@analyze_app.command("failures")
def analyze_failures(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or name@weights."),
    k: int = typer.Option(20, "--k", "-k", min=1, help="How many failures to list."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, hidden=True),
    close: float = typer.Option(
        0.8, min=0.0, max=1.0, help="WordNet Wu-Palmer similarity that makes a failure 'close'."
    ),
    label_set: Optional[str] = _LABELS,
):
    """Top-1/top-5 error on labelled images and the failures ranking the true class lowest (seed 000 table 1).

    On another label set, its labels whose ids name WordNet synsets of ImageNet classes (or of their
    hypernyms) are scored: right when the top-1 class is one the label stands for.

    Example: embstore analyze failures --model densenet121 --k 10
    """
    found = _store(ctx, reader=True).failures(model, label_set=label_set, limit=_count(k, limit), close_at=close)
    render.failures(ctx.obj, found)


@app.command("fit-pca")
def fit_pca(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="Model name (as for ingest)."),
    layer: str = typer.Option(..., "--layer", help="The conv layer whose whole ReLU maps to fit (a node or alias)."),
    k: int = typer.Option(..., "--k", "-k", min=1, help="Components to keep."),
    images: str = typer.Option(..., "--images", help="The reference images (folder or manifest)."),
    name: str = typer.Option(..., "--name", help="The reference set's name, recorded with the basis."),
    weights: str = typer.Option(INGEST.weights, help="Weights, as for ingest."),
):
    """Fit a PCA basis of one layer's whole maps on reference images, once: ingest LAYER~pcaK after it.

    Example: embstore fit-pca --model resnet18 --layer layer3 --k 64 --images ref/ --name imagenet-val-500
    """
    with render.Status(ctx.obj, f"fitting {k} components of {layer}"):
        basis = _store(ctx, create=True).fit_pca(model, layer, k, images, name, weights=weights)
    render.basis(ctx.obj, basis)


@app.command()
def replicate(
    ctx: typer.Context,
    seed: str = typer.Argument(..., help="seed000 | seed003 | seed004 (see the README: Replicating the papers)."),
    images: Optional[str] = typer.Option(None, "--images", help="Labelled ImageNet images (folder or manifest)."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="seed000: the triplet manifest (POPORO)."),
    vectors: list[str] = typer.Option(
        [], "--vectors", help="seed004: word-vector file(s); the first is the reference."
    ),
    model: list[str] = typer.Option(
        [], "--model", "-m", help="Only these of the paper's networks, or PAPER=MODEL to run MODEL in its place."
    ),
    weights: Optional[str] = typer.Option(None, help="Weights for every network (default: the paper's, V1)."),
    pooling: str = typer.Option("gap", help="seed004: gap | srp (whole maps by a sparse random projection)."),
    permutations: Optional[int] = typer.Option(None, min=0, help="seed004: permutations (default 10000)."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples for the CIs (0: none)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and run nothing."),
):
    """Run one seed paper's protocol (networks, weights, layers, statistics) and set its numbers beside the paper's.

    Ingests what is missing (resumable), runs the analyses and prints the scoreboard (also in the
    report). Run it again after an interruption: finished steps are kept.
    Example: embstore replicate seed004 --images val/ --dry-run --json
    Example: embstore replicate seed000 --manifest poporo.csv --model 'ResNet-200=timm:resnet200' --weights r200.pth
    """
    import embstore

    inputs = dict(images=images, manifest=manifest, vectors=vectors, models=model, weights=weights,
                  pooling=pooling, permutations=permutations, n_boot=n_boot)  # fmt: skip
    if dry_run:
        render.plan(ctx.obj, embstore.replication_plan(seed, **inputs))
        return
    with render.Status(ctx.obj, f"replicating {seed}") as status:
        done = _store(ctx, create=True).replicate(seed, progress=status.update, **inputs)
    render.replication(ctx.obj, done)


# -- figures and the report ---------------------------------------------------------------------
_OUT = typer.Option(None, "--out", "-o", help="File stem; .png/.svg are added (default: ./figures/KIND).")
_FORMATS = typer.Option("png,svg", "--format", help="Comma-separated: png, svg, pdf.")
_MANIFEST = typer.Option(None, "--manifest", help="Triplet manifest file or sha prefix (default: newest with results).")
_MODEL = typer.Option(None, "--model", "-m", help="Model name or name@weights.")
_MODELS = typer.Option([], "--model", "-m", help="Model(s); default: every model with results.")
_LAYER = typer.Option(None, "--layer", help="Layer (default: hidden if stored, else the deepest).")


def _plot(ctx: typer.Context, kind: str, out: Optional[Path], formats: str, **options) -> None:
    import embstore

    fig = _store(ctx, reader=True).figure(kind, **options)
    render.written(
        ctx.obj,
        embstore.save_figure(
            fig, out or Path("figures") / kind, tuple(f.strip() for f in formats.split(",") if f.strip())
        ),
    )


@plot_app.command("rsa")
def plot_rsa(
    ctx: typer.Context,
    model: list[str] = _MODELS,
    reference: list[str] = typer.Option([], "--reference", "-r", help="Reference space(s), e.g. glove, wordnet-wup."),
    measure: str = typer.Option("acc_2v2", help="acc_2v2 | acc_1v2 | rsa_spearman | rsa_pearson | rsa_kendall_a"),
    correct: str = typer.Option(
        "holm", help="holm | bh | none: the correction of the layers' p-values the filled markers use."
    ),
    label_set: list[str] = typer.Option([], "--labels", help="Label set(s); default: every one with results."),
    mixed_concepts: bool = typer.Option(
        False, "--mixed-concepts", help="Overlay curves on different concept sets (each line names its set)."
    ),
    out: Optional[Path] = _OUT,
    formats: str = _FORMATS,
):
    """2 vs 2 accuracy by layer, one line per model, reference space and label set (seed 004 figs 1–3).

    Curves on different concept sets are refused unless --mixed-concepts (fix one set with analyze rsa
    --intersect or --concepts).
    Example: embstore plot rsa --model vgg16 --reference glove --out figs/vgg16-2v2
    """
    _plot(ctx, "rsa", out, formats, models=model or None, references=reference or None, measure=measure,
          correct=correct, label_sets=label_set or None, mixed_concepts=mixed_concepts)  # fmt: skip


@plot_app.command("roc")
def plot_roc(
    ctx: typer.Context,
    manifest: Optional[str] = _MANIFEST,
    model: list[str] = _MODELS,
    layer: Optional[str] = _LAYER,
    out: Optional[Path] = _OUT,
    formats: str = _FORMATS,
):
    """ROC curves of related vs unrelated pairs by cosine, one per model, with AUC (seed 000 fig 5).

    Example: embstore plot roc --model resnet50 --model densenet121 --out figs/roc
    """
    _plot(ctx, "roc", out, formats, manifest=manifest, models=model or None, layer=layer)


@plot_app.command("errors")
def plot_errors(
    ctx: typer.Context,
    manifest: Optional[str] = _MANIFEST,
    model: list[str] = _MODELS,
    layer: Optional[str] = _LAYER,
    out: Optional[Path] = _OUT,
    formats: str = _FORMATS,
):
    """Matching error (95 % CI), AUC error and ImageNet top-1 error per model as bars, with their ρ (seed 000 fig 6).

    Example: embstore plot errors --out figs/errors --format png
    """
    _plot(ctx, "errors", out, formats, manifest=manifest, models=model or None, layer=layer)


@plot_app.command("cosines")
def plot_cosines(
    ctx: typer.Context,
    manifest: Optional[str] = _MANIFEST,
    model: list[str] = typer.Option(..., "--model", "-m", help="The two models: --model A --model B."),
    layer: Optional[str] = _LAYER,
    out: Optional[Path] = _OUT,
    formats: str = _FORMATS,
):
    """Per-pair cosines of model A against model B on the same triplets, with their correlation (seed 000 fig 5a).

    Example: embstore plot cosines --model resnet50 --model densenet121 --out figs/cosines
    """
    _plot(ctx, "cosines", out, formats, manifest=manifest, models=model, layer=layer)


@plot_app.command("ratings")
def plot_ratings(
    ctx: typer.Context,
    manifest: Optional[str] = _MANIFEST,
    model: Optional[str] = _MODEL,
    layer: Optional[str] = _LAYER,
    out: Optional[Path] = _OUT,
    formats: str = _FORMATS,
):
    """Cosine of (object, related) and (object, unrelated) against human ratings, o/x = matched or not (seed 000 fig 4).

    Example: embstore plot ratings --model resnet50 --layer hidden
    """
    _plot(ctx, "ratings", out, formats, manifest=manifest, model=model, layer=layer)


@plot_app.command("similar")
def plot_similar(
    ctx: typer.Context,
    cls: str = typer.Argument(..., metavar="CLASS", help="Class name, WordNet synonym, wnid or index."),
    k: int = typer.Option(9, "--k", "-k", min=1, help="How many classes per row."),
    model: Optional[str] = _MODEL,
    layer: Optional[str] = typer.Option(None, help="A stored layer, or 'all' conv layers (prototype/tstat)."),
    method: list[str] = typer.Option([], "--method", help="Rows: prototype, tstat, hidden, classifier (default: all)."),
    label_set: Optional[str] = _LABELS,
    out: Optional[Path] = _OUT,
    formats: str = _FORMATS,
):
    """Top-K similar classes with one example image each, one row per method (seed 003 figs 1–2).

    Example: embstore plot similar knot --k 9 --method tstat --method hidden
    """
    methods = tuple(method) or ("prototype", "tstat", "hidden", "classifier")
    _plot(ctx, "similar", out, formats, cls=cls, k=k, model=model, layer=layer, methods=methods, label_set=label_set)


@plot_app.command("cases")
def plot_cases(
    ctx: typer.Context,
    manifest: Optional[str] = _MANIFEST,
    model: Optional[str] = _MODEL,
    layer: Optional[str] = _LAYER,
    k: int = typer.Option(4, "--k", "-k", min=1, help="Triplets per case."),
    n: Optional[int] = typer.Option(None, "--n", min=1, hidden=True),
    case: list[str] = typer.Option([], "--case", help="best, worst, good_luck, bad_luck (default: all four)."),
    out: Optional[Path] = _OUT,
    formats: str = _FORMATS,
):
    """Best, worst, good-luck and bad-luck triplets as image strips (seed 000 figs 7–10).

    Example: embstore plot cases --model resnet50 --case worst --k 6
    """
    _plot(
        ctx,
        "cases",
        out,
        formats,
        manifest=manifest,
        model=model,
        layer=layer,
        n=_count(k, n),
        which=tuple(case) or ("best", "worst", "good_luck", "bad_luck"),
    )


@plot_app.command("failures")
def plot_failures(
    ctx: typer.Context,
    model: Optional[str] = _MODEL,
    k: int = typer.Option(10, "--k", "-k", min=1, help="How many failures."),
    n: Optional[int] = typer.Option(None, "--n", min=1, hidden=True),
    out: Optional[Path] = _OUT,
    formats: str = _FORMATS,
    label_set: Optional[str] = _LABELS,
):
    """The worst classification failures with their images, true and predicted class (seed 000 table 1).

    Example: embstore plot failures --model densenet121 --k 15
    """
    _plot(ctx, "failures", out, formats, model=model, n=_count(k, n), label_set=label_set)


@plot_app.command("predictions")
def plot_predictions(
    ctx: typer.Context,
    model: Optional[str] = _MODEL,
    k: int = typer.Option(12, "--k", "-k", min=1, help="How many images (spread evenly by path)."),
    n: Optional[int] = typer.Option(None, "--n", min=1, hidden=True),
    out: Optional[Path] = _OUT,
    formats: str = _FORMATS,
):
    """Stored images with the model's top-2 classes (and the true class of labelled ones).

    Example: embstore plot predictions --model efficientnet_lite0 --k 24
    """
    _plot(ctx, "predictions", out, formats, model=model, n=_count(k, n))


@app.command()
def report(
    ctx: typer.Context,
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    cls: Optional[str] = typer.Option(
        None, "--class", help="Class for the similar-classes figure (default: the class with the most labelled images)."
    ),
    manifest: Optional[str] = _MANIFEST,
    k: int = typer.Option(9, "--k", "-k", min=1, help="Similar classes per row."),
):
    """One self-contained HTML report: store contents, models, layers, runs, errors and every computed analysis.

    Example: embstore report --out report.html --class knot
    """
    with render.Status(ctx.obj, "building report") as status:
        result = _store(ctx, reader=True).report(out, cls=cls, manifest=manifest, k=k, progress=status.update)
    render.report(ctx.obj, result)


@app.command()
def serve(
    ctx: typer.Context,
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; not loopback: needs --token."),
    token: Optional[str] = typer.Option(None, "--token", help="Required of every request ('auto': a random one)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the URL in a browser."),
):
    """Explore the store in the browser: classes, neighbours, images, analyses, a map, SQL (read-only;
    it reads the published snapshot, so it runs beside an ingest). Ctrl-C stops it.

    Example: embstore serve --open
    """
    server = _store(ctx).serve(host=host, port=port, token=token)
    render.serving(ctx.obj, server.url)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    server.wait()


def main(argv: list[str] | None = None) -> None:
    import click

    argv = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    as_json = "--json" in argv[: _first_command(argv)]
    command = click_command()
    try:
        # non-standalone typer *returns* exit codes (typer.Exit, and 130 for Ctrl-C) instead of raising
        code = command.main(args=argv, prog_name="embstore", standalone_mode=False)
    except EmbstoreError as exc:
        render.error(type(exc).__name__, " ".join(str(exc).split()), exc.exit_code, as_json=as_json)
        sys.exit(exc.exit_code)
    except OSError as exc:  # the library's typed errors cover what it expects; this is the machine's word
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        render.error(type(exc).__name__, f"{exc.strerror or exc}{where}", 1, as_json=as_json)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if isinstance(exc, click.NoSuchOption):  # the global options are accepted after any command too
            exc = click.NoSuchOption(exc.option_name, possibilities=_close_options(exc.option_name, command, argv),
                                     ctx=exc.ctx)  # fmt: skip
        if as_json:
            render.error("UsageError", exc.format_message(), exc.exit_code, as_json=True)
        else:
            exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        code = 130
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":  # a Rust extension's panic (pyo3): not an Exception
            raise
        render.error("InternalError", " ".join(str(exc).split())[:300], 1, as_json=as_json)
        sys.exit(1)
    if code == 130:
        render.error("Interrupted", "interrupted; run the same command again to resume", 130, as_json=as_json)
    sys.exit(code if isinstance(code, int) else 0)


def click_command():
    """The click command of `app`, with every subcommand's help complete: its summary in the command
    list never cut short, and the global options it accepts listed under its own."""
    import click

    root = typer.main.get_command(app)
    shared = [p for p in root.params if p.name != "version" and "--help" not in p.opts]

    def with_globals(cmd: click.Command) -> None:
        own = cmd.format_options

        def format_options(ctx: click.Context, formatter: click.HelpFormatter) -> None:
            own(ctx, formatter)
            with formatter.section("Global options (before or after the command)"):
                formatter.write_dl([r for p in shared if (r := p.get_help_record(ctx)) is not None])

        cmd.format_options = format_options  # type: ignore[method-assign]

    def walk(group: click.Group) -> None:
        for cmd in group.commands.values():
            cmd.short_help = " ".join((cmd.help or "").split("\n\n")[0].split())
            if isinstance(cmd, click.Group):
                walk(cmd)
            else:
                with_globals(cmd)

    walk(root)  # type: ignore[arg-type]  # typer's root with subcommands is a group
    return root


def _close_options(name: str, root, argv: list[str]) -> list[str]:
    """Options close to a mistyped `name`: the command's own and the global ones."""
    import difflib

    cmd, known = root, [o for p in root.params for o in p.opts if o.startswith("--")]
    for arg in argv[_first_command(argv) :]:
        sub = getattr(cmd, "commands", {}).get(arg)
        if sub is None:
            break
        cmd = sub
        known += [o for p in sub.params for o in p.opts if o.startswith("--") and not getattr(p, "hidden", False)]
    return difflib.get_close_matches(name, sorted(set(known)), n=3, cutoff=0.7)


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move --store/--wait/--json/--quiet/--wide written after the subcommand to the front, where click wants them.

    Users type `embstore ingest --model m --store S`; everything after a literal `--` is left alone.

    >>> hoist_global_options(["query", "similar", "knot", "--store", "s", "--json"])
    ['--store', 's', '--json', 'query', 'similar', 'knot']
    >>> hoist_global_options(["sql", "SELECT 1", "--store=s", "--", "--json"])
    ['--store=s', 'sql', 'SELECT 1', '--', '--json']
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg in GLOBAL_FLAGS or any(arg.startswith(f"{name}=") for name in GLOBAL_VALUES):
            front.append(arg)
        elif arg in GLOBAL_VALUES and i + 1 < len(argv):
            front += [arg, argv[i + 1]]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _first_command(argv: list[str]) -> int:
    for i, arg in enumerate(argv):
        if not arg.startswith("-") and (i == 0 or argv[i - 1] not in GLOBAL_VALUES):
            return i
    return len(argv)


if __name__ == "__main__":
    main()
