"""The documented entry points of previewer: convert, render, info, convert_many, converters.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

from previewer import limits as _limits
from previewer import mime as _mime
from previewer.errors import (
    EngineError,
    ExitCode,
    InputError,
    InvalidOptionsError,
    LimitExceededError,
    OutputError,
    PreviewerError,
)
from previewer.geometry import SizeSpec
from previewer.options import Limits, Options, PageSpec
from previewer.plugin import ConvertContext, Converter, Document
from previewer.registry import Registry

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
    "converters",
    "info",
    "render",
]

log = logging.getLogger(__name__)

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
"""An input: a file path, the file's bytes, or a readable binary file object."""

SizeArg = str | int | SizeSpec


@dataclass(frozen=True)
class Preview:
    """One written (or rendered) preview image.

    Attributes:
        source: The input as the user named it.
        page: 1-based page number.
        size: The requested size, normalised (``256``, ``1024x768``).
        path: The PNG file written, or None when nothing was written.
        width: Image width in pixels.
        height: Image height in pixels.
        converter: Name of the converter that rendered it.
        mime: Sniffed MIME type of the input.
    """

    source: str
    page: int
    size: str
    path: Path | None
    width: int
    height: int
    converter: str
    mime: str

    def to_dict(self) -> dict[str, Any]:
        """Return the preview as the ``outputs`` item of a JSON result line."""
        return {
            "page": self.page,
            "size": self.size,
            "path": str(self.path) if self.path is not None else None,
            "width": self.width,
            "height": self.height,
        }


@dataclass
class FileResult:
    """The outcome of converting one input in a batch.

    Attributes:
        input: The input as the user named it.
        status: ``"converted"``, ``"skipped"`` or ``"failed"``.
        mime: Sniffed MIME type, when sniffing got that far.
        converter: Converter used, when dispatch got that far.
        outputs: Previews written.
        error: The error, when ``status`` is ``"failed"``.
        reason: Why the input was skipped.
        duration: Seconds spent on this input.
    """

    input: str
    status: str
    mime: str | None = None
    converter: str | None = None
    outputs: list[Preview] = field(default_factory=list)
    error: PreviewerError | None = None
    reason: str = ""
    duration: float = 0.0

    @property
    def exit_code(self) -> int:
        """The exit code this input alone would give (0 unless it failed)."""
        return int(self.error.exit_code) if self.error is not None else 0

    def to_dict(self) -> dict[str, Any]:
        """Return the result as one JSON line of ``--json`` / ``--report``."""
        data: dict[str, Any] = {
            "input": self.input,
            "status": self.status,
            "mime": self.mime,
            "converter": self.converter,
            "outputs": [p.to_dict() for p in self.outputs],
            "error": self.error.to_dict() if self.error is not None else None,
            "duration": round(self.duration, 4),
        }
        if self.reason:
            data["reason"] = self.reason
        return data


@dataclass
class BatchReport:
    """The results of a run over several inputs; it owns the run's exit code.

    Attributes:
        results: One result per input, in the order they finished.
        elapsed: Wall-clock seconds of the whole run.
    """

    results: list[FileResult] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def converted(self) -> int:
        """Number of inputs converted."""
        return sum(r.status == "converted" for r in self.results)

    @property
    def skipped(self) -> int:
        """Number of inputs skipped."""
        return sum(r.status == "skipped" for r in self.results)

    @property
    def failed(self) -> int:
        """Number of inputs that failed."""
        return sum(r.status == "failed" for r in self.results)

    def failures_by_type(self) -> dict[str, int]:
        """Count failures by error class name."""
        counts: dict[str, int] = {}
        for r in self.results:
            if r.error is not None:
                name = type(r.error).__name__
                counts[name] = counts.get(name, 0) + 1
        return counts

    @property
    def exit_code(self) -> int:
        """0 when nothing failed; a single input's own code; else BATCH_PARTIAL (10)."""
        failed = [r for r in self.results if r.status == "failed"]
        if not failed:
            return int(ExitCode.OK)
        if len(self.results) == 1:
            return failed[0].exit_code
        return int(ExitCode.BATCH_PARTIAL)


@dataclass(frozen=True)
class DocumentInfo:
    """What ``previewer info`` reports about an input.

    Attributes:
        input: The input as the user named it.
        mime: Sniffed MIME type.
        converter: Converter that would render it.
        engine: That converter's engine and version.
        pages: Page count.
        page_sizes: Displayed size of each page (up to the first 1000) in ``units``.
        units: ``"pt"`` or ``"px"``.
        bytes: File size.
        sha256: Hex SHA-256 of the file.
        metadata: Format-specific facts from the converter.
    """

    input: str
    mime: str
    converter: str
    engine: str
    pages: int
    page_sizes: list[tuple[float, float]]
    units: str
    bytes: int
    sha256: str
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Return the info as a JSON object."""
        return {
            "input": self.input,
            "mime": self.mime,
            "converter": self.converter,
            "engine": self.engine,
            "pages": self.pages,
            "page_sizes": [[round(w, 2), round(h, 2)] for w, h in self.page_sizes],
            "units": self.units,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class ConverterInfo:
    """One converter as ``previewer converters`` lists it.

    Attributes:
        name: Converter name.
        mime_types: MIME types it declares.
        priority: Its priority.
        engine: Engine name.
        version: Engine version, when known.
        available: Whether it can run here.
        reason: Why not, with an install hint.
        origin: ``"builtin"`` or the entry point it came from.
    """

    name: str
    mime_types: list[str]
    priority: int
    engine: str
    version: str | None
    available: bool
    reason: str
    origin: str

    def to_dict(self) -> dict[str, Any]:
        """Return the converter as a JSON object."""
        return {
            "name": self.name,
            "mime_types": self.mime_types,
            "priority": self.priority,
            "engine": self.engine,
            "version": self.version,
            "available": self.available,
            "reason": self.reason,
            "origin": self.origin,
        }


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Input:
    path: Path
    display: str
    name: str


@contextlib.contextmanager
def _materialise(source: Source, name: str | None, limits: Limits) -> Iterator[_Input]:
    """Yield a readable regular file for ``source``, copying bytes and streams to a temp file."""
    if isinstance(source, (str, os.PathLike)):
        display = os.fspath(source)
        path = Path(display)
        _check_file(path, display, limits)
        yield _Input(path, display, name or path.name or "input")
        return
    import tempfile

    display = name or "<bytes>"
    with tempfile.TemporaryDirectory(prefix="previewer-in-") as tmp:
        path = Path(tmp) / "input"
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            if len(data) > limits.max_file_size:
                raise _too_big(display, len(data), limits)
            path.write_bytes(data)
        elif hasattr(source, "read"):
            total = 0
            with open(path, "wb") as out:
                while chunk := source.read(1 << 20):
                    total += len(chunk)
                    if total > limits.max_file_size:
                        raise _too_big(display, total, limits)
                    out.write(chunk)
        else:
            raise InvalidOptionsError(
                f"cannot read input of type {type(source).__name__}: "
                "give a path, bytes or a binary file object"
            )
        _check_file(path, display, limits)
        yield _Input(path, display, name or "input")


def _too_big(display: str, size: int, limits: Limits) -> LimitExceededError:
    return LimitExceededError(
        f"file is {size:,} bytes, over the limit of {limits.max_file_size:,}",
        path=display,
        hint="raise --max-file-size to accept it",
    )


def _check_file(path: Path, display: str, limits: Limits) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError("no such file", path=display) from None
    except OSError as exc:
        raise InputError(f"cannot access: {exc.strerror or exc}", path=display) from exc
    import stat

    if stat.S_ISDIR(st.st_mode):
        raise InputError("is a directory", path=display)
    if not stat.S_ISREG(st.st_mode):
        raise InputError("is not a regular file", path=display)
    if st.st_size == 0:
        raise InputError("file is empty (0 bytes)", path=display)
    if st.st_size > limits.max_file_size:
        raise _too_big(display, st.st_size, limits)
    if not os.access(path, os.R_OK):
        raise InputError("permission denied: file is not readable", path=display)


# --------------------------------------------------------------------------- opening


@contextlib.contextmanager
def _guard(display: str, converter: str | None) -> Iterator[None]:
    """Translate foreign exceptions from converters into ours and name the input in errors."""
    try:
        yield
    except PreviewerError as exc:
        if exc.path is None:
            exc.path = display
        if exc.converter is None:
            exc.converter = converter
        raise
    except MemoryError as exc:
        raise LimitExceededError(
            "ran out of memory", path=display, converter=converter, hint="lower the size"
        ) from exc
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except Exception as exc:
        raise EngineError(
            f"unexpected {type(exc).__name__}: {exc}", path=display, converter=converter
        ) from exc


@dataclass
class _Opened:
    doc: Document
    mime: str
    converter: Converter
    display: str
    name: str
    path: Path


@contextlib.contextmanager
def _open(
    source: Source,
    options: Options,
    registry: Registry,
    name: str | None = None,
    state: FileResult | None = None,
) -> Iterator[_Opened]:
    limits = options.limits
    with _materialise(source, name, limits) as inp:
        with _guard(inp.display, None):
            try:
                mime = _mime.sniff(inp.path, inp.name)
            except OSError as exc:
                raise InputError(f"cannot read: {exc.strerror or exc}") from exc
            if state is not None:
                state.mime = mime
            conv = registry.resolve(mime, name=options.converter)
        cname = conv.name
        if state is not None:
            state.converter = cname
        _limits.apply(limits)
        import shutil
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="previewer-"))
        try:
            ctx = ConvertContext(
                workdir=workdir,
                limits=limits,
                mime=mime,
                password=options.password,
                log=logging.getLogger(f"previewer.converter.{cname}"),
                _run=_runner(),
                _delegate=_delegator(registry, options, workdir),
            )
            with _guard(inp.display, cname):
                doc = conv.open(inp.path, ctx)
            try:
                with _guard(inp.display, cname):
                    count = doc.page_count
                    if count < 1:
                        raise InputError("document has no pages")
                yield _Opened(doc, mime, conv, inp.display, inp.name, inp.path)
            finally:
                with contextlib.suppress(Exception):
                    doc.close()
        finally:
            if options.keep_temp:
                log.warning("keeping work directory %s", workdir)
            else:
                shutil.rmtree(workdir, ignore_errors=True)


def _runner() -> Callable[..., Any]:
    def run(argv: Sequence[str], **kwargs: Any) -> Any:
        from previewer import process

        return process.run(argv, **kwargs)

    return run


def _delegator(
    registry: Registry, options: Options, workdir: Path
) -> Callable[[Path, str], Document]:
    def delegate(path: Path, mime: str) -> Document:
        import tempfile

        conv = registry.resolve(mime)
        sub = Path(tempfile.mkdtemp(prefix="delegate-", dir=workdir))
        ctx = ConvertContext(
            workdir=sub,
            limits=options.limits,
            mime=mime,
            password=None,
            log=logging.getLogger(f"previewer.converter.{conv.name}"),
            _run=_runner(),
            _delegate=_delegator(registry, options, sub),
        )
        return conv.open(path, ctx)

    return delegate


# --------------------------------------------------------------------------- API


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
        limits: Resource budgets (defaults when None).
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
    return _convert(source, opts, registry or Registry(), name)


def _convert(
    source: Source,
    opts: Options,
    registry: Registry,
    name: str | None,
    state: FileResult | None = None,
) -> list[Preview]:
    from previewer import output
    from previewer.render import render_page

    previews: list[Preview] = [] if state is None else state.outputs
    with _open(source, opts, registry, name, state) as od:
        page_numbers = _select_pages(od, opts)
        cname = od.converter.name
        for number in page_numbers:
            with _guard(od.display, cname):
                images = render_page(
                    od.doc, number - 1, opts.sizes, upscale=opts.upscale, limits=opts.limits
                )
            for size, image in zip(opts.sizes, images, strict=True):
                dest = opts.out_dir / output.output_name(od.name, number, size)
                try:
                    output.write_png(image, dest)
                except OutputError as exc:
                    exc.message = f"{exc.message} (preview of {od.display})"
                    raise
                previews.append(
                    Preview(
                        source=od.display,
                        page=number,
                        size=size.label,
                        path=dest,
                        width=image.width,
                        height=image.height,
                        converter=cname,
                        mime=od.mime,
                    )
                )
    return previews


def _select_pages(od: _Opened, opts: Options) -> list[int]:
    count = od.doc.page_count
    try:
        numbers = opts.pages.resolve(count)
    except InvalidOptionsError as exc:
        exc.path = od.display
        raise
    if len(numbers) > opts.limits.max_pages:
        raise LimitExceededError(
            f"{len(numbers)} pages selected, over the limit of {opts.limits.max_pages}",
            path=od.display,
            hint="select fewer pages with --pages or raise --max-pages",
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
    from previewer.render import render_page

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
    with _open(source, opts, registry or Registry(), name) as od:
        (number,) = _select_pages(od, opts)
        with _guard(od.display, od.converter.name):
            (image,) = render_page(
                od.doc, number - 1, opts.sizes, upscale=opts.upscale, limits=opts.limits
            )
        return image


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
    reg = registry or Registry()
    with _open(source, opts, reg, name) as od:
        cname = od.converter.name
        with _guard(od.display, cname):
            count = od.doc.page_count
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
            pages=count,
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
    on_result: Callable[[FileResult], None] | None = None,
) -> BatchReport:
    """Convert several inputs, one after the other; a failing input never stops the others.

    Args:
        sources: Paths, bytes or file objects; a ``(source, name)`` pair names an input that
            has no path of its own.
        out_dir: See :func:`convert`.
        sizes: See :func:`convert`.
        pages: See :func:`convert`.
        upscale: See :func:`convert`.
        password: See :func:`convert`.
        converter: See :func:`convert`.
        limits: See :func:`convert`.
        options: A ready :class:`Options` used instead of the individual arguments.
        registry: The converters to use (one registry serves the whole run).
        on_result: Called with each :class:`FileResult` as soon as it is known.

    Returns:
        The report; its ``exit_code`` is 0, the single input's code, or 10.

    Raises:
        InvalidOptionsError: If the options themselves are invalid (before any input runs).
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
    report = BatchReport()
    started = time.monotonic()
    for item in sources:
        source, name = item if isinstance(item, tuple) else (item, None)
        result = convert_one(source, opts, reg, name=name)
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    report.elapsed = time.monotonic() - started
    return report


def convert_one(
    source: Source, options: Options, registry: Registry, *, name: str | None = None
) -> FileResult:
    """Convert one input and return its result instead of raising.

    Args:
        source: The input.
        options: The options.
        registry: The converters.
        name: File name for outputs and messages (default: the path's name, or ``input``).

    Returns:
        The result: converted, skipped (no selected page exists) or failed.
    """
    if isinstance(source, (str, os.PathLike)):
        display = os.fspath(source)
    else:
        display = name or "<bytes>"
    started = time.monotonic()
    result = FileResult(input=display, status="failed")
    try:
        _convert(source, options, registry, name, result)
    except PreviewerError as exc:
        result.error = exc
    else:
        result.status = "converted" if result.outputs else "skipped"
        if not result.outputs:
            result.reason = f"no page selected by --pages {options.pages}"
    result.duration = time.monotonic() - started
    return result


def converters(registry: Registry | None = None) -> list[ConverterInfo]:
    """List every converter with its MIME types, engine, version and availability.

    Args:
        registry: The registry to describe (default: built-ins and installed plugins).

    Returns:
        One entry per converter, sorted by name.
    """
    reg = registry or Registry()
    listing = []
    for entry in reg.entries:
        avail = reg.availability(entry)
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
            )
        )
    return listing
