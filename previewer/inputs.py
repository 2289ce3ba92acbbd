"""Opening an input: materialising bytes and streams, checking the file, sniffing, dispatching.

:func:`open_input` is the one path from a user's input to an open converter document: it checks
the file (exists, regular, readable, not empty, within the size limit), sniffs its MIME type,
resolves the converter, gives it a private work directory (removed afterwards) and translates any
foreign exception from the converter into a :class:`~previewer.errors.PreviewerError` naming the
input.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar, Union

from previewer import limits as _limits
from previewer import mime as _mime
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
from previewer.options import Limits, Options
from previewer.plugin import ConvertContext, Converter, Document
from previewer.registry import Registry
from previewer.results import FileResult

__all__ = ["Opened", "Source", "fallback_converter", "guard", "open_input"]

log = logging.getLogger(__name__)

T = TypeVar("T")

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
"""An input: a file path, the file's bytes, or a readable binary file object."""


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
def guard(display: str, converter: str | None) -> Iterator[None]:
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
class Opened:
    """An open input: the converter's document and what was learnt on the way there.

    Attributes:
        doc: The converter's open document.
        mime: The sniffed MIME type.
        converter: The converter that opened it.
        display: The input as the user named it (for messages).
        name: The file name used for outputs.
        path: The file read (a temporary copy for bytes and streams).
    """

    doc: Document
    mime: str
    converter: Converter
    display: str
    name: str
    path: Path
    _fallback: Callable[[PreviewerError], contextlib.AbstractContextManager[Opened]] | None = None

    def attempt(self, work: Callable[[Opened], T], *, unless: Callable[[], bool] = bool) -> T:
        """Run ``work`` on this input; if it fails, run it again on the fallback's document.

        A failure while rendering is retried like one while opening (see :func:`open_input`):
        the failed document is closed first and the fallback converter opens the same file.

        Args:
            work: What to do with an opened input.
            unless: Called after a failure; when it returns True the failure is raised as it
                is (say, some pages of the first converter are already written).

        Returns:
            What ``work`` returned.

        Raises:
            PreviewerError: The failure, when no fallback applies; the first failure with the
                fallback's reason added, when the fallback fails too.
        """
        try:
            return work(self)
        except PreviewerError as exc:
            if self._fallback is None or unless():
                raise
            with contextlib.suppress(Exception):
                self.doc.close()  # release the failed engine's memory before the next one starts
            with self._fallback(exc) as again:
                return work(again)


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
    """
    if isinstance(error, _NO_FALLBACK) or not isinstance(
        error, (InputError, UnsupportedFormatError, EngineError)
    ):
        return None
    candidates = [
        e
        for e in registry.entries
        if e.name != failed
        and e.converter is not None
        and mime in getattr(e.converter, "fallback_mime_types", ())
    ]
    for entry in sorted(candidates, key=lambda e: (-e.priority, e.name)):
        if registry.availability(entry).ok and entry.converter is not None:
            return entry.converter
    return None


@contextlib.contextmanager
def open_input(
    source: Source,
    options: Options,
    registry: Registry,
    name: str | None = None,
    state: FileResult | None = None,
    *,
    page_hint: bool = False,
) -> Iterator[Opened]:
    """Open ``source`` with the converter its content calls for; close everything on exit.

    When that converter fails on the file and another one declares itself its fallback for
    the type (ImageMagick for the common raster types and PSD), the file is opened again with
    the fallback (see :func:`fallback_converter`); :meth:`Opened.attempt` does the same for
    failures while rendering. If the fallback fails too, the first converter's error is raised.

    Args:
        source: A path, bytes or a binary file object.
        options: The options (limits, password, forced converter, keep_temp).
        registry: The converters.
        name: File name for bytes and streams (and for outputs).
        state: A result to fill in with the MIME type and converter as soon as they are known.
        page_hint: Tell the converter the highest page that will be rendered
            (``ConvertContext.max_page``), so it may skip producing the rest.

    Yields:
        The opened input.

    Raises:
        PreviewerError: A subclass naming the input and the reason.
    """
    limits = options.limits
    with _materialise(source, name, limits) as inp:
        with guard(inp.display, None):
            try:
                mime = _mime.sniff(inp.path, inp.name)
            except OSError as exc:
                raise InputError(f"cannot read: {exc.strerror or exc}") from exc
            if state is not None:
                state.mime = mime
            conv = registry.resolve(mime, name=options.converter)
        if state is not None:
            state.converter = conv.name

        @contextlib.contextmanager
        def retry(error: PreviewerError) -> Iterator[Opened]:
            alt = None
            if options.converter is None:
                alt = fallback_converter(registry, mime, conv.name, error)
            if alt is None:
                raise error
            log.info("%s: %s failed (%s); trying %s", inp.display, conv.name, error, alt.name)
            try:
                with _open(alt, inp, mime, options, registry, page_hint, conv.name) as od:
                    if state is not None:
                        state.converter = alt.name
                    yield od
            except PreviewerError as exc:
                if exc.converter != alt.name or isinstance(exc, OutputError):
                    raise  # not about reading the file: report it as it is
                if state is not None:
                    state.converter = conv.name  # the error reported is the first one's
                error.message = (
                    f"{error.message}; {alt.name} could not read it either: {exc.message}"
                )
                raise error from exc

        with _limits.applied(limits, mime), contextlib.ExitStack() as stack:
            try:
                od = stack.enter_context(_open(conv, inp, mime, options, registry, page_hint, None))
            except PreviewerError as exc:
                od = stack.enter_context(retry(exc))
            else:
                od._fallback = retry
            yield od


@contextlib.contextmanager
def _open(
    conv: Converter,
    inp: _Input,
    mime: str,
    options: Options,
    registry: Registry,
    page_hint: bool,
    fallback_for: str | None,
) -> Iterator[Opened]:
    """Open ``inp`` with ``conv`` in a private work directory; close and clean up on exit."""
    cname = conv.name
    workdir = _WorkDir("previewer-")
    if options.keep_temp:
        workdir()  # asked for: make it exist even if the converter needs none
    try:
        ctx = ConvertContext(
            limits=options.limits,
            mime=mime,
            password=options.password,
            log=logging.getLogger(f"previewer.converter.{cname}"),
            max_page=options.pages.last if page_hint else None,
            fallback_for=fallback_for,
            _workdir=workdir,
            _run=_runner(),
            _delegate=_delegator(registry, options, workdir),
        )
        with guard(inp.display, cname):
            doc = conv.open(inp.path, ctx)
        try:
            with guard(inp.display, cname):
                count = doc.page_count
                if count < 1:
                    raise InputError("document has no pages")
            yield Opened(doc, mime, conv, inp.display, inp.name, inp.path)
        finally:
            with contextlib.suppress(Exception):
                doc.close()
    finally:
        workdir.cleanup(keep=options.keep_temp)


class _WorkDir:
    """A private temporary directory, created on first use (inside ``parent`` if given)."""

    def __init__(self, prefix: str, parent: _WorkDir | None = None) -> None:
        self._prefix = prefix
        self._parent = parent
        self._path: Path | None = None

    def __call__(self) -> Path:
        if self._path is None:
            import tempfile

            base = str(self._parent()) if self._parent is not None else None
            self._path = Path(tempfile.mkdtemp(prefix=self._prefix, dir=base))
        return self._path

    def cleanup(self, *, keep: bool) -> None:
        if self._path is None:
            return
        if keep:
            log.warning("keeping work directory %s", self._path)
            return
        import shutil

        shutil.rmtree(self._path, ignore_errors=True)
        self._path = None


def _runner() -> Callable[..., Any]:
    def run(argv: Sequence[str], **kwargs: Any) -> Any:
        from previewer import process

        return process.run(argv, **kwargs)

    return run


def _delegator(
    registry: Registry, options: Options, workdir: _WorkDir
) -> Callable[[Path, str], Document]:
    def delegate(path: Path, mime: str) -> Document:
        conv = registry.resolve(mime)
        _limits.prepare(options.limits, mime)
        sub = _WorkDir("delegate-", parent=workdir)
        ctx = ConvertContext(
            _workdir=sub,
            limits=options.limits,
            mime=mime,
            password=None,
            log=logging.getLogger(f"previewer.converter.{conv.name}"),
            _run=_runner(),
            _delegate=_delegator(registry, options, sub),
        )
        return conv.open(path, ctx)

    return delegate
