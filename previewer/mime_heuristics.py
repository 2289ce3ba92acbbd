"""Content heuristics beyond signatures: PDFs with a damaged header, camera RAW, PICT.

Each answers a question a plain signature cannot: is this header-less file a PDF a reader would
repair, is this TIFF really a camera's RAW file (whose first image is only a thumbnail), is this
signature-less file named ``.pct`` a PICT. The signatures of the RAW formats that have their own
(CRW, CR3, RAF, ORF, RW2, MRW, X3F) are here too, next to the TIFF-based ones.
:mod:`previewer.mime` calls them.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "RAW_TYPES",
    "camera_raw",
    "damaged_pdf",
    "mpeg_ts",
    "pdf_structure",
    "picture_hint",
    "raw_signature",
    "raw_type",
    "tiff_reader",
]

# --------------------------------------------------------------------------- damaged PDFs

_PDF_OBJECT = re.compile(rb"(?m)^[ \t\r\f\0]*\d{1,10}[ \t\r\n]+\d{1,5}[ \t\r\n]+obj\b")
_PDF_END = (b"%%EOF", b"startxref", b"trailer")


def damaged_pdf(path: Path, head: bytes) -> str | None:
    """Return ``application/pdf`` for a PDF whose ``%PDF-`` header is damaged or missing.

    PDF readers do not need the header: MuPDF (like mutool and poppler) rebuilds the
    cross-reference table from the objects it finds. A file is taken for such a PDF when an
    indirect object (``1 0 obj``) starts a line in its first bytes and its end has the trailer
    structure (``%%EOF``, ``startxref`` or ``trailer``); the converter then reports it as a bad
    input if MuPDF cannot repair it after all.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 1024))
            tail = fh.read()
    except OSError:
        return None
    return "application/pdf" if pdf_structure(head, tail) else None


def pdf_structure(head: bytes, tail: bytes) -> bool:
    """Return True if ``head`` starts a line with an indirect object and ``tail`` ends a PDF."""
    return _PDF_OBJECT.search(head) is not None and any(word in tail for word in _PDF_END)


# --------------------------------------------------------------------------- camera RAW

_DNG_VERSION = 50706
_MAKE, _NEW_SUBFILE_TYPE, _PHOTOMETRIC, _SUB_IFDS = 271, 254, 262, 330
_CFA_PHOTOMETRIC = frozenset({32803, 34892})  # CFA, LinearRaw (DNG)

# Camera makers (TIFF Make, lower case, prefix) -> the RAW type their TIFF-based files have.
_RAW_MAKERS: tuple[tuple[str, str], ...] = (
    ("nikon", "image/x-nikon-nef"),
    ("sony", "image/x-sony-arw"),
    ("eastman kodak", "image/x-kodak-kdc"),
    ("kodak", "image/x-kodak-kdc"),
    ("canon", "image/x-canon-cr2"),
    ("pentax", "image/x-pentax-pef"),
    ("ricoh", "image/x-pentax-pef"),
    ("samsung", "image/x-samsung-srw"),
    ("hasselblad", "image/x-hasselblad-3fr"),
    ("mamiya", "image/x-mamiya-mef"),
    ("seiko epson", "image/x-epson-erf"),
    ("leaf", "image/x-leaf-mos"),
    ("phase one", "image/x-phaseone-iiq"),
    ("olympus", "image/x-olympus-orf"),
    ("panasonic", "image/x-panasonic-raw"),
    ("fujifilm", "image/x-fuji-raf"),
)
# RAW formats that are not TIFF files (or TIFF with another magic number): their signatures.
_RAW_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"FUJIFILMCCD-RAW", "image/x-fuji-raf"),
    (6, b"HEAPCCDR", "image/x-canon-crw"),  # after "II" and the header length
    (0, b"IIRO", "image/x-olympus-orf"),
    (0, b"IIRS", "image/x-olympus-orf"),
    (0, b"MMOR", "image/x-olympus-orf"),
    (0, b"IIU\0", "image/x-panasonic-rw2"),
    (0, b"\0MRM", "image/x-minolta-mrw"),
    (0, b"FOVb", "image/x-sigma-x3f"),
)

RAW_TYPES = frozenset(
    {"image/x-adobe-dng", "image/x-dcraw", "image/x-canon-cr3"}
    | {t for _m, t in _RAW_MAKERS}
    | {t for _o, _s, t in _RAW_SIGNATURES}
)
"""Camera RAW types: TIFF containers whose first image is only a thumbnail of the photo, and
the RAW formats recognised by their own signatures (CRW, CR3, RAF, ORF, RW2, MRW, X3F)."""


def raw_signature(head: bytes) -> str | None:
    """Return the camera RAW type of a file by its signature, for RAW formats that have one.

    Checked before the TIFF signature: ORF and RW2 are TIFF-structured but carry their own
    magic numbers, and CR3 is an ISO base media file (brand ``crx``).
    """
    for offset, signature, mime in _RAW_SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            if offset == 6 and head[:2] not in (b"II", b"MM"):
                continue
            return mime
    if head[4:8] == b"ftyp" and head[8:12] == b"crx ":
        return "image/x-canon-cr3"
    return None


_RAW_READ = 1 << 16


def camera_raw(path: Path, head: bytes) -> str | None:
    """Return the camera RAW type of a TIFF-structured file, or None for an ordinary TIFF."""
    with contextlib.ExitStack() as stack:
        handle: list[BinaryIO] = []

        def read(offset: int, size: int) -> bytes:
            if offset + size <= len(head):
                return head[offset : offset + size]
            if not handle:  # tags past the first 8 KiB: rare, read them from the file
                handle.append(stack.enter_context(open(path, "rb")))
            handle[0].seek(offset)
            return handle[0].read(size)

        try:
            return raw_type(read)
        except OSError:
            return None
    return None  # pragma: no cover - mypy: ExitStack may swallow exceptions


def tiff_reader(data: bytes) -> Callable[[int, int], bytes]:
    """Return a ``read(offset, size)`` over ``data`` alone, for :func:`raw_type`."""
    return lambda offset, size: data[offset : offset + size]


def raw_type(read: Callable[[int, int], bytes]) -> str | None:
    """Tell camera RAW files from TIFF images by the tags of the first IFD.

    Camera RAW files (DNG, NEF, ARW, KDC, CR2, PEF, ...) are TIFF containers whose first image is
    usually a small preview (a 160 x 120 or 96 x 64 thumbnail) and whose photo is undemosaiced
    sensor data in a sub-IFD; a TIFF decoder "converts" them as the thumbnail. They are: CR2
    (``CR`` at offset 8), files with ``DNGVersion`` (tag 50706), and files whose ``Make`` is a
    camera maker and whose first IFD holds sensor data (PhotometricInterpretation CFA or
    LinearRaw), is a reduced-resolution image (NewSubfileType 1) or points at sub-IFDs.
    A scanner's or editor's TIFF naming a camera maker has none of these.
    """
    header = read(0, 16)
    if len(header) < 8 or header[:2] not in (b"II", b"MM"):
        return None
    order = "<" if header[:2] == b"II" else ">"
    if struct.unpack(order + "H", header[2:4])[0] != 42:
        return None  # BigTIFF: no camera writes it
    if header[8:10] == b"CR":
        return "image/x-canon-cr2"
    (ifd,) = struct.unpack(order + "I", header[4:8])
    raw = read(ifd, 2)
    if len(raw) < 2:
        return None
    (count,) = struct.unpack(order + "H", raw)
    entries = read(ifd + 2, 12 * min(count, 512))
    tags: dict[int, tuple[int, int, bytes]] = {}
    for start in range(0, len(entries) - 11, 12):
        tag, kind, n = struct.unpack(order + "HHI", entries[start : start + 8])
        tags[tag] = (kind, n, entries[start + 8 : start + 12])
    if _DNG_VERSION in tags:
        return "image/x-adobe-dng"
    make = _ascii(read, order, tags.get(_MAKE)).lower()
    if not make:
        return None
    sensor = (
        _SUB_IFDS in tags
        or _short(order, tags.get(_PHOTOMETRIC)) in _CFA_PHOTOMETRIC
        or _short(order, tags.get(_NEW_SUBFILE_TYPE)) == 1
    )
    if not sensor:
        return None
    for prefix, mime in _RAW_MAKERS:
        if make.startswith(prefix):
            return mime
    return None


def _ascii(
    read: Callable[[int, int], bytes], order: str, entry: tuple[int, int, bytes] | None
) -> str:
    if entry is None or entry[0] != 2:
        return ""
    kind, count, value = entry
    count = min(count, 256)
    data = value[:count] if count <= 4 else read(struct.unpack(order + "I", value)[0], count)
    return data.split(b"\0", 1)[0].decode("latin-1").strip()


def _short(order: str, entry: tuple[int, int, bytes] | None) -> int | None:
    if entry is None:
        return None
    kind, _count, value = entry
    if kind == 3:
        return int(struct.unpack(order + "H", value[:2])[0])
    if kind == 4:
        return int(struct.unpack(order + "I", value)[0])
    return None


# --------------------------------------------------------------------------- PICT

_INCONCLUSIVE = frozenset({"application/octet-stream", "text/plain"})


def picture_hint(mime: str, head: bytes, name: str) -> str:
    """Return ``image/x-pict`` for a file named ``.pct``/``.pict`` that content did not settle.

    PICT has no magic number: a 512-byte header of application data, then the picture size and
    frame, then (version 2) the opcodes ``0011 02FF`` at offset 522 or (version 1) ``1101``.
    The name is needed to suspect it: the type is taken when libmagic recognised nothing (or
    only text), or when the version opcode is where PICT has it.
    """
    if os.path.splitext(name)[1].lower() not in (".pct", ".pict"):
        return mime
    if mime in _INCONCLUSIVE or _pict_version(head):
        return "image/x-pict"
    return mime


def _pict_version(head: bytes) -> bool:
    return head[522:526] == b"\x00\x11\x02\xff" or head[522:524] == b"\x11\x01"


# --------------------------------------------------------------------------- MPEG transport streams


def mpeg_ts(head: bytes) -> bool:
    """Return True for an MPEG transport stream: a ``0x47`` sync byte every 188 bytes.

    libmagic names none (``application/octet-stream``). M2TS (Blu-ray, AVCHD) prefixes each
    packet with a 4-byte time code (192-byte packets). At least 3 and up to 8 packets must line
    up, so a text file that happens to start with ``G`` is not taken for one.
    """
    for size, offset in ((188, 0), (192, 4)):
        packets = min(8, (len(head) - offset) // size)
        if packets >= 3 and all(head[offset + i * size] == 0x47 for i in range(packets)):
            return True
    return False
