"""Where images come from (folder, class-per-folder tree, CSV/Parquet manifest) and how one
file becomes an RGB tensor, or a recorded reason why it cannot.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from embstore.errors import ImageDecodeError, InputPathError, ManifestError
from embstore.ingest.options import DEFAULT_MAX_PIXELS
from embstore.spec import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
MANIFEST_SUFFIXES = {".csv", ".parquet"}
PATH_MAX = 4096  # bytes: Linux's limit on a path handed to the kernel (longer ones fail to open)
MAX_FILE_BYTES = 512 << 20  # no image file is read past this (a 100 MP PNG is ~300 MB)
MAX_ASPECT = 50  # longer side / shorter side: a 1×20000 sliver would resize to 256 × 5,120,000
REDUCING_GAP = 4  # shrink while decoding only to a shorter side of at least this × the model's resize
LARGE_PIXELS = 16_000_000  # above this (64 MB as RGBA), one image decodes at a time in a process
_LARGE_DECODES = threading.Lock()
ID_HEX = 20


@dataclass
class ImageSource:
    path: str  # absolute
    label_raw: str | None
    source: str  # folder | class_tree | manifest
    extra: dict = field(default_factory=dict)
    problem: str | None = None  # why it cannot be ingested at all (recorded in ingest_errors, never dropped)


@dataclass
class Discovery:
    images: list[ImageSource]
    ignored: int  # files without an image suffix in a folder input
    conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # (path, label kept, label dropped)

    def problems(self) -> list[tuple[str, str]]:
        """(path, reason) of what cannot be ingested at all: a name that is not UTF-8, a folder that
        cannot be read, a manifest path with a NUL byte or a symbolic link loop."""
        return [(i.path, i.problem) for i in self.images if i.problem]


def discover(path: str | Path, *, limit: int | None = None) -> Discovery:
    """Every image `path` names, sorted by path, deduplicated by path.

    >>> discover("photos/").images[0].label_raw  # doctest: +SKIP
    'n01440764'
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise InputPathError(f"image path {root} does not exist")
    if root.is_file():
        if root.suffix.lower() in MANIFEST_SUFFIXES:
            found, ignored = _from_manifest(root), 0
        elif root.suffix.lower() in IMAGE_SUFFIXES:
            found, ignored = [ImageSource(str(root.resolve()), None, "folder")], 0
        else:
            raise InputPathError(f"{root} is neither a folder, an image nor a .csv/.parquet manifest")
    else:
        found, ignored = _from_folder(root.resolve())
    seen: dict[str, ImageSource] = {}
    unique, conflicts = [], []
    for img in sorted(found, key=lambda i: i.path):
        first = seen.get(img.path)
        if first is None:
            seen[img.path] = img
            unique.append(img)
        elif first.label_raw != img.label_raw:  # the same file listed twice with two labels: said, not dropped
            conflicts.append((img.path, str(first.label_raw), str(img.label_raw)))
    return Discovery(unique[:limit] if limit else unique, ignored, conflicts)


def _text(name: str) -> str | None:
    """Why a file name (decoded by the OS's rule, undecodable bytes as surrogates) cannot be stored, or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8: rename it"
    return None


def _shown(name: str) -> str:
    """A name that may hold undecodable bytes, storable and readable (`\\xff` for byte 0xff)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _from_folder(root: Path) -> tuple[list[ImageSource], int]:
    found, ignored = [], 0

    def unreadable(exc: OSError) -> None:  # a folder os.walk cannot list is recorded, not skipped
        found.append(ImageSource(_shown(str(exc.filename)), None, "folder", problem=f"folder cannot be read: "
                                 f"{exc.strerror or exc}"))  # fmt: skip

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        label = rel.parts[0] if rel.parts else None
        for name in filenames:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                ignored += 1
                continue
            path = str(Path(dirpath) / name)
            problem = _text(path)
            if problem is None and len(os.fsencode(path)) >= PATH_MAX:
                problem = f"its path is longer than this system's limit ({PATH_MAX} bytes)"
            source = "class_tree" if label else "folder"
            found.append(ImageSource(_shown(path), label and _shown(label), source, problem=problem))
    return found, ignored


def _from_manifest(path: Path) -> list[ImageSource]:
    from embstore.ingest.manifest import read_manifest

    m = read_manifest(path, "manifest", required=("path",), unique=("path", "label"), rows_are="images",
                      lacking="has no 'path' column (columns: {has})")  # fmt: skip
    path_col, label_col, base = m.columns["path"], m.column("label"), m.base
    out = []
    for i, row in enumerate(m.rows, start=m.first_row):
        raw = _decoded(row[path_col])
        if raw is None or not str(raw).strip():
            raise ManifestError(f"manifest {path} row {i} has an empty path")
        label = _decoded(row.get(label_col)) if label_col else None
        label = None if label is None else _shown(str(label))
        extra = {k: _jsonable(_decoded(v)) for k, v in row.items() if k not in (path_col, label_col)}
        out.append(_manifest_entry(base, str(raw).strip(), label, extra))
    return out


def _decoded(value):
    """A manifest value: bytes (a CSV column with one non-UTF-8 byte reads as binary) as text, each
    undecodable byte kept as a surrogate (that one path is then recorded as not UTF-8, the others work)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _manifest_entry(base: Path, raw: str, label: str | None, extra: dict) -> ImageSource:
    """One manifest row's image; a path that cannot name a file is kept with the reason."""
    problem = _text(raw) or ("it holds a NUL byte" if "\0" in raw else None)
    if problem is None:
        p = Path(raw).expanduser()
        p = p if p.is_absolute() else base / p
        try:
            return ImageSource(str(p.resolve()), label, "manifest", extra)
        except (OSError, RuntimeError) as exc:  # a symbolic link loop (RuntimeError before Python 3.13)
            problem, raw = f"cannot be resolved: {getattr(exc, 'strerror', None) or exc}", str(p)
    shown = _shown(raw).replace("\0", "\\0")
    return ImageSource(shown if os.path.isabs(shown) else str(base / shown), label, "manifest", extra, problem)


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


# -- decoding -----------------------------------------------------------------------------------
def content_id(data: bytes) -> str:
    """The image id: the first 20 hex digits of the file's SHA-256."""
    return hashlib.sha256(data).hexdigest()[:ID_HEX]


def read_image_bytes(path: str, image_id: str) -> bytes | None:
    """The bytes of the file at `path` if they still are the image `image_id`, else None."""
    try:
        data = _read_regular_file(path)
    except ImageDecodeError:
        return None
    return data if content_id(data) == image_id else None


def _read_regular_file(path: str) -> bytes:
    """The bytes of `path` if it is a regular file of at most MAX_FILE_BYTES (after symlinks).

    Opened non-blocking and checked on the open descriptor: a FIFO named x.jpg would block a
    plain read forever, and a link to /dev/zero would grow memory without end.
    """
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or \
                stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file"  # fmt: skip
            raise ImageDecodeError(f"not a regular file ({kind}); only regular files are read")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageDecodeError(
                f"file of {st.st_size / 2**20:.0f} MiB is larger than the {MAX_FILE_BYTES >> 20} MiB an image may be"
            )
        chunks, left = [], MAX_FILE_BYTES + 1  # a file growing while read is still bounded
        while left > 0:
            try:
                chunk = os.read(fd, min(left, 1 << 24))
            except OSError as exc:
                raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from None
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise ImageDecodeError(f"file grew past the {MAX_FILE_BYTES >> 20} MiB an image may be while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_rgb(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int | None = None):
    """(image_id, RGB PIL image, info) for `path`; raises ImageDecodeError with the reason.

    Converted: grayscale, palette, CMYK, 16-bit and float images to 8-bit RGB; alpha composited
    over white; EXIF orientation applied; first frame of animations.

    With `min_side` (the model's resize), an image whose shorter side is at least 2 × REDUCING_GAP ×
    `min_side` is shrunk by an integer factor while it is decoded (JPEG's DCT scaling, else box
    `reduce`) to a shorter side of no less than REDUCING_GAP × `min_side`: what one image costs is
    then bounded by the model's input, not by the file (smaller images decode exactly as before).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    data = _read_regular_file(path)
    if not data:
        raise ImageDecodeError("empty file")
    try:
        # PIL's decompression-bomb guard stays on for the whole process (a notebook, a server):
        # embstore only adds its own, usually tighter, per-image limits below
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > max_pixels:
            raise ImageDecodeError(
                f"image is {w}×{h} = {w * h / 1e6:.0f} MP, above the {max_pixels / 1e6:.0f} MP limit"
            )
        if max(w, h) > MAX_ASPECT * max(min(w, h), 1):
            raise ImageDecodeError(
                f"image is {w}×{h}, an aspect ratio above {MAX_ASPECT}:1 (its shorter side would be resized "
                f"to the model's input and its longer side to {MAX_ASPECT}× or more of it)"
            )
        mode = img.mode
        # one image above LARGE_PIXELS decodes at a time in a process, whatever its decoding threads
        with _LARGE_DECODES if w * h > LARGE_PIXELS else contextlib.nullcontext():
            shrunk = ImageOps.exif_transpose(_shrunk(img, min_side))
            rgb = _to_rgb(shrunk)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"refused by PIL's decompression-bomb guard ({exc}); raise PIL.Image.MAX_IMAGE_PIXELS "
            "in your own process to allow such images"
        ) from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None
    return content_id(data), rgb, {"width": w, "height": h, "mode": mode}


_REDUCIBLE = {"L", "RGB", "CMYK", "YCbCr", "I", "F"}  # no palette, no alpha: a box average is exact


def _shrunk(img, min_side: int | None):
    """The decoded image, shrunk by an integer factor when it is far larger than `min_side` needs."""
    if not min_side:
        img.load()
        return img
    need = REDUCING_GAP * min_side
    factor = min(img.size) // need
    if factor >= 2 and img.format == "JPEG":
        w, h = img.size
        img.draft(None, (-(-w * need // min(w, h)), -(-h * need // min(w, h))))  # decodes at 1/2, 1/4 or 1/8
    img.load()
    factor = min(img.size) // need
    if factor < 2:
        return img
    if img.mode in _SIXTEEN:  # PIL cannot reduce 16-bit modes; "I" (32-bit) it can, a strip at a time
        return _scaled_to_8bit(_reduced_in_strips(img, factor, "I", lambda strip: strip.convert("I")), 65535.0)
    if img.mode not in _REDUCIBLE:  # palette indices and straight alpha must not be averaged
        return _reduced_in_strips(img, factor, "RGB", _to_rgb)
    return img.reduce(factor)


_SIXTEEN = ("I;16", "I;16L", "I;16B", "I;16N")
STRIP_PIXELS = 4_000_000  # pixels of one strip converted at a time (16 MB as RGBA)


def _reduced_in_strips(img, factor: int, mode: str, convert):
    """`img` shrunk by `factor` as `reduce` shrinks it (box means; the last boxes partial), each strip
    of rows made `mode` by `convert` first: palette indices and straight alpha must not be averaged
    (RGB, alpha over white) and PIL reduces no 16-bit mode (32-bit "I"). No full-size converted copy
    exists: 16-bit 8000 × 8000 took 1589 MiB more than before decoding that way, RGBA 6000 × 6000
    688 MiB (bench figures in the README)."""
    from PIL import Image

    w, h = img.size
    out = Image.new(mode, (-(-w // factor), -(-h // factor)))
    rows = max(factor, STRIP_PIXELS // max(w, 1) // factor * factor)  # a multiple of factor: boxes align
    for top in range(0, h, rows):
        strip = convert(img.crop((0, top, w, min(top + rows, h))))
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def _scaled_to_8bit(img, top: float):
    """A one-channel image of values 0…`top` as 8-bit L (rounded)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(img, dtype=np.float32)
    return Image.fromarray(np.clip(arr / np.float32(top) * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def _to_rgb(img):
    import numpy as np
    from PIL import Image

    if img.mode in _SIXTEEN:
        img = _scaled_to_8bit(img, 65535.0)
    elif img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        if img.mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr, top = (arr - lo), (hi - lo) or 1.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


class Preprocess:
    """Resize (the shorter side, or squash both), centre-crop (unless crop is None), reorder the
    channels (BGR), scale to [0, 1] (unless scale is 0-255), normalise: as `Preprocessing` says.

    A class rather than a closure so DataLoader worker processes can receive it.
    """

    def __init__(self, pre: Preprocessing):
        self.pre = pre

    def __call__(self, img):
        return self.normalise(self.crop(img))

    def crop(self, img):
        """The resized, centre-cropped image as a uint8 (3, crop, crop) tensor: 1/4 of the float bytes."""
        import torch

        return torch.from_numpy(self.crop_array(img))

    def crop_array(self, img):
        """The resized, centre-cropped RGB image as a uint8 (3, crop, crop) numpy array (a view of
        its (crop, crop, 3) pixels), without importing torch: what the Ray engine's read tasks ship
        to the model actors. Equal, pixel for pixel and stride for stride, to torchvision's
        `pil_to_tensor(center_crop(resize(img, resize), crop))` on PIL images (tested), whose steps
        it follows: the shorter side to `resize` (the longer one truncated), no resampling when the
        size is already right, a centre crop offset by round-half-even, zeros where the crop is
        larger than the image. A read task that imports no torch starts ~4 s sooner and holds
        ~600 MiB less (measured: import torch + torchvision 4.2 s, 660 MiB peak RSS; PIL + numpy
        0.2 s, 26 MiB)."""
        import numpy as np

        pre = self.pre
        w, h = img.size
        if pre.resize_mode == "squash":  # both sides to `resize` (Keras' load_img(target_size=…))
            size = (pre.resize, pre.resize)
        else:
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = pre.resize, int(pre.resize * long / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
        if size != (w, h):
            img = img.resize(size, _resample(pre.interpolation))
        if pre.crop is not None:
            left, top = (_crop_offset(side, pre.crop) for side in size)
            img = img.crop((left, top, left + pre.crop, top + pre.crop))  # outside the image: zeros
        pixels = np.array(img, copy=True)
        if pre.color == "bgr":
            pixels = np.ascontiguousarray(pixels[:, :, ::-1])
        return pixels.transpose(2, 0, 1)

    def normalise(self, x):
        """uint8 (…, 3, H, W) -> normalised float32 (a new tensor, computed in place); the same
        arithmetic for one image or a batch."""
        import torch

        x = x.to(torch.float32, copy=True)
        if self.pre.scale == "unit":
            x.div_(255.0)
        x.sub_(torch.tensor(self.pre.mean, device=x.device).view(3, 1, 1))
        return x.div_(torch.tensor(self.pre.std, device=x.device).view(3, 1, 1))


def _resample(interpolation: str) -> int:
    """PIL's filter for a preprocessing interpolation, as torchvision maps it."""
    from PIL import Image

    return {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC}[interpolation]  # fmt: skip


def _crop_offset(side: int, crop: int) -> int:
    """Where a centre crop of `crop` starts along a side of `side` pixels (negative: padded)."""
    return -((crop - side) // 2) if crop > side else int(round((side - crop) / 2.0))


def decode_item(
    i: int, path: str, preprocess: Preprocess, max_pixels: int, *, normalise: bool = True, array: bool = False
) -> dict:
    """{"i", "image_id", "x", "info"} of one image, or {"i", "error"}: never raises. `x` is a
    normalised float (3, H, W) tensor, a uint8 one unless `normalise`, or with `array` a uint8
    numpy array (torch is then never imported)."""
    try:
        image_id, rgb, info = read_rgb(path, max_pixels=max_pixels, min_side=preprocess.pre.resize)
        st = os.stat(path)
        info.update(file_size=st.st_size, file_mtime=st.st_mtime)
        if array:
            x = preprocess.crop_array(rgb)
        else:
            x = preprocess(rgb) if normalise else preprocess.crop(rgb)
        return {"i": i, "image_id": image_id, "x": x, "info": info}
    except ImageDecodeError as exc:
        return {"i": i, "error": str(exc)}
    except Exception as exc:  # a decoder bug must cost one image, not the run
        return {"i": i, "error": f"{type(exc).__name__}: {exc}"}
