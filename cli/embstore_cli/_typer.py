"""typer, imported without its rich help and traceback renderers.

typer imports rich's Markdown (markdown-it) and Traceback (pygments) renderers at import time
whenever rich is installed: 0.26 s on every `embstore` command, measured against
`python -c "import duckdb, faiss"` (0.49 s). embstore prints its own output with rich and is
content with click's plain help text, so typer is imported while `import rich` fails, which is
typer's documented no-rich mode. Every other module imports typer from here.
"""

from __future__ import annotations

import sys


def _import_typer_without_rich():
    if "typer" in sys.modules:
        return sys.modules["typer"]
    saved = {name: mod for name, mod in sys.modules.items() if name == "rich" or name.startswith("rich.")}
    for name in saved:
        del sys.modules[name]
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` now raises ImportError
    try:
        import typer
    finally:
        del sys.modules["rich"]
        sys.modules.update(saved)
    return typer


typer = _import_typer_without_rich()
