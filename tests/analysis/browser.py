"""SVG pictures rendered by a real browser, through the shared helper tests/browser.py."""

import tempfile
from pathlib import Path

from tests import browser


def screenshot_svg(svg: str, *, width: int = 1000, height: int = 700):
    """The SVG rendered by Chromium as an <img> in a page, as a Pillow image."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        (base / "picture.svg").write_text(svg)
        (base / "page.html").write_text(
            '<!doctype html><html><body style="margin:0;background:#fff">'
            '<img src="picture.svg" style="max-width:100%"></body></html>'
        )
        shot = browser.screenshot(
            (base / "page.html").as_uri(), base / "shot.png", width=width, height=height
        )
        with Image.open(shot) as image:
            return image.convert("RGB").copy()


def non_white_share(image) -> float:
    """Share of pixels that are not (almost) white."""
    grey = image.convert("L")
    histogram = grey.histogram()
    return sum(histogram[:240]) / (grey.width * grey.height)
