"""The click options of :class:`~previewer.options.Limits` (shared by ``convert`` and ``info``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from previewer.options import Limits

__all__ = ["_limits", "_limits_options"]


def _limits_options(func: Callable[..., Any]) -> Callable[..., Any]:
    defaults = Limits()
    for decorator in reversed(
        [
            click.option(
                "--max-pixels",
                type=click.IntRange(min=1),
                default=defaults.max_pixels,
                show_default=True,
                envvar="PREVIEWER_MAX_PIXELS",
                help="Refuse raster images with more pixels than this.",
            ),
            click.option(
                "--max-tile-pixels",
                type=click.IntRange(min=4096),
                default=defaults.max_tile_pixels,
                show_default=True,
                envvar="PREVIEWER_MAX_TILE_PIXELS",
                help="Render pages larger than this many pixels in tiles (bounds memory).",
            ),
            click.option(
                "--max-file-size",
                type=click.IntRange(min=1),
                default=defaults.max_file_size,
                show_default=True,
                envvar="PREVIEWER_MAX_FILE_SIZE",
                help="Refuse inputs larger than this many bytes.",
            ),
            click.option(
                "--max-pages",
                type=click.IntRange(min=1),
                default=defaults.max_pages,
                show_default=True,
                envvar="PREVIEWER_MAX_PAGES",
                help="Refuse to render more pages than this from one input.",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=defaults.timeout,
                show_default=True,
                envvar="PREVIEWER_TIMEOUT",
                help="Seconds an external engine may run per input.",
            ),
            click.option(
                "--allow-unisolated",
                is_flag=True,
                envvar="PREVIEWER_ALLOW_UNISOLATED",
                help="Run document engines even where they cannot be isolated from the "
                "network and the host's files (trusted input only).",
            ),
        ]
    ):
        func = decorator(func)
    return func


def _limits(
    max_pixels: int,
    max_tile_pixels: int,
    max_file_size: int,
    max_pages: int,
    timeout: float,
    allow_unisolated: bool,
) -> Limits:
    return Limits(
        max_pixels=max_pixels,
        max_tile_pixels=max_tile_pixels,
        max_file_size=max_file_size,
        max_pages=max_pages,
        timeout=timeout,
        allow_unisolated=allow_unisolated,
    )
