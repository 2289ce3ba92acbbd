"""EPS, PostScript and non-PDF Illustrator files through Ghostscript (``gs``).

Debian's ImageMagick policy denies the PS/EPS/PDF coders (and a project policy can only tighten
it), so ``gs`` runs directly, through ``ctx.run``: ``-dSAFER -dBATCH -dNOPAUSE``, an argv list, a
wall-clock timeout with the process group killed, and a private, empty ``TMPDIR`` for every run
(Ghostscript 10.0 in SAFER mode still lets PostScript read the shared temp directory). Each
``render`` call renders one page straight to a PNG of the target size in the work directory;
``render_png`` (the one-size fast path) hands that PNG on as it is, so Pillow is not imported.

EPS files are sized by their bounding box (``%%HiResBoundingBox`` when present) and fitted to the
output with ``-dEPSFitPage``; a DOS EPS binary header (TIFF/WMF preview) is stripped first, so
only the PostScript section reaches Ghostscript. PostScript documents use DSC comments for the
page count and ``%%BoundingBox``/``%%DocumentMedia`` for the page size, else A4. A malformed DSC
box (not four numbers) is ignored; one whose numbers overflow is bad input; a PostScript page
so large that the output would need under 2 dpi is over a limit. Files that draw without calling
``showpage`` (EPS meant for embedding, FreeHand ``.ai`` files) get their page emitted after the
file has run. Illustrator files that are PDF-compatible start with ``%PDF`` and are sniffed as
PDF, never reaching here.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from previewer.converters import GHOSTSCRIPT
from previewer.errors import EngineError, InputError, LimitExceededError
from previewer.plugin import Availability, BaseConverter, BaseDocument, Box, ConvertContext

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["GhostscriptConverter"]

DOS_EPS_MAGIC = b"\xc5\xd0\xd3\xc6"
A4 = (595.0, 842.0)
DSC_BYTES = 65536
"""How much of the head (and tail, for ``(atend)``) is searched for DSC comments."""

# DSC comments. The patterns start with a literal "%%" (not "^" with re.M, which makes the
# regex engine try every position: 10x slower, 4 ms per file); _dsc() keeps the line starts.
# Numbers are taken as whole tokens and checked by _numbers(): "1.2.3", "1e30x" or "abc" make
# the comment malformed (ignored), not a crash.
_TOKEN = rb"([^ \t\r\n]+)"
_BBOX = re.compile(rb"%%(HiRes)?BoundingBox:[ \t]*" + rb"[ \t]+".join([_TOKEN] * 4))
_PAGES = re.compile(rb"%%Pages:[ \t]*(\d+)")
_MEDIA = re.compile(rb"%%DocumentMedia:[ \t]*\S+[ \t]+" + _TOKEN + rb"[ \t]+" + _TOKEN)
_NUMBER = re.compile(rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
MIN_DPI = 2.0
"""Ghostscript 10.0 stops with "rangecheck in setscreen" below about 2 dpi."""
_CREATOR = re.compile(rb"%%Creator:[ \t]*([^\r\n]{0,200})")
# Run after the input: a showpage unless the input emitted a page itself.
_EMIT_PAGE = "currentpagedevice /PageCount get 0 eq { showpage } if"
# Ghostscript's report of a PostScript error in the input ("Error: /undefined in foo").
_PS_ERROR = re.compile(r"Error: /(\w+)")


class GhostscriptConverter(BaseConverter):
    """Renders EPS/PS with Ghostscript."""

    name: ClassVar[str] = GHOSTSCRIPT.name
    mime_types: ClassVar[frozenset[str]] = GHOSTSCRIPT.mime_types
    priority: ClassVar[int] = GHOSTSCRIPT.priority
    sandboxed: ClassVar[bool] = True

    @functools.cache  # noqa: B019 - one converter instance per registry; caching is the point
    def availability(self) -> Availability:
        """Find ``gs`` on the PATH (version read lazily: starting it costs a process)."""
        import shutil

        gs = shutil.which("gs")
        if gs is None:
            return Availability(
                False, "Ghostscript", reason="gs not found; apt-get install ghostscript"
            )
        return Availability(True, "Ghostscript", version=_gs_version(gs))

    def open(self, source: Path, ctx: ConvertContext) -> PostScriptDocument:
        """Read the DSC comments of ``source`` and return a document (nothing rendered yet).

        Raises:
            InputError: Not PostScript, or a DOS EPS header pointing outside the file.
        """
        import shutil

        gs = shutil.which("gs")
        if gs is None:
            from previewer.errors import EngineUnavailableError

            raise EngineUnavailableError("gs not found", hint="apt-get install ghostscript")
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read the file: {exc.strerror or exc}") from exc
        preview = None
        ps_path = source
        if data.startswith(DOS_EPS_MAGIC):
            data, preview = _dos_eps(data)
            ps_path = ctx.workdir / "input.eps"
            ps_path.write_bytes(data)
        if not data.lstrip(b"\x04").startswith(b"%!"):
            raise InputError("not a PostScript file (no %! header)")
        return PostScriptDocument(gs, ps_path.resolve(), data, preview, ctx)


@functools.cache
def _gs_version(gs: str) -> str | None:
    """Return Ghostscript's version from its install layout (no process started)."""
    for candidate in sorted(Path("/usr/share/ghostscript").glob("[0-9]*"), reverse=True):
        return candidate.name
    return None


def _dos_eps(data: bytes) -> tuple[bytes, str | None]:
    """Split a DOS EPS binary file into its PostScript section and the kind of preview."""
    if len(data) < 30:
        raise InputError("truncated DOS EPS header")
    ps_off, ps_len, _wmf_off, wmf_len, _tif_off, tif_len = (
        int.from_bytes(data[i : i + 4], "little") for i in range(4, 28, 4)
    )
    if ps_off < 30 or ps_len == 0 or ps_off + ps_len > len(data):
        raise InputError("corrupt DOS EPS header (PostScript section outside the file)")
    preview = "TIFF" if tif_len else "WMF" if wmf_len else None
    return data[ps_off : ps_off + ps_len], preview


class PostScriptDocument(BaseDocument):
    """A PostScript or EPS file: pages in points, rendered on demand by ``gs``."""

    units: Literal["pt", "px"] = "pt"

    def __init__(
        self, gs: str, path: Path, data: bytes, preview: str | None, ctx: ConvertContext
    ) -> None:
        self._gs = gs
        self._path = path
        self._ctx = ctx
        self._runs = 0
        self._last: tuple[tuple[int, float], Image.Image] | None = None
        head = data[:DSC_BYTES]
        tail = data[-DSC_BYTES:]
        first_line = head.split(b"\n", 1)[0]
        self.is_eps = b"EPSF" in first_line
        self.preview = preview
        self.bbox = _bbox(head) or _bbox(tail)
        pages = _dsc(_PAGES, head) or _dsc(_PAGES, tail)
        self.page_count = 1 if self.is_eps or not pages else max(1, int(pages.group(1)))
        self.creator = m.group(1).decode("latin-1").strip() if (m := _dsc(_CREATOR, head)) else ""
        match = _dsc(_MEDIA, head)
        media = _numbers(match.groups(), "%%DocumentMedia") if match else None
        if self.bbox is not None and (self.is_eps or media is None):
            x0, y0, x1, y1 = self.bbox
            self._size = (x1 - x0, y1 - y0)
        elif media is not None:
            self._size = (media[0], media[1])
        else:
            self._size = A4
        if not all(math.isfinite(v) for v in self._size):
            raise InputError(f"the page size overflows (bounding box {self.bbox})")
        if self._size[0] <= 0 or self._size[1] <= 0:
            if self.is_eps:
                raise InputError(f"empty bounding box {self.bbox}")
            self._size = A4

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the page (EPS: bounding box) size in points."""
        return self._size

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Run ``gs`` for page ``index`` at ``scale`` pixels per point and open its PNG.

        A ``clip`` (tiled rendering) is cut from the whole page, which is kept for the next tile
        of the same page and scale, so ``gs`` runs once per page.
        """
        if clip is None:
            return self._render(index, scale)
        if self._last is None or self._last[0] != (index, scale):
            self._last = ((index, scale), self._render(index, scale))
        image = self._last[1]
        x0, y0, x1, y1 = (round(v * scale) for v in clip)
        return image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))

    def render_png(self, index: int, *, size: tuple[int, int]) -> bytes | None:
        """Run ``gs`` for page ``index`` and return its PNG of exactly ``size`` pixels.

        The optional fast path of the converter contract: Ghostscript already writes an 8-bit
        RGB (PostScript) or RGBA (EPS) PNG of the requested size, so a one-size preview needs
        neither Pillow nor a decode and re-encode.

        Returns:
            The PNG bytes, or None if ``size`` exceeds the tile budget (``max_tile_pixels``:
            the caller then renders in tiles).
        """
        if size[0] * size[1] > self._ctx.limits.max_tile_pixels:
            return None
        out = self._run_gs(index, size)
        data = out.read_bytes()
        out.unlink()
        return data

    def _render(self, index: int, scale: float) -> Image.Image:
        from PIL import Image

        width, height = self._size
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        out = self._run_gs(index, target)
        with Image.open(out, formats=["PNG"]) as image:
            image.load()
            result = image.copy()
        out.unlink()
        return result

    def _run_gs(self, index: int, target: tuple[int, int]) -> Path:
        """Render page ``index`` to a PNG of ``target`` pixels in a fresh run directory."""
        width, height = self._size
        if target[0] * target[1] > self._ctx.limits.max_output_pixels:
            raise LimitExceededError(f"a {target[0]}x{target[1]} rendering is over the budget")
        self._runs += 1
        run_dir = self._ctx.workdir / f"gs-{self._runs}"
        tmp = run_dir / "tmp"
        tmp.mkdir(parents=True)
        out = run_dir / "page.png"
        argv = [
            self._gs,
            "-dSAFER",
            "-dBATCH",
            "-dNOPAUSE",
            "-dQUIET",
            "-dNOPROMPT",
            "-sstdout=%stderr",
            "-sDEVICE=" + ("pngalpha" if self.is_eps else "png16m"),
            "-dTextAlphaBits=4",
            "-dGraphicsAlphaBits=4",
            f"-g{target[0]}x{target[1]}",
            "-dFIXEDMEDIA",
        ]
        if self.is_eps:
            # The page is exactly the output size at 72 dpi; EPSFitPage scales the bounding box
            # onto it (no tiny resolutions, which make Ghostscript 10.0 abort).
            argv += ["-r72", "-dEPSFitPage"]
        else:
            xres, yres = 72 * target[0] / width, 72 * target[1] / height
            if min(xres, yres) < MIN_DPI:
                raise LimitExceededError(
                    f"a {width:g} x {height:g} pt page is too large to render at "
                    f"{target[0]}x{target[1]} pixels (Ghostscript needs {MIN_DPI:g} dpi)",
                    hint="ask for a larger --size",
                )
            argv += [
                f"-r{xres:.6f}x{yres:.6f}",
                f"-dFirstPage={index + 1}",
                f"-dLastPage={index + 1}",
            ]
        # After the file, emit the page if the file drew without ever calling showpage (EPS
        # meant for embedding, FreeHand .ai files): the device's PageCount is still 0 then,
        # so a file that did emit its page never gets a second, blank one.
        argv += ["-sOutputFile=" + str(out), "-f", str(self._path), "-c", _EMIT_PAGE]
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(run_dir),
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
        }
        try:
            self._ctx.run(argv, cwd=run_dir, env=env, expect_output=out, read=[self._path])
        except EngineError as exc:
            error = _PS_ERROR.search(str(exc))
            if error is not None and type(exc) is EngineError:
                raise InputError(
                    f"Ghostscript cannot interpret the file (PostScript error /{error.group(1)})"
                ) from exc
            raise
        return out

    def metadata(self) -> dict[str, Any]:
        """Return the kind, bounding box, creator and DOS EPS preview type."""
        return {
            "format": "EPS" if self.is_eps else "PostScript",
            "bounding_box": list(self.bbox) if self.bbox else None,
            "creator": self.creator,
            "binary_preview": self.preview,
        }

    def close(self) -> None:
        """Drop the last rendered page (every render is its own process)."""
        self._last = None


def _bbox(data: bytes) -> tuple[float, float, float, float] | None:
    """The most precise bounding box in ``data`` (HiRes over integer), or None.

    Malformed boxes (not four numbers, ``(atend)``) are skipped.

    Raises:
        InputError: A box's numbers overflow (``1e400``).
    """
    found: tuple[float, float, float, float] | None = None
    for match in _dsc_all(_BBOX, data):
        numbers = _numbers(match.groups()[1:], "%%BoundingBox")
        if numbers is None:
            continue
        box = (numbers[0], numbers[1], numbers[2], numbers[3])
        if match.group(1):
            return box
        found = found or box
    return found


def _numbers(tokens: tuple[bytes | Any, ...], comment: str) -> tuple[float, ...] | None:
    """Parse DSC number tokens; None when one is not a number.

    Raises:
        InputError: A number overflows (not finite as a float).
    """
    if not all(isinstance(t, bytes) and _NUMBER.fullmatch(t) for t in tokens):
        return None
    values = tuple(float(t) for t in tokens)
    if not all(math.isfinite(v) for v in values):
        text = b" ".join(tokens).decode("ascii")[:80]
        raise InputError(f"{comment} out of range ({text})")
    return values


def _dsc_all(pattern: re.Pattern[bytes], data: bytes) -> Iterator[re.Match[bytes]]:
    """The matches of ``pattern`` in ``data`` that start a line."""
    for match in pattern.finditer(data):
        start = match.start()
        if start == 0 or data[start - 1] in b"\r\n":
            yield match


def _dsc(pattern: re.Pattern[bytes], data: bytes) -> re.Match[bytes] | None:
    """The first match of ``pattern`` in ``data`` that starts a line, or None."""
    return next(_dsc_all(pattern, data), None)
