"""The text family's engine: decoding text files and laying HTML out as PDF pages with PyMuPDF.

Every text-like converter (plain text and code, CSV/TSV, Markdown, HTML) ends here: it turns
its input into HTML and MuPDF's ``Story`` lays that out on A4 portrait pages (36 pt margins),
written to an in-memory PDF that the PDF converter then renders (``ConvertContext.delegate``).

Only what the requested pages need is laid out: :func:`paginate` asks its caller for HTML
covering a budget of source units (lines, blocks, rows, bytes), lays out at most
``max_page + 1`` pages and doubles the budget only while the source ran out before page
``max_page`` was full. Without ``max_page`` (``--pages all``, ``info``) everything is laid out,
but never more than ``max_pages + 1`` pages: the page count is then reported as unknown.

The ``Story`` is given an empty in-memory ``Archive``, so nothing it lays out (``<img>``,
``<link rel=stylesheet>``, ``@import``, ``url()``) can reach a local file, and MuPDF has no
network code: a document sees only itself. MuPDF's messages are kept off stdout.
"""

from __future__ import annotations

import codecs
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from previewer.errors import EngineError, InputError
from previewer.plugin import Availability, BaseDocument, Box, ConvertContext, Document

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "MARGIN",
    "PAGE_SIZE",
    "Laid",
    "StoryDocument",
    "availability",
    "decode",
    "lay_out",
    "paginate",
    "pymupdf",
    "read_head",
    "visible",
]

log = logging.getLogger(__name__)

PAGE_SIZE = (595.0, 842.0)
"""A4 portrait, in points."""
MARGIN = 36.0
"""Page margin on every side, in points."""


@functools.cache
def pymupdf() -> Any:
    """Import PyMuPDF once, with MuPDF's messages sent to the logger instead of stdout."""
    import pymupdf as module

    module.TOOLS.mupdf_display_warnings(False)  # type: ignore[no-untyped-call]
    module.TOOLS.mupdf_display_errors(False)  # type: ignore[no-untyped-call]
    to_log: dict[str, Any] = {"pylogging_logger": log, "pylogging_level": logging.DEBUG}
    module.set_messages(**to_log)  # type: ignore[no-untyped-call]
    module.set_log(**to_log)  # type: ignore[no-untyped-call]
    return module


def availability(*, extra: str = "") -> Availability:
    """Report whether PyMuPDF (and the module named in ``extra``) can be imported."""
    try:
        module = pymupdf()
        if extra:
            __import__(extra)
    except Exception as exc:  # noqa: BLE001 - never raises, by contract
        return Availability(
            False, "PyMuPDF Story", reason=f"cannot import ({exc}); pip install pymupdf {extra}"
        )
    return Availability(True, "PyMuPDF Story", version=str(module.VersionBind))


# --------------------------------------------------------------------------- reading text

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# C0 controls (but tab and newline) -> Unicode control pictures; DEL and C1 -> visible marks.
_CONTROLS: dict[int, int | None] = {c: 0x2400 + c for c in range(0x20) if c not in (0x09, 0x0A)}
_CONTROLS.update({0x7F: 0x2421, 0xFEFF: None})
_CONTROLS.update({c: 0xFFFD for c in range(0x80, 0xA0)})


def read_head(source: Path, limit: int | None) -> tuple[bytes, bool]:
    """Return the first ``limit`` bytes of ``source`` (all of it for None) and whether that is all.

    Raises:
        InputError: The file cannot be read.
    """
    try:
        with open(source, "rb") as fh:
            data = fh.read() if limit is None else fh.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}") from exc
    if limit is not None and len(data) > limit:
        return data[:limit], False
    return data, True


def decode(data: bytes, *, complete: bool) -> tuple[str, str]:
    """Decode text: a BOM's encoding, else UTF-8, else BOM-less UTF-16, else Windows-1252.

    Args:
        data: The bytes (possibly only the file's beginning).
        complete: False when ``data`` was cut: a character split at its end is dropped.

    Returns:
        The text and the name of the encoding used.
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            return _decode(data[len(bom) :], name, complete), name
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if not complete and exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8"), "utf-8"
    sample = data[:4096]
    odd, even = sample[1::2].count(0), sample[0::2].count(0)
    if len(sample) >= 8 and max(odd, even) > len(sample) // 4 and min(odd, even) == 0:
        name = "utf-16-le" if odd > even else "utf-16-be"
        return _decode(data, name, complete), name
    return data.decode("cp1252", errors="replace"), "windows-1252"


def _decode(data: bytes, name: str, complete: bool) -> str:
    if name.startswith("utf-16") and not complete and len(data) % 2:
        data = data[:-1]
    return codecs.decode(data, name, errors="replace")


def visible(text: str, *, tabs: bool = True) -> str:
    """Return ``text`` with CR LF and CR as LF, tabs expanded and controls shown safely.

    Controls become their Unicode control pictures (U+2400 block), so nothing invisible or
    terminal-like reaches the page; a byte-order mark is dropped. ``tabs=False`` keeps tabs
    (they separate a TSV file's cells).
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return (text.expandtabs(8) if tabs else text).translate(_CONTROLS)


# --------------------------------------------------------------------------- layout


class Laid:
    """The result of a layout.

    Attributes:
        pdf: The PDF's bytes.
        pages: Pages laid out.
        complete: The whole source fitted in those pages.
        units: Source units (the caller's lines, blocks or rows) laid out.
    """

    __slots__ = ("complete", "pages", "pdf", "units")

    def __init__(self, pdf: bytes, pages: int, complete: bool, units: int) -> None:
        self.pdf, self.pages, self.complete, self.units = pdf, pages, complete, units


def lay_out(html: str, css: str, *, stop_after: int) -> tuple[bytes, int, bool]:
    """Lay ``html`` out on A4 pages, at most ``stop_after`` of them.

    Returns:
        The PDF's bytes, the number of pages and whether all of the HTML was placed.

    Raises:
        EngineError: MuPDF failed.
    """
    import io

    fitz = pymupdf()
    buffer = io.BytesIO()
    page = fitz.Rect(0, 0, *PAGE_SIZE)
    where = page + (MARGIN, MARGIN, -MARGIN, -MARGIN)
    try:
        story = fitz.Story(html, user_css=css, archive=fitz.Archive())
        writer = fitz.DocumentWriter(buffer)
        pages, more = 0, 1
        while more and pages < stop_after:
            more, _filled = story.place(where)
            device = writer.begin_page(page)
            story.draw(device)
            writer.end_page()
            pages += 1
        writer.close()
    except (RuntimeError, ValueError, fitz.mupdf.FzErrorBase) as exc:
        raise EngineError(f"MuPDF could not lay the text out: {exc}") from exc
    finally:
        warnings = fitz.TOOLS.mupdf_warnings(reset=True)
        if warnings:
            log.debug("MuPDF: %s", warnings)
    return buffer.getvalue(), pages, not more


def paginate(
    build: Callable[[int], tuple[str, int, bool]],
    css: str,
    *,
    max_page: int | None,
    max_pages: int,
    first_budget: int,
) -> Laid:
    """Lay out just enough of a source for its first ``max_page`` pages.

    Args:
        build: Given a budget of source units, returns HTML for (about) that many units, the
            number of units it covers and whether that is the whole source.
        css: The stylesheet.
        max_page: The highest page needed, or None for all of them (then at most
            ``max_pages + 1`` pages are laid out).
        max_pages: The page limit.
        first_budget: The units expected to fill ``max_page`` pages (or one page for None);
            the budget doubles until the source is whole or enough pages are full, so the
            source is laid out about twice over at worst.

    Returns:
        The layout: with ``max_page``, its first ``max_page`` pages are final.
    """
    budget = max(1, first_budget)
    stop = (max_page if max_page is not None else max_pages) + 1
    while True:
        html, units, whole = build(budget)
        pdf, pages, placed = lay_out(html, css, stop_after=stop)
        if whole or pages >= stop:
            return Laid(pdf, pages, whole and placed, units)
        budget = units * 2 + 1


# --------------------------------------------------------------------------- documents


class StoryDocument(BaseDocument):
    """A laid-out PDF, opened by the PDF converter, reporting the text converter's facts.

    Anything else (optional members added to the contract later) is forwarded to the PDF
    document.

    Attributes:
        pdf_path: The laid-out PDF (in the conversion's work directory).
    """

    units: Literal["pt", "px"] = "pt"

    def __init__(
        self,
        ctx: ConvertContext,
        laid: Laid,
        facts: dict[str, Any],
        *,
        max_page: int | None,
        max_pages: int,
    ) -> None:
        path = ctx.workdir / "layout.pdf"
        path.write_bytes(laid.pdf)
        self.pdf_path = path
        self._inner: Document | None = ctx.delegate(path, "application/pdf")
        count = laid.pages
        self.page_count_known = True
        if max_page is not None:
            count = min(count, max_page)
        elif count > max_pages:
            # Stopped after max_pages + 1: ``--pages all`` is then refused by the page limit.
            self.page_count_known = False
        self.page_count = count
        self._facts = {**facts, "laid_out_pages": laid.pages, "complete": laid.complete}

    def _doc(self) -> Document:
        if self._inner is None:
            raise RuntimeError("document is closed")
        return self._inner

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the page size (A4 portrait, in points)."""
        return self._doc().page_size(index)

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Render page ``index`` with the PDF converter."""
        return self._doc().render(index, scale=scale, clip=clip)

    def render_png(self, index: int, *, size: tuple[int, int]) -> bytes | None:
        """The PDF converter's PNG fast path."""
        return self._doc().render_png(index, size=size)

    def metadata(self) -> dict[str, Any]:
        """Return the source's facts (format, encoding...) and what was laid out."""
        return dict(self._facts)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._doc(), name)

    def close(self) -> None:
        """Close the PDF document."""
        if self._inner is not None:
            self._inner.close()
            self._inner = None
