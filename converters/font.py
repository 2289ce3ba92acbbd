"""Fonts (TrueType, OpenType, collections, WOFF, WOFF2) as a specimen page, with Pillow's FreeType.

Like the GNOME font thumbnailer and viewer: the font's name, a large "Aa", the alphabet and
digits, and "The quick brown fox..." at growing sizes, all drawn in the font itself on a white
page of :data:`PAGE_SIZE` points. The page is vector-like: it is drawn at whatever scale is
asked for (``units`` is ``pt``), and a clip draws only that part. A file FreeType cannot read
is a bad input.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import FONT
from previewer.errors import InputError
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["FontConverter"]

PAGE_SIZE = (600.0, 800.0)
"""The specimen page, in points."""
MARGIN = 36.0
PANGRAM = "The quick brown fox jumps over the lazy dog."
SIZES = (10, 14, 18, 24, 36, 48)
"""Point sizes the pangram is shown at."""


class FontConverter(BaseConverter):
    """Draws a specimen page of a font file."""

    name: ClassVar[str] = FONT.name
    mime_types: ClassVar[frozenset[str]] = FONT.mime_types
    priority: ClassVar[int] = FONT.priority
    sandboxed: ClassVar[bool] = False

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Report whether Pillow has FreeType."""
        try:
            from PIL import features

            version = features.version("freetype2")
        except Exception as exc:  # noqa: BLE001 - never raises, by contract
            return Availability(False, "Pillow FreeType", reason=f"cannot import Pillow: {exc}")
        if not version:
            return Availability(
                False, "Pillow FreeType", reason="Pillow was built without FreeType"
            )
        return Availability(True, "Pillow FreeType", version=str(version))

    def open(self, source: Path, ctx: ConvertContext) -> FontDocument:
        """Load the font (its first face) and read its name.

        Raises:
            InputError: FreeType cannot read the file.
        """
        data = source.read_bytes()
        family, style = _load(data, 24).getname()
        return FontDocument(data, family or source.name, style or "", ctx.mime)


def _load(data: bytes, size: float) -> Any:
    import io

    from PIL import ImageFont

    try:
        return ImageFont.truetype(io.BytesIO(data), size=max(size, 1.0))
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable font: {exc}") from exc


class FontDocument(BaseDocument):
    """One specimen page."""

    page_count = 1
    units: Literal["pt", "px"] = "pt"

    def __init__(self, data: bytes, family: str, style: str, mime: str) -> None:
        self._data = data
        self._family = family
        self._style = style
        self._mime = mime
        # (y of the baseline's top, text, size in points), from the top of the page.
        title = f"{family} {style}".strip()
        lines: list[tuple[float, str, float]] = [(MARGIN, title, 20.0)]
        y = MARGIN + 36
        lines.append((y, "Aa", 110.0))
        y += 150
        for text in ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz", "0123456789"):
            lines.append((y, text, 16.0))
            y += 24
        y += 12
        for size in SIZES:
            lines.append((y, PANGRAM, float(size)))
            y += size * 1.35
        self._lines = lines

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the specimen page's size in points."""
        return PAGE_SIZE

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Draw the specimen at ``scale`` pixels per point (only ``clip``, if given)."""
        from PIL import Image, ImageDraw

        box = clip or (0.0, 0.0, *PAGE_SIZE)
        left, top = round(box[0] * scale), round(box[1] * scale)
        width = max(1, round(box[2] * scale) - left)
        height = max(1, round(box[3] * scale) - top)
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        for y, text, size in self._lines:
            if (y + size * 1.5) * scale < top or y * scale > top + height:
                continue
            font = _load(self._data, size * scale)
            try:
                draw.text((MARGIN * scale - left, y * scale - top), text, fill="black", font=font)
            except (OSError, ValueError) as exc:
                raise InputError(f"the font cannot draw {text!r}: {exc}") from exc
        return image

    def metadata(self) -> dict[str, Any]:
        """Return the font's family and style names."""
        return {"format": self._mime, "family": self._family, "style": self._style}
