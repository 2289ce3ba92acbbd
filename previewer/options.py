"""Frozen option objects shared by the library and the command line: pages, limits, options.

The command line builds exactly one :class:`Options` from its flags and environment; the library
functions build one from their keyword arguments. Nothing here reads the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from previewer.errors import InvalidOptionsError
from previewer.geometry import SizeSpec

__all__ = ["FLAG", "LimitFlag", "Limits", "Options", "PageSpec", "SizeSpec", "parse_sizes"]

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
class LimitFlag:
    """How the command line offers one :class:`Limits` field (``dataclasses.field`` metadata).

    The flag is the field's name with dashes (``--max-pixels``), its environment variable
    ``PREVIEWER_`` and the name in capitals, and its type follows the field's: a whole number,
    a number, or an on/off flag (``previewer.cli_limits`` builds the click options from these).

    Attributes:
        help: The option's help text.
        minimum: Smallest value accepted, if any.
        exclusive: ``minimum`` itself is not accepted.
    """

    help: str
    minimum: int | None = None
    exclusive: bool = False


FLAG = "previewer.flag"
"""Key of the :class:`LimitFlag` in a :class:`Limits` field's metadata."""


def _flag(help: str, *, minimum: int | None = None, exclusive: bool = False) -> dict[str, Any]:
    return {FLAG: LimitFlag(help, minimum, exclusive)}


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
        timeout: Wall-clock seconds an external engine process may run, and (with 2 s of
            grace) the whole conversion of one file, which runs in a batch worker or a child
            process where the deadline applies.
        max_memory: Address space, in bytes, the conversion of one file may take beyond what
            its process (a batch worker, or the child of a single conversion) held when it
            started; an allocation past it fails the file with ``LimitExceededError``.
        allow_unisolated: Run engines that parse documents (LibreOffice, Ghostscript, the
            ImageMagick worker) even where they cannot be isolated from the network and the
            host's files (see :mod:`previewer.sandbox`). Off by default: such engines are then
            refused with ``EngineUnavailableError``. Only for trusted input.
    """

    max_pixels: int = field(
        default=1024 * 1024 * 1024,
        metadata=_flag("Refuse raster images with more pixels than this.", minimum=1),
    )
    max_output_pixels: int = field(
        default=64_000_000,
        metadata=_flag(
            "Refuse previews (the largest size asked for, of one page) with more pixels than this.",
            minimum=1,
        ),
    )
    max_tile_pixels: int = field(
        default=16 * 1024 * 1024,
        metadata=_flag(
            "Render pages larger than this many pixels in tiles (bounds memory).",
            minimum=MIN_TILE_PIXELS,
        ),
    )
    max_file_size: int = field(
        default=512 * 1024 * 1024,
        metadata=_flag("Refuse inputs larger than this many bytes.", minimum=1),
    )
    max_pages: int = field(
        default=1000,
        metadata=_flag("Refuse to render more pages than this from one input.", minimum=1),
    )
    timeout: float = field(
        default=60.0,
        metadata=_flag("Seconds an external engine may run per input.", minimum=0, exclusive=True),
    )
    max_memory: int = field(
        default=2 * 1024**3,
        metadata=_flag(
            "Memory (address space) one input's conversion may use, in bytes.", minimum=1
        ),
    )
    allow_unisolated: bool = field(
        default=False,
        metadata=_flag(
            "Run document engines even where they cannot be isolated from the network and "
            "the host's files (trusted input only)."
        ),
    )

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            kind: type[object] = type(spec.default)
            if kind is bool:
                if not isinstance(value, bool):
                    raise InvalidOptionsError(f"{spec.name} must be True or False, not {value!r}")
            elif kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise InvalidOptionsError(f"{spec.name} must be a number, not {value!r}")
                if not value > 0:
                    raise InvalidOptionsError(f"{spec.name} must be positive")
                object.__setattr__(self, spec.name, float(value))
            else:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InvalidOptionsError(f"{spec.name} must be an integer, not {value!r}")
                if value < 1:
                    raise InvalidOptionsError(f"{spec.name} must be at least 1")
        if self.max_tile_pixels < MIN_TILE_PIXELS:
            raise InvalidOptionsError(
                f"max_tile_pixels must be at least {MIN_TILE_PIXELS:,} (a 64x64 tile)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the limits as a JSON-serialisable dict, one key per field.

        Returns:
            ``{"max_pixels": ..., "timeout": ..., ...}``.
        """
        return {spec.name: getattr(self, spec.name) for spec in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        """Rebuild limits from :meth:`to_dict` output; missing keys take their defaults.

        Args:
            data: The dict.

        Returns:
            The validated limits.

        Raises:
            InvalidOptionsError: If a key is unknown or a value invalid.
        """
        if not isinstance(data, Mapping):
            raise InvalidOptionsError(f"limits must be a mapping, not {data!r}")
        names = {spec.name for spec in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in names)
        if unknown:
            raise InvalidOptionsError(f"unknown limit {', '.join(map(repr, unknown))}")
        return cls(**{str(key): value for key, value in data.items()})


def _size_from_parts(parts: Sequence[Any]) -> SizeSpec:
    """A size given as ``[width, height, square]`` (the form queued tasks used to carry)."""
    width, height, square = parts
    size = SizeSpec(width, height, square=bool(square))
    try:
        if SizeSpec.parse(size.label) == size:
            return size
    except ValueError:
        pass
    raise InvalidOptionsError(f"sizes: invalid size {list(parts)!r}")


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

    def __post_init__(self) -> None:
        # Loose values are accepted as Options.build accepts them: sizes and pages as the
        # command line spells them, paths as strings, limits as a dict (Limits.to_dict).
        sizes: Any = self.sizes
        if isinstance(sizes, (str, int, SizeSpec)) or not isinstance(sizes, Iterable):
            sizes = [sizes]
        checked: list[SizeSpec] = []
        for size in sizes:
            if isinstance(size, SizeSpec):
                try:
                    consistent = SizeSpec.parse(size.label) == size
                except ValueError:
                    consistent = False
                if not consistent:
                    raise InvalidOptionsError(f"sizes: invalid size {size!r}")
            elif isinstance(size, (list, tuple)) and len(size) == 3:
                size = _size_from_parts(size)
            elif not isinstance(size, (str, int)) or isinstance(size, bool):
                raise InvalidOptionsError(f"sizes: invalid size {size!r}")
            checked.append(size)
        object.__setattr__(self, "sizes", parse_sizes(checked))
        pages: Any = self.pages
        if not isinstance(pages, (PageSpec, str, int)):
            raise InvalidOptionsError(f"pages must be a page specification, not {pages!r}")
        object.__setattr__(self, "pages", PageSpec.parse(pages))
        for name in ("out_dir", "out_root"):
            value: Any = getattr(self, name)
            if value is None and name == "out_root":
                continue
            if not isinstance(value, (str, os.PathLike)):
                raise InvalidOptionsError(f"{name} must be a path, not {value!r}")
            object.__setattr__(self, name, Path(value))
        for name in ("upscale", "keep_temp"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidOptionsError(
                    f"{name} must be True or False, not {getattr(self, name)!r}"
                )
        for name in ("password", "converter"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                shown = "a password" if name == "password" else repr(value)
                raise InvalidOptionsError(f"{name} must be a string or None, not {shown}")
        limits: Any = self.limits
        if limits is None:
            limits = Limits()
        elif isinstance(limits, Mapping):
            limits = Limits.from_dict(limits)
        elif not isinstance(limits, Limits):
            raise InvalidOptionsError(f"limits must be a Limits, not {limits!r}")
        object.__setattr__(self, "limits", limits)

    def to_dict(self) -> dict[str, Any]:
        """Return the options as a JSON-serialisable dict (see :meth:`from_dict`).

        Sizes and pages are given as the command line spells them (``"256"``, ``"300x"``,
        ``"1-3"``). The password is included: the dict is meant for previewer's own
        processes (queue workers), not for showing.

        Returns:
            One key per field; ``limits`` is :meth:`Limits.to_dict`.
        """
        return {
            "sizes": [s.label for s in self.sizes],
            "pages": self.pages.text,
            "out_dir": os.fspath(self.out_dir),
            "out_root": None if self.out_root is None else os.fspath(self.out_root),
            "upscale": self.upscale,
            "password": self.password,
            "converter": self.converter,
            "keep_temp": self.keep_temp,
            "limits": self.limits.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Options:
        """Rebuild options from :meth:`to_dict` output; missing keys take their defaults.

        Args:
            data: The dict (sizes may also be ``[width, height, square]`` triples).

        Returns:
            The validated options.

        Raises:
            InvalidOptionsError: If a key is unknown or a value invalid.
        """
        if not isinstance(data, Mapping):
            raise InvalidOptionsError(f"options must be a mapping, not {data!r}")
        names = {spec.name for spec in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in names)
        if unknown:
            raise InvalidOptionsError(f"unknown option {', '.join(map(repr, unknown))}")
        return cls(**{str(key): value for key, value in data.items()})

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
