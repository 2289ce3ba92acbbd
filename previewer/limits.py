"""Applies :class:`~previewer.options.Limits` to the in-process engines.

Pillow's decompression-bomb guard is set to the pixel limit for the duration of a conversion, so
an image whose header declares more pixels than allowed is refused before it is decoded; the
previous setting is restored afterwards, so an application's own use of Pillow is unaffected.

Pillow is imported here only for inputs that Pillow may decode (``image/*`` types), so a PDF
conversion never pays for importing it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from previewer.budgets import Limits

__all__ = ["applied", "prepare"]

PILLOW_DEFAULT_MAX_PIXELS = 89_478_485
"""``PIL.Image.MAX_IMAGE_PIXELS`` as Pillow sets it on import."""

_in_force: list[Limits] = []


def _decodes_with_pillow(mime: str) -> bool:
    return mime.startswith("image/") and mime != "image/svg+xml"


def prepare(limits: Limits, mime: str) -> None:
    """Make sure Pillow carries ``limits`` before a converter opens an input of type ``mime``.

    Args:
        limits: The budgets in force.
        mime: The type about to be opened (an input, or an intermediate file a converter
            delegates).
    """
    if "PIL.Image" in sys.modules or _decodes_with_pillow(mime):
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = limits.max_pixels


@contextlib.contextmanager
def applied(limits: Limits, mime: str) -> Iterator[None]:
    """Apply ``limits`` to the engines within the block, then restore the previous settings.

    Args:
        limits: The budgets to apply.
        mime: The sniffed type of the input.

    Yields:
        Nothing.
    """
    pil = sys.modules.get("PIL.Image")
    previous = getattr(pil, "MAX_IMAGE_PIXELS", None) if pil is not None else None
    _in_force.append(limits)
    try:
        prepare(limits, mime)
        yield
    finally:
        _in_force.pop()
        pil = sys.modules.get("PIL.Image")
        if pil is not None:
            if _in_force:
                pil.MAX_IMAGE_PIXELS = _in_force[-1].max_pixels  # type: ignore[attr-defined]
            else:
                pil.MAX_IMAGE_PIXELS = (  # type: ignore[attr-defined]
                    previous if previous is not None else PILLOW_DEFAULT_MAX_PIXELS
                )
