"""Applies :class:`~previewer.options.Limits` to the in-process engines.

Pillow's decompression-bomb guard is set to the pixel limit for the duration of a conversion, so
an image whose header declares more pixels than allowed is refused before it is decoded; the
previous setting is restored afterwards, so an application's own use of Pillow is unaffected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from previewer.options import Limits

__all__ = ["applied"]


@contextlib.contextmanager
def applied(limits: Limits) -> Iterator[None]:
    """Set process-wide engine limits from ``limits`` within the block.

    Args:
        limits: The budgets to apply.

    Yields:
        Nothing; the previous settings are restored on exit.
    """
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous
