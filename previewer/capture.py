"""Catching what engines print while they convert one input, as messages for the caller.

Engines talk on their own: Pillow issues warnings (their text names files inside the
installation), libtiff prints ``TIFFFillStrip: Read error ...`` on file descriptor 2, MuPDF and
other C libraries write to descriptors 1 and 2. :func:`captured` collects all of that for the
duration of one conversion, so it can be handed to the ``previewer`` logger and to the
:class:`~previewer.results.FileResult` instead of reaching the host's terminal or logs.

Descriptors are process-wide, so the capture redirects them only where one conversion owns the
process: in the child of a single conversion (see :mod:`previewer.limited`) and in a batch worker
(see :mod:`previewer.pool`), where log records do not go to stderr either: a child keeps them
(:func:`collect_records`) and hands them to its parent, which handles them (:func:`replay`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

__all__ = ["MAX_MESSAGES", "captured", "collect_records", "distinct", "replay"]

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
    from previewer.reporting import scrub_paths

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


# --------------------------------------------------------------------------- log records


class _Collector(logging.Handler):
    """Keeps a child's log records (as plain dicts) for its parent to handle.

    Warnings that engines log through Python's logging (pyvips forwards libvips' GLib
    messages to the ``pyvips`` logger) are engine messages: they go to ``engine``, with those
    captured from the descriptors.
    """

    def __init__(self, records: list[dict[str, Any]], engine: list[str]) -> None:
        super().__init__()
        self.records = records
        self.engine = engine

    def emit(self, record: logging.LogRecord) -> None:
        ours = record.name == "previewer" or record.name.startswith("previewer.")
        if not ours and record.levelno >= logging.WARNING:
            if len(self.engine) < 1000:
                self.engine.append(record.getMessage())
            return
        if len(self.records) >= 1000:
            return
        data = dict(record.__dict__)
        data["msg"] = record.getMessage()
        data["args"] = None
        if record.exc_info:
            data["exc_text"] = logging.Formatter().formatException(record.exc_info)
        data["exc_info"] = None
        self.records.append({k: v for k, v in data.items() if _plain(v)})


def _plain(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def collect_records(level: int, engine: list[str]) -> list[dict[str, Any]]:
    """In a child: send every log record to a list instead of the handlers inherited.

    Args:
        level: The level the parent's root logger has (records below it are not kept).
        engine: Where warnings logged by engines (loggers outside ``previewer``) go, as
            messages.

    Returns:
        The list previewer's own records are kept in, as plain dicts (they pickle).
    """
    records: list[dict[str, Any]] = []
    loggers: list[Any] = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        if isinstance(logger, logging.Logger):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
    root = logging.getLogger()
    root.addHandler(_Collector(records, engine))
    root.setLevel(level)
    return records


def replay(records: Sequence[dict[str, Any]]) -> None:
    """In the parent: handle a child's log records as if they had been logged here.

    Args:
        records: What :func:`collect_records` kept in the child.
    """
    for data in records:
        record = logging.makeLogRecord(data)
        logging.getLogger(record.name).handle(record)
