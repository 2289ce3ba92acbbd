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
from typing import IO, TYPE_CHECKING, Any, TypeVar, Union

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

if TYPE_CHECKING:
    from previewer import tempdirs

__all__ = [
    "Opened",
    "Source",
    "WalkedFile",
    "fallback_converter",
    "guard",
    "open_input",
    "output_stem",
    "spool",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
"""An input: a file path, the file's bytes, or a readable binary file object."""


@dataclass(frozen=True)
class _Input:
    path: Path
    display: str
    name: str


class WalkedFile(str):
    """A path found by walking a directory, with the identity the file had then.

    Opening it checks that the path still names that same regular file, so a file swapped
    for a symbolic link (or another file) after the walk is refused instead of converted.

    Attributes:
        identity: ``(st_dev, st_ino)`` of the file when it was walked.
        link: The walked entry was a symbolic link (one that stays inside the tree).
    """

    identity: tuple[int, int]
    link: bool

    def __new__(cls, path: str, identity: tuple[int, int], link: bool = False) -> WalkedFile:
        """Create the path.

        Args:
            path: The file's path.
            identity: ``(st_dev, st_ino)`` from the walk.
            link: The walked entry was a symbolic link.
        """
        self = super().__new__(cls, path)
        self.identity = identity
        self.link = link
        return self

    def __reduce__(self) -> tuple[type[WalkedFile], tuple[str, tuple[int, int], bool]]:
        return (WalkedFile, (str(self), self.identity, self.link))


def output_stem(name: str) -> str:
    r"""Reduce a caller's name for an input to the file name its outputs may start with.

    A name is a display name: only its final component (after the last ``/`` or ``\``) may
    shape an output path, so ``"../../etc/x.pdf"`` or ``"C:\Users\x.pdf"`` cannot climb out
    of the output directory.

    Args:
        name: The name given with bytes, a stream, or a path (say an upload's file name).

    Returns:
        Its final component.

    Raises:
        InvalidOptionsError: If the name is not a string, contains NUL or another control
            character, or its final component is empty, ``.`` or ``..``.
    """
    if not isinstance(name, str):
        raise InvalidOptionsError(f"name must be a string, not {type(name).__name__}")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        raise InvalidOptionsError(f"name {name!r} contains a control character")
    stem = name.replace("\\", "/").rsplit("/", 1)[-1]
    if stem in ("", ".", ".."):
        raise InvalidOptionsError(
            f"name {name!r} has no file name to base the output names on",
            hint="give a name such as report.pdf",
        )
    return stem


@contextlib.contextmanager
def _materialise(source: Source, name: str | None, limits: Limits) -> Iterator[_Input]:
    """Yield a readable regular file for ``source``, copying bytes and streams to a temp file."""
    stem = None if name is None else output_stem(name)
    if isinstance(source, (str, os.PathLike)):
        display = str(os.fspath(source))  # a plain str, even for a WalkedFile
        path = Path(display)
        if isinstance(source, WalkedFile):
            _check_walked(source, display, limits)
        else:
            _check_file(path, display, limits)
        yield _Input(path, display, stem or path.name or "input")
        return
    from previewer import tempdirs

    display = name or "<bytes>"
    if not isinstance(source, (bytes, bytearray, memoryview)) and not hasattr(source, "read"):
        raise InvalidOptionsError(
            f"cannot read input of type {type(source).__name__}: "
            "give a path, bytes or a binary file object"
        )
    held = tempdirs.make("previewer-in-")
    try:
        path = held.path / "input"
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            if len(data) > limits.max_file_size:
                raise _too_big(display, len(data), limits)
            path.write_bytes(data)
        else:
            spool(source, path, display, limits)
        _check_file(path, display, limits)
        yield _Input(path, display, stem or "input")
    finally:
        import shutil

        shutil.rmtree(held.path, ignore_errors=True)
        held.release()


def spool(stream: IO[bytes], path: Path, display: str, limits: Limits) -> None:
    """Copy ``stream`` into a new file ``path`` in chunks, stopping as soon as it is too big.

    Args:
        stream: A readable binary file object (stdin, an upload).
        path: The file to create.
        display: The input's name, for messages.
        limits: ``max_file_size`` bounds the copy.

    Raises:
        LimitExceededError: As soon as more than ``limits.max_file_size`` bytes were read.
        InputError: If the stream cannot be read.
    """
    total = 0
    with open(path, "xb") as out:
        while True:
            try:
                chunk = stream.read(1 << 20)
            except OSError as exc:
                raise InputError(f"cannot read: {exc.strerror or exc}", path=display) from exc
            if not chunk:
                return
            total += len(chunk)
            if total > limits.max_file_size:
                raise LimitExceededError(
                    f"input is over the limit of {limits.max_file_size:,} bytes "
                    f"(stopped reading after {total:,})",
                    path=display,
                    hint="raise --max-file-size to accept it",
                )
            out.write(chunk)


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
    _check_stat(st, display, limits)
    if not os.access(path, os.R_OK):
        raise InputError("permission denied: file is not readable", path=display)


def _check_stat(st: os.stat_result, display: str, limits: Limits) -> None:
    import stat

    if stat.S_ISDIR(st.st_mode):
        raise InputError("is a directory", path=display)
    if not stat.S_ISREG(st.st_mode):
        raise InputError("is not a regular file", path=display)
    if st.st_size == 0:
        raise InputError("file is empty (0 bytes)", path=display)
    if st.st_size > limits.max_file_size:
        raise _too_big(display, st.st_size, limits)


def _check_walked(source: WalkedFile, display: str, limits: Limits) -> None:
    """Check that a walked path still names the file the walk saw, by opening it."""
    import errno

    # O_NOFOLLOW: a plain file replaced by a link is refused; O_NONBLOCK: a FIFO put in its
    # place cannot block the open.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if source.link else os.O_NOFOLLOW)
    try:
        fd = os.open(source, flags)
    except FileNotFoundError:
        raise InputError("no such file", path=display) from None
    except PermissionError:
        raise InputError("permission denied: file is not readable", path=display) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                "was replaced by a symbolic link after the directory was walked; not followed",
                path=display,
            ) from None
        raise InputError(f"cannot open: {exc.strerror or exc}", path=display) from exc
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if (st.st_dev, st.st_ino) != source.identity:
        raise InputError(
            "was replaced by another file after the directory was walked; not converted",
            path=display,
        )
    _check_stat(st, display, limits)


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
        if e.name != failed and e.converter is not None and mime in e.converter.fallback_mime_types
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
        self._held: tempdirs.Held | None = None

    def __call__(self) -> Path:
        if self._held is None:
            from previewer import tempdirs

            base = str(self._parent()) if self._parent is not None else None
            self._held = tempdirs.make(self._prefix, base)
        return self._held.path

    def cleanup(self, *, keep: bool) -> None:
        if self._held is None:
            return
        if keep:
            log.warning("keeping work directory %s", self._held.path)
        else:
            import shutil

            shutil.rmtree(self._held.path, ignore_errors=True)
        self._held.release(keep=keep)
        self._held = None


def _runner() -> Callable[..., Any]:
    def run(argv: Sequence[str], **kwargs: Any) -> Any:
        from previewer import programs

        return programs.run(argv, **kwargs)

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
