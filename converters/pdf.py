"""PDF and the other formats MuPDF renders well (XPS, EPUB, CBZ, FB2, SVG), through PyMuPDF.

Pages are rendered directly at the zoom that fits the requested box, never at full resolution
and then shrunk (MuPDF then decodes embedded images subsampled, so a thumbnail of a page holding
a giant image stays cheap). Tiles of oversized pages are rendered from one display list per page,
so the page's content is interpreted once, not once per tile. MuPDF's messages are kept off
stdout (MuPDF prints warnings and errors there by default) and logged instead. MuPDF never
executes JavaScript or actions and ignores external images in SVG, so
documents cannot reach the network or other local files from here.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.errors import EncryptedError, EngineError, InputError, LimitExceededError
from previewer.plugin import Availability, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["PdfConverter"]

log = logging.getLogger(__name__)

# MIME type -> PyMuPDF filetype, so content sniffing (not the name) decides how a file is read.
FILETYPES: dict[str, str] = {
    "application/pdf": "pdf",
    "application/vnd.ms-xpsdocument": "xps",
    "application/oxps": "xps",
    "application/epub+zip": "epub",
    "application/vnd.comicbook+zip": "cbz",
    "application/x-cbz": "cbz",
    "application/x-fictionbook+xml": "fb2",
    "image/svg+xml": "svg",
}


@functools.cache
def _pymupdf() -> Any:
    """Import PyMuPDF once and silence MuPDF's own printing to stdout."""
    import pymupdf

    pymupdf.TOOLS.mupdf_display_warnings(False)  # type: ignore[no-untyped-call]
    pymupdf.TOOLS.mupdf_display_errors(False)  # type: ignore[no-untyped-call]
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


class PdfConverter:
    """Renders PDF, XPS, EPUB, CBZ, FB2 and SVG pages with PyMuPDF."""

    name: ClassVar[str] = "pdf-pymupdf"
    mime_types: ClassVar[frozenset[str]] = frozenset(FILETYPES)
    priority: ClassVar[int] = 50
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

        Raises:
            InputError: Empty, corrupt or pageless document.
            EncryptedError: Encrypted and the password (if any) does not open it.
        """
        pymupdf = _pymupdf()
        filetype = FILETYPES.get(ctx.mime, "pdf")
        pymupdf.TOOLS.mupdf_warnings(reset=True)
        try:
            doc = pymupdf.open(_openable(source, ctx), filetype=filetype)
        except pymupdf.EmptyFileError as exc:
            raise InputError("file is empty") from exc
        except pymupdf.FileDataError as exc:
            raise InputError(f"not a readable {filetype.upper()} file: {exc}") from exc
        except (RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
            raise InputError(f"cannot open {filetype.upper()}: {exc}") from exc
        try:
            if doc.needs_pass:
                # An empty user password opens many "encrypted" PDFs (printing restrictions).
                if not doc.authenticate(ctx.password or ""):
                    raise EncryptedError(
                        "document is encrypted and needs a password"
                        if not ctx.password
                        else "document is encrypted and the password is wrong",
                        hint="pass the password with --password" if not ctx.password else None,
                    )
            if filetype == "epub":
                doc.layout(width=400, height=600)
            try:
                count = doc.page_count
            except (RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
                raise InputError(f"broken page tree: {exc}") from exc
            if count < 1:
                raise InputError("document has no pages")
        except BaseException:
            doc.close()
            raise
        return PdfDocument(doc, count, ctx)


class PdfDocument(BaseDocument):
    """An open PyMuPDF document."""

    units: Literal["pt", "px"] = "pt"

    def __init__(self, doc: Any, page_count: int, ctx: ConvertContext) -> None:
        self._doc = doc
        self._ctx = ctx
        self.page_count = page_count
        self._display: tuple[int, Any] | None = None

    def _page(self, index: int) -> Any:
        pymupdf = _pymupdf()
        try:
            return self._doc.load_page(index)
        except (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase) as exc:
            raise InputError(f"page {index + 1} cannot be loaded: {exc}") from exc

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the displayed page size in points (after /Rotate)."""
        rect = self._page(index).rect
        return float(rect.width), float(rect.height)

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
        return {
            "format": meta.get("format") or "",
            "encrypted": bool(self._doc.is_encrypted),
            "title": meta.get("title") or "",
        }

    def _flush_warnings(self) -> None:
        warnings = _pymupdf().TOOLS.mupdf_warnings(reset=True)
        if warnings:
            self._ctx.log.debug("MuPDF: %s", warnings)

    def close(self) -> None:
        """Close the MuPDF document."""
        self._display = None
        if self._doc is not None:
            self._doc.close()
            self._doc = None
