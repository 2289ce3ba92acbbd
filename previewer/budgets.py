"""Resource budgets: :class:`Limits`, and how the command line offers each of its fields.

Each field declares its flag in its metadata (a :class:`LimitFlag` under the key
:data:`FLAG`); ``previewer.cli_limits`` builds the click options from these.
:mod:`previewer.options` re-exports the names. Nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from previewer.errors import InvalidOptionsError

__all__ = ["FLAG", "MIN_TILE_PIXELS", "LimitFlag", "Limits"]

MIN_TILE_PIXELS = 64 * 64
"""Smallest tile budget accepted: below it, per-tile overhead would dominate."""


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
        return cls(**field_values(cls, data, "limits", "limit"))


def field_values(cls: type, data: Mapping[str, Any], what: str, item: str) -> dict[str, Any]:
    """Check that ``data`` is a mapping of ``cls``'s dataclass fields; return it as keywords.

    Args:
        cls: The dataclass.
        data: The dict to rebuild it from.
        what: The shape's name in messages (``"limits"``).
        item: One key's name in messages (``"limit"``).

    Returns:
        The keyword arguments for ``cls``.

    Raises:
        InvalidOptionsError: If ``data`` is not a mapping or has a key that is not a field.
    """
    if not isinstance(data, Mapping):
        raise InvalidOptionsError(f"{what} must be a mapping, not {data!r}")
    names = {spec.name for spec in fields(cls)}
    unknown = sorted(str(key) for key in data if key not in names)
    if unknown:
        raise InvalidOptionsError(f"unknown {item} {', '.join(map(repr, unknown))}")
    return {str(key): value for key, value in data.items()}
