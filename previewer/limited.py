"""Running one function in a child process where limits apply: deadline, memory cap, crashes.

:func:`run_limited` is how a single conversion (``convert``, ``render``, ``info``, each file of
an in-process batch, a desktop thumbnail) reaches its :class:`~previewer.options.Limits`: the
child is forked directly when the calling process has a single thread (a few milliseconds,
modules already imported), or started by multiprocessing's fork server when it has more (a web
server's threads: forking a multi-threaded process could copy a lock some other thread holds).
It runs in its own process group under the address-space cap and the deadline, and dies with its
caller (see :mod:`previewer.confinement`); its result, or its exception with every attribute,
comes back pickled, with what engines printed meanwhile (see :mod:`previewer.capture`).

This module runs the function it is given and knows nothing of what it does: the pipeline
(:mod:`previewer.pipeline`) decides what runs here, the batch worker pool
(:mod:`previewer.pool`) uses the same confinement for its workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from previewer.confinement import (
    _crash_error,
    _prepare_child,
    _release_forkserver,
    _short_socket_dir,
    _stop,
    limit_self,
)
from previewer.errors import (
    EngineError,
    EngineTimeoutError,
    InputError,
    LimitExceededError,
    PreviewerError,
    out_of_memory,
)
from previewer.reporting import parameter_words, scrub_paths

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from previewer.budgets import Limits

__all__ = ["ISOLATE", "library_error", "remove_partial", "report_messages", "run_limited"]

T = TypeVar("T")

DEADLINE_GRACE = 2.0
"""Seconds a worker gets beyond the timeout (its engines time out first and say so)."""
STOP_GRACE = 1.0
"""Seconds a single conversion's child gets to unwind after SIGTERM before its group is killed."""
ISOLATE = True
"""Run single conversions in a child process (:func:`run_limited`). False runs them in the
caller, without the timeout and memory cap: for tests that spy on engines in this process."""

_engine_log = logging.getLogger("previewer.engine")


def report_messages(display: str, messages: Sequence[str]) -> None:
    """Hand the engine messages captured while converting ``display`` to the logger.

    Args:
        display: The input, as the caller named it.
        messages: What :func:`previewer.capture.captured` collected.
    """
    for message in messages:
        _engine_log.warning("%s: %s", display, message)


def library_error(exc: BaseException, display: str, limits: Limits) -> BaseException:
    """Give an exception leaving a conversion the library's form.

    Allocation failures (a ``MemoryError``, MuPDF's ``FzErrorSystem``, or an error a converter
    raised from one) become :class:`LimitExceededError` naming ``max_memory``; command-line
    flags in messages become parameters; temporary paths become the input's display name.

    Args:
        exc: What the conversion raised.
        display: The input, as the caller named it.
        limits: The limits it ran under.

    Returns:
        The exception to raise (``exc`` itself, updated, or a new one).
    """
    original = exc
    if isinstance(exc, PreviewerError) and not isinstance(exc, LimitExceededError):
        if isinstance(exc, (EngineError, InputError)) and out_of_memory(exc):
            exc = _memory_error(exc.path or display, exc.converter, limits)
    elif isinstance(exc, LimitExceededError):
        if exc.message.startswith("ran out of memory"):
            exc = _memory_error(exc.path or display, exc.converter, limits)
    elif isinstance(exc, MemoryError) or (isinstance(exc, Exception) and out_of_memory(exc)):
        exc = _memory_error(display, None, limits)
    if exc is not original:
        exc.__cause__ = original
    if isinstance(exc, PreviewerError):
        exc.message = scrub_paths(parameter_words(exc.message), display)
        if exc.hint:
            exc.hint = scrub_paths(parameter_words(exc.hint), display)
    return exc


def _memory_error(display: str, converter: str | None, limits: Limits) -> LimitExceededError:
    return LimitExceededError(
        f"ran out of memory (max_memory is {limits.max_memory:,} bytes)",
        path=display,
        converter=converter,
        hint="raise max_memory or ask for a smaller size",
    )


def _single_threaded() -> bool:
    """True when this process runs one thread (C threads included), so ``fork()`` is safe."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # pragma: no cover - no /proc
        import threading

        return threading.active_count() == 1


def run_limited(
    func: Callable[..., T],
    args: tuple[Any, ...],
    *,
    limits: Limits,
    display: str,
    out_dir: Path | None = None,
    name: str | None = None,
) -> tuple[T, list[str]]:
    """Run ``func(*args)`` in a child process under ``limits``; return its value and messages.

    The child runs in its own process group with an address-space cap of ``limits.max_memory``
    beyond what it starts with and dies with its caller. It has ``limits.timeout`` (plus
    :data:`DEADLINE_GRACE`, so engines under the timeout report it first) to answer; then it is
    sent SIGTERM (it unwinds, stopping its engines), and its process group SIGKILL after
    :data:`STOP_GRACE`. Engine messages printed meanwhile are captured (see
    :mod:`previewer.capture`). ``func``, ``args`` and the value must pickle when the caller has
    several threads (the child then comes from a fork server).

    Args:
        func: A module-level function.
        args: Its arguments.
        limits: The limits to enforce.
        display: The input's display name, for errors.
        out_dir: Where ``func`` writes previews, to remove partial files of a killed child.
        name: The outputs' base name (with ``out_dir``).

    Returns:
        ``func``'s value and the captured messages.

    Raises:
        EngineTimeoutError: The child missed the deadline.
        LimitExceededError: It ran out of memory.
        EngineError: It crashed.
        Exception: Whatever ``func`` raised, with its attributes (see :func:`library_error`).
    """
    import _pickle

    deadline = time.monotonic() + limits.timeout + DEADLINE_GRACE
    try:
        if _single_threaded():
            data, exitcode = _forked(func, args, limits, display, deadline)
        else:
            data, exitcode = _from_forkserver(func, args, limits, display, deadline)
    except BaseException:
        if out_dir is not None and name is not None:
            remove_partial(out_dir, name)
        raise
    if data is None:
        if out_dir is not None and name is not None:
            remove_partial(out_dir, name)
        if exitcode is None:
            raise EngineTimeoutError(
                f"conversion did not finish within the timeout of {limits.timeout:g} s; "
                "it was stopped",
                path=display,
                hint="raise timeout if the input is legitimately slow",
            )
        error = _crash_error(exitcode)
        if isinstance(error, LimitExceededError):
            error = _memory_error(display, None, limits)
        else:
            # The same words as for a worker, without the worker.
            error.message = error.message.replace("; its worker was replaced", "")
            error.message = error.message.replace("its worker exited", "the conversion exited")
            error.message = error.message.replace("; it was replaced", "")
        error.path = display
        raise error
    kind, value, messages, records = _pickle.loads(data)
    from previewer import capture

    capture.replay(records)
    if kind == "error":
        raise value
    return value, messages


def _child(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    limits: Limits,
    display: str,
    parent: int,
    level: int,
) -> bytes:
    """In the child: set up, run ``func``, and return the pickled outcome."""
    import _pickle

    from previewer import capture

    limit_self(limits.max_memory, parent)
    logged: list[str] = []
    records = capture.collect_records(level, logged)
    outcome: tuple[str, Any]
    with capture.captured() as captured:
        try:
            outcome = ("ok", func(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the caller as it is
            error = library_error(exc, display, limits)
            if not isinstance(error, PreviewerError):  # a bug: keep where it happened
                import traceback

                error.add_note("in the conversion's child process:\n" + traceback.format_exc())
            outcome = ("error", error)
    messages = capture.distinct([*captured, *logged], display)
    try:
        return bytes(_pickle.dumps((*outcome, messages, records), protocol=5))
    except Exception:  # noqa: BLE001 - retried below
        pass
    if outcome[0] == "error" and isinstance(outcome[1], PreviewerError):
        # An engine's exception that does not pickle: hand its text on instead.
        cause = outcome[1].__cause__
        if cause is not None:
            outcome[1].__cause__ = RuntimeError(f"{type(cause).__name__}: {cause}")
    try:
        return bytes(_pickle.dumps((*outcome, messages, records), protocol=5))
    except Exception as exc:  # noqa: BLE001 - an unpicklable value or exception
        error = EngineError(
            f"the result could not be handed back ({type(exc).__name__}: {exc})", path=display
        )
        if outcome[0] == "error":
            original = outcome[1]
            error = EngineError(f"{type(original).__name__}: {original}", path=display)
        return bytes(_pickle.dumps(("error", error, messages, records), protocol=5))


def _forked(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    limits: Limits,
    display: str,
    deadline: float,
) -> tuple[bytes | None, int | None]:
    """Fork, run ``func`` in the child, and read its answer.

    Returns ``(data, 0)``; ``(None, exitcode)`` when it died without answering; ``(None, None)``
    when it missed ``deadline``.
    """
    import select

    _prepare_child()
    parent = os.getpid()
    level = logging.getLogger().getEffectiveLevel()
    for stream in (sys.stdout, sys.stderr):  # or the child would write their buffers again
        with contextlib.suppress(Exception):
            stream.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (coverage does not follow it)
        status = 70
        try:
            os.close(read_fd)
            os.setpgid(0, 0)
            payload = _child(func, args, limits, display, parent, level)
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view) :]
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # as the child does: no window where it shares ours
    chunks: list[bytes] = []
    finished = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            readable, _, _ = select.select([read_fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                finished = True
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        if not finished:
            _kill_child(pid)
    _, status = os.waitpid(pid, 0)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)  # anything it left in its group
    if not finished:
        return None, None
    exitcode = os.waitstatus_to_exitcode(status)
    if exitcode != 0 or not chunks:
        return None, exitcode
    return b"".join(chunks), exitcode


def _kill_child(pid: int) -> None:
    """SIGTERM a single conversion's child; SIGKILL its process group if it lingers."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + STOP_GRACE
    while time.monotonic() < end:
        try:
            # WNOWAIT: leave it unreaped, so its pid (the group's id) cannot be reused yet.
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is not None:
            break
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _from_forkserver(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    limits: Limits,
    display: str,
    deadline: float,
) -> tuple[bytes | None, int | None]:
    """Like :func:`_forked`, with the child started by multiprocessing's fork server."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    temp = tempfile.gettempdir()  # the caller's, now: the fork server keeps its own from its start
    _short_socket_dir()
    # The fork server imports the function's module once; each child starts with it imported
    # (never a script's __main__: multiprocessing would run it in the fork server).
    ctx.set_forkserver_preload([m for m in (func.__module__, __name__) if m != "__main__"])
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_forkserver_child,
        args=(sender, func, args, limits, display, logging.getLogger().getEffectiveLevel(), temp),
        name="previewer-convert",
        daemon=False,
    )
    process.start()
    sender.close()
    data: bytes | None = None
    try:
        remaining = deadline - time.monotonic()
        if receiver.poll(max(0.0, remaining)):
            with contextlib.suppress(EOFError, OSError):
                data = receiver.recv_bytes()
        if data is None and process.is_alive() and time.monotonic() >= deadline:
            return None, None
        process.join(timeout=max(0.0, deadline - time.monotonic()) + STOP_GRACE)
        return data, process.exitcode if data is None else 0
    finally:
        receiver.close()
        if process.is_alive():
            _stop(process, grace=STOP_GRACE)
        if process.pid is not None:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
        process.join(timeout=5)


def _forkserver_child(
    conn: Connection,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    limits: Limits,
    display: str,
    level: int,
    temp: str,
) -> None:
    """The target of a fork-server child: run :func:`_child` and send its answer.

    ``temp`` is the caller's temporary directory: work directories go where a forked child's
    would, whatever ``TMPDIR`` was when the fork server started.
    """
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _release_forkserver()
    os.environ["TMPDIR"] = temp
    tempfile.tempdir = temp
    payload = _child(func, args, limits, display, os.getppid(), level)
    conn.send_bytes(payload)
    conn.close()


def remove_partial(out_dir: Path, name: str) -> None:
    """Remove temporary files a killed child, worker or queue task left while writing previews."""
    prefix = f".{name[:100]}."
    try:
        names = os.listdir(out_dir)
    except OSError:
        return
    for entry in names:
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(out_dir / entry)
