"""Frozen option objects shared by the library and the command line: pages, limits, options.

The command line builds exactly one :class:`Options` from its flags and environment; the library
functions build one from their keyword arguments. Nothing here reads the environment.

:class:`Options` is defined here; the page and size parsing it uses lives in
:mod:`previewer.pagespec` (:class:`PageSpec`, :func:`parse_sizes`) and the resource budgets in
:mod:`previewer.budgets` (:class:`Limits`, :class:`LimitFlag`, :data:`FLAG`). All are
importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from previewer.budgets import FLAG, LimitFlag, Limits, field_values
from previewer.budgets import MIN_TILE_PIXELS as MIN_TILE_PIXELS
from previewer.errors import InvalidOptionsError
from previewer.geometry import SizeSpec
from previewer.pagespec import PageSpec, parse_sizes

__all__ = [
    "DEFAULT_QUALITY",
    "FLAG",
    "FORMATS",
    "LimitFlag",
    "Limits",
    "Options",
    "PageSpec",
    "SizeSpec",
    "parse_format",
    "parse_sizes",
]

FORMATS = ("png", "jpeg", "webp")
"""The preview file formats, as :attr:`Options.format` names them."""

FORMAT_ALIASES = {"jpg": "jpeg"}
"""Other spellings accepted for a format."""

DEFAULT_QUALITY = 85
"""JPEG and WebP quality when none is given."""


def parse_format(value: Any) -> str:
    """Return the preview format ``value`` names, normalised (``"JPG"`` gives ``"jpeg"``).

    Args:
        value: ``"png"``, ``"jpeg"``, ``"jpg"`` or ``"webp"``, in any case.

    Returns:
        One of :data:`FORMATS`.

    Raises:
        InvalidOptionsError: If it names no known format.
    """
    if isinstance(value, str):
        name = value.strip().lower()
        name = FORMAT_ALIASES.get(name, name)
        if name in FORMATS:
            return name
    raise InvalidOptionsError(f"format must be one of {', '.join(FORMATS)} (or jpg), not {value!r}")


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
        format: Image format of the preview files: ``"png"`` (the default), ``"jpeg"``
            (``"jpg"`` is accepted; alpha is flattened onto white) or ``"webp"``.
        quality: Encoder quality for JPEG and WebP, 1-100 (PNG is lossless and ignores it).
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
    format: str = "png"
    quality: int = DEFAULT_QUALITY

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
        object.__setattr__(self, "format", parse_format(self.format))
        quality: Any = self.quality
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise InvalidOptionsError(f"quality must be an integer from 1 to 100, not {quality!r}")

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
            "format": self.format,
            "quality": self.quality,
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
        return cls(**field_values(cls, data, "options", "option"))

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
        format: str = "png",
        quality: int = DEFAULT_QUALITY,
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
            format: ``"png"``, ``"jpeg"`` (or ``"jpg"``) or ``"webp"``.
            quality: JPEG and WebP quality, 1-100.

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
            format=format,
            quality=quality,
        )
