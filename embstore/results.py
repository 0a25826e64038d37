"""Result objects the public API returns: ranked answers, stored vectors, the store's status, SQL rows.

Each converts to the tools people analyse with: `.to_pandas()`, `.to_arrow()`, `.to_dicts()`,
and for vectors also `.numpy()`, `.to_torch()`, `.to_polars()` and `.to_rsatoolbox()`.
`to_json(result)` is the one JSON shape of every result: what `embstore … --json` prints and what
`embstore serve`'s /api answers: dataclasses as objects, numpy values as numbers and lists, paths
as text, NaN and infinities as null.

    >>> to_json({"p": float("nan"), "path": Path("/s")})
    {'p': None, 'path': '/s'}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from embstore.errors import MissingDependencyError

if TYPE_CHECKING:
    import numpy as np  # imported where used: `import embstore` (every CLI command) stays light


@dataclass
class Neighbour:
    """One ranked answer: a class (by name) or an image (by id), its cosine and details."""

    rank: int
    score: float
    label: str  # class name, or image id
    detail: dict = field(default_factory=dict)


@dataclass
class Answer:
    """The ranked neighbours of one query, with what answered it (model, layer, method) and notes."""

    query: str
    model_key: str
    layer: str
    method: str
    rows: list[Neighbour]
    notes: list[str] = field(default_factory=list)

    def to_dicts(self) -> list[dict[str, Any]]:
        """One flat dict per neighbour: rank, score, label and the details.

        >>> Answer("knot", "m@w", "all", "prototype", [Neighbour(1, 0.9, "chain", {"wnid": "n02999410"})]).to_dicts()
        [{'rank': 1, 'score': 0.9, 'label': 'chain', 'wnid': 'n02999410'}]
        """
        return [{"rank": r.rank, "score": r.score, "label": r.label, **r.detail} for r in self.rows]

    def to_json(self) -> dict[str, Any]:
        """{query, model, layer, method, results (rank, score, name, details), notes}."""
        results = [{"name" if k == "label" else k: v for k, v in row.items()} for row in self.to_dicts()]
        return to_json(
            {"query": self.query, "model": self.model_key, "layer": self.layer, "method": self.method,
             "results": results, "notes": self.notes}
        )  # fmt: skip

    def to_arrow(self) -> Any:
        import pyarrow as pa

        return pa.Table.from_pylist(self.to_dicts())

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.to_dicts(), columns=["rank", "score", "label"] if not self.rows else None)


class Vectors:
    """The stored vectors of one model layer, read on first use, one row per image.

    `image_ids` and `labels` are aligned with the rows of `.numpy()`; labels are class indices in
    the label set read (ImageNet's by default; -1 for images it does not label).

    >>> import embstore, tempfile
    >>> store = embstore.open(tempfile.mkdtemp(), create=True)
    >>> _ = embstore.testing.populate(store, n_classes=3, per_class=2, layers={"hidden": 4})
    >>> v = store.vectors("synthetic_net", "hidden")
    >>> v.numpy().shape, v.labels.tolist()
    ((6, 4), [0, 0, 1, 1, 2, 2])
    >>> list(v.to_pandas().columns[:3])
    ['image_id', 'label', 'v0']
    """

    def __init__(self, model_key: str, layer: str, read: Callable[[], tuple[list[str], np.ndarray, np.ndarray]]):
        self.model_key = model_key
        self.layer = layer
        self._read = read
        self._loaded: tuple[list[str], np.ndarray, np.ndarray] | None = None

    def _data(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        if self._loaded is None:
            self._loaded = self._read()
        return self._loaded

    def __len__(self) -> int:
        return len(self._data()[0])

    def __repr__(self) -> str:
        state = f"{len(self)} × {self.numpy().shape[1]}" if self._loaded is not None else "not read yet"
        return f"<Vectors {self.model_key} / {self.layer}: {state}>"

    @property
    def image_ids(self) -> list[str]:
        return self._data()[0]

    @property
    def labels(self) -> np.ndarray:
        return self._data()[2]

    def numpy(self) -> np.ndarray:
        """(images × channels) float32 matrix."""
        return self._data()[1]

    def to_arrow(self) -> Any:
        """Table (image_id, label, vec fixed_size_list<float>[C])."""
        import numpy as np
        import pyarrow as pa

        x = np.ascontiguousarray(self.numpy(), dtype=np.float32)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1] if x.size else 0)
        return pa.table(
            {"image_id": pa.array(self.image_ids, pa.string()), "label": pa.array(self.labels, pa.int32()), "vec": vec}
        )

    def to_pandas(self) -> Any:
        """DataFrame with image_id, label and one column per channel (v0, v1, …)."""
        import pandas as pd

        x = self.numpy()
        frame = pd.DataFrame(x, columns=[f"v{i}" for i in range(x.shape[1])])
        frame.insert(0, "label", self.labels)
        frame.insert(0, "image_id", self.image_ids)
        return frame

    def to_torch(self) -> Any:
        """float32 tensor (images × channels); imports torch."""
        import torch

        return torch.from_numpy(self.numpy())

    def to_polars(self) -> Any:
        """polars DataFrame (image_id, label, vec); needs `pip install polars`."""
        try:
            import polars as pl
        except ImportError:
            raise MissingDependencyError("to_polars() needs polars: pip install polars") from None
        return pl.from_arrow(self.to_arrow())

    def to_rsatoolbox(self) -> Any:
        """An rsatoolbox Dataset (measurements = vectors, descriptors = image ids and labels); needs rsatoolbox."""
        import numpy as np

        try:
            from rsatoolbox.data import Dataset
        except ImportError:
            raise MissingDependencyError("to_rsatoolbox() needs rsatoolbox: pip install rsatoolbox") from None
        return Dataset(
            self.numpy().astype(np.float64),
            descriptors={"model": self.model_key, "layer": self.layer},
            obs_descriptors={"image_id": np.array(self.image_ids), "label": self.labels},
        )


STATUS_MODEL_COLUMNS = ("model", "layers", "images", "top1_error", "top5_error")


class Status(dict):
    """`Store.status()`: counts of images, models, vectors, files, runs, errors; `per_model` rows
    (model, layers, images, top-1 error, top-5 error)."""

    def to_json(self) -> dict[str, Any]:
        """The counts, with `per_model` as `models`: one object per model."""
        out = {k: v for k, v in self.items() if k != "per_model"}
        out["models"] = [dict(zip(STATUS_MODEL_COLUMNS, row)) for row in self.get("per_model", [])]
        return to_json(out)


class SqlResult(NamedTuple):
    """`Store.run_sql()`: the column names and the rows (unpacks as `columns, rows = …`)."""

    columns: list[str]
    rows: list[tuple]

    def to_json(self) -> dict[str, Any]:
        """{columns, rows: one object per row}."""
        return to_json({"columns": list(self.columns), "rows": [dict(zip(self.columns, r)) for r in self.rows]})


def to_json(value: Any) -> Any:
    """Any result as `--json` prints it (its own `to_json()`; dataclasses as objects, NaN as null)."""
    own = getattr(value, "to_json", None)
    if callable(own) and not isinstance(value, type):
        return own()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in fields(value) if not f.name.startswith("_")}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
