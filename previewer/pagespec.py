"""Which pages and which sizes: :class:`PageSpec` and :func:`parse_sizes`.

Both parse what the command line and the library accept (``"1,3,5-7"``, ``"all"``; ``256``,
``"1024x768"``, ``"300x"``) into frozen values; :mod:`previewer.options` builds its
:class:`~previewer.options.Options` from them (and re-exports both).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from previewer.errors import InvalidOptionsError
from previewer.geometry import SizeSpec

__all__ = ["PageSpec", "SizeSpec", "parse_sizes"]

_RANGE_RE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


@dataclass(frozen=True)
class PageSpec:
    """Which pages to render: ``1``, ``2-4``, ``1,3,5-7`` or ``all`` (1-based).

    Ranges and ``all`` cover the pages a document has; a single page number beyond the end is an
    error for that document.

    Attributes:
        ranges: ``(first, last)`` pairs, 1-based and inclusive; ``last`` None means "to the end".
        text: The normalised specification (``1-3``, ``all``).
        singles: Page numbers written on their own rather than as a range (strict).
    """

    ranges: tuple[tuple[int, int | None], ...]
    text: str = "1"
    singles: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str | int | PageSpec) -> PageSpec:
        """Parse a page specification.

        Args:
            text: ``"1"``, ``"2-4"``, ``"1,3,5-7"``, ``"all"``, an int, or a PageSpec.

        Returns:
            The parsed specification.

        Raises:
            InvalidOptionsError: If the text is not a page specification.
        """
        if isinstance(text, PageSpec):
            return text
        if isinstance(text, bool):
            raise InvalidOptionsError(f"invalid page specification {text!r}")
        raw = str(text).strip()
        if raw.lower() == "all":
            return cls(((1, None),), "all")
        ranges: list[tuple[int, int | None]] = []
        singles: set[int] = set()
        for part in raw.split(","):
            match = _RANGE_RE.match(part)
            if not match:
                raise InvalidOptionsError(
                    f"invalid page specification {raw!r}: use 1, 2-4, 1,3,5-7 or all"
                )
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) is not None else None
            if first < 1 or (last is not None and last < first):
                raise InvalidOptionsError(
                    f"invalid page range {part.strip()!r} in {raw!r}: pages count from 1"
                )
            if last is None:
                singles.add(first)
            ranges.append((first, first if last is None else last))
        normalised = ",".join(f"{a}" if a == b and a in singles else f"{a}-{b}" for a, b in ranges)
        return cls(tuple(ranges), normalised, frozenset(singles))

    @property
    def is_single(self) -> bool:
        """True when the specification names exactly one page."""
        return len(self.ranges) == 1 and self.ranges[0][0] in self.singles

    @property
    def last(self) -> int | None:
        """The highest page number the specification can select, or None for "to the end"."""
        if any(last is None for _first, last in self.ranges):
            return None
        return max(last for _first, last in self.ranges if last is not None)

    def resolve(self, page_count: int) -> list[int]:
        """Return the 1-based page numbers to render for a document of ``page_count`` pages.

        A range is clipped to the document; a single page number beyond the end raises.

        Args:
            page_count: Number of pages the document has.

        Returns:
            Sorted, distinct page numbers, possibly empty if every range starts past the end.

        Raises:
            InvalidOptionsError: If a single page number is beyond the last page (the message
                names the page count; the caller adds the file name).
        """
        pages: set[int] = set()
        for first, last in self.ranges:
            if first in self.singles and first == last and first > page_count:
                raise InvalidOptionsError(
                    f"page {first} requested but the document has {page_count} "
                    f"page{'s' if page_count != 1 else ''}"
                )
            end = page_count if last is None else min(last, page_count)
            pages.update(range(first, end + 1))
        return sorted(pages)

    def __str__(self) -> str:
        return self.text


def parse_sizes(
    values: Iterable[str | int | SizeSpec] | str | int | SizeSpec,
) -> tuple[SizeSpec, ...]:
    """Parse one or several sizes, dropping duplicates but keeping the order given.

    Args:
        values: A size or an iterable of sizes (``256``, ``"1024x768"``, ``"300x"``, ``"x400"``).

    Returns:
        The distinct sizes.

    Raises:
        InvalidOptionsError: If a size is invalid or none is given.
    """
    if isinstance(values, (str, int, SizeSpec)):
        values = [values]
    sizes: list[SizeSpec] = []
    for value in values:
        try:
            size = SizeSpec.parse(value)
        except ValueError as exc:
            raise InvalidOptionsError(str(exc)) from exc
        if size not in sizes:
            sizes.append(size)
    if not sizes:
        raise InvalidOptionsError("no output size given")
    return tuple(sizes)
