"""PDF and the other formats MuPDF renders well (XPS, EPUB, CBZ, FB2, SVG), through PyMuPDF.

Pages are rendered directly at the zoom that fits the requested box, never at full resolution
and then shrunk (MuPDF then decodes embedded images subsampled, so a thumbnail of a page holding
a giant image stays cheap). Tiles of oversized pages are rendered from one display list per page,
so the page's content is interpreted once, not once per tile. MuPDF's messages are kept off
stdout (MuPDF prints warnings and errors there by default) and logged instead. MuPDF never
executes JavaScript or actions and ignores external images in SVG, so
documents cannot reach the network or other local files from here.

Damage that PDF readers work around is worked around here too (:mod:`converters.pdf_repair`): a
page tree with a wrong ``/Count`` or a loop is rebuilt in memory and the document's page count
reported as unknown; a PDF that encrypts only its embedded files is read without a password.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import PDF, PDF_FILETYPES
from previewer.converters.pdf_repair import (
    content_is_unencrypted,
    page_tree_damaged,
    repair_page_tree,
    unencrypted_copy,
)
from previewer.errors import EncryptedError, EngineError, InputError, LimitExceededError
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["PdfConverter"]

log = logging.getLogger(__name__)


@functools.cache
def _pymupdf() -> Any:
    """Import PyMuPDF once and route everything it would print on stdout to the logger.

    MuPDF's warnings and errors are printed on stdout unless display is turned off; they are
    then only collected (``TOOLS.mupdf_warnings()``) and :meth:`PdfDocument._flush_warnings`
    logs them. PyMuPDF 1.28 also prints by itself, whatever those switches say: opening an SVG
    converts it to PDF once as a sanity check and prints that conversion's warnings
    (``svg: ignoring external image ...``) through ``pymupdf.message()``, which writes to
    ``sys.stdout`` by default. ``set_messages``/``set_log`` send those lines to the logger too.
    """
    import pymupdf

    pymupdf.TOOLS.mupdf_display_warnings(False)  # type: ignore[no-untyped-call]
    pymupdf.TOOLS.mupdf_display_errors(False)  # type: ignore[no-untyped-call]
    to_log: dict[str, Any] = {"pylogging_logger": log, "pylogging_level": logging.DEBUG}
    pymupdf.set_messages(**to_log)  # type: ignore[no-untyped-call]
    pymupdf.set_log(**to_log)  # type: ignore[no-untyped-call]
    return pymupdf


def _openable(source: Path, ctx: ConvertContext) -> str:
    """Return a name MuPDF can open.

    MuPDF takes file names as UTF-8, so a name that is not valid UTF-8 (a legal POSIX file
    name) is reached through an ASCII symlink in the work directory instead.
    """
    name = str(source)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        link = ctx.workdir / "input"
        link.symlink_to(source.absolute())
        return str(link)
    return name


class PdfConverter(BaseConverter):
    """Renders PDF, XPS, EPUB, CBZ, FB2 and SVG pages with PyMuPDF."""

    name: ClassVar[str] = PDF.name
    mime_types: ClassVar[frozenset[str]] = PDF.mime_types
    priority: ClassVar[int] = PDF.priority
    sandboxed: ClassVar[bool] = False

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Report whether PyMuPDF imports, and its MuPDF version."""
        try:
            pymupdf = _pymupdf()
        except Exception as exc:  # noqa: BLE001 - never raises, by contract
            return Availability(
                False, "PyMuPDF", reason=f"cannot import pymupdf ({exc}); pip install pymupdf"
            )
        return Availability(
            True, "PyMuPDF", version=f"{pymupdf.VersionBind} (MuPDF {pymupdf.VersionFitz})"
        )

    def open(self, source: Path, ctx: ConvertContext) -> PdfDocument:
        """Open ``source`` as the type sniffed into ``ctx.mime``.

        A PDF whose page tree is damaged is opened with the pages that can be found (its page
        count is then unknown: ``page_count_known`` is False).

        Raises:
            InputError: Empty, corrupt or pageless document.
            EncryptedError: Encrypted and the password (if any) does not open it.
        """
        pymupdf = _pymupdf()
        filetype = PDF_FILETYPES.get(ctx.mime, "pdf")
        pymupdf.TOOLS.mupdf_warnings(reset=True)
        doc = _open(pymupdf, _openable(source, ctx), filetype)
        damage = ""
        try:
            if doc.needs_pass:
                doc = _unlock(pymupdf, doc, source, ctx)
            if filetype == "epub":
                doc.layout(width=400, height=600)
            count, damage = _count_pages(pymupdf, doc)
            if damage:
                ctx.log.info("page tree rebuilt (%s): %d pages found", damage, count)
        except BaseException:
            doc.close()
            raise
        finally:
            _flush_warnings(ctx)
        return PdfDocument(doc, count, ctx, damage=damage)


def _open(pymupdf: Any, name: str, filetype: str) -> Any:
    try:
        return pymupdf.open(name, filetype=filetype)
    except pymupdf.EmptyFileError as exc:
        raise InputError("file is empty") from exc
    except pymupdf.FileDataError as exc:
        raise InputError(f"not a readable {filetype.upper()} file: {exc}") from exc
    except (RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
        raise InputError(f"cannot open {filetype.upper()}: {exc}") from exc


def _unlock(pymupdf: Any, doc: Any, source: Path, ctx: ConvertContext) -> Any:
    """Return ``doc`` authenticated, or an equivalent document that needs no password.

    The password given is tried, then the empty user password (AES-256 files with only an owner
    password open with it). A file that encrypts only its embedded files opens from a copy
    without ``/Encrypt``: its pages are not encrypted, and poppler draws them without asking.
    """
    for password in dict.fromkeys((ctx.password or "", "")):
        if doc.authenticate(password):
            return doc
    if content_is_unencrypted(doc):
        copy = unencrypted_copy(doc, source, ctx.workdir)
        try:
            opened = _open(pymupdf, str(copy), "pdf") if copy is not None else None
        except InputError as exc:  # the copy did not work out: the file stays encrypted
            ctx.log.debug("copy without /Encrypt does not open: %s", exc)
            opened = None
        if opened is not None and not opened.needs_pass:
            ctx.log.info("only the embedded files are encrypted; the pages need no password")
            doc.close()
            return opened
        if opened is not None:
            opened.close()
    raise EncryptedError(
        "document is encrypted and needs a password"
        if not ctx.password
        else "document is encrypted and the password is wrong",
        hint="pass the password with --password" if not ctx.password else None,
    )


def _count_pages(pymupdf: Any, doc: Any) -> tuple[int, str]:
    """Return the number of pages that can be loaded and what was wrong with the page tree.

    The damage is "" for a sound document. For a PDF whose ``/Count`` MuPDF rejects, that says
    no pages although some are there, or whose page map MuPDF cannot build (a loop in ``/Kids``,
    a kid that is not a page), the tree is rebuilt in memory (:func:`repair_page_tree`) and the
    pages found are counted.

    Raises:
        InputError: No page can be found.
    """
    damage = ""
    try:
        count = doc.page_count
    except (RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
        if not doc.is_pdf:
            raise InputError(f"broken page tree: {exc}") from exc
        damage = f"broken page tree ({exc})"
    else:
        if doc.is_pdf and count < 1:
            damage = f"the page tree declares {count} pages"
        elif doc.is_pdf:
            # Loading page 1 builds MuPDF's page map, which is where a loop in /Kids shows.
            with contextlib.suppress(RuntimeError, pymupdf.mupdf.FzErrorBase):
                doc.load_page(0)  # another failure of page 1 is reported when it is rendered
            damage = page_tree_damaged(pymupdf.TOOLS.mupdf_warnings(reset=False))
    if damage:
        try:
            found = repair_page_tree(doc)
            count = doc.page_count if found else 0
        except (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase) as exc:
            raise InputError(f"{damage}; it cannot be repaired: {exc}") from exc
        if found < 1:
            raise InputError(f"document has no pages ({damage})")
    if count < 1:
        raise InputError("document has no pages")
    return count, damage


def _flush_warnings(ctx: ConvertContext) -> None:
    """Log (and clear) the warnings and errors MuPDF collected instead of printing them."""
    warnings = _pymupdf().TOOLS.mupdf_warnings(reset=True)
    if warnings:
        ctx.log.debug("MuPDF: %s", warnings)


class PdfDocument(BaseDocument):
    """An open PyMuPDF document."""

    units: Literal["pt", "px"] = "pt"

    def __init__(self, doc: Any, page_count: int, ctx: ConvertContext, *, damage: str = "") -> None:
        self._doc = doc
        self._ctx = ctx
        self.page_count = page_count
        self.page_count_known = not damage
        self._damage = damage
        self._display: tuple[int, Any] | None = None

    def _page(self, index: int) -> Any:
        pymupdf = _pymupdf()
        try:
            return self._doc.load_page(index)
        except (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase) as exc:
            raise InputError(f"page {index + 1} cannot be loaded: {exc}") from exc

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the displayed page size in points (after /Rotate).

        Raises:
            InputError: The page has no area (an SVG of width 0, a comic-book image that does
                not decode: MuPDF 1.28 gives it an empty or inverted box).
        """
        rect = self._page(index).rect
        width, height = float(rect.width), float(rect.height)
        if not (0 < width < math.inf and 0 < height < math.inf):
            raise InputError(f"page {index + 1} has no area ({width:g} x {height:g} pt)")
        return width, height

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Render page ``index`` at ``scale`` pixels per point, on white, as RGB.

        With ``clip``, the result covers exactly the device pixels from ``round(clip * scale)``,
        so tiles whose clips come from whole pixel rows and columns abut without seams.
        """
        from PIL import Image

        pymupdf = _pymupdf()
        matrix = pymupdf.Matrix(scale, scale)
        try:
            if clip is None:
                pix = self._page(index).get_pixmap(
                    matrix=matrix, alpha=False, colorspace=pymupdf.csRGB
                )
            else:
                box = tuple(round(c * scale) for c in clip)
                # Half a pixel of margin: MuPDF rounds the device box in single precision, which
                # at 20,000+ px can lose or add an edge row; the pixmap's origin says where it is.
                pad = 0.5 / scale
                rect = pymupdf.Rect(clip[0] - pad, clip[1] - pad, clip[2] + pad, clip[3] + pad)
                pix = self._display_list(index).get_pixmap(
                    matrix=matrix, alpha=False, colorspace=pymupdf.csRGB, clip=rect
                )
        except pymupdf.mupdf.FzErrorBase as exc:
            text = str(exc)
            if "large" in text.lower() or "limit" in text.lower():
                raise LimitExceededError(f"page {index + 1} too large to render: {text}") from exc
            raise EngineError(f"MuPDF failed to render page {index + 1}: {text}") from exc
        except RuntimeError as exc:
            raise EngineError(f"MuPDF failed to render page {index + 1}: {exc}") from exc
        finally:
            if clip is not None:
                # MuPDF's store keeps the decoded images of the page (256 MB by default); a
                # giant page's would pile up tile after tile, so drop them after each tile.
                pymupdf.TOOLS.store_shrink(100)
            self._flush_warnings()
        image = Image.frombuffer(
            "RGB", (pix.width, pix.height), pix.samples_mv, "raw", "RGB", pix.stride, 1
        )
        if clip is None:
            return image.copy()
        x0, y0, x1, y1 = box
        if pix.x <= x0 and pix.y <= y0 and pix.x + pix.width >= x1 and pix.y + pix.height >= y1:
            return image.crop((x0 - pix.x, y0 - pix.y, x1 - pix.x, y1 - pix.y))
        canvas = Image.new("RGB", (x1 - x0, y1 - y0), "white")  # the clip leaves the page
        canvas.paste(image, (pix.x - x0, pix.y - y0))
        return canvas

    def _display_list(self, index: int) -> Any:
        """Return page ``index``'s display list, kept while tiles of that page are rendered."""
        if self._display is None or self._display[0] != index:
            self._display = None
            pymupdf = _pymupdf()
            try:
                self._display = (index, self._page(index).get_displaylist())
            except (RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
                raise EngineError(f"MuPDF failed to interpret page {index + 1}: {exc}") from exc
        return self._display[1]

    def render_png(self, index: int, *, size: tuple[int, int]) -> bytes | None:
        """Render page ``index`` to exactly ``size`` pixels and encode it as PNG with MuPDF.

        The optional fast path of the converter contract: a one-size preview needs no Pillow.

        Returns:
            The PNG bytes, or None if MuPDF's pixel rounding missed ``size`` or ``size`` exceeds
            the tile budget (``max_tile_pixels``: the caller then renders in tiles).
        """
        if size[0] * size[1] > self._ctx.limits.max_tile_pixels:
            return None
        pymupdf = _pymupdf()
        width, height = self.page_size(index)
        page = self._page(index)
        try:
            pix = page.get_pixmap(
                matrix=pymupdf.Matrix(size[0] / width, size[1] / height),
                alpha=False,
                colorspace=pymupdf.csRGB,
            )
        except (RuntimeError, pymupdf.mupdf.FzErrorBase):
            return None  # the regular path reports the error properly
        finally:
            self._flush_warnings()
        if (pix.width, pix.height) != size:
            return None
        return bytes(pix.tobytes("png"))

    def metadata(self) -> dict[str, Any]:
        """Return the document's format, encryption and title."""
        meta = self._doc.metadata or {}
        facts = {
            "format": meta.get("format") or "",
            "encrypted": bool(self._doc.is_encrypted),
            "title": meta.get("title") or "",
        }
        if self._damage:
            facts["page_tree"] = f"damaged: {self._damage}; {self.page_count} found"
        return facts

    def text(self, *, max_pages: int, max_chars: int) -> str | None:
        """Return the text layer of the first ``max_pages`` pages (MuPDF's plain text).

        Pages are separated by form feeds; reading stops once ``max_chars`` are read.
        """
        pymupdf = _pymupdf()
        parts: list[str] = []
        total = 0
        try:
            for index in range(min(self.page_count, max_pages)):
                found = str(self._page(index).get_text("text"))
                parts.append(found)
                total += len(found) + 1
                if total > max_chars:
                    break
        except (RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
            raise EngineError(f"MuPDF failed to read the text: {exc}") from exc
        finally:
            self._flush_warnings()
        return "\f".join(parts)

    def _flush_warnings(self) -> None:
        _flush_warnings(self._ctx)

    def close(self) -> None:
        """Close the MuPDF document."""
        self._display = None
        if self._doc is not None:
            self._doc.close()
            self._doc = None
