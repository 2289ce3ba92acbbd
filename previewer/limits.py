"""Applies :class:`~previewer.options.Limits` to the in-process engines.

Pillow's decompression-bomb guard is set to the pixel limit, so an image whose header declares
more pixels than allowed is refused before it is decoded. Called before every conversion (cheap)
and, later, in each batch worker's initialiser.
"""

from __future__ import annotations

from previewer.options import Limits

__all__ = ["apply"]


def apply(limits: Limits) -> None:
    """Set process-wide engine limits from ``limits``.

    Args:
        limits: The budgets to apply.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = limits.max_pixels
