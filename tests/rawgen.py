"""Camera RAW test inputs written with numpy and tifffile: small DNGs LibRaw really decodes.

:func:`dng` writes a DNG whose raw image is a 16-bit Bayer mosaic (RGGB) of one colour, with
the tags LibRaw needs (``DNGVersion``, ``CFARepeatPatternDim``, ``CFAPattern``,
``ColorMatrix1`` set to the XYZ -> linear sRGB matrix so camera RGB is sRGB,
``AsShotNeutral`` 1:1:1, ``BlackLevel``/``WhiteLevel``, ``Make``/``Model``,
``UniqueCameraModel``, ``Orientation``). Optionally it carries a JPEG preview in IFD0
(``NewSubFileType`` 1, as cameras write it), with the mosaic in a sub-IFD; without one, the
mosaic is IFD0 and the only image, so a reader must demosaic. :func:`hostile_dng` writes the
broken variants (garbage data, lying dimensions, truncation).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, TiffImagePlugin

__all__ = ["dng", "hostile_dng"]

WHITE = 4095
BLACK = 64

# XYZ (D65) -> linear sRGB: with it as ColorMatrix1, the camera's RGB is linear sRGB.
_XYZ_TO_SRGB = (
    (3.2406, -1.5372, -0.4986),
    (-0.9689, 1.8758, 0.0415),
    (0.0557, -0.2040, 1.0570),
)


def _srational(values: list[float]) -> list[int]:
    out: list[int] = []
    for v in values:
        out += [round(v * 10000), 10000]
    return out


def _dng_tags(make: str, model: str, orientation: int) -> list[tuple[int, str, int, object, bool]]:
    matrix = [v for row in _XYZ_TO_SRGB for v in row]
    return [
        (271, "s", 0, make, True),
        (272, "s", 0, model, True),
        (274, "H", 1, orientation, True),
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, f"{make} {model}", True),  # UniqueCameraModel
        (50721, 10, 9, tuple(_srational(matrix)), True),  # ColorMatrix1 (SRATIONAL)
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, 5, 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral (RATIONAL)
    ]


_CFA_TAGS: list[tuple[int, str, int, object, bool]] = [
    (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
    (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: R G / G B
    (50714, "H", 1, BLACK, True),  # BlackLevel
    (50717, "H", 1, WHITE, True),  # WhiteLevel
]


def mosaic(width: int, height: int, rgb: tuple[float, float, float]) -> np.ndarray:
    """An RGGB Bayer mosaic of one colour (linear 0..1 per channel), 16-bit.

    The top-left quarter (stored orientation) is light grey, so orientation can be checked.
    """
    cfa = np.empty((height, width), dtype=np.uint16)
    for colour, rows in ((rgb, slice(None)), ((0.9, 0.9, 0.9), slice(0, height // 4))):
        cols = slice(None) if rows == slice(None) else slice(0, width // 4)
        block = cfa[rows, cols]
        levels = [BLACK + round(c * (WHITE - BLACK)) for c in colour]
        block[0::2, 0::2] = levels[0]
        block[0::2, 1::2] = levels[1]
        block[1::2, 0::2] = levels[1]
        block[1::2, 1::2] = levels[2]
    return cfa


def _jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    image = Image.new("RGB", size, colour)
    # The same light top-left quarter as the mosaic's.
    image.paste((255, 255, 255), (0, 0, size[0] // 4, size[1] // 4))
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def dng(
    path: Path,
    *,
    size: tuple[int, int] = (320, 240),
    rgb: tuple[float, float, float] = (0.8, 0.1, 0.05),
    preview: tuple[int, int] | None = None,
    preview_colour: tuple[int, int, int] = (0, 0, 255),
    orientation: int = 1,
    make: str = "Previewer",
    model: str = "TestCam",
    cut_preview: bool = False,
) -> Path:
    """Write a DNG of one colour; return ``path``.

    Args:
        path: Where to write.
        size: The mosaic's width and height (even).
        rgb: The scene colour, linear 0..1 per channel.
        preview: Size of a JPEG preview in IFD0 (the mosaic then is in a sub-IFD), or None for a
            DNG whose only image is the mosaic.
        preview_colour: The preview's colour (distinct from the scene's, to tell which was used).
        orientation: TIFF Orientation (6: rotate 90 degrees clockwise to display).
        make: Camera Make.
        model: Camera Model.
        cut_preview: Store only the first half of the preview's JPEG (a damaged preview).
    """
    width, height = size
    cfa = mosaic(width, height, rgb)
    common = _dng_tags(make, model, orientation)
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        if preview is None:
            tif.write(
                cfa,
                photometric=32803,
                subfiletype=0,
                extratags=common + _CFA_TAGS,
            )
            return path
        # tifffile cannot write JPEG without imagecodecs: write the preview uncompressed, then
        # put the JPEG where its strip is and mark the IFD as JPEG (Compression 7, YCbCr).
        tif.write(
            np.zeros((preview[1], preview[0], 3), dtype=np.uint8),
            photometric="rgb",
            rowsperstrip=preview[1],
            subfiletype=1,
            subifds=1,
            extratags=common,
        )
        tif.write(cfa, photometric=32803, subfiletype=0, extratags=_CFA_TAGS)
    data = bytearray(path.read_bytes())
    jpeg = _jpeg(preview, preview_colour)
    if cut_preview:
        jpeg = jpeg[: len(jpeg) // 2]
    entries = _ifd0(data)
    offset = entries[273]
    data[offset : offset + len(jpeg)] = jpeg
    _set_ifd0(data, {259: 7, 262: 6, 279: len(jpeg)})
    path.write_bytes(bytes(data))
    return path


def hostile_dng(path: Path, kind: str) -> Path:
    """Write a broken DNG; return ``path``.

    Args:
        path: Where to write.
        kind: ``"garbage"`` (the mosaic's offset points past the end of the file), ``"fake"``
            (an RGB TIFF with ``DNGVersion``),
            ``"huge"`` (a header declaring a 60,000 x 60,000 mosaic in a 64 KB file) or
            ``"truncated"`` (a real DNG cut in the middle of its mosaic).
    """
    if kind == "truncated":
        dng(path, size=(512, 384))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    if kind == "garbage":
        # A lying header: the mosaic's strip is said to start far past the end of the file.
        dng(path, size=(256, 192))
        data = bytearray(path.read_bytes())
        _set_ifd0(data, {273: 1 << 30})
        path.write_bytes(bytes(data))
        return path
    if kind == "fake":
        # An ordinary RGB TIFF carrying DNGVersion: a RAW by its tags, nothing LibRaw reads.
        ifd = TiffImagePlugin.ImageFileDirectory_v2()
        ifd[50706] = b"\x01\x04\x00\x00"
        ifd.tagtype[50706] = 1
        ifd[271] = "Canon"
        Image.new("RGB", (96, 64), "red").save(path, "TIFF", tiffinfo=ifd)
        return path
    if kind == "huge":
        dng(path, size=(64, 64))
        data = bytearray(path.read_bytes())
        _set_ifd0(data, {256: 60000, 257: 60000})
        path.write_bytes(bytes(data) + bytes(65536))
        return path
    raise ValueError(kind)


def _ifd0(data: bytearray) -> dict[int, int]:
    """The single SHORT/LONG values of IFD0's tags in the little-endian TIFF ``data``."""
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    values = {}
    for i in range(count):
        tag, kind, n = struct.unpack_from("<HHI", data, ifd + 2 + 12 * i)
        if n == 1 and kind in (3, 4):
            fmt = "<H" if kind == 3 else "<I"
            values[tag] = struct.unpack_from(fmt, data, ifd + 10 + 12 * i)[0]
    return values


def _set_ifd0(data: bytearray, values: dict[int, int]) -> None:
    """Set single-valued tags of IFD0 of the little-endian TIFF ``data`` (as LONG) in place."""
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for i in range(count):
        at = ifd + 2 + 12 * i
        (tag,) = struct.unpack_from("<H", data, at)
        if tag in values:
            struct.pack_into("<HHII", data, at, tag, 4, 1, values[tag])
