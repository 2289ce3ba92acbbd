"""Camera RAW files (DNG, CR2/CR3/CRW, NEF/NRW, ARW, ORF, RW2, PEF, RAF, X3F, ...) through LibRaw.

The engine is rawpy, whose wheel bundles LibRaw. A RAW file is one page whose size is the
sensor's full image (LibRaw's ``sizes.width`` x ``sizes.height``), turned by its orientation
(LibRaw's ``sizes.flip``): that is what ``page_size`` reports and what output sizes are fitted
to. ``render`` takes the cheapest source that is large enough for the output asked for:

1. the preview the camera embedded (``extract_thumb``: a JPEG, decoded by Pillow with DCT
   scaling, or a bitmap), when it is at least as large as the output in both directions;
   nothing of the sensor data is unpacked then;
2. otherwise a half-size demosaic (``postprocess(half_size=True)``: each 2x2 Bayer block
   becomes one pixel, as-shot white balance, 8 bits; about 0.5 s of CPU for 24 MP), when
   that is large enough;
3. otherwise a full demosaic (only for outputs larger than half the sensor).

The decoded source is kept for the document's life, so the tiles of a large output decode it
once. The embedded preview is displayed with its own EXIF orientation when it has one and with
the RAW's otherwise (cameras rarely tag their previews).

Limits. rawpy runs LibRaw in this process, and previewer runs every conversion of a converter
that is not ``warm_engine`` in a child process under the limits (a single conversion in the
child :func:`previewer.limited.run_limited` forks; each file of a batch in a pool worker under
the same address-space cap and deadline): an allocation past ``max_memory`` fails in LibRaw
(``LibRawUnsufficientMemoryError``, a ``MemoryError``) instead of hurting the caller, a hang is
killed at the deadline. rawpy does not expose LibRaw's own allocation cap
(``max_raw_memory_mb``, 2 GiB by default, which still applies), so before unpacking anything the
header's dimensions are checked against ``max_pixels`` and the memory the decode will need
against ``max_memory``: a file declaring 60,000 x 60,000 pixels is refused in milliseconds.
LibRaw itself refuses dimensions above 64,000. OpenMP (rawpy's build uses it) only starts its
threads in the child that decodes, never in a process that later forks.

Every LibRaw error is translated here: unsupported, truncated or corrupt files are
``InputError``; sizes over a limit and allocation failures are ``LimitExceededError``.
"""

from __future__ import annotations

import functools
import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import CAMERA_RAW
from previewer.converters.camera_raw_tags import camera_names, displayed, exif_flip, upright
from previewer.converters.raster_decode import pillow_warnings
from previewer.errors import InputError, LimitExceededError
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    import rawpy
    from PIL import Image

__all__ = ["CameraRawConverter", "CameraRawDocument"]

# Bytes per pixel LibRaw holds while demosaicing: the unpacked sensor data (2 per photosite),
# its 4 x 16-bit working image and the 8-bit RGB output (over the demosaiced pixels).
_RAW_BYTES, _WORK_BYTES, _OUT_BYTES = 2, 8, 3


class CameraRawConverter(BaseConverter):
    """Previews camera RAW files with LibRaw (rawpy): embedded preview, else a demosaic."""

    name: ClassVar[str] = CAMERA_RAW.name
    mime_types: ClassVar[frozenset[str]] = CAMERA_RAW.mime_types
    priority: ClassVar[int] = CAMERA_RAW.priority
    sandboxed: ClassVar[bool] = False

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Report whether rawpy imports, with the version of the LibRaw it bundles.

        rawpy imports numpy, whose OpenBLAS starts a thread pool on import unless told not to;
        a process that imports it (previewer imports engines in a long-lived caller from a
        converter's second conversion on) then has threads and can no longer fork its
        conversion children directly. rawpy needs no BLAS, so when numpy is not loaded yet,
        ``OPENBLAS_NUM_THREADS`` defaults to 1 for it.
        """
        try:
            rawpy = _rawpy()
        except Exception as exc:  # noqa: BLE001 - never raises, by contract
            return Availability(
                False, "LibRaw (rawpy)", reason=f"cannot import rawpy ({exc}); pip install rawpy"
            )
        version = ".".join(str(part) for part in rawpy.libraw_version)
        binding = getattr(rawpy, "__version__", "?")
        return Availability(True, "LibRaw (rawpy)", version=f"{version} (rawpy {binding})")

    def open(self, source: Path, ctx: ConvertContext) -> CameraRawDocument:
        """Open ``source`` with LibRaw (reads the header and metadata, decodes nothing).

        Raises:
            InputError: LibRaw cannot read the file (unsupported, truncated, corrupt).
            LimitExceededError: The declared sensor size is over ``max_pixels``.
        """
        raw = _rawpy().RawPy()  # not rawpy.imread: its fork check warns in every pool worker
        try:
            with libraw_errors(ctx):
                raw.open_file(str(source))
            return CameraRawDocument(raw, source, ctx)
        except BaseException:
            raw.close()
            raise


def _rawpy() -> Any:
    """Import rawpy (see :meth:`CameraRawConverter.availability` about OpenBLAS threads)."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import rawpy

    return rawpy


@contextmanager
def libraw_errors(ctx: ConvertContext, doing: str = "read") -> Iterator[None]:
    """Within the block: LibRaw's exceptions become previewer errors saying why."""
    import rawpy

    try:
        yield
    except (rawpy.LibRawTooBigError, rawpy.LibRawMemPoolOverflowError) as exc:
        raise LimitExceededError(
            f"LibRaw refuses the RAW image as too big to {doing}: {_text(exc)}",
            hint="the file declares more sensor data than LibRaw allows",
        ) from exc
    except (rawpy.LibRawUnsufficientMemoryError, MemoryError) as exc:
        message = f"ran out of memory: LibRaw could not {doing} the RAW data"
        raise LimitExceededError(message) from exc
    except rawpy.LibRawFileUnsupportedError as exc:
        raise InputError(
            f"LibRaw cannot {doing} it: not a RAW file or an unsupported camera format ({ctx.mime})"
        ) from exc
    except rawpy.LibRawIOError as exc:
        raise InputError(
            f"truncated or unreadable RAW data (LibRaw could not {doing} it: {_text(exc)})"
        ) from exc
    except rawpy.LibRawDataError as exc:
        raise InputError(f"corrupt RAW data (LibRaw: {_text(exc)})") from exc
    except rawpy.LibRawError as exc:
        raise InputError(f"LibRaw could not {doing} the RAW file: {_text(exc)}") from exc


def _text(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else ""
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
    return text or type(exc).__name__


class CameraRawDocument(BaseDocument):
    """An open RAW file: one page, the sensor's image at its displayed size."""

    units: Literal["pt", "px"] = "px"
    page_count = 1

    def __init__(self, raw: rawpy.RawPy, path: Path, ctx: ConvertContext) -> None:
        self._raw: rawpy.RawPy | None = raw
        self._path = path
        self._ctx = ctx
        sizes = raw.sizes
        self._sizes = sizes
        self.flip = int(sizes.flip)
        width, height = int(sizes.width), int(sizes.height)
        if width <= 0 or height <= 0:
            raise InputError(f"the RAW header declares an empty image ({width}x{height})")
        stored = int(sizes.raw_width) * int(sizes.raw_height)
        limit = ctx.limits.max_pixels
        if max(stored, width * height) > limit:
            raise LimitExceededError(
                f"RAW image is {width}x{height} (sensor data {sizes.raw_width}x"
                f"{sizes.raw_height}), over the limit of {limit:,} pixels",
                hint="raise max_pixels to accept it",
            )
        self._size = (height, width) if self.flip & 4 else (width, height)
        self._preview: Image.Image | None = None
        self._preview_jpeg: bytes | None = None
        self._preview_size: tuple[int, int] | None = None
        self._preview_flip = 0
        self._preview_checked = False
        self._decoded: dict[bool, Image.Image] = {}
        self.source_used: str | None = None

    @property
    def raw(self) -> rawpy.RawPy:
        """The open LibRaw handle."""
        if self._raw is None:
            raise InputError("RAW file already closed")
        return self._raw

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the sensor image's displayed size in pixels (after its orientation)."""
        return float(self._size[0]), float(self._size[1])

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Render the photo at ``scale`` from the embedded preview or a demosaic, upright."""
        from PIL import Image

        width, height = self._size
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = self._from_preview(target)
        if image is None:
            half = target[0] * 2 <= width + 1 and target[1] * 2 <= height + 1
            self.source_used = "half-size demosaic" if half else "demosaic"
            image = self._demosaic(half)  # upright already: postprocess applies the flip
        if image.size != target:
            image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
        if clip is not None:
            x0, y0, x1, y1 = (round(c * scale) for c in clip)
            image = image.crop((x0, y0, x1, y1))
        return image

    def _from_preview(self, target: tuple[int, int]) -> Image.Image | None:
        """The embedded preview scaled to ``target`` and upright, or None when it will not do.

        It will not do when there is none, when it is smaller than ``target`` or framed
        differently from the sensor image, or when it cannot be decoded (then it is logged
        and the sensor data is demosaiced instead).
        """
        preview = self._embedded()
        if preview is None:
            return None
        flip = self._preview_flip
        shown = displayed(preview.size, flip)
        if shown[0] < target[0] or shown[1] < target[1] or not _same_shape(shown, self._size):
            return None
        try:
            with pillow_warnings(self._ctx):
                image = upright(_scaled(preview, displayed(target, flip)), flip)
        except Exception as exc:  # noqa: BLE001 - any decoder failure: demosaic instead
            self._ctx.log.debug("embedded preview cannot be decoded (%s); demosaicing", exc)
            return None
        self.source_used = "embedded preview"
        return image

    def _embedded(self) -> Image.Image | None:
        """The camera's embedded preview, or None; a JPEG is opened afresh (header only).

        A JPEG is reopened for every render, so each gets its own DCT scaling (``draft``).
        """
        if self._preview_checked:
            if self._preview_jpeg is not None:
                return self._open_jpeg(self._preview_jpeg)
            return self._preview
        self._preview_checked = True
        import rawpy
        from PIL import Image

        try:
            with libraw_errors(self._ctx, "extract the preview of"):
                try:
                    thumb = self.raw.extract_thumb()
                except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                    return None
        except InputError as exc:
            self._ctx.log.debug("no usable embedded preview: %s", exc)
            return None
        if thumb.format == rawpy.ThumbFormat.JPEG:
            image = self._open_jpeg(bytes(thumb.data))
            if image is None:
                return None
            flip = exif_flip(image.getexif().get(0x0112, 1))
            self._preview_flip = self.flip if not flip else flip
            self._preview_jpeg = bytes(thumb.data)
            self._preview_size = image.size
            return image
        data = thumb.data
        if isinstance(data, bytes) or data.ndim != 3 or data.shape[2] not in (1, 3):
            return None
        image = Image.fromarray(data[:, :, 0] if data.shape[2] == 1 else data)
        self._preview_flip = self.flip
        self._preview = image
        self._preview_size = image.size
        return image

    def _open_jpeg(self, data: bytes) -> Image.Image | None:
        from PIL import Image

        try:
            with pillow_warnings(self._ctx):
                return Image.open(io.BytesIO(data), formats=["JPEG"])
        except Exception as exc:  # noqa: BLE001 - damaged or over the pixel limit: demosaic
            self._ctx.log.debug("embedded preview is not a readable JPEG: %s", exc)
            return None

    def _demosaic(self, half: bool) -> Image.Image:
        """Demosaic the sensor data (half size: 2x2 blocks as pixels), as-shot white balance."""
        if half in self._decoded:
            return self._decoded[half]
        from PIL import Image

        self._check_memory(half)
        with libraw_errors(self._ctx, "decode"):
            rgb = self.raw.postprocess(
                half_size=half,
                use_camera_wb=True,
                no_auto_bright=False,
                output_bps=8,
            )
        image = Image.fromarray(rgb)
        del rgb
        self._decoded[half] = image
        return image

    def _check_memory(self, half: bool) -> None:
        sizes = self._sizes
        pixels = int(sizes.width) * int(sizes.height) // (4 if half else 1)
        need = int(sizes.raw_width) * int(sizes.raw_height) * _RAW_BYTES + pixels * (
            _WORK_BYTES + 2 * _OUT_BYTES
        )
        budget = self._ctx.limits.max_memory
        if need > budget:
            raise LimitExceededError(
                f"decoding this {sizes.width}x{sizes.height} RAW image needs about {need:,} "
                f"bytes, over max_memory ({budget:,} bytes)",
                hint="raise max_memory or ask for a size the embedded preview covers",
            )

    def metadata(self) -> dict[str, Any]:
        """Camera, exposure, sensor size, orientation and the embedded preview's size."""
        raw = self.raw
        sizes = self._sizes
        facts: dict[str, Any] = {
            "raw_size": [int(sizes.raw_width), int(sizes.raw_height)],
            "image_size": [int(sizes.width), int(sizes.height)],
            "libraw_flip": self.flip,
            "colors": raw.color_desc.decode("ascii", "replace"),
        }
        facts.update(camera_names(self._path))
        other = raw.other
        if other.iso_speed > 0:
            facts["iso"] = round(float(other.iso_speed))
        if other.shutter_speed > 0:
            facts["exposure_time"] = float(other.shutter_speed)
        if other.aperture > 0:
            facts["f_number"] = round(float(other.aperture), 1)
        self._embedded()
        size = self._preview_size
        facts["embedded_preview"] = (
            None if size is None else list(displayed(size, self._preview_flip))
        )
        facts["rendered_from"] = self.source_used
        return facts

    def close(self) -> None:
        """Release LibRaw's buffers and the decoded images."""
        self._decoded.clear()
        self._preview = self._preview_jpeg = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None


def _same_shape(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two sizes' aspect ratios differ by under 3 % (a preview of the whole frame)."""
    return abs(a[0] / a[1] - b[0] / b[1]) <= 0.03 * b[0] / b[1]


def _scaled(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` scaled to ``size``; a JPEG is decoded with DCT scaling close to it first."""
    from PIL import Image

    if image.format == "JPEG" and size[0] < image.width:
        image.draft("RGB", size)
    image.load()
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
