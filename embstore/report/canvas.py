"""Matplotlib figures as files: a new figure of embstore's size and DPI, and writing it as PNG/SVG/PDF."""

from __future__ import annotations

from pathlib import Path

from embstore.errors import UsageError

FORMATS = ("png", "svg")
DPI = 100
CAPTION = 9  # points: the smallest text a figure draws (captions under tiles, bar values), 12.5 px at DPI


def save(fig, out: str | Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write `fig` as out.png / out.svg (a suffix on `out` is replaced); returns the paths written."""
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        raise UsageError(f"unknown figure format '{bad[0] if bad else ''}'; choose png, svg or pdf")
    out = Path(out).expanduser()
    if out.suffix.lower() in (".png", ".svg", ".pdf"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out.with_name(f"{out.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=DPI, metadata={"Software": "embstore"} if fmt == "png" else None)
        written.append(path)
    return written


def png_bytes(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def title(fig, text: str, fontsize: float = 11) -> None:
    """`fig`'s title, wrapped to its width so that no line runs off the canvas."""
    import textwrap

    chars = max(20, int(fig.get_figwidth() * 72 / (fontsize * 0.55)))  # an average glyph is ~0.55 em wide
    fig.suptitle("\n".join(textwrap.wrap(text, chars)), fontsize=fontsize)
