"""EXIF and GPS facts of an input as JSON-safe dicts, read by Pillow, or exiftool for RAW and video.

:func:`read_exif` returns two dicts, the EXIF tags by name and the GPS tags, kept apart so that a
caller that does not ask for the location never gets it. Still images Pillow can read (JPEG,
TIFF, WebP, PNG) are read by Pillow without decoding their pixels; a PNG's ``eXIf`` chunk is
found by walking the chunk headers, because Pillow 13 decodes the whole image to look for it
when it comes after the pixel data (1 GB for a 16k x 16k PNG, see ENGINES.md). Camera RAW files
and videos go to ``exiftool -j -n`` when it is installed (isolated, under the timeout, like
every engine program); without it, Pillow reads DNG files (TIFF), other RAW files and videos
have no EXIF.

Values are made JSON-safe: rationals become floats, short byte strings text (when printable)
or hex, long binary blobs (maker notes, thumbnails) are dropped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from previewer.budgets import Limits
from previewer.converters import CAMERA_RAW_TYPES
from previewer.errors import EngineError, InputError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["EXIFTOOL", "RAW_TYPES", "exiftool_path", "read_exif", "uses_exiftool"]

log = logging.getLogger(__name__)

EXIFTOOL = "exiftool"
"""The program read for RAW files and videos (Debian: ``libimage-exiftool-perl``)."""

RAW_TYPES = CAMERA_RAW_TYPES
"""Camera RAW types (the RAW converter's) whose EXIF is read with exiftool when present."""

PILLOW_FORMATS: dict[str, tuple[str, ...]] = {
    "image/jpeg": ("JPEG", "MPO"),
    "image/pjpeg": ("JPEG", "MPO"),
    "image/tiff": ("TIFF",),
    "image/webp": ("WEBP",),
    "image/x-adobe-dng": ("TIFF",),
}
"""Types whose EXIF Pillow reads, with the decoders allowed to open them (never sniffing)."""

MAX_BYTES_VALUE = 64
"""Longest byte string kept (as text or hex); longer ones (maker notes, previews) are dropped."""

MAX_ITEMS = 256
"""Longest list kept."""

# Not facts about the file's content: the path, the name, the reader's clock.
_EXIFTOOL_DROPPED = frozenset(
    {
        "SourceFile",
        "ExifToolVersion",
        "FileName",
        "Directory",
        "FilePermissions",
        "FileModifyDate",
        "FileAccessDate",
        "FileInodeChangeDate",
        "FileSize",
    }
)

# Pointers to other IFDs and raw blobs, not facts.
_SKIPPED_TAGS = frozenset({0x8769, 0x8825, 0xA005, 0x927C, 0x02BC, 0x83BB, 0x8773, 0x014A})

_DROP = object()


def uses_exiftool(mime: str) -> bool:
    """Tell whether the EXIF of ``mime`` files is read with exiftool (when installed).

    Args:
        mime: The sniffed MIME type.

    Returns:
        True for camera RAW types and videos.
    """
    return mime in RAW_TYPES or mime.startswith("video/")


def exiftool_path() -> str | None:
    """Return exiftool's absolute path, or None when it is not installed."""
    return shutil.which(EXIFTOOL, path="/usr/local/bin:/usr/bin:/bin")


def read_exif(
    path: Path, mime: str, limits: Limits, workdir: Path
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Return the EXIF tags and the GPS tags of ``path`` (each None when it has none).

    Args:
        path: The input file.
        mime: Its sniffed MIME type.
        limits: Budgets (``timeout`` bounds exiftool; ``allow_unisolated`` as for engines).
        workdir: A private directory exiftool may run in.

    Returns:
        ``(exif, gps)``: tag name -> JSON-safe value. ``gps`` also has ``latitude`` and
        ``longitude`` in signed decimal degrees (and ``altitude`` in metres) when known.

    Raises:
        EngineError: exiftool failed.
        EngineTimeoutError: exiftool ran past the timeout.
    """
    if uses_exiftool(mime):
        program = exiftool_path()
        if program is not None:
            return _from_exiftool(program, path, limits, workdir)
    formats = PILLOW_FORMATS.get(mime)
    if mime == "image/png":
        data = png_exif_chunk(path)
        return _from_pillow_bytes(data) if data else (None, None)
    if formats is None:
        return None, None
    return _from_pillow(path, formats)


def png_exif_chunk(path: Path) -> bytes | None:
    """Return the payload of a PNG's ``eXIf`` chunk, walking chunk headers only.

    Args:
        path: A PNG file.

    Returns:
        The raw EXIF (a TIFF header and IFDs), or None when there is no such chunk.
    """
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            size = os.fstat(fh.fileno()).st_size
            pos = 8
            while pos + 8 <= size:
                header = fh.read(8)
                if len(header) < 8:
                    return None
                length, kind = struct.unpack(">I4s", header)
                if kind == b"eXIf":
                    return fh.read(min(length, 1 << 20))
                if kind == b"IEND":
                    return None
                pos += 12 + length
                fh.seek(pos)
    except OSError:
        return None
    return None


def _from_pillow(
    path: Path, formats: tuple[str, ...]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path, formats=list(formats)) as image:
            return _from_exif(image.getexif())
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read the EXIF data: {exc}") from exc


def _from_pillow_bytes(data: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    from PIL import Image

    exif = Image.Exif()
    try:
        exif.load(data)
    except (OSError, ValueError, SyntaxError, struct.error) as exc:
        raise InputError(f"cannot read the EXIF data: {exc}") from exc
    return _from_exif(exif)


def _from_exif(exif: Image.Exif) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    from PIL import ExifTags

    tags: dict[str, Any] = {}
    for ifd in (dict(exif), exif.get_ifd(ExifTags.IFD.Exif), exif.get_ifd(ExifTags.IFD.Interop)):
        for tag, value in ifd.items():
            if tag in _SKIPPED_TAGS:
                continue
            safe = json_value(value)
            if safe is not _DROP:
                tags[ExifTags.TAGS.get(tag, f"0x{tag:04X}")] = safe
    gps: dict[str, Any] = {}
    for tag, value in exif.get_ifd(ExifTags.IFD.GPSInfo).items():
        safe = json_value(value)
        if safe is not _DROP:
            gps[ExifTags.GPSTAGS.get(tag, f"0x{tag:04X}")] = safe
    _add_decimal_degrees(gps)
    return tags or None, gps or None


def _add_decimal_degrees(gps: dict[str, Any]) -> None:
    """Add signed ``latitude``/``longitude`` (degrees) and ``altitude`` (metres) to GPS tags."""
    for axis, negative in (("Latitude", "S"), ("Longitude", "W")):
        parts = gps.get(f"GPS{axis}")
        if isinstance(parts, list) and len(parts) == 3 and all(_number(p) for p in parts):
            value = parts[0] + parts[1] / 60 + parts[2] / 3600
            ref = gps.get(f"GPS{axis}Ref")
            gps[axis.lower()] = round(-value if ref == negative else value, 7)
    altitude = gps.get("GPSAltitude")
    if isinstance(altitude, (int, float)) and not isinstance(altitude, bool):
        below = gps.get("GPSAltitudeRef") in (1, "1", "01")
        gps["altitude"] = -altitude if below else altitude


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_value(value: Any) -> Any:
    """Return ``value`` (an EXIF value as Pillow gives it) as JSON-safe data, or ``_DROP``.

    Args:
        value: An int, float, rational, string, byte string, or tuple of these.

    Returns:
        The value: rationals as floats (None when the denominator is 0), byte strings of up to
        :data:`MAX_BYTES_VALUE` bytes as text when printable, else as hex; the module's drop
        marker for longer blobs and anything else.
    """
    from PIL import TiffImagePlugin

    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, TiffImagePlugin.IFDRational):
        if value.denominator == 0:
            return None
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "").strip()
    if isinstance(value, (bytes, bytearray)):
        if len(value) > MAX_BYTES_VALUE:
            return _DROP
        text = bytes(value).rstrip(b"\x00")
        if all(32 <= b < 127 for b in text):
            return text.decode("ascii").strip()
        return bytes(value).hex()
    if isinstance(value, (tuple, list)):
        if len(value) > MAX_ITEMS:
            return _DROP
        items = [json_value(v) for v in value]
        return _DROP if any(i is _DROP for i in items) else items
    return _DROP


def _from_exiftool(
    program: str, path: Path, limits: Limits, workdir: Path
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    from previewer import programs

    result = programs.run(
        [program, "-j", "-n", "-q", "-q", os.path.abspath(path)],
        timeout=limits.timeout,
        cwd=workdir,
        read=(path,),
        allow_unisolated=limits.allow_unisolated,
    )
    try:
        records = json.loads(result.stdout.decode("utf-8", "replace"))
    except ValueError as exc:
        raise EngineError(f"exiftool printed no JSON: {exc}") from exc
    record = records[0] if isinstance(records, list) and records else {}
    if not isinstance(record, Mapping):
        raise EngineError("exiftool printed an unexpected JSON shape")
    tags: dict[str, Any] = {}
    gps: dict[str, Any] = {}
    for key, value in record.items():
        name = str(key)
        if name in _EXIFTOOL_DROPPED or name.startswith("Error") or name.startswith("Warning"):
            continue
        if isinstance(value, (dict, list)) and len(json.dumps(value)) > 4096:
            continue
        if name.startswith("GPS"):
            gps[name] = value
        else:
            tags[name] = value
    if "GPSLatitude" in gps and _number(gps["GPSLatitude"]):  # -n: signed decimal already
        gps["latitude"] = gps["GPSLatitude"]
    if "GPSLongitude" in gps and _number(gps["GPSLongitude"]):
        gps["longitude"] = gps["GPSLongitude"]
    if "GPSAltitude" in gps and _number(gps["GPSAltitude"]):
        gps["altitude"] = gps["GPSAltitude"]
    return tags or None, gps or None
