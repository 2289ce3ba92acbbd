"""Pure geometry: target boxes, fitting a page into a box, and tile grids under a pixel budget.

Nothing here touches an engine or an image; every function is deterministic and cheap, so the
sizes and budgets of a conversion are fixed before anything is rendered.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Box", "SizeSpec", "band_grid", "fit"]

Box = tuple[float, float, float, float]
"""A rectangle ``(x0, y0, x1, y1)`` in a document's native units (points or pixels)."""

_SIZE_RE = re.compile(r"^\s*(\d+)?\s*(x)?\s*(\d+)?\s*$", re.IGNORECASE)

MAX_EDGE = 1_000_000
"""Largest edge a size may name; anything bigger is certainly a typo."""


@dataclass(frozen=True, order=True)
class SizeSpec:
    """A requested output size.

    ``N`` fits inside N x N, ``WxH`` inside W x H, ``Wx`` fixes the width and ``xH`` the height.

    Attributes:
        width: Largest output width in pixels, or None for "any".
        height: Largest output height in pixels, or None for "any".
    """

    width: int | None
    height: int | None
    square: bool = False

    @classmethod
    def parse(cls, text: str | int | SizeSpec) -> SizeSpec:
        """Parse ``256``, ``"256"``, ``"1024x768"``, ``"300x"`` or ``"x400"``.

        Args:
            text: The size as the user wrote it (or an int, or a SizeSpec, returned as is).

        Returns:
            The parsed size.

        Raises:
            ValueError: If the text is not a size or names a zero or absurd edge.
        """
        if isinstance(text, SizeSpec):
            return text
        if isinstance(text, bool):
            raise ValueError(f"invalid size {text!r}")
        if isinstance(text, int):
            text = str(text)
        match = _SIZE_RE.match(str(text))
        if not match or (match.group(1) is None and match.group(3) is None):
            raise ValueError(f"invalid size {text!r}: use N, WxH, Wx or xH (for example 256)")
        first, cross, second = match.groups()
        if not cross and second is not None:  # pragma: no cover - the regex cannot produce this
            raise ValueError(f"invalid size {text!r}")
        width = int(first) if first is not None else None
        height = int(second) if second is not None else None
        for edge in (width, height):
            if edge is not None and not 1 <= edge <= MAX_EDGE:
                raise ValueError(f"invalid size {text!r}: edges must be between 1 and {MAX_EDGE}")
        if not cross:
            return cls(width, width, square=True)
        return cls(width, height)

    @property
    def label(self) -> str:
        """The normalised text of the size, as used in output file names (``256``, ``300x``)."""
        if self.square:
            return str(self.width)
        return f"{self.width or ''}x{self.height or ''}"

    def __str__(self) -> str:
        return self.label


def fit(width: float, height: float, size: SizeSpec, *, upscale: bool = True) -> tuple[int, int]:
    """Return the output size of a ``width`` x ``height`` page fitted to ``size``.

    The aspect ratio is kept (within rounding to whole pixels), the constrained edge equals the
    box exactly, and no edge is below 1 px.

    Args:
        width: Page width in native units (> 0).
        height: Page height in native units (> 0).
        size: The requested box.
        upscale: When False, the result is never larger than ``width`` x ``height`` (used for
            raster sources, whose pixels are the native units).

    Returns:
        ``(w, h)`` in whole pixels.

    Raises:
        ValueError: If the page has no area.
    """
    if not (width > 0 and height > 0) or math.isinf(width) or math.isinf(height):
        raise ValueError(f"page has no usable area ({width} x {height})")
    box_w, box_h = size.width, size.height
    scale_w = box_w / width if box_w is not None else math.inf
    scale_h = box_h / height if box_h is not None else math.inf
    if scale_w <= scale_h:
        scale = scale_w
        out_w, out_h = float(box_w or 0), height * scale
    else:
        scale = scale_h
        out_w, out_h = width * scale, float(box_h or 0)
    if not upscale and scale > 1:
        out_w, out_h = width, height
    return max(1, round(out_w)), max(1, round(out_h))


def band_grid(width: int, height: int, max_pixels: int) -> list[list[tuple[int, int, int, int]]]:
    """Split a ``width`` x ``height`` pixel area into bands of whole rows, for streaming.

    Each band holds ``max(1, max_pixels // width)`` rows (fewer for the last) and is cut into
    tiles of whole columns, each within the budget; a band therefore holds at most
    ``max(max_pixels, width)`` pixels, so writing rows band by band bounds memory too.

    Args:
        width: Area width in pixels (>= 1).
        height: Area height in pixels (>= 1).
        max_pixels: Largest number of pixels one tile may hold (>= 1).

    Returns:
        The bands, top to bottom; each is a list of ``(x0, y0, x1, y1)`` tiles, left to right,
        all spanning the band's rows.

    Raises:
        ValueError: If an argument is below 1.
    """
    if width < 1 or height < 1 or max_pixels < 1:
        raise ValueError("band_grid needs a positive area and budget")
    band_h = min(height, max(1, max_pixels // width))
    tile_w = min(width, max(1, max_pixels // band_h))
    bands = []
    for y0 in range(0, height, band_h):
        y1 = min(y0 + band_h, height)
        bands.append([(x0, y0, min(x0 + tile_w, width), y1) for x0 in range(0, width, tile_w)])
    return bands
