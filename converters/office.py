"""Office documents (Word, Excel, PowerPoint, OpenDocument, RTF, ...) through LibreOffice.

The document is exported to a PDF in the conversion's work directory by a warm LibreOffice
(:mod:`previewer.converters.office_pool`) and that PDF is handed on with ``ctx.delegate``, so
pages are counted, sized and rendered exactly like any PDF. Before LibreOffice sees a file it is
checked here: an encrypted OOXML package (an OLE2 container with an ``EncryptedPackage``
stream) given without a password is tried with Excel's default password and fails as encrypted
otherwise, a broken or suspiciously expanding zip is refused (LibreOffice 7.4 spends minutes and
gigabytes on a 232 KB DOCX expanding to 69 MB). LibreOffice loads documents hidden, read-only,
with macros and link updates disabled, in a profile that blocks remote content.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import OFFICE, OFFICE_ENCRYPTED, OFFICE_OLE_GENERIC, OOXML
from previewer.errors import EngineError, InputError, LimitExceededError
from previewer.plugin import (
    Availability,
    BaseConverter,
    BaseDocument,
    Box,
    ConvertContext,
    Document,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["OfficeConverter"]

ZIP_MAX_TOTAL = 512 << 20
"""Refuse a zip-based document that expands to more than this many bytes."""
ZIP_MAX_RATIO = 100
ZIP_RATIO_FLOOR = 16 << 20
"""An entry over this size compressed more than ZIP_MAX_RATIO:1 is treated as a zip bomb."""

_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
DEFAULT_PASSWORD = "VelvetSweatshop"
"""Excel's built-in password: files "encrypted" with it open without asking (read-only
workbooks); LibreOffice 7.4 tries it itself for XLS but never sees an encrypted OOXML package
unless given a password."""
# LibreOffice opens CSV in Writer as plain text unless told to use Calc's CSV filter:
# separators comma, semicolon and tab; '"' quotes; UTF-8 (76); start at line 1.
_CSV_FILTER = ("Text - txt - csv (StarCalc)", "44/59/9,34,76,1")


class OfficeConverter(BaseConverter):
    """Converts Office and OpenDocument files to PDF with LibreOffice, then renders the PDF."""

    name: ClassVar[str] = OFFICE.name
    mime_types: ClassVar[frozenset[str]] = OFFICE.mime_types
    priority: ClassVar[int] = OFFICE.priority
    sandboxed: ClassVar[bool] = True
    warm_engine: ClassVar[bool] = True
    """Its engine is a warm LibreOffice outside this process, under the timeout: previewer
    converts in the calling process rather than a throw-away child, so LibreOffice stays up."""

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Report whether LibreOffice and python3-uno are installed, with LibreOffice's version."""
        try:
            from previewer.converters.office_engine import probe

            version, reason = probe()
        except Exception as exc:  # noqa: BLE001 - never raises, by contract
            return Availability(False, "LibreOffice", reason=f"cannot probe LibreOffice: {exc}")
        if version is None:
            return Availability(False, "LibreOffice", reason=reason)
        return Availability(True, "LibreOffice", version=version)

    def open(self, source: Path, ctx: ConvertContext) -> Document:
        """Export ``source`` to PDF with LibreOffice and open that PDF.

        Raises:
            EncryptedError: The document needs a password (none given or a wrong one).
            InputError: The file is corrupt or LibreOffice cannot load it.
            LimitExceededError: A zip-based document expands suspiciously (zip bomb).
            EngineTimeoutError: LibreOffice ran past ``ctx.limits.timeout``.
            EngineError: LibreOffice crashed or exported nothing.
        """
        from previewer.converters.office_pool import ENGINES

        source = source.resolve()
        password = _precheck(source, ctx)
        import_filter, options = _CSV_FILTER if ctx.mime == "text/csv" else (None, None)
        out = ctx.workdir / "document.pdf"
        ENGINES.convert(
            source,
            out,
            timeout=ctx.limits.timeout,
            password=password,
            asked=ctx.password is not None,
            import_filter=import_filter,
            filter_options=options,
            # Only the pages that will be rendered: page 1 of a 300-page report need not be
            # exported as 300 pages (page_count then counts the exported pages only).
            pages=f"1-{ctx.max_page}" if ctx.max_page is not None else None,
            memory=ctx.limits.max_memory,
            allow_unisolated=ctx.limits.allow_unisolated,
            # Typed by its name, or by a container: LibreOffice's detection decides what it
            # is, but data it can only read as text is not the document its name promises.
            no_text=not ctx.mime.startswith("text/"),
            meanwhile=_prewarm_pdf_engine,
        )
        if not out.is_file() or out.stat().st_size == 0:
            raise EngineError("LibreOffice reported success but wrote no PDF")
        pdf = ctx.delegate(out, "application/pdf")
        return OfficeDocument(pdf, ctx.mime, self.availability().version or "")


FORMAT_NAMES = {
    "application/msword": "Word 97-2003",
    OOXML + "wordprocessingml.document": "Word (OOXML)",
    "application/vnd.ms-excel": "Excel 97-2003",
    OOXML + "spreadsheetml.sheet": "Excel (OOXML)",
    "application/vnd.ms-powerpoint": "PowerPoint 97-2003",
    OOXML + "presentationml.presentation": "PowerPoint (OOXML)",
    "application/vnd.oasis.opendocument.text": "OpenDocument text",
    "application/vnd.oasis.opendocument.spreadsheet": "OpenDocument spreadsheet",
    "application/vnd.oasis.opendocument.presentation": "OpenDocument presentation",
    "application/vnd.oasis.opendocument.graphics": "OpenDocument drawing",
    "text/rtf": "RTF",
    "text/csv": "CSV",
    "application/vnd.wordperfect": "WordPerfect",
    "application/vnd.visio": "Visio",
    "application/vnd.ms-visio.drawing": "Visio (OOXML)",
    "application/x-mspublisher": "Publisher",
    "application/vnd.ms-wordml": "Word 2003 XML",
    "application/vnd.ms-excel.2003+xml": "Excel 2003 XML",
}


class OfficeDocument(BaseDocument):
    """The PDF LibreOffice exported, standing for the Office document it came from."""

    units: Literal["pt", "px"] = "pt"

    def __init__(self, pdf: Document, mime: str, version: str) -> None:
        self._pdf = pdf
        self._mime = mime
        self._version = version
        self.page_count = pdf.page_count
        self.page_count_known = pdf.page_count_known

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the page size in points, as LibreOffice laid the page out."""
        return self._pdf.page_size(index)

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Render page ``index`` of the exported PDF."""
        return self._pdf.render(index, scale=scale, clip=clip)

    def render_png(self, index: int, *, size: tuple[int, int]) -> bytes | None:
        """Encode page ``index`` of the exported PDF straight to a PNG (its fast path)."""
        return self._pdf.render_png(index, size=size)

    def metadata(self) -> dict[str, Any]:
        """Return the Office format and the LibreOffice version that laid it out."""
        return {
            "format": FORMAT_NAMES.get(self._mime, self._mime),
            "engine": f"LibreOffice {self._version}".strip(),
        }

    def text(self, *, max_pages: int, max_chars: int) -> str | None:
        """Return the text layer of the exported PDF (as LibreOffice laid the pages out)."""
        return self._pdf.text(max_pages=max_pages, max_chars=max_chars)

    def close(self) -> None:
        """Close the exported PDF."""
        self._pdf.close()


def _prewarm_pdf_engine() -> None:
    """Import PyMuPDF in a background thread while LibreOffice starts and converts.

    The exported PDF is rendered by the PDF converter, whose first use imports PyMuPDF (0.1 s
    or more); a one-off conversion waits for LibreOffice with a core to spare, so the import
    costs nothing there. It is started once the engine is spawned: earlier, the import holds
    the GIL while the engine is being set up and delays LibreOffice's start by about as much.
    A process that already imported it starts no thread.
    """
    if "pymupdf" in sys.modules:
        return

    def work() -> None:
        with contextlib.suppress(Exception):  # only a head start: the PDF converter reports
            importlib.import_module("pymupdf")

    threading.Thread(target=work, name="previewer-office-prewarm", daemon=True).start()


def _precheck(source: Path, ctx: ConvertContext) -> str | None:
    """Reject what must not reach LibreOffice (zip bombs); return the password to load with.

    An encrypted package opened without a password is tried with Excel's built-in default
    password (:data:`DEFAULT_PASSWORD`), as Excel and LibreOffice themselves do; LibreOffice
    then reports whether it needs another one.
    """
    if ctx.mime in OFFICE_ENCRYPTED or ctx.mime in OFFICE_OLE_GENERIC:
        if not ctx.password and (ctx.mime in OFFICE_ENCRYPTED or _has_encrypted_package(source)):
            return DEFAULT_PASSWORD
        return ctx.password
    with open(source, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if is_zip:
        _check_zip(source, ctx.mime)
    return ctx.password


def _has_encrypted_package(source: Path) -> bool:
    """True when an OLE2 file has an ``EncryptedPackage`` stream (an encrypted OOXML file)."""
    tail = b""
    with open(source, "rb") as fh:
        while chunk := fh.read(1 << 20):
            if _ENCRYPTED_STREAM in tail + chunk:
                return True
            tail = chunk[-len(_ENCRYPTED_STREAM) :]
    return False


def _check_zip(source: Path, mime: str) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(source) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InputError(f"corrupt document package: {exc}") from exc
    names = {info.filename for info in infos}
    if mime.startswith(OOXML) or "ms-" in mime:
        if "[Content_Types].xml" not in names:
            raise InputError("not an Office Open XML package (no [Content_Types].xml)")
    elif "opendocument" in mime and "mimetype" not in names and "content.xml" not in names:
        raise InputError("not an OpenDocument package (no content.xml)")
    total = 0
    for info in infos:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > ZIP_RATIO_FLOOR and ratio > ZIP_MAX_RATIO:
            raise LimitExceededError(
                f"zip bomb: {info.filename} expands {ratio:.0f}:1 to {info.file_size:,} bytes"
            )
    if total > ZIP_MAX_TOTAL:
        raise LimitExceededError(f"document expands to {total:,} bytes, over {ZIP_MAX_TOTAL:,}")
