"""Output naming and atomic PNG writing.

A preview of page P at size S of input ``name`` is ``<out_dir>/<name>.p<P>.<S>.png``. Files are
encoded into a temporary name in the destination directory and renamed into place, so a reader
never sees a half-written PNG. No metadata of the input (EXIF, text chunks, ICC profile) is
copied; the PNG carries an sRGB chunk, since every preview is converted to sRGB.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from PIL import Image, PngImagePlugin

from previewer.errors import OutputError
from previewer.geometry import SizeSpec

__all__ = ["encode_png", "output_name", "write_png"]

PNG_COMPRESS_LEVEL = 6


def output_name(input_name: str, page: int, size: SizeSpec) -> str:
    """Return the file name of a preview.

    Args:
        input_name: The input's file name (no directory part).
        page: 1-based page number.
        size: The requested size.

    Returns:
        ``<input_name>.p<page>.<size label>.png``.
    """
    return f"{input_name}.p{page}.{size.label}.png"


def _pnginfo() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add(b"sRGB", b"\x00")  # rendering intent: perceptual
    return info


def save_png(image: Image.Image, fh: BinaryIO) -> None:
    """Encode ``image`` as PNG into ``fh`` with no metadata but the sRGB chunk.

    Args:
        image: An RGB or RGBA image.
        fh: A binary file object.
    """
    clean = image if not image.info else image.copy()
    clean.info = {}
    clean.save(fh, "PNG", compress_level=PNG_COMPRESS_LEVEL, pnginfo=_pnginfo())


def encode_png(image: Image.Image) -> bytes:
    """Return ``image`` encoded as PNG bytes (see :func:`save_png`).

    Args:
        image: An RGB or RGBA image.

    Returns:
        The PNG file's bytes.
    """
    buf = io.BytesIO()
    save_png(image, buf)
    return buf.getvalue()


def write_png(image: Image.Image, path: Path) -> None:
    """Write ``image`` to ``path`` atomically (temporary file in the same directory, then rename).

    Args:
        image: An RGB or RGBA image.
        path: Destination file; its directory is created if missing.

    Raises:
        OutputError: If the directory or file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(
            f"cannot write to {path.parent}: {exc.strerror or exc}", path=str(path)
        ) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            save_png(image, fh)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=str(path)) from exc
        raise


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
