"""The read steps every use of one input shares, and the fallback when a converter fails.

:func:`read` takes an input through:

1. **open**: the path, bytes or stream becomes a checked regular file
   (:func:`previewer.sources.open_input`);
2. **sniff**: its MIME type, from its content (:func:`previewer.inputs.sniff`);
3. **resolve**: the converter for that type, or the one forced by name
   (:meth:`previewer.registry.Registry.resolve`);
4. **limits**: the decoders' own budgets for that type (:func:`previewer.limits.applied`);
5. the converter opens the document, and the caller's work (**render**, **write**) runs on it;
6. **fallback**: when the converter fails on the file's content, the converter declared the
   fallback for the type (ImageMagick) gets the same file (:func:`fallback_converter`); if it
   fails too, the first error is reported.

:mod:`previewer.pipeline` builds its conversions on :func:`read` and re-exports the names here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from previewer import limits as _limits
from previewer.errors import (
    EncryptedError,
    EngineError,
    EngineTimeoutError,
    InputError,
    LimitExceededError,
    OutputError,
    PreviewerError,
    UnsupportedFormatError,
)
from previewer.inputs import Opened, guard, open_document, sniff
from previewer.options import Options
from previewer.registry import Registry
from previewer.sources import Input, Source, open_input

if TYPE_CHECKING:
    from previewer.plugin import Converter

__all__ = ["Found", "fallback_converter", "read"]

# The pipeline's logger, as before the read steps had a module of their own.
log = logging.getLogger("previewer.pipeline")

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
