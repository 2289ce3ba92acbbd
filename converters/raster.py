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
memory; clipped renders (tiles of a streamed output) are regions of that pipeline. GIF frames
(and other palette or grey frames Pillow decodes whole) are kept at one byte a pixel and
converted and resampled band by band. The EXIF orientation is read without decoding pixels.

Every exception Pillow raises on damaged data (``_DAMAGED``), wherever it is raised (open, frame
count, seek, decode), is an ``InputError``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import RASTER, RASTER_FALLBACK_FORMATS, RASTER_FORMATS
from previewer.errors import InputError, LimitExceededError, UnsupportedFormatError
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["RasterConverter"]

# Pillow formats libvips decodes region-wise (the giant-image path); others stay with Pillow.
VIPS_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "WEBP", "GIF"})

# Formats whose frames are pages; for the others (animations) only the first frame counts.
PAGED_FORMATS = frozenset({"TIFF"})

# EXIF orientations that swap width and height.
_TRANSPOSED = frozenset({5, 6, 7, 8})

# Walking the chunk headers of a PNG for a late eXIf chunk: how many chunks at most (a giant
# PNG written with 8 KiB IDAT chunks has ~7,000 per 57 MB) and how much EXIF is read.
_PNG_CHUNK_LIMIT = 1_000_000
_EXIF_BYTES = 1 << 20

# Source rows converted at a time (as RGBA) when a one-byte frame is scaled band by band.
_BAND_BYTES = 8 << 20


@functools.cache
def _pyvips() -> Any:
    """Import pyvips once, or return None when libvips cannot be loaded."""
    try:
        import pyvips
    except Exception:  # noqa: BLE001 - optional engine: Pillow remains
        return None
    pyvips.cache_set_max(0)  # no operation cache: each conversion streams its own pipeline
    return pyvips


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
        with _damaged_data(formats[0], ctx), _pillow_warnings(ctx):
            try:
                image = Image.open(source, formats=list(formats))
            except UnidentifiedImageError as exc:
                message = f"not a readable {formats[0]} image (corrupt or truncated)"
                raise InputError(message) from exc
        try:
            with _damaged_data(formats[0], ctx):
                return RasterDocument(image, ctx)  # counts frames: reads every TIFF directory
        except BaseException:
            image.close()
            raise


# What Pillow 13 raises on damaged data, depending on the plugin and where the damage is (TIFF
# without ImageWidth in a later directory: TypeError "Missing dimensions"; short tag data:
# struct.error; bad palettes and tables: IndexError, KeyError, ZeroDivisionError; truncated
# streams: OSError, EOFError, SyntaxError, ValueError). All of it is bad input, wherever it is
# raised (open, frame count, seek, load) and whichever process runs it.
_DAMAGED = (
    OSError,
    SyntaxError,
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    ZeroDivisionError,
)


@contextlib.contextmanager
def _damaged_data(fmt: str, ctx: ConvertContext) -> Iterator[None]:
    """Within the block: Pillow's exceptions become InputError (damaged data) or LimitExceeded.

    Args:
        fmt: The format named in messages ("TIFF").
        ctx: The conversion context (its pixel limit is quoted for decompression bombs).
    """
    from PIL import Image

    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(exc, ctx.limits.max_pixels) from exc
    except MemoryError as exc:
        raise LimitExceededError("not enough memory to decode the image") from exc
    except _DAMAGED as exc:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, ValueError) and "too large" in text.lower():
            raise LimitExceededError(f"image data too large: {text}") from exc
        if "truncated" in text or "broken data stream" in text:
            raise InputError(f"truncated {fmt} image: {text}") from exc
        raise InputError(f"corrupt {fmt} image: {text}") from exc


@contextlib.contextmanager
def _pillow_warnings(ctx: ConvertContext) -> Iterator[None]:
    """Within the block: Pillow's decompression-bomb warning is an error; others are logged.

    Pillow warns about damaged files (``UserWarning: Tag data larger than file``, EXIF
    problems); those must neither reach stderr nor turn into errors under strict filters.
    """
    from PIL import Image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield
    for warning in caught:
        ctx.log.debug("Pillow: %s", warning.message)


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
        self._vips: tuple[tuple[int, tuple[int, int]], tuple[Any, Any, int]] | None = None
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
        except _DAMAGED as exc:
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
                late = _png_late_exif(self._path) if self._path is not None else None
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
        if self._orientation(image) in _TRANSPOSED:
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
        decoded = _decoded_pixels(image, target)
        over = decoded > budget or target[0] * target[1] > budget
        if over and image.mode in ("P", "L") and self._orientation(image) == 1:
            # GIF (and palette or grey PNG/TIFF/BMP... frames Pillow decodes whole anyway): one
            # byte a pixel as stored, converted and resampled band by band. libvips 8.18
            # decodes a GIF frame whole as RGBA: 4 bytes a pixel, 1 GB for 16,000 x 16,000.
            if self.format == "GIF" or self._path is None or self.format not in VIPS_FORMATS:
                return self._render_bands(index, target, clip, scale)
        if self._path is not None and self.format in VIPS_FORMATS:
            # libvips (a large library: ~50 ms to load) only for images over the budget.
            if over and _pyvips() is not None:
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
        with _damaged_data(self.format, self._ctx):
            with _pillow_warnings(self._ctx):
                if target[0] < image.width and image.format == "JPEG":
                    image.draft(image.mode, target)
                image.load()
                frame = _resizable(image)
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
                    frame = frame.transpose(_TRANSPOSE[orientation])
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
        with _damaged_data(self.format, self._ctx), _pillow_warnings(self._ctx):
            image.load()
            for top in range(y0, y1, band_rows):
                bottom = min(y1, top + band_rows)
                cy0 = max(0, math.floor(top * sy) - margin_y)
                cy1 = min(height, math.ceil(bottom * sy) + margin_y)
                rows = _resizable(image.crop((cx0, cy0, cx1, cy1)))
                box = (x0 * sx - cx0, top * sy - cy0, x1 * sx - cx0, bottom * sy - cy0)
                part = rows.resize(
                    (x1 - x0, bottom - top), Image.Resampling.LANCZOS, box=box, reducing_gap=2.0
                )
                if frame is None:
                    frame = Image.new(part.mode, (x1 - x0, y1 - y0))
                frame.paste(part, (0, top - y0))
        assert frame is not None
        return frame

    def _vips_scaled(self, index: int, target: tuple[int, int]) -> Any:
        """A libvips pipeline scaling frame ``index`` to exactly ``target`` (EXIF-rotated).

        The input is read sequentially, shrunk on load where the format allows it (JPEG DCT
        scaling; WebP decodes at the reduced size), then box-shrunk by the integer part of the
        remaining factor and resampled (Lanczos 3, alpha premultiplied) by the rest; CMYK is
        converted to sRGB. This is what ``thumbnail`` does, without its buffering: with libvips
        8.18 it peaked at 740 MB scaling a 30,000 x 20,000 JPEG to 8,000 px, this pipeline at
        250 MB (a 16,000 x 16,000 RGBA PNG: 440 MB, 230 MB).

        The orientation is previewer's (``_orientation``), not libvips': libvips misses an
        eXIf chunk after a PNG's pixels, and page sizes must agree with the pixels.
        """
        pyvips = _pyvips()
        orientation = self._orientation(self._seek(index))
        width, height = target[::-1] if orientation in _TRANSPOSED else target
        options: dict[str, Any] = {"access": "sequential"}
        if self.format in PAGED_FORMATS:
            options["page"] = index
        stored = self._seek(index).size
        if self.format in ("JPEG", "MPO"):
            shrink = next(
                (f for f in (8, 4, 2) if stored[0] // f >= width and stored[1] // f >= height), 1
            )
            if shrink > 1:
                options["shrink"] = shrink
        elif self.format == "WEBP" and width < stored[0] and height < stored[1]:
            options["scale"] = max(width / stored[0], height / stored[1])
        source = pyvips.Source.new_from_file(str(self._path))
        image = pyvips.Image.new_from_source(source, "", **options)
        fmt = image.format
        shrink_x, shrink_y = int(image.width // width), int(image.height // height)
        if shrink_x > 1 or shrink_y > 1:
            # Box-averaged as stored (straight alpha): premultiplying first would make every
            # buffer of the pipeline float, 4x the memory, for edges a thumbnail cannot show.
            image = image.shrink(max(1, shrink_x), max(1, shrink_y))
        if (image.width, image.height) != (width, height):
            # Lanczos on premultiplied alpha (in float: only the last, small factor).
            alpha = image.hasalpha()
            if alpha:
                image = image.premultiply()
            image = image.resize(
                width / image.width, vscale=height / image.height, kernel="lanczos3"
            )
            if (image.width, image.height) != (width, height):  # libvips rounds: one pixel
                image = image.crop(0, 0, min(width, image.width), min(height, image.height))
                image = image.embed(0, 0, width, height, extend="copy")
            if alpha:
                image = image.unpremultiply()
            if image.format != fmt:
                image = image.cast(fmt)
        if image.interpretation == "cmyk":
            # As libvips' thumbnail does: through the embedded profile, else libvips' own CMYK
            # profile (a naive conversion turns print pink into magenta).
            image = image.icc_transform("srgb", input_profile="cmyk", embedded=True)
        if orientation != 1:
            image = image.copy()
            image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
            image = image.autorot()
        return image

    def _render_vips(self, index: int, scale: float, clip: Box | None) -> Image.Image:
        """Scale frame ``index`` with libvips, returning the region ``clip`` of the result."""
        from PIL import Image

        pyvips = _pyvips()
        width, height = self.page_size(index)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        key = (index, target)
        try:
            if clip is None:
                return _vips_to_pillow(self._vips_scaled(index, target))
            x0, y0, x1, y1 = (round(c * scale) for c in clip)
            x0, y0 = max(0, x0), max(0, y0)
            x1, y1 = min(target[0], x1), min(target[1], y1)
            # A giant PNG or striped TIFF is read sequentially: regions of one pipeline must be
            # fetched through one Region, top to bottom, as the tiles of a streamed output are.
            # A request above the last one starts a new pipeline.
            if self._vips is None or self._vips[0] != key or y0 < self._vips[1][2]:
                eight = _eight_bit(self._vips_scaled(index, target))
                self._vips = (key, (eight, pyvips.Region.new(eight), y0))
            eight, region, _ = self._vips[1]
            self._vips = (key, (eight, region, y0))
            w, h = max(1, x1 - x0), max(1, y1 - y0)
            # Fetch a few MB at a time: libvips buffers the source rows a request needs, so
            # one request for a whole 16 MP tile of a 2x reduction holds ~200 MB of input.
            step = max(1, (4 << 20) // (w * eight.bands))
            frame = None
            for top in range(y0, y0 + h, step):
                rows = min(step, y0 + h - top)
                part = _pillow_frame(eight, w, rows, region.fetch(x0, top, w, rows))
                if frame is None:
                    frame = part if rows == h else Image.new(part.mode, (w, h))
                    frame.info = part.info
                if frame is not part:
                    frame.paste(part, (0, top - y0))
            assert frame is not None
        except pyvips.Error as exc:
            text = str(exc).strip().splitlines()
            detail = text[-1] if text else "libvips failed"
            if "truncated" in detail or "premature" in detail or "end of" in detail.lower():
                raise InputError(f"truncated {self.format} image: {detail}") from exc
            raise InputError(f"corrupt {self.format} image: {detail}") from exc
        except MemoryError as exc:
            raise LimitExceededError("not enough memory to decode the image") from exc
        if frame.mode not in ("L", "LA", "RGB", "RGBA", "CMYK"):  # pragma: no cover
            frame = frame.convert("RGB")
        assert isinstance(frame, Image.Image)
        return frame

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
        self._vips = None
        if self._image is not None:
            self._image.close()
            self._image = None


def _png_late_exif(path: Path) -> bytes | None:
    """Return the payload of an eXIf chunk that follows the image data of the PNG at ``path``.

    Only the 8-byte chunk headers are read (each chunk's data is skipped with a seek), so a
    giant PNG costs a few thousand small reads and nothing is decompressed. Stops at IEND, at
    a header that runs past the end of the file, or after ``_PNG_CHUNK_LIMIT`` chunks.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        pos = 8
        fh.seek(pos)
        for _ in range(_PNG_CHUNK_LIMIT):
            head = fh.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if pos + 12 + length > size:
                return None
            if kind == b"eXIf":
                return fh.read(min(length, _EXIF_BYTES))
            if kind == b"IEND":
                return None
            pos += 12 + length
            fh.seek(pos)
    return None


def _bomb(exc: Exception, limit: int) -> LimitExceededError:
    """Describe Pillow's decompression-bomb refusal with the numbers."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f"{int(match.group(1)):,} pixels" if match else "too many pixels"
    return LimitExceededError(
        f"image has {pixels}, over the limit of {limit:,}",
        hint="raise --max-pixels to accept it",
    )


def _decoded_pixels(image: Image.Image, target: tuple[int, int]) -> int:
    """Pixels Pillow would decode to reach ``target``: JPEG DCT scaling (``draft``) included."""
    width, height = image.size
    if image.format in ("JPEG", "MPO"):
        # The factor Pillow's JpegImageFile.draft picks: the largest of 8, 4, 2, 1 that keeps
        # the decoded image at least as large as the target.
        ratio = min(width // max(1, target[0]), height // max(1, target[1]))
        factor = next(f for f in (8, 4, 2, 1) if ratio >= f or f == 1)
        return -(-width // factor) * -(-height // factor)
    return width * height


def _eight_bit(image: Any) -> Any:
    """Bring a libvips image to 8 bits and at most 4 bands (CMYK kept as CMYK)."""
    if image.format != "uchar":
        if image.interpretation in ("rgb16", "grey16") or image.format == "ushort":
            image = image.colourspace("srgb" if image.bands >= 3 else "b-w")
        if image.format != "uchar":
            image = image.cast("uchar")
    if image.bands > 4:
        image = image[:4]
    return image


def _pillow_frame(image: Any, width: int, height: int, data: bytes) -> Image.Image:
    """Wrap 8-bit pixels of ``image`` (libvips) as a Pillow image, keeping its ICC profile."""
    from PIL import Image

    if image.interpretation == "cmyk" and image.bands == 4:
        mode = "CMYK"
    else:
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[image.bands]
    frame = Image.frombytes(mode, (width, height), data)
    if image.get_typeof("icc-profile-data") != 0:
        frame.info["icc_profile"] = bytes(image.get("icc-profile-data"))
    return frame


def _vips_to_pillow(image: Any) -> Image.Image:
    """Copy a whole libvips image into Pillow as 8-bit L, LA, RGB, RGBA or CMYK."""
    image = _eight_bit(image)
    return _pillow_frame(image, image.width, image.height, image.write_to_memory())


def _resizable(image: Image.Image) -> Image.Image:
    """Convert modes that cannot be resampled faithfully, keeping transparency and depth.

    Palette images become RGB, or RGBA when they have transparency; a colour-key
    (``tRNS``) grey or RGB image becomes RGBA; 16-bit grey is scaled to 8 bits by its bit
    depth (not stretched by its own range); 1-bit becomes 8-bit grey. Other modes are left to
    the final sRGB conversion.
    """
    mode = image.mode
    if mode in ("P", "PA"):
        alpha = (
            mode == "PA"
            or "transparency" in image.info
            or (image.palette is not None and image.palette.mode == "RGBA")
        )
        return image.convert("RGBA" if alpha else "RGB")
    if mode in ("L", "RGB") and "transparency" in image.info:
        return image.convert("RGBA")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return image.convert("I").point(lambda v: v / 256).convert("L")
    if mode == "1":
        return image.convert("L")
    return image


class _Transposes:
    """EXIF orientation -> the transposition that displays the image upright (lazy Pillow)."""

    def __getitem__(self, orientation: int) -> Image.Transpose:
        from PIL import Image

        return {
            2: Image.Transpose.FLIP_LEFT_RIGHT,
            3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270,
            7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90,
        }[orientation]


_TRANSPOSE = _Transposes()
