"""Headless Debian Chromium for the report tests (installed by tests/setup-browser.sh)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--force-device-scale-factor=1",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Debian chromium is not installed; run tests/setup-browser.sh (the README's test command does)")
    return exe


def _run(args: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="embstore-chromium-") as profile:  # a new profile every time
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, timeout=180
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done


def screenshot(page: Path, out: Path, *, width: int, height: int) -> Path:
    """A width × height screenshot of `page` as Chromium renders it."""
    _run([f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri()])
    assert out.is_file(), f"chromium wrote no screenshot for {page}"
    return out


def dump_dom(page: Path) -> str:
    """The DOM Chromium built from `page`, serialised."""
    return _run(["--dump-dom", page.resolve().as_uri()]).stdout.decode()
