"""The documented entry points of previewer: convert, render, info, convert_many, list_converters.

Every function takes its input as a path, as bytes, or as a binary file object, and keyword
options named like the command-line flags. Failures raise a
:class:`~previewer.errors.PreviewerError` subclass naming the input and the reason; nothing here
prints, exits or configures logging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from previewer.errors import (
    InvalidOptionsError,
    LimitExceededError,
    OutputError,
    PreviewerError,
)
from previewer.geometry import SizeSpec
from previewer.inputs import Opened, Source, guard, open_input
from previewer.options import Limits, Options, PageSpec
from previewer.registry import Registry
from previewer.results import (
    BatchReport,
    ConverterInfo,
    DocumentInfo,
    FileResult,
    Preview,
    Status,
)

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
    "render",
    "shutdown",
]

SizeArg = str | int | SizeSpec
T = TypeVar("T")

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
) -> list[Preview]:
    """Write PNG previews of ``source`` and return them.

    Each selected page is rendered once, at the largest size, and the smaller sizes are derived
    from it. Files are named ``<out_dir>/<name>.p<PAGE>.<SIZE>.png`` and written atomically.

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
    )
    reg = registry or Registry()
    previews, _ = _limited(_convert, source, opts, reg, name, writes=True)
    return previews


def _display(source: Source, name: str | None) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return name or "<bytes>"


def _target(source: Source, opts: Options, registry: Registry, name: str | None) -> Any:
    """The registry entry of the converter ``source`` will go to, or None when unsure.

    Only sniffs and ranks, without probing availability: the child reports any error.
    """
    from previewer import mime as _mime

    try:
        if isinstance(source, (str, os.PathLike)):
            kind = _mime.sniff(source, name)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            head = bytes(source[: _mime.HEAD_BYTES])
            kind = _mime.sniff_bytes(head, name or "")
            if kind == "application/zip":
                import io

                kind = _mime._zip_type(io.BytesIO(source))  # type: ignore[arg-type]
        else:
            return None
        if opts.converter is not None:
            entry = registry.get(opts.converter)
        else:
            # The converter resolve() would try first, without probing every candidate's
            # availability (that would import every candidate's engine here).
            ranked = sorted(
                ((e.handles(kind), e) for e in registry.entries),
                key=lambda c: (-c[0], -c[1].priority, c[1].name),
            )
            if not ranked or not ranked[0][0]:
                return None
            entry = ranked[0][1]
    except (PreviewerError, OSError, ValueError):
        return None  # the child reports it
    return entry


_converted_once: set[str] = set()
"""Converters this process has run a single conversion with (see :func:`_warm`)."""


def _warm(registry: Registry, entry: Any) -> None:
    """From its second conversion on, import ``entry``'s converter and engine in this process.

    A forked child inherits them: otherwise every conversion of a long-lived caller (a web
    service converting uploads one by one) would import its engine again in a fresh child
    (PyMuPDF: over 100 ms a call). A one-off run (the CLI) converts once and leaves the
    imports to its child, where they cost no copy-on-write faults.
    """
    if entry.name not in _converted_once:
        _converted_once.add(entry.name)
        return
    with contextlib.suppress(Exception):
        registry.availability(entry)
        import previewer.output
        import previewer.rendering  # noqa: F401


def _limited(
    func: Callable[[Source, Options, Registry, str | None], T],
    source: Source,
    opts: Options,
    registry: Registry,
    name: str | None,
    *,
    writes: bool = False,
) -> tuple[T, list[str]]:
    """Run one conversion where its limits apply; return its value and the engine messages.

    The conversion runs in a child process under ``opts.limits`` (see
    :func:`previewer.pool.run_limited`): a hang is stopped at the timeout, an allocation beyond
    ``max_memory`` fails, a crash fails only this input. Inputs for a converter with a warm
    external engine (``warm_engine``) run in this process, their engine under the
    timeout. Streams are read here (up to the size limit), so the child never reads the
    caller's file objects.
    """
    from previewer import pool

    display = _display(source, name)
    entry = _target(source, opts, registry, name)
    # A converter whose engine is an external, warm process (LibreOffice's, ``warm_engine``)
    # keeps it running between conversions in the converting process, under the timeout and
    # in its own process group; a throw-away child would start a new engine every time.
    if not pool.ISOLATE or getattr(getattr(entry, "converter", None), "warm_engine", False):
        try:
            return func(source, opts, registry, name), []
        except Exception as exc:
            error = pool.library_error(exc, display, opts.limits)
            if error is exc:
                raise
            raise error from exc
    if entry is not None:
        _warm(registry, entry)
    if not isinstance(source, (str, os.PathLike, bytes)):
        if isinstance(source, (bytearray, memoryview)):
            source = bytes(source)
        elif hasattr(source, "read"):
            source = _read_stream(source, opts.limits.max_file_size, display)
    name_out = None
    if writes:
        name_out = name or (os.path.basename(display) if isinstance(source, str) else "input")
    value, messages = pool.run_limited(
        func,
        (source, opts, registry, name),
        limits=opts.limits,
        display=display,
        out_dir=opts.out_dir if writes else None,
        name=name_out,
    )
    pool.report_messages(display, messages)
    return value, messages


def _read_stream(stream: Any, limit: int, display: str) -> bytes:
    """Read a binary stream into memory, failing as soon as it is over ``limit`` bytes.

    The child converting it then gets the bytes: it never reads the caller's file objects.
    """
    from previewer.errors import InputError

    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = stream.read(1 << 20)
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", path=display) from exc
        if not chunk:
            return b"".join(chunks)
        if not isinstance(chunk, (bytes, bytearray)):
            raise InvalidOptionsError(
                f"cannot read input of type {type(stream).__name__}: "
                "give a path, bytes or a binary file object"
            )
        total += len(chunk)
        if total > limit:
            raise LimitExceededError(
                f"input is over the limit of {limit:,} bytes (stopped reading after {total:,})",
                path=display,
                hint="raise max_file_size to accept it",
            )
        chunks.append(bytes(chunk))


def _convert(
    source: Source,
    opts: Options,
    registry: Registry,
    name: str | None,
    state: FileResult | None = None,
) -> list[Preview]:
    previews: list[Preview] = [] if state is None else state.outputs
    with open_input(source, opts, registry, name, state, page_hint=True) as od:
        # Once some previews are out, never mix two converters' pages.
        od.attempt(lambda o: _write_pages(o, opts, previews), unless=lambda: bool(previews))
    return previews


def _write_pages(od: Opened, opts: Options, previews: list[Preview]) -> None:
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
    count = od.doc.page_count
    try:
        numbers = opts.pages.resolve(count)
    except InvalidOptionsError as exc:
        exc.path = od.display
        if not getattr(od.doc, "page_count_known", True):
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

    image, _ = _limited(_render, source, opts, registry or Registry(), name)
    return image


def _render(source: Source, opts: Options, registry: Registry, name: str | None) -> Image.Image:
    from previewer.rendering import render_page

    def render_one(od: Opened) -> Image.Image:
        (number,) = _select_pages(od, opts)
        with guard(od.display, od.converter.name):
            (image,) = render_page(
                od.doc, number - 1, opts.sizes, upscale=opts.upscale, limits=opts.limits
            )
        return image

    with open_input(source, opts, registry, name, page_hint=True) as od:
        return od.attempt(render_one)


def info(
    source: Source,
    *,
    password: str | None = None,
    converter: str | None = None,
    limits: Limits | None = None,
    name: str | None = None,
    registry: Registry | None = None,
) -> DocumentInfo:
    """Describe ``source``: sniffed MIME type, converter, pages and their sizes, bytes, SHA-256.

    Args:
        source: A path, the file's bytes, or a binary file object.
        password: Password for an encrypted document.
        converter: Force a converter by name.
        limits: Resource budgets.
        name: Name used in the result and in error messages.
        registry: The converters to use.

    Returns:
        The description.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    opts = _options(None, password=password, converter=converter, limits=limits)
    facts, _ = _limited(_info, source, opts, registry or Registry(), name)
    return facts


def _info(source: Source, opts: Options, reg: Registry, name: str | None) -> DocumentInfo:
    with open_input(source, opts, reg, name) as od:
        cname = od.converter.name
        with guard(od.display, cname):
            count = od.doc.page_count
            known = getattr(od.doc, "page_count_known", True)
            sizes = [tuple(od.doc.page_size(i)) for i in range(min(count, 1000))]
            meta_fn = getattr(od.doc, "metadata", None)
            metadata = dict(meta_fn()) if callable(meta_fn) else {}
        avail = reg.availability(reg.get(cname))
        import hashlib

        digest = hashlib.sha256()
        with open(od.path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        return DocumentInfo(
            input=od.display,
            mime=od.mime,
            converter=cname,
            engine=f"{avail.engine} {avail.version}" if avail.version else avail.engine,
            pages=count if known else None,
            page_sizes=[(float(w), float(h)) for w, h in sizes],
            units=od.doc.units,
            bytes=od.path.stat().st_size,
            sha256=digest.hexdigest(),
            metadata=metadata,
        )


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
) -> BatchReport:
    """Convert files and directory trees; a failing input never stops the others.

    Directories are walked recursively and mirrored under ``out_dir``
    (``<out_dir>/<relative path>.p<PAGE>.<SIZE>.png``); files there that no converter claims
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
        isolate: Run it where its limits apply (a child process, see :func:`_limited`);
            False when the caller already is such a place (a batch or queue worker).

    Returns:
        The result: converted, skipped (no selected page exists) or failed; engine messages
        captured in a child are in its ``warnings``.
    """
    if not isolate:
        return _convert_one(source, options, registry, name)
    display = _display(source, name)
    started = time.monotonic()
    try:
        result, messages = _limited(_convert_one, source, options, registry, name, writes=True)
    except PreviewerError as exc:  # the child timed out, crashed or ran out of memory
        return FileResult(
            input=display, status=Status.FAILED, error=exc, duration=time.monotonic() - started
        )
    result.warnings.extend(m for m in messages if m not in result.warnings)
    return result


def _convert_one(
    source: Source, options: Options, registry: Registry, name: str | None
) -> FileResult:
    display = _display(source, name)
    started = time.monotonic()
    result = FileResult(input=display, status=Status.FAILED)
    try:
        _convert(source, options, registry, name, result)
    except PreviewerError as exc:
        from previewer.pool import library_error

        error = library_error(exc, display, options.limits)
        assert isinstance(error, PreviewerError)
        result.error = error
    except MemoryError as exc:
        from previewer.pool import library_error

        result.error = library_error(exc, display, options.limits)  # type: ignore[assignment]
    else:
        result.status = Status.CONVERTED if result.outputs else Status.SKIPPED
        if not result.outputs:
            result.reason = f"no page selected by pages={options.pages}"
    result.duration = time.monotonic() - started
    return result


def list_converters(registry: Registry | None = None) -> list[ConverterInfo]:
    """List every converter with its MIME types, engine, version and availability.

    Args:
        registry: The registry to describe (default: built-ins and installed plugins).

    Returns:
        One entry per converter, sorted by name.
    """
    reg = registry or Registry()
    listing = []
    sandbox_detail: str | None = None
    for entry in reg.entries:
        avail = reg.availability(entry)
        sandboxed = getattr(entry.converter, "sandboxed", None)
        if sandboxed is True:
            if sandbox_detail is None:
                from previewer import sandbox

                sandbox_detail = sandbox.describe()
            isolation = sandbox_detail
        else:
            isolation = "in-process" if sandboxed is False else "not declared"
        listing.append(
            ConverterInfo(
                name=entry.name,
                mime_types=sorted(entry.mime_types),
                priority=entry.priority,
                engine=avail.engine,
                version=avail.version,
                available=avail.ok,
                reason=avail.reason,
                origin=entry.origin,
                isolation=isolation,
            )
        )
    return listing


def shutdown() -> None:
    """Stop the engines previewer keeps running in this process (warm LibreOffice instances).

    They start again on demand. This also runs at interpreter exit; call it from a host's own
    shutdown (a web server's lifespan handler, a SIGTERM handler) to release their memory and
    work directories at once. Idle engines also stop by themselves after a minute.
    """
    from previewer import plugin

    plugin.run_shutdown_hooks()
