"""Pillow decoding for the raster converter: damaged data, EXIF orientation, resampling modes.

Every exception Pillow raises on damaged data (``DAMAGED``), wherever it is raised (open, frame
count, seek, decode), is an ``InputError``; decompression bombs and memory exhaustion are limits.
A PNG's EXIF orientation is found without decoding its pixels.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from previewer.errors import InputError, LimitExceededError
from previewer.plugin import ConvertContext

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DAMAGED",
    "TRANSPOSE",
    "bomb",
    "damaged_data",
    "decoded_pixels",
    "pillow_warnings",
    "png_late_exif",
    "resizable",
]

# Walking the chunk headers of a PNG for a late eXIf chunk: how many chunks at most (a giant
# PNG written with 8 KiB IDAT chunks has ~7,000 per 57 MB) and how much EXIF is read.
_PNG_CHUNK_LIMIT = 1_000_000
_EXIF_BYTES = 1 << 20

# What Pillow 13 raises on damaged data, depending on the plugin and where the damage is (TIFF
# without ImageWidth in a later directory: TypeError "Missing dimensions"; short tag data:
# struct.error; bad palettes and tables: IndexError, KeyError, ZeroDivisionError; truncated
# streams: OSError, EOFError, SyntaxError, ValueError). All of it is bad input, wherever it is
# raised (open, frame count, seek, load) and whichever process runs it.
DAMAGED = (
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    ZeroDivisionError,
)


@contextlib.contextmanager
def damaged_data(fmt: str, ctx: ConvertContext) -> Iterator[None]:
    """Within the block: Pillow's exceptions become InputError (damaged data) or LimitExceeded.

    Args:
        fmt: The format named in messages ("TIFF").
        ctx: The conversion context (its pixel limit is quoted for decompression bombs).
    """
    from PIL import Image

    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise bomb(exc, ctx.limits.max_pixels) from exc
    except MemoryError as exc:
        raise LimitExceededError("not enough memory to decode the image") from exc
    except DAMAGED as exc:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, ValueError) and "too large" in text.lower():
            raise LimitExceededError(f"image data too large: {text}") from exc
        if "truncated" in text or "broken data stream" in text:
            raise InputError(f"truncated {fmt} image: {text}") from exc
        raise InputError(f"corrupt {fmt} image: {text}") from exc


@contextlib.contextmanager
def pillow_warnings(ctx: ConvertContext) -> Iterator[None]:
    """Within the block: Pillow's decompression-bomb warning is an error; others are logged.

    Pillow warns about damaged files (``UserWarning: Tag data larger than file``, EXIF
    problems); those must neither reach stderr nor turn into errors under strict filters.
    """
    from PIL import Image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield
    for warning in caught:
        ctx.log.debug("Pillow: %s", warning.message)


def png_late_exif(path: Path) -> bytes | None:
    """Return the payload of an eXIf chunk that follows the image data of the PNG at ``path``.

    Only the 8-byte chunk headers are read (each chunk's data is skipped with a seek), so a
    giant PNG costs a few thousand small reads and nothing is decompressed. Stops at IEND, at
    a header that runs past the end of the file, or after ``_PNG_CHUNK_LIMIT`` chunks.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        pos = 8
        fh.seek(pos)
        for _ in range(_PNG_CHUNK_LIMIT):
            head = fh.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if pos + 12 + length > size:
                return None
            if kind == b"eXIf":
                return fh.read(min(length, _EXIF_BYTES))
            if kind == b"IEND":
                return None
            pos += 12 + length
            fh.seek(pos)
    return None


def bomb(exc: Exception, limit: int) -> LimitExceededError:
    """Describe Pillow's decompression-bomb refusal with the numbers."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f"{int(match.group(1)):,} pixels" if match else "too many pixels"
    return LimitExceededError(
        f"image has {pixels}, over the limit of {limit:,}",
        hint="raise --max-pixels to accept it",
    )


def decoded_pixels(image: Image.Image, target: tuple[int, int]) -> int:
    """Pixels Pillow would decode to reach ``target``: JPEG DCT scaling (``draft``) included."""
    width, height = image.size
    if image.format in ("JPEG", "MPO"):
        # The factor Pillow's JpegImageFile.draft picks: the largest of 8, 4, 2, 1 that keeps
        # the decoded image at least as large as the target.
        ratio = min(width // max(1, target[0]), height // max(1, target[1]))
        factor = next(f for f in (8, 4, 2, 1) if ratio >= f or f == 1)
        return -(-width // factor) * -(-height // factor)
    return width * height


def resizable(image: Image.Image) -> Image.Image:
    """Convert modes that cannot be resampled faithfully, keeping transparency and depth.

    Palette images become RGB, or RGBA when they have transparency; a colour-key
    (``tRNS``) grey or RGB image becomes RGBA; 16-bit grey is scaled to 8 bits by its bit
    depth (not stretched by its own range); 1-bit becomes 8-bit grey. Other modes are left to
    the final sRGB conversion.
    """
    mode = image.mode
    if mode in ("P", "PA"):
        alpha = (
            mode == "PA"
            or "transparency" in image.info
            or (image.palette is not None and image.palette.mode == "RGBA")
        )
        return image.convert("RGBA" if alpha else "RGB")
    if mode in ("L", "RGB") and "transparency" in image.info:
        return image.convert("RGBA")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return image.convert("I").point(lambda v: v / 256).convert("L")
    if mode == "1":
        return image.convert("L")
    return image


class Transposes:
    """EXIF orientation -> the transposition that displays the image upright (lazy Pillow)."""

    def __getitem__(self, orientation: int) -> Image.Transpose:
        from PIL import Image

        return {
            2: Image.Transpose.FLIP_LEFT_RIGHT,
            3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270,
            7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90,
        }[orientation]


TRANSPOSE = Transposes()
