"""Plain text and source code, as monospace A4 pages; code highlighted with Pygments.

Text is decoded (BOM, UTF-8, BOM-less UTF-16, else Windows-1252: :func:`text_story.decode`),
its controls made visible, tabs expanded, and hard-wrapped at :data:`COLUMNS` cells (East Asian
wide characters take two), :data:`LINES` lines a page. Pagination is therefore arithmetic: the
page count needs no layout, and a page is laid out (one ``Story`` each, in
:mod:`converters.text_story`) only when it is rendered. Only the bytes the requested pages can
need are read: page 1 of any file reads at most ``LINES * (COLUMNS + 1) * 4`` bytes, so a
10 MB single-line file costs no more than a short one. Without a page hint (``--pages all``,
``info``) at most ``max_pages + 1`` pages' worth is read; a longer file's page count is then
reported as unknown.

The lexer comes from the sniffed MIME type (libmagic's names and Pygments' own), else the file
name, else a ``#!`` line; :func:`pygments.lexers.guess_lexer` is asked only for a type that says
"some kind of code" (``text/x-...``) and no other clue, on the first 4 KB. Plain text is not
highlighted. At most :data:`HIGHLIGHT_CHARS` characters are lexed; later pages are plain.
"""

from __future__ import annotations

import bisect
import functools
import html
import math
import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import TEXT
from previewer.converters.text_story import availability, decode, lay_out, read_head, visible
from previewer.errors import InputError
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

    from previewer.plugin import Document

__all__ = ["COLUMNS", "LINES", "TextConverter"]

COLUMNS = 100
"""Character cells per line (8.5 pt monospace across A4 between the margins)."""
LINES = 68
"""Lines per page (11 pt apart)."""
HIGHLIGHT_CHARS = 1_000_000
"""Characters lexed at most; later pages are not highlighted."""
CSS = (
    "body{margin:0}"
    "pre{font-family:monospace;font-size:8.5pt;line-height:11pt;margin:0;white-space:pre-wrap}"
)

# libmagic's names for code that Pygments knows under another name.
_MAGIC_LEXERS = {
    "text/x-script.python": "python",
    "text/x-c": "c",
    "text/x-c++": "cpp",
    "text/x-shellscript": "bash",
    "text/x-perl": "perl",
    "text/x-msdos-batch": "batch",
    "text/x-makefile": "make",
    "text/x-asm": "nasm",
    "text/x-java": "java",
    "text/x-awk": "awk",
    "text/x-gawk": "awk",
    "text/x-nawk": "awk",
    "text/x-lisp": "common-lisp",
    "text/x-po": "po",
    "text/x-texinfo": "tex",
    "text/troff": "groff",
    "text/x-ms-regedit": "registry",
    "text/x-wine-extension-reg": "registry",
    "text/xml": "xml",
    "application/xml": "xml",
    "application/json": "json",
    "application/x-ndjson": "json",
}
# Where East Asian wide and fullwidth characters (and emoji) may be: lines without any are cut
# by length alone.
_WIDE = re.compile(
    "[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f"
    "\uff00-\uff60\uffe0-\uffe6\U0001f000-\U0001faff\U00020000-\U0003fffd]"
)
_SHEBANG = re.compile(r"#!\s*(?:/\S*/)?(?:env\s+(?:-\S+\s+)*)?([A-Za-z][\w.+-]*)")


class TextConverter(BaseConverter):
    """Renders text and source code as monospace pages (code highlighted)."""

    name: ClassVar[str] = TEXT.name
    mime_types: ClassVar[frozenset[str]] = TEXT.mime_types
    priority: ClassVar[int] = TEXT.priority
    sandboxed: ClassVar[bool] = False

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Report whether PyMuPDF and Pygments import."""
        return availability(extra="pygments")

    def open(self, source: Path, ctx: ConvertContext) -> TextDocument:
        """Read what the requested pages need of ``source`` and paginate it.

        Raises:
            InputError: The file cannot be read or holds no text.
        """
        pages = ctx.max_page if ctx.max_page is not None else ctx.limits.max_pages + 1
        data, whole = read_head(source, pages * LINES * (COLUMNS + 1) * 4 + 4)
        text, encoding = decode(data, complete=whole)
        text = visible(text)
        if whole and text.endswith("\n"):
            text = text[:-1]
        lexer = _lexer(ctx.mime, source.name, text[:4096])
        most = (ctx.limits.max_pages + 1 if whole else pages) * LINES
        starts = _wrap(text, most)  # one start past ``most`` when there is more
        lines = min(len(starts), most)
        complete = whole and len(starts) <= most
        if complete:
            count, known = max(1, math.ceil(lines / LINES)), True
        elif ctx.max_page is not None:
            count, known = max(1, min(lines // LINES, ctx.max_page)), True
        else:
            count, known = ctx.limits.max_pages + 1, False
        facts = {
            "format": lexer.name if lexer is not None else "text",
            "encoding": encoding,
            "bytes_read": len(data),
            "complete": complete,
        }
        return TextDocument(ctx, text, starts, lines, lexer, count, known, facts)


def _lexer(mime: str, name: str, head: str) -> Any:
    """Return the Pygments lexer for the file, or None for plain text."""
    from pygments.lexers import (
        get_lexer_by_name,
        get_lexer_for_filename,
        get_lexer_for_mimetype,
        guess_lexer,
    )
    from pygments.util import ClassNotFound

    options = {"stripnl": False, "stripall": False, "ensurenl": False}
    attempts: list[Any] = []
    if mime in _MAGIC_LEXERS:
        attempts.append(lambda: get_lexer_by_name(_MAGIC_LEXERS[mime], **options))
    if mime != "text/plain":
        attempts.append(lambda: get_lexer_for_mimetype(mime, **options))
    if name != "input":  # bytes and streams are copied to a file named "input"
        attempts.append(lambda: get_lexer_for_filename(name, head, **options))
    shebang = _SHEBANG.match(head)
    if shebang:
        interpreter = shebang.group(1).rstrip("0123456789.")
        attempts.append(lambda: get_lexer_by_name(interpreter, **options))
    if mime.startswith("text/x-"):
        attempts.append(lambda: guess_lexer(head, **options))
    for attempt in attempts:
        try:
            lexer = attempt()
        except ClassNotFound:
            continue
        return None if lexer.name == "Text only" else lexer
    return None


def _width(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _wrap(text: str, most: int) -> list[int]:
    """Return the start offsets of the visual lines of ``text``, stopping past ``most``.

    Lines are cut at :data:`COLUMNS` cells; a visual line ends at the next start (minus the
    newline, which :meth:`TextDocument._line` drops) or at the end of the text. The list stops
    within a logical line of ``most`` entries (so it has one past ``most`` if there is more).
    """
    starts: list[int] = []
    pos = 0
    for line in text.split("\n"):
        if line.isascii() or not _WIDE.search(line):
            starts.extend(range(pos, pos + max(len(line), 1), COLUMNS))
        else:
            starts.append(pos)
            cells = 0
            for offset, char in enumerate(line):
                width = _width(char)
                if cells + width > COLUMNS:
                    starts.append(pos + offset)
                    cells = 0
                    if len(starts) > most:
                        break
                cells += width
        pos += len(line) + 1
        if len(starts) > most:
            break
    return starts


class TextDocument(BaseDocument):
    """Monospace pages, each laid out when it is first rendered."""

    units: Literal["pt", "px"] = "pt"

    def __init__(
        self,
        ctx: ConvertContext,
        text: str,
        starts: list[int],
        lines: int,
        lexer: Any,
        count: int,
        known: bool,
        facts: dict[str, Any],
    ) -> None:
        self._ctx = ctx
        self._text = text
        self._starts = starts
        self._lines = lines
        self._lexer = lexer
        self.page_count = count
        self.page_count_known = known
        self._facts = facts
        self._runs: tuple[list[int], list[str]] = ([], [])
        self._lexed = 0
        self._classes: dict[Any, str] = {}
        self._page: tuple[int, Document] | None = None
        self.laid_out: list[int] = []

    def _end(self, line: int) -> int:
        if line + 1 < len(self._starts):
            return self._starts[line + 1]
        return len(self._text)

    def _highlight(self, upto: int) -> None:
        """Lex the text up to ``upto`` (within :data:`HIGHLIGHT_CHARS`) into styled runs."""
        upto = min(upto, HIGHLIGHT_CHARS, len(self._text))
        if self._lexer is None or upto <= self._lexed:
            return
        starts, classes = [], []
        pos = 0
        for ttype, value in self._lexer.get_tokens(self._text[:upto]):
            starts.append(pos)
            classes.append(self._class(ttype))
            pos += len(value)
        self._runs, self._lexed = (starts, classes), upto

    def _class(self, ttype: Any) -> str:
        if ttype not in self._classes:
            self._classes[ttype] = f"t{len(self._classes)}"
        return self._classes[ttype]

    def _css(self) -> str:
        from pygments.styles import get_style_by_name

        style = get_style_by_name("default")
        rules = [CSS]
        for ttype, name in self._classes.items():
            spec = style.style_for_token(ttype)
            decl = f"color:#{spec['color']};" if spec["color"] else ""
            decl += "font-weight:bold;" if spec["bold"] else ""
            decl += "font-style:italic;" if spec["italic"] else ""
            if decl:
                rules.append(f".{name}{{{decl}}}")
        return "".join(rules)

    def _line(self, start: int, end: int) -> str:
        text = self._text
        if end > start and text[end - 1] == "\n":
            end -= 1
        runs, classes = self._runs
        if not runs or start >= self._lexed:
            return html.escape(text[start:end], quote=False)
        parts = []
        index = bisect.bisect_right(runs, start) - 1
        pos = start
        while pos < end:
            stop = runs[index + 1] if index + 1 < len(runs) else self._lexed
            stop = min(max(stop, pos + 1), end)
            piece = html.escape(text[pos:stop], quote=False)
            parts.append(f'<span class="{classes[index]}">{piece}</span>' if index >= 0 else piece)
            pos, index = stop, index + 1
            if pos >= self._lexed:
                parts.append(html.escape(text[pos:end], quote=False))
                break
        return "".join(parts)

    def page_pdf(self, index: int) -> Path:
        """Lay page ``index`` out (if it is not already) and return its one-page PDF."""
        self._page_doc(index)
        return self._ctx.workdir / f"page-{index + 1}.pdf"

    def _page_doc(self, index: int) -> Document:
        if self._page is not None and self._page[0] == index:
            return self._page[1]
        if not 0 <= index < self.page_count:
            raise InputError(f"page {index + 1} does not exist")
        first = index * LINES
        lines = range(first, min(first + LINES, self._lines))
        if lines:  # lex ahead (doubling), so rendering every page lexes about once
            self._highlight(max(self._end(lines[-1]), 2 * self._lexed))
        body = "\n".join(self._line(self._starts[n], self._end(n)) for n in lines)
        pdf, _pages, _placed = lay_out(f"<pre>{body}</pre>", self._css(), stop_after=1)
        path = self._ctx.workdir / f"page-{index + 1}.pdf"
        path.write_bytes(pdf)
        self.close()
        self._page = (index, self._ctx.delegate(path, "application/pdf"))
        self.laid_out.append(index + 1)
        return self._page[1]

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the page size: A4 portrait, in points."""
        from previewer.converters.text_story import PAGE_SIZE

        return PAGE_SIZE

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Lay page ``index`` out (if it is not already) and render it."""
        return self._page_doc(index).render(0, scale=scale, clip=clip)

    def render_png(self, index: int, *, size: tuple[int, int]) -> bytes | None:
        """The PDF converter's PNG fast path, on the laid-out page."""
        return self._page_doc(index).render_png(0, size=size)

    def metadata(self) -> dict[str, Any]:
        """Return the text's format (the lexer's name, or "text"), encoding and bytes read."""
        return {**self._facts, "laid_out_pages": list(self.laid_out)}

    def close(self) -> None:
        """Close the laid-out page's PDF document."""
        if self._page is not None:
            self._page[1].close()
            self._page = None
