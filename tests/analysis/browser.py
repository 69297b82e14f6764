"""A minimal headless-Chromium screenshot helper for the SVG tests (Debian's ``chromium``)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import IN_CI

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("CI=true but chromium is not installed (.ci/run installs it)")
        pytest.skip("needs chromium")
    return found


def screenshot_svg(svg: str, *, width: int = 1000, height: int = 700):
    """The SVG rendered by Chromium as an <img> in a page, as a Pillow image."""
    from PIL import Image

    binary = chromium()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        (base / "picture.svg").write_text(svg)
        (base / "page.html").write_text(
            '<!doctype html><html><body style="margin:0;background:#fff">'
            '<img src="picture.svg" style="max-width:100%"></body></html>'
        )
        output = base / "shot.png"
        subprocess.run(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={base / 'profile'}",
                f"--screenshot={output}",
                f"--window-size={width},{height}",
                (base / "page.html").as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "HOME": folder},
        )
        with Image.open(output) as image:
            return image.convert("RGB").copy()


def non_white_share(image) -> float:
    """Share of pixels that are not (almost) white."""
    grey = image.convert("L")
    histogram = grey.histogram()
    return sum(histogram[:240]) / (grey.width * grey.height)
