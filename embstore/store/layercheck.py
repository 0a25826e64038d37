"""Layers recorded before layers were graph nodes (catalog migration 0010), checked and repaired.

Until then a layer was a module name, and a module called more than once per forward pass (every
ResNet block's `relu`) was stored as its LAST call under its name while the catalog recorded the
width of its first call. Under today's names `layer1.0.relu` is the first call, so such vectors
are wrong twice over. `check()` names them: a stored width other than the catalog's (read from
one vector), or a module the network (rebuilt with random weights) runs more than once. `repair()`
deletes their vectors (whole partitions of the activations table: no other layer's file is
touched) and forgets them in the catalog, so that the next ingest of that layer stores it again.
Rows found right are marked as graph-node rows and never checked again.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING

from embstore.spec import ModelKey
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from collections.abc import Callable

    from embstore.store.core import StoreCore

    ModuleCalls = Callable[[tuple], dict[str, int] | None]


@dataclass
class LegacyLayer:
    model_key: str
    layer: str
    reason: str


def check(
    store: StoreCore, table, module_calls: ModuleCalls | None
) -> tuple[list[LegacyLayer], list[tuple[str, str]], list[str]]:
    """(wrong layers, layers found right, notes) among the rows recorded with module naming.
    `module_calls(origin)` gives {module name: calls per forward pass} of a stored model's
    architecture, or None where it cannot be rebuilt (ingest/models.py `stored_module_calls`; the
    store does not build networks); without it, only the stored widths are checked."""
    with store.read() as con:
        cat = Catalog(con)
        rows = cat.module_named_layers()
        origins = {key: cat.model_origin(key) for key in {r[0] for r in rows}}
    wrong: list[LegacyLayer] = []
    right: list[tuple[str, str]] = []
    notes: list[str] = []
    architectures: dict[str, dict | None] = {}
    unchecked: dict[str, list[str]] = {}
    for model_key, layer, channels in rows:
        width = _stored_width(store, table, model_key, layer)
        if width is not None and width != channels:
            wrong.append(LegacyLayer(model_key, layer, f"vectors are {width} wide, the catalog says {channels}"))
            continue
        if model_key not in architectures:
            architectures[model_key] = module_calls(origins[model_key]) if module_calls else None
        calls = architectures[model_key]
        if calls is None:
            unchecked.setdefault(model_key, []).append(layer)
            continue
        n = calls.get(layer, 0)
        if n > 1:
            reason = f"module runs {n} times per forward pass; stored: its last call"
            wrong.append(LegacyLayer(model_key, layer, reason))
        else:
            right.append((model_key, layer))
    for model_key, names in unchecked.items():
        notes.append(
            f"{model_key}: its network cannot be rebuilt here, so {len(names)} layer(s) recorded before layers were "
            f"graph nodes ({', '.join(names[:3])}{', …' if len(names) > 3 else ''}) were checked by width only"
        )
    return wrong, right, notes


def repair(store: StoreCore, table, wrong: list[LegacyLayer], right: list[tuple[str, str]]) -> list[str]:
    """Delete the vectors of `wrong` layers and forget them; mark `right` ones as graph-node rows."""
    from embstore.store.duck import sql_literal

    done = []
    for item in wrong:
        name, weights = astuple(ModelKey.parse(item.model_key))
        dt = table.delta()
        if dt is not None:
            where = f"model = {sql_literal(name)} AND weights = {sql_literal(weights)}"
            dt.delete(f"{where} AND layer = {sql_literal(item.layer)}")
            dt = table.delta()
        with store.transaction() as con:
            Catalog(con).forget_layer(item.model_key, item.layer)
            if dt is not None:
                table.pin(con, dt)
        done.append(
            f"removed the vectors of {item.model_key} {item.layer} ({item.reason}); ingest that layer again to store "
            "the node of that name"
        )
    if right:
        with store.transaction() as con:
            for model_key, layer in right:
                con.execute("UPDATE layers SET naming = 'node' WHERE model_key = ? AND layer = ?", [model_key, layer])
    return done


def _stored_width(store: StoreCore, table, model_key: str, layer: str) -> int | None:
    """The width of one stored vector of the layer (all vectors of a layer have one width), or None."""
    import pyarrow.compute as pc

    with store.read() as con:
        files = Catalog(con).layer_files(model_key, layer)
    for rel, n_rows in files:
        if not n_rows:
            continue
        dataset = table.location.dataset([rel])
        columns = [c for c in ("vec", "q") if c in dataset.schema.names]  # int8 layers hold `q`
        head = dataset.head(1, columns=columns)
        width = max(pc.list_value_length(head.column(c))[0].as_py() or 0 for c in columns)
        return int(width) or None
    return None
