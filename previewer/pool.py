"""Worker processes: per-file deadlines, memory caps, crash isolation, for batches and single files.

Each batch worker converts one file at a time, with an address-space cap and its own temporary
directory (inside the batch's). A worker that misses its file's deadline is stopped (SIGTERM, so
it unwinds and kills its engines' process groups; SIGKILL if it lingers); a worker that dies (an
engine segfault or abort, the out-of-memory killer) fails only its file. Either way it is
replaced, partial outputs of its file are removed, and the batch goes on.

A single conversion (:func:`run_limited`, used by :mod:`previewer.api` for ``convert``,
``render``, ``info`` and in-process batches) gets the same treatment in a child process of its
own: forked directly when the calling process has a single thread (a few milliseconds, modules
already imported), or started by multiprocessing's fork server when it has more (a web server's
threads: forking a multi-threaded process could copy a lock some other thread holds). The child
runs in its own process group under the address-space cap and the deadline; its result, or its
exception with every attribute, comes back pickled.

Workers and children die with their parent: each asks the kernel (``PR_SET_PDEATHSIG``) for
SIGKILL when the process that started it dies. For pool workers that is the fork server, which
itself exits as soon as the main process is gone (multiprocessing's "alive" pipe), so a
``kill -9`` of a batch leaves no worker behind; the resource tracker exits once the last of them
closes its pipe.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from previewer.errors import (
    EngineError,
    EngineTimeoutError,
    InputError,
    LimitExceededError,
    PreviewerError,
    out_of_memory,
    parameter_words,
    scrub_paths,
)
from previewer.options import Limits, Options
from previewer.results import FileResult, Status

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from previewer.registry import Registry

__all__ = ["WorkerPool", "library_error", "report_messages", "run_limited"]

T = TypeVar("T")
J = TypeVar("J", bound="Job")

log = logging.getLogger(__name__)

DEADLINE_GRACE = 2.0
"""Seconds a worker gets beyond the timeout (its engines time out first and say so)."""
STOP_GRACE = 1.0
"""Seconds a single conversion's child gets to unwind after SIGTERM before its group is killed."""
ISOLATE = True
"""Run single conversions in a child process (:func:`run_limited`). False runs them in the
caller, without the timeout and memory cap: for tests that spy on engines in this process."""
PR_SET_PDEATHSIG = 1
"""``prctl`` option: signal to receive when the parent dies (``<linux/prctl.h>``)."""


class Job(Protocol):
    """What the pool needs of a batch job (:class:`previewer.batch.Job` is one)."""

    @property
    def display(self) -> str:
        """The input as the user sees it."""

    @property
    def name(self) -> str:
        """File name used for its outputs."""

    @property
    def out_dir(self) -> Path:
        """Directory its previews go to."""


Task = Callable[[Any, Options, "Registry"], FileResult]
"""What a worker does with one job: a picklable (module-level) function returning its result
(:meth:`previewer.batch.tasks.ConvertTask.worker` is the batch's)."""


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent (``parent``) dies.

    ``libc`` is loaded by its exact name (``ctypes.util.find_library`` would run a compiler);
    without ``prctl`` (not Linux) nothing is done. If the parent is already gone, exit now.

    Args:
        parent: The pid of the process that started this one.
    """
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent or parent == 1:
        os._exit(1)  # orphaned before the request took effect


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """Return libc's ``prctl``, or None where there is none (looked up once, before forking)."""
    try:
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:  # pragma: no cover - a static interpreter
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
        function: Callable[..., int] = libc.prctl
    except (OSError, AttributeError) as exc:  # pragma: no cover - not Linux
        log.debug("cannot ask to die with the parent: %s", exc)
        return None
    return function


def _prepare_child() -> None:
    """Import and look up here, once, what every child needs, so no child pays for it."""
    import resource  # noqa: F401

    from previewer import capture  # noqa: F401

    _prctl()


def _release_forkserver() -> None:
    """In a child of the fork server: close its copy of the main process's "alive" pipe.

    multiprocessing (3.11) hands each such child the write end of the pipe the fork server
    watches to learn that the main process is gone (``forkserver._forkserver_alive_fd``);
    while any child holds it, the fork server outlives the main process, and children waiting
    to die with the fork server never would.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(alive, int):
        with contextlib.suppress(OSError):
            os.close(alive)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]


def limit_self(max_memory: int, parent: int) -> None:
    """Set up a worker or a single conversion's child: signals, parent death, memory cap.

    Args:
        max_memory: Address space the conversion may take beyond what the process already
            holds, in bytes (the process starts as a copy of a bigger one when forked directly).
        parent: The pid of the process that started this one.
    """
    import resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent coordinates Ctrl-C

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds: engines killed, work dirs removed

    signal.signal(signal.SIGTERM, terminate)
    die_with_parent(parent)
    cap = max_memory + _address_space()
    try:
        # Soft limit only: an engine started from here may get its own cap (LibreOffice needs
        # more address space than a worker, see converters.office_engine).
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot cap memory at %d bytes: %s", cap, exc)


def _address_space() -> int:
    """This process's current address-space size (``VmSize``), in bytes; 0 if unknown."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _worker_main(
    conn: Connection, registry: Registry, max_memory: int, tmp: str, task: Task
) -> None:
    """Worker process: run ``task`` on jobs received on ``conn`` until told to stop."""
    import tempfile

    _release_forkserver()
    limit_self(max_memory, os.getppid())  # the fork server, which exits with the main process
    from previewer import tempdirs

    tempdirs.hold(tmp)  # the batch's folder is in use until this worker exits (lock never released)
    os.environ["TMPDIR"] = tmp
    tempfile.tempdir = tmp
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job, options = message
        result = task(job, options, registry)
        result.input = job.display
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - something in the result does not pickle
            result.error = EngineError(f"the result could not be handed back: {exc}")
            result.error.path = job.display
            result.status, result.outputs = Status.FAILED, []
            try:
                conn.send(result)
            except (BrokenPipeError, OSError):
                return


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    job: Any = None  # the job it is converting (a Job), None when idle
    stat: tuple[int, int] | None = None
    deadline: float = 0.0
    started: float = 0.0


class WorkerPool:
    """Worker processes with per-file deadlines, crash detection and replacement."""

    def __init__(self, size: int, options: Options, registry: Registry, task: Task) -> None:
        import multiprocessing
        from multiprocessing import util

        from previewer import tempdirs

        self.task = task
        self.size = size
        self.options = options
        self.registry = registry
        self.timeout = options.limits.timeout
        tempdirs.reap_once()  # what batches killed by SIGKILL left behind
        self._held = tempdirs.make("previewer-batch-")
        self.tmp = str(self._held.path)
        self.ctx = multiprocessing.get_context("forkserver")
        _short_socket_dir()
        tempdirs.adopt(util.get_temp_dir())  # the fork server's socket folder (pymp-*)
        self.ctx.set_forkserver_preload(["previewer.api", "previewer.pool"])
        self.workers: list[_Worker] = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(
            target=_worker_main,
            args=(
                child,
                self.registry,
                self.options.limits.max_memory,
                self.tmp,
                self.task,
            ),
            name="previewer-worker",
            daemon=True,
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        self.workers.append(worker)
        return worker

    def _retire(self, worker: _Worker, *, kill: bool) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        if kill and worker.process.is_alive():
            _stop(worker.process)
        worker.conn.close()
        worker.process.join(timeout=5)
        if worker.job is not None:
            _remove_partial_outputs(worker.job)

    def run(
        self,
        todo: Sequence[tuple[J, tuple[int, int] | None]],
        job_options: Callable[[Options, J], Options],
    ) -> Iterator[tuple[J, tuple[int, int] | None, FileResult]]:
        """Yield ``(job, stat, result)`` as jobs finish, at most ``size`` at a time.

        Args:
            todo: The jobs, each with what the caller keeps about it (its journal stat).
            job_options: The options one job runs with, from the pool's.

        Yields:
            Each job with its stat and result, in the order they finish.
        """
        from multiprocessing.connection import wait

        pending = deque(todo)
        while pending or any(w.job is not None for w in self.workers):
            idle = [w for w in self.workers if w.job is None]
            while pending and (idle or len(self.workers) < self.size):
                worker = idle.pop() if idle else self._spawn()
                job, stat = pending.popleft()
                options = job_options(self.options, job)
                try:
                    worker.conn.send((job, options))
                except (BrokenPipeError, OSError):
                    self._retire(worker, kill=True)
                    pending.appendleft((job, stat))
                    continue
                now = time.monotonic()
                worker.job, worker.stat = job, stat
                worker.started, worker.deadline = now, now + self.timeout + DEADLINE_GRACE
            busy = [w for w in self.workers if w.job is not None]
            if not busy:
                continue
            wait_for = min(w.deadline for w in busy) - time.monotonic()
            ready = wait(
                [w.conn for w in busy] + [w.process.sentinel for w in busy],
                timeout=max(0.0, wait_for),
            )
            for worker in busy:
                current = worker.job
                assert current is not None
                if worker.conn in ready:
                    try:
                        result: FileResult = worker.conn.recv()
                    except (EOFError, OSError):
                        pass  # died while answering: handled as a crash below
                    else:
                        stat = worker.stat
                        worker.job = None
                        if isinstance(result.error, LimitExceededError):
                            # The worker may still hold the memory it ran out of: replace it.
                            self._retire(worker, kill=True)
                        report_messages(current.display, result.warnings)
                        yield current, stat, result
                        continue
                if worker.process.sentinel in ready or not worker.process.is_alive():
                    worker.process.join(timeout=5)
                    error = _crash_error(worker.process.exitcode)
                    self._retire(worker, kill=True)
                    yield current, worker.stat, _failed(current, error, worker.started)
                elif time.monotonic() >= worker.deadline:
                    self._retire(worker, kill=True)
                    error = EngineTimeoutError(
                        f"conversion did not finish within the timeout of {self.timeout:g} s; "
                        "its worker was stopped",
                        hint="raise timeout if the input is legitimately slow",
                    )
                    yield current, worker.stat, _failed(current, error, worker.started)

    def close(self) -> None:
        """Stop every worker (politely, then by force) and remove the batch's temp directory."""
        import shutil

        for worker in list(self.workers):
            if worker.job is None and worker.process.is_alive():
                try:
                    worker.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        deadline = time.monotonic() + 2.0
        for worker in list(self.workers):
            if worker.job is None:
                worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            self._retire(worker, kill=True)
        if self.options.keep_temp:  # the kept work directories are in it
            log.warning("keeping the batch's temporary directory %s", self.tmp)
            self._held.release(keep=True)
            return
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._held.release()


def _short_socket_dir() -> None:
    """Make multiprocessing put its fork-server socket where the path fits AF_UNIX (108 bytes).

    It uses a directory under the temporary directory; a long ``TMPDIR`` (deep build or test
    directories) would make the fork server fail with "AF_UNIX path too long".
    """
    import tempfile
    from multiprocessing import util

    if len(tempfile.gettempdir()) <= 60 or not os.access("/tmp", os.W_OK):
        return
    saved = tempfile.tempdir
    tempfile.tempdir = "/tmp"
    try:
        util.get_temp_dir()  # created now, under /tmp, and reused for the life of the process
    finally:
        tempfile.tempdir = saved


def _stop(process: BaseProcess, grace: float = 3.0) -> None:
    """SIGTERM a worker (it unwinds and kills its engines), then SIGKILL if it lingers."""
    if process.pid is None:
        return
    try:
        os.kill(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    process.join(timeout=grace)
    if process.is_alive():
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.join(timeout=5)


def _crash_error(exitcode: int | None) -> PreviewerError:
    if exitcode is not None and exitcode < 0:
        signum = -exitcode
        try:
            signame = signal.Signals(signum).name
        except ValueError:
            signame = f"signal {signum}"
        if signum == signal.SIGKILL:
            return LimitExceededError(
                "its worker was killed (SIGKILL), most likely by the out-of-memory killer",
                hint="ask for a smaller size or lower max_memory, or give the machine more memory",
            )
        return EngineError(f"the engine crashed ({signame}); its worker was replaced")
    return EngineError(f"its worker exited unexpectedly (status {exitcode}); it was replaced")


def _failed(job: Job, error: PreviewerError, started: float) -> FileResult:
    if error.path is None:
        error.path = job.display
    return FileResult(
        input=job.display,
        status=Status.FAILED,
        error=error,
        duration=time.monotonic() - started,
    )


def _remove_partial_outputs(job: Job) -> None:
    """Remove temporary files a killed worker may have left while writing this job's previews."""
    _remove_partial(job.out_dir, job.name)


# --------------------------------------------------------------------------- single conversions

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
            _remove_partial(out_dir, name)
        raise
    if data is None:
        if out_dir is not None and name is not None:
            _remove_partial(out_dir, name)
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
    _replay(records)
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
    records = _collect_records(level, logged)
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


def _collect_records(level: int, engine: list[str]) -> list[dict[str, Any]]:
    """In a child: send every log record to a list instead of the handlers inherited."""
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


def _replay(records: Sequence[dict[str, Any]]) -> None:
    """In the parent: handle a child's log records as if they had been logged here."""
    for data in records:
        record = logging.makeLogRecord(data)
        logging.getLogger(record.name).handle(record)


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
    _short_socket_dir()
    ctx.set_forkserver_preload(["previewer.api", "previewer.pool"])
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_forkserver_child,
        args=(sender, func, args, limits, display, logging.getLogger().getEffectiveLevel()),
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
) -> None:
    """The target of a fork-server child: run :func:`_child` and send its answer."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _release_forkserver()
    payload = _child(func, args, limits, display, os.getppid(), level)
    conn.send_bytes(payload)
    conn.close()


def _remove_partial(out_dir: Path, name: str) -> None:
    """Remove temporary files a killed child may have left while writing previews."""
    prefix = f".{name[:100]}."
    try:
        names = os.listdir(out_dir)
    except OSError:
        return
    for entry in names:
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(out_dir / entry)
