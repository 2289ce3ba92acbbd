"""Small facts about camera RAW files that rawpy does not expose: the camera's make and model.

rawpy 0.28 gives neither LibRaw's ``idata.make`` nor ``idata.model``; TIFF-structured RAW files
(DNG, NEF, ARW, CR2, PEF, ORF, RW2, ...) carry them as the ``Make``/``Model`` tags of the first
directory, read here from at most a few kilobytes. Also the mapping of EXIF orientations to
LibRaw's ``flip`` codes, and what a flip does to a size and an image.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["camera_names", "displayed", "exif_flip", "upright"]

_MAKE, _MODEL = 271, 272
# Byte order marks and the magic numbers of TIFF-structured RAW formats: TIFF 42, Olympus ORF
# 0x4F52/0x5352 ("RO"/"RS"), Panasonic RW2 0x55.
_MAGICS = frozenset({42, 0x4F52, 0x5352, 0x55})
_EXIF_TO_FLIP = {1: 0, 2: 1, 3: 3, 4: 2, 5: 4, 6: 6, 7: 7, 8: 5}


def exif_flip(orientation: object) -> int | None:
    """LibRaw's ``flip`` for an EXIF orientation (1-8), or None when it is not one."""
    return _EXIF_TO_FLIP.get(orientation) if isinstance(orientation, int) else None


def camera_names(path: Path) -> dict[str, str]:
    """Return ``{"make": ..., "model": ...}`` from IFD0 of a TIFF-structured RAW (may be empty).

    Args:
        path: The RAW file.

    Returns:
        The names found; nothing for other containers or unreadable tags.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8 or head[:2] not in (b"II", b"MM"):
                return {}
            order = "<" if head[:2] == b"II" else ">"
            magic, ifd = struct.unpack(order + "HI", head[2:8])
            if magic not in _MAGICS:
                return {}
            fh.seek(ifd)
            (count,) = struct.unpack(order + "H", fh.read(2))
            entries = fh.read(12 * min(count, 512))
            names: dict[str, str] = {}
            for start in range(0, len(entries) - 11, 12):
                tag, kind, n = struct.unpack(order + "HHI", entries[start : start + 8])
                if tag not in (_MAKE, _MODEL) or kind != 2:
                    continue
                n = min(n, 128)
                if n <= 4:
                    data = entries[start + 8 : start + 8 + n]
                else:
                    (offset,) = struct.unpack(order + "I", entries[start + 8 : start + 12])
                    here = fh.tell()
                    fh.seek(offset)
                    data = fh.read(n)
                    fh.seek(here)
                text = data.split(b"\0", 1)[0].decode("latin-1").strip()
                if text:
                    names["make" if tag == _MAKE else "model"] = text
            return names
    except (OSError, struct.error):
        return {}


def displayed(size: tuple[int, int], flip: int) -> tuple[int, int]:
    """``size`` (as stored) as displayed after LibRaw's ``flip`` (bit 4: axes swapped)."""
    return (size[1], size[0]) if flip & 4 else size


def upright(image: Image.Image, flip: int) -> Image.Image:
    """Apply LibRaw's ``flip`` (0, 3: 180 degrees, 5: 90 counter-clockwise, 6: clockwise...)."""
    from PIL import Image

    steps = {
        1: (Image.Transpose.FLIP_LEFT_RIGHT,),
        2: (Image.Transpose.FLIP_TOP_BOTTOM,),
        3: (Image.Transpose.ROTATE_180,),
        4: (Image.Transpose.TRANSPOSE,),
        5: (Image.Transpose.ROTATE_90,),
        6: (Image.Transpose.ROTATE_270,),
        7: (Image.Transpose.TRANSVERSE,),
    }.get(flip, ())
    for step in steps:
        image = image.transpose(step)
    return image
