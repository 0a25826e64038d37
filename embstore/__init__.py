"""embstore: a DuckDB + Parquet store of per-layer CNN activations, with search and the seed papers' analyses.

Open a store, ingest images through a network, read vectors back and ask it questions:

    >>> import embstore                                        # doctest: +SKIP
    >>> store = embstore.open("~/.embstore")                    # doctest: +SKIP
    >>> store.ingest("photos/", model="densenet121")            # doctest: +SKIP
    >>> store.vectors("densenet121", "hidden").numpy()          # doctest: +SKIP
    >>> store.similar_classes("knot", k=9).to_pandas()          # doctest: +SKIP
    >>> store.sql("SELECT * FROM runs").df()                    # doctest: +SKIP

`import embstore` loads neither torch, faiss nor matplotlib: each is imported by the call that
needs it (ingest, search, figures).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embstore.errors import (
    CatalogDamagedError,
    EmbstoreError,
    EngineError,
    ImageDecodeError,
    InputPathError,
    ManifestError,
    MigrationError,
    MissingDependencyError,
    NotFoundError,
    StoreBusyError,
    StoreError,
    UnknownClassError,
    UnknownLayerError,
    UnknownModelError,
    UsageError,
    WeightsUnavailableError,
)
from embstore.ingest.spec import ModelSpec, Preprocessing
from embstore.results import Answer, Neighbour, Vectors
from embstore.store.store import Store

if TYPE_CHECKING:
    from embstore.ingest.layers import LayerInfo, Layers

__all__ = [
    "Answer",
    "CatalogDamagedError",
    "EmbstoreError",
    "EngineError",
    "ImageDecodeError",
    "InputPathError",
    "ManifestError",
    "MigrationError",
    "MissingDependencyError",
    "ModelSpec",
    "Neighbour",
    "NotFoundError",
    "Preprocessing",
    "Store",
    "StoreBusyError",
    "StoreError",
    "UnknownClassError",
    "UnknownLayerError",
    "UnknownModelError",
    "UsageError",
    "Vectors",
    "WeightsUnavailableError",
    "__version__",
    "describe_model",
    "layer_aliases",
    "layer_set",
    "list_models",
    "model_layers",
    "model_weights",
    "open",
    "preprocessing_changes",
    "sample_data",
    "sample_images",
    "save_figure",
]


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
) -> Store:
    """Open the store at `path` (default: $EMBSTORE_HOME, else ~/.embstore), migrating it if needed.

    `activations` (with `create`) keeps a new store's activations table elsewhere: another folder
    or an object store URL such as `s3://bucket/prefix` (credentials from the cloud library's own
    environment and config); the catalog stays in `path`.

    `keep_reader` keeps one read-only catalog connection until `close()`: faster for a burst of
    queries, but other processes cannot write the catalog meanwhile. `defer_creation` (with
    `create`) makes a new store's folder only when something is first read or written, so a call
    that fails its argument checks leaves nothing behind.

    Writing calls (ingest, repair, compact, analyses) hold the store's writer lock; when another
    process has it they raise StoreBusyError naming it, at once or after waiting up to `wait`
    seconds for it (`on_wait(holder)` is told, once, whom a wait is for).

    A catalog DuckDB reports damaged raises CatalogDamagedError; with `restore_catalog` it is moved
    to quarantine/ and replaced by its last published snapshot, and `store.verify(repair=True)` then
    rolls the activations table back to what that snapshot recorded (the next ingest stores again
    what came after it).

    >>> import tempfile
    >>> store = open(tempfile.mkdtemp(), create=True)
    >>> store.status()["models"]
    0
    """
    return Store.open(
        path,
        create=create,
        keep_reader=keep_reader,
        defer_creation=defer_creation,
        activations=activations,
        wait=wait,
        on_wait=on_wait,
        restore_catalog=restore_catalog,
    )


def list_models() -> tuple[str, ...]:
    """Every model name `Store.ingest(model=…)` accepts (timm models as `timm:NAME` too).

    >>> "densenet121" in list_models()
    True
    """
    from embstore.ingest.models import available_models

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

    >>> [w.name for w in model_weights("resnet50") if w.default]
    ['IMAGENET1K_V2']
    """
    from embstore.ingest.models import weights_choices

    return weights_choices(name)


def model_layers(name: str) -> Layers:
    """`name`'s layers, its graph nodes in forward order (name, module, call, channels, size, sets,
    default), measured by a real run of the network with random weights (then cached: the same
    versions of embstore, torch, torchvision and timm answer from the cache without importing torch).

    >>> [layer.name for layer in model_layers("resnet18") if layer.default][:2]  # doctest: +SKIP
    ['layer1.0', 'layer1.1']
    """
    from embstore.ingest.layers import cached, discover, remember
    from embstore.ingest.models import describe, load

    size = describe(name, "none").preprocessing.size  # checks the name before torch is imported
    layers = cached(name, size)
    if layers is None:
        net, spec, _ = load(name, "none")
        layers = discover(net, name, size)
        remember(name, size, layers)
    return layers


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
    """The layers of one named set of `name` (blocks, relu, act, conv, seed003, seed004, all).

    >>> len(layer_set("resnet50", "relu"))  # doctest: +SKIP
    49
    """
    from embstore.ingest.layersets import SETS, members

    if set_name not in SETS:
        from embstore.errors import UsageError

        raise UsageError(f"unknown layer set '{set_name}'; choose one of {', '.join(SETS)}")
    return members(layers if layers is not None else model_layers(name), set_name, name)


def layer_aliases(name: str, scheme: str = "keras") -> dict[str, str]:
    """{Keras layer name: node name} of `name` (VGG, ResNet, Inception v3), as the papers name layers.

    >>> layer_aliases("inception_v3")["mixed9"]  # doctest: +SKIP
    'Mixed_7b'
    """
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
    """The bundled data folder: `samples/` (real photos), `demo/photos.csv` (their ImageNet labels)
    and `demo/triplets.csv` (related/unrelated triplets of them), as the demo uses them.

    >>> (sample_data() / "demo" / "photos.csv").is_file()
    True
    """
    from embstore.resources import data_dir

    return data_dir()


def save_figure(fig: Any, out: str | Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write a figure from `Store.figure()` as OUT.png, OUT.svg (and .pdf); returns the paths."""
    from embstore.report.canvas import save

    return save(fig, out, formats)


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read from the installed metadata on first use (13 ms of every CLI start)
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("embstore")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    if name == "testing":  # the synthetic-store helper, imported on first use
        import importlib

        return importlib.import_module("embstore.testing")
    raise AttributeError(f"module 'embstore' has no attribute {name!r}")
