"""How an ingest runs: every option of `Store.ingest`, `embstore ingest` and the engines, spelled once.

`IngestOptions` is the one typed object the CLI builds from its flags, `Store.ingest` from its
keywords, and `ingest()` and both engines read; each field's meaning is documented here and
nowhere else. Importing it loads nothing heavy (the CLI reads its defaults at start-up).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embstore.errors import UsageError

if TYPE_CHECKING:
    from embstore.spec import Preprocessing

COMMIT_SECONDS = 5.0
COMMIT_BYTES = 256 << 20
DEFAULT_MAX_PIXELS = 100_000_000
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class IngestOptions:
    """Everything about an ingest but the model and the images (`embstore.Store.ingest(**fields)`).

    weights: DEFAULT | a weights enum name | none (random) | a state-dict file (named models only).
    layers: named sets (blocks, relu, act, conv, seed003, seed004, all), graph node names and Keras
        names (ingest/layersets.py), a comma-separated string or a list.
    preprocessing: for a named model, a preset ("keras-caffe", "keras-tf", "keras-torch", "squash"),
        a Preprocessing, or {field: value} changes to the model's own; the model key then names it
        (`resnet50@IMAGENET1K_V1~keras-caffe`). A torch module needs one, with `name`.
    name: the model name a torch module is recorded under (its weights are recorded by hash).
    batch_size: images per forward pass. limit: at most this many images (sorted by path).
    max_pixels: images with more pixels are refused (recorded as errors).
    device: auto | cpu | cuda. workers: decode processes (default on CPU one per core torch's threads
        leave free, and where they use every core, threads taking turns with the network; on CUDA
        up to 8; 0: a thread).
    amp: off | fp16 | bf16, autocast of the forward pass (CUDA; elsewhere float32, with a note).
    channels_last: the network's memory layout (default on CPU, where it runs CNNs 1.2-2 × faster;
        off on CUDA); both recorded with the run.
    dtype: float32 | int8 (per-vector scale and offset: ~0.3 × the bytes; readers still get float32).
    commit_seconds, commit_bytes: vectors are committed every `commit_seconds` of work or sooner
        past `commit_bytes`; a kill loses at most the uncommitted ones.
    compact: a completed run ends by compacting the activations table.
    engine: local | ray (decode tasks and a pool of model actors on a Ray Data cluster: `address`,
        default a local one of `cpus` CPUs; this process stays the single writer).
    relabel: stored images the input labels otherwise get the new label (the old one kept in
        `label_history`); without it they are reported in `result.notes` and left as they are.
    label_set: the label set the input's labels belong to: None (ImageNet classes -> imagenet1k; labels
        that name none -> a set named after the input; a mix -> an error), "imagenet1k", or any
        NAME (THINGS, ecoset, your own categories), made or extended (ingest/labelling.py).
    """

    weights: str = "DEFAULT"
    layers: str | tuple[str, ...] = "blocks"
    preprocessing: Preprocessing | str | dict | None = None
    name: str | None = None
    batch_size: int = 32
    limit: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    device: str = "auto"
    workers: int | None = None
    amp: str = "off"
    channels_last: bool | None = None
    dtype: str = "float32"
    commit_seconds: float = COMMIT_SECONDS
    commit_bytes: int = COMMIT_BYTES
    compact: bool = True
    engine: str = "local"
    address: str | None = None
    cpus: int | None = None
    relabel: bool = False
    label_set: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layers, str):  # a list given: kept as a tuple (the options are frozen)
            object.__setattr__(self, "layers", tuple(self.layers))

    @classmethod
    def of(cls, options: IngestOptions | None = None, **changes: Any) -> IngestOptions:
        """`options` (default: the defaults) with `changes`; an unknown field is a UsageError naming
        the nearest field, as a mistyped CLI flag is."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in changes if k not in known]
        if unknown:
            from embstore.errors import did_you_mean

            hint = did_you_mean(unknown[0], known) or f" The options: {', '.join(known)}."
            raise UsageError(f"unknown ingest option '{unknown[0]}'.{hint}")
        return dataclasses.replace(options or cls(), **changes)

    def check(self) -> IngestOptions:
        """These options, or a UsageError naming the first bad one (before any work is done; no torch)."""
        from embstore.ingest.devices import check_placement
        from embstore.store.encoding import check_dtype

        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine '{self.engine}'; choose one of {', '.join(ENGINES)} (`engine=`)")
        if self.engine == "local" and (self.address is not None or self.cpus is not None):
            raise UsageError("`address=` and `cpus=` are options of the ray engine; add `engine='ray'`")
        check_dtype(self.dtype)
        check_placement(self.device, self.amp, self.workers)
        if self.label_set is not None:
            from embstore.ingest.labelling import check_set_name

            check_set_name(self.label_set)
        return self

    def layer_request(self) -> str | list[str]:
        """`layers` as the layer selection takes it (a string, or a list of names)."""
        return self.layers if isinstance(self.layers, str) else list(self.layers)
