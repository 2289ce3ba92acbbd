"""The structure of a PSD/PSB file, read without decoding any pixels.

:func:`read_header` parses the file header and walks the section table (colour mode data, image
resources, layer and mask information) and the layer records: a truncated file, an implausible
header or canvas, and damaged layer records are found here, before any engine reads the file
(a tiny file declaring a 30,000 x 30,000 canvas is refused before anything is decoded).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, NamedTuple

from previewer.errors import InputError

__all__ = ["MODE_NAMES", "PILLOW_MODES", "PsdHeader", "read_header"]

MODE_NAMES = {
    0: "Bitmap",
    1: "Grayscale",
    2: "Indexed",
    3: "RGB",
    4: "CMYK",
    7: "Multichannel",
    8: "Duotone",
    9: "Lab",
}
# Photoshop modes Pillow's PSD reader decodes (8-bit, or 1-bit bitmap).
PILLOW_MODES = frozenset({0, 1, 2, 3, 4, 8, 9})
_VERSION_INFO = 1057  # image resource: version info, whose 5th byte is "has real merged data"


class PsdHeader(NamedTuple):
    """What the file header and section table say, read without decoding any pixels.

    A NamedTuple rather than a dataclass, which would cost about 1 ms of start-up to create.

    Attributes:
        version: 1 for PSD, 2 for PSB.
        channels: Stored channels of the merged image (alpha and spot channels included).
        width: Canvas width in pixels.
        height: Canvas height in pixels.
        depth: Bits per channel (1, 8, 16 or 32).
        mode: Photoshop colour mode number (see ``MODE_NAMES``).
        has_composite: Whether the merged image holds real data (version-info resource).
        layer_error: Why the layer records are unusable (corrupt rectangle, records running
            past their section), or "" when they look sound.
    """

    version: int
    channels: int
    width: int
    height: int
    depth: int
    mode: int
    has_composite: bool
    layer_error: str = ""

    @property
    def mode_name(self) -> str:
        """The colour mode's name ("RGB", "CMYK", ...)."""
        return MODE_NAMES.get(self.mode, f"mode {self.mode}")


def read_header(path: Path) -> PsdHeader:
    """Parse the header and walk the section lengths of a PSD/PSB file.

    Args:
        path: The file.

    Returns:
        The header facts.

    Raises:
        InputError: The file is truncated or its header is implausible. Damaged layer records
            are not an error here (``layer_error`` says what is wrong): the stored composite
            may still be sound.
    """
    size = os.path.getsize(path)
    layer_error = ""
    with open(path, "rb") as fh:
        head = fh.read(26)
        if len(head) < 26 or head[:4] != b"8BPS":
            raise InputError("not a Photoshop file (bad signature or truncated header)")
        version, channels, height, width, depth, mode = struct.unpack(">H6xHIIHH", head[4:])
        if version not in (1, 2):
            raise InputError(f"unknown Photoshop file version {version}")
        limit = 30000 if version == 1 else 300000
        if not (1 <= channels <= 56 and 1 <= width <= limit and 1 <= height <= limit):
            raise InputError(f"implausible header: {width}x{height}, {channels} channels")
        if depth not in (1, 8, 16, 32) or mode not in MODE_NAMES:
            raise InputError(f"unsupported depth {depth} or colour mode {mode}")
        has_composite = True
        pos = 26
        # Colour mode data, image resources, layer and mask information.
        for section in range(3):
            wide = section == 2 and version == 2
            raw = fh.read(8 if wide else 4)
            if len(raw) < (8 if wide else 4):
                raise InputError("truncated Photoshop file (section table)")
            length = int.from_bytes(raw, "big")
            start = pos + len(raw)
            if start + length > size:
                raise InputError("truncated Photoshop file (a section runs past the end)")
            if section == 1:
                has_composite = _has_composite(fh.read(length))
            elif section == 2 and length:
                try:
                    _check_layers(fh, version, limit, size)
                except InputError as exc:
                    layer_error = str(exc)
                fh.seek(start + length)
            else:
                fh.seek(length, os.SEEK_CUR)
            pos = start + length
        compression = fh.read(2)
        if len(compression) < 2 or int.from_bytes(compression, "big") > 3:
            raise InputError("truncated or corrupt Photoshop file (merged image data)")
    return PsdHeader(version, channels, width, height, depth, mode, has_composite, layer_error)


def _check_layers(fh: Any, version: int, limit: int, size: int) -> None:
    """Walk the layer records: plausible rectangles, channel data inside the section.

    Pillow reads the merged image without looking at the layers; this catches damaged layer
    tables (fuzzed files with inverted or 2**31-pixel layer rectangles) that psd-tools rejects,
    so the fast path and psd-tools agree on what is corrupt. Only the records are read; the
    layers' pixel data that follows them (often most of the file) is skipped.
    """
    wide = 8 if version == 2 else 4
    raw = fh.read(wide)
    info_length = int.from_bytes(raw, "big") if len(raw) == wide else 0
    if info_length < 2:
        return
    if fh.tell() + info_length > size:
        raise InputError("truncated Photoshop file (layer information)")
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        if pos + n > info_length:
            raise InputError("corrupt Photoshop file (layer records run past their section)")
        pos += n
        data: bytes = fh.read(n)
        if len(data) < n:  # pragma: no cover - the section was checked against the file size
            raise InputError("truncated Photoshop file (layer information)")
        return data

    count = abs(int.from_bytes(read(2), "big", signed=True))
    channel_bytes = 0
    for _ in range(count):
        top, left, bottom, right, channels = struct.unpack(">iiiiH", read(18))
        if bottom < top or right < left or bottom - top > limit or right - left > limit:
            raise InputError(f"corrupt layer rectangle ({left},{top})-({right},{bottom})")
        if channels > 56:
            raise InputError(f"corrupt layer record ({channels} channels)")
        table = read(channels * (2 + wide))
        for ch in range(channels):
            at = ch * (2 + wide) + 2
            channel_bytes += int.from_bytes(table[at : at + wide], "big")
        if read(12)[:4] != b"8BIM":
            raise InputError("corrupt layer record (no blend-mode signature)")
        extra = int.from_bytes(read(4), "big")
        if pos + extra > info_length:
            raise InputError("corrupt Photoshop file (layer records run past their section)")
        fh.seek(extra, os.SEEK_CUR)
        pos += extra
    if pos + channel_bytes > info_length:
        raise InputError("corrupt Photoshop file (layer channel data runs past its section)")


def _has_composite(resources: bytes) -> bool:
    """Read "has real merged data" from the version-info resource (True when absent).

    As in psd-tools, the last resource with the id wins.
    """
    pos, found = 0, True
    while pos + 12 <= len(resources) and resources[pos : pos + 4] == b"8BIM":
        ident = int.from_bytes(resources[pos + 4 : pos + 6], "big")
        name_len = resources[pos + 6]
        pos += 6 + ((name_len + 2) & ~1)
        length = int.from_bytes(resources[pos : pos + 4], "big")
        pos += 4
        if ident == _VERSION_INFO and length >= 5 and pos + 5 <= len(resources):
            found = bool(resources[pos + 4])
        pos += (length + 1) & ~1
    return found
