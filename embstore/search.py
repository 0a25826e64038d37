"""FAISS indexes over stored vectors: cosine as inner product on L2-normalised float32.

Kinds: `flat` (exact, the default), `hnsw` and `ivf` (approximate; their recall@10 against
exact is measured when built), `auto` (flat below AUTO_THRESHOLD vectors, else hnsw). A GPU
copy serves searches when faiss sees a GPU; results are the same either way. Indexes persist
under <store>/indexes/ with a fingerprint of the files they cover and are rebuilt, never
served, once the store has changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from embstore.store.files import ActivationFiles, partition_dir
from embstore.store.catalog import Catalog
from embstore.errors import EmbstoreError

KINDS = ("auto", "flat", "hnsw", "ivf")
AUTO_THRESHOLD = 200_000
RECALL_SAMPLE = 500


def normalise(x) -> np.ndarray:
    """Row-wise L2-normalised float32 copy; all-zero rows stay zero (cosine 0 with everything)."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def exact_search(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k cosine of normalised `queries` against normalised `base` (FAISS flat)."""
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return _on_gpu(index).search(queries, min(k, base.shape[0]))


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _on_gpu(index):
    """A GPU copy of a flat index when faiss has GPUs (HNSW has no GPU version: stays on CPU)."""
    import faiss

    if gpu_count() > 0 and isinstance(index, faiss.IndexFlat):
        res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(res, 0, index)
    return index


@dataclass
class ImageIndex:
    kind: str
    ids: list[str]
    index: object
    recall_at_10: float | None
    rebuilt: bool

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _on_gpu(self.index).search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self.ids)))

    def vector(self, row: int) -> np.ndarray:
        return self.index.reconstruct(int(row))


def image_index(store, model_key: str, layer: str, kind: str = "auto", *, con=None) -> ImageIndex:
    """The persisted index of `model_key`/`layer`, rebuilt first if the store changed since."""
    import faiss

    if kind not in KINDS:
        raise EmbstoreError(f"unknown index kind '{kind}'; choose one of {', '.join(KINDS)}")
    if con is None:
        with store.read() as own:
            rows = Catalog(own).layer_files(model_key, layer)
    else:
        rows = Catalog(con).layer_files(model_key, layer)
    total = sum(n for _, n in rows)
    if kind == "auto":
        kind = "flat" if total < AUTO_THRESHOLD else "hnsw"
    fingerprint = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    name, weights = model_key.split("@", 1)
    folder = store.indexes_root / partition_dir(name, weights, layer)
    meta_path, index_path, ids_path = folder / f"{kind}.json", folder / f"{kind}.faiss", folder / f"{kind}.ids.npy"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["fingerprint"] == fingerprint and index_path.exists() and ids_path.exists():
            index = faiss.read_index(str(index_path))
            if kind == "ivf":
                index.make_direct_map()
                index.nprobe = meta["nprobe"]
            if kind == "hnsw":
                index.hnsw.efSearch = meta["ef_search"]
            ids = [i.decode() for i in np.load(ids_path)]
            return ImageIndex(kind, ids, index, meta.get("recall_at_10"), False)
    ids, x = ActivationFiles(store).read_files([r for r, _ in rows])
    x = normalise(x)
    index, params = _build(kind, x)
    recall = _recall_at_10(index, x) if kind != "flat" else 1.0
    folder.mkdir(parents=True, exist_ok=True)
    _atomic(index_path, lambda p: faiss.write_index(index, p))
    _atomic(ids_path, lambda p: _write_bytes(p, lambda f: np.save(f, np.array(ids, dtype="S"))))
    meta = {"fingerprint": fingerprint, "kind": kind, "n": len(ids), "recall_at_10": recall, **params}
    _atomic(meta_path, lambda p: _write_bytes(p, lambda f: f.write(json.dumps(meta).encode())))
    return ImageIndex(kind, ids, index, recall, True)


def _build(kind: str, x: np.ndarray):
    import faiss

    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return index, {}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        index.add(x)
        index.hnsw.efSearch = 64
        return index, {"m": 32, "ef_search": 64}
    nlist = max(1, min(int(4 * np.sqrt(len(x))), len(x) // 39 or 1))  # faiss wants >= 39 points per list
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    index.make_direct_map()
    index.nprobe = min(nlist, 16)
    return index, {"nlist": nlist, "nprobe": index.nprobe}


def _recall_at_10(index, x: np.ndarray) -> float:
    """Fraction of the exact top-10 that `index` returns, over a fixed sample of stored vectors."""
    rng = np.random.default_rng(0)
    q = x[rng.choice(len(x), size=min(RECALL_SAMPLE, len(x)), replace=False)]
    k = min(10, len(x))
    _, exact = exact_search(x, q, k)
    _, approx = index.search(q, k)
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist()))
    return hits / (len(q) * k)


def _atomic(path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(str(tmp))
    os.replace(tmp, path)


def _write_bytes(path: str, write) -> None:
    with open(path, "wb") as f:
        write(f)
