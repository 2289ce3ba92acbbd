"""Regenerate the sample inputs in samples/ (they are committed; run only to change them).

Usage: .venv/bin/python scripts/make_samples.py
"""

from __future__ import annotations

import math
from pathlib import Path

import pymupdf
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parents[1] / "samples"


def make_pdf(path: Path) -> None:
    doc = pymupdf.open()
    for number in (1, 2):
        page = doc.new_page(width=595, height=842)  # A4 portrait
        page.draw_rect(pymupdf.Rect(50, 50, 545, 160), color=(0.1, 0.2, 0.6), fill=(0.85, 0.9, 1))
        page.insert_text((70, 115), f"previewer sample report - page {number}", fontsize=22)
        for i in range(24):
            page.insert_text(
                (60, 210 + i * 24), f"Line {i + 1}: the quick brown fox " * 2, fontsize=11
            )
        page.draw_circle(pymupdf.Point(450, 760), 50, color=(0.8, 0.1, 0.1), fill=(1, 0.6, 0.5))
    doc.set_metadata({"title": "previewer sample report"})
    doc.save(path, garbage=4, deflate=True)


def make_jpeg(path: Path) -> None:
    width, height = 1600, 1200
    image = Image.new("RGB", (width, height))
    pixels = image.load()
    assert pixels is not None
    for y in range(height):
        for x in range(0, width):
            r = int(127 + 127 * math.sin(x / 97.0))
            g = int(127 + 127 * math.sin(y / 61.0))
            b = int(127 + 127 * math.sin((x + y) / 143.0))
            pixels[x, y] = (r, g, b)
    draw = ImageDraw.Draw(image)
    draw.ellipse((500, 300, 1100, 900), fill=(250, 250, 240), outline=(20, 20, 20), width=12)
    image.save(path, "JPEG", quality=85)


if __name__ == "__main__":
    make_pdf(HERE / "report.pdf")
    make_jpeg(HERE / "photo.jpg")
