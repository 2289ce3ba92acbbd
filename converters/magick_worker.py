"""The child process that runs ImageMagick (through Wand) for :mod:`converters.magick`.

Run as ``python -m converters.magick_worker CODER INPUT OUTPUT`` by ``ctx.run`` with an
environment that names previewer's policy (``MAGICK_CONFIGURE_PATH``) and a private temporary
directory. ImageMagick can abort or crash the interpreter on hostile input (``text:``/``msl:``
content under Debian's policy), so it never runs inside previewer itself: a crash here is a
failed file there.

The worker first checks that the effective policy is previewer's (dangerous coders, delegates
and ``@`` paths denied, the input's coder allowed); it then reads INPUT from an open file with
the explicit coder CODER (never a file name, which ImageMagick would interpret), flattens layered
images (XCF) onto their canvas or takes the first frame, applies EXIF orientation, converts to
8-bit sRGB and writes OUTPUT as PNG. It prints one JSON line with the source's facts.

With ``--max-pixels=N`` before CODER, an image whose header declares more pixels than N (in
any frame) is refused before it is decoded (exit 4). With ``--strict`` before CODER
(previewer's fallback after another converter failed), any ImageMagick warning while reading
(corrupt or truncated data, which it would otherwise render grey-filled) is a failure.

Exit statuses: 0 done, 2 bad input, 3 policy not in force, 4 resource limit reached.

Wand finds libMagickWand and libc with ``ctypes.util.find_library``, which on Linux runs
``/sbin/ldconfig -p`` and then ``gcc`` and ``ld`` for every name it does not find (Wand tries
about twenty names): a dozen programs started by every worker. The worker makes it look in the
dynamic linker's directories instead (:func:`find_shared_library`), before Wand is imported;
``WAND_MAGICK_LIBRARY_SUFFIX`` (set by :mod:`converters.magick`) makes Wand try the library the
converter found first.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import sys
from typing import Any

__all__ = ["DENIED_CODERS", "check_policy", "find_shared_library", "main"]

EXIT_INPUT = 2
EXIT_POLICY = 3
EXIT_LIMIT = 4

DENIED_CODERS = (
    "MVG",
    "MSL",
    "TEXT",
    "URL",
    "HTTP",
    "HTTPS",
    "EPHEMERAL",
    "SVG",
    "MSVG",
    "PS",
    "EPS",
    "PDF",
    "XPS",
)
"""Coders the policy must deny; checked before every read."""

# MagickCore enums (ImageMagick 6 policy.h).
_CODER, _DELEGATE, _PATH = 1, 2, 4
_READ, _WRITE, _EXECUTE = 1, 2, 4


_DEFAULT_LIB_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
"""The dynamic linker's built-in directories, searched after those of ``/etc/ld.so.conf``."""


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    """The directories ``ldconfig`` indexes: ``/etc/ld.so.conf`` (and its includes), defaults."""
    import glob

    dirs: list[str] = []
    pending, seen = ["/etc/ld.so.conf"], set()
    while pending:
        conf = pending.pop(0)
        if conf in seen:
            continue
        seen.add(conf)
        try:
            with open(conf, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line.startswith("include"):
                for pattern in line.split()[1:]:
                    pattern = os.path.join(os.path.dirname(conf), pattern)
                    pending.extend(sorted(glob.glob(pattern)))
            elif line.startswith("/"):
                dirs.append(line)
    return tuple(dict.fromkeys([*dirs, *_DEFAULT_LIB_DIRS]))


@functools.cache
def _listing(directory: str) -> tuple[str, ...]:
    try:
        return tuple(sorted(os.listdir(directory)))
    except OSError:
        return ()


@functools.cache
def _elf_kind(path: str) -> bytes | None:
    """Class, byte order and machine of an ELF file (None when not ELF, e.g. a linker script)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return None
    return head[4:6] + head[18:20] if len(head) == 20 and head[:4] == b"\x7fELF" else None


def find_shared_library(name: str) -> str | None:
    """Find ``lib<name>.so*`` as ``ctypes.util.find_library`` would, without starting a program.

    Args:
        name: The library name without ``lib`` and suffix ("MagickWand-6.Q16", "c").

    Returns:
        The path of the first matching ELF shared object built for this interpreter's machine,
        in the directories ``ldconfig`` indexes (shortest name first: ``libc.so.6`` before a
        development ``libc.so``), or None.
    """
    pattern = re.compile(re.escape(f"lib{name}") + r"\.so(\.\d+)*")
    ours = _elf_kind(os.path.realpath(sys.executable))
    for directory in _library_dirs():
        found = sorted(
            (n for n in _listing(directory) if pattern.fullmatch(n)),
            key=lambda n: (n.endswith(".so"), len(n), n),
        )
        for candidate in found:
            path = os.path.join(directory, candidate)
            if _elf_kind(path) == ours and ours is not None:
                return path
    return None


def _resolve_libraries_without_programs() -> None:
    """Make ``ctypes.util.find_library`` (Wand calls it at import) :func:`find_shared_library`."""
    import ctypes.util

    ctypes.util.find_library = find_shared_library


def check_policy(coder: str) -> str | None:
    """Return why the effective policy is not previewer's, or None when it is.

    Args:
        coder: The coder about to be used; it must be allowed for reading.
    """
    from wand.api import libmagick

    authorized = libmagick.IsRightsAuthorized
    authorized.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
    authorized.restype = ctypes.c_int
    for name in DENIED_CODERS:
        if authorized(_CODER, _READ, name.encode()):
            return f"the ImageMagick policy allows reading {name}"
    if authorized(_CODER, _READ, b"SOMETHING-NEW"):
        return "the ImageMagick policy does not deny unknown coders"
    if authorized(_PATH, _READ, b"@/etc/passwd") or authorized(_PATH, _READ, b"/etc/passwd"):
        return "the ImageMagick policy allows reading arbitrary paths"
    if authorized(_DELEGATE, _EXECUTE, b"gs"):
        return "the ImageMagick policy allows delegates"
    if not authorized(_CODER, _READ, coder.encode()):
        return f"the ImageMagick policy does not allow reading {coder}"
    return None


class _ExceptionInfo(ctypes.Structure):
    # The head of MagickCore's ExceptionInfo (ImageMagick 6 exception.h).
    _fields_ = (
        ("severity", ctypes.c_int),
        ("error_number", ctypes.c_int),
        ("reason", ctypes.c_char_p),
        ("description", ctypes.c_char_p),
    )


def _read_warning(image: Any) -> str | None:
    """Return the first warning ImageMagick recorded while reading ``image``'s frames, if any.

    Wand raises only when a read fails; the coders' warnings (truncated or corrupt data, which
    ImageMagick fills in grey) stay on each frame's own exception record.
    """
    from wand.api import libmagick, library

    wand_warning = image.get_exception()
    if wand_warning is not None:
        return str(wand_warning)
    frame_of = library.GetImageFromMagickWand
    frame_of.argtypes, frame_of.restype = [ctypes.c_void_p], ctypes.c_void_p
    acquire = libmagick.AcquireExceptionInfo
    acquire.argtypes, acquire.restype = [], ctypes.POINTER(_ExceptionInfo)
    get = libmagick.GetImageException
    get.argtypes, get.restype = [ctypes.c_void_p, ctypes.POINTER(_ExceptionInfo)], None
    destroy = libmagick.DestroyExceptionInfo
    destroy.argtypes, destroy.restype = [ctypes.POINTER(_ExceptionInfo)], ctypes.c_void_p
    for index in range(len(image.sequence)):
        library.MagickSetIteratorIndex(image.wand, index)
        info = acquire()
        try:
            get(frame_of(image.wand), info)
            if info.contents.severity:
                reason = (info.contents.reason or b"").decode("utf-8", "replace")
                return reason.split(" `", 1)[0] or f"severity {info.contents.severity}"
        finally:
            destroy(info)
    library.MagickSetIteratorIndex(image.wand, 0)
    return None


def _xcf_canvas(path: str) -> tuple[int, int] | None:
    """Read the canvas size from an XCF header ("gimp xcf " + version + width + height)."""
    with open(path, "rb") as fh:
        head = fh.read(22)
    if len(head) < 22 or not head.startswith(b"gimp xcf "):
        return None
    width, height = int.from_bytes(head[14:18], "big"), int.from_bytes(head[18:22], "big")
    return (width, height) if 0 < width <= 524288 and 0 < height <= 524288 else None


def main(argv: list[str]) -> int:
    """Convert one file; see the module docstring."""
    strict, max_pixels = False, 0
    while argv and argv[0].startswith("--"):
        flag, argv = argv[0], argv[1:]
        if flag == "--strict":
            strict = True
        elif flag.startswith("--max-pixels=") and flag.split("=", 1)[1].isdigit():
            max_pixels = int(flag.split("=", 1)[1])
        else:
            argv = []  # unknown flag: usage
    if len(argv) != 3:
        print(
            "usage: python -m converters.magick_worker [--strict] [--max-pixels=N] "
            "CODER INPUT OUTPUT",
            file=sys.stderr,
        )
        return 64
    coder, source, output = argv

    _resolve_libraries_without_programs()
    try:
        from wand.api import library
        from wand.exceptions import (
            PolicyError,
            ResourceLimitError,
            WandException,
        )
        from wand.image import Image
    except ImportError as exc:
        print(f"PREVIEWER-POLICY: cannot load Wand/ImageMagick: {exc}", file=sys.stderr)
        return EXIT_POLICY
    reason = check_policy(coder)
    if reason is not None:
        print(f"PREVIEWER-POLICY: {reason}", file=sys.stderr)
        return EXIT_POLICY
    facts: dict[str, Any] = {"coder": coder}
    try:
        if max_pixels:
            # ImageMagick decodes whole images: refuse one too large from its header alone.
            with open(source, "rb") as fh, Image.ping(file=fh, format=coder) as pinged:
                sizes = [(frame.width, frame.height) for frame in pinged.sequence]
            canvas = _xcf_canvas(source) if coder == "XCF" else None
            width, height = max([*sizes, *([canvas] if canvas else [])], key=lambda s: s[0] * s[1])
            if width * height > max_pixels:
                print(
                    f"PREVIEWER-LIMIT: image is {width}x{height} = {width * height:,} pixels; "
                    f"ImageMagick decodes whole images (8 bytes a pixel) and may take "
                    f"{max_pixels:,} here (raise --max-memory or --max-pixels)",
                    file=sys.stderr,
                )
                return EXIT_LIMIT
        with open(source, "rb") as fh, Image(file=fh, format=coder) as read:
            warning = _read_warning(read) if strict else None
            if warning is not None:
                print(f"PREVIEWER-INPUT: damaged data: {warning}", file=sys.stderr)
                return EXIT_INPUT
            frames = len(read.sequence)
            facts.update(frames=frames, width=read.width, height=read.height)
            canvas = _xcf_canvas(source) if coder == "XCF" else None
            if canvas is not None:
                # ImageMagick 6 keeps no XCF canvas size (each layer's page is its own size):
                # compose the layers, bottom first, at their offsets onto the canvas.
                image = Image(width=canvas[0], height=canvas[1], background="transparent")
                for layer in read.sequence:
                    _w, _h, x, y = layer.page
                    with Image(image=layer) as pixels:
                        image.composite(pixels, left=x, top=y, operator="over")
            else:
                image = Image(image=read.sequence[0])
            with image:
                facts["canvas"] = [image.width, image.height]
                facts["colorspace"] = image.colorspace
                facts["depth"] = image.depth
                image.auto_orient()
                if image.colorspace not in ("srgb", "rgb", "gray"):
                    image.transform_colorspace("srgb")
                image.depth = 8
                image.compression_quality = 10  # zlib level 1: the PNG is read back at once
                image.strip()
                image.format = "PNG"
                # The policy denies every path but "buffer.*" (how Wand names in-memory blobs).
                library.MagickSetImageFilename(image.wand, b"buffer.PNG")
                with open(output, "wb") as out:
                    image.save(file=out)
                facts["size"] = [image.width, image.height]
    except ResourceLimitError as exc:
        print(f"PREVIEWER-LIMIT: {exc}", file=sys.stderr)
        return EXIT_LIMIT
    except PolicyError as exc:
        print(f"PREVIEWER-INPUT: refused by the ImageMagick policy: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (WandException, OSError, ValueError, TypeError, IndexError) as exc:
        print(f"PREVIEWER-INPUT: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(main(sys.argv[1:]))
