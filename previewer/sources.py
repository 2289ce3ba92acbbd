"""Materialising an input: a path, bytes or a stream as a checked regular file.

:func:`open_input` turns a :data:`Source` into an :class:`Input`: a regular file that exists, is
readable, is not empty and is within ``max_file_size``. Bytes and streams are copied (streams by
:func:`spool`, in chunks, stopping as soon as they are too big) to a temporary file that is
removed afterwards; a :class:`WalkedFile` is checked to still be the file a directory walk saw.
:func:`output_stem` reduces a caller's name for an input to the file name its outputs start
with. :mod:`previewer.inputs` re-exports every name here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Union

from previewer.budgets import Limits
from previewer.errors import InputError, InvalidOptionsError, LimitExceededError

__all__ = ["Input", "Source", "WalkedFile", "open_input", "output_stem", "spool"]

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
    with open(path, "xb") as out:
        for chunk in read_chunks(stream, limits.max_file_size, display, "--max-file-size"):
            out.write(chunk)


def read_chunks(stream: IO[bytes], limit: int, display: str, option: str) -> Iterator[bytes]:
    """Yield ``stream``'s data in 1 MiB reads, failing as soon as it is over ``limit`` bytes.

    Args:
        stream: A readable binary file object.
        limit: The most bytes accepted.
        display: The input's name, for messages.
        option: How the caller spells the limit, for the hint (``--max-file-size``).

    Raises:
        InvalidOptionsError: If the stream gives something other than bytes.
        LimitExceededError: As soon as more than ``limit`` bytes were read.
        InputError: If the stream cannot be read.
    """
    total = 0
    while True:
        try:
            chunk = stream.read(1 << 20)
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", path=display) from exc
        if not chunk:
            return
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
                hint=f"raise {option} to accept it",
            )
        yield bytes(chunk)


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
