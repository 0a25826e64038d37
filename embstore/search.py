"""FAISS indexes over stored vectors: cosine as inner product on L2-normalised float32.

Kinds: `flat` (exact, the default), `hnsw` and `ivf` (approximate; their recall@10 against
exact is measured when built and stored with the index; IVF probes as many lists as reach
TARGET_RECALL), `auto` (flat below AUTO_THRESHOLD vectors, else ivf). A GPU
copy serves searches when faiss sees a GPU; results are the same either way. Indexes persist
under <store>/indexes/ with a fingerprint of the files they cover and are rebuilt, never
served, once the store has changed.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embstore.errors import NotFoundError, UsageError
from embstore.ingest.layers import HIDDEN
from embstore.labels.imagenet import classes
from embstore.results import Answer, Neighbour
from embstore.store.cache import cache_write, derived_path
from embstore.store.catalog import Catalog
from embstore.store.table import ActivationTable

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

KINDS = ("auto", "flat", "hnsw", "ivf")
AUTO_THRESHOLD = 200_000
RECALL_SAMPLE = 500
TARGET_RECALL = 0.95


def normalise(x) -> np.ndarray:
    """Row-wise L2-normalised float32 copy; all-zero rows stay zero (cosine 0 with everything)."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def flat_index(base: np.ndarray):
    """An exact inner-product FAISS index over normalised `base`, on the GPU when faiss has one."""
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    return _on_gpu(index)


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@functools.cache
def _gpu_resources():
    """One set of GPU resources (memory pools, streams) per process, made on first use."""
    import faiss

    return faiss.StandardGpuResources()


def _on_gpu(index):
    """A GPU copy of a flat index when faiss has GPUs (HNSW has no GPU version: stays on CPU)."""
    import faiss

    if gpu_count() > 0 and isinstance(index, faiss.IndexFlat):
        return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    return index


NVIDIA_DEVICE = Path("/dev/nvidiactl")  # present where an NVIDIA driver runs; looked at without torch


def searched_on(index) -> str:
    """Where `index` searches, for an answer's notes: "" on a machine without a GPU, else the GPU
    or why the CPU (a faiss build without GPU support, or an index kind with no GPU version)."""
    if type(index).__name__.startswith("Gpu"):
        return "on GPU 0"
    if gpu_count() > 0:
        return f"on CPU: faiss has no GPU version of {type(index).__name__}"
    if NVIDIA_DEVICE.exists():
        return "on CPU: this faiss build has no GPU support (install the `gpu` extra)"
    return ""


@dataclass
class ImageIndex:
    kind: str
    ids: list[str]
    index: Any  # a faiss index
    recall_at_10: float | None
    rebuilt: bool
    _searcher: Any = None  # the GPU copy, made once on the first search
    _rows: dict[str, int] | None = None  # id -> row, made on first use

    @property
    def row_of(self) -> dict[str, int]:
        if self._rows is None:
            self._rows = {i: r for r, i in enumerate(self.ids)}
        return self._rows

    @property
    def searcher(self):
        """The index searches run on: the GPU copy of a flat index where faiss has a GPU (made once)."""
        if self._searcher is None:
            self._searcher = _on_gpu(self.index)
        return self._searcher

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.searcher.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self.ids)))

    def vector(self, row: int) -> np.ndarray:
        return self.index.reconstruct(int(row))


def image_index(
    store: StoreCore, model_key: str, layer: str, kind: str = "auto", *, con=None, progress=None
) -> ImageIndex:
    """The persisted index of `model_key`/`layer`, rebuilt first if the store changed since.

    Built from the pinned files in bounded chunks (memory: the index plus one chunk); loaded
    memory-mapped, so a one-shot query process reads only the pages its search touches.
    `progress(done, total)` reports the build.
    """
    import faiss

    if kind not in KINDS:
        raise UsageError(f"unknown index kind '{kind}'; choose one of {', '.join(KINDS)}")
    if con is None:
        with store.read() as own:
            return image_index(store, model_key, layer, kind, con=own, progress=progress)
    cat = Catalog(con)
    rows = cat.layer_files(model_key, layer)
    total = sum(n for _, n in rows)
    if kind == "auto":
        kind = "flat" if total < AUTO_THRESHOLD else "ivf"
    fingerprint = cat.layer_fingerprint(model_key, layer)
    meta_path, index_path, ids_path = (
        derived_path(store, model_key, layer, f"{kind}{ext}") for ext in (".json", ".faiss", ".ids.npy")
    )
    key = (str(index_path), fingerprint)
    loaded = _LOADED.get(key)
    if loaded is not None:  # a long-lived process (a server, a notebook) keeps the index it read
        _LOADED.move_to_end(key)
        return dataclasses.replace(loaded, rebuilt=False)
    if meta_path.exists():
        cached = _cached_index(kind, fingerprint, meta_path, index_path, ids_path)
        if cached is not None:
            return _keep(key, cached)
    width = cat.layer_width(model_key, layer)
    table = ActivationTable(store)

    def chunks():
        for chunk_ids, x in table.iter_files([r for r, _ in rows], width):
            yield chunk_ids, normalise(x)

    index, params, ids = _build(kind, width, total, chunks, progress)
    recall = 1.0
    if kind != "flat":
        recall, params = _tune(kind, index, params, chunks, total)
    meta = {"fingerprint": fingerprint, "kind": kind, "n": len(ids), "recall_at_10": recall, **params}
    # a read-only or full store answers from the index built in memory (meta last: it marks the files whole)
    writer: Any = faiss.PyCallbackIOWriter  # type: ignore[attr-defined]  # not in faiss's stubs
    if cache_write(index_path, lambda f: faiss.write_index(index, writer(f.write))) and cache_write(
        ids_path, lambda f: np.save(f, np.array(ids, dtype="S"))
    ):
        cache_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    return _keep(key, ImageIndex(kind, ids, index, recall, True))


_LOADED: collections.OrderedDict[tuple[str, str], ImageIndex] = collections.OrderedDict()
KEPT_INDEXES = 4  # indexes a process keeps in memory, most recently used


def _keep(key: tuple[str, str], index: ImageIndex) -> ImageIndex:
    """`index`, kept for the next search of this process on the same vectors (no re-read, no id decode)."""
    _LOADED[key] = index
    while len(_LOADED) > KEPT_INDEXES:
        _LOADED.popitem(last=False)
    return index


def _cached_index(kind: str, fingerprint, meta_path: Path, index_path: Path, ids_path: Path) -> ImageIndex | None:
    """The index built earlier for these vectors, or None where there is none that is whole and current
    (a damaged file is built again, never an error)."""
    try:
        meta = json.loads(meta_path.read_text())
        if meta["fingerprint"] != fingerprint or not index_path.exists() or not ids_path.exists():
            return None
        index = _read_index(index_path)
        if kind == "ivf":
            index.make_direct_map()
            index.nprobe = meta["nprobe"]
        if kind == "hnsw":
            index.hnsw.efSearch = meta["ef_search"]
        ids = [i.decode() for i in np.load(ids_path, mmap_mode="r", allow_pickle=False)]
        if len(ids) != index.ntotal:
            return None
        return ImageIndex(kind, ids, index, meta.get("recall_at_10"), False)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError):
        return None


def _read_index(path: Path):
    import faiss

    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:  # a kind faiss cannot map: read it whole
        return faiss.read_index(str(path))


def _build(kind: str, d: int, total: int, chunks, progress):
    """(index, parameters, ids) of `kind` over every chunk of normalised vectors, added chunk by chunk."""
    import faiss

    params: dict = {}
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        params = {"m": 32, "ef_search": 64}
    else:
        # ~sqrt(n) lists, trained on a uniform sample of 40 vectors per list (faiss wants >= 39)
        nlist = max(1, min(int(np.sqrt(total)), total // 39 or 1))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        index.train(_sample(chunks, total, 40 * nlist))
        params = {"nlist": nlist}
    ids: list[str] = []
    for chunk_ids, x in chunks():
        index.add(x)
        ids += chunk_ids
        if progress:
            progress(len(chunk_ids), total)
    if kind == "hnsw":
        index.hnsw.efSearch = 64
    if kind == "ivf":
        index.make_direct_map()
    return index, params, ids


def _sample(chunks, total: int, size: int, seed: int = 0) -> np.ndarray:
    """A uniform random sample of about `size` rows of the chunks (one streaming pass)."""
    rng = np.random.default_rng(seed)
    keep = min(1.0, size / max(total, 1))
    picked = []
    for _, x in chunks():
        picked.append(x[rng.random(len(x)) < keep])
    return np.ascontiguousarray(np.concatenate(picked))


def _tune(kind: str, index, params: dict, chunks, total: int) -> tuple[float, dict]:
    """Measure recall@10 against exact search on a fixed sample of stored vectors; for IVF, raise
    nprobe until recall reaches TARGET_RECALL (or every list is probed). Returns (recall, params)."""
    queries = _sample(chunks, total, RECALL_SAMPLE if total < AUTO_THRESHOLD else RECALL_SAMPLE // 5, seed=1)
    exact = _exact_top(queries, chunks, 10)
    if kind == "hnsw":
        return _recall(index, queries, exact), params
    nprobe = 8
    while True:
        index.nprobe = min(nprobe, index.nlist)
        recall = _recall(index, queries, exact)
        if recall >= TARGET_RECALL or index.nprobe >= index.nlist:
            return recall, {**params, "nprobe": int(index.nprobe)}
        nprobe *= 2


def _exact_top(queries: np.ndarray, chunks, k: int) -> np.ndarray:
    """Row numbers of the exact top-k (inner product) of each query over all chunks, streamed."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    offset = 0
    for _, x in chunks():
        s = queries @ x.T
        allk_s = np.concatenate([best_s, s], axis=1)
        allk_i = np.concatenate([best_i, np.broadcast_to(np.arange(offset, offset + len(x)), s.shape)], axis=1)
        top = np.argsort(-allk_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(allk_s, top, 1), np.take_along_axis(allk_i, top, 1)
        offset += len(x)
    return best_i


def _recall(index, queries: np.ndarray, exact: np.ndarray) -> float:
    _, approx = index.search(queries, exact.shape[1])
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist()))
    return hits / exact.size


# -- nearest images ---------------------------------------------------------------------------
def nearest_images(
    store: StoreCore, image: str, *, k: int = 10, model: str | None = None, layer: str = HIDDEN, index: str = "auto"
) -> Answer:
    """The k stored images nearest to IMAGE (a stored id or path, or any image file).

    >>> nearest_images(StoreCore.open(), "data/samples/coffee.png", k=3).rows[0].detail["path"]  # doctest: +SKIP
    """
    with store.read() as con:
        cat = Catalog(con)
        model_key, model_note = cat.resolve_model_noted(model)
        cat.require_layer(model_key, layer)
        idx = image_index(store, model_key, layer, index, con=con)
        image_id, query, how = _query_vector(con, image, idx)
        if query is None:
            query = embed_file(con, str(Path(image).expanduser()), model_key, layer)
        scores, rows = idx.search(normalise(query[None, :]), k + 1)
        hits = [(float(s), idx.ids[r]) for s, r in zip(scores[0], rows[0]) if r >= 0 and idx.ids[r] != image_id][:k]
        meta = Catalog(con).image_details(model_key, [h for _, h in hits])
    out = []
    for r, (s, h) in enumerate(hits):
        path, label, top = meta.get(h, (None, None, None))
        predicted = classes()[top].name if top is not None else None
        out.append(Neighbour(r + 1, s, h, {"label": label, "predicted": predicted, "path": path}))
    notes = [model_note] if model_note else []
    notes.append(f"query {how}" + (" (left out of its own results)" if image_id is not None else ""))
    notes.append(
        f"index {idx.kind}{' (rebuilt)' if idx.rebuilt else ''}"
        + (f", recall@10 vs exact {idx.recall_at_10:.3f}" if idx.kind != "flat" else ", exact")
        + (f", {where}" if (where := searched_on(idx.searcher)) else "")
    )
    if len(out) < k:
        notes.append(f"only {len(out)} other stored image(s) have vectors of this layer; {k} asked")
    return Answer(image, model_key, layer, "cosine", out, notes)


def _query_vector(con, image: str, idx) -> tuple[str | None, np.ndarray | None, str]:
    """(stored image id or None, its vector or None when it must be embedded, how it was found)."""
    from embstore.ingest.images import content_id

    position = idx.row_of
    candidate = image if image in position else None
    path = Path(image).expanduser()
    if candidate is None and path.is_file():
        got = Catalog(con).find_image(path=str(path.resolve()))
        candidate = got[0] if got else content_id(path.read_bytes())
    elif candidate is None and len(image) >= 6:
        got = Catalog(con).find_image(id_prefix=image)
        if len(got) > 1:
            raise NotFoundError(f"image id prefix '{image}' matches {len(got)} images; give more digits")
        candidate = got[0] if got else None
    if candidate in position:
        return candidate, idx.vector(position[candidate]), f"stored image {candidate}"
    if not path.is_file():
        raise NotFoundError(f"'{image}' is neither a stored image id nor an image file")
    return None, None, "embedded on the fly"


def embed_file(con, path: str, model_key: str, layer: str) -> np.ndarray:
    """One new image through the stored model, preprocessing and layer (imports torch)."""
    from embstore.ingest import layers as layers_mod
    from embstore.ingest.extraction import Extractor
    from embstore.ingest.images import Preprocess, read_rgb
    from embstore.ingest.layersets import select
    from embstore.ingest.models import stored_network

    net, pre, name = stored_network(con, model_key, "give a stored image id or path, or ingest the new image first")
    chosen = select(layers_mod.discover(net, name, pre.size), [layer], name, pre.size)
    _, rgb, _ = read_rgb(path, min_side=pre.resize)  # decoded exactly as ingest does
    ex = Extractor(net, chosen)
    try:
        vectors, _ = ex(Preprocess(pre)(rgb)[None])
    finally:
        ex.close()
    return vectors[layer][0]
