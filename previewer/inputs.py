"""Inputs: materialising bytes and streams, checking the file, sniffing it, opening a document.

The steps :mod:`previewer.pipeline` takes an input through, each on its own:

- :func:`open_input` turns a path, bytes or a stream into a checked regular file (exists,
  regular, readable, not empty, within the size limit), copying bytes and streams to a
  temporary file that is removed afterwards;
- :func:`sniff` finds its MIME type from its content (and name);
- :func:`open_document` opens it with a given converter, in a private work directory (removed
  afterwards), and closes the document on exit;
- :func:`guard` translates any foreign exception from a converter into a
  :class:`~previewer.errors.PreviewerError` naming the input and the converter.

Which converter opens the file, and which one is tried when it fails, is the pipeline's
decision; nothing here fills in results.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

from previewer import limits as _limits
from previewer import mime as _mime
from previewer.errors import (
    EngineError,
    InputError,
    InvalidOptionsError,
    LimitExceededError,
    PreviewerError,
)
from previewer.options import Limits, Options
from previewer.plugin import ConvertContext, Converter, Document
from previewer.registry import Registry

if TYPE_CHECKING:
    from previewer import tempdirs

__all__ = [
    "Input",
    "Opened",
    "Source",
    "WalkedFile",
    "guard",
    "open_document",
    "open_input",
    "output_stem",
    "sniff",
    "spool",
]

log = logging.getLogger(__name__)

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
"""An input: a file path, the file's bytes, or a readable binary file object."""


@dataclass(frozen=True)
class Input:
    """An input as a checked, readable regular file.

    Attributes:
        path: The file to read (a temporary copy for bytes and streams).
        display: The input as the user named it (for messages).
        name: The file name its outputs start with.
    """

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
def open_input(source: Source, limits: Limits, name: str | None = None) -> Iterator[Input]:
    """Yield ``source`` as a checked regular file, copying bytes and streams to a temporary one.

    Args:
        source: A path (a :class:`WalkedFile` is checked to be the file the walk saw), the
            file's bytes, or a readable binary file object.
        limits: ``max_file_size`` bounds the input.
        name: File name for outputs and messages (only its final component shapes output
            names, see :func:`output_stem`); default: the path's name, or ``input``.

    Yields:
        The file; a temporary copy is removed on exit.

    Raises:
        InputError: If the file is missing, not a regular file, unreadable or empty.
        LimitExceededError: If it is over ``limits.max_file_size``.
        InvalidOptionsError: If ``source`` or ``name`` is of the wrong kind.
    """
    stem = None if name is None else output_stem(name)
    if isinstance(source, (str, os.PathLike)):
        display = str(os.fspath(source))  # a plain str, even for a WalkedFile
        path = Path(display)
        if isinstance(source, WalkedFile):
            _check_walked(source, display, limits)
        else:
            _check_file(path, display, limits)
        yield Input(path, display, stem or path.name or "input")
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
        yield Input(path, display, stem or "input")
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


def sniff(inp: Input) -> str:
    """Return the MIME type of ``inp``'s content (its name breaks ties).

    Args:
        inp: The input.

    Returns:
        The MIME type.

    Raises:
        InputError: If the file cannot be read.
    """
    try:
        return _mime.sniff(inp.path, inp.name)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=inp.display) from exc


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


@contextlib.contextmanager
def open_document(
    conv: Converter,
    inp: Input,
    mime: str,
    options: Options,
    registry: Registry,
    *,
    page_hint: bool = False,
    fallback_for: str | None = None,
) -> Iterator[Opened]:
    """Open ``inp`` with ``conv`` in a private work directory; close and clean up on exit.

    Args:
        conv: The converter.
        inp: The input.
        mime: Its sniffed MIME type.
        options: The options (limits, password, keep_temp, pages).
        registry: The converters an intermediate file may be handed to
            (``ConvertContext.delegate``).
        page_hint: Tell the converter the highest page that will be rendered
            (``ConvertContext.max_page``), so it may skip producing the rest.
        fallback_for: The converter that failed on this file, when ``conv`` is its fallback.

    Yields:
        The opened input (a document with at least one page).

    Raises:
        PreviewerError: A subclass naming the input and the converter.
    """
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
