"""JPEG and WebP encoding of previews, and how large a preview each format can take.

PNG previews are encoded by :mod:`previewer.output` (band by band when large); the lossy formats
are encoded here from a whole image: JPEG flattened onto white (it has no alpha), WebP with its
alpha. Neither carries any metadata of the input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from previewer.errors import LimitExceededError
from previewer.options import DEFAULT_QUALITY
from previewer.results import PREVIEW_MIMETYPES

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "EXTENSIONS",
    "MAX_EDGE",
    "MIMETYPES",
    "WHOLE_IMAGE_TILES",
    "check_encodable",
    "flatten",
    "save_lossy",
]

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
"""File name extension of each preview format (:data:`previewer.options.FORMATS`)."""

MIMETYPES = PREVIEW_MIMETYPES
"""MIME type of each preview format."""

MAX_EDGE = {"jpeg": 65_500, "webp": 16_383}
"""Longest side each encoder can write (libjpeg's and libwebp's own limits)."""

WHOLE_IMAGE_TILES = 4
"""A JPEG or WebP preview may hold this many tile budgets (``max_tile_pixels``): it is assembled
in memory before it is encoded, unlike a PNG, which is streamed band by band."""


def check_encodable(format: str, size: tuple[int, int], max_tile_pixels: int) -> None:
    """Refuse a preview that ``format`` cannot be encoded to within bounded memory.

    PNG is streamed band by band, whatever its size. JPEG and WebP are encoded from the whole
    image, which must fit :data:`WHOLE_IMAGE_TILES` tile budgets, and each side must fit the
    encoder (:data:`MAX_EDGE`: 65,500 for JPEG, 16,383 for WebP).

    Args:
        format: The preview format.
        size: The preview's pixel size.
        max_tile_pixels: The tile budget (``Limits.max_tile_pixels``).

    Raises:
        LimitExceededError: If the preview is too large for the format.
    """
    if format == "png":
        return
    width, height = size
    name = format.upper()
    edge = MAX_EDGE[format]
    if max(width, height) > edge:
        raise LimitExceededError(
            f"a {width}x{height} preview cannot be written as {name}: the format allows at "
            f"most {edge:,} pixels a side",
            hint="ask for a smaller size, or use format png",
        )
    budget = WHOLE_IMAGE_TILES * max_tile_pixels
    if width * height > budget:
        raise LimitExceededError(
            f"a {width}x{height} preview ({width * height:,} pixels) is too large to encode as "
            f"{name} in bounded memory: {name} is encoded from the whole image, at most "
            f"{budget:,} pixels ({WHOLE_IMAGE_TILES} x max_tile_pixels); only PNG is streamed",
            hint="ask for a smaller size, use format png, or raise max_tile_pixels",
        )


def flatten(image: Image.Image, background: str = "white") -> Image.Image:
    """Return ``image`` without alpha, composited onto ``background``.

    Args:
        image: An RGB or RGBA (or any Pillow) image.
        background: The colour shown where the image is transparent.

    Returns:
        An RGB image (``image`` itself when it is already RGB).
    """
    if image.mode == "RGB":
        return image
    from PIL import Image

    if image.mode not in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    base = Image.new("RGB", rgba.size, background)
    base.paste(rgba, mask=rgba.getchannel("A"))
    return base


def save_lossy(
    image: Image.Image, fh: BinaryIO, format: str, quality: int = DEFAULT_QUALITY
) -> None:
    """Encode ``image`` into ``fh`` as JPEG or WebP, carrying none of the input's metadata.

    Args:
        image: An RGB or RGBA image.
        fh: A binary file object.
        format: ``"jpeg"`` (alpha flattened onto white) or ``"webp"`` (lossy, alpha kept).
        quality: Encoder quality, 1-100.

    Raises:
        ValueError: If ``format`` is neither.
    """
    if format == "jpeg":
        clean = flatten(image)
        if clean is image and image.info:
            clean = image.copy()
        clean.info = {}
        clean.save(fh, "JPEG", quality=quality)
    elif format == "webp":
        clean = image if not image.info else image.copy()
        clean.info = {}
        clean.save(fh, "WEBP", quality=quality)
    else:
        raise ValueError(f"unknown preview format {format!r}")
