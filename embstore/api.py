"""The public API: `Store`, the noun a notebook holds, and the module-level helpers `embstore` exports.

Each verb of `Store` is one call into the module that owns its concept, with that function's
defaults; the plumbing (connections, the writer lock, snapshots, paths) is `store.core`, a
`StoreCore` (embstore/store/core.py) that every library function takes. This is the one module
that imports every layer of the package (tests/test_architecture.py holds the others to theirs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embstore.store.core import StoreCore

if TYPE_CHECKING:
    import duckdb

    from embstore.analysis.classtables import Materialised
    from embstore.analysis.comparisons import MatchingComparison, RsaComparison
    from embstore.analysis.failures import FailureReport
    from embstore.analysis.recipes import Plan
    from embstore.analysis.replicate import Replication
    from embstore.analysis.rsatables import RsaReport
    from embstore.analysis.tasks import MatchingReport
    from embstore.ingest.layers import LayerInfo, Layers
    from embstore.ingest.options import IngestOptions
    from embstore.ingest.run import IngestResult
    from embstore.report.html import Report
    from embstore.results import Answer, SqlResult, Status, Vectors
    from embstore.serve import Server
    from embstore.spec import ModelSpec
    from embstore.store.table import CompactReport
    from embstore.store.tablecheck import VerifyReport

Progress = Callable[[int, int], None]


class Store:
    """An embstore store: open one with `embstore.open(path)`; use it as a context manager to close it."""

    __slots__ = ("core",)

    def __init__(self, core: StoreCore) -> None:
        """The verbs of `core` (what `embstore.open` makes)."""
        self.core = core  # the plumbing: connections, writer lock, snapshots, paths (embstore/store/core.py)

    @property
    def path(self) -> Path:
        """The store's folder."""
        return self.core.path

    def close(self) -> None:
        """Release the kept read-only connection (relations from `sql()` stop working)."""
        self.core.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<embstore.Store {self.path}>"

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """A DuckDB relation of `query` (read-only, with embstore's UDFs; kept until `close()`)."""
        return self.core.relation(query)

    def ingest(
        self,
        images: str | Path | None = None,
        *,
        model: Any = "efficientnet_lite0",
        options: IngestOptions | None = None,
        progress: Progress | None = None,
        **changes: Any,
    ) -> IngestResult:
        """Store each chosen layer's vector of `images` through `model`; resumable (IngestOptions as keywords)."""
        from embstore.ingest.run import ingest

        return ingest(self.core, model, None if images is None else str(images), options, progress=progress, **changes)

    def fit_pca(self, model: str, layer: str, k: int, images: str | Path, name: str, *, weights: str = "DEFAULT"):
        """Fit `layer`'s K-component basis of whole maps on reference `images`, once; then ingest `layer~pcaK`."""
        from embstore.ingest.pca import fit

        return fit(self.core, model, layer, k, str(images), name, weights=weights)

    def vectors(
        self,
        model: str | None = None,
        layer: str = "hidden",
        *,
        images: Sequence[str] | None = None,
        labels: Sequence[int | str] | None = None,
        label_set: str | None = None,
    ) -> Vectors:
        """One model layer's stored vectors (read when first used), optionally of some image ids or classes."""
        from embstore.store.reading import layer_vectors

        return layer_vectors(self.core, model, layer, images=images, labels=labels, label_set=label_set)

    def similar_classes(
        self,
        cls: str,
        *,
        k: int = 9,
        model: str | None = None,
        layer: str | None = None,
        method: str | None = None,
        label_set: str | None = None,
    ) -> Answer:
        """The k classes of `label_set` nearest to `cls` by `method` (prototype, tstat, hidden, classifier)."""
        from embstore.analysis.similarity import similar_classes

        return similar_classes(self.core, cls, k=k, model=model, layer=layer, method=method, label_set=label_set)

    def nearest_images(
        self, image: str | Path, *, k: int = 10, model: str | None = None, layer: str = "hidden", index: str = "auto"
    ) -> Answer:
        """The k stored images nearest to `image` (a stored id or prefix, a stored path, or any image file)."""
        from embstore.search import nearest_images

        return nearest_images(self.core, str(image), k=k, model=model, layer=layer, index=index)

    def run_sql(self, query: str, *, write: bool = False, allow: Sequence[str | Path] = ()) -> SqlResult:
        """(columns, rows) of `query`, read-only unless `write`, confined to the store's files and `allow`."""
        from embstore.store.sql import run_sql

        return run_sql(self.core, query, write=write, allow=allow)

    def tables(self) -> list[tuple[str, str]]:
        """(name, 'table' or 'view') of everything SQL can read in the catalog."""
        from embstore.store.catalog import Catalog

        with self.core.read() as con:
            return Catalog(con).tables()

    def status(self) -> Status:
        """Counts of images, models, vectors, files, runs and errors, and per model its top-1/top-5 error."""
        from embstore.results import Status
        from embstore.store.catalog import Catalog

        with self.core.read() as con:
            summary = Catalog(con).summary()
        return Status(path=str(self.core.path), activations=self.core.location.table_uri, **summary)

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Check that the catalog and the files agree; `repair` makes them agree (under the writer lock)."""
        # the lock: deleting what looks uncommitted while an ingest commits it would lose a batch in flight
        from embstore.ingest.models import stored_module_calls
        from embstore.store.tablecheck import verify

        if not repair:
            return verify(self.core, module_calls=stored_module_calls)
        with self.core.writer_lock():
            return verify(self.core, repair=True, module_calls=stored_module_calls)

    def compact(self, *, target_size_mb: float = 128, retain_hours: float = 1) -> CompactReport:
        """Merge small table files to ~`target_size_mb`; delete files unpinned for `retain_hours`."""
        from embstore.store.table import ActivationTable

        with self.core.writer_lock():
            return ActivationTable(self.core).compact(
                target_size=int(target_size_mb * (1 << 20)), retain_hours=retain_hours
            )

    def match_triplets(
        self,
        manifest: str | Path,
        *,
        models: Sequence[str] | None = None,
        layers: Sequence[str] | None = None,
        ingest_missing: bool = False,
        weights: str = "DEFAULT",
        n_boot: int = 1000,
        progress: Progress | None = None,
    ) -> MatchingReport:
        """Related/unrelated matching error, bootstrap CI and ROC AUC per model and layer (seed 000)."""
        from embstore.analysis.tasks import matching

        with self.core.writer_lock():  # stores its results (and with ingest_missing, vectors)
            return matching(
                self.core,
                str(manifest),
                models=list(models) if models else None,
                layers=list(layers) if layers else None,
                ingest_missing=ingest_missing,
                weights=weights,
                n_boot=n_boot,
                progress=progress,
            )

    def compare_matching(
        self, a: str, b: str, *, manifest: str | None = None, n_boot: int = 1000, seed: int = 0
    ) -> MatchingComparison:
        """`a` against `b` ("model[:layer]") on the same triplets: McNemar p, paired bootstrap of Δerror, ΔAUC."""
        from embstore.analysis.comparisons import compare_matching

        with self.core.writer_lock():
            return compare_matching(self.core, a, b, manifest=manifest, n_boot=n_boot, seed=seed)

    def failures(
        self, model: str | None = None, *, label_set: str | None = None, limit: int = 20, close_at: float = 0.8
    ) -> FailureReport:
        """Top-1/top-5 error and the failures ranking the true class lowest (seed 000 table 1)."""
        from embstore.analysis.tasks import failures

        return failures(self.core, model, label_set=label_set, limit=limit, close_at=close_at)

    def class_tables(
        self,
        kind: str,
        model: str | None = None,
        layers: Sequence[str] | None = None,
        progress: Progress | None = None,
        label_set: str | None = None,
    ) -> list[Materialised]:
        """Materialise `kind` = 'prototypes' or 'tstats' per layer as catalog tables (seed 003 §3)."""
        from embstore.analysis.tasks import class_tables

        with self.core.writer_lock():
            return class_tables(self.core, kind, model, list(layers) if layers else None, progress, label_set)

    def class_pair(
        self, a: str, b: str, *, layer: str, model: str | None = None, label_set: str | None = None
    ) -> tuple[Any, Any, Any]:
        """(class a, class b, (t, df)) per channel: Welch's t of class a against class b on one layer."""
        from embstore.analysis.tasks import class_pair

        return class_pair(self.core, model, layer, a, b, label_set)

    def rsa(
        self,
        model: str | None = None,
        reference: str = "glove",
        *,
        groups: int = 5,
        permutations: int = 1000,
        seed: int = 0,
        layers: Sequence[str] | None = None,
        n_boot: int = 1000,
        scope_1v2: str = "all",
        alpha: float = 0.05,
        label_set: str | None = None,
        concepts: Sequence[str] | str | Path | None = None,
        intersect: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> RsaReport:
        """2 vs 2, 1 vs 2, RSA, p-values and CIs per layer (seed 004) on `label_set`'s covered concepts."""
        from embstore.analysis.rsatables import run_rsa

        with self.core.writer_lock():
            return run_rsa(
                self.core,
                model,
                reference,
                groups=groups,
                n_permutations=permutations,
                seed=seed,
                layers=list(layers) if layers else None,
                n_boot=n_boot,
                scope_1v2=scope_1v2,
                alpha=alpha,
                label_set=label_set,
                concepts=concepts if concepts is None or isinstance(concepts, (str, Path)) else list(concepts),
                intersect=list(intersect) if intersect else None,
                progress=progress,
            )

    def whole_map_two_vs_two(self, report: RsaReport, layers: Sequence[str] | None, reference: str = "glove", **kw):
        """`report`'s 2 vs 2 on `layers`' whole maps (Gram accumulation; memory bounded, nothing stored)."""
        from embstore.analysis.wholemaps import whole_map_two_vs_two

        return whole_map_two_vs_two(self.core, report, list(layers) if layers else None, reference, **kw)

    def compare_rsa(self, a: str, b: str, *, reference: str = "glove", label_set: str | None = None) -> RsaComparison:
        """`a` against `b` ("model[:layer]") on the same concepts: paired concept bootstrap per measure."""
        from embstore.analysis.comparisons import compare_rsa

        with self.core.writer_lock():
            return compare_rsa(self.core, a, b, reference=reference, label_set=label_set)

    def replicate(self, seed: str, *, progress: Callable[[str], None] | None = None, **inputs: Any) -> Replication:
        """Run seed000|seed003|seed004 as the paper did (inputs: `replication_plan`'s); resumable."""
        from embstore.analysis.recipes import plan
        from embstore.analysis.replicate import replicate

        return replicate(self.core, plan(seed, **inputs), progress=progress)

    def figure(self, kind: str, **options: Any) -> Any:
        """A matplotlib figure of `kind` (rsa, roc, errors, ratings, similar, cases, failures, predictions)."""
        from embstore.report.figures import draw

        return draw(self.core, kind, **options)

    def report(
        self,
        out: str | Path = "report.html",
        *,
        cls: str | None = None,
        manifest: str | None = None,
        k: int = 9,
        progress: Callable[[str], None] | None = None,
    ) -> Report:
        """Write one self-contained HTML report of the store and every computed analysis."""
        from embstore.report.html import build_report

        return build_report(self.core, out, cls=cls, manifest=manifest, k=k, progress=progress)

    def serve(self, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None) -> Server:
        """Explore the store's published snapshot in a browser at `.url` (another host needs a token)."""
        from embstore.serve import start

        return start(self, host=host, port=port, token=token)


def open(  # noqa: A001 - the API's verb
    path: str | Path | None = None,
    *,
    create: bool = False,
    keep_reader: bool = False,
    defer_creation: bool = False,
    activations: str | Path | None = None,
    wait: float = 0.0,
    on_wait: Callable[[str], None] | None = None,
    restore_catalog: bool = False,
    snapshot: bool = False,
) -> Store:
    """Open the store at `path` (default: $EMBSTORE_HOME, else ~/.embstore), migrating it if needed.

    `activations` (with `create`): a new store's table elsewhere, a folder or `s3://bucket/prefix`;
    `keep_reader`: one read-only connection until `close()`; `defer_creation`: made when first used;
    writers wait `wait` s for the lock (StoreBusyError); `restore_catalog`: its last snapshot;
    `snapshot`: read the published snapshot (never locks, never writes: a server beside an ingest).
    >>> import tempfile; open(tempfile.mkdtemp(), create=True).status()["models"]
    0
    """
    return Store(
        StoreCore.open(
            path,
            create=create,
            keep_reader=keep_reader,
            defer_creation=defer_creation,
            activations=activations,
            wait=wait,
            on_wait=on_wait,
            restore_catalog=restore_catalog,
            snapshot=snapshot,
        )
    )


def replication_plan(seed: str, **inputs: Any) -> Plan:
    """What `Store.replicate(seed, **inputs)` runs, cannot run (and the way out) and does differently."""
    from embstore.analysis.recipes import plan

    return plan(seed, **inputs)


def list_models() -> tuple[str, ...]:
    """Every model name `Store.ingest(model=…)` accepts (`"densenet121"`; timm models as `timm:NAME` too)."""
    from embstore.spec import available_models

    return available_models()


def describe_model(name: str, weights: str = "DEFAULT") -> ModelSpec:
    """The weights tag and preprocessing `name` would be ingested with (builds no network).

    >>> describe_model("resnet50").preprocessing.crop
    224
    """
    from embstore.ingest.models import describe

    return describe(name, weights)


def model_weights(name: str) -> tuple:
    """Every pretrained weights of `name` (name, published top-1/top-5, default), without importing torch.

    >>> [w.name for w in model_weights("resnet50") if w.default]  # the 2021 recipe; the papers': V1
    ['IMAGENET1K_V2']
    """
    from embstore.ingest.models import weights_choices

    return weights_choices(name)


def model_layers(name: str) -> Layers:
    """`name`'s layers, its graph nodes in forward order, from a real run with random weights (cached)."""
    from embstore.ingest.models import layers_of

    return layers_of(name)


def preprocessing_changes(*, preset: str | None = None, **fields: Any) -> dict | None:
    """{field: value} changes to a model's own preprocessing from text options (what the CLI's
    --preprocessing, --crop none, --mean a,b,c give), or None when nothing changes.

    >>> preprocessing_changes(preset="keras-caffe", interpolation="bilinear")
    {'preset': 'keras-caffe', 'interpolation': 'bilinear'}
    """
    from embstore.errors import UsageError

    out: dict = {"preset": preset} if preset else {}
    for field, value in fields.items():
        if value is None:
            continue
        if field == "crop" and isinstance(value, str):
            if value.lower() == "none":
                value = None
            elif value.isdigit() and int(value) > 0:
                value = int(value)
            else:
                raise UsageError(f"crop must be a number of pixels or none, not '{value}'")
        elif field in ("mean", "std") and isinstance(value, str):
            try:
                value = tuple(float(v) for v in value.split(","))
            except ValueError:
                raise UsageError(f"{field} must be three numbers a,b,c, not '{value}'") from None
            if len(value) != 3:
                raise UsageError(f"{field} must be three numbers a,b,c, not '{','.join(map(str, value))}'")
        out[field] = value
    return out or None


def layer_set(name: str, set_name: str, layers: list[LayerInfo] | None = None) -> list[LayerInfo]:
    """The layers of one named set of `name` (blocks, relu, act, conv, seed003, seed004, all)."""
    from embstore.ingest.layersets import SETS, members

    if set_name not in SETS:
        from embstore.errors import UsageError

        raise UsageError(f"unknown layer set '{set_name}'; choose one of {', '.join(SETS)}")
    return members(layers if layers is not None else model_layers(name), set_name, name)


def layer_aliases(name: str, scheme: str = "keras") -> dict[str, str]:
    """{Keras layer name: node name} of `name` (VGG, ResNet, Inception v3), as the papers name layers."""
    from embstore.ingest.layersets import aliases

    return aliases(model_layers(name), name, scheme)


def sample_images() -> Path:
    """The folder of real photos bundled with embstore (the demo's input).

    >>> sorted(p.name for p in sample_images().iterdir())[:2]
    ['astronaut.png', 'chelsea.png']
    """
    from embstore.resources import sample_images_dir

    return sample_images_dir()


def sample_data() -> Path:
    """The bundled data: `samples/` (photos), `demo/photos.csv` (labels), `demo/triplets.csv` (triplets)."""
    from embstore.resources import data_dir

    return data_dir()


def save_figure(fig: Any, out: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write a figure from `Store.figure()` as OUT.png, OUT.svg (and .pdf); returns the paths."""
    from embstore.report.canvas import save

    return save(fig, out, formats)
