"""MIME type sniffing from content; the file name's extension only breaks ties.

Signatures for the formats previewer's converters handle are checked first (precise and free of
libmagic's misreadings, such as ICO files taken for TGA); containers are looked into (a zip's
``mimetype`` entry or OOXML parts, an OLE2 file's stream names); libmagic (python-magic) answers
for everything else. The extension is consulted only when content leaves the type open: a bare
zip, OLE2 or XML container, or plain text (CSV is only CSV when named so).

The tables of types, extensions and refinements are in :mod:`previewer.mime_tables` (the
public ones are importable from here too).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from previewer.mime_heuristics import (
    RAW_TYPES,
    camera_raw,
    damaged_pdf,
    mpeg_ts,
    pdf_structure,
    picture_hint,
    raw_signature,
    raw_type,
    tiff_reader,
)
from previewer.mime_tables import (
    EXTENSIONS,
    GENERIC_TYPES,
    IMAGE_SUFFIXES,
    OFFICE_EXTENSIONS,
    OFFICE_INCONCLUSIVE,
    OOXML_PARTS,
    REFINABLE,
    text_by_name,
)

__all__ = ["GENERIC_TYPES", "RAW_TYPES", "sniff", "sniff_bytes"]

HEAD_BYTES = 8192
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

_FLAT_ODF = re.compile(rb'office:mimetype="(application/vnd\.oasis\.opendocument\.[a-z]+)"')
_HTML_DOCTYPE = re.compile(rb"<!doctype\s+html[\s>]", re.IGNORECASE)
_XML_ROOT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)[\s>/]")


def sniff(path: str | os.PathLike[str], name: str | None = None) -> str:
    """Return the MIME type of the file at ``path``, judged by its content.

    Args:
        path: The file to inspect (read, never modified).
        name: The name to take the extension from for tie-breaking (default: ``path``'s).

    Returns:
        A MIME type; ``"application/x-empty"`` for a zero-byte file and
        ``"application/octet-stream"`` when nothing is recognised.

    Raises:
        OSError: If the file cannot be read.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if not head:
        return "application/x-empty"
    mime = _from_signature(head)
    if mime == "application/zip":
        mime = _zip_type(path)
    elif mime == "image/tiff":
        mime = camera_raw(path, head) or mime
    elif mime is None:
        if not head.startswith(_OLE2_MAGIC):  # OLE2: libmagic reads its stream names
            mime = damaged_pdf(path, head)
        mime = mime or _libmagic(path)
    mime = picture_hint(_tie_break(mime, name or path.name), head, name or path.name)
    return _office_type(mime, head, path, name or path.name)


def sniff_bytes(head: bytes, name: str = "") -> str:
    """Return the MIME type judged from the first bytes of a file only (no container look-in).

    Args:
        head: The first bytes of the file (8 KiB is plenty).
        name: File name for tie-breaking.

    Returns:
        A MIME type, as :func:`sniff`.
    """
    if not head:
        return "application/x-empty"
    mime = _from_signature(head)
    if mime == "image/tiff":
        mime = raw_type(tiff_reader(head)) or mime
    elif mime is None:
        mime = "application/pdf" if pdf_structure(head, head) else _libmagic_buffer(head)
    return picture_hint(_tie_break(mime, name), head, name)


def _tie_break(mime: str, name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    candidate = EXTENSIONS.get(ext)
    if candidate and candidate in REFINABLE.get(mime, ()):
        return candidate
    return text_by_name(mime, ext) or mime


def _from_signature(head: bytes) -> str | None:  # noqa: C901 - a flat table of signatures
    raw = raw_signature(head)  # camera RAW formats with their own signatures (ORF, RW2, CR3...)
    if raw is not None:
        return raw
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "image/tiff"
    if head[:4] == b"8BPS" and head[4:6] in (b"\x00\x01", b"\x00\x02"):
        return "image/vnd.adobe.photoshop"
    if (
        head[:2] == b"BM"
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little")
        in (
            12,
            16,
            40,
            52,
            56,
            64,
            108,
            124,
        )
    ):
        return "image/bmp"
    if _is_ico(head):
        return "image/vnd.microsoft.icon"
    if b"%PDF-" in head[:1024]:
        return "application/pdf"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return None  # OLE2: libmagic reads the stream names (Word, Excel, PowerPoint, ...)
    other = _image_signature(head)
    if other is not None:
        return other
    if mpeg_ts(head):
        return "video/mp2t"
    if head.startswith(b"%!PS"):
        return "application/postscript"
    if head.startswith(b"\xc5\xd0\xd3\xc6"):
        return "application/postscript"  # EPS with a binary preview header
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"#EXTM3U"):
        return "application/vnd.apple.mpegurl"  # a playlist (HLS), not text to lay out
    if text.startswith(b"<"):
        return _xml_type(text)
    return None


_PNM = re.compile(rb"P[1-7][ \t\r\n#]")
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


def _image_signature(head: bytes) -> str | None:
    """Signatures of the raster formats the ImageMagick converter reads."""
    if head.startswith(b"gimp xcf "):
        return "image/x-xcf"
    if head.startswith(b"DDS |"):
        return "image/vnd-ms.dds"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n"):
        return "image/jp2"
    if head.startswith(b"\xff\x4f\xff\x51"):
        return "image/x-jp2-codestream"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in _HEIF_BRANDS:
            return "image/heic"
    if (
        head[:2] == b"\x01\xda"
        and head[2:3] in (b"\x00", b"\x01")
        and head[3:4] in (b"\x01", b"\x02")
    ):
        return "image/x-sgi"
    if _PNM.match(head):
        return {
            b"1": "image/x-portable-bitmap",
            b"4": "image/x-portable-bitmap",
            b"2": "image/x-portable-graymap",
            b"5": "image/x-portable-graymap",
            b"7": "image/x-portable-arbitrarymap",
        }.get(head[1:2], "image/x-portable-pixmap")
    if (
        head[:1] == b"\x0a"
        and head[1:2] in (b"\x00", b"\x02", b"\x03", b"\x04", b"\x05")
        and head[2:3] == b"\x01"
        and head[3:4] in (b"\x01", b"\x02", b"\x04", b"\x08")
    ):
        return "image/x-pcx"
    return None


def _is_ico(head: bytes) -> bool:
    if len(head) < 22 or head[:4] != b"\x00\x00\x01\x00":
        return False
    count = int.from_bytes(head[4:6], "little")
    if not 1 <= count <= 256:
        return False
    # First directory entry: reserved byte 0, planes 0 or 1, data offset past the directory.
    entry = head[6:22]
    offset = int.from_bytes(entry[12:16], "little")
    return (
        entry[3] == 0
        and int.from_bytes(entry[4:6], "little") in (0, 1)
        and offset >= 6 + 16 * count
    )


def _xml_type(text: bytes) -> str | None:
    if _HTML_DOCTYPE.match(text):
        return "text/html"
    pos = 0
    while True:
        match = _XML_ROOT.search(text, pos)
        if match is None:
            return "application/xml" if text.startswith(b"<?xml") else None
        start = match.start()
        # Skip declarations, processing instructions, comments and doctypes.
        if text[start + 1 : start + 2] in (b"?", b"!"):
            pos = start + 1
            continue
        root = match.group(1).lower()
        if root == b"svg":
            return "image/svg+xml"
        if root == b"fictionbook":
            return "application/x-fictionbook+xml"
        if root in (b"html", b"head", b"body"):
            return "text/html"
        if root == b"document":  # flat OpenDocument (.fodt, .fods, .fodp, .fodg)
            flat = _FLAT_ODF.search(text)
            if flat:
                return flat.group(1).decode() + "-flat-xml"
        return "application/xml"


def _zip_type(path: Path) -> str:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "mimetype" in names:
                declared = zf.read("mimetype")[:100].decode("ascii", "replace").strip()
                if re.fullmatch(r"[\w.+-]+/[\w.+-]+", declared):
                    return declared
            if "[Content_Types].xml" in names:
                for prefix, mime in OOXML_PARTS:
                    if any(n.startswith(prefix) for n in names):
                        return mime
                lowered = [n.lower() for n in names]
                if any(n.endswith(".fdseq") for n in lowered) or any(
                    n.startswith("documents/") and n.endswith(".fdoc") for n in lowered
                ):
                    return "application/vnd.ms-xpsdocument"
            files = [n for n in names if not n.endswith("/")]
            if files and all(n.lower().endswith(IMAGE_SUFFIXES) for n in files):
                return "application/vnd.comicbook+zip"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "application/zip"
    return "application/zip"


@functools.lru_cache(maxsize=1)
def _magic() -> object | None:
    try:
        import magic
    except ImportError:  # pragma: no cover - python-magic is a dependency
        return None
    try:
        return magic.Magic(mime=True)
    except Exception:  # noqa: BLE001 - libmagic missing or its database unreadable
        return None


def _libmagic(path: Path) -> str:
    detector = _magic()
    if detector is None:
        return "application/octet-stream"
    try:
        return str(detector.from_file(str(path)))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - libmagic's errors are untyped
        return "application/octet-stream"


def _libmagic_buffer(head: bytes) -> str:
    detector = _magic()
    if detector is None:
        return "application/octet-stream"
    try:
        return str(detector.from_buffer(head))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return "application/octet-stream"


_WORD_2003_XML = re.compile(rb"<(?:\w+:)?wordDocument[\s>]")
_EXCEL_2003_XML = re.compile(rb'<\?mso-application\s+progid="Excel\.Sheet"')


def _office_type(mime: str, head: bytes, path: Path, name: str) -> str:
    """Refine an inconclusive type to the Office type the content or the name suggests.

    Content first (a Visio package's ``visio/`` part, Word and Excel 2003 XML), then the name
    for containers and unrecognised data. Plain text keeps its type whatever its name says: a
    text file named ``.docx`` is text, not a document LibreOffice should guess at.
    """
    if mime not in OFFICE_INCONCLUSIVE:
        return mime
    if mime in ("application/xml", "text/xml"):
        if _WORD_2003_XML.search(head):
            return "application/vnd.ms-wordml"
        if _EXCEL_2003_XML.search(head):
            return "application/vnd.ms-excel.2003+xml"
    if mime == "application/zip" and _zip_has_prefix(path, "visio/"):
        return "application/vnd.ms-visio.drawing"
    ext = os.path.splitext(name)[1].lower()
    candidate = OFFICE_EXTENSIONS.get(ext)
    if candidate is None:
        return mime
    if mime == "application/zip" and candidate != "application/vnd.ms-visio.drawing":
        return mime
    return candidate


def _zip_has_prefix(path: Path, prefix: str) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.startswith(prefix) for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False
