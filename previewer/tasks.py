"""Queue workers: a Celery app (Redis broker and result backend) and the submitting side.

Workers on one or many machines run :func:`convert_file`, one task per input; the submitting
side (:func:`submit_many`) walks the inputs exactly like a local batch, enqueues one task per
file and rebuilds the same :class:`~previewer.results.FileResult` objects from the JSON results,
so reports, failure counts and exit codes match a local run. Inputs and the output directory
must be reachable under the same absolute paths on every machine (shared storage).

Reliability settings: late acknowledgement with requeue when a worker dies mid-task, a prefetch
of one, soft and hard time limits derived from the timeout, a Redis visibility timeout just above
the hard limit (a task of a killed worker is redelivered after it), per-child task and memory
recycling, JSON only. Tasks are idempotent: the same input and options give the same output
paths, and previews are written atomically, so a redelivered task is harmless.

Usage: ``celery -A previewer.tasks worker`` or ``previewer worker``; the broker URL comes from
``PREVIEWER_BROKER_URL`` (default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from celery import Celery

from previewer.errors import (
    EngineError,
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidOptionsError,
    PreviewerError,
)
from previewer.options import Limits, Options
from previewer.results import BatchReport, FileResult, Status

__all__ = [
    "DEFAULT_BROKER",
    "BrokerUnavailableError",
    "app",
    "broker_url",
    "cancel_run",
    "configure",
    "convert_file",
    "submit_many",
    "time_limits",
]

log = logging.getLogger(__name__)

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
"""Broker (and result backend) used when neither ``--broker`` nor the environment names one."""

BROKER_ENV = "PREVIEWER_BROKER_URL"
"""Environment variable naming the broker URL."""

TASK_NAME = "previewer.convert_file"
SOFT_GRACE = 2.0
"""Seconds the soft time limit stays above the timeout, as a local batch's worker deadline does
(``previewer.limited.DEADLINE_GRACE``): an engine that overruns the timeout is killed by
:func:`previewer.process.run` first and reports it in the same words as in a local run."""
HARD_GRACE = 2.0
"""Seconds between the soft time limit (the task cleans up) and the hard one (its child dies)."""
CANCEL_PREFIX = "previewer-cancel-"
"""Redis key prefix of a cancelled run (``previewer-cancel-<run id>``): its tasks are discarded."""
ALIVE_PREFIX = "previewer-run-"
"""Redis key prefix of a submitter's heartbeat (``previewer-run-<run id>``): while it exists the
submitter is waiting for the run's results; once it expires, workers discard the run's tasks."""
HEARTBEAT = 120.0
"""Seconds a submitter's heartbeat lasts (it renews it every tenth of that): above the default
``outage_grace``, so a submitter riding out an outage is not taken for gone."""
CANCEL_TTL = 7 * 24 * 3600
"""Seconds a cancellation is remembered (longer than a task can wait in any sane queue)."""
MAX_ATTEMPTS = 3
"""Deliveries of one task after which it fails instead of converting again: a file whose
engine crashes its worker process would otherwise be requeued (``task_reject_on_worker_lost``)
and crash a worker for ever, where a local batch reports an EngineError."""
ATTEMPTS_PREFIX = "previewer-attempts-"
"""Redis key prefix counting a task's deliveries (``previewer-attempts-<task id>``)."""
STOP_SIGNAL = "SIGUSR1"
"""The signal a revoked task's process gets: Celery's prefork pool uses it for the soft time
limit, so a task interrupted by it cleans up (engines killed, temporary files removed)."""
VISIBILITY_MARGIN = 2.0
"""Seconds the Redis visibility timeout stays above the hard limit."""
MAX_TASKS_PER_CHILD = 1000
MAX_MEMORY_PER_CHILD_KB = 2 * 1024 * 1024
"""Resident memory (KiB) after which a worker child is replaced once its task ends."""


class BrokerUnavailableError(EngineUnavailableError):
    """The queue's broker (Redis) cannot be reached."""


def broker_url(broker: str | None = None) -> str:
    """Return the broker URL: ``broker``, else ``$PREVIEWER_BROKER_URL``, else the default."""
    return broker or os.environ.get(BROKER_ENV) or DEFAULT_BROKER


def time_limits(timeout: float) -> tuple[float, float, float]:
    """Return ``(soft, hard, visibility)`` seconds derived from a per-file ``timeout``."""
    soft = float(timeout) + SOFT_GRACE
    hard = soft + HARD_GRACE
    return soft, hard, hard + VISIBILITY_MARGIN


def configure(
    celery_app: Celery,
    *,
    broker: str | None = None,
    timeout: float = Limits().timeout,
    max_tasks_per_child: int = MAX_TASKS_PER_CHILD,
    max_memory_per_child: int = MAX_MEMORY_PER_CHILD_KB,
) -> Celery:
    """Apply previewer's broker and reliability settings to a Celery app.

    Args:
        celery_app: The app to configure.
        broker: Broker URL (see :func:`broker_url`); the result backend is the same Redis.
        timeout: Per-file seconds; the soft/hard limits and visibility timeout derive from it.
        max_tasks_per_child: Replace a worker child after this many tasks.
        max_memory_per_child: Replace a worker child whose resident memory exceeds this (KiB).

    Returns:
        The app.
    """
    url = broker_url(broker)
    soft, hard, visibility = time_limits(timeout)
    celery_app.conf.update(
        broker_url=url,
        result_backend=url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=soft,
        task_time_limit=hard,
        worker_max_tasks_per_child=max_tasks_per_child,
        worker_max_memory_per_child=max_memory_per_child,
        # kombu scans for unacknowledged tasks of dead workers only every interval x throttle
        # seconds (10 x 10 by default); scan every few seconds so redelivery follows the timeout.
        broker_transport_options={
            "visibility_timeout": visibility,
            "unacked_restore_interval": max(1, min(10, int(visibility / 4))),
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"visibility_timeout": visibility},
        result_expires=24 * 3600,
        # A worker that finishes while Redis is away keeps retrying to store the result (with
        # backoff, up to about two minutes) instead of failing the task: the result is not lost.
        result_backend_always_retry=True,
        result_backend_max_retries=60,
        result_backend_base_sleep_between_retries_ms=100,
        result_backend_max_sleep_between_retries_ms=2000,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        redis_socket_connect_timeout=5,
        redis_socket_timeout=30,
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return celery_app


app = configure(Celery("previewer"))
"""The workers' app (``celery -A previewer.tasks worker``), configured from the environment."""


# --------------------------------------------------------------------------- worker side

PRELOAD = (
    "previewer.pipeline",
    "previewer.rendering",
    "previewer.output",
    "converters",
    "PIL.Image",
    "PIL.PngImagePlugin",
    "PIL.JpegImagePlugin",
    "pymupdf",
)
"""Modules a worker imports before it forks its processes, so each new one starts warm."""


def preload() -> None:
    """Import :data:`PRELOAD` (what nearly every task needs) in the worker's main process.

    Worker processes are forked from it and replaced every ``max_tasks_per_child`` files; with
    these already imported, a replacement converts its first file without a cold start.
    """
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing engine only costs the warm start
            log.debug("cannot preload %s: %s", name, exc)


_registry: Any = None


def _remove_partial_outputs(out_dir: Path, name: str) -> None:
    """Remove temporary files an earlier, killed attempt left while writing these previews."""
    prefix = f".{name[:100]}."
    try:
        names = os.listdir(out_dir)
    except OSError:
        return
    for entry in names:
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            try:
                os.unlink(out_dir / entry)
            except OSError:
                pass


class _StoppedError(EngineTimeoutError):
    """The task's process got the stop signal before its soft time limit: it was revoked.

    An :class:`EngineTimeoutError` so that nothing on the way (the fallback converter, the
    pipeline's guards) treats it as a failure about the file.
    """


def _timeout_error(timeout: float, path: str, *, killed: bool = False) -> EngineTimeoutError:
    """The error a local batch reports for a file its worker had to stop (``previewer.pool``)."""
    how = "its worker process was killed" if killed else "it was stopped"
    return EngineTimeoutError(
        f"conversion did not finish within the timeout of {timeout:g} s; {how}",
        path=path,
        hint="raise --timeout if the input is legitimately slow",
    )


def _begin(celery_app: Celery, run: str | None, task_id: str | None) -> tuple[str, int]:
    """The run's state and this task's delivery count, in one round trip to Redis.

    Returns:
        ``("cancelled" | "gone" | "alive", deliveries)``: ``gone`` when the submitter's
        heartbeat has expired; deliveries count this one.
    """
    if not run and not task_id:
        return "alive", 1
    try:
        pipe = celery_app.backend.client.pipeline()
        if run:
            pipe.exists(CANCEL_PREFIX + run)
            pipe.exists(ALIVE_PREFIX + run)
        if task_id:
            pipe.incr(ATTEMPTS_PREFIX + task_id)
            pipe.expire(ATTEMPTS_PREFIX + task_id, CANCEL_TTL)
        replies = pipe.execute()
    except Exception as exc:  # noqa: BLE001 - cannot tell: convert rather than lose the file
        log.warning("cannot read the state of run %s: %s", run, exc)
        return "alive", 1
    state = "alive"
    if run:
        cancelled, alive = replies[:2]
        replies = replies[2:]
        state = "cancelled" if cancelled else "alive" if alive else "gone"
    return state, int(replies[0]) if task_id else 1


def _cancelled(celery_app: Celery, run: str | None) -> bool:
    """Whether the submitter of ``run`` cancelled it (its cancellation key exists in Redis)."""
    if not run:
        return False
    try:
        return bool(celery_app.backend.client.exists(CANCEL_PREFIX + run))
    except Exception as exc:  # noqa: BLE001 - cannot tell: convert rather than lose the file
        log.warning("cannot check whether run %s was cancelled: %s", run, exc)
        return False


def _forget_attempts(celery_app: Celery, task_id: str | None) -> None:
    if task_id:
        try:
            celery_app.backend.client.delete(ATTEMPTS_PREFIX + task_id)
        except Exception as exc:  # noqa: BLE001 - the counter expires anyway
            log.debug("cannot delete the attempt counter of task %s: %s", task_id, exc)


@contextlib.contextmanager
def _stop_on_signal(
    started: float, soft: float | None, timeout: float, path: str
) -> Iterator[None]:
    """While converting, turn the stop signal into one of our errors.

    Celery's prefork pool sends :data:`STOP_SIGNAL` at the soft time limit, and a revoke with
    ``terminate`` sends it too; its own handler raises ``SoftTimeLimitExceeded``, which the
    pipeline would report as an unexpected engine failure (exit 7). Raising a PreviewerError
    instead lets it pass the converters' guards unchanged while :func:`previewer.process.run`
    kills the engine's process group on the way out: a timeout is an
    :class:`EngineTimeoutError` (exit 8) as in a local run, and a revoke a
    :class:`_StoppedError` the task discards.
    """
    import signal
    import threading

    signum = getattr(signal, STOP_SIGNAL, None)
    if signum is None or threading.current_thread() is not threading.main_thread():
        yield  # another pool (solo, threads): no time limits to translate
        return
    active = [True]

    def on_signal(number: int, frame: object) -> None:
        if not active[0]:
            return  # arrived after the conversion: nothing left to stop
        if soft is not None and time.monotonic() - started >= soft - min(0.5, soft / 4):
            raise _timeout_error(timeout, path)
        raise _StoppedError("the conversion was stopped", path=path)

    previous = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        active[0] = False
        signal.signal(signum, previous)


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def convert_file(
    self: Any,
    path: str,
    options_dict: dict[str, Any],
    name: str | None = None,
    run: str | None = None,
) -> dict[str, Any]:
    """Convert one input on a worker and return its JSON result.

    A task of a cancelled run (see :func:`submit_many`) is discarded without converting: before
    it starts, or when it is stopped by a revoke while it runs; so is one whose submitter's
    heartbeat has expired (the submitter was killed without cancelling).

    Args:
        self: The task (Celery's bound-task argument).
        path: Absolute path of the input, as seen by the workers.
        options_dict: The options, from :meth:`Options.to_dict` (``out_dir`` absolute).
        name: File name for the outputs (default: the path's name).
        run: The submitting run's id, whose cancellation key and heartbeat are checked.

    Returns:
        ``FileResult.to_dict(detail=True)`` (with the error's parts, to rebuild it).

    Raises:
        Ignore: The run was cancelled or its submitter is gone: no conversion, no result.
    """
    from celery.exceptions import Ignore

    from previewer.registry import Registry

    global _registry
    if _registry is None:
        _registry = Registry()
    started = time.monotonic()
    out_name = name or os.path.basename(path)
    state, attempts = _begin(self.app, run, self.request.id)
    if state != "alive":
        why = "its run was cancelled" if state == "cancelled" else "its submitter is gone"
        log.info("discarding %s: %s", path, why)
        _forget_attempts(self.app, self.request.id)
        raise Ignore()
    try:
        options = _options_from_dict(options_dict)
    except InvalidOptionsError as exc:
        result = FileResult(input=path, status=Status.FAILED, error=exc)
    else:
        if attempts > 1 or (self.request.delivery_info or {}).get("redelivered"):
            # An earlier attempt died mid-write: remove its temporary files.
            _remove_partial_outputs(options.out_dir, out_name)
        if attempts > MAX_ATTEMPTS:
            error = EngineError(
                f"its worker process exited unexpectedly {attempts - 1} times while converting "
                "it; not tried again",
                path=path,
            )
            result = FileResult(input=path, status=Status.FAILED, error=error)
        else:
            try:
                result = _convert_stoppable(self, path, options, name, run, started)
            except Ignore:
                _forget_attempts(self.app, self.request.id)
                raise
    _forget_attempts(self.app, self.request.id)
    result.duration = time.monotonic() - started
    return result.to_dict(detail=True)


def _convert_stoppable(
    task: Any, path: str, options: Options, name: str | None, run: str | None, started: float
) -> FileResult:
    """Convert under the stop signal's translation (see :func:`_stop_on_signal`).

    Raises:
        Ignore: The conversion was stopped because its run was cancelled.
    """
    from celery.exceptions import Ignore, SoftTimeLimitExceeded

    from previewer.pipeline import convert_one

    out_name = name or os.path.basename(path)
    timeout = options.limits.timeout
    soft = (task.request.timelimit or (None, None))[1] or task.app.conf.task_soft_time_limit
    try:
        for attempt in range(2):
            with _stop_on_signal(started, soft, timeout, path):
                result = convert_one(path, options, _registry, name=name)
            if type(result.error) is not _StoppedError:
                return result
            _remove_partial_outputs(options.out_dir, out_name)
            if _cancelled(task.app, run):
                log.info("stopped %s: its run was cancelled", path)
                raise Ignore()
            if attempt:
                break
            # A stray signal (a revoke meant for the task this process ran before).
            log.warning("%s was stopped by a stray signal; converting it again", path)
    except SoftTimeLimitExceeded:
        # Arrived outside the conversion, where Celery's own handler is in place.
        _remove_partial_outputs(options.out_dir, out_name)
        if _cancelled(task.app, run):
            raise Ignore() from None
    return FileResult(input=path, status=Status.FAILED, error=_timeout_error(timeout, path))


# --------------------------------------------------------------------------- submitting side


def _options_from_dict(data: dict[str, Any]) -> Options:
    """Rebuild a queued task's options (see :meth:`Options.from_dict`).

    Raises:
        InvalidOptionsError: If a value is invalid (the message says it came from a task).
    """
    try:
        return Options.from_dict(data)
    except InvalidOptionsError as exc:
        raise InvalidOptionsError(f"invalid options in a queued task: {exc.message}") from exc


def _rebuild_result(data: dict[str, Any], display: str, abs_path: str, out_dir: Path) -> FileResult:
    """A worker's result as a local run gives it: named as the user named the input.

    The worker saw the input under its absolute path and wrote into the shared output folder;
    the result names the input as given and the previews under this run's ``out_dir``.
    """
    result = FileResult.from_dict(data)
    result.input = display
    if result.error is not None and result.error.path in (abs_path, None):
        result.error.path = display
    result.outputs = [
        replace(p, source=display, path=out_dir / p.path.name if p.path is not None else None)
        for p in result.outputs
    ]
    return result


def _failure_result(meta: dict[str, Any], display: str, timeout: float) -> FileResult:
    """A result for a task that raised on the worker (hard time limit, lost worker, bug).

    Celery's backend hands the failure over as an exception object rebuilt from its JSON
    (``exc_type``, ``exc_message``); older results may still be that dict.
    """
    info = meta.get("result")
    if isinstance(info, BaseException):
        exc_type, exc_message = type(info).__name__, str(info)
    elif isinstance(info, dict):
        exc_type, exc_message = str(info.get("exc_type", "")), str(info.get("exc_message", ""))
    else:
        exc_type, exc_message = "", str(info or "")
    error: PreviewerError
    if "TimeLimitExceeded" in exc_type:
        # The child ignored the soft limit (stuck in an engine's C code) and was killed at the
        # hard one; a local batch reports its worker killed at the deadline the same way.
        error = _timeout_error(timeout, display, killed=True)
    else:
        what = exc_type or meta.get("status") or "error"
        error = EngineError(f"queue worker failed: {what} {exc_message}".strip(), path=display)
    return FileResult(input=display, status=Status.FAILED, error=error)


def _is_connection_error(exc: BaseException) -> bool:
    from kombu.exceptions import OperationalError

    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - celery[redis] installs redis
        return isinstance(exc, (OperationalError, ConnectionError, TimeoutError))
    return isinstance(
        exc,
        (OperationalError, ConnectionError, TimeoutError, RedisConnectionError, RedisTimeoutError),
    )


def submit_many(
    sources: Iterable[Any],
    options: Options,
    *,
    broker: str | None = None,
    include: tuple[str, ...] | list[str] = (),
    exclude: tuple[str, ...] | list[str] = (),
    hidden: bool = False,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    outage_grace: float = 60.0,
    poll_interval: float = 0.1,
    stall_check: float = 30.0,
    heartbeat: float = HEARTBEAT,
) -> BatchReport:
    """Convert files and directory trees on queue workers; report like a local batch.

    Inputs are walked and mirrored under ``options.out_dir`` exactly as by
    :func:`previewer.convert_many`; each file becomes one task. Results arrive in the order
    they finish and are the same :class:`FileResult` objects a local run gives.

    Args:
        sources: Paths of files or directories (on storage the workers share).
        options: The options; ``limits.timeout`` also sets each task's time limits.
        broker: Broker URL (default ``$PREVIEWER_BROKER_URL`` or ``redis://127.0.0.1:6379/0``).
        include: Globs a walked file must match.
        exclude: Globs of walked files to leave out.
        hidden: Also walk hidden files and folders.
        on_result: Called with each :class:`FileResult` as soon as it is known.
        on_progress: Called with ``(done, total)`` before the first and after each input.
        outage_grace: Seconds to keep retrying while the broker is unreachable mid-run.
        stall_check: Seconds without a result after which the submitter checks whether Redis
            was restarted unnoticed. After an outage or such a restart it looks for files the
            broker lost (not queued, not running, no result: a Redis restarted without its
            data) and sends them again; tasks are idempotent.
        poll_interval: Seconds between polls of the result backend.
        heartbeat: Seconds the run's heartbeat key lasts in Redis; it is renewed while the
            submitter waits. Workers discard the files of a run whose heartbeat expired (its
            submitter was killed); an interrupted submitter (Ctrl-C, SIGTERM) cancels its run
            at once (see :func:`cancel_run`).

    Returns:
        The report; its ``exit_code`` is 0, the single input's code, or 10.

    Raises:
        InvalidOptionsError: If an input has no path (bytes or stdin cannot be queued).
        BrokerUnavailableError: If the broker cannot be reached at the start, or stays
            unreachable for ``outage_grace`` seconds during the run.
    """
    from previewer.batch import collect, overwrite_error, skip_if_unsupported

    url = broker_url(broker)
    started = time.monotonic()
    jobs = collect(sources, options.out_dir, include=include, exclude=exclude, hidden=hidden)
    for job in jobs:
        if not isinstance(job.source, str):
            raise InvalidOptionsError(
                f"{job.display}: only files and directories can be sent to queue workers"
            )
    client = configure(Celery("previewer-submit"), broker=url, timeout=options.limits.timeout)
    shown = _redact(url)
    try:
        with client.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.3, timeout=5)
        client.backend.client.ping()
    except Exception as exc:
        if not _is_connection_error(exc):
            raise
        raise BrokerUnavailableError(
            f"cannot reach the queue broker {shown}: {exc}",
            hint="start Redis (redis-server) or pass --broker / PREVIEWER_BROKER_URL",
        ) from exc

    report = BatchReport()
    total = len(jobs)
    if on_progress is not None:
        on_progress(0, total)

    def finish(job: Any, result: FileResult) -> None:
        skip_if_unsupported(job, result)
        report.results.append(result)
        if on_result is not None:
            on_result(result)
        if on_progress is not None:
            on_progress(len(report.results), total)

    soft, hard, _visibility = time_limits(options.limits.timeout)
    pending: dict[str, _Sent] = {}
    claimed: dict[tuple[Path, str], Any] = {}
    # Results are collected by polling (_gather); the pub/sub subscription Celery's Redis
    # backend opens for every sent task (and closes in forget) would only add round trips.
    client.backend.on_task_call = lambda producer, task_id: None

    run = uuid.uuid4().hex

    def send(task: _Sent, producer: Any) -> str:
        async_result = client.send_task(
            TASK_NAME,
            args=task.args,
            task_id=task.task_id,
            argsrepr=repr(task.abs_path),  # what worker logs show, without the options
            kwargsrepr="{}",
            soft_time_limit=soft,
            time_limit=hard,
            producer=producer,
            headers={"previewer_run": run},  # how cancel_run finds the run's queued messages
        )
        return str(async_result.id)

    alive = _Heartbeat(client, run, heartbeat)
    try:
        alive.beat(force=True)
        with client.producer_or_acquire() as producer:
            for job in jobs:
                alive.beat()
                if (error := overwrite_error(job, claimed)) is not None:
                    finish(job, FileResult(input=job.display, status=Status.FAILED, error=error))
                    continue
                abs_path = os.path.abspath(str(job.source))
                opts = replace(
                    options,
                    out_dir=Path(os.path.abspath(job.out_dir)),
                    out_root=Path(os.path.abspath(options.out_dir)),
                )
                args = [abs_path, opts.to_dict(), job.given_name, run]
                task = _Sent(job, abs_path, args)
                task.task_id = str(uuid.uuid4())
                pending[task.task_id] = task  # before sending: an interrupt may come meanwhile
                send(task, producer)
        gather = _Gatherer(client, pending, finish, options, shown, send, alive)
        gather.run(outage_grace, poll_interval, stall_check)
        alive.stop()
    except BaseException as exc:
        if not _is_connection_error(exc):
            # Interrupted (Ctrl-C, SIGTERM) or a bug: nobody will wait for the rest.
            if pending:
                cancel_run(client, run, set(pending))
            raise
        raise BrokerUnavailableError(
            f"lost the queue broker {shown}: {exc}",
            hint="restart Redis and run again (finished previews are kept)",
        ) from exc
    report.elapsed = time.monotonic() - started
    return report


def cancel_run(client: Celery, run: str, task_ids: set[str]) -> None:
    """Make sure the unfinished tasks of an abandoned run convert nothing more.

    Three steps, each best effort and quick (this runs while the submitter is being
    interrupted): the run's cancellation key, which every task checks before it converts
    (it reaches tasks already taken by a worker, and workers that start later); removal of the
    run's messages still in the queue; and a revoke of the rest, whose running tasks get
    :data:`STOP_SIGNAL` and are discarded with their engines stopped and temporary files removed.

    Args:
        client: The submitting app.
        run: The run's id (the tasks' ``run`` argument).
        task_ids: The tasks of the run that have not reported a result.
    """
    purged: set[str] = set()
    try:
        client.backend.client.set(CANCEL_PREFIX + run, "1", ex=CANCEL_TTL)
        client.backend.client.delete(ALIVE_PREFIX + run)
        with client.connection_for_write() as conn:
            redis = conn.default_channel.client
            removed = redis.eval(_PURGE_RUN, 1, client.conf.task_default_queue, run)
            purged = {x.decode() if isinstance(x, bytes) else str(x) for x in removed}
        left = sorted(task_ids - purged)
        if left:
            client.control.revoke(left, terminate=True, signal=STOP_SIGNAL)
            backend = client.backend  # results that came since the last poll: nobody reads them
            backend.client.delete(*(backend.get_key_for_task(t) for t in left))
    except Exception as exc:  # noqa: BLE001 - the cancellation key alone already stops them
        log.warning("could not cancel all queued files of this run: %s", exc)
    log.info("cancelled: %d queued file(s) removed, the others revoked", len(purged))


_PURGE_RUN = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local keep, removed = {}, {}
for _, raw in ipairs(items) do
  local ok, message = pcall(cjson.decode, raw)
  local headers = ok and type(message) == 'table' and message['headers'] or nil
  if type(headers) == 'table' and headers['previewer_run'] == ARGV[1] then
    removed[#removed + 1] = headers['id']
  else
    keep[#keep + 1] = raw
  end
end
if #removed > 0 then
  redis.call('DEL', KEYS[1])
  for i = 1, #keep, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 999, #keep)))
  end
end
return removed
"""
"""Removes a run's messages from the queue (a kombu Redis list) in one pass, atomically (a
worker popping meanwhile waits), and returns their task ids: one LREM per message would cost
the length of the queue each."""


class _Heartbeat:
    """The run's heartbeat key: set at the start, renewed while waiting, removed at the end."""

    def __init__(self, client: Celery, run: str, ttl: float) -> None:
        self.client, self.key, self.ttl = client, ALIVE_PREFIX + run, ttl
        self.last = -float("inf")

    def beat(self, *, force: bool = False) -> None:
        """Renew the key when a tenth of its life has passed (or now, with ``force``)."""
        now = time.monotonic()
        if force or now - self.last >= self.ttl / 10:
            self.client.backend.client.set(self.key, "1", px=max(1, int(self.ttl * 1000)))
            self.last = now

    def stop(self) -> None:
        try:
            self.client.backend.client.delete(self.key)
        except Exception as exc:  # noqa: BLE001 - it expires anyway
            log.debug("cannot delete the heartbeat %s: %s", self.key, exc)


@dataclass
class _Sent:
    """One file sent to the queue: what is needed to report it and to send it again."""

    job: Any
    abs_path: str
    args: list[Any]
    task_id: str | None = None


class _Gatherer:
    """Collects results as they complete, riding out broker outages, resending lost files."""

    def __init__(
        self,
        client: Celery,
        pending: dict[str, _Sent],
        finish: Callable[[Any, FileResult], None],
        options: Options,
        shown: str,
        send: Callable[[_Sent, Any], str],
        alive: _Heartbeat,
    ) -> None:
        self.client, self.pending, self.finish = client, pending, finish
        self.options, self.shown, self.send = options, shown, send
        self.alive = alive

    def run(self, outage_grace: float, poll_interval: float, stall_check: float) -> None:
        backend = self.client.backend
        outage_since: float | None = None
        progress_at = time.monotonic()
        server = _server_id(self.client)
        while self.pending:
            try:
                self.alive.beat()
                if time.monotonic() - progress_at > stall_check:
                    # No result for a while: a Redis restarted between two polls goes unseen
                    # as an outage, but not as a new server.
                    progress_at = time.monotonic()
                    current = _server_id(self.client)
                    if current is not None and current != server:
                        server = current
                        self.resend_lost()
                ready = list(
                    backend.get_many(
                        set(self.pending), interval=poll_interval, max_iterations=1, no_ack=True
                    )
                )
                if outage_since is not None:
                    log.warning("queue broker %s is back", self.shown)
                    self.alive.beat(force=True)
                    long_outage = time.monotonic() - outage_since > self.alive.ttl / 2
                    outage_since = None
                    current = _server_id(self.client)
                    if current is None or current != server or long_outage:
                        # Restarted (or cannot tell), or away so long that the heartbeat may
                        # have expired and workers discarded files: look for lost ones.
                        server = current
                        self.resend_lost()
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                now = time.monotonic()
                if outage_since is None:
                    outage_since = now
                    log.warning("queue broker %s unreachable (%s); retrying", self.shown, exc)
                if now - outage_since > outage_grace:
                    raise BrokerUnavailableError(
                        f"the queue broker {self.shown} has been unreachable for "
                        f"{outage_grace:g} s: {exc}",
                        hint="restart Redis and run again (finished previews are kept)",
                    ) from exc
                time.sleep(min(1.0, max(poll_interval, 0.2)))
                continue
            if ready:
                progress_at = time.monotonic()
                self.collect(ready)

    def collect(self, ready: list[tuple[str, dict[str, Any]]]) -> None:
        backend = self.client.backend
        try:  # one round trip for the whole poll's results
            backend.client.delete(*(backend.get_key_for_task(t) for t, _meta in ready))
        except Exception as exc:  # noqa: BLE001 - cleanup only; results expire anyway
            log.debug("cannot delete %d stored results: %s", len(ready), exc)
        for task_id, meta in ready:
            sent = self.pending.pop(task_id, None)
            if sent is None:
                continue  # a duplicate of a file resent after an outage
            backend._cache.pop(task_id, None)
            job = sent.job
            if meta.get("status") == "SUCCESS" and isinstance(meta.get("result"), dict):
                result = _rebuild_result(meta["result"], job.display, sent.abs_path, job.out_dir)
            else:
                result = _failure_result(meta, job.display, self.options.limits.timeout)
            self.finish(job, result)

    def resend_lost(self) -> None:
        """Send again the pending files the broker no longer knows about."""
        self.alive.beat(force=True)  # first, so that workers do not discard what is resent
        lost = _lost_tasks(self.client, set(self.pending))
        if not lost:
            return
        log.warning(
            "queue broker %s lost %d queued file(s) (restarted without its data?); sending them "
            "again",
            self.shown,
            len(lost),
        )
        with self.client.producer_or_acquire() as producer:
            for task_id in sorted(lost):
                self.send(self.pending[task_id], producer)


def _lost_tasks(client: Celery, task_ids: set[str]) -> set[str]:
    """Return the tasks among ``task_ids`` that are neither queued, nor running, nor done.

    Reads kombu's Redis layout: the queue is a list of messages, messages being processed are
    kept (late acknowledgement) in the ``unacked`` hash, results are ``celery-task-meta-<id>``
    keys. They are read in the order a task moves through them, so a task that moves on while
    they are read is still seen; one caught in between is sent again, which is harmless.
    """
    seen: set[str] = set()
    with client.connection_for_read() as conn:
        channel = conn.default_channel
        redis = channel.client
        queue = client.conf.task_default_queue
        start, chunk = 0, 1000  # a long queue is read a thousand messages at a time
        while batch := redis.lrange(queue, start, start + chunk - 1):
            seen.update(_message_id(raw) for raw in batch)
            start += chunk
        for raw in redis.hvals(channel.unacked_key):
            seen.add(_message_id(raw, unacked=True))
    left = sorted(task_ids - seen)
    if left:
        backend = client.backend
        stored = backend.client.mget([backend.get_key_for_task(t) for t in left])
        seen.update(t for t, value in zip(left, stored, strict=True) if value is not None)
    return task_ids - seen


def _server_id(client: Celery) -> str | None:
    """The Redis server's run id (new at every start), or None when it cannot be read."""
    try:
        return str(client.backend.client.info("server")["run_id"])
    except Exception:  # noqa: BLE001 - INFO may be disabled; the caller then assumes a restart
        return None


def _message_id(raw: bytes | str, *, unacked: bool = False) -> str:
    """The task id of a message as kombu stores it in Redis ('' when it cannot be read)."""
    try:
        data = json.loads(raw)
        payload = data[0] if unacked else data
        return str(payload["headers"]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def _redact(url: str) -> str:
    """Hide a password in a broker URL before it is shown."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user + ':***' if ':' in creds else user}@{host}"
    return url
