"""From a document page to finished preview images, one per requested size.

Each page is rendered once, at the largest requested size (fixed by :mod:`previewer.geometry`
before the engine runs), and the smaller sizes are derived from that image.

Memory is bounded by ``Limits.max_tile_pixels``: geometry decides before anything renders
whether one engine call fits that budget. If not, the page is rendered as a grid of tiles (the
document's ``render(..., clip=...)``), each within the budget, with clips computed from whole
pixel rows and columns so tiles abut exactly. A preview that itself fits the budget is
assembled in memory; a larger one is only ever written by :func:`write_previews`, which streams
it into its PNG band by band, so the full image never exists in memory. JPEG and WebP cannot be
written band by band: such a preview is assembled from its tiles and encoded whole, within the
bound :func:`previewer.output.check_encodable` sets (four tile budgets), or refused.

Whatever mode the engine returns is normalised here to 8-bit sRGB (RGB, or RGBA when the source
has alpha), so every converter, built-in or plugin, gets the same colour handling.

A document may also offer ``render_png(index, size=(w, h))``, encoding a page straight to an
8-bit sRGB PNG of exactly that size (PyMuPDF can); when a page needs a single preview,
:func:`render_page_png` uses it and Pillow is not even imported.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from previewer.budgets import Limits
from previewer.errors import LimitExceededError
from previewer.geometry import SizeSpec, band_grid, fit
from previewer.options import DEFAULT_QUALITY
from previewer.plugin import Document

if TYPE_CHECKING:
    from PIL import Image, ImageCms

__all__ = [
    "plan_page",
    "render_page",
    "render_page_png",
    "render_tiled",
    "to_srgb",
    "write_previews",
]

log = logging.getLogger(__name__)


def render_page(
    doc: Document,
    index: int,
    sizes: Sequence[SizeSpec],
    *,
    upscale: bool,
    limits: Limits,
) -> list[Image.Image]:
    """Render page ``index`` of ``doc`` once and return one image per size, in ``sizes`` order.

    Args:
        doc: An open document.
        index: 0-based page index.
        sizes: The requested sizes.
        upscale: Allow raster sources to be enlarged.
        limits: Budgets; the largest output must fit ``limits.max_output_pixels``. When it
            exceeds ``limits.max_tile_pixels`` it is rendered in tiles and assembled in memory
            (use :func:`write_previews` to stream it instead).

    Returns:
        8-bit RGB or RGBA images, one per size.

    Raises:
        LimitExceededError: If the largest output exceeds the pixel budget.
    """
    from PIL import Image

    targets, largest, scale = plan_page(doc, index, sizes, upscale=upscale, limits=limits)
    if largest[0] * largest[1] <= limits.max_tile_pixels:
        image = to_srgb(_exact(doc.render(index, scale=scale), largest))
    else:
        image = render_tiled(doc, index, largest, scale, limits=limits)
    results = []
    for target in targets:
        if target == largest:
            results.append(image)
        else:
            results.append(image.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0))
    return results


def plan_page(
    doc: Document,
    index: int,
    sizes: Sequence[SizeSpec],
    *,
    upscale: bool,
    limits: Limits,
) -> tuple[list[tuple[int, int]], tuple[int, int], float]:
    """Fix the output sizes of a page before anything is rendered.

    Args:
        doc: An open document.
        index: 0-based page index.
        sizes: The requested sizes.
        upscale: Allow raster sources to be enlarged.
        limits: Budgets; the largest output must fit ``limits.max_output_pixels``.

    Returns:
        The pixel size of each preview, the largest of them, and the scale (pixels per native
        unit) to render the largest at.

    Raises:
        LimitExceededError: If the largest output exceeds the pixel budget.
    """
    width, height = doc.page_size(index)
    allow_up = upscale or doc.units == "pt"
    targets = [fit(width, height, size, upscale=allow_up) for size in sizes]
    largest = max(targets, key=lambda t: t[0] * t[1])
    pixels = largest[0] * largest[1]
    if pixels > limits.max_output_pixels:
        raise LimitExceededError(
            f"a {largest[0]}x{largest[1]} preview ({pixels:,} pixels) exceeds the output "
            f"budget of {limits.max_output_pixels:,} pixels",
            hint="ask for a smaller size",
        )
    return targets, largest, _scale(largest, (width, height))


def _scale(target: tuple[int, int], page: tuple[float, float]) -> float:
    """Pixels per native unit that map the page onto ``target`` along its longer edge."""
    return target[0] / page[0] if target[0] >= target[1] else target[1] / page[1]


def _tile(doc: Document, index: int, box: tuple[int, int, int, int], scale: float) -> Image.Image:
    """Render the pixels ``box`` of the page drawn at ``scale``, as exactly that many pixels.

    The clip is derived from whole pixel rows and columns, so neighbouring tiles share their
    edges exactly; an engine's rounding (at most one pixel) is absorbed at the far edges.
    """
    x0, y0, x1, y1 = box
    clip = (x0 / scale, y0 / scale, x1 / scale, y1 / scale)
    return to_srgb(_exact(doc.render(index, scale=scale, clip=clip), (x1 - x0, y1 - y0)))


def _bands(
    doc: Document, index: int, target: tuple[int, int], scale: float, limits: Limits
) -> Iterator[Image.Image]:
    """Yield the page at ``target`` size as horizontal bands, each rendered in budget tiles."""
    from PIL import Image

    mode: str | None = None
    for band in band_grid(target[0], target[1], limits.max_tile_pixels):
        tiles = [_tile(doc, index, box, scale) for box in band] if len(band) > 1 else None
        if tiles is None:
            image = _tile(doc, index, band[0], scale)
        else:
            mode = mode or ("RGBA" if any(t.mode == "RGBA" for t in tiles) else "RGB")
            image = Image.new(mode, (target[0], band[0][3] - band[0][1]), "white")
            for box, tile in zip(band, tiles, strict=True):
                image.paste(tile.convert(mode) if tile.mode != mode else tile, (box[0], 0))
            del tiles
        mode = mode or image.mode
        yield image.convert(mode) if image.mode != mode else image
        del image  # before the next band is rendered


def render_tiled(
    doc: Document, index: int, target: tuple[int, int], scale: float, *, limits: Limits
) -> Image.Image:
    """Render a page at ``target`` size as tiles within the budget and paste them together.

    Args:
        doc: An open document.
        index: 0-based page index.
        target: Output size in pixels.
        scale: Pixels per native unit.
        limits: Budgets; each tile holds at most ``limits.max_tile_pixels`` pixels.

    Returns:
        The assembled 8-bit sRGB image (RGB, or RGBA when a tile has alpha).
    """
    from PIL import Image

    canvas: Image.Image | None = None
    y = 0
    for band in _bands(doc, index, target, scale, limits):
        if canvas is None:
            canvas = Image.new(band.mode, target, "white")
        canvas.paste(band, (0, y))
        y += band.height
    assert canvas is not None  # band_grid never yields nothing
    return canvas


def write_previews(
    doc: Document,
    index: int,
    sizes: Sequence[SizeSpec],
    dests: Sequence[Path],
    *,
    upscale: bool,
    limits: Limits,
    root: Path | None = None,
    format: str = "png",
    quality: int = DEFAULT_QUALITY,
) -> list[tuple[int, int]]:
    """Render page ``index`` at every size and write each preview to its path, atomically.

    Previews within ``limits.max_tile_pixels`` are made as :func:`render_page` does (one
    render, smaller sizes derived from it; a single PNG through the document's PNG fast path
    when it has one). Each larger preview is rendered on its own in bands of tiles: as PNG it
    is streamed band by band, so memory stays near one band whatever the output size; as JPEG
    or WebP it is assembled in memory and encoded whole, which
    :func:`previewer.output.check_encodable` bounds (checked before anything renders).

    Args:
        doc: An open document.
        index: 0-based page index.
        sizes: The requested sizes.
        dests: One destination path per size (directories are created).
        upscale: Allow raster sources to be enlarged.
        limits: Budgets.
        root: The output tree's top; folders below it are never entered through a symbolic
            link (see :func:`previewer.output.write_file`).
        format: ``"png"``, ``"jpeg"`` or ``"webp"``.
        quality: JPEG and WebP quality, 1-100.

    Returns:
        The pixel size of each preview written, in ``sizes`` order.

    Raises:
        LimitExceededError: If the largest output exceeds ``limits.max_output_pixels``, or a
            JPEG or WebP preview is too large to encode whole.
        OutputError: If a destination cannot be written.
    """
    from previewer import output

    if len(dests) != len(sizes):
        raise ValueError("write_previews needs one destination per size")
    targets, _, _ = plan_page(doc, index, sizes, upscale=upscale, limits=limits)
    for target in targets:
        output.check_encodable(format, target, limits.max_tile_pixels)
    small = [i for i, t in enumerate(targets) if t[0] * t[1] <= limits.max_tile_pixels]
    if len(small) == 1 and format == "png":
        direct = render_page_png(doc, index, sizes[small[0]], upscale=upscale, limits=limits)
        if direct is not None:
            output.write_file(dests[small[0]], direct[0], root=root)
            small = []
    if small:
        images = render_page(doc, index, [sizes[i] for i in small], upscale=upscale, limits=limits)
        for i, image in zip(small, images, strict=True):
            output.write_image(image, dests[i], format, quality, root=root)
        del images
    page = doc.page_size(index)
    for i, target in enumerate(targets):
        if i in small or target[0] * target[1] <= limits.max_tile_pixels:
            continue
        if format != "png":
            whole = render_tiled(doc, index, target, _scale(target, page), limits=limits)
            output.write_image(whole, dests[i], format, quality, root=root)
            del whole
            continue
        bands = _bands(doc, index, target, _scale(target, page), limits)
        output.write_png_stream(dests[i], target[0], target[1], bands, root=root)
    return targets


def render_page_png(
    doc: Document,
    index: int,
    size: SizeSpec,
    *,
    upscale: bool,
    limits: Limits,
) -> tuple[bytes, tuple[int, int]] | None:
    """Encode one preview of a page straight to PNG, if the document can.

    Args:
        doc: An open document.
        index: 0-based page index.
        size: The requested size.
        upscale: Allow raster sources to be enlarged.
        limits: Budgets.

    Returns:
        The PNG bytes (8-bit RGB/RGBA, only an sRGB chunk besides the image data) and the
        pixel size, or None when the document has no such fast path, the output would not fit
        one tile (``limits.max_tile_pixels``), or it could not hit the exact size; the caller
        then uses :func:`render_page`.

    Raises:
        LimitExceededError: If the output exceeds the pixel budget.
    """
    _, target, _ = plan_page(doc, index, [size], upscale=upscale, limits=limits)
    if target[0] * target[1] > limits.max_tile_pixels:
        return None  # one engine render would exceed the tile budget
    data = doc.render_png(index, size=target)
    if not isinstance(data, bytes):
        return None
    from previewer.output import clean_png

    cleaned = clean_png(data, target)
    return (cleaned, target) if cleaned is not None else None


def _exact(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Bring an engine's image to exactly ``target``: crop a rounding pixel or resample."""
    if image.size == target:
        return image
    dw, dh = image.width - target[0], image.height - target[1]
    if 0 <= dw <= 1 and 0 <= dh <= 1:
        # Engines round partial pixels at the far edges up; drop them.
        return image.crop((0, 0, target[0], target[1]))
    from PIL import Image

    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = to_srgb(image)
    return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def to_srgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as 8-bit sRGB, mode RGB or (when it has alpha) RGBA.

    Handles palette images with transparency, 1-bit, 16- and 32-bit integer and float greys,
    CMYK, Lab and YCbCr, and applies an embedded ICC profile (``info["icc_profile"]``).

    Args:
        image: Any Pillow image.

    Returns:
        A new image (or ``image`` itself when already RGB/RGBA without a profile) with no
        ``info`` carried over.
    """
    icc = image.info.get("icc_profile")
    mode = image.mode
    if mode == "P":
        has_alpha = (
            "transparency" in image.info
            or image.palette is not None
            and (image.palette.mode == "RGBA")
        )
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
        icc = None if mode == "RGBA" else icc
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = _scale_to_l(image, 65535 if mode.startswith("I;16") else None)
        mode = "L"
    elif mode == "F":
        image = _scale_to_l(image, None)
        mode = "L"
    elif mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"

    if icc:
        converted = _apply_icc(image, icc)
        if converted is not None:
            return _strip(converted)
    if mode in ("RGB", "RGBA"):
        return _strip(image) if image.info else image
    if mode in ("LA", "La", "RGBa") or "A" in mode:
        return _strip(image.convert("RGBA"))
    if mode == "1":
        return _strip(image.convert("L").convert("RGB"))
    return _strip(image.convert("RGB"))


def _strip(image: Image.Image) -> Image.Image:
    if image.info:
        image = image.copy()
        image.info = {}
    return image


def _scale_to_l(image: Image.Image, maximum: int | None) -> Image.Image:
    """Scale a 16/32-bit integer or float grey image into 8 bits."""
    image = image.convert("I") if image.mode != "F" else image
    if maximum is None:
        extrema: Any = image.getextrema()
        lo, hi = float(extrema[0]), float(extrema[1])
        if image.mode == "F" and 0.0 <= lo and hi <= 1.0:
            lo, hi = 0.0, 1.0
        if hi <= 255 and lo >= 0 and image.mode == "I":
            lo, hi = 0.0, 255.0
    else:
        lo, hi = 0.0, float(maximum)
    span = (hi - lo) or 1.0
    scaled = image.point(lambda v: (v - lo) * 255.0 / span)
    return scaled.convert("L")


def _apply_icc(image: Image.Image, icc: bytes) -> Image.Image | None:
    """Convert ``image`` from its embedded profile to sRGB; None if the profile is unusable."""
    from PIL import ImageCms

    alpha = None
    mode = image.mode
    if mode in ("RGBA", "LA"):
        alpha = image.getchannel("A")
        image = image.convert("RGB" if mode == "RGBA" else "L")
        mode = image.mode
    if mode not in ("RGB", "L", "CMYK", "LAB"):
        return None
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(
            image,
            src,
            _srgb(),
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            outputMode="RGB",
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.debug("ignoring unusable ICC profile: %s", exc)
        return None
    if out is None:  # pragma: no cover - only with inPlace=True
        return None
    if alpha is not None:
        out.putalpha(alpha)
    return out
