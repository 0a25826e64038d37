"""Image thumbnails for figures and reports, made once per image and cached in the store.

The cache lives at <store>/thumbnails/<id[:2]>/<image_id>.jpg. An image id is the hash of the
file's content, so a cached thumbnail never goes stale; a source file that has since changed
or vanished gets no thumbnail (figures draw a labelled placeholder) rather than a wrong one.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from embstore.store.cache import atomic_path

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

SIZE = 160  # longest side, pixels
QUALITY = 85


class Thumbnails:
    """The store's thumbnail cache.

    >>> Thumbnails(StoreCore.open()).get("3f2a…", "/data/cat.jpg")  # doctest: +SKIP
    <PIL.Image.Image image mode=RGB size=160x120>
    """

    def __init__(self, store: StoreCore, *, size: int = SIZE):
        self.root = Path(store.path) / "thumbnails"
        self.size = size

    def path(self, image_id: str) -> Path:
        return self.root / image_id[:2] / f"{image_id}.jpg"

    def get(self, image_id: str, source: str | None):
        """The thumbnail of `image_id` (made from `source` on first use), or None with no usable source."""
        from PIL import Image

        cached = self.path(image_id)
        if cached.is_file():
            try:
                with Image.open(cached) as img:
                    return img.convert("RGB")
            except OSError:
                cached.unlink(missing_ok=True)  # a torn write from a killed process: make it again
        return self._make(image_id, source)

    def get_many(self, items: list[tuple[str, str | None]], *, workers: int = 4) -> dict:
        """{image_id: thumbnail or None} for (image_id, source path) pairs, decoded in parallel."""
        unique = dict(items)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return dict(zip(unique, pool.map(lambda kv: self.get(*kv), unique.items())))

    def _make(self, image_id: str, source: str | None):
        from PIL import Image

        from embstore.errors import ImageDecodeError
        from embstore.ingest.images import read_rgb

        if not source:
            return None
        try:
            found_id, img, _ = read_rgb(source, min_side=self.size)
        except ImageDecodeError:
            return None
        if found_id != image_id:  # the file at that path is no longer the image that was ingested
            return None
        img.thumbnail((self.size, self.size))
        path = self.path(image_id)
        target: Path | io.BytesIO = path
        try:
            with atomic_path(path) as tmp:
                img.save(tmp, "JPEG", quality=QUALITY)
        except OSError:  # a read-only or full store: draw from memory, cache nothing
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=QUALITY)
            buf.seek(0)
            target = buf
        with Image.open(target) as saved:  # the cached bytes, so a first and a later figure are identical
            return saved.convert("RGB")
