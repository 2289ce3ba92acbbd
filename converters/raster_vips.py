"""The giant-image path of the raster converter: libvips pipelines, read region by region.

JPEG, PNG, TIFF, WebP and GIF images whose decoded size or output exceeds the tile budget are
scaled by libvips (pyvips), which shrinks on load where the format allows and otherwise reads
strips or tiles on demand, so a 16,000 x 16,000 PNG is reduced in bounded memory; clipped
renders (the tiles of a streamed output) are regions of one pipeline, fetched top to bottom.
pyvips is imported only when such an image is met (about 50 ms).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from previewer.errors import InputError, LimitExceededError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["PAGED_FORMATS", "TRANSPOSED", "VIPS_FORMATS", "VipsReader", "pyvips_module"]

# Pillow formats libvips decodes region-wise (the giant-image path); others stay with Pillow.
VIPS_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "WEBP", "GIF"})

# Formats whose frames are pages; for the others (animations) only the first frame counts.
PAGED_FORMATS = frozenset({"TIFF"})

# EXIF orientations that swap width and height.
TRANSPOSED = frozenset({5, 6, 7, 8})


@functools.cache
def pyvips_module() -> Any:
    """Import pyvips once, or return None when libvips cannot be loaded."""
    try:
        import pyvips
    except Exception:  # noqa: BLE001 - optional engine: Pillow remains
        return None
    pyvips.cache_set_max(0)  # no operation cache: each conversion streams its own pipeline
    return pyvips


class VipsReader:
    """libvips pipelines scaling the frames of one file, and the region being streamed.

    Args:
        path: The image file.
        fmt: Its Pillow format name.
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self._path = path
        self._format = fmt
        self._current: tuple[tuple[int, tuple[int, int]], tuple[Any, Any, int]] | None = None

    def pipeline(
        self, index: int, stored: tuple[int, int], target: tuple[int, int], orientation: int
    ) -> Any:
        """A libvips pipeline scaling frame ``index`` to exactly ``target`` (EXIF-rotated).

        The input is read sequentially, shrunk on load where the format allows it (JPEG DCT
        scaling; WebP decodes at the reduced size), then box-shrunk by the integer part of the
        remaining factor and resampled (Lanczos 3, alpha premultiplied) by the rest; CMYK is
        converted to sRGB. This is what ``thumbnail`` does, without its buffering: with libvips
        8.18 it peaked at 740 MB scaling a 30,000 x 20,000 JPEG to 8,000 px, this pipeline at
        250 MB (a 16,000 x 16,000 RGBA PNG: 440 MB, 230 MB).

        The orientation is the raster converter's (``orientation``, from the frame of ``stored``
        pixels), not libvips': libvips misses an eXIf chunk after a PNG's pixels, and page sizes
        must agree with the pixels.
        """
        pyvips = pyvips_module()
        width, height = target[::-1] if orientation in TRANSPOSED else target
        options: dict[str, Any] = {"access": "sequential"}
        if self._format in PAGED_FORMATS:
            options["page"] = index
        if self._format in ("JPEG", "MPO"):
            shrink = next(
                (f for f in (8, 4, 2) if stored[0] // f >= width and stored[1] // f >= height), 1
            )
            if shrink > 1:
                options["shrink"] = shrink
        elif self._format == "WEBP" and width < stored[0] and height < stored[1]:
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

    def render(
        self,
        index: int,
        stored: tuple[int, int],
        target: tuple[int, int],
        orientation: int,
        region: tuple[int, int, int, int] | None,
    ) -> Image.Image:
        """Scale frame ``index`` to ``target`` with libvips; return ``region`` of the result.

        Args:
            index: The frame.
            stored: Its stored size in pixels.
            target: The displayed output size.
            orientation: Its EXIF orientation.
            region: ``(x0, y0, x1, y1)`` output pixels, or None for the whole output.

        Raises:
            InputError: libvips found the data truncated or corrupt.
            LimitExceededError: Out of memory.
        """
        from PIL import Image

        pyvips = pyvips_module()
        key = (index, target)
        try:
            if region is None:
                return _vips_to_pillow(self.pipeline(index, stored, target, orientation))
            x0, y0, x1, y1 = region
            x0, y0 = max(0, x0), max(0, y0)
            x1, y1 = min(target[0], x1), min(target[1], y1)
            # A giant PNG or striped TIFF is read sequentially: regions of one pipeline must be
            # fetched through one Region, top to bottom, as the tiles of a streamed output are.
            # A request above the last one starts a new pipeline.
            if self._current is None or self._current[0] != key or y0 < self._current[1][2]:
                eight = _eight_bit(self.pipeline(index, stored, target, orientation))
                self._current = (key, (eight, pyvips.Region.new(eight), y0))
            eight, fetcher, _ = self._current[1]
            self._current = (key, (eight, fetcher, y0))
            w, h = max(1, x1 - x0), max(1, y1 - y0)
            # Fetch a few MB at a time: libvips buffers the source rows a request needs, so
            # one request for a whole 16 MP tile of a 2x reduction holds ~200 MB of input.
            step = max(1, (4 << 20) // (w * eight.bands))
            frame = None
            for top in range(y0, y0 + h, step):
                rows = min(step, y0 + h - top)
                part = _pillow_frame(eight, w, rows, fetcher.fetch(x0, top, w, rows))
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
                raise InputError(f"truncated {self._format} image: {detail}") from exc
            raise InputError(f"corrupt {self._format} image: {detail}") from exc
        except MemoryError as exc:
            raise LimitExceededError("not enough memory to decode the image") from exc
        if frame.mode not in ("L", "LA", "RGB", "RGBA", "CMYK"):  # pragma: no cover
            frame = frame.convert("RGB")
        assert isinstance(frame, Image.Image)
        return frame

    def close(self) -> None:
        """Drop the pipeline being streamed."""
        self._current = None


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
