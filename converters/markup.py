"""Markdown and HTML documents as A4 pages (PyMuPDF's Story, :mod:`converters.text_story`).

Markdown is CommonMark with tables (markdown-it-py); HTML inside it is shown as text, never
interpreted. It is laid out with a readable stylesheet, and only the part the requested pages
need is even parsed: a prefix of its lines, cut at a blank line, doubled while it fills fewer
pages (:func:`text_story.paginate`).

HTML pages are laid out as they are, with no JavaScript (``<script>`` is removed), no network
and no file access: MuPDF's HTML engine has no network code and the ``Story`` reads
stylesheets, images and ``@import`` only from an empty archive, so ``file:`` URLs, absolute
paths and ``http://`` references all resolve to nothing. Only a prefix of the page's bytes (cut
after a tag) is laid out, doubled while it fills fewer than the requested pages.
"""

from __future__ import annotations

import codecs
import functools
import re
from pathlib import Path
from typing import ClassVar

from previewer.converters import HTML, MARKDOWN
from previewer.converters.text_story import (
    StoryDocument,
    availability,
    decode,
    paginate,
    read_head,
)
from previewer.errors import InputError
from previewer.plugin import Availability, BaseConverter, ConvertContext

__all__ = ["HtmlConverter", "MarkdownConverter"]

READ_PER_PAGE = 1 << 17
"""Source bytes read per requested page (at least 512 KiB, at most :data:`MAX_READ`)."""
MAX_READ = 16 << 20
"""Source bytes read at most."""
MARKDOWN_LINES_PER_PAGE = 80
"""Source lines expected to fill a page of Markdown; the budget doubles when too few."""
HTML_BYTES_PER_PAGE = 24 << 10
"""HTML bytes expected to fill a page; the budget doubles when too few."""

MARKDOWN_CSS = """
body{margin:0;font-family:sans-serif;font-size:10pt;line-height:1.4;color:#1f2328}
h1,h2{border-bottom:0.5pt solid #d0d7de;padding-bottom:2pt}
h1{font-size:19pt} h2{font-size:15pt} h3{font-size:12.5pt} h4,h5,h6{font-size:10.5pt}
h1,h2,h3,h4,h5,h6{margin:12pt 0 5pt 0;font-weight:bold}
p,ul,ol,table,pre,blockquote{margin:0 0 7pt 0}
code{font-family:monospace;font-size:8.5pt;background-color:#eff1f3}
pre{font-family:monospace;font-size:8pt;line-height:1.3;background-color:#f6f8fa;
    padding:5pt;white-space:pre-wrap}
pre code{background-color:#f6f8fa}
blockquote{color:#59636e;border-left:2pt solid #d0d7de;padding-left:7pt}
table{border-collapse:collapse}
th,td{border:0.5pt solid #d0d7de;padding:2pt 5pt}
th{background-color:#f6f8fa;font-weight:bold}
a{color:#0969da;text-decoration:none}
hr{border:0;border-top:1pt solid #d0d7de}
"""
HTML_CSS = "body{font-family:serif;font-size:11pt} pre{white-space:pre-wrap}"

_SCRIPT = re.compile(r"(?is)<script\b.*?(?:</script\s*>|\Z)|<template\b.*?(?:</template\s*>|\Z)")
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)


def _read(source: Path, ctx: ConvertContext) -> tuple[bytes, bool]:
    pages = ctx.max_page if ctx.max_page is not None else ctx.limits.max_pages + 1
    return read_head(source, min(max(1 << 19, pages * READ_PER_PAGE), MAX_READ))


class MarkdownConverter(BaseConverter):
    """Renders Markdown (CommonMark and tables) with a readable stylesheet."""

    name: ClassVar[str] = MARKDOWN.name
    mime_types: ClassVar[frozenset[str]] = MARKDOWN.mime_types
    priority: ClassVar[int] = MARKDOWN.priority
    sandboxed: ClassVar[bool] = False

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Report whether PyMuPDF and markdown-it-py import."""
        return availability(extra="markdown_it")

    def open(self, source: Path, ctx: ConvertContext) -> StoryDocument:
        """Parse ``source`` and lay out the blocks the requested pages need.

        Raises:
            InputError: The file cannot be read.
        """
        from markdown_it import MarkdownIt

        data, whole = _read(source, ctx)
        text, encoding = decode(data, complete=whole)
        if not whole:
            text = text[: text.rfind("\n") + 1] or text  # drop the cut line
        md = MarkdownIt("commonmark", {"html": False}).enable("table")
        lines = text.splitlines(keepends=True)
        laid_lines = [0]

        def build(budget: int) -> tuple[str, int, bool]:
            # Parse only a prefix (parsing is most of the cost), cut at a blank line so that no
            # block is split; the blocks before the cut come out as they do in the whole text.
            end = min(budget, len(lines))
            stop = min(len(lines), end + 1000)
            while end < stop and lines[end].strip():
                end += 1
            laid_lines[0] = end
            body = md.render("".join(lines[:end]))
            return body or "<p></p>", max(end, 1), end >= len(lines)

        laid = paginate(
            build,
            MARKDOWN_CSS,
            max_page=ctx.max_page,
            max_pages=ctx.limits.max_pages,
            first_budget=(ctx.max_page or 1) * MARKDOWN_LINES_PER_PAGE,
        )
        facts = {
            "format": "Markdown",
            "encoding": encoding,
            "lines": len(lines),
            "lines_laid_out": laid_lines[0],
            "bytes_read": len(data),
        }
        return StoryDocument(
            ctx, laid, facts, max_page=ctx.max_page, max_pages=ctx.limits.max_pages
        )


class HtmlConverter(BaseConverter):
    """Renders HTML pages without scripts, network or file access."""

    name: ClassVar[str] = HTML.name
    mime_types: ClassVar[frozenset[str]] = HTML.mime_types
    priority: ClassVar[int] = HTML.priority
    sandboxed: ClassVar[bool] = False

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Report whether PyMuPDF imports."""
        return availability()

    def open(self, source: Path, ctx: ConvertContext) -> StoryDocument:
        """Lay out the part of ``source`` the requested pages need.

        Raises:
            InputError: The file cannot be read.
        """
        data, whole = _read(source, ctx)
        text, encoding = _decode_html(data, whole)
        text = _SCRIPT.sub("", text)
        if not text.strip():
            raise InputError("the HTML page is empty")

        def build(budget: int) -> tuple[str, int, bool]:
            if budget >= len(text):
                return text, len(text), True
            cut = text.rfind(">", 0, budget) + 1 or budget
            return text[:cut], cut, False

        laid = paginate(
            build,
            HTML_CSS,
            max_page=ctx.max_page,
            max_pages=ctx.limits.max_pages,
            first_budget=(ctx.max_page or 1) * HTML_BYTES_PER_PAGE,
        )
        facts = {"format": "HTML", "encoding": encoding, "bytes_read": len(data)}
        return StoryDocument(
            ctx, laid, facts, max_page=ctx.max_page, max_pages=ctx.limits.max_pages
        )


def _decode_html(data: bytes, whole: bool) -> tuple[str, str]:
    """Decode by BOM or UTF-8 first, then the ``<meta charset>`` a page declares."""
    text, encoding = decode(data, complete=whole)
    if encoding != "windows-1252":
        return text, encoding
    declared = _CHARSET.search(data[:4096])
    if declared:
        name = declared.group(1).decode("ascii", "replace")
        try:
            codecs.lookup(name)
        except LookupError:
            return text, encoding
        return data.decode(name, errors="replace"), name.lower()
    return text, encoding
