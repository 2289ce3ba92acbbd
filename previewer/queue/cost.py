"""Cost classes: what a file will cost a worker, estimated before it is queued, without rendering.

Two steps. :func:`probe` reads what is cheap to read (a few milliseconds at most): the sniffed
MIME type and the converter it goes to, the file's size, and, where a header gives them, the
page count and page size (PyMuPDF opens PDF-like files lazily, in a child process under the
request's memory cap and a short deadline like every parse of a document, since the submitter
may be a service taking uploads; Pillow and the PSD header give a raster's pixel size; an
XLSX's sheet count comes from its zip directory). :func:`estimate` is a
pure function of those facts, the request (pages, sizes, upscale) and what earlier files of the
same converter cost (:class:`ConverterCost`, kept in Redis by the workers), and returns the
file's class: ``office`` (LibreOffice work, which has its own warm engine), ``heavy`` or
``light``. The thresholds are the named constants below.

A file classed light that turns out slow is not re-queued: its limits (timeout, memory) still
end it, and its time goes into its converter's history.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from previewer.options import Options

if TYPE_CHECKING:
    from previewer.budgets import Limits
    from previewer.registry import Registry

Place = Callable[[Callable[..., Any], tuple[Any, ...], "Limits", str], Any]
"""Where a probe parses a document: ``place(func, args, limits, display)`` returns
``func(*args)`` run under ``limits`` away from the caller (default: a limited child,
:func:`previewer.limited.run_limited`; the HTTP service passes its warm worker), raising a
:class:`~previewer.errors.PreviewerError` when it times out, crashes or runs out of memory."""

__all__ = [
    "CLASSES",
    "DEFAULT_PAGE_SECONDS",
    "HEAVY",
    "HEAVY_BYTES",
    "HEAVY_OUTPUT_PIXELS",
    "HEAVY_PAGES",
    "HEAVY_PAGE_AREA",
    "HEAVY_PIXELS",
    "HEAVY_SECONDS",
    "HEAVY_SHEETS",
    "HISTORY_MIN",
    "LIGHT",
    "OFFICE",
    "ConverterCost",
    "Estimate",
    "FileFacts",
    "estimate",
    "probe",
]

log = logging.getLogger(__name__)

LIGHT = "light"
"""Small previews: most files; some worker slots take nothing else."""
HEAVY = "heavy"
"""Files that hold a worker for long: many pages, giant pages or outputs, huge rasters."""
OFFICE = "office"
"""LibreOffice conversions (their own warm engine, seconds per document)."""
CLASSES = (LIGHT, HEAVY, OFFICE)
"""Every class, in the order workers list their queues."""

OFFICE_CONVERTER = "office-libreoffice"
"""The converter whose files are the ``office`` class."""

HEAVY_BYTES = 64 * 1024 * 1024
"""A file at least this large is heavy (reading it alone takes a while)."""
HEAVY_PAGES = 24
"""Rendering more pages than this (``-p all`` x pages, per size) is heavy: ~10-50 ms a page."""
HEAVY_PIXELS = 50_000_000
"""A raster with more source pixels than this is heavy (decoding 50 MP takes ~0.5-1 s)."""
HEAVY_OUTPUT_PIXELS = 16_000_000
"""An output page larger than this (4000 x 4000) is heavy: rendering and PNG-encoding it."""
HEAVY_PAGE_AREA = 36_000_000.0
"""A vector page larger than this (pt², 6000 x 6000 pt; A0 is 8.0 M) is heavy at any size."""
HEAVY_SHEETS = 64
"""A workbook with more sheets than this is heavy for LibreOffice (still the office class)."""
HEAVY_SECONDS = 2.0
"""A file whose converter's history predicts more seconds than this is heavy."""
HISTORY_MIN = 5
"""Light files a converter must have done before its history is trusted."""
DEFAULT_PAGE_SECONDS = 0.05
"""Seconds per rendered page assumed for a converter without history."""
PROBE_TIMEOUT = 5.0
"""Seconds a document's probe may take (never more than the request's own timeout); a probe that
runs out is no fact: the file is classed by its size and type, and the worker's limits apply."""

"""Pages whose size :func:`probe` reads (the first ones of those requested): enough to find a
giant page in an ordinary document without touching every page of a 20,000-page one."""

_PDF_CONVERTER = "pdf-pymupdf"
_RASTER_CONVERTERS = ("raster-pillow", "psd-psdtools")


@dataclass(frozen=True)
class FileFacts:
    """What :func:`probe` learnt about a file (None: not known cheaply).

    Attributes:
        mime: The sniffed MIME type.
        converter: The converter the file goes to (None when none claims it: it fails fast).
        size: Bytes.
        pages: Page (or sheet, frame) count when the header gives it.
        page_area: Largest page area in pt² among the pages probed (vector documents).
        page_aspect: Height / width of that page (or of the raster).
        pixels: Source pixels of a raster (width x height).
        sheets: Sheets of a spreadsheet (XLSX/ODS zip directory).
    """

    mime: str
    converter: str | None
    size: int
    pages: int | None = None
    page_area: float | None = None
    page_aspect: float | None = None
    pixels: int | None = None
    sheets: int | None = None


@dataclass(frozen=True)
class ConverterCost:
    """What earlier light files of one converter cost (a running total kept by the workers).

    Attributes:
        files: Files converted.
        seconds: Their total seconds.
        pages: Their total rendered pages.
    """

    files: int = 0
    seconds: float = 0.0
    pages: int = 0

    @property
    def page_seconds(self) -> float | None:
        """Mean seconds per rendered page, or None without enough history."""
        if self.files < HISTORY_MIN:
            return None
        return self.seconds / max(1, self.pages)


@dataclass(frozen=True)
class Estimate:
    """A file's class and why.

    Attributes:
        cls: ``light``, ``heavy`` or ``office``.
        seconds: The predicted seconds (rough: history or a default per page).
        pages: Pages predicted to be rendered (per size).
        reasons: What made it heavy (empty for light files).
    """

    cls: str
    seconds: float
    pages: int
    reasons: tuple[str, ...] = field(default=())


def _requested_pages(options: Options, pages: int | None) -> int:
    """Pages the request renders for a document of ``pages`` pages (1 when unknown)."""
    if pages is None:
        return 1
    try:
        return len(options.pages.resolve(pages))
    except Exception:  # noqa: BLE001 - a page beyond the end: the file fails fast
        return 1


def _output_pixels(facts: FileFacts, options: Options) -> int:
    """The largest output page in pixels: each size's box, fitted to the page's aspect ratio."""
    aspect = facts.page_aspect or 1.0
    best = 0
    for size in options.sizes:
        width, height = size.width, size.height
        if width is None and height is None:
            continue
        if width is None:
            assert height is not None
            width = round(height / aspect)
        elif height is None:
            height = round(width * aspect)
        elif height / width > aspect:  # the box is taller than the page: width binds
            height = round(width * aspect)
        else:
            width = round(height / aspect)
        best = max(best, width * height)
    if facts.pixels is not None and not options.upscale:
        best = min(best, facts.pixels)  # a raster is not enlarged unless asked
    return best


def estimate(
    facts: FileFacts, options: Options, history: Mapping[str, ConverterCost] | None = None
) -> Estimate:
    """Class a file by its probed facts and the request; pure (no I/O).

    The rules, first match of the class wins:

    - ``office``: the file goes to LibreOffice (:data:`OFFICE_CONVERTER`) and is not heavy;
    - ``heavy``: at least :data:`HEAVY_BYTES`; more than :data:`HEAVY_PAGES` pages rendered per
      size; a raster over :data:`HEAVY_PIXELS`; an output page over :data:`HEAVY_OUTPUT_PIXELS`;
      a page over :data:`HEAVY_PAGE_AREA`; or a prediction over :data:`HEAVY_SECONDS` from the
      converter's history (mean seconds per page of its light files, once it has
      :data:`HISTORY_MIN` of them; :data:`DEFAULT_PAGE_SECONDS` before); a workbook of over
      :data:`HEAVY_SHEETS` sheets (a giant LibreOffice document is heavy, not office);
    - ``light``: everything else.

    Args:
        facts: From :func:`probe`.
        options: The request (pages, sizes, upscale).
        history: Per converter, what its earlier light files cost (see :func:`read_history`).

    Returns:
        The estimate.
    """
    pages = _requested_pages(options, facts.pages)
    cost = (history or {}).get(facts.converter or "")
    per_page = (cost.page_seconds if cost is not None else None) or DEFAULT_PAGE_SECONDS
    sizes = max(1, len(options.sizes))
    seconds = per_page * pages * sizes
    reasons: list[str] = []
    if facts.size >= HEAVY_BYTES:
        reasons.append(f"{facts.size / 2**20:.0f} MiB")
    if pages > HEAVY_PAGES:
        reasons.append(f"{pages} pages")
    if facts.pixels is not None and facts.pixels > HEAVY_PIXELS:
        reasons.append(f"{facts.pixels / 1e6:.0f} MP raster")
    out_px = _output_pixels(facts, options)
    if out_px > HEAVY_OUTPUT_PIXELS:
        reasons.append(f"{out_px / 1e6:.0f} MP output page")
    if facts.page_area is not None and facts.page_area > HEAVY_PAGE_AREA:
        reasons.append(f"{facts.page_area / 1e6:.0f} M pt² page")
    if facts.sheets is not None and facts.sheets > HEAVY_SHEETS:
        reasons.append(f"{facts.sheets} sheets")
    if facts.converter == OFFICE_CONVERTER and not reasons:
        # (LibreOffice's seconds are not predicted from light files' history.)
        return Estimate(OFFICE, max(seconds, 0.25), pages, ())
    if seconds > HEAVY_SECONDS:
        reasons.append(f"~{seconds:.1f} s predicted")
    return Estimate(HEAVY if reasons else LIGHT, seconds, pages, tuple(reasons))


def probe(
    path: str, options: Options, registry: Registry, *, place: Place | None = None
) -> FileFacts:
    """Read what is cheap to know about a file (no rendering; a few ms at most).

    Args:
        path: The file (a path the submitter can read).
        options: The request (a forced converter; the pages whose size is read).
        registry: Picks the converter, as the workers' would.
        place: Where a document is parsed (see :data:`Place`; default a limited child).

    Returns:
        The facts; whatever cannot be read cheaply (or at all) is left None, and a file that
        cannot be read at all gives just its size (the worker reports the error).
    """
    from previewer import mime as sniffing

    try:
        size = os.stat(path).st_size
        mime = sniffing.sniff(path)
    except OSError:
        return FileFacts("application/octet-stream", None, 0)
    try:
        converter: str | None = str(registry.resolve(mime, name=options.converter).name)
    except Exception:  # noqa: BLE001 - unsupported or unavailable: fails fast on the worker
        converter = None
    facts = FileFacts(mime, converter, size)
    if size >= HEAVY_BYTES:
        return facts  # heavy by its size alone: nothing more to read
    try:
        if converter == _PDF_CONVERTER:
            return _probe_document_limited(path, facts, options, place)
        if converter in _RASTER_CONVERTERS:
            return _probe_raster(path, facts)
        if converter == OFFICE_CONVERTER and mime.endswith(("sheet", "spreadsheet")):
            return _probe_workbook(path, facts)
    except Exception as exc:  # noqa: BLE001 - a damaged header: the worker reports it
        log.debug("cannot probe %s: %s", path, exc)
    return facts


def _probe_document_limited(
    path: str, facts: FileFacts, options: Options, place: Place | None = None
) -> FileFacts:
    """:func:`previewer.headers.document_facts` where MuPDF parses: a child, or ``place``."""
    from previewer.headers import document_facts

    limits = dataclasses.replace(options.limits, timeout=min(options.limits.timeout, PROBE_TIMEOUT))
    found = (place or _in_child)(document_facts, (path, facts.mime, options), limits, path)
    if found is None:  # encrypted: nothing more to read
        return facts
    count, area, aspect = found
    return FileFacts(facts.mime, facts.converter, facts.size, count, area, aspect)


def _in_child(func: Callable[..., Any], args: tuple[Any, ...], limits: Limits, display: str) -> Any:
    """The default :data:`Place`: a limited child process."""
    from previewer.limited import run_limited

    found, _messages = run_limited(func, args, limits=limits, display=display)
    return found


def _probe_raster(path: str, facts: FileFacts) -> FileFacts:
    """Pixel size from the header: the PSD header, else Pillow (decodes nothing)."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if head[:4] == b"8BPS" and len(head) == 26:
        height, width = struct.unpack(">II", head[14:22])
    else:
        from PIL import Image

        from previewer.converters import RASTER_FORMATS

        formats = RASTER_FORMATS.get(facts.mime)
        if not formats:
            return facts
        with Image.open(path, formats=list(formats)) as im:  # never Pillow's own EPS sniffing
            width, height = im.size
    aspect = height / width if width else 1.0
    return FileFacts(
        facts.mime, facts.converter, facts.size, 1, None, aspect, int(width) * int(height)
    )


def _probe_workbook(path: str, facts: FileFacts) -> FileFacts:
    """Sheets of an XLSX (``xl/worksheets/*.xml``) or an ODS (``<table:table`` tags)."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        sheets = sum(1 for n in names if n.startswith("xl/worksheets/") and n.endswith(".xml"))
        if not sheets and "content.xml" in names:
            with zf.open("content.xml") as fh:
                sheets = fh.read(8 * 1024 * 1024).count(b"<table:table ")
    return FileFacts(facts.mime, facts.converter, facts.size, sheets or None, sheets=sheets)
