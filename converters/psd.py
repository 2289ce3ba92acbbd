"""Photoshop documents (PSD and PSB) through psd-tools, with a Pillow fast path.

The preview is the composite Photoshop shows. The file's structure is checked first by a small
parser (:mod:`previewer.converters.psd_header`: sections inside the file, plausible header), and
the canvas against ``max_pixels``, so a tiny file declaring a 30,000 x 30,000 canvas is refused
before anything is decoded. Then:

- 8-bit PSDs with a stored composite ("maximize compatibility") are decoded by Pillow's PSD
  reader, which only reads that merged image (psd-tools is not even imported); its ICC profile
  goes along, so CMYK and grayscale documents are converted through it. This is also the
  fallback when the layer records are damaged (corrupt rectangles, records past their
  section), unless that composite is one flat colour.
- PSB, 16/32-bit and unusual documents with a stored composite: psd-tools ``topil`` (ICC
  applied).
- No stored composite: a stack of plain pixel layers (normal blending, no masks, effects or
  clipping) is composited at preview scale, each layer scaled down before blending; anything
  else is composited by psd-tools at full size under an allocation budget derived from
  ``max_pixels``, then scaled.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import PSD
from previewer.converters.psd_header import PILLOW_MODES, PsdHeader, read_header
from previewer.errors import EngineError, InputError, LimitExceededError
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["PsdConverter"]

_FLOAT32_PLANES = 5  # psd-tools composites in float32: colour planes + alpha + shape


class PsdConverter(BaseConverter):
    """Previews Photoshop documents (PSD, PSB)."""

    name: ClassVar[str] = PSD.name
    mime_types: ClassVar[frozenset[str]] = PSD.mime_types
    priority: ClassVar[int] = PSD.priority
    sandboxed: ClassVar[bool] = False

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Report whether psd-tools is installed, without importing it (that costs 0.3 s).

        The version comes from the distribution's ``*.dist-info`` directory name: importing
        :mod:`importlib.metadata` would cost more (~30 ms) than the rest of a PSD preview's
        start-up beyond Pillow.
        """
        import importlib.util

        try:
            if importlib.util.find_spec("psd_tools") is None:
                raise ModuleNotFoundError("no module named 'psd_tools'")
            import PIL  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - never raises, by contract
            return Availability(
                False,
                "psd-tools",
                reason=f"psd-tools is not installed ({exc}); pip install psd-tools",
            )
        return Availability(True, "psd-tools", version=_dist_version("psd_tools"))

    def open(self, source: Path, ctx: ConvertContext) -> PsdDocument:
        """Check the header of ``source`` and return a document.

        Raises:
            InputError: Truncated or corrupt file.
            LimitExceededError: The canvas has more pixels than ``ctx.limits.max_pixels``.
        """
        try:
            header = read_header(source)
        except OSError as exc:
            raise InputError(f"cannot read the file: {exc.strerror or exc}") from exc
        if header.layer_error and not _pillow_reads(header):
            # psd-tools parses every layer record before anything else: nothing to fall back to.
            raise InputError(header.layer_error)
        pixels = header.width * header.height
        if pixels > ctx.limits.max_pixels:
            raise LimitExceededError(
                f"canvas is {header.width}x{header.height} = {pixels:,} pixels, over the limit "
                f"of {ctx.limits.max_pixels:,}",
                hint="raise --max-pixels to accept it",
            )
        return PsdDocument(source, header, ctx)


def _pillow_reads(header: PsdHeader) -> bool:
    """Whether Pillow's PSD reader decodes this file's stored composite (8-bit PSD, its modes)."""
    return (
        header.has_composite
        and header.version == 1
        and header.depth in (1, 8)
        and header.mode in PILLOW_MODES
    )


def _dist_version(dist: str) -> str | None:
    """Return the version in the name of ``<dist>-<version>.dist-info`` on ``sys.path``."""
    import sys

    prefix = dist.lower() + "-"
    for base in sys.path:
        try:
            names = os.listdir(base or ".")
        except OSError:
            continue
        for name in names:
            if name.lower().startswith(prefix) and name.endswith(".dist-info"):
                return name[len(prefix) : -len(".dist-info")]
    return None


@contextlib.contextmanager
def _engine_errors(what: str, ctx: ConvertContext) -> Iterator[None]:
    """Translate psd-tools and Pillow exceptions into previewer errors; log their warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except MemoryError as exc:
            raise LimitExceededError(f"not enough memory to {what}") from exc
        except ValueError as exc:
            text = str(exc)
            if "budget" in text or "exceeds the PSD maximum" in text:
                raise LimitExceededError(f"cannot {what}: {text}") from exc
            raise InputError(f"corrupt Photoshop file: {text}") from exc
        except ImportError as exc:
            raise EngineError(f"cannot {what}: psd-tools lacks an optional part ({exc})") from exc
        except (OSError, EOFError, SyntaxError, struct.error, KeyError, IndexError) as exc:
            raise InputError(f"corrupt Photoshop file: {exc}") from exc
        except (TypeError, AttributeError, AssertionError, ZeroDivisionError) as exc:
            raise InputError(f"unreadable Photoshop file: {exc!r}") from exc
    for warning in caught:
        ctx.log.debug("psd: %s", warning.message)


class PsdDocument(BaseDocument):
    """An opened Photoshop document: one page, the canvas, in pixels."""

    units: Literal["pt", "px"] = "px"
    page_count = 1

    def __init__(self, source: Path, header: PsdHeader, ctx: ConvertContext) -> None:
        self._source = source
        self.header = header
        self._ctx = ctx
        self._psd: Any = None
        self._last: tuple[float, Image.Image] | None = None

    def _psdtools(self) -> Any:
        """Open the file with psd-tools once, under our allocation budget."""
        if self._psd is None:
            from psd_tools import PSDImage

            budget = self._ctx.limits.max_pixels * 4 * _FLOAT32_PLANES
            with _engine_errors("read the Photoshop file", self._ctx):
                self._psd = PSDImage.open(self._source, max_alloc_bytes=budget)
        return self._psd

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the canvas size in pixels."""
        return float(self.header.width), float(self.header.height)

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Return the composite scaled by ``scale`` (stored composite when there is one).

        A ``clip`` (tiled rendering) is cut from the whole scaled composite, which is kept for
        the next tile of the same scale.
        """
        if clip is not None:
            return _crop(self._cached(index, scale), clip, scale)
        return self._render(scale)

    def _cached(self, index: int, scale: float) -> Image.Image:
        if self._last is None or self._last[0] != scale:
            self._last = (scale, self._render(scale))
        return self._last[1]

    def _render(self, scale: float) -> Image.Image:
        h = self.header
        target = (max(1, round(h.width * scale)), max(1, round(h.height * scale)))
        if _pillow_reads(h):
            image = self._pillow_composite(target)
        elif h.has_composite:
            with _engine_errors("decode the stored composite", self._ctx):
                image = self._psdtools().topil(apply_icc=True)
            if image is None:  # pragma: no cover - has_composite said otherwise
                raise InputError("the stored composite image cannot be read")
        else:
            image = self._layer_composite(scale, target)
        return _finish(image, target)

    def _pillow_composite(self, target: tuple[int, int]) -> Image.Image:
        """Decode the stored composite with Pillow and scale it inside the open file."""
        from PIL import Image

        with _engine_errors("decode the stored composite", self._ctx):
            with Image.open(self._source, formats=["PSD"]) as opened:
                opened.load()
                if self.header.layer_error:
                    self._check_fallback(opened)
                icc = opened.info.get("icc_profile")
                image: Image.Image = opened
                if image.mode in ("P", "1"):
                    image = image.convert("RGB" if image.mode == "P" else "L")
                image = _finish(image, target) if image.mode != "LAB" else image.copy()
            image.info = {"icc_profile": icc} if icc else {}
        return image

    def _check_fallback(self, composite: Image.Image) -> None:
        """Accept the stored composite of a file whose layer records are damaged, unless blank.

        Pillow reads the merged image without the layer records, so a damaged layer table
        (fuzzed or badly written files) need not lose the preview. A composite of one flat
        colour is not trusted then: writers that skip the merged image fill it with one colour,
        and the layers that would give the picture are unreadable.

        Raises:
            InputError: The composite is one flat colour.
        """
        extrema = composite.getextrema()
        bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
        if all(low == high for low, high in bands):
            raise InputError(f"{self.header.layer_error}, and the stored composite is blank")
        self._ctx.log.info(
            "%s: showing the stored composite, the layer records are damaged",
            self.header.layer_error,
        )

    def _layer_composite(self, scale: float, target: tuple[int, int]) -> Image.Image:
        """Composite the layers: at preview scale when the stack allows, else with psd-tools."""
        psd = self._psdtools()
        with _engine_errors("composite the layers", self._ctx):
            if scale < 1 and _simple_stack(psd):
                return _scaled_composite(psd, scale, target)
            return psd.composite(apply_icc=True)  # type: ignore[no-any-return]

    def metadata(self) -> dict[str, Any]:
        """Return canvas size, colour mode, bit depth, channels, composite flag and layers."""
        h = self.header
        facts: dict[str, Any] = {
            "format": "PSB" if h.version == 2 else "PSD",
            "canvas": [h.width, h.height],
            "color_mode": h.mode_name,
            "bit_depth": h.depth,
            "channels": h.channels,
            "has_composite": h.has_composite,
        }
        if h.layer_error:
            # Whether the file has a preview at all depends on its composite: fail as convert does.
            self._pillow_composite((1, 1))
            facts["layer_error"] = h.layer_error
            return facts
        psd = self._psdtools()
        with _engine_errors("read the layers", self._ctx):
            names = [str(layer.name) for layer in psd.descendants()]
        facts["layer_count"] = len(names)
        facts["layer_names"] = names
        return facts

    def close(self) -> None:
        """Drop the psd-tools document."""
        self._psd = None
        self._last = None


def _simple_stack(psd: Any) -> bool:
    """True when normal-blended pixel layers are all there is (scaling commutes with blending).

    Masks, effects, clipping, adjustment/fill/shape/text layers, non-normal blend modes and
    group opacity all need psd-tools' full compositor.
    """
    if psd.depth != 8 or psd.color_mode.name != "RGB":
        return False
    for layer in psd.descendants():
        if not layer.is_visible():
            continue
        blend = layer.blend_mode.name
        if layer.is_group():
            if blend not in ("PASS_THROUGH", "NORMAL") or layer.opacity != 255:
                return False
            continue
        if layer.kind != "pixel" or blend != "NORMAL" or layer.clipping:
            return False
        if layer.has_effects() or layer.has_vector_mask():
            return False
        if layer.has_mask() and getattr(layer.mask, "real_flags", None) is not None:
            return False  # a vector-derived "real" mask on top of the pixel mask
        if getattr(layer, "fill_opacity", 255) != 255:
            return False
    return True


def _scaled_composite(psd: Any, scale: float, target: tuple[int, int]) -> Image.Image:
    """Alpha-blend every visible layer, each scaled to ``scale`` first, onto a clear canvas."""
    from PIL import Image

    canvas = Image.new("RGBA", target, (0, 0, 0, 0))
    for layer in psd.descendants():
        if layer.is_group() or not layer.is_visible() or layer.width <= 0 or layer.height <= 0:
            continue
        pixels = layer.topil()
        if pixels is None:
            continue
        pixels = pixels.convert("RGBA")
        if layer.has_mask() and not layer.mask.disabled:
            _apply_mask(pixels, layer)
        left, top = layer.left * scale, layer.top * scale
        right, bottom = layer.right * scale, layer.bottom * scale
        x0, y0 = int(left), int(top)
        size = (max(1, round(right - x0)), max(1, round(bottom - y0)))
        factor = min(pixels.width // max(1, size[0]), pixels.height // max(1, size[1]))
        if factor >= 2:
            pixels = pixels.reduce(factor)
        pixels = pixels.resize(size, Image.Resampling.LANCZOS)
        if layer.opacity != 255:
            alpha = pixels.getchannel("A").point(lambda v, o=layer.opacity: v * o // 255)
            pixels.putalpha(alpha)
        layer_canvas = Image.new("RGBA", target, (0, 0, 0, 0))
        layer_canvas.paste(pixels, (x0, y0))
        canvas = Image.alpha_composite(canvas, layer_canvas)
    return canvas


def _apply_mask(pixels: Image.Image, layer: Any) -> None:
    """Multiply the layer's alpha by its (pixel) layer mask, in place."""
    from PIL import Image, ImageChops

    mask = layer.mask
    full = Image.new("L", pixels.size, int(mask.background_color))
    image = mask.topil()
    if image is not None:
        full.paste(image.convert("L"), (mask.left - layer.left, mask.top - layer.top))
    pixels.putalpha(ImageChops.multiply(pixels.getchannel("A"), full))


def _crop(image: Image.Image, clip: Box, scale: float) -> Image.Image:
    """Cut ``clip`` (native units) out of ``image`` rendered at ``scale``."""
    x0, y0, x1, y1 = (round(v * scale) for v in clip)
    cropped = image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
    cropped.info = dict(image.info)
    return cropped


def _finish(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Scale ``image`` to ``target`` keeping its ICC profile; Lab becomes sRGB here."""
    from PIL import Image

    icc = image.info.get("icc_profile")
    if image.mode == "LAB":
        from PIL import ImageCms

        lab = ImageCms.createProfile("LAB", 6500)
        srgb = ImageCms.createProfile("sRGB")
        transform = ImageCms.buildTransform(lab, srgb, "LAB", "RGB")
        image = ImageCms.applyTransform(image, transform) or image
        icc = None
    elif image.mode == "1":
        image = image.convert("L")
    if image.size != target:
        factor = min(image.width // target[0], image.height // target[1])
        if factor >= 2:
            image = image.reduce(factor)
        if image.size != target:
            image = image.resize(target, Image.Resampling.LANCZOS)
    elif getattr(image, "fp", None) is not None:
        image = image.copy()  # detach from the file being closed
    image.info = {"icc_profile": icc} if icc else {}
    return image
