"""A third-party converter: files holding "COLOUR #rrggbb WxH" become a flat image of that colour.

It uses only the plugin surface of previewer (previewer.plugin and previewer.errors).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image

from previewer.errors import InputError
from previewer.plugin import Availability, ConvertContext

PATTERN = re.compile(rb"^COLOUR #([0-9a-fA-F]{6}) (\d+)x(\d+)")


class ColourDocument:
    units: Literal["pt", "px"] = "pt"
    page_count = 1

    def __init__(self, colour: tuple[int, int, int], size: tuple[int, int]) -> None:
        self.colour = colour
        self.size = size

    def page_size(self, index: int) -> tuple[float, float]:
        return float(self.size[0]), float(self.size[1])

    def render(self, index: int, *, scale: float, clip: Any = None) -> Image.Image:
        w, h = (max(1, round(v * scale)) for v in self.size)
        return Image.new("RGB", (w, h), self.colour)

    def metadata(self) -> dict[str, Any]:
        return {"colour": "#{:02x}{:02x}{:02x}".format(*self.colour)}

    def close(self) -> None:
        pass

    def __enter__(self) -> ColourDocument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ColourConverter:
    name: ClassVar[str] = "colour-demo"
    mime_types: ClassVar[frozenset[str]] = frozenset({"text/plain"})
    priority: ClassVar[int] = 90  # above the built-in text converter (50)

    def availability(self) -> Availability:
        return Availability(True, "demo", version="1.0")

    def open(self, source: Path, ctx: ConvertContext) -> ColourDocument:
        match = PATTERN.match(source.read_bytes()[:64])
        if not match:
            raise InputError("not a COLOUR file")
        rgb = bytes.fromhex(match.group(1).decode())
        return ColourDocument((rgb[0], rgb[1], rgb[2]), (int(match.group(2)), int(match.group(3))))
