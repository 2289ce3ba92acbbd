"""Raster images through Pillow: JPEG, PNG/APNG, GIF, WebP, TIFF, BMP, ICO, DDS.

Images are opened with an explicit ``formats=`` allow-list chosen from the sniffed type (Pillow
would otherwise sniff EPS by content and run Ghostscript without a timeout). The pixel count in
the header is checked against the limit before anything is decoded. JPEGs are decoded with DCT
scaling (``draft``) close to the target size, and large reductions use ``reduce`` before the final
Lanczos resample. Multi-page TIFFs are documents with one page per frame; animations (GIF, APNG,
WebP) give their first frame. EXIF orientation is applied.

Giant images never reach Pillow's whole-image decoder: when the decoded image (after JPEG DCT
scaling) or the output would exceed the tile budget (``Limits.max_tile_pixels``), JPEG, PNG,
TIFF and WebP are decoded by libvips (pyvips), which shrinks on load where the format allows
and otherwise reads strips or tiles on demand, so a 16,000 x 16,000 PNG is reduced in bounded
memory; clipped renders (tiles of a streamed output) are regions of that pipeline
(:mod:`previewer.converters.raster_vips`). GIF frames (and other palette or grey frames Pillow
decodes whole) are kept at one byte a pixel and converted and resampled band by band. The EXIF
orientation is read without decoding pixels.

Every exception Pillow raises on damaged data, wherever it is raised (open, frame count, seek,
decode), is an ``InputError`` (:mod:`previewer.converters.raster_decode`).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import RASTER, RASTER_FALLBACK_FORMATS, RASTER_FORMATS
from previewer.converters.raster_decode import (
    DAMAGED,
    TRANSPOSE,
    damaged_data,
    decoded_pixels,
    pillow_warnings,
    png_late_exif,
    resizable,
)
from previewer.converters.raster_vips import (
    PAGED_FORMATS,
    TRANSPOSED,
    VIPS_FORMATS,
    VipsReader,
    pyvips_module,
)
from previewer.errors import InputError, LimitExceededError, UnsupportedFormatError
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["RasterConverter"]


# Source rows converted at a time (as RGBA) when a one-byte frame is scaled band by band.
_BAND_BYTES = 8 << 20


class RasterConverter(BaseConverter):
    """Decodes raster images with Pillow."""

    name: ClassVar[str] = RASTER.name
    mime_types: ClassVar[frozenset[str]] = RASTER.mime_types
    fallback_mime_types: ClassVar[frozenset[str]] = frozenset(RASTER_FALLBACK_FORMATS)
    priority: ClassVar[int] = RASTER.priority
    sandboxed: ClassVar[bool] = False

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Report whether Pillow imports, and its version."""
        try:
            import PIL
        except Exception as exc:  # noqa: BLE001 - never raises, by contract
            return Availability(
                False, "Pillow", reason=f"cannot import PIL ({exc}); pip install pillow"
            )
        return Availability(True, "Pillow", version=PIL.__version__)

    def open(self, source: Path, ctx: ConvertContext) -> RasterDocument:
        """Open ``source`` with the Pillow decoders allowed for ``ctx.mime``.

        Raises:
            InputError: The file is not a readable image of its type.
            LimitExceededError: The header declares more pixels than ``ctx.limits.max_pixels``.
        """
        from PIL import Image, UnidentifiedImageError

        formats = RASTER_FORMATS.get(ctx.mime)
        if formats is None and ctx.fallback_for is not None:
            formats = RASTER_FALLBACK_FORMATS.get(ctx.mime)
        if formats is None:
            raise UnsupportedFormatError(f"Pillow is not allowed to decode {ctx.mime} here")
        with damaged_data(formats[0], ctx), pillow_warnings(ctx):
            try:
                image = Image.open(source, formats=list(formats))
            except UnidentifiedImageError as exc:
                message = f"not a readable {formats[0]} image (corrupt or truncated)"
                raise InputError(message) from exc
        try:
            with damaged_data(formats[0], ctx):
                return RasterDocument(image, ctx)  # counts frames: reads every TIFF directory
        except BaseException:
            image.close()
            raise


class RasterDocument(BaseDocument):
    """An open Pillow image; each frame of a TIFF is a page."""

    units: Literal["pt", "px"] = "px"

    def __init__(self, image: Image.Image, ctx: ConvertContext) -> None:
        self._image: Image.Image | None = image
        self._ctx = ctx
        self.format = image.format or "?"
        frames = int(getattr(image, "n_frames", 1) or 1) if self.format in PAGED_FORMATS else 1
        self.page_count = frames
        self._frames = getattr(image, "n_frames", 1)
        filename = getattr(image, "filename", "")
        self._path = Path(filename) if isinstance(filename, str) and filename else None
        self._vips = VipsReader(self._path, self.format) if self._path is not None else None
        self._orientations: dict[int, int] = {}
        self._check_pixels(0)

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            raise InputError("image already closed")
        return self._image

    def _seek(self, index: int) -> Image.Image:
        image = self.image
        try:
            image.seek(index)
        except DAMAGED as exc:
            text = str(exc) or type(exc).__name__
            raise InputError(f"frame {index + 1} cannot be read: {text}") from exc
        return image

    def _check_pixels(self, index: int) -> None:
        width, height = self._seek(index).size
        limit = self._ctx.limits.max_pixels
        if width * height > limit:
            raise LimitExceededError(
                f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                f"{limit:,}",
                hint="raise --max-pixels to accept it",
            )

    def _orientation(self, image: Image.Image) -> int:
        """The EXIF orientation of the current frame (1 when absent or broken); no pixels read.

        Pillow 13's ``PngImageFile.getexif`` decodes the whole image when no eXIf chunk came
        before the pixels (1 GB for a 16,000 x 16,000 PNG): PNGs are read here instead, from the
        eXIf chunk before the pixels (already parsed by Pillow) or after them (found by walking
        the chunk headers, no data decompressed), and from what Pillow parsed before the pixels
        (XMP ``tiff:Orientation``, ImageMagick's "Raw profile type exif").
        """
        from PIL import Image

        key = image.tell() if self.format in PAGED_FORMATS else 0
        if key in self._orientations:
            return self._orientations[key]
        try:
            if image.format == "PNG" and "exif" not in image.info:
                late = png_late_exif(self._path) if self._path is not None else None
                if late is not None:
                    exif = Image.Exif()
                    exif.load(late)
                else:
                    exif = Image.Image.getexif(image)  # the base class: what open() parsed
            else:
                exif = image.getexif()
            value = exif.get(0x0112, 1)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not stop the preview
            value = 1
        orientation = int(value) if isinstance(value, int) and 1 <= value <= 8 else 1
        self._orientations[key] = orientation
        return orientation

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the displayed size in pixels (after EXIF orientation)."""
        self._check_pixels(index)
        image = self._seek(index)
        width, height = image.size
        if self._orientation(image) in TRANSPOSED:
            width, height = height, width
        return float(width), float(height)

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Decode frame ``index`` and scale it by ``scale``, using DCT scaling when it helps.

        Images whose decoded size or output exceeds the tile budget go through libvips, region
        by region; ``clip`` (displayed pixels, before scaling) selects a region of the result.
        """
        self._check_pixels(index)
        image = self._seek(index)
        width, height = image.size
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        budget = self._ctx.limits.max_tile_pixels
        decoded = decoded_pixels(image, target)
        over = decoded > budget or target[0] * target[1] > budget
        if over and image.mode in ("P", "L") and self._orientation(image) == 1:
            # GIF (and palette or grey PNG/TIFF/BMP... frames Pillow decodes whole anyway): one
            # byte a pixel as stored, converted and resampled band by band. libvips 8.18
            # decodes a GIF frame whole as RGBA: 4 bytes a pixel, 1 GB for 16,000 x 16,000.
            if self.format == "GIF" or self._path is None or self.format not in VIPS_FORMATS:
                return self._render_bands(index, target, clip, scale)
        if self._path is not None and self.format in VIPS_FORMATS:
            # libvips (a large library: ~50 ms to load) only for images over the budget.
            if over and self._vips is not None and pyvips_module() is not None:
                return self._render_vips(index, scale, clip)
        frame = self._render_pillow(index, target)
        if clip is not None:
            x0, y0, x1, y1 = (round(c * scale) for c in clip)
            frame = frame.crop((x0, y0, x1, y1))
        return frame

    def _render_pillow(self, index: int, target: tuple[int, int]) -> Image.Image:
        from PIL import Image

        image = self._seek(index)
        orientation = self._orientation(image)
        with damaged_data(self.format, self._ctx):
            with pillow_warnings(self._ctx):
                if target[0] < image.width and image.format == "JPEG":
                    image.draft(image.mode, target)
                image.load()
                frame = resizable(image)
                if frame is image and self.format not in PAGED_FORMATS and self._frames > 1:
                    frame = image.copy()  # detach the first frame of an animation
                if frame.size != target:
                    frame = frame.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
                elif frame is image:
                    frame = image.copy()
                frame.info = (
                    {"icc_profile": image.info["icc_profile"]}
                    if image.info.get("icc_profile")
                    else {}
                )
                if orientation != 1:
                    info = frame.info
                    frame = frame.transpose(TRANSPOSE[orientation])
                    frame.info = info
        return frame

    def _render_bands(
        self, index: int, target: tuple[int, int], clip: Box | None, scale: float
    ) -> Image.Image:
        """Scale the region ``clip`` of a one-byte frame Pillow decodes whole, band by band.

        The frame stays in its stored mode (palette or grey: one byte a pixel); each band of
        output rows converts only the source rows it needs (with the Lanczos filter's margin)
        and resamples them with Pillow's ``box``, so neighbouring bands and tiles match.
        """
        from PIL import Image

        image = self._seek(index)
        width, height = image.size
        x0, y0, x1, y1 = (0, 0, *target) if clip is None else (round(c * scale) for c in clip)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(target[0], x1), min(target[1], y1)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        sx, sy = width / target[0], height / target[1]
        margin_x, margin_y = math.ceil(3 * max(sx, 1)) + 1, math.ceil(3 * max(sy, 1)) + 1
        cx0, cx1 = max(0, math.floor(x0 * sx) - margin_x), min(width, math.ceil(x1 * sx) + margin_x)
        band_rows = max(1, int(_BAND_BYTES // (4 * (cx1 - cx0)) // max(sy, 1)))
        frame: Image.Image | None = None
        with damaged_data(self.format, self._ctx), pillow_warnings(self._ctx):
            image.load()
            for top in range(y0, y1, band_rows):
                bottom = min(y1, top + band_rows)
                cy0 = max(0, math.floor(top * sy) - margin_y)
                cy1 = min(height, math.ceil(bottom * sy) + margin_y)
                rows = resizable(image.crop((cx0, cy0, cx1, cy1)))
                box = (x0 * sx - cx0, top * sy - cy0, x1 * sx - cx0, bottom * sy - cy0)
                part = rows.resize(
                    (x1 - x0, bottom - top), Image.Resampling.LANCZOS, box=box, reducing_gap=2.0
                )
                if frame is None:
                    frame = Image.new(part.mode, (x1 - x0, y1 - y0))
                frame.paste(part, (0, top - y0))
        assert frame is not None
        return frame

    def _render_vips(self, index: int, scale: float, clip: Box | None) -> Image.Image:
        """Scale frame ``index`` with libvips, returning the region ``clip`` of the result."""
        assert self._vips is not None
        width, height = self.page_size(index)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = self._seek(index)
        region = None
        if clip is not None:
            x0, y0, x1, y1 = (round(c * scale) for c in clip)
            region = (x0, y0, x1, y1)
        return self._vips.render(index, image.size, target, self._orientation(image), region)

    def metadata(self) -> dict[str, Any]:
        """Return the format, mode, stored size, frame count and EXIF orientation."""
        image = self._seek(0)
        return {
            "format": self.format,
            "mode": image.mode,
            "size": list(image.size),
            "frames": int(self._frames),
            "exif_orientation": self._orientation(image),
        }

    def close(self) -> None:
        """Close the image file."""
        if self._vips is not None:
            self._vips.close()
        if self._image is not None:
            self._image.close()
            self._image = None
