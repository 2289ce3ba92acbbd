"""CSV and TSV files as tables on A4 pages (PyMuPDF's Story, :mod:`converters.text_story`).

The first row is the header (bold, shaded). Cells are cut at :data:`CELL_CHARS` characters and
only the columns that fit the page's width are shown (at least one; the table says how many
more there are). Only the rows the requested pages need are laid out: the rows budget starts at
:data:`ROWS_PER_PAGE` per page and doubles while the table ran out before the last requested
page was full (:func:`text_story.paginate`), and only the bytes those rows can need are read.

CSV's delimiter is detected (``,`` ``;`` ``|`` or tab) on the first 8 KB; TSV is tab-separated.
LibreOffice, which also claims ``text/csv`` at a lower priority, takes over when PyMuPDF is not
available.
"""

from __future__ import annotations

import functools
import html
import io
from pathlib import Path
from typing import ClassVar

from previewer.converters import TABLE
from previewer.converters.text_story import (
    MARGIN,
    PAGE_SIZE,
    StoryDocument,
    availability,
    decode,
    paginate,
    read_head,
    visible,
)
from previewer.errors import InputError
from previewer.plugin import Availability, BaseConverter, ConvertContext

__all__ = ["TableConverter"]

CELL_CHARS = 40
"""Characters shown of a cell at most."""
ROWS_PER_PAGE = 45
"""Rows expected on a page (one-line cells); the budget grows when it was too few."""
CHAR_WIDTH = 3.9
"""Average width of a 7.5 pt sans-serif character, in points, to fit columns on the page."""
READ_PER_PAGE = 1 << 18
"""Bytes read per requested page (at least 1 MiB); a page shows at most a few KB of it."""
MAX_READ = 32 << 20
"""Bytes read at most (``--pages all`` and ``info`` of a giant table)."""
CSS = (
    "body{margin:0;font-family:sans-serif;font-size:7.5pt}"
    "table{border-collapse:collapse}"
    "th,td{border:0.5pt solid #999;padding:1pt 3pt;text-align:left;vertical-align:top}"
    "th{background-color:#e8e8e8;font-weight:bold}"
    "p{color:#666;margin:0 0 4pt 0}"
)


class TableConverter(BaseConverter):
    """Renders CSV and TSV files as tables."""

    name: ClassVar[str] = TABLE.name
    mime_types: ClassVar[frozenset[str]] = TABLE.mime_types
    priority: ClassVar[int] = TABLE.priority
    sandboxed: ClassVar[bool] = False

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Report whether PyMuPDF imports."""
        return availability()

    def open(self, source: Path, ctx: ConvertContext) -> StoryDocument:
        """Lay out the rows of ``source`` the requested pages need.

        Raises:
            InputError: The file cannot be read or parsed as a table.
        """
        pages = ctx.max_page if ctx.max_page is not None else ctx.limits.max_pages + 1
        data, whole = read_head(source, min(max(1 << 20, pages * READ_PER_PAGE), MAX_READ))
        text, encoding = decode(data, complete=whole)
        delimiter = _delimiter(text[:8192], ctx.mime)
        rows = _Rows(visible(text, tabs=False), delimiter, whole)
        laid = paginate(
            rows.html,
            CSS,
            max_page=ctx.max_page,
            max_pages=ctx.limits.max_pages,
            first_budget=(ctx.max_page or 1) * ROWS_PER_PAGE,
        )
        facts = {
            "format": "TSV" if delimiter == "\t" else "CSV",
            "encoding": encoding,
            "delimiter": delimiter,
            "rows_laid_out": laid.units,
            "columns": rows.columns,
        }
        return StoryDocument(
            ctx, laid, facts, max_page=ctx.max_page, max_pages=ctx.limits.max_pages
        )


def _delimiter(sample: str, mime: str) -> str:
    if mime == "text/tab-separated-values":
        return "\t"
    import csv

    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


class _Rows:
    """Parses rows lazily and turns a prefix of them into an HTML table."""

    def __init__(self, text: str, delimiter: str, whole: bool) -> None:
        import csv

        # A cell may be as long as the text read (cells are cut when shown, not parsed).
        csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
        self._reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        self._rows: list[list[str]] = []
        self._whole = whole
        self._done = False
        self.columns = 0

    def _take(self, count: int) -> None:
        import csv

        while len(self._rows) < count and not self._done:
            try:
                row = next(self._reader)
            except StopIteration:
                self._done = True
            except csv.Error as exc:
                if self._whole:
                    raise InputError(f"not a readable table: {exc}") from exc
                self._done = True  # the text read was cut inside a quoted cell
            else:
                self._rows.append([cell[: CELL_CHARS + 1] for cell in row])
                self.columns = max(self.columns, len(row))

    def html(self, budget: int) -> tuple[str, int, bool]:
        """Return a table of the first ``budget`` rows, the rows it has and whether that is all."""
        self._take(budget + 1)
        rows = self._rows[:budget]
        if not rows:
            raise InputError("the table has no rows")
        shown = _fitting_columns(rows)
        parts = []
        if self.columns > shown:
            parts.append(f"<p>{shown} of {self.columns} columns shown</p>")
        parts.append("<table>")
        for number, row in enumerate(rows):
            tag = "th" if number == 0 else "td"
            cells = "".join(f"<{tag}>{_cell(c)}</{tag}>" for c in row[:shown])
            cells += f"<{tag}></{tag}>" * (shown - min(len(row), shown))
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
        whole = self._done and len(self._rows) <= budget
        return "".join(parts), len(rows), whole


def _cell(text: str) -> str:
    if len(text) > CELL_CHARS:
        text = text[: CELL_CHARS - 1] + "\u2026"
    return html.escape(text, quote=False).replace("\n", "<br>")


def _fitting_columns(rows: list[list[str]]) -> int:
    """Return how many leading columns fit across the page at their widest cell's width."""
    room = PAGE_SIZE[0] - 2 * MARGIN
    widths: dict[int, int] = {}
    for row in rows[:200]:
        for col, cell in enumerate(row):
            longest = max((len(line) for line in cell.split("\n")), default=0)
            widths[col] = max(widths.get(col, 1), min(longest, CELL_CHARS))
    used, shown = 0.0, 0
    for col in range(max(widths, default=0) + 1):
        need = widths.get(col, 1) * CHAR_WIDTH + 7  # padding and borders
        if shown and used + need > room:
            break
        used, shown = used + need, shown + 1
    return max(shown, 1)
