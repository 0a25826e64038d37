"""A network's computation graph as torchvision's feature extraction names it (torch.fx).

The names are exactly those of torchvision's `get_graph_node_names(model)` in eval mode: a
module call is the module's qualified name (`layer1.0.relu`), its later calls get `_1`, `_2`
(`layer1.0.relu_1`, `layer1.0.relu_2`), and a functional op is the path of the module whose
forward calls it plus the op (`layer1.0.add`, `Mixed_5b.cat`, `flatten`), numbered the same way.
timm models are traced with timm's own leaf modules and untraceable functions (what
`timm.layers.get_graph_node_names` does), so EfficientNet-Lite's `BatchNormAct2d` is one node.

`trace()` gives the graph and its node names; `GraphCapture` runs the traced graph with a
reduction inserted right after every wanted node (in-place ops that follow cannot change it and
no full map outlives its node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SINK = "embstore_capture"  # the submodule the capture nodes call (no module of a network has this name)


@dataclass
class Node:
    """One graph node with a per-image tensor output, measured by a real run."""

    name: str
    op: str  # module | function
    module: str  # module nodes: the module called; functions: the module whose forward calls it ('' = top)
    call: int  # module nodes: which call of `module` (0 = the first)
    kind: str  # the module's class name, or the function's name
    shape: tuple  # output shape on the dry-run batch
    inputs: list[str] = field(default_factory=list)  # the nodes it reads
    act: str | None = None  # relu | act (another activation) | None
    fingerprint: tuple = ()  # `fingerprint()` of the dry run's output


@dataclass
class Traced:
    """A traced network: its graph module (sharing the network's parameters) and node names."""

    module: Any  # torch.fx.GraphModule
    names: dict  # fx node name -> torchvision node name


class TraceFailed(Exception):
    """torch.fx could not trace the network; `str()` is the reason in one line."""


def trace(model) -> Traced:
    """The eval-mode graph of `model` as torchvision's NodePathTracer records it.

    Raises TraceFailed (with fx's reason) for networks with data-dependent control flow.
    """
    import warnings

    import torch.fx as fx
    from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs

    was_training = model.training
    model.eval()
    try:
        tracer = NodePathTracer(**_set_default_tracer_kwargs(_tracer_kwargs(model)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = tracer.trace(model)
        module = fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:  # fx raises TraceError, TypeError, AttributeError, … for what it cannot follow
        text = " ".join(str(exc).split())[:200]
        raise TraceFailed(f"{type(exc).__name__}: {text}") from None
    finally:
        model.train(was_training)
    names = {node.name: tracer.node_to_qualname[node] for node in graph.nodes if node in tracer.node_to_qualname}
    return Traced(module, names)


def measure(traced: Traced, model, x) -> list[Node]:
    """Every node of `traced` whose output is a per-image tensor (2-4 dims, batch first), run on `x`."""
    import torch
    import torch.fx as fx

    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    out: list[Node] = []
    names = traced.names
    batch = x.shape[0]

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            if n.op in ("call_module", "call_function", "call_method") and n.name in names:
                qual = names[n.name]
                if n.op == "call_module":
                    module, call = str(n.target), calls.get(str(n.target), 0)
                    calls[module] = call + 1
                    kind = type(modules[module]).__name__
                else:
                    module, call = qual.rsplit(".", 1)[0] if "." in qual else "", 0
                    kind = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
                if isinstance(value, torch.Tensor) and value.dim() in (2, 3, 4) and value.shape[0] == batch:
                    inputs = [names[a.name] for a in n.all_input_nodes if a.name in names]
                    act = _activation(n, modules)
                    out.append(Node(qual, "module" if n.op == "call_module" else "function", module, call,
                                    str(kind), tuple(value.shape), inputs, act, fingerprint(value)))  # fmt: skip
            return value

    with torch.inference_mode():
        Recorder(traced.module).run(x)
    return out


class GraphCapture:
    """`traced` with a reduction after each wanted node: calling it returns the network's output and
    fills `self.out` with {layer: reduced tensor}."""

    def __init__(self, traced: Traced, wanted: dict, reduce):
        """`wanted`: {layer name: LayerInfo}, each captured after the node `LayerInfo.node` names."""
        import torch.nn as nn

        by_qual = {q: n for n, q in traced.names.items()}
        gm = traced.module
        sink = _sink(reduce, wanted)
        gm.add_submodule(SINK, sink)
        fx_nodes = {node.name: node for node in gm.graph.nodes}
        for name, layer in wanted.items():
            node = fx_nodes[by_qual[layer.node]]
            with gm.graph.inserting_after(node):
                gm.graph.call_module(SINK, (node, name))
        gm.recompile()
        self.module: nn.Module = gm
        self.out = sink.out

    def __call__(self, x):
        self.out.clear()
        return self.module(x)


def fingerprint(t) -> tuple:
    """(shape, sum, sum of |x|) of a dry-run tensor: enough to tell two outputs apart (float32 sums of
    ~1e6 values are good to ~1e-6, against `same()`'s 1e-4)."""
    d = t.detach()
    return tuple(t.shape), float(d.sum()), float(d.abs().sum())


def same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and all(abs(x - y) <= 1e-4 * max(1.0, abs(y)) for x, y in zip(a[1:], b[1:]))


def _sink(reduce, wanted: dict):
    """The module the capture nodes call: reduces a node's output into `.out[name]`, returns nothing."""
    import torch.nn as nn

    class Sink(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out: dict = {}

        def forward(self, x, name: str) -> None:
            self.out[name] = reduce(x, wanted[name])

    return Sink()


RELU_MODULES = ("ReLU", "ReLU6")
ACT_MODULES = ("SiLU", "Hardswish", "GELU", "Mish", "ELU", "SELU", "CELU", "LeakyReLU", "PReLU", "Swish", "HardSwish")
RELU_FUNCTIONS = ("relu", "relu_", "relu6")
ACT_FUNCTIONS = ("silu", "hardswish", "gelu", "mish", "elu", "selu", "leaky_relu", "swish", "hard_swish")


def _activation(n, modules) -> str | None:
    """'relu' for a ReLU node (nn.ReLU/ReLU6, F.relu, x.relu(), a timm norm+act whose act is one),
    'act' for another activation (SiLU, Hardswish, GELU, …), else None."""
    if n.op == "call_module":
        module = modules[str(n.target)]
        kind = type(module).__name__
        # a leaf whose output is after an activation: timm's BatchNormAct2d & co (`act`), torchvision's
        # Conv2dNormActivation (a Sequential ending in it)
        inner = getattr(module, "act", None)
        if inner is None and kind == "Conv2dNormActivation" and len(module):
            inner = module[-1]
        if kind not in RELU_MODULES + ACT_MODULES and inner is not None:
            kind = type(inner).__name__
        return "relu" if kind in RELU_MODULES else "act" if kind in ACT_MODULES else None
    fn = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
    return "relu" if fn in RELU_FUNCTIONS else "act" if fn in ACT_FUNCTIONS else None


def _tracer_kwargs(model) -> dict:
    """timm's leaf modules and untraceable functions for a timm network (its own FX helpers use them)."""
    if not type(model).__module__.startswith("timm."):
        return {}
    from timm.layers import get_notrace_functions, get_notrace_modules

    return {"leaf_modules": list(get_notrace_modules()), "autowrap_functions": list(get_notrace_functions())}
