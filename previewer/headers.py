"""Page facts of a PDF-like document read from its structure, without rendering.

The queue's cost classes (:mod:`previewer.queue.cost`) need a document's page count and the
size of the pages a request asks for before the file is queued. MuPDF reads them lazily in a few
milliseconds, but it parses the submitted file: :func:`document_facts` is meant to run in a
limited child process (:func:`previewer.limited.run_limited`), never in the submitter, which may
be the HTTP service. It lives apart from the queue package so that the child imports only
PyMuPDF, not Celery.
"""

from __future__ import annotations

from typing import Any

from previewer.options import Options

__all__ = ["PROBE_PAGES", "document_facts"]

PROBE_PAGES = 32
"""At most this many of the requested pages are measured (the largest one counts)."""


def document_facts(path: str, mime: str, options: Options) -> tuple[int, float, float] | None:
    """Read the page count and the largest requested page of a PDF-like file.

    Args:
        path: The file.
        mime: Its sniffed type (PDF, XPS, EPUB, CBZ, FB2, SVG).
        options: The request (its pages say which pages are measured).

    Returns:
        ``(pages, area, aspect)`` in points (area of the largest requested page, its height
        over its width), or None for an encrypted document.
    """
    import pymupdf

    from previewer.converters import PDF_FILETYPES

    kind = PDF_FILETYPES.get(mime, "pdf")
    pymupdf.TOOLS.mupdf_display_warnings(False)  # type: ignore[no-untyped-call]
    pymupdf.TOOLS.mupdf_display_errors(False)  # type: ignore[no-untyped-call]
    with pymupdf.open(path, filetype=kind) as doc:  # type: ignore[no-untyped-call]
        if doc.needs_pass:
            return None
        count = int(doc.page_count)
        try:
            wanted = options.pages.resolve(count)[:PROBE_PAGES]
        except Exception:  # noqa: BLE001 - a page beyond the end: no page to measure
            wanted = []
        area, aspect = 0.0, 1.0
        for number in wanted:
            rect: Any = doc[number - 1].rect if kind != "pdf" else doc.page_cropbox(number - 1)
            if rect.width * rect.height > area:
                area = float(rect.width * rect.height)
                aspect = float(rect.height / rect.width) if rect.width else 1.0
    return count, area, aspect
