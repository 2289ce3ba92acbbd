"""Catching what engines print while they convert one input, as messages for the caller.

Engines talk on their own: Pillow issues warnings (their text names files inside the
installation), libtiff prints ``TIFFFillStrip: Read error ...`` on file descriptor 2, MuPDF and
other C libraries write to descriptors 1 and 2. :func:`captured` collects all of that for the
duration of one conversion, so it can be handed to the ``previewer`` logger and to the
:class:`~previewer.results.FileResult` instead of reaching the host's terminal or logs.

Descriptors are process-wide, so the capture redirects them only where one conversion owns the
process: in the child of a single conversion and in a batch worker (see :mod:`previewer.pool`),
where log records do not go to stderr either (a child hands them to its parent).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterable, Iterator

__all__ = ["MAX_MESSAGES", "captured", "distinct"]

MAX_MESSAGES = 20
"""Distinct messages kept per conversion (a broken file can make an engine repeat itself)."""
MAX_LENGTH = 500
"""Characters kept of one message."""
_READ_LIMIT = 64 * 1024
"""Bytes of engine output read back."""

# Warnings meant for developers of the code that triggers them, not for the input's owner.
_IGNORED = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@contextlib.contextmanager
def _descriptors() -> Iterator[int]:
    """Point descriptors 1 and 2 at an in-memory file; yield it; restore them."""
    try:
        sink = os.memfd_create("previewer-engine-output", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        import tempfile

        sink = os.dup(tempfile.TemporaryFile().fileno())
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        for fd in (1, 2):
            os.dup2(sink, fd)
        yield sink
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def _read(sink: int) -> str:
    try:
        os.lseek(sink, 0, os.SEEK_SET)
        data = os.read(sink, _READ_LIMIT)
    except OSError:
        return ""
    finally:
        os.close(sink)
    return data.decode("utf-8", "replace")


@contextlib.contextmanager
def captured(*, descriptors: bool = True) -> Iterator[list[str]]:
    """Collect engine messages issued within the block into the yielded list.

    The list is filled when the block exits: first the warnings (their message only, without
    the file and line that issued them), then each line written to descriptors 1 and 2,
    without repeats, at most :data:`MAX_MESSAGES` of them.

    Args:
        descriptors: Also redirect file descriptors 1 and 2 (only where this conversion is
            the only thing running in the process).

    Yields:
        The list of messages.
    """
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught, contextlib.ExitStack() as stack:
        warnings.simplefilter("always")
        for category in _IGNORED:
            warnings.filterwarnings("ignore", category=category)
        sink = stack.enter_context(_descriptors()) if descriptors else None
        try:
            yield messages
        finally:
            stack.close()
            lines = [f"{w.category.__name__}: {w.message}" for w in caught]
            if sink is not None:
                lines += _read(sink).splitlines()
            messages.extend(distinct(lines))


def distinct(lines: Iterable[str], display: str | None = None) -> list[str]:
    """Return the non-empty ``lines``, stripped, without repeats, at most :data:`MAX_MESSAGES`.

    Args:
        lines: Messages, possibly repeated.
        display: The input's display name, replacing temporary paths in them (see
            :func:`previewer.errors.scrub_paths`); None leaves them.

    Returns:
        The messages kept, each cut to :data:`MAX_LENGTH` characters.
    """
    from previewer.errors import scrub_paths

    kept: list[str] = []
    seen: set[str] = set()
    for line in lines:
        line = line.strip()
        if display is not None:
            line = scrub_paths(line, display)
        if not line or line in seen:
            continue
        seen.add(line)
        if len(kept) >= MAX_MESSAGES:
            break
        kept.append(line[:MAX_LENGTH])
    return kept
