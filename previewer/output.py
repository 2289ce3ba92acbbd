"""Output naming, atomic writes, and encoding previews as PNG, JPEG or WebP.

A preview of page P at size S of input ``name`` is ``<out_dir>/<name>.p<P>.<S>.<ext>``, the
extension ``png``, ``jpg`` or ``webp`` following the format (:data:`EXTENSIONS`). Files are
encoded into a temporary name in the destination directory and renamed into place, so a reader
never sees a half-written file; neither step follows a symbolic link planted in the output tree.
No metadata of the input (EXIF, text chunks, ICC profile) is copied; a PNG carries an sRGB
chunk, since every preview is converted to sRGB (JPEG and WebP files carry no profile and are
read as sRGB by default). JPEG has no alpha: transparent areas are flattened onto white.

Only PNG can be written band by band (:func:`stream_png`, for previews larger than the tile
budget); JPEG and WebP are encoded from the whole image (:mod:`previewer.encoders`, whose
:func:`~previewer.encoders.check_encodable` says how large it may be).
"""

from __future__ import annotations

import errno
import functools
import io
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from previewer.encoders import (
    EXTENSIONS,
    MAX_EDGE,
    MIMETYPES,
    WHOLE_IMAGE_TILES,
    check_encodable,
    flatten,
    save_lossy,
)
from previewer.errors import OutputError
from previewer.geometry import SizeSpec
from previewer.options import DEFAULT_QUALITY

if TYPE_CHECKING:
    from PIL import Image, PngImagePlugin

__all__ = [
    "EXTENSIONS",
    "MAX_EDGE",
    "MIMETYPES",
    "WHOLE_IMAGE_TILES",
    "check_encodable",
    "clean_png",
    "encode_image",
    "encode_png",
    "flatten",
    "mimetype",
    "open_dir",
    "output_name",
    "save_image",
    "stream_png",
    "write_file",
    "write_image",
    "write_png",
    "write_png_stream",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SRGB_CHUNK = b"sRGB"
# Chunks a preview keeps: the image itself, and the sRGB chunk previewer adds.
KEPT_CHUNKS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})

PNG_COMPRESS_LEVEL = 6


def output_name(input_name: str, page: int, size: SizeSpec, format: str = "png") -> str:
    """Return the file name of a preview.

    Args:
        input_name: The input's file name (no directory part).
        page: 1-based page number.
        size: The requested size.
        format: The preview format (``"png"``, ``"jpeg"``, ``"webp"``).

    Returns:
        ``<input_name>.p<page>.<size label>.<ext>``, ``ext`` being ``png``, ``jpg`` or ``webp``.
    """
    return f"{input_name}.p{page}.{size.label}.{EXTENSIONS[format]}"


def mimetype(format: str) -> str:
    """Return the MIME type of a preview format.

    Args:
        format: ``"png"``, ``"jpeg"`` or ``"webp"``.

    Returns:
        ``image/png``, ``image/jpeg`` or ``image/webp``.
    """
    return MIMETYPES[format]


def save_image(
    image: Image.Image, fh: BinaryIO, format: str = "png", quality: int = DEFAULT_QUALITY
) -> None:
    """Encode ``image`` into ``fh`` as ``format``, carrying none of the input's metadata.

    Args:
        image: An RGB or RGBA image.
        fh: A binary file object.
        format: ``"png"`` (see :func:`save_png`), ``"jpeg"`` (alpha flattened onto white) or
            ``"webp"`` (lossy, alpha kept).
        quality: JPEG and WebP quality, 1-100 (ignored for PNG).
    """
    if format == "png":
        save_png(image, fh)
        return
    save_lossy(image, fh, format, quality)


def encode_image(image: Image.Image, format: str = "png", quality: int = DEFAULT_QUALITY) -> bytes:
    """Return ``image`` encoded as ``format`` (see :func:`save_image`).

    Args:
        image: An RGB or RGBA image.
        format: ``"png"``, ``"jpeg"`` or ``"webp"``.
        quality: JPEG and WebP quality, 1-100.

    Returns:
        The file's bytes.
    """
    buf = io.BytesIO()
    save_image(image, buf, format, quality)
    return buf.getvalue()


def write_image(
    image: Image.Image,
    path: Path,
    format: str = "png",
    quality: int = DEFAULT_QUALITY,
    *,
    root: Path | None = None,
) -> None:
    """Write ``image`` to ``path`` as ``format``, atomically (see :func:`write_file`).

    Args:
        image: An RGB or RGBA image.
        path: Destination file; its directory is created if missing.
        format: ``"png"``, ``"jpeg"`` or ``"webp"``.
        quality: JPEG and WebP quality, 1-100.
        root: The output tree's top (see :func:`write_file`).

    Raises:
        OutputError: If the directory or file cannot be written.
    """
    write_file(path, lambda fh: save_image(image, fh, format, quality), root=root)


def _pnginfo() -> PngImagePlugin.PngInfo:
    from PIL import PngImagePlugin

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


def write_png(image: Image.Image, path: Path, *, root: Path | None = None) -> None:
    """Write ``image`` to ``path`` as PNG, atomically (see :func:`write_file`).

    Args:
        image: An RGB or RGBA image.
        path: Destination file; its directory is created if missing.
        root: The output tree's top (see :func:`write_file`).

    Raises:
        OutputError: If the directory or file cannot be written.
    """
    write_file(path, lambda fh: save_png(image, fh), root=root)


def stream_png(fh: BinaryIO, width: int, height: int, bands: Iterable[Image.Image]) -> None:
    """Encode an image given as horizontal bands into ``fh`` as PNG, band by band.

    Only one band is held at a time (the PNG encoder is pypng, fed row by row), so an output
    larger than memory can be written. The PNG carries the sRGB chunk and nothing else but the
    image; rows use PNG filter type 0, which costs some size on photographs, none on documents.

    Args:
        fh: A binary file object.
        width: Image width in pixels.
        height: Image height in pixels.
        bands: Bands of whole rows, top to bottom, adding up to ``height`` rows, all ``width``
            wide and of one mode, ``"RGB"`` or ``"RGBA"`` (the first band's decides).

    Raises:
        ValueError: If the bands do not match the declared size or mode.
    """
    import png

    class _Writer(png.Writer):  # type: ignore[misc]
        def write_preamble(self, outfile: BinaryIO) -> None:
            super().write_preamble(outfile)
            png.write_chunk(outfile, SRGB_CHUNK, b"\x00")  # rendering intent: perceptual

    source = iter(bands)
    held = [next(source)]
    mode = held[0].mode
    if mode not in ("RGB", "RGBA"):
        raise ValueError(f"cannot stream a {mode} image as PNG")
    stride = width * len(mode)
    chunk_rows = max(1, (4 << 20) // stride)

    def every_band() -> Iterator[Image.Image]:
        yield held.pop()
        yield from source

    def rows() -> Iterator[memoryview]:
        # Bands are exported a few MB at a time and dropped before the next one is rendered,
        # so memory holds one band plus one chunk of bytes.
        seen = 0
        for band in every_band():
            if band.mode != mode or band.width != width:
                raise ValueError(f"band {band.mode} {band.size} does not fit {mode} {width} wide")
            for top in range(0, band.height, chunk_rows):
                bottom = min(top + chunk_rows, band.height)
                data = memoryview(band.crop((0, top, width, bottom)).tobytes())
                for start in range(0, len(data), stride):
                    yield data[start : start + stride]
            seen += band.height
            del band
        if seen != height:
            raise ValueError(f"bands hold {seen} rows, not {height}")

    writer = _Writer(
        width,
        height,
        greyscale=False,
        alpha=mode == "RGBA",
        bitdepth=8,
        compression=PNG_COMPRESS_LEVEL,
    )
    writer.write_packed(fh, rows())


def write_png_stream(
    path: Path,
    width: int,
    height: int,
    bands: Iterable[Image.Image],
    *,
    root: Path | None = None,
) -> None:
    """Write bands of an image to ``path`` as one PNG, atomically (see :func:`stream_png`).

    Args:
        path: Destination file; its directory is created if missing.
        width: Image width in pixels.
        height: Image height in pixels.
        bands: Bands of whole rows, top to bottom, all RGB or all RGBA.
        root: The output tree's top (see :func:`write_file`).

    Raises:
        OutputError: If the directory or file cannot be written.
    """
    write_file(path, lambda fh: stream_png(fh, width, height, bands), root=root)


def clean_png(data: bytes, size: tuple[int, int]) -> bytes | None:
    """Keep only the image chunks of an engine's PNG and add an sRGB chunk.

    Args:
        data: A PNG file's bytes.
        size: The pixel size it must have.

    Returns:
        The cleaned PNG, or None if ``data`` is not an 8-bit RGB or RGBA PNG of ``size``.
    """
    if not data.startswith(PNG_SIGNATURE):
        return None
    chunks: list[bytes] = []
    pos = len(PNG_SIGNATURE)
    header: tuple[int, ...] | None = None
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return None
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data[pos + 8 : pos + 8 + 13])
        if kind in KEPT_CHUNKS:
            chunks.append(data[pos:end])
            if kind == b"IHDR":
                chunks.append(_chunk(SRGB_CHUNK, b"\x00"))  # perceptual intent
        pos = end
        if kind == b"IEND":
            break
    if header is None or (header[0], header[1]) != size:
        return None
    if header[2] != 8 or header[3] not in (2, 6) or header[6] != 0:
        return None  # only 8-bit RGB/RGBA, not interlaced
    return PNG_SIGNATURE + b"".join(chunks)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def write_file(
    path: Path,
    writer: bytes | Callable[[BinaryIO], None],
    *,
    mode: int | None = None,
    root: Path | None = None,
) -> None:
    """Write ``path`` atomically: into a temporary file in the same directory, then rename.

    The directory is opened once and the temporary file is created, filled and renamed relative
    to it, never through a symbolic link: the temporary name is new (``O_EXCL``), and the
    rename replaces whatever is at ``path`` (a planted link included) instead of writing
    through it. With ``root``, the folders from ``root`` down to ``path``'s directory are
    entered (and created) one by one without following symbolic links, so a link planted in
    the output tree cannot lead outside it.

    Args:
        path: Destination file; its directory is created if missing.
        writer: The bytes to write, or a function writing them into an open binary file.
        mode: Permission bits of the finished file (default: 0666 minus the umask).
        root: The output tree's top, an ancestor of ``path`` (links above it are followed).

    Raises:
        OutputError: If the directory or file cannot be written, or a folder below ``root``
            is a symbolic link.
    """
    dir_fd = open_dir(path.parent, root)
    try:
        try:
            fd, tmp = _create_temp(dir_fd, path.name)
        except OSError as exc:
            raise OutputError(
                f"cannot write to {path.parent}: {exc.strerror or exc}", path=str(path)
            ) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                if isinstance(writer, bytes):
                    fh.write(writer)
                else:
                    writer(fh)
                os.fchmod(fh.fileno(), 0o666 & ~_umask() if mode is None else mode)
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write: {exc.strerror or exc}", path=str(path)) from exc
            raise
    finally:
        os.close(dir_fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_dir(directory: Path, root: Path | None = None) -> int:
    """Open ``directory`` (creating it if missing) and return its descriptor.

    ``root`` and its ancestors are the caller's and are followed as they are; each folder
    below ``root`` is created and entered relative to its parent's descriptor with
    ``O_NOFOLLOW``, so none of them can be a symbolic link.

    Args:
        directory: The directory; ``root`` or a folder below it when ``root`` is given.
        root: The output tree's top (default: ``directory`` itself).

    Returns:
        A descriptor of the directory, for the caller to close.

    Raises:
        OutputError: If it cannot be created or opened, or a folder below ``root`` is a
            symbolic link or not a directory.
    """
    top = directory if root is None else root
    try:
        parts = directory.relative_to(top).parts
    except ValueError:
        raise OutputError(f"{directory} is not inside the output directory {top}") from None
    try:
        top.mkdir(parents=True, exist_ok=True)
        fd = os.open(top, _DIR_FLAGS)
    except OSError as exc:
        raise OutputError(f"cannot write to {top}: {exc.strerror or exc}", path=str(top)) from exc
    here = top
    try:
        for part in parts:
            here = here / part
            if part == "..":
                raise OutputError(f"{directory} climbs out of {top}", path=str(directory))
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                sub = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(here):
                    raise OutputError(
                        "is a symbolic link, and links inside the output directory are not "
                        "followed",
                        path=str(here),
                        hint="remove the link, or convert into another output directory",
                    ) from None
                raise OutputError(
                    f"cannot write to {here}: {exc.strerror or exc}", path=str(here)
                ) from exc
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create_temp(dir_fd: int, name: str) -> tuple[int, str]:
    """Create a new, exclusive temporary file beside ``name`` in the directory ``dir_fd``.

    Not :func:`tempfile.mkstemp`: it takes a directory *path* and resolves it again when it
    creates the file, so a folder of the output tree swapped for a symbolic link after
    :func:`open_dir` checked it would be followed. Creating the file relative to the
    descriptor :func:`open_dir` opened with ``O_NOFOLLOW`` (``openat``) keeps that check valid
    (``/proc/self/fd/N`` as mkstemp's ``dir`` would too, but needs ``/proc``, which some
    sandboxes do not mount).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _attempt in range(100):
        tmp = f".{name[:100]}.{os.urandom(6).hex()}.tmp"
        try:
            return os.open(tmp, flags, 0o600, dir_fd=dir_fd), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {name}")


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
