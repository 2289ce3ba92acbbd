"""The documented entry points: convert, render, info, metadata, convert_many, list_converters.

Every function takes its input as a path, as bytes, or as a binary file object, and keyword
options named like the command-line flags. Failures raise a
:class:`~previewer.errors.PreviewerError` subclass naming the input and the reason; nothing here
prints, exits or configures logging.

This module only checks the arguments and builds the :class:`~previewer.options.Options`: one
input goes through :mod:`previewer.pipeline` (in a child process where its limits apply),
several through the batch engine (:mod:`previewer.batch`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from previewer import pipeline
from previewer.budgets import Limits
from previewer.errors import InvalidOptionsError
from previewer.geometry import SizeSpec
from previewer.options import DEFAULT_QUALITY, Options
from previewer.pagespec import PageSpec
from previewer.registry import Registry
from previewer.results import (
    BatchReport,
    ConverterInfo,
    DocumentInfo,
    FileResult,
    Preview,
)
from previewer.sources import Source

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "BatchReport",
    "ConverterInfo",
    "DocumentInfo",
    "FileResult",
    "Preview",
    "Source",
    "convert",
    "convert_many",
    "list_converters",
    "info",
    "metadata",
    "render",
    "shutdown",
]

SizeArg = str | int | SizeSpec

# The library never prints: without this, Python's last-resort handler would write previewer's
# warnings to the host's stderr when the host has configured no logging.
logging.getLogger("previewer").addHandler(logging.NullHandler())


def _options(
    options: Options | None,
    *,
    out_dir: str | os.PathLike[str] = ".",
    sizes: Sequence[SizeArg] | SizeArg = 256,
    pages: str | int | PageSpec = "1",
    upscale: bool = False,
    password: str | None = None,
    converter: str | None = None,
    limits: Limits | None = None,
    keep_temp: bool = False,
    format: str = "png",
    quality: int = DEFAULT_QUALITY,
) -> Options:
    if options is not None:
        return options
    return Options.build(
        sizes=sizes,
        pages=pages,
        out_dir=Path(out_dir),
        upscale=upscale,
        password=password,
        converter=converter,
        limits=limits,
        keep_temp=keep_temp,
        format=format,
        quality=quality,
    )


def convert(
    source: Source,
    *,
    out_dir: str | os.PathLike[str] = ".",
    sizes: Sequence[SizeArg] | SizeArg = 256,
    pages: str | int | PageSpec = "1",
    upscale: bool = False,
    password: str | None = None,
    converter: str | None = None,
    limits: Limits | None = None,
    name: str | None = None,
    options: Options | None = None,
    registry: Registry | None = None,
    format: str = "png",
    quality: int = DEFAULT_QUALITY,
) -> list[Preview]:
    """Write previews of ``source`` (PNG, JPEG or WebP files) and return them.

    Each selected page is rendered once, at the largest size, and the smaller sizes are derived
    from it. Files are named ``<out_dir>/<name>.p<PAGE>.<SIZE>.<ext>`` (``png``, ``jpg`` or
    ``webp``) and written atomically.

    Args:
        source: A path, the file's bytes, or a binary file object.
        out_dir: Directory to write into (created if missing).
        sizes: One size or several: ``256`` fits in 256x256, ``"1024x768"`` in that box,
            ``"300x"`` fixes the width, ``"x400"`` the height.
        pages: ``1``, ``"2-4"``, ``"1,3,5-7"`` or ``"all"`` (1-based).
        upscale: Enlarge raster sources smaller than the box.
        password: Password for an encrypted document.
        converter: Force a converter by name.
        limits: Resource budgets (defaults when None). The conversion runs in a child
            process where they apply: ``timeout`` bounds it (:class:`EngineTimeoutError`) and
            ``max_memory`` caps its memory (:class:`LimitExceededError`). From a process with
            several threads the child comes from a fork server (started on first use), since
            forking a multi-threaded process is unsafe. Office documents run in this process
            instead, keeping LibreOffice warm between calls; LibreOffice itself runs under
            the timeout.
        name: File name to use for outputs and messages (default: the path's name;
            ``"input"`` for bytes and streams).
        options: A ready :class:`Options`, used instead of the individual arguments above.
        registry: The converters to use (default: built-ins and installed plugins).
        format: ``"png"`` (default), ``"jpeg"`` (or ``"jpg"``; transparent areas become
            white) or ``"webp"``. A PNG larger than ``limits.max_tile_pixels`` is streamed
            band by band; a JPEG or WebP preview is encoded from the whole image, so one larger
            than 4 x ``max_tile_pixels`` (or than the format allows, 16,383 px a side for WebP)
            raises :class:`LimitExceededError`.
        quality: JPEG and WebP quality, 1-100 (default 85); PNG ignores it.

    Returns:
        The previews written, page by page, in the order of ``sizes``.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    opts = _options(
        options,
        out_dir=out_dir,
        sizes=sizes,
        pages=pages,
        upscale=upscale,
        password=password,
        converter=converter,
        limits=limits,
        format=format,
        quality=quality,
    )
    return pipeline.convert(source, opts, registry or Registry(), name=name)


def render(
    source: Source,
    *,
    page: int = 1,
    size: SizeArg = 256,
    upscale: bool = False,
    password: str | None = None,
    converter: str | None = None,
    limits: Limits | None = None,
    name: str | None = None,
    registry: Registry | None = None,
) -> Image.Image:
    """Render one page of ``source`` to a Pillow image; nothing is written.

    Args:
        source: A path, the file's bytes, or a binary file object.
        page: 1-based page number.
        size: The size (see :func:`convert`).
        upscale: Enlarge raster sources smaller than the box.
        password: Password for an encrypted document.
        converter: Force a converter by name.
        limits: Resource budgets.
        name: Name used in error messages.
        registry: The converters to use.

    Returns:
        An 8-bit sRGB image, mode RGB or RGBA.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidOptionsError(f"page must be a positive integer, not {page!r}")
    opts = _options(
        None,
        sizes=size,
        pages=str(page),
        upscale=upscale,
        password=password,
        converter=converter,
        limits=limits,
    )
    return pipeline.render(source, opts, registry or Registry(), name=name)


def info(
    source: Source,
    *,
    password: str | None = None,
    converter: str | None = None,
    limits: Limits | None = None,
    name: str | None = None,
    registry: Registry | None = None,
    metadata: str | Iterable[str] | None = None,
) -> DocumentInfo:
    """Describe ``source``: sniffed MIME type, converter, pages and their sizes, bytes, SHA-256.

    Args:
        source: A path, the file's bytes, or a binary file object.
        password: Password for an encrypted document.
        converter: Force a converter by name.
        limits: Resource budgets.
        name: Name used in the result and in error messages.
        registry: The converters to use.
        metadata: Metadata keys to extract as well (see :func:`metadata`), into
            ``DocumentInfo.extracted``, in the same limited call.

    Returns:
        The description.

    Raises:
        InvalidOptionsError: A metadata key is unknown (the message lists the valid ones).
        PreviewerError: A subclass naming the input and the reason.
    """
    from previewer.extraction import parse_keys

    keys = parse_keys(metadata) if metadata is not None else ()
    opts = _options(None, password=password, converter=converter, limits=limits)
    return pipeline.info(source, opts, registry or Registry(), name=name, keys=keys)


def metadata(
    source: Source,
    keys: str | Iterable[str],
    *,
    password: str | None = None,
    limits: Limits | None = None,
    name: str | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Extract metadata of ``source``: checksums, EXIF, GPS, text, OCR, audio/video facts, PSD.

    Runs where the input's limits apply, like :func:`convert` (a child process under
    ``limits.timeout`` and ``limits.max_memory``; programs isolated and under the timeout).
    ``checksum``, ``exif``, ``gps`` and ``multimedia`` work on any file, even one no converter
    claims; ``text``, ``ocr`` and ``psd`` open the document with its converter.

    Args:
        source: A path, the file's bytes, or a binary file object.
        keys: ``"exif,text"`` or a list of names: ``checksum`` (sha256, sha1, md5, bytes),
            ``exif`` (EXIF tags by name, no GPS), ``gps`` (GPS tags and decimal
            latitude/longitude: only when named, never part of ``exif`` or ``all``), ``text``
            (text layer of a PDF/XPS/EPUB/SVG or Office document, or a text file's text),
            ``ocr`` (Tesseract, English, first pages at 300 dpi), ``multimedia`` (ffprobe:
            duration, bit rate, streams), ``psd`` (Photoshop layers); ``all`` is every key
            but ``gps``.
        password: Password for an encrypted document.
        limits: Resource budgets.
        name: Name used in error messages (and to break ties when sniffing the type).
        registry: The converters to use.

    Returns:
        One entry per key asked for, in the order of :data:`previewer.extraction.KEYS`; the
        value is None where the key does not apply (``psd`` of a PDF, ``multimedia`` of an
        image, ``exif`` of a file without EXIF).

    Raises:
        InvalidOptionsError: A key is unknown (the message lists the valid ones).
        EngineUnavailableError: A program a key needs is missing (Tesseract for ``ocr``,
            ffprobe for ``multimedia`` of a media file), with the install command.
        PreviewerError: Another subclass naming the input and the reason.
    """
    from previewer.extraction import parse_keys

    wanted = parse_keys(keys)
    opts = _options(None, password=password, limits=limits)
    return pipeline.metadata(source, opts, registry or Registry(), wanted, name=name)


def convert_many(
    sources: Iterable[Source | tuple[Source, str]],
    *,
    out_dir: str | os.PathLike[str] = ".",
    sizes: Sequence[SizeArg] | SizeArg = 256,
    pages: str | int | PageSpec = "1",
    upscale: bool = False,
    password: str | None = None,
    converter: str | None = None,
    limits: Limits | None = None,
    options: Options | None = None,
    registry: Registry | None = None,
    jobs: int = 0,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    resume: bool = False,
    journal: bool | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    format: str = "png",
    quality: int = DEFAULT_QUALITY,
) -> BatchReport:
    """Convert files and directory trees; a failing input never stops the others.

    Directories are walked recursively and mirrored under ``out_dir``
    (``<out_dir>/<relative path>.p<PAGE>.<SIZE>.<ext>``); files there that no converter claims
    are skipped. Two inputs whose previews would have the same names fail the second one
    instead of overwriting.

    Args:
        sources: Paths of files or directories, bytes or file objects; a ``(source, name)``
            pair names an input that has no path of its own.
        out_dir: See :func:`convert`.
        sizes: See :func:`convert`.
        pages: See :func:`convert`.
        upscale: See :func:`convert`.
        password: See :func:`convert`.
        converter: See :func:`convert`.
        limits: See :func:`convert`; ``timeout`` and ``max_memory`` bound each file.
        options: A ready :class:`Options` used instead of the individual arguments.
        registry: The converters to use (one registry serves the whole run).
        jobs: 0 converts one file at a time, each in a child process of this one; N >= 1
            uses N worker processes. Either way a hang, crash or memory blow-up fails only
            that file.
        include: Globs a walked file must match (its path relative to the tree, or its name).
        exclude: Globs of walked files to leave out.
        hidden: Also walk hidden files and folders.
        resume: Skip inputs whose previews (with the same options) are newer than the input,
            as recorded in ``<out_dir>/.previewer-journal.jsonl`` by earlier runs.
        journal: Record the inputs converted in that journal (default: when ``resume``);
            ``resume=False, journal=True`` redoes everything and records it for the next run.
        on_result: Called with each :class:`FileResult` as soon as it is known.
        on_progress: Called with ``(done, total)`` after each input.
        format: See :func:`convert`.
        quality: See :func:`convert`.

    Returns:
        The report; its ``exit_code`` is 0, the single input's code, or 10.

    Raises:
        InvalidOptionsError: If the options themselves are invalid (before any input runs).
    """
    from previewer import batch

    opts = _options(
        options,
        out_dir=out_dir,
        sizes=sizes,
        pages=pages,
        upscale=upscale,
        password=password,
        converter=converter,
        limits=limits,
        format=format,
        quality=quality,
    )
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise InvalidOptionsError(f"jobs must be 0 or a positive integer, not {jobs!r}")
    work = batch.collect(sources, opts.out_dir, include=include, exclude=exclude, hidden=hidden)
    return batch.run(
        work,
        opts,
        registry or Registry(),
        executor=batch.local_executor(jobs),
        resume=resume,
        journal=journal,
        on_result=on_result,
        on_progress=on_progress,
    )


def list_converters(registry: Registry | None = None) -> list[ConverterInfo]:
    """List every converter with its MIME types, engine, version and availability.

    Args:
        registry: The registry to describe (default: built-ins and installed plugins).

    Returns:
        One entry per converter, sorted by name.
    """
    from previewer.describe import converter_infos

    return converter_infos(registry or Registry())


def shutdown() -> None:
    """Stop the engines previewer keeps running in this process (warm LibreOffice instances).

    They start again on demand. This also runs at interpreter exit; call it from a host's own
    shutdown (a web server's lifespan handler, a SIGTERM handler) to release their memory and
    work directories at once. Idle engines also stop by themselves after a minute.
    """
    from previewer import plugin

    plugin.run_shutdown_hooks()
