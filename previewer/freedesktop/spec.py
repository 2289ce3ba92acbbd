"""The freedesktop.org Thumbnail Managing Standard: cache paths, names, entries, validity.

A thumbnail of ``/home/u/a b.pdf`` at size "large" lives in
``$XDG_CACHE_HOME/thumbnails/large/<md5 of "file:///home/u/a%20b.pdf">.png``; it is an RGBA PNG
whose tEXt chunks carry ``Thumb::URI`` and ``Thumb::MTime`` (the file's modification time in
whole seconds), plus the optional ``Thumb::Size``, ``Thumb::Mimetype``, ``Thumb::Document::Pages``
or ``Thumb::Image::Width``/``Height``, and ``Software``. A thumbnail is valid while its
``Thumb::MTime`` (and URI) match the file. A file that cannot be thumbnailed gets a 1x1 PNG with
the URI and MTime under ``fail/previewer-<version>/`` so it is not retried until it changes.
Directories are created 0700 and files 0600, written under a temporary name in the same
directory and renamed.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from previewer.errors import InvalidOptionsError, OutputError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "SIZES",
    "ThumbnailFacts",
    "atomic_write",
    "cache_root",
    "fail_path",
    "is_valid",
    "read_text",
    "save_rgba_png",
    "thumbnail_name",
    "thumbnail_path",
    "to_uri",
    "uri_to_path",
    "write_fail_entry",
    "write_thumbnail",
]

SIZES: dict[str, int] = {"normal": 128, "large": 256, "x-large": 512, "xx-large": 1024}
"""The spec's size directories and the longest side of the thumbnails in each."""

# Characters GLib's g_filename_to_uri leaves unescaped in a path (besides letters and digits),
# so our names are the ones GNOME, KDE and Xfce compute for the same file.
_URI_SAFE = "!$&'()*+,-./:=@_~"


def _software() -> str:
    from previewer import __version__

    return f"previewer {__version__}"


def cache_root(environ: dict[str, str] | None = None) -> Path:
    """Return the thumbnail cache directory: ``$XDG_CACHE_HOME/thumbnails``.

    Args:
        environ: Environment to read (default: ``os.environ``).

    Returns:
        ``$XDG_CACHE_HOME/thumbnails``, or ``~/.cache/thumbnails`` when it is unset or relative.
    """
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "thumbnails"


def to_uri(path: str | os.PathLike[str]) -> str:
    """Return the canonical ``file://`` URI of ``path``, escaped like GLib does.

    The path is made absolute and normalised (``.`` and ``..`` removed); symbolic links are
    kept, as file managers keep them. Non-UTF-8 bytes are percent-escaped as bytes.

    Args:
        path: A file path.

    Returns:
        ``file:///...``.
    """
    absolute = os.path.normpath(os.path.abspath(os.fspath(path)))
    if absolute.startswith("//"):
        absolute = "/" + absolute.lstrip("/")
    raw = os.fsencode(absolute)
    return "file://" + urllib.parse.quote_from_bytes(raw, safe=_URI_SAFE)


def uri_to_path(value: str) -> Path:
    """Return the local path of a ``file://`` URI, or ``value`` itself if it is a plain path.

    Args:
        value: A path, or a ``file://`` URI (``file:///x`` or ``file://localhost/x``).

    Returns:
        The path.

    Raises:
        InvalidOptionsError: If it is a URI of another scheme or host.
    """
    if "://" not in value:
        return Path(value)
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme.lower() != "file" or parsed.netloc not in ("", "localhost"):
        raise InvalidOptionsError(f"only local file:// URIs can be thumbnailed, not {value!r}")
    return Path(os.fsdecode(urllib.parse.unquote_to_bytes(parsed.path)))


def thumbnail_name(uri: str) -> str:
    """Return the cache file name for ``uri``: the hex MD5 of the URI, then ``.png``.

    Args:
        uri: A canonical URI (see :func:`to_uri`).

    Returns:
        The file name.
    """
    return (
        hashlib.md5(uri.encode("utf-8", "surrogateescape"), usedforsecurity=False).hexdigest()
        + ".png"
    )


def thumbnail_path(uri: str, size: str, root: Path | None = None) -> Path:
    """Return where the ``size`` thumbnail of ``uri`` lives.

    Args:
        uri: A canonical URI.
        size: ``"normal"``, ``"large"``, ``"x-large"`` or ``"xx-large"``.
        root: The cache directory (default: :func:`cache_root`).

    Returns:
        The path.
    """
    if size not in SIZES:
        raise InvalidOptionsError(f"unknown thumbnail size {size!r} (known: {', '.join(SIZES)})")
    return (root or cache_root()) / size / thumbnail_name(uri)


def fail_path(uri: str, root: Path | None = None) -> Path:
    """Return where previewer's fail entry for ``uri`` lives.

    Args:
        uri: A canonical URI.
        root: The cache directory (default: :func:`cache_root`).

    Returns:
        ``<root>/fail/previewer-<version>/<md5>.png``.
    """
    from previewer import __version__

    return (root or cache_root()) / "fail" / f"previewer-{__version__}" / thumbnail_name(uri)


@dataclass(frozen=True)
class ThumbnailFacts:
    """What a cache entry records about its file.

    Attributes:
        uri: The canonical URI.
        mtime: Modification time in whole seconds.
        size: File size in bytes.
        mime: MIME type.
        pages: Page count of a document (``units == "pt"`` or several pages).
        width: Width in pixels of a single-image raster source.
        height: Height in pixels of a single-image raster source.
    """

    uri: str
    mtime: int
    size: int | None = None
    mime: str | None = None
    pages: int | None = None
    width: int | None = None
    height: int | None = None

    def text(self) -> dict[str, str]:
        """Return the tEXt keys and values, in the spec's order."""
        keys = {"Thumb::URI": self.uri, "Thumb::MTime": str(self.mtime)}
        if self.size is not None:
            keys["Thumb::Size"] = str(self.size)
        if self.mime:
            keys["Thumb::Mimetype"] = self.mime
        if self.pages is not None:
            keys["Thumb::Document::Pages"] = str(self.pages)
        if self.width is not None and self.height is not None:
            keys["Thumb::Image::Width"] = str(self.width)
            keys["Thumb::Image::Height"] = str(self.height)
        keys["Software"] = _software()
        return keys


def _mkdirs(directory: Path) -> None:
    """Create ``directory`` and missing parents with mode 0700 (existing ones are left alone)."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask


def atomic_write(path: Path, writer: Callable[[BinaryIO], None], *, mode: int = 0o600) -> None:
    """Write ``path`` under a temporary name in its directory, set ``mode``, then rename.

    Args:
        path: Destination; missing directories are created with mode 0700.
        writer: Writes the content into an open binary file.
        mode: Permission bits of the finished file.

    Raises:
        OutputError: If the file cannot be written; nothing is left behind then.
    """
    from previewer.output import write_file

    try:
        _mkdirs(path.parent)  # 0700, as the specification asks
    except OSError as exc:
        raise OutputError(
            f"cannot write to {path.parent}: {exc.strerror or exc}", path=str(path)
        ) from exc
    write_file(path, writer, mode=mode)


def save_rgba_png(image: Image.Image, fh: BinaryIO, text: dict[str, str] | None = None) -> None:
    """Encode ``image`` as an 8-bit RGBA, non-interlaced PNG with ``text`` as tEXt chunks.

    Args:
        image: Any Pillow image (converted to RGBA).
        fh: A binary file object.
        text: tEXt keys and values (Latin-1; other characters are written as iTXt by Pillow).
    """
    from PIL import PngImagePlugin

    rgba = image.convert("RGBA") if image.mode != "RGBA" else image.copy()
    rgba.info = {}
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    rgba.save(fh, "PNG", compress_level=6, pnginfo=info)


def write_thumbnail(path: Path, image: Image.Image, facts: ThumbnailFacts) -> None:
    """Write a cache entry: an RGBA PNG carrying ``facts`` as tEXt, mode 0600, atomically.

    Args:
        path: From :func:`thumbnail_path` or :func:`fail_path`.
        image: The thumbnail (a 1x1 transparent image for a fail entry).
        facts: What to record.

    Raises:
        OutputError: If it cannot be written.
    """
    atomic_write(path, lambda fh: save_rgba_png(image, fh, facts.text()))


def write_fail_entry(uri: str, mtime: int, root: Path | None = None) -> Path:
    """Record that previewer cannot thumbnail the file at ``uri`` as it was at ``mtime``.

    Args:
        uri: The canonical URI.
        mtime: The file's modification time in whole seconds.
        root: The cache directory.

    Returns:
        The fail entry's path.
    """
    from PIL import Image

    path = fail_path(uri, root)
    write_thumbnail(path, Image.new("RGBA", (1, 1)), ThumbnailFacts(uri=uri, mtime=mtime))
    return path


def read_text(path: Path) -> dict[str, str] | None:
    """Return the tEXt keys of the PNG at ``path``, or None if it is missing or unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                return None
            return {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
    except (OSError, SyntaxError, ValueError):
        return None


def is_valid(path: Path, uri: str, mtime: int) -> bool:
    """Tell whether the entry at ``path`` is valid for ``uri`` modified at ``mtime``.

    Args:
        path: A thumbnail or fail entry.
        uri: The file's canonical URI.
        mtime: The file's modification time in whole seconds.

    Returns:
        True when its ``Thumb::URI`` is ``uri`` and its ``Thumb::MTime`` equals ``mtime``.
    """
    text = read_text(path)
    if text is None:
        return False
    return text.get("Thumb::URI") == uri and text.get("Thumb::MTime") == str(mtime)
