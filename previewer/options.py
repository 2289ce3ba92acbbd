"""Frozen option objects shared by the library and the command line: pages, limits, options.

The command line builds exactly one :class:`Options` from its flags and environment; the library
functions build one from their keyword arguments. Nothing here reads the environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from previewer.errors import InvalidOptionsError
from previewer.geometry import SizeSpec

__all__ = ["Limits", "Options", "PageSpec", "SizeSpec", "parse_sizes"]

MIN_TILE_PIXELS = 64 * 64
"""Smallest tile budget accepted: below it, per-tile overhead would dominate."""

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


@dataclass(frozen=True)
class Limits:
    """Resource budgets applied to every input.

    Memory does not grow with the page: a page is rendered in one piece only when the output
    fits ``max_tile_pixels``; otherwise it is rendered as a grid of tiles, each within that
    budget, and an output larger than the budget is streamed into its PNG band by band.

    Attributes:
        max_pixels: Largest raster image (width x height of the decoded source) accepted; checked
            from the header, before anything is decoded. Pillow's decompression-bomb guard is
            set to this value.
        max_output_pixels: Largest preview (the biggest requested size of one page). Since large
            previews are streamed, this bounds time and disk, not memory.
        max_tile_pixels: Largest image one engine call may render (the pixel budget of a tile);
            it bounds the memory of a conversion whatever the page or output size.
        max_file_size: Largest input file, in bytes.
        max_pages: Largest number of pages rendered from one input.
        timeout: Wall-clock seconds an external engine process may run (and, in batch workers,
            the whole conversion of one file).
        max_memory: Address-space cap of a batch worker process, in bytes.
        allow_unisolated: Run engines that parse documents (LibreOffice, Ghostscript, the
            ImageMagick worker) even where they cannot be isolated from the network and the
            host's files (see :mod:`previewer.sandbox`). Off by default: such engines are then
            refused with ``EngineUnavailableError``. Only for trusted input.
    """

    max_pixels: int = 1024 * 1024 * 1024
    max_output_pixels: int = 64_000_000
    max_tile_pixels: int = 16 * 1024 * 1024
    max_file_size: int = 512 * 1024 * 1024
    max_pages: int = 1000
    timeout: float = 60.0
    max_memory: int = 2 * 1024**3
    allow_unisolated: bool = False

    def __post_init__(self) -> None:
        for name in (
            "max_pixels",
            "max_output_pixels",
            "max_tile_pixels",
            "max_file_size",
            "max_pages",
            "max_memory",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidOptionsError(f"{name} must be an integer, not {value!r}")
            if value < 1:
                raise InvalidOptionsError(f"{name} must be at least 1")
        if self.max_tile_pixels < MIN_TILE_PIXELS:
            raise InvalidOptionsError(
                f"max_tile_pixels must be at least {MIN_TILE_PIXELS:,} (a 64x64 tile)"
            )
        if not self.timeout > 0:
            raise InvalidOptionsError("timeout must be positive")
        if not isinstance(self.allow_unisolated, bool):
            raise InvalidOptionsError(
                f"allow_unisolated must be True or False, not {self.allow_unisolated!r}"
            )


@dataclass(frozen=True)
class Options:
    """Everything that decides what one conversion produces.

    Attributes:
        sizes: Output sizes; each page is rendered once at the largest and the others derived.
        pages: Which pages to render.
        out_dir: Directory the PNG files are written to.
        upscale: Enlarge raster sources beyond their own size to fill the box.
        password: Password for encrypted documents.
        converter: Force this converter by name instead of dispatching by MIME type.
        limits: Resource budgets.
        keep_temp: Keep the per-conversion work directory (for debugging).
        out_root: The output tree's top when ``out_dir`` is a folder inside it (a batch
            mirroring a directory): the folders between the two are created and entered without
            following symbolic links. None when ``out_dir`` is the top.
    """

    sizes: tuple[SizeSpec, ...] = (SizeSpec(256, 256, square=True),)
    pages: PageSpec = field(default_factory=lambda: PageSpec.parse("1"))
    out_dir: Path = Path(".")
    upscale: bool = False
    password: str | None = field(default=None, repr=False)
    converter: str | None = None
    limits: Limits = field(default_factory=Limits)
    keep_temp: bool = False
    out_root: Path | None = None

    @classmethod
    def build(
        cls,
        *,
        sizes: Sequence[str | int | SizeSpec] | str | int | SizeSpec = (256,),
        pages: str | int | PageSpec = "1",
        out_dir: str | Path = ".",
        upscale: bool = False,
        password: str | None = None,
        converter: str | None = None,
        limits: Limits | None = None,
        keep_temp: bool = False,
    ) -> Options:
        """Build options from loosely typed values, validating each.

        Args:
            sizes: One size or several (see :class:`SizeSpec`).
            pages: A page specification (see :class:`PageSpec`).
            out_dir: Output directory.
            upscale: Enlarge small raster sources.
            password: Password for encrypted documents.
            converter: Converter name to force.
            limits: Resource budgets (defaults when None).
            keep_temp: Keep work directories.

        Returns:
            The validated options.

        Raises:
            InvalidOptionsError: If a value is invalid.
        """
        return cls(
            sizes=parse_sizes(sizes),
            pages=PageSpec.parse(pages),
            out_dir=Path(out_dir),
            upscale=upscale,
            password=password,
            converter=converter,
            limits=limits or Limits(),
            keep_temp=keep_temp,
        )
