"""The catch-all: raster formats ImageMagick reads well, through Wand in a child process.

XCF, TGA, PCX, PNM/PBM/PGM/PPM/PAM, DDS, PICT, SGI, JPEG 2000, HEIC/AVIF: types no dedicated
converter claims. ImageMagick can abort or crash the interpreter on hostile input, so Wand never
runs in previewer's process: :mod:`converters.magick_worker` runs under ``ctx.run`` (timeout,
process group killed), decodes the file once and writes a full-size 8-bit sRGB PNG into the work
directory, which this module opens with Pillow (``formats=["PNG"]`` only) and scales.

Every run gets previewer's policy (``magick-policy/policy.xml``, shipped with this package, filled
in with the conversion's limits and written into a private ``MAGICK_CONFIGURE_PATH``): every
coder, delegate and path denied, read access only to the coders above (the write side only to
PNG), MVG/MSL/TEXT/URL/EPHEMERAL/SVG/PS/PDF/XPS and ``@`` paths denied, resource limits from
``max_pixels`` and the timeout. A header declaring more pixels than ImageMagick may decode is
refused before the worker starts when its format has fixed header fields (XCF, PCX, TGA, SGI,
DDS, PNM), else by the worker from ImageMagick's ping. The worker checks that this policy is
in force before reading and the converter reports ImageMagick unavailable when it is not. The
input is given to ImageMagick as an open file with an explicit coder chosen from previewer's
sniffing, never as a file name (ImageMagick interprets ``name[2x2+0+0]`` and ``coder:``
prefixes).
"""

from __future__ import annotations

import functools
import json
import re
import string
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import MAGICK, MAGICK_CODERS, MAGICK_FALLBACK_CODERS
from previewer.errors import (
    EngineError,
    EngineTimeoutError,
    EngineUnavailableError,
    InputError,
    LimitExceededError,
)
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MagickConverter", "pixel_budget"]

POLICY_TEMPLATE = Path(__file__).with_name("magick-policy") / "policy.xml"
_MIB = 1 << 20


class MagickConverter(BaseConverter):
    """Decodes the remaining raster formats with ImageMagick (Wand), isolated in a child."""

    name: ClassVar[str] = MAGICK.name
    mime_types: ClassVar[frozenset[str]] = MAGICK.mime_types
    fallback_mime_types: ClassVar[frozenset[str]] = frozenset(MAGICK_FALLBACK_CODERS)
    priority: ClassVar[int] = MAGICK.priority
    sandboxed: ClassVar[bool] = True

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Check Wand, libMagickWand and the policy template are there (no ImageMagick loaded).

        Whether the policy is in force is checked by the worker before each read.
        """
        from importlib import metadata

        try:
            version = metadata.version("wand")
        except metadata.PackageNotFoundError:
            return Availability(False, "ImageMagick", reason="Wand is missing; pip install wand")
        if _wand_suffix() is None:
            return Availability(
                False,
                "ImageMagick",
                reason="libMagickWand not found; apt-get install libmagickwand-6.q16-6",
            )
        if not POLICY_TEMPLATE.is_file():
            return Availability(
                False, "ImageMagick", reason=f"policy template missing: {POLICY_TEMPLATE}"
            )
        return Availability(True, "ImageMagick", version=f"Wand {version}")

    def open(self, source: Path, ctx: ConvertContext) -> MagickDocument:
        """Decode ``source`` in the worker and return the document.

        Raises:
            UnsupportedFormatError: No coder is allowed for ``ctx.mime``.
            InputError: ImageMagick cannot read the file (or the policy refused it).
            LimitExceededError: A resource limit was reached.
            EngineUnavailableError: The expected policy is not in force.
            EngineError: The worker crashed.
        """
        from previewer.errors import UnsupportedFormatError

        coder = MAGICK_CODERS.get(ctx.mime)
        if coder is None and ctx.fallback_for is not None:
            coder = MAGICK_FALLBACK_CODERS.get(ctx.mime)
        if coder is None:
            raise UnsupportedFormatError(f"ImageMagick is not allowed to decode {ctx.mime} here")
        _check_header(coder, source, ctx)
        run_dir = ctx.workdir / "magick"
        config, tmp = run_dir / "config", run_dir / "tmp"
        config.mkdir(parents=True)
        tmp.mkdir()
        (config / "policy.xml").write_text(_policy(ctx, tmp), encoding="utf-8")
        out = run_dir / "image.png"
        argv, env = worker_command(ctx, coder, source, out)
        try:
            result = ctx.run(argv, cwd=run_dir, env=env, expect_output=out, read=[source.resolve()])
        except EngineTimeoutError:
            raise
        except EngineError as exc:
            raise _translate(exc) from exc
        try:
            facts = json.loads(result.stdout.decode("utf-8").strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise EngineError("the ImageMagick worker reported nothing") from exc
        width, height = facts["size"]
        if width * height > ctx.limits.max_pixels:
            raise LimitExceededError(
                f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                f"{ctx.limits.max_pixels:,}",
                hint="raise --max-pixels to accept it",
            )
        return MagickDocument(out, facts, ctx)


def worker_command(
    ctx: ConvertContext, coder: str, source: Path, out: Path
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of the worker converting ``source`` to ``out`` with ``coder``.

    The one place the worker's command line is made. It runs in ``ctx.workdir / "magick"``,
    which holds ``config/policy.xml`` and the private ``tmp`` directory.

    Args:
        ctx: The conversion context (limits, fallback flag, work directory).
        coder: The ImageMagick coder to read the input with.
        source: The input file.
        out: Where the worker writes its PNG.

    Returns:
        The argv list and the complete environment.
    """
    run_dir = ctx.workdir / "magick"
    argv = [sys.executable, "-I", "-m", "previewer.converters.magick_worker"]
    argv.append(f"--max-pixels={pixel_budget(ctx)}")
    if ctx.fallback_for is not None:
        argv.append("--strict")  # a fallback must not render damaged data
    argv.append(coder)
    argv += [str(source.resolve()), str(out)]
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(run_dir),
        "TMPDIR": str(run_dir / "tmp"),
        "MAGICK_TEMPORARY_PATH": str(run_dir / "tmp"),
        "MAGICK_CONFIGURE_PATH": str(run_dir / "config"),
        "MAGICK_THREAD_LIMIT": "1",
    }
    suffix = _wand_suffix()
    if suffix is not None:
        env["WAND_MAGICK_LIBRARY_SUFFIX"] = suffix  # Wand tries the library found here first
    return argv, env


@functools.cache
def _wand_suffix() -> str | None:
    """The suffix of the libMagickWand installed (``-6.Q16``), found without running ldconfig.

    ``ctypes.util.find_library`` would start ``ldconfig``, ``gcc`` and ``ld``; the worker's
    resolver looks in the dynamic linker's directories instead.
    """
    from .magick_worker import find_shared_library

    for suffix in ("-6.Q16", "-7.Q16HDRI", "-7.Q16", "-6.Q16HDRI"):
        if find_shared_library(f"MagickWand{suffix}") is not None:
            return suffix
    return None


def _check_header(coder: str, source: Path, ctx: ConvertContext) -> None:
    """Refuse an image whose header declares more pixels than ImageMagick may take, at once.

    The worker pings every input (ImageMagick's header read) before decoding it, but some
    coders do far more than read a header when pinged: ImageMagick 6.9's XCF reader allocates
    the declared canvas (60,000 x 60,000 took 16 s to fail), and the PCX and SGI readers read
    the pixel data and report a short file rather than the size. The formats whose header is
    a few fixed fields are checked here, before any process starts.

    Raises:
        LimitExceededError: The declared size is over :func:`pixel_budget`.
    """
    try:
        with open(source, "rb") as fh:
            head = fh.read(1024)
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}") from exc
    size = _declared_size(coder, head)
    if size is None:
        return
    width, height = size
    budget = pixel_budget(ctx)
    if width * height <= budget:
        return
    pixels = f"image is {width}x{height} = {width * height:,} pixels"
    if budget < ctx.limits.max_pixels:  # the same words as the worker's refusal
        raise LimitExceededError(
            f"ImageMagick: {pixels}; ImageMagick decodes whole images (8 bytes a pixel) and "
            f"may take {budget:,} here (raise --max-memory or --max-pixels)"
        )
    raise LimitExceededError(
        f"{pixels}, over the limit of {budget:,}", hint="raise --max-pixels to accept it"
    )


def _declared_size(coder: str, head: bytes) -> tuple[int, int] | None:
    """The image size the header of a ``coder`` file declares, or None (unknown or unsure).

    XCF: "gimp xcf " + version + big-endian width, height. PCX: little-endian xmin, ymin,
    xmax, ymax at 4. TGA: little-endian width, height at 12. SGI: magic 474, big-endian
    xsize, ysize at 6. DDS: "DDS " + size, flags, little-endian height, width. PNM: the
    first two numbers after the magic (comments skipped); PAM: its WIDTH and HEIGHT lines.
    """
    if coder == "XCF" and head.startswith(b"gimp xcf ") and len(head) >= 22:
        width, height = struct.unpack(">II", head[14:22])
    elif coder == "PCX" and len(head) >= 12 and head[0] == 0x0A:
        x0, y0, x1, y1 = struct.unpack("<HHHH", head[4:12])
        width, height = x1 - x0 + 1, y1 - y0 + 1
    elif coder == "TGA" and len(head) >= 18:
        width, height = struct.unpack("<HH", head[12:16])
    elif coder == "SGI" and len(head) >= 10 and head[:2] == b"\x01\xda":
        width, height = struct.unpack(">HH", head[6:10])
    elif coder == "DDS" and len(head) >= 20 and head[:4] == b"DDS ":
        height, width = struct.unpack("<II", head[12:20])
    elif coder == "PNM" and head[:1] == b"P":
        return _pnm_size(head)
    else:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _pnm_size(head: bytes) -> tuple[int, int] | None:
    """Width and height of a PBM/PGM/PPM (``P1``-``P6``) or PAM (``P7``) header."""
    if head[:2] == b"P7":
        fields = dict(
            line.split(None, 1)
            for line in head.split(b"\n")[1:]
            if line[:1].isalpha() and len(line.split(None, 1)) == 2
        )
        width, height = fields.get(b"WIDTH", b"").strip(), fields.get(b"HEIGHT", b"").strip()
        if width.isdigit() and height.isdigit():
            return int(width), int(height)
        return None
    if head[1:2] not in b"123456" or len(head) < 3:
        return None
    tokens = re.sub(rb"#[^\r\n]*", b" ", head[2:]).split()
    if len(tokens) >= 2 and tokens[0].isdigit() and tokens[1].isdigit():
        return int(tokens[0]), int(tokens[1])
    return None


def _cache_bytes(ctx: ConvertContext) -> int:
    """ImageMagick's pixel-cache budget: half the worker memory cap, within the pixel limit.

    ImageMagick 6 decodes whole images (no streaming) into a cache of 8 bytes per pixel (Q16
    RGBA); the other half of ``--max-memory`` is for the interpreter, the libraries and the
    output.
    """
    limits = ctx.limits
    return max(64 * _MIB, min(limits.max_pixels * 8, limits.max_memory // 2))


def pixel_budget(ctx: ConvertContext) -> int:
    """Largest image (in pixels) handed to ImageMagick: what its pixel cache can hold."""
    return min(ctx.limits.max_pixels, _cache_bytes(ctx) // 8)


def _policy(ctx: ConvertContext, tmp: Path) -> str:
    """Fill the policy template in with this conversion's limits."""
    pixels = ctx.limits.max_pixels
    memory = _cache_bytes(ctx)
    template = string.Template(POLICY_TEMPLATE.read_text(encoding="utf-8"))
    # Map and disk (files in the private temp directory) only as much again as memory: images
    # over pixel_budget() are refused from their header before anything is decoded.
    return template.substitute(
        memory=f"{memory // _MIB}MiB",
        map=f"{memory // _MIB}MiB",
        disk=f"{memory // _MIB}MiB",
        area=str(pixels),
        width=str(min(pixels, 1 << 20)),
        height=str(min(pixels, 1 << 20)),
        time=str(max(1, int(ctx.limits.timeout))),
        tmpdir=str(tmp),
    )


def _translate(exc: EngineError) -> Exception:
    """Map the worker's exit report to previewer's errors."""
    text = str(exc)
    for tag, kind in (
        ("PREVIEWER-INPUT:", InputError),
        ("PREVIEWER-LIMIT:", LimitExceededError),
        ("PREVIEWER-POLICY:", EngineUnavailableError),
    ):
        if tag in text:
            message = text.split(tag, 1)[1].strip().splitlines()[0]
            return kind(f"ImageMagick: {message}")
    if "killed by signal" in text:
        return EngineError(f"ImageMagick crashed on this file ({text.split(':', 1)[0]})")
    return EngineError(text)


class MagickDocument(BaseDocument):
    """The worker's full-size PNG of the input: one page, in pixels."""

    units: Literal["pt", "px"] = "px"
    page_count = 1

    def __init__(self, png: Path, facts: dict[str, Any], ctx: ConvertContext) -> None:
        self._png = png
        self._facts = facts
        self._ctx = ctx
        width, height = facts["size"]
        self._size = (float(width), float(height))

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the image size in pixels (after EXIF orientation, layers flattened)."""
        return self._size

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Open the worker's PNG and scale it by ``scale`` (then cut ``clip`` out, if given)."""
        from PIL import Image

        try:
            with Image.open(self._png, formats=["PNG"]) as opened:
                opened.load()
                image = opened.convert("RGBA" if _has_alpha(opened) else "RGB")
        except (OSError, ValueError) as exc:
            raise EngineError(f"the ImageMagick worker wrote an unreadable PNG: {exc}") from exc
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if image.size != target:
            factor = min(image.width // target[0], image.height // target[1])
            if factor >= 2:
                image = image.reduce(factor)
            image = image.resize(target, Image.Resampling.LANCZOS)
        if clip is not None:  # tiled rendering: cut the tile out of the scaled image
            x0, y0, x1, y1 = (round(v * scale) for v in clip)
            image = image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
        return image

    def metadata(self) -> dict[str, Any]:
        """Return the coder, frame/layer count, stored size, colour space and depth."""
        facts = self._facts
        return {
            "format": facts.get("coder"),
            "frames": facts.get("frames"),
            "size": facts.get("canvas"),
            "colorspace": facts.get("colorspace"),
            "depth": facts.get("depth"),
        }

    def close(self) -> None:
        """Nothing to release: the work directory is removed by previewer."""


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
