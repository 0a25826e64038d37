"""One forward pass that yields the pooled vector of every chosen layer plus the logits.

Each hook reduces its output on the spot (global average pool of ReLU for conv maps, seed 003
eq. 2), so an in-place ReLU running after the hooked module cannot change what is stored and no
full feature map is kept alive.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any

from embstore.ingest.devices import autocast_dtype
from embstore.ingest.images import ImageSource
from embstore.ingest.layers import LayerInfo, find_classifier


@dataclass
class Decoded:
    """An image an engine decoded: its source, content id and what decoding found (size, mode, …)."""

    source: ImageSource
    image_id: str
    info: dict


@dataclass
class Failed:
    """An image that could not be decoded, and why."""

    source: ImageSource
    error: str


@dataclass
class ForwardBatch:
    """One forward batch's results, as ingest commits them (whichever engine computed them). The
    engine joins each result to its source once; nothing downstream looks a source up by index."""

    ok: list[Decoded]  # aligned with the rows of each vector matrix
    bad: list[Failed]
    vectors: dict  # layer -> (len(ok) × C) float32
    logits: Any  # (len(ok) × classes) float32, or None
    load_s: float
    forward_s: float
    pending: Any = None  # Pending results still on their way from the GPU: `ready()` fills vectors and logits

    @property
    def nbytes(self) -> int:
        return self.pending.nbytes if self.pending is not None else sum(v.nbytes for v in self.vectors.values())

    def ready(self) -> ForwardBatch:
        """Wait for results still being copied from the GPU (in the thread that commits them)."""
        if self.pending is not None:
            self.vectors, self.logits = self.pending.result()
            self.pending = None
        return self


LOGITS = "\0logits"  # the classifier's output among a batch's results (no layer has this name)
PER_IMAGE_ELEMENTS = 1 << 17  # CPU maps from this size (512 KiB a image) pool image by image: measured faster


def reduce(tensor, layer: LayerInfo):
    """(B, C) float32 from a layer output, as `layer.reduction` says.

    Off the CPU a half-precision map is reduced with float32 sums, never copied whole to float32."""
    import torch

    if tensor.device.type == "cpu" or layer.reduction not in ("gap_relu", "token_mean"):
        tensor = tensor.float()
    if layer.reduction == "max_relu":  # max of the ReLU map = ReLU of the max
        return tensor.amax(dim=(1, 2) if layer.channels_last else (2, 3)).clamp_min_(0)
    if layer.reduction.startswith(("srp_relu:", "pca_relu:", "flat_relu")):  # the whole ReLU map, channel-major
        flat = torch.relu(tensor.permute(0, 3, 1, 2) if layer.channels_last else tensor).reshape(tensor.shape[0], -1)
        how, *args = layer.reduction.split(":")
        if how == "flat_relu":  # a PCA basis's reference maps (ingest/pca.py); never stored
            return flat.contiguous()
        if how == "pca_relu":  # (map - mean) projected on the basis's components
            mean, components = _basis_tensors(args[1], str(flat.device))
            return ((flat - mean) @ components.t()).contiguous()
        r = _srp_tensor(flat.shape[1], int(args[0]), int(args[1]), str(flat.device))
        return torch.sparse.mm(r, flat.t().contiguous()).t().contiguous()
    if layer.reduction.startswith(("grid_relu:", "grid:")):  # grid: the pixels layer's cells, no ReLU
        k = int(layer.reduction.split(":")[1].split("x")[0])
        nchw = tensor.permute(0, 3, 1, 2) if layer.channels_last else tensor
        nchw = torch.relu(nchw) if layer.reduction.startswith("grid_relu:") else nchw
        cells = torch.nn.functional.adaptive_avg_pool2d(nchw, (k, k))
        return cells.reshape(tensor.shape[0], -1).contiguous()  # channel-major: c·K² + i·K + j
    if layer.reduction == "gap_relu":
        dims = (1, 2) if layer.channels_last else (2, 3)
        if tensor.device.type == "cpu" and tensor.dim() == 4 and tensor[0].numel() >= PER_IMAGE_ELEMENTS:
            rows = _pixel_rows(tensor, layer.channels_last)
            if rows is not None:
                return _gap_relu_of_rows(rows)
            return _gap_relu_by_image(tensor, (dims[0] - 1, dims[1] - 1))
        return torch.relu(tensor).mean(dim=dims, dtype=torch.float32)
    if layer.reduction == "token_mean":
        return tensor.mean(dim=1, dtype=torch.float32)
    # a copy: the output of a Linear is a tensor the in-place ReLU after it (VGG's classifier) overwrites
    return tensor.reshape(tensor.shape[0], -1).clone()


def srp_matrix(d: int, k: int, seed: int = 0):
    """The (d × k) sparse random projection of `NAME~srpK` as a scipy CSC matrix: each entry
    ±sqrt(s / k) with probability 1 / (2s) each, else 0, s = sqrt(d) (Li, Hastie & Church 2006; the
    density sklearn's SparseRandomProjection defaults to), drawn from numpy's generator seeded by
    (seed, d, k) column by column, so a layer's matrix is the same on every machine and run."""
    import numpy as np
    import scipy.sparse as sp

    s = math.sqrt(d)
    rng = np.random.default_rng([seed, d, k])
    counts = rng.binomial(d, 1 / s, size=k)
    rows = [np.unique(rng.integers(0, d, size=c)) for c in counts]
    cols = np.repeat(np.arange(k), [len(r) for r in rows])
    rows_all = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    signs = rng.choice(np.array([-1.0, 1.0]), size=len(rows_all))
    return sp.csc_matrix((signs * math.sqrt(s / k), (rows_all, cols)), shape=(d, k))


_BASES: dict[str, tuple[Any, Any]] = {}  # basis sha -> (mean, components) as numpy float32


def use_basis(sha: str, mean, components) -> None:
    """Make the PCA basis `sha` (ingest/pca.py) available to `pca_relu:K:sha` reductions."""
    _BASES[sha] = (mean, components)
    _basis_tensors.cache_clear()


@functools.lru_cache(maxsize=16)
def _basis_tensors(sha: str, device: str):
    import torch

    if sha not in _BASES:
        raise KeyError(f"PCA basis {sha[:12]} was not loaded (ingest/pca.py resolve)")
    mean, components = _BASES[sha]
    return torch.from_numpy(mean).to(device), torch.from_numpy(components).to(device)


@functools.lru_cache(maxsize=16)
def _srp_tensor(d: int, k: int, seed: int, device: str):
    """srp_matrix transposed (k × d), as a torch sparse CSR tensor on `device`, made once per layer
    (CSR: 2.7× faster than COO in `torch.sparse.mm` on CPU, bench/reductions.py)."""
    import warnings

    import numpy as np
    import torch

    m = srp_matrix(d, k, seed).T.tocsr()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the one product used here is tested
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)), size=(k, d), check_invariants=False,
        ).to(device)  # fmt: skip


def _pixel_rows(tensor, channels_last: bool):
    """A (B, H·W, C) view of a map whose channels are its innermost dimension in memory (NHWC
    outputs, and NCHW outputs in channels-last memory, the CPU default), or None."""
    import torch

    if channels_last:  # (B, H, W, C)
        return tensor.reshape(tensor.shape[0], -1, tensor.shape[3]) if tensor.is_contiguous() else None
    if tensor.is_contiguous(memory_format=torch.channels_last):
        return tensor.permute(0, 2, 3, 1).reshape(tensor.shape[0], -1, tensor.shape[1])
    return None


def _gap_relu_of_rows(rows):
    """ReLU + mean over the pixel rows of (B, N, C), an image at a time: each image's ReLU map in a
    cached scratch, summed over its rows by torch's cascade sum. A mean over the strided pixel
    dimension runs at half the speed (measured on a batch of 32, 2 threads, 8.3 → 4.9 ms at
    256×56×56). A (1 × N) · (N × C) product with ones, used before, accumulates in order: 10-20 ×
    less exact and no faster (bench/gap_reduce.py, AMD EPYC, 2 threads: 0.81-0.90 × its time,
    relative error 2.1e-7 vs 4.5e-6 at 64×112×112)."""
    import torch

    n_images, n_rows, channels = rows.shape
    out = torch.empty(n_images, channels, dtype=rows.dtype)
    scratch = torch.empty(n_rows, channels, dtype=rows.dtype)
    for i in range(n_images):
        torch.clamp_min(rows[i], 0, out=scratch)
        torch.sum(scratch, 0, out=out[i])
    return out.div_(n_rows)


def _gap_relu_by_image(tensor, dims):
    """ReLU + mean one image at a time through one scratch map that stays in the CPU's cache: the
    batch-wide `relu(t).mean()` writes and rereads a copy of the whole map (100 MB for a batch of
    32 at resnet50's layer1). Measured on a batch of 32, 2 threads: 9.7 → 5.0 ms at 256×56×56,
    3.9 → 1.6 ms at 512×28×28, equal at 2048×7×7; resnet50's hooks went from 4-12 % of its
    forward pass to 3 %. Same sums, per image."""
    import torch

    (channel,) = {0, 1, 2} - set(dims)
    out = torch.empty(tensor.shape[0], tensor.shape[1 + channel], dtype=tensor.dtype)
    scratch = torch.empty_like(tensor[0])
    for i in range(tensor.shape[0]):
        torch.clamp_min(tensor[i], 0, out=scratch)
        torch.mean(scratch, dim=dims, out=out[i])
    return out


def capture_mode(layers: list[LayerInfo]) -> str:
    """How `Extractor` captures `layers`: "fx" (the traced graph) when one is a functional node, else "hooks"."""
    return "fx" if any(layer.op == "function" for layer in layers) else "hooks"


def _check_inside_leaves(traced, layers: list[LayerInfo]) -> None:
    """Refuse, naming them, modules that the traced graph neither has as a node nor runs inside one."""
    from embstore.errors import UsageError

    leaves = {str(n.target) for n in traced.module.graph.nodes if n.op == "call_module"}
    lost = [l.name for l in layers if not any(l.module == t or l.module.startswith(t + ".") for t in leaves)]
    if lost:
        raise UsageError(
            f"{', '.join(lost[:3])}{', …' if len(lost) > 3 else ''} cannot be captured together with functional "
            "nodes (the traced graph does not run it as a module); ingest them in two runs"
        )


class Extractor:
    """Captures `layers` of `model` in one forward pass; calling it on a batch returns ({layer: (B, C)}, logits).

    Layers that are module calls are captured by forward hooks (a per-call counter where a module
    runs more than once: `layer1.0.relu_2` is the third call's output). Functional nodes (`add`,
    `cat`, `flatten`) need the traced graph: with any of them the network runs as its torch.fx graph
    with a reduction after each wanted node (`capture == "fx"`), else as itself (`"hooks"`).

    >>> import torch, torchvision
    >>> from embstore.ingest.layers import discover
    >>> from embstore.ingest.layersets import select
    >>> net = torchvision.models.resnet18().eval()
    >>> ex = Extractor(net, select(discover(net, "resnet18", 64), ["layer4", "layer4.1.relu_1"], "resnet18"))
    >>> vectors, logits = ex(torch.zeros(2, 3, 64, 64))
    >>> {name: v.shape for name, v in vectors.items()}, logits.shape, ex.capture
    ({'layer4.1.relu_1': (2, 512), 'layer4': (2, 512), 'hidden': (2, 512)}, (2, 1000), 'hooks')
    >>> ex.close()
    """

    def __init__(self, model, layers: list[LayerInfo], *, amp: str = "off", channels_last: bool = False):
        self.model = model
        self.amp = amp  # autocast dtype on CUDA (GpuOptions); hooks still reduce in float32
        self.channels_last = channels_last
        # a module given contiguous gets that layout back on close(): it belongs to the caller
        self._restore = channels_last and all(p.is_contiguous() for p in model.parameters() if p.dim() == 4)
        if channels_last:
            import torch

            model.to(memory_format=torch.channels_last)
        self.has_classifier = find_classifier(model) is not None
        self.layers = layers
        self._out: dict = {}
        self._handles: list = []
        self._calls: dict[str, int] = {}
        self.capture = capture_mode(layers)
        self._graph = None
        hooked = [l for l in layers if l.op == "module"]
        if self.capture == "fx":
            from embstore.ingest.graph import GraphCapture, trace

            traced = trace(model)
            # graph nodes (and blocks, at their last node) by the graph; modules inside a leaf module
            # the graph calls (torchvision's Conv2dNormActivation, timm's BatchNormAct2d) by hooks
            hooked = [l for l in hooked if not l.node]
            _check_inside_leaves(traced, hooked)
            self._graph = GraphCapture(traced, {l.name: l for l in layers if l.node and l.op != "hidden"}, reduce)
            self._out = self._graph.out
        modules = dict(model.named_modules())
        per_module: dict[str, dict[int, list[LayerInfo]]] = {}  # a call's map may be reduced several ways
        for layer in hooked:
            per_module.setdefault(layer.module, {}).setdefault(layer.call, []).append(layer)
        for module, calls in per_module.items():
            self._handles.append(modules[module].register_forward_hook(self._hook(module, calls)))
        for layer in layers:
            if layer.op == "hidden":
                found = find_classifier(model)
                if found is None:  # a feature extractor: its output is `hidden`
                    whole = self._graph.module if self._graph is not None else model
                    self._handles.append(whole.register_forward_hook(self._output_hook(layer)))
                else:
                    self._handles.append(found[1].register_forward_pre_hook(self._pre_hook(layer)))

    def _hook(self, module: str, calls: dict[int, list[LayerInfo]]):
        if set(calls) == {0} and calls[0][0].calls == 1:  # the common case: one call, no counting

            def once(_module, _inputs, output):
                for layer in calls[0]:
                    self._out[layer.name] = reduce(output, layer)

            return once

        def per_call(_module, _inputs, output):
            k = self._calls.get(module, 0)
            self._calls[module] = k + 1
            for layer in calls.get(k, ()):
                self._out[layer.name] = reduce(output, layer)

        return per_call

    def _output_hook(self, layer):
        def hook(_module, _inputs, output):
            self._out[layer.name] = reduce(output, layer)

        return hook

    def _pre_hook(self, layer):
        def hook(_module, inputs):
            self._out[layer.name] = reduce(inputs[0], layer)

        return hook

    def __call__(self, batch):
        return self.start(batch).result()

    def start(self, batch) -> Pending:
        """Run `batch` through the network; its results as a Pending. On CUDA they come back in one
        copy to page-locked memory that runs while the GPU goes on to the next batch (a `.cpu()` per
        layer waited for the GPU once per layer: 17 times a batch for resnet50)."""
        import torch

        self._out.clear()
        self._calls.clear()
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        dtype = autocast_dtype(self.amp)
        autocast = torch.autocast(batch.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            logits = self._graph(batch) if self._graph is not None else self.model(batch)
            for layer in self.layers:
                if layer.op == "input":  # the pixels layer: the batch as the network received it
                    self._out[layer.name] = reduce(batch, layer)
        outputs = {layer.name: self._out[layer.name] for layer in self.layers}
        if self.has_classifier:
            outputs[LOGITS] = logits
        return Pending(outputs)

    def close(self) -> None:
        """Remove the hooks and give the model its contiguous layout back (a caller's module is theirs)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._restore:
            import torch

            self.model.to(memory_format=torch.contiguous_format)
            self._restore = False


class Pending:
    """One batch's results ({layer: (B, C)} and logits) on their way to this process's memory.

    CPU tensors are final at once. CUDA ones (or any, with `one_copy`) are put side by side and
    copied back in one non-blocking copy into page-locked memory; `result()` waits for that copy
    alone and cuts the block into the layers' arrays again.
    """

    def __init__(self, outputs: dict, *, one_copy: bool | None = None) -> None:
        import torch

        self.names = list(outputs)
        self.widths = [t.shape[1] for t in outputs.values()]
        rows = next(iter(outputs.values())).shape[0] if outputs else 0
        self.nbytes = 4 * rows * sum(self.widths)
        self.event: Any = None
        self.host: Any = None
        self.parts: list = []
        on_gpu = bool(outputs) and next(iter(outputs.values())).device.type == "cuda"
        if outputs and (on_gpu if one_copy is None else one_copy):
            flat = torch.cat([t.float() for t in outputs.values()], dim=1)
            if on_gpu:
                self.host = torch.empty(flat.shape, dtype=torch.float32, pin_memory=True)
                self.host.copy_(flat, non_blocking=True)
                self.event = torch.cuda.Event()
                self.event.record()
            else:
                self.host = flat
        else:
            self.parts = [t.float().numpy() for t in outputs.values()]

    def result(self):
        """({layer: (B, C) float32 array}, logits or None), once they are in this process's memory."""
        import numpy as np

        if self.event is not None:
            self.event.synchronize()
            self.event = None
        if self.host is not None:
            flat = self.host.numpy()
            edges = np.cumsum([0, *self.widths])
            self.parts = [np.ascontiguousarray(flat[:, a:b]) for a, b in zip(edges[:-1], edges[1:])]
            self.host = None
        values = dict(zip(self.names, self.parts))
        logits = values.pop(LOGITS, None)
        return values, logits
