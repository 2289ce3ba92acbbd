"""The batch worker pool: per-file deadlines, memory caps, crash isolation, for many files.

Each batch worker converts one file at a time, with an address-space cap and its own temporary
directory (inside the batch's). A worker that misses its file's deadline is stopped (SIGTERM, so
it unwinds and kills its engines' process groups; SIGKILL if it lingers); a worker that dies (an
engine segfault or abort, the out-of-memory killer) fails only its file. Either way it is
replaced, partial outputs of its file are removed, and the batch goes on. A single conversion
gets the same treatment in a child process of its own (see :mod:`previewer.limited`).

Workers die with their parent: each asks the kernel (``PR_SET_PDEATHSIG``, see
:mod:`previewer.confinement`) for SIGKILL when the process that started it dies. For pool
workers that is the fork server, which itself exits as soon as the main process is gone
(multiprocessing's "alive" pipe), so a ``kill -9`` of a batch leaves no worker behind; the
resource tracker exits once the last of them closes its pipe.

A warm worker also runs single functions under the same rules (:func:`call_on`, a
:class:`Call` job): the queue's cost-class probes and the HTTP service's use it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from previewer.confinement import (
    _crash_error,
    _release_forkserver,
    _short_socket_dir,
    _stop,
    limit_self,
)
from previewer.errors import EngineError, EngineTimeoutError, LimitExceededError, PreviewerError
from previewer.limited import DEADLINE_GRACE, remove_partial, report_messages
from previewer.options import Options
from previewer.results import FileResult, Status

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from previewer.budgets import Limits
    from previewer.registry import Registry

__all__ = ["Call", "WorkerPool", "call_on", "run_call"]

J = TypeVar("J", bound="Job")

log = logging.getLogger(__name__)


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
        self.ctx.set_forkserver_preload(["previewer.pipeline", "previewer.pool"])
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
    remove_partial(job.out_dir, job.name)


@dataclass(frozen=True)
class Call:
    """A function to run on a pool worker, in the pool's job shape (see :func:`call_on`)."""

    source: Path
    name: str
    out_dir: Path
    func: Callable[..., Any]
    args: tuple[Any, ...]

    @property
    def display(self) -> str:
        """The input's name in messages."""
        return self.name


@dataclass
class _Answer(FileResult):
    """A worker's answer: the function's value."""

    value: Any = None


def run_call(job: Call, options: Options, registry: Registry) -> FileResult:
    """A pool worker's task for a :class:`Call`: run its function; never raises.

    Args:
        job: The call.
        options: The pool's options (unused: the probe carries its own arguments).
        registry: The converters (unused).

    Returns:
        An answer holding the function's value, or a failed result with its error.
    """
    started = time.monotonic()
    try:
        return _Answer(job.display, Status.CONVERTED, value=job.func(*job.args))
    except PreviewerError as exc:
        return FileResult(job.display, Status.FAILED, error=exc)
    except Exception as exc:  # noqa: BLE001 - a damaged header fails only this probe
        error = EngineError(f"{job.display}: failed: {type(exc).__name__}: {exc}")
        error.path = job.display
        return FileResult(
            job.display, Status.FAILED, error=error, duration=time.monotonic() - started
        )


def call_on(
    pool: WorkerPool,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    limits: Limits,
    display: str,
) -> Any:
    """Run ``func(*args)`` on a worker of ``pool`` within ``limits.timeout``.

    The pool's task must run :class:`Call` jobs with :func:`run_call`. The worker's memory cap
    is the pool's; a crash or a missed deadline replaces the worker.

    Args:
        pool: The pool.
        func: A module-level function (it is pickled by name).
        args: Its arguments (picklable).
        limits: Its limits (only the timeout may differ from the pool's).
        display: The input's name in errors.

    Returns:
        What ``func`` returned.

    Raises:
        PreviewerError: ``func``'s error, or the worker's timeout, crash or memory exhaustion.
    """
    job = Call(Path(display), Path(display).name, Path(pool.tmp), func, args)
    saved, pool.timeout = pool.timeout, min(pool.timeout, limits.timeout)
    try:
        ((_job, _stat, result),) = list(pool.run([(job, None)], lambda base, _job: base))
    finally:
        pool.timeout = saved
    if result.error is not None:
        raise result.error
    assert isinstance(result, _Answer)
    return result.value
