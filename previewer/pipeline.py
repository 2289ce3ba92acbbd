"""One input, end to end: open -> sniff -> resolve -> limits -> render -> write.

:func:`read` takes an input through the steps every use shares:

1. **open**: the path, bytes or stream becomes a checked regular file (:func:`inputs.open_input
   <previewer.inputs.open_input>`);
2. **sniff**: its MIME type, from its content (:func:`previewer.inputs.sniff`);
3. **resolve**: the converter for that type, or the one forced by name
   (:meth:`previewer.registry.Registry.resolve`);
4. **limits**: the decoders' own budgets for that type (:func:`previewer.limits.applied`);
5. the converter opens the document, and the caller's work (**render**, **write**) runs on it;
6. **fallback**: when the converter fails on the file's content, the converter declared the
   fallback for the type (ImageMagick) gets the same file (:func:`fallback_converter`); if it
   fails too, the first error is reported.

On top of it: :func:`convert` (render every selected page at every size and write the PNG
files), :func:`render` (one page as an image), :func:`info` (a
:class:`~previewer.results.DocumentInfo`, see :mod:`previewer.describe`) and
:func:`convert_one` (a :class:`~previewer.results.FileResult` instead of an exception, for the
batch engine). The first three run where the input's limits apply (see
:mod:`previewer.placement`): in a child process (:func:`previewer.limited.run_limited`), or in
this process for a converter whose engine is an external process kept warm (LibreOffice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from previewer import limited
from previewer import limits as _limits
from previewer.errors import (
    EncryptedError,
    EngineError,
    EngineTimeoutError,
    InputError,
    InvalidOptionsError,
    LimitExceededError,
    OutputError,
    PreviewerError,
    UnsupportedFormatError,
)
from previewer.inputs import Opened, guard, open_document, sniff
from previewer.options import Options
from previewer.placement import display_name, under_limits
from previewer.registry import Registry
from previewer.results import DocumentInfo, FileResult, Preview, Status
from previewer.sources import Input, Source, open_input

if TYPE_CHECKING:
    from PIL import Image

    from previewer.plugin import Converter

__all__ = ["Found", "convert", "convert_one", "fallback_converter", "info", "read", "render"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Found:
    """What the pipeline has learnt about an input so far, kept when a later step fails.

    Attributes:
        mime: The sniffed MIME type, once sniffed.
        converter: The converter the outcome belongs to: the one resolved; the fallback once
            it has opened the file; the first one again when the fallback failed too.
    """

    mime: str | None = None
    converter: str | None = None


def _always() -> bool:
    return True


def read(
    source: Source,
    options: Options,
    registry: Registry,
    work: Callable[[Opened], T],
    *,
    name: str | None = None,
    found: Found | None = None,
    page_hint: bool = False,
    retry_work: Callable[[], bool] = _always,
) -> T:
    """Take ``source`` through open, sniff, resolve and limits, and run ``work`` on its document.

    Everything opened is closed and removed on return (the document, its work directory, the
    temporary copy of bytes or a stream).

    Args:
        source: A path, bytes or a binary file object.
        options: The options (limits, password, forced converter, pages, keep_temp).
        registry: The converters.
        work: What to do with the open document (render, write); its value is returned.
        name: File name for outputs and messages (default: the path's name, or ``input``).
        found: Filled in with the MIME type and converter as soon as they are known.
        page_hint: Tell the converter the highest page that will be rendered
            (``ConvertContext.max_page``), so it may skip producing the rest.
        retry_work: Called after ``work`` failed on the first converter's document: whether
            the fallback converter may do it again (a failure while opening always may).

    Returns:
        What ``work`` returned.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    found = Found() if found is None else found
    # open: a checked regular file (bytes and streams copied to a temporary one)
    with open_input(source, options.limits, name) as inp:
        with guard(inp.display, None):
            # sniff: the type from the content; resolve: the converter for it
            found.mime = mime = sniff(inp)
            conv = registry.resolve(mime, name=options.converter)
        found.converter = conv.name
        # limits: the decoders' own budgets for this type
        with _limits.applied(options.limits, mime):
            opened = False
            try:
                with open_document(conv, inp, mime, options, registry, page_hint=page_hint) as od:
                    opened = True
                    return work(od)  # render, write
            except PreviewerError as exc:
                # fallback: the converter declared the fallback for the type reads it again
                if opened and not retry_work():
                    raise
                alt = None
                if options.converter is None:
                    alt = fallback_converter(registry, mime, conv.name, exc)
                if alt is None:
                    raise
                return _fall_back(
                    alt, conv, exc, inp, mime, options, registry, work, found, page_hint
                )


_NO_FALLBACK = (EncryptedError, LimitExceededError, EngineTimeoutError)


def fallback_converter(
    registry: Registry, mime: str, failed: str, error: PreviewerError
) -> Converter | None:
    """Return the converter to retry with after ``failed`` raised ``error``, or None.

    A retry is made only for failures about the file's content or the engine (corrupt data,
    an unsupported variant, an engine crash), never for encrypted files, exceeded limits or
    timeouts. The candidate is the highest-priority available converter, other than
    ``failed``, that lists ``mime`` in its ``fallback_mime_types``.

    Args:
        registry: The converters.
        mime: The sniffed MIME type.
        failed: The name of the converter that failed.
        error: What it raised.

    Returns:
        The converter, or None when no retry applies.
    """
    if isinstance(error, _NO_FALLBACK) or not isinstance(
        error, (InputError, UnsupportedFormatError, EngineError)
    ):
        return None
    candidates = [
        e
        for e in registry.entries
        if e.name != failed and e.converter is not None and mime in e.converter.fallback_mime_types
    ]
    for entry in sorted(candidates, key=lambda e: (-e.priority, e.name)):
        if registry.availability(entry).ok and entry.converter is not None:
            return entry.converter
    return None


def _fall_back(
    alt: Converter,
    conv: Converter,
    error: PreviewerError,
    inp: Input,
    mime: str,
    options: Options,
    registry: Registry,
    work: Callable[[Opened], T],
    found: Found,
    page_hint: bool,
) -> T:
    """Open the file again with ``alt`` after ``conv`` failed with ``error``, and redo ``work``.

    Raises:
        PreviewerError: ``error``, with ``alt``'s reason added, when ``alt`` cannot read the
            file either; ``alt``'s own error when it is about something else (the output).
    """
    log.info("%s: %s failed (%s); trying %s", inp.display, conv.name, error, alt.name)
    try:
        with open_document(
            alt, inp, mime, options, registry, page_hint=page_hint, fallback_for=conv.name
        ) as od:
            found.converter = alt.name
            return work(od)
    except PreviewerError as exc:
        if exc.converter != alt.name or isinstance(exc, OutputError):
            raise  # not about reading the file: report it as it is
        found.converter = conv.name  # the error reported is the first one's
        error.message = f"{error.message}; {alt.name} could not read it either: {exc.message}"
        raise error from exc


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
    """Render each selected page once, at every size, and write the PNG files atomically."""
    from previewer import output
    from previewer.rendering import write_previews

    page_numbers = _select_pages(od, opts)
    cname = od.converter.name
    for number in page_numbers:
        dests = [opts.out_dir / output.output_name(od.name, number, s) for s in opts.sizes]
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


def _info(source: Source, opts: Options, registry: Registry, name: str | None) -> DocumentInfo:
    """Describe ``source`` (only a failure to open it goes to the fallback converter)."""
    from previewer.describe import document_info

    return read(
        source,
        opts,
        registry,
        lambda od: document_info(od, registry),
        name=name,
        retry_work=lambda: False,
    )


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
    source: Source, options: Options, registry: Registry, *, name: str | None = None
) -> DocumentInfo:
    """Describe one input, where its limits apply.

    Args:
        source: A path, bytes or a binary file object.
        options: The options (limits, password, forced converter).
        registry: The converters.
        name: Name used in the result and in error messages.

    Returns:
        The description.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    facts, _ = under_limits(_info, source, options, registry, name)
    return facts


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
