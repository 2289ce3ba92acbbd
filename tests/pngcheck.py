"""The one helper every test uses to check a produced preview PNG (STYLE.md section 9).

``check_png`` parses the PNG chunk by chunk itself (signature, CRCs, IHDR bit depth and colour
type, which ancillary chunks are present) instead of trusting Pillow alone, then opens the file
in Pillow for the geometric and pixel checks.
"""

from __future__ import annotations

import io
import struct
import zlib
from os import PathLike
from pathlib import Path

from PIL import Image

__all__ = ["check_png", "check_tiling", "png_chunks"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Chunks a preview may contain. Critical chunks a Pillow RGB/RGBA PNG uses, plus the one
# ancillary chunk previewer writes on purpose (sRGB). Anything else (eXIf, tEXt, zTXt, iTXt,
# iCCP, gAMA, cHRM, pHYs, tIME, ...) would be metadata copied from the input.
ALLOWED_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"sRGB"})

# IHDR colour types: 2 = truecolour (RGB), 6 = truecolour with alpha (RGBA).
COLOUR_TYPES = {2: "RGB", 6: "RGBA"}


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split PNG bytes into ``(type, payload)`` chunks, asserting signature, lengths and CRCs."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG file (bad signature)"
    chunks = []
    pos = 8
    while pos < len(data):
        assert pos + 8 <= len(data), f"truncated chunk header at byte {pos}"
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        assert end <= len(data), f"chunk {kind!r} runs past the end of the file"
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : end])
        assert zlib.crc32(kind + payload) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, payload))
        pos = end
        if kind == b"IEND":
            break
    assert chunks and chunks[0][0] == b"IHDR", "first chunk is not IHDR"
    assert chunks[-1][0] == b"IEND", "no IEND chunk"
    assert pos == len(data), f"{len(data) - pos} bytes of trailing data after IEND"
    return chunks


def check_png(
    path_or_bytes: str | PathLike[str] | bytes,
    *,
    expected_size: tuple[int, int] | None = None,
    longest: int | None = None,
    aspect: tuple[float, float] | None = None,
    allow_flat: bool = False,
) -> Image.Image:
    """Assert that a preview PNG is well formed and sized as requested; return it opened.

    Args:
        path_or_bytes: The PNG file, or its bytes.
        expected_size: Exact ``(width, height)`` the image must have.
        longest: The requested longest edge: the image's longest edge must equal it within
            1 px and never exceed it.
        aspect: The page's displayed ``(width, height)`` in any unit; the image's short edge
            must be within 1 px of what the long edge and this aspect give.
        allow_flat: Accept an image of one flat colour (the manifest's ``blank-page`` rows,
            or a source that is itself one colour).

    Returns:
        The image, opened and fully loaded, for further pixel checks.
    """
    if isinstance(path_or_bytes, bytes | bytearray):
        data = bytes(path_or_bytes)
        label = "<png bytes>"
    else:
        label = str(path_or_bytes)
        data = Path(path_or_bytes).read_bytes()

    chunks = png_chunks(data)
    kinds = [kind for kind, _ in chunks]
    extra = sorted({k.decode("latin-1") for k in kinds} - {k.decode() for k in ALLOWED_CHUNKS})
    assert not extra, f"{label}: unexpected chunks {extra} (metadata copied from the input?)"
    assert kinds.count(b"sRGB") <= 1, f"{label}: several sRGB chunks"
    assert b"IDAT" in kinds, f"{label}: no image data"
    ihdr = chunks[0][1]
    width, height, depth, colour_type, _compression, _filter, interlace = struct.unpack(
        ">IIBBBBB", ihdr
    )
    assert depth == 8, f"{label}: bit depth {depth}, expected 8"
    assert colour_type in COLOUR_TYPES, (
        f"{label}: PNG colour type {colour_type}, expected 2 (RGB) or 6 (RGBA)"
    )

    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG", f"{label}: Pillow reads it as {image.format}"
    assert image.mode in ("RGB", "RGBA"), f"{label}: mode {image.mode}"
    assert image.mode == COLOUR_TYPES[colour_type]
    assert image.size == (width, height)
    assert width >= 1 and height >= 1
    assert "exif" not in image.info, f"{label}: EXIF copied into the preview"
    assert not getattr(image, "text", {}), f"{label}: text chunks {image.text!r}"

    if expected_size is not None:
        assert image.size == tuple(expected_size), (
            f"{label}: size {image.size}, expected {tuple(expected_size)}"
        )
    long_edge = max(width, height)
    if longest is not None:
        assert long_edge <= longest, f"{label}: longest edge {long_edge} exceeds {longest}"
        assert long_edge >= longest - 1, f"{label}: longest edge {long_edge}, expected {longest}"
    if aspect is not None:
        aw, ah = (float(v) for v in aspect)
        assert aw > 0 and ah > 0
        if aw >= ah:
            expected_short, actual_short, axis = max(1.0, width * ah / aw), height, "height"
        else:
            expected_short, actual_short, axis = max(1.0, height * aw / ah), width, "width"
        assert abs(actual_short - expected_short) <= 1.0, (
            f"{label}: {width}x{height} does not keep the page aspect {aw:g}x{ah:g} "
            f"({axis} {actual_short}, expected {expected_short:.1f} +-1)"
        )
    if not allow_flat:
        extrema = image.getextrema()
        assert any(lo != hi for lo, hi in extrema), (
            f"{label}: the image is one flat colour {image.getpixel((0, 0))}"
        )
    return image


def check_tiling(source: str | PathLike[str], size: int, max_tile_pixels: int) -> None:
    """Render ``source`` whole and in tiles of ``max_tile_pixels``; the two must match.

    Args:
        source: The input.
        size: Longest side of the rendering.
        max_tile_pixels: A tile budget small enough to force several tiles.
    """
    from support import worst_channel_difference

    import previewer

    whole = previewer.render(source, size=size).convert("RGB")
    tiled = previewer.render(
        source, size=size, limits=previewer.Limits(max_tile_pixels=max_tile_pixels)
    ).convert("RGB")
    assert tiled.size == whole.size
    assert worst_channel_difference(whole, tiled) < 1
