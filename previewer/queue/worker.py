"""The queue worker's task ``previewer.convert_file``: convert one input, return JSON.

A task checks its run first (cancelled by the submitter, or the submitter's heartbeat gone: it
is discarded), counts its deliveries (a file that keeps crashing its worker fails after
:data:`~previewer.queue.config.MAX_ATTEMPTS`), removes what a killed earlier attempt left, and
turns Celery's stop signal into our timeout error, so a queued file fails as it would locally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from celery import Celery
from celery.signals import task_postrun
from celery.states import READY_STATES

from previewer.errors import (
    EngineError,
    EngineTimeoutError,
    InvalidOptionsError,
    PreviewerError,
)
from previewer.limited import remove_partial
from previewer.options import Options
from previewer.queue.config import (
    ALIVE_PREFIX,
    ATTEMPTS_PREFIX,
    BUNDLE_BUDGET,
    BUNDLE_TASK_NAME,
    CANCEL_PREFIX,
    CANCEL_TTL,
    DONE_PREFIX,
    DONE_TTL,
    MAX_ATTEMPTS,
    STOP_SIGNAL,
    TASK_NAME,
    _timeout_error,
    app,
    time_limits,
)
from previewer.queue.cost import LIGHT
from previewer.queue.routing import record_cost, record_wait
from previewer.results import FileResult, Status

__all__ = ["PRELOAD", "convert_file", "convert_files", "preload"]

log = logging.getLogger(__name__)

PRELOAD = (
    "previewer.pipeline",
    "previewer.rendering",
    "previewer.output",
    "previewer.converters",
    "PIL.Image",
    "PIL.PngImagePlugin",
    "PIL.JpegImagePlugin",
    "pymupdf",
)
"""Modules a worker imports before it forks its processes, so each new one starts warm."""


def preload() -> None:
    """Import :data:`PRELOAD` (what nearly every task needs) in the worker's main process.

    Worker processes are forked from it and replaced every ``max_tasks_per_child`` tasks; with
    these already imported, a replacement converts its first file without a cold start.
    """
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing engine only costs the warm start
            log.debug("cannot preload %s: %s", name, exc)


_registry: Any = None
_AT_PREFIX = ATTEMPTS_PREFIX + "at-"
"""Redis key prefix of a bundle's file in progress (``previewer-attempts-at-<task id>``)."""


class _StoppedError(EngineTimeoutError):
    """The task's process got the stop signal before its soft time limit: it was revoked.

    An :class:`EngineTimeoutError` so that nothing on the way (the fallback converter, the
    pipeline's guards) treats it as a failure about the file.
    """


def _begin(
    celery_app: Celery,
    run: str | None,
    task_id: str | None,
    waited: tuple[str, float] | None,
    position: dict[str, Any] | None = None,
    mark: tuple[str, int] | None = None,
) -> tuple[str, int]:
    """The run's state and this task's delivery count, in one round trip to Redis.

    Args:
        celery_app: The worker's app.
        run: The submitting run's id.
        task_id: This task's id (its delivery counter; None: nothing counted).
        waited: ``(queue, seconds)`` this task (or bundled file) waited, recorded for
            :func:`queue_stats`.
        position: A bundle's, at its start: its file in progress is recorded as the first,
            and the one an earlier delivery had in progress is put under ``"before"`` (None if
            none).
        mark: ``(bundle task id, index)`` of a bundle's next file, recorded as in progress.

    Returns:
        ``("cancelled" | "gone" | "alive", deliveries)``: ``gone`` when the submitter's
        heartbeat has expired; deliveries count this one.
    """
    if not run and not task_id:
        return "alive", 1
    try:
        pipe = celery_app.backend.client.pipeline()
        if waited is not None:
            record_wait(pipe, *waited)
        if mark is not None:
            pipe.set(_AT_PREFIX + mark[0], mark[1], ex=CANCEL_TTL)
        if run:
            pipe.exists(CANCEL_PREFIX + run)
            pipe.exists(ALIVE_PREFIX + run)
        if task_id:
            pipe.incr(ATTEMPTS_PREFIX + task_id)
            pipe.expire(ATTEMPTS_PREFIX + task_id, CANCEL_TTL)
            if position is not None:
                pipe.getset(_AT_PREFIX + task_id, 0)
                pipe.expire(_AT_PREFIX + task_id, CANCEL_TTL)
        replies = pipe.execute()
    except Exception as exc:  # noqa: BLE001 - cannot tell: convert rather than lose the file
        log.warning("cannot read the state of run %s: %s", run, exc)
        return "alive", 1
    if waited is not None:
        replies = replies[2:]  # LPUSH and LTRIM of the wait
    if mark is not None:
        replies = replies[1:]
    state = "alive"
    if run:
        cancelled, alive = replies[:2]
        replies = replies[2:]
        state = "cancelled" if cancelled else "alive" if alive else "gone"
    if position is not None and task_id:
        before = replies[2]
        position["before"] = int(before) if before is not None else None
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
            celery_app.backend.client.delete(ATTEMPTS_PREFIX + task_id, _AT_PREFIX + task_id)
        except Exception as exc:  # noqa: BLE001 - the counter expires anyway
            log.debug("cannot delete the attempt counter of task %s: %s", task_id, exc)


@contextlib.contextmanager
def _stop_on_signal(
    started: float, soft: float | None, timeout: float, path: str, *, alarm: bool = False
) -> Iterator[None]:
    """While converting, turn the stop signal into one of our errors.

    Celery's prefork pool sends :data:`STOP_SIGNAL` at the soft time limit, and a revoke with
    ``terminate`` sends it too; its own handler raises ``SoftTimeLimitExceeded``, which the
    pipeline would report as an unexpected engine failure (exit 7). Raising a PreviewerError
    instead lets it pass the converters' guards unchanged while :func:`previewer.process.run`
    kills the engine's process group on the way out: a timeout is an
    :class:`EngineTimeoutError` (exit 8) as in a local run, and a revoke a
    :class:`_StoppedError` the task discards. With ``alarm``, an alarm signal at ``soft``
    seconds after ``started`` stands for the soft limit (a bundled file's own).
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
    previous_alarm = None
    if alarm and soft is not None:
        previous_alarm = signal.signal(signal.SIGALRM, on_signal)
        signal.setitimer(signal.ITIMER_REAL, max(0.01, soft - (time.monotonic() - started)))
    try:
        yield
    finally:
        active[0] = False
        if previous_alarm is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_alarm)
        signal.signal(signum, previous)


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def convert_file(
    self: Any,
    path: str,
    options_dict: dict[str, Any],
    name: str | None = None,
    run: str | None = None,
    route: dict[str, Any] | None = None,
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
        route: The file's route (:meth:`Route.to_dict`) and ``enqueued`` (epoch seconds):
            the wait until this start is recorded per queue and returned in the result, and a
            light file's cost goes into its converter's history. With ``describe`` (a list of
            metadata keys, possibly empty) the document is also described from the same open
            (:func:`previewer.pipeline.convert_and_describe`) and the result carries that
            description as ``info``; a worker that predates this ignores it (the submitter
            then describes the file itself).

    Returns:
        ``FileResult.to_dict(detail=True)`` (with the error's parts, to rebuild it).

    Raises:
        Ignore: The run was cancelled or its submitter is gone: no conversion, no result.
    """
    from celery.exceptions import Ignore

    _load_registry()
    started = time.monotonic()
    started_at = time.time()
    info = _queue_info(self, route, started_at)
    waited = (str(info["queue"]), float(info["wait"])) if info and "wait" in info else None
    state, attempts = _begin(self.app, run, self.request.id, waited)
    if info is not None:
        info["attempt"] = attempts
    if state != "alive":
        why = "its run was cancelled" if state == "cancelled" else "its submitter is gone"
        log.info("discarding %s: %s", path, why)
        _forget_attempts(self.app, self.request.id)
        raise Ignore()
    try:
        result = _convert_item(
            self, path, options_dict, name, run, started, attempts, _describe_keys(route)
        )
    finally:
        _forget_attempts(self.app, self.request.id)
    result.duration = time.monotonic() - started
    if info is not None:
        result.queue = info
        _record_costs(self.app, [result])
    return result.to_dict(detail=True)


@app.task(name=BUNDLE_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def convert_files(self: Any, items: list[list[Any]], run: str | None = None) -> dict[str, Any]:
    """Convert a few light files of one run in turn; return their results and the files left.

    The submitter bundles light files in a burst so that the queue's fixed cost (sending,
    delivering, storing and collecting a task) is paid once for several of them. Each file
    keeps its own limits: its soft time limit is timed from its own start (an alarm), and the
    bundle's hard limit is a single file's plus :data:`~previewer.queue.config.BUNDLE_BUDGET`,
    within which the bundle starts its files. Files not started within the budget are
    returned as ``deferred`` and sent again by the submitter. A redelivered bundle (its process
    died mid-way) converts nothing and defers every file: each is then sent alone, with its own
    count of deliveries, so that one poison file fails alone.

    Args:
        self: The task (Celery's bound-task argument).
        items: ``[path, options_dict, name, route]`` per file, as :func:`convert_file` takes
            them.
        run: The submitting run's id.

    Returns:
        ``{"results": [...], "deferred": [...]}``: the results of the first files (as
        :func:`convert_file` returns them), and the indexes of the files not converted.

    Raises:
        Ignore: The run was cancelled or its submitter is gone.
    """
    from celery.exceptions import Ignore

    _load_registry()
    began = time.monotonic()
    results: list[FileResult] = []
    deferred: list[int] = []
    state, deliveries = "alive", 1
    try:
        for index, (path, options_dict, name, route) in enumerate(items):
            if results and time.monotonic() - began >= BUNDLE_BUDGET:
                deferred = list(range(index, len(items)))
                break
            started = time.monotonic()
            info = _queue_info(self, route, time.time())
            waited = (str(info["queue"]), float(info["wait"])) if info and "wait" in info else None
            if index == 0:
                position: dict[str, Any] = {}
                state, deliveries = _begin(self.app, run, self.request.id, waited, position)
                if state == "alive" and deliveries > 1:
                    _blame(self.app, items, position.get("before"))
                    return {"results": [], "deferred": list(range(len(items)))}
            else:
                state, _one = _begin(self.app, run, None, waited, mark=(self.request.id, index))
            if state != "alive":
                why = "its run was cancelled" if state == "cancelled" else "its submitter is gone"
                log.info("discarding %s and the rest of its bundle: %s", path, why)
                raise Ignore()
            result = _convert_item(
                self,
                path,
                options_dict,
                name,
                run,
                started,
                1,
                _describe_keys(route),
                alarm=True,
            )
            result.duration = time.monotonic() - started
            if info is not None:
                info["attempt"] = 1
                info["bundle"] = len(items)
                result.queue = info
            results.append(result)
    finally:
        _forget_attempts(self.app, self.request.id)
    _record_costs(self.app, results)
    return {"results": [r.to_dict(detail=True) for r in results], "deferred": deferred}


def _load_registry() -> None:
    """Load the converters' registry once per worker process."""
    global _registry
    if _registry is None:
        from previewer.registry import Registry

        _registry = Registry()


def _convert_item(
    task: Any,
    path: str,
    options_dict: dict[str, Any],
    name: str | None,
    run: str | None,
    started: float,
    attempts: int,
    describe: tuple[str, ...] | None,
    *,
    alarm: bool = False,
) -> FileResult:
    """Convert one queued file (its options rebuilt, an earlier attempt's leftovers removed).

    Args:
        task: The running task.
        path: The input.
        options_dict: Its options, from :meth:`Options.to_dict`.
        name: File name for the outputs.
        run: The submitting run's id.
        started: When the file's conversion began (monotonic seconds).
        attempts: This file's deliveries, this one included: past
            :data:`~previewer.queue.config.MAX_ATTEMPTS` it fails without converting.
        describe: Also describe the document, extracting these metadata keys.
        alarm: Time the file's soft limit from ``started`` with an alarm (in a bundle, where
            Celery's soft limit is the bundle's).

    Raises:
        Ignore: The conversion was stopped because its run was cancelled.
    """
    try:
        options = _options_from_dict(options_dict)
    except InvalidOptionsError as exc:
        return FileResult(input=path, status=Status.FAILED, error=exc)
    out_name = name or os.path.basename(path)
    if attempts > 1 or (task.request.delivery_info or {}).get("redelivered"):
        # An earlier attempt died mid-write: remove its temporary files.
        remove_partial(options.out_dir, out_name)
    if attempts > MAX_ATTEMPTS:
        return FileResult(input=path, status=Status.FAILED, error=_poison_error(path, attempts))
    soft = time_limits(options.limits.timeout)[0] if alarm else None
    return _convert_stoppable(task, path, options, name, run, started, describe=describe, soft=soft)


def _blame(celery_app: Celery, items: list[list[Any]], at: int | None) -> None:
    """A bundle delivered again: count the delivery against the file its process died on.

    That file is sent again alone under its own task id (``route["task"]``), whose delivery
    count then starts at one crash: a file that kills its worker fails after two crashes,
    bundled or not.
    """
    log.warning(
        "a bundle of %d files was delivered again (its process died): sending them back to "
        "be converted one by one",
        len(items),
    )
    if at is None or not 0 <= at < len(items):
        return
    route = items[at][3] if len(items[at]) > 3 else None
    task = route.get("task") if isinstance(route, dict) else None
    if not isinstance(task, str) or not task:
        return
    try:
        pipe = celery_app.backend.client.pipeline(transaction=False)
        pipe.incr(ATTEMPTS_PREFIX + task)
        pipe.expire(ATTEMPTS_PREFIX + task, CANCEL_TTL)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - it then gets one more try
        log.warning("cannot count the crash of %s: %s", items[at][0], exc)


@task_postrun.connect  # type: ignore[untyped-decorator]
def _announce_done(
    sender: Any = None,
    task_id: str | None = None,
    args: Any = None,
    kwargs: Any = None,
    state: str | None = None,
    **_more: Any,
) -> None:
    """Push a finished task's id onto its run's completion list (after its result is stored).

    Celery sends ``task_postrun`` once the result is in the backend, so the submitter, which
    blocks on that list (:data:`~previewer.queue.config.DONE_PREFIX`), finds the result when it
    wakes. A discarded task (``IGNORED``: its run was cancelled) stores no result and is not
    announced; neither is a task whose process died (its redelivery will be).
    """
    name = getattr(sender, "name", None)
    if name not in (TASK_NAME, BUNDLE_TASK_NAME) or not task_id or state not in READY_STATES:
        return
    at = 3 if name == TASK_NAME else 1
    run = args[at] if isinstance(args, (list, tuple)) and len(args) > at else None
    if run is None and isinstance(kwargs, dict):
        run = kwargs.get("run")
    if not isinstance(run, str) or not run:
        return
    try:
        pipe = sender.app.backend.client.pipeline(transaction=False)
        pipe.rpush(DONE_PREFIX + run, task_id)
        pipe.expire(DONE_PREFIX + run, DONE_TTL)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the submitter's poll finds the result anyway
        log.debug("cannot announce task %s: %s", task_id, exc)


def _poison_error(path: str, attempts: int) -> EngineError:
    """The error of a file whose every delivery ended with its worker process dying."""
    killed = attempts - 1
    times = "twice" if killed == 2 else "once" if killed == 1 else f"{killed} times"
    return EngineError(
        f"killed its worker {times}: the worker process converting it exited unexpectedly "
        f"(crashed or was killed) on each of {killed} deliveries; not tried again",
        path=path,
        hint="convert it alone with a higher --max-memory / --timeout to see why",
    )


def _queue_info(
    task: Any, route: dict[str, Any] | None, started_at: float
) -> dict[str, Any] | None:
    """The route a result reports: its class and queue, the wait, the start time, the worker."""
    if not isinstance(route, dict):
        return None
    info: dict[str, Any] = {
        k: route[k] for k in ("queue", "class", "tenant", "estimate") if k in route
    }
    info.setdefault("queue", (task.request.delivery_info or {}).get("routing_key") or "")
    info["started"] = round(started_at, 4)
    enqueued = route.get("enqueued")
    if isinstance(enqueued, (int, float)):
        info["wait"] = round(max(0.0, started_at - float(enqueued)), 4)
    info["worker"] = str(task.request.hostname or "")
    return info


def _record_costs(celery_app: Celery, results: list[FileResult]) -> None:
    """Add converted light files' seconds and pages to their converters' history."""
    light = [
        r
        for r in results
        if r.queue is not None
        and r.queue.get("class") == LIGHT
        and r.status == Status.CONVERTED
        and r.converter
    ]
    if not light:
        return
    try:
        pipe = celery_app.backend.client.pipeline(transaction=False)
        for result in light:
            pages = len({p.page for p in result.outputs}) or 1
            record_cost(pipe, str(result.converter), result.duration, pages)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001 - statistics only
        log.debug("cannot record the cost of %s: %s", light[0].input, exc)


def _describe_keys(route: dict[str, Any] | None) -> tuple[str, ...] | None:
    """The metadata keys of a task asked to describe its file, None when it was not asked.

    Keys this worker does not know leave the description to the submitter (it then
    describes the file itself, as with a worker that ignores ``describe``).
    """
    from previewer import extraction

    wanted = route.get("describe") if isinstance(route, dict) else None
    if not isinstance(wanted, list) or not all(isinstance(k, str) for k in wanted):
        return None
    if not wanted:
        return ()
    try:
        return tuple(extraction.parse_keys(wanted))
    except InvalidOptionsError as exc:
        log.debug("not describing: %s", exc)
        return None


def _convert_described(
    path: str, options: Options, name: str | None, keys: tuple[str, ...]
) -> FileResult:
    """Convert and describe one input in this process; its outcome as a result (never raises).

    Like :func:`previewer.pipeline.convert_one`, with ``info`` the document's description.
    """
    from previewer.pipeline import convert_and_describe
    from previewer.placement import display_name

    display = display_name(path, name)
    started = time.monotonic()
    try:
        previews, facts = convert_and_describe(
            path, options, _registry, name=name, keys=keys, isolate=False
        )
    except PreviewerError as exc:
        return FileResult(display, Status.FAILED, error=exc, duration=time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - a converter's bug fails only this file
        error = EngineError(
            f"the conversion failed unexpectedly: {type(exc).__name__}: {exc}", path=display
        )
        return FileResult(display, Status.FAILED, error=error)
    result = FileResult(
        display,
        Status.CONVERTED if previews else Status.SKIPPED,
        mime=facts.mime,
        converter=previews[0].converter if previews else facts.converter,
        outputs=previews,
        duration=time.monotonic() - started,
        info=facts,
    )
    if not previews:
        result.reason = f"no page selected by pages={options.pages}"
    return result


def _convert_stoppable(
    task: Any,
    path: str,
    options: Options,
    name: str | None,
    run: str | None,
    started: float,
    *,
    describe: tuple[str, ...] | None = None,
    soft: float | None = None,
) -> FileResult:
    """Convert under the stop signal's translation (see :func:`_stop_on_signal`).

    Args:
        task: The running task.
        path: The input.
        options: Its options.
        name: File name for the outputs.
        run: The submitting run's id.
        started: When the task started (monotonic seconds).
        describe: Also describe the document, extracting these metadata keys.
        soft: The file's own soft time limit, timed by an alarm from ``started`` (a bundled
            file); None: the task's, from Celery.

    Raises:
        Ignore: The conversion was stopped because its run was cancelled.
    """
    from celery.exceptions import Ignore, SoftTimeLimitExceeded

    from previewer.pipeline import convert_one

    out_name = name or os.path.basename(path)
    timeout = options.limits.timeout
    alarm = soft is not None
    if soft is None:
        soft = (task.request.timelimit or (None, None))[1] or task.app.conf.task_soft_time_limit
    try:
        for attempt in range(2):
            with _stop_on_signal(started, soft, timeout, path, alarm=alarm):
                if describe is None:
                    result = convert_one(path, options, _registry, name=name)
                else:
                    result = _convert_described(path, options, name, describe)
            if type(result.error) is not _StoppedError:
                return result
            remove_partial(options.out_dir, out_name)
            if _cancelled(task.app, run):
                log.info("stopped %s: its run was cancelled", path)
                raise Ignore()
            if attempt:
                break
            # A stray signal (a revoke meant for the task this process ran before).
            log.warning("%s was stopped by a stray signal; converting it again", path)
    except SoftTimeLimitExceeded:
        # Arrived outside the conversion, where Celery's own handler is in place.
        remove_partial(options.out_dir, out_name)
        if _cancelled(task.app, run):
            raise Ignore() from None
    return FileResult(input=path, status=Status.FAILED, error=_timeout_error(timeout, path))


def _options_from_dict(data: dict[str, Any]) -> Options:
    """Rebuild a queued task's options (see :meth:`Options.from_dict`).

    Raises:
        InvalidOptionsError: If a value is invalid (the message says it came from a task).
    """
    try:
        return Options.from_dict(data)
    except InvalidOptionsError as exc:
        raise InvalidOptionsError(f"invalid options in a queued task: {exc.message}") from exc
