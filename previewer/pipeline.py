"""One input, end to end: open -> sniff -> resolve -> limits -> render -> write.

:func:`read` takes an input through the steps every use shares:

1. **open**: the path, bytes or stream becomes a checked regular file (:func:`sources.open_input
   <previewer.sources.open_input>`);
2. **sniff**: its MIME type, from its content (:func:`previewer.inputs.sniff`);
3. **resolve**: the converter for that type, or the one forced by name
   (:meth:`previewer.registry.Registry.resolve`);
4. **limits**: the decoders' own budgets for that type (:func:`previewer.limits.applied`);
5. the converter opens the document, and the caller's work (**render**, **write**) runs on it;
6. **fallback**: when the converter fails on the file's content, the converter declared the
   fallback for the type (ImageMagick) gets the same file (:func:`fallback_converter`); if it
   fails too, the first error is reported.

On top of it: :func:`convert` (render every selected page at every size and write the preview
files), :func:`render` (one page as an image), :func:`info` (a
:class:`~previewer.results.DocumentInfo`, see :mod:`previewer.describe`), :func:`metadata`
(the keys of :mod:`previewer.extraction`) and :func:`convert_one` (a
:class:`~previewer.results.FileResult` instead of an exception, for the batch engine). All but
the last run where the input's limits apply (see
:mod:`previewer.placement`): in a child process (:func:`previewer.limited.run_limited`), or in
this process for a converter whose engine is an external process kept warm (LibreOffice).

The read steps (1-6) and the fallback are in :mod:`previewer.reading` (:func:`read`,
:class:`Found` and :func:`fallback_converter` are importable from here too); this module
renders and writes the pages.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import TYPE_CHECKING, Any

from previewer import limited
from previewer.errors import (
    InvalidOptionsError,
    LimitExceededError,
    OutputError,
    PreviewerError,
    UnsupportedFormatError,
)
from previewer.inputs import Opened, guard
from previewer.inputs import sniff as _sniff
from previewer.options import Options
from previewer.placement import display_name, under_limits
from previewer.reading import Found, fallback_converter, read
from previewer.registry import Registry
from previewer.results import DocumentInfo, FileResult, Preview, Status
from previewer.sources import Source, open_input, read_chunks

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Found",
    "convert",
    "convert_and_describe",
    "convert_one",
    "fallback_converter",
    "info",
    "metadata",
    "read",
    "render",
]


# --------------------------------------------------------------------------- render, write


def _convert(
    source: Source,
    options: Options,
    registry: Registry,
    name: str | None,
    found: Found | None = None,
    previews: list[Preview] | None = None,
) -> list[Preview]:
    """Write the previews of ``source``; return them (also appended to ``previews``)."""
    written: list[Preview] = [] if previews is None else previews

    def write(od: Opened) -> None:
        _write_pages(od, options, written)

    # Once some previews are out, never mix two converters' pages.
    read(
        source,
        options,
        registry,
        write,
        name=name,
        found=found,
        page_hint=True,
        retry_work=lambda: not written,
    )
    return written


def _write_pages(od: Opened, opts: Options, previews: list[Preview]) -> None:
    """Render each selected page once, at every size, and write the files atomically."""
    from previewer import output
    from previewer.rendering import write_previews

    page_numbers = _select_pages(od, opts)
    cname = od.converter.name
    for number in page_numbers:
        dests = [
            opts.out_dir / output.output_name(od.name, number, s, opts.format) for s in opts.sizes
        ]
        with guard(od.display, cname):
            try:
                written = write_previews(
                    od.doc,
                    number - 1,
                    opts.sizes,
                    dests,
                    upscale=opts.upscale,
                    limits=opts.limits,
                    root=opts.out_root,
                    format=opts.format,
                    quality=opts.quality,
                )
            except OutputError as exc:
                exc.message = f"{exc.message} (preview of {od.display})"
                raise
        for size, dest, (width, height) in zip(opts.sizes, dests, written, strict=True):
            previews.append(
                Preview(
                    source=od.display,
                    page=number,
                    size=size.label,
                    path=dest,
                    width=width,
                    height=height,
                    converter=cname,
                    mime=od.mime,
                    format=opts.format,
                )
            )


def _select_pages(od: Opened, opts: Options) -> list[int]:
    """The 1-based pages ``opts.pages`` selects in ``od``, within ``max_pages``."""
    count = od.doc.page_count
    try:
        numbers = opts.pages.resolve(count)
    except InvalidOptionsError as exc:
        exc.path = od.display
        if not od.doc.page_count_known:
            exc.message = (
                f"{exc.message.split(' but ')[0]} but the document's page tree is damaged and "
                f"only {count} page{'s' if count != 1 else ''} could be found"
            )
        raise
    if len(numbers) > opts.limits.max_pages:
        raise LimitExceededError(
            f"{len(numbers)} pages selected, over the limit of {opts.limits.max_pages}",
            path=od.display,
            hint="select fewer pages with pages= or raise max_pages",
        )
    return numbers


def _render(source: Source, opts: Options, registry: Registry, name: str | None) -> Image.Image:
    """Render the one selected page of ``source`` at the one size, as an image."""
    from previewer.rendering import render_page

    def render_one(od: Opened) -> Image.Image:
        (number,) = _select_pages(od, opts)
        with guard(od.display, od.converter.name):
            (image,) = render_page(
                od.doc, number - 1, opts.sizes, upscale=opts.upscale, limits=opts.limits
            )
        return image

    return read(source, opts, registry, render_one, name=name, page_hint=True)


def _info(
    source: Source,
    opts: Options,
    registry: Registry,
    name: str | None,
    keys: tuple[str, ...] = (),
) -> DocumentInfo:
    """Describe ``source`` (only a failure to open it goes to the fallback converter).

    With metadata ``keys``, they are extracted from the same open document (``extracted``).
    """
    from previewer.describe import document_info

    def describe(od: Opened) -> DocumentInfo:
        facts = document_info(od, registry)
        if keys:
            facts = dataclasses.replace(facts, extracted=_extract(keys, od, opts))
        return facts

    return read(source, opts, registry, describe, name=name, retry_work=lambda: False)


def _extract(keys: tuple[str, ...], od: Opened, opts: Options) -> dict[str, Any]:
    from previewer import extraction

    target = extraction.Target(od.path, od.mime, od.display, opts.limits, od.doc)
    return extraction.extract(keys, target)


def _metadata_of(
    keys: tuple[str, ...], source: Source, opts: Options, registry: Registry, name: str | None
) -> dict[str, Any]:
    """Extract metadata ``keys`` of ``source``; a file no converter claims gets the file keys.

    The document is opened only for the keys that need it (``text``, ``ocr``, ``psd``); when no
    converter claims the file, those are None (but the ``text`` of a text file) and the others
    are still extracted.
    """
    from previewer import extraction
    from previewer import limits as _limits

    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    elif not isinstance(source, (str, bytes, os.PathLike)):
        # Read once: the input may have to be opened twice (see below).
        display = display_name(source, name)
        source = b"".join(read_chunks(source, opts.limits.max_file_size, display, "max_file_size"))
    if extraction.needs_document(keys):
        try:
            return read(
                source,
                opts,
                registry,
                lambda od: _extract(keys, od, opts),
                name=name,
                retry_work=lambda: False,
            )
        except UnsupportedFormatError:
            pass  # no converter: the keys that need no document
    with open_input(source, opts.limits, name) as inp:
        with guard(inp.display, None):
            mime = _sniff(inp)
        with _limits.applied(opts.limits, mime):
            target = extraction.Target(inp.path, mime, inp.display, opts.limits)
            return extraction.extract(keys, target)


# --------------------------------------------------------------------------- entry points


def convert(
    source: Source, options: Options, registry: Registry, *, name: str | None = None
) -> list[Preview]:
    """Write the previews of one input, where its limits apply (see :mod:`previewer.placement`).

    Args:
        source: A path, bytes or a binary file object.
        options: The options.
        registry: The converters.
        name: File name for outputs and messages.

    Returns:
        The previews written, page by page, in the order of ``options.sizes``.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    previews, _ = under_limits(_convert, source, options, registry, name, writes=True)
    return previews


def render(
    source: Source, options: Options, registry: Registry, *, name: str | None = None
) -> Image.Image:
    """Render the page ``options.pages`` selects at ``options.sizes[0]``, where limits apply.

    Args:
        source: A path, bytes or a binary file object.
        options: The options (one page, one size).
        registry: The converters.
        name: Name used in error messages.

    Returns:
        An 8-bit sRGB image, mode RGB or RGBA.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    image, _ = under_limits(_render, source, options, registry, name)
    return image


def info(
    source: Source,
    options: Options,
    registry: Registry,
    *,
    name: str | None = None,
    keys: tuple[str, ...] = (),
) -> DocumentInfo:
    """Describe one input, where its limits apply.

    Args:
        source: A path, bytes or a binary file object.
        options: The options (limits, password, forced converter).
        registry: The converters.
        name: Name used in the result and in error messages.
        keys: Metadata keys to extract in the same call, into ``extracted`` (see
            :func:`previewer.extraction.parse_keys`).

    Returns:
        The description.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    work = functools.partial(_info, keys=keys) if keys else _info
    facts, _ = under_limits(work, source, options, registry, name)
    return facts


def _convert_and_describe(
    source: Source,
    options: Options,
    registry: Registry,
    name: str | None,
    keys: tuple[str, ...] = (),
) -> tuple[list[Preview], DocumentInfo]:
    """Write the previews of ``source`` and describe it, from one open document."""
    from previewer.describe import document_info

    written: list[Preview] = []

    def work(od: Opened) -> DocumentInfo:
        # Described first: rendering may change what the engine reports (a JPEG decoded with
        # DCT scaling reports its reduced size afterwards).
        facts = document_info(od, registry)
        _write_pages(od, options, written)
        if keys:
            facts = dataclasses.replace(facts, extracted=_extract(keys, od, options))
        return facts

    # No page hint: the description counts every page (an Office document is exported whole,
    # as :func:`info` would). Once some previews are out, never mix two converters' pages.
    facts = read(source, options, registry, work, name=name, retry_work=lambda: not written)
    return written, facts


def convert_and_describe(
    source: Source,
    options: Options,
    registry: Registry,
    *,
    name: str | None = None,
    keys: tuple[str, ...] = (),
    isolate: bool = True,
) -> tuple[list[Preview], DocumentInfo]:
    """:func:`convert` and :func:`info` of one input in one place where its limits apply.

    One child process and one open document instead of two of each. The converter is not told
    which pages will be rendered (``ConvertContext.max_page``), so the description counts every
    page: an Office document is exported whole, as :func:`info` does.

    Args:
        source: A path or bytes.
        options: The options.
        registry: The converters.
        name: File name for outputs and messages.
        keys: Metadata keys extracted with the description (``extracted``).
        isolate: Run where its limits apply (a child process, see
            :func:`previewer.placement.under_limits`); False when the caller already is such a
            place (a pool worker).

    Returns:
        The previews written and the description.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    if not isolate:
        try:
            return _convert_and_describe(source, options, registry, name, keys)
        except (Exception, MemoryError) as exc:
            error = limited.library_error(exc, display_name(source, name), options.limits)
            if error is exc:
                raise
            raise error from exc
    work = functools.partial(_convert_and_describe, keys=keys) if keys else _convert_and_describe
    both, _ = under_limits(work, source, options, registry, name, writes=True)
    return both


def metadata(
    source: Source,
    options: Options,
    registry: Registry,
    keys: tuple[str, ...],
    *,
    name: str | None = None,
) -> dict[str, Any]:
    """Extract metadata ``keys`` of one input, where its limits apply.

    Args:
        source: A path, bytes or a binary file object.
        options: The options (limits, password, forced converter).
        registry: The converters.
        keys: Metadata keys (see :func:`previewer.extraction.parse_keys`).
        name: Name used in error messages.

    Returns:
        Key -> value, None where a key does not apply to the input.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    found, _ = under_limits(functools.partial(_metadata_of, keys), source, options, registry, name)
    return found


def convert_one(
    source: Source,
    options: Options,
    registry: Registry,
    *,
    name: str | None = None,
    isolate: bool = False,
) -> FileResult:
    """Convert one input and return its result instead of raising.

    Args:
        source: The input.
        options: The options.
        registry: The converters.
        name: File name for outputs and messages (default: the path's name, or ``input``).
        isolate: Run it where its limits apply (a child process, see
            :func:`previewer.placement.under_limits`); False when the caller already is such
            a place (a batch or queue worker).

    Returns:
        The result: converted, skipped (no selected page exists) or failed; engine messages
        captured in a child are in its ``warnings``.
    """
    if not isolate:
        return _convert_one(source, options, registry, name)
    display = display_name(source, name)
    started = time.monotonic()
    try:
        result, messages = under_limits(_convert_one, source, options, registry, name, writes=True)
    except PreviewerError as exc:  # the child timed out, crashed or ran out of memory
        return FileResult(
            input=display, status=Status.FAILED, error=exc, duration=time.monotonic() - started
        )
    result.warnings.extend(m for m in messages if m not in result.warnings)
    return result


def _convert_one(
    source: Source, options: Options, registry: Registry, name: str | None
) -> FileResult:
    """:func:`_convert`, its outcome (previews, type, converter, error) as a result."""
    display = display_name(source, name)
    started = time.monotonic()
    found = Found()
    previews: list[Preview] = []
    error: PreviewerError | None = None
    try:
        _convert(source, options, registry, name, found, previews)
    except (PreviewerError, MemoryError) as exc:
        translated = limited.library_error(exc, display, options.limits)
        assert isinstance(translated, PreviewerError)  # a MemoryError becomes one
        error = translated
    result = FileResult(
        input=display,
        status=(
            Status.FAILED if error is not None else Status.CONVERTED if previews else Status.SKIPPED
        ),
        mime=found.mime,
        converter=found.converter,
        outputs=previews,
        error=error,
    )
    if error is None and not previews:
        result.reason = f"no page selected by pages={options.pages}"
    result.duration = time.monotonic() - started
    return result
