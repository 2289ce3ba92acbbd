"""The submitting side of the queue: an executor of the batch engine that sends files to workers.

:class:`QueueExecutor` runs a batch's jobs on queue workers: one task per file, each classed
first and sent to its class's queue (:mod:`previewer.queue.routing`), at most a window of files
per class sent and unfinished (and ``max_in_flight`` in all when asked), so that the run's burst
waits here rather than in front of other submitters' files. Results are collected as they
complete (riding out broker outages, resending files a restarted Redis lost) and go to the
batch's sink like a local run's. An interrupted submitter cancels its run (:func:`cancel_run`);
one killed without cancelling stops renewing its heartbeat, and workers discard its files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery

from previewer.batch import BatchTask, Job, ReportSink, Stat, Work
from previewer.errors import InvalidOptionsError
from previewer.options import Options
from previewer.queue.broker import _Heartbeat, cancel_run
from previewer.queue.config import (
    BUNDLE_BUDGET,
    BUNDLE_TASK_NAME,
    HEARTBEAT,
    TASK_NAME,
    BrokerUnavailableError,
    _is_connection_error,
    broker_url,
    configure,
    time_limits,
)
from previewer.queue.cost import CLASSES, LIGHT, ConverterCost, Place
from previewer.queue.gather import _Gatherer, _Sent, outage_step
from previewer.queue.routing import (
    ENQUEUED_HEADER,
    WINDOWS,
    choose_route,
    queue_name,
    read_history,
)
from previewer.results import BatchReport, FileResult

if TYPE_CHECKING:
    from previewer.registry import Registry

__all__ = ["QueueExecutor", "cancel_run", "default_tenant", "submit_many"]

log = logging.getLogger(__name__)

LOOKAHEAD = 64
"""Files classed ahead of sending (each probe costs about a millisecond)."""
BUNDLE = 8
"""Light files of a burst sent in one task (see :func:`previewer.queue.worker.convert_files`)."""


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
    poll_interval: float = 0.25,
    stall_check: float = 30.0,
    heartbeat: float = HEARTBEAT,
    queue: str | None = None,
    max_in_flight: int | None = None,
    resume: bool = False,
    journal: bool | None = None,
    tenant: str | None = None,
    windows: Mapping[str, int] | None = None,
    abort: Callable[[], BaseException | None] | None = None,
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
        poll_interval: Seconds a wait for results lasts before the submitter looks again
            without being woken: workers announce each finished file (the submitter wakes
            at once), so this paces only the heartbeat, the ``abort`` check and results from
            workers that do not announce.
        heartbeat: Seconds the run's heartbeat key lasts in Redis; it is renewed while the
            submitter waits. Workers discard the files of a run whose heartbeat expired (its
            submitter was killed); an interrupted submitter (Ctrl-C, SIGTERM) cancels its run
            at once (see :func:`cancel_run`).
        queue: Send every file to this Celery queue whatever its class (default: each class
            to its queue, ``previewer.light``, ``previewer.heavy``, ``previewer.office``,
            which ``previewer worker`` consumes unless given ``-Q``).
        max_in_flight: Files queued or running at once, all classes together (default: the
            sum of the class windows).
        resume: Skip inputs whose previews are up to date (the journal, as locally).
        journal: Record converted inputs in the journal (default: when ``resume``).
        tenant: Who submits (reported with each file and in the workers' statistics; default:
            the user name).
        windows: Files of each class kept sent and unfinished at once (default:
            :data:`~previewer.queue.routing.WINDOWS`).
        abort: Called while waiting for results; when it returns an exception, the run is
            cancelled (as on an interrupt) and that exception raised.

    Returns:
        The report; its ``exit_code`` is 0, the single input's code, or 10.

    Raises:
        InvalidOptionsError: If an input has no path (bytes or stdin cannot be queued).
        BrokerUnavailableError: If the broker cannot be reached at the start, or stays
            unreachable for ``outage_grace`` seconds during the run.
    """
    from previewer import batch
    from previewer.registry import Registry

    executor = QueueExecutor(
        broker,
        queue=queue,
        max_in_flight=max_in_flight,
        outage_grace=outage_grace,
        poll_interval=poll_interval,
        stall_check=stall_check,
        heartbeat=heartbeat,
        tenant=tenant,
        windows=windows,
        abort=abort,
    )
    jobs = batch.collect(sources, options.out_dir, include=include, exclude=exclude, hidden=hidden)
    return batch.run(
        jobs,
        options,
        Registry(),  # to class the files as the workers' registry will convert them
        executor=executor,
        resume=resume,
        journal=journal,
        on_result=on_result,
        on_progress=on_progress,
    )


class QueueExecutor:
    """Runs a batch's jobs on queue workers (see :func:`submit_many` for the arguments)."""

    def __init__(
        self,
        broker: str | None = None,
        *,
        queue: str | None = None,
        max_in_flight: int | None = None,
        outage_grace: float = 60.0,
        poll_interval: float = 0.25,
        stall_check: float = 30.0,
        heartbeat: float = HEARTBEAT,
        tenant: str | None = None,
        windows: Mapping[str, int] | None = None,
        abort: Callable[[], BaseException | None] | None = None,
    ) -> None:
        if max_in_flight is not None and (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise InvalidOptionsError(
                f"max_in_flight must be a positive integer, not {max_in_flight!r}"
            )
        self.url = broker_url(broker)
        self.shown = sanitize_url(self.url)
        self.queue = queue or None
        self.max_in_flight = max_in_flight
        self.outage_grace, self.poll_interval = outage_grace, poll_interval
        self.stall_check, self.heartbeat = stall_check, heartbeat
        self.tenant = tenant or default_tenant()
        self.windows = {cls: max(1, int((windows or WINDOWS).get(cls, 1))) for cls in CLASSES}
        self.abort = abort
        self.client: Celery | None = None
        self.describe: tuple[str, ...] | None = None
        """Metadata keys: ask the workers to describe each file too (see ``FileResult.info``)."""
        self.probe_place: Place | None = None
        """Where a file's probe parses it (see :data:`~previewer.queue.cost.Place`)."""
        self.bundle = BUNDLE
        """Light files of a burst sent together in one task (1: each file alone)."""
        self.history_ttl = 0.0
        """Seconds a read of the converters' cost history serves later runs of this executor."""
        self._history: tuple[float, dict[str, ConverterCost]] | None = None
        self._server: str | None = None  # the broker's run id, as the latest run saw it

    def prepare(self, jobs: Sequence[Job], options: Options, task: BatchTask) -> None:
        """Refuse inputs without a path and tasks workers cannot run; reach the broker.

        Raises:
            InvalidOptionsError: If an input has no path, or the task is not the convert task.
            BrokerUnavailableError: If the broker cannot be reached.
        """
        if not task.queueable:
            raise InvalidOptionsError(f"{type(task).__name__} cannot be sent to queue workers")
        for job in jobs:
            if not isinstance(job.source, str):
                raise InvalidOptionsError(
                    f"{job.display}: only files and directories can be sent to queue workers"
                )
        client = configure(
            Celery("previewer-submit"),
            broker=self.url,
            timeout=options.limits.timeout,
            queue=self.queue,
        )
        try:
            with client.connection_for_write() as conn:
                conn.ensure_connection(
                    max_retries=2, interval_start=0.2, interval_step=0.3, timeout=5
                )
            client.backend.client.ping()
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            raise BrokerUnavailableError(
                f"cannot reach the queue broker {self.shown}: {exc}",
                hint="start Redis (redis-server) or pass --broker / PREVIEWER_BROKER_URL",
            ) from exc
        self.client = client

    def run(
        self,
        work: Sequence[Work],
        options: Options,
        registry: Registry,
        task: BatchTask,
        sink: ReportSink,
    ) -> None:
        """Send each job to the workers and hand the results to ``sink`` as they complete.

        Without a ``probe_place`` of the caller's, the run's cost-class probes parse documents
        in a :class:`~previewer.queue.probing.ProbeWorker` (limited children, then one warm
        limited worker), stopped when the run ends.
        """
        if self.probe_place is not None:
            self._run(work, options, registry, task, sink)
            return
        from previewer.queue.probing import ProbeWorker

        probes = ProbeWorker()
        self.probe_place = probes
        try:
            self._run(work, options, registry, task, sink)
        finally:
            self.probe_place = None
            probes.close()

    def _run(
        self,
        work: Sequence[Work],
        options: Options,
        registry: Registry,
        task: BatchTask,
        sink: ReportSink,
    ) -> None:
        client = self.client
        assert client is not None, "prepare() first"
        soft, hard, _visibility = time_limits(options.limits.timeout)
        pending: dict[str, list[_Sent]] = {}  # task id: its file, or a bundle's files
        # Results are collected by polling (_Gatherer); the pub/sub subscription Celery's Redis
        # backend opens for every sent task (and closes in forget) would only add round trips.
        client.backend.on_task_call = lambda producer, task_id: None
        run = uuid.uuid4().hex
        history = self._cost_history(client)
        waiting: dict[str, deque[_Sent]] = {cls: deque() for cls in CLASSES}
        sent_of: dict[str, int] = dict.fromkeys(CLASSES, 0)
        limit = self.max_in_flight

        def headers(sent: _Sent) -> tuple[dict[str, Any], dict[str, Any]]:
            route = sent.route.to_dict()
            route["enqueued"] = time.time()
            if self.describe is not None:
                route["describe"] = list(self.describe)
            # how cancel_run finds the run's messages, and queue_stats a message's age
            return route, {"previewer_run": run, ENQUEUED_HEADER: route["enqueued"]}

        def send(task_id: str, files: list[_Sent], producer: Any) -> str:
            first = files[0]
            if len(files) == 1:
                route, head = headers(first)
                name, args, kwargs = TASK_NAME, first.args, {"route": route}
                shown = repr(first.abs_path)  # what worker logs show, without the options
                limits = (soft, hard)
            else:
                items = []
                for sent in files:
                    route, head = headers(sent)
                    route["task"] = sent.task_id  # its id if it must go again alone
                    items.append([*sent.args[:3], route])
                name, args, kwargs = BUNDLE_TASK_NAME, [items, run], {}
                shown = f"{len(files)} files from {first.abs_path!r}"
                limits = (soft + BUNDLE_BUDGET, hard + BUNDLE_BUDGET)
            async_result = client.send_task(
                name,
                args=args,
                kwargs=kwargs,
                task_id=task_id,
                argsrepr=shown,
                kwargsrepr=f"{{class: {first.route.cls}, tenant: {first.route.tenant}}}",
                soft_time_limit=limits[0],
                time_limit=limits[1],
                producer=producer,
                queue=first.route.queue,
                headers=head,
            )
            return str(async_result.id)

        def finish(sent: _Sent, result: FileResult) -> None:
            sent_of[sent.route.cls] -= 1
            if result.queue is None:  # failed on the worker without a result of its own
                result.queue = sent.route.to_dict()
            sink.add(sent.job, result, sent.stat)

        def send_again(files: list[_Sent]) -> None:
            # A bundle's files it did not convert: each goes again, alone, ahead of the rest.
            for sent in reversed(files):
                sent_of[sent.route.cls] -= 1
                sent.alone = True
                waiting[sent.route.cls].appendleft(sent)

        def room(cls: str) -> int:
            return self.windows[cls] - sent_of[cls]

        alive = _Heartbeat(client, run, self.heartbeat)
        queues = sorted({q for q in (self.queue, *self.class_queues()) if q})
        gather = _Gatherer(client, pending, finish, options, self.shown, send, alive, queues, run)
        gather.abort = self.abort
        gather.send_again = send_again
        gather.server = self._server  # a later run of a reused executor: no INFO per run
        timing = (self.outage_grace, self.poll_interval, self.stall_check)
        todo = iter(work)
        exhausted = False
        try:
            alive.beat(force=True)
            while True:
                # Class files ahead while some class has room its waiting files cannot fill
                # (a heavy file deep in a light burst still starts early), within LOOKAHEAD.
                while not exhausted and sum(map(len, waiting.values())) < LOOKAHEAD:
                    if not any(room(c) > len(waiting[c]) for c in CLASSES):
                        break
                    item = next(todo, None)
                    if item is None:
                        exhausted = True
                        break
                    job, stat, ready = item
                    with contextlib.suppress(Exception):  # an outage: the gatherer handles it
                        alive.beat()
                    if ready is not None:
                        sink.add(job, ready)
                        continue
                    sent = self._prepare_job(job, stat, options, registry, run, history)
                    waiting[sent.route.cls].append(sent)
                batch: list[tuple[str, list[_Sent]]] = []
                for cls in CLASSES:
                    while waiting[cls] and room(cls) > 0:
                        in_flight = sum(sent_of.values())
                        if limit is not None and in_flight >= limit:
                            break
                        take = self._bundle_size(cls, waiting[cls], room(cls), exhausted)
                        if limit is not None:
                            take = min(take, limit - in_flight)
                        files = [waiting[cls].popleft() for _ in range(take)]
                        sent_of[cls] += len(files)
                        task_id = files[0].task_id if len(files) == 1 else str(uuid.uuid4())
                        pending[task_id] = files  # first: an interrupt may come
                        batch.append((task_id, files))
                if self._send_all(client, batch, send):
                    gather.after_outage()
                if pending:
                    gather.run(*timing, until=len(pending) - 1)
                elif exhausted and not any(waiting.values()):
                    break
            alive.stop()
            self._server = gather.server
        except BaseException as exc:
            if not _is_connection_error(exc):
                # Interrupted (Ctrl-C, SIGTERM) or a bug: nobody will wait for the rest.
                if pending:
                    cancel_run(client, run, set(pending), queues)
                raise
            raise BrokerUnavailableError(
                f"lost the queue broker {self.shown}: {exc}",
                hint="restart Redis and run again (finished previews are kept)",
            ) from exc

    def _bundle_size(self, cls: str, waiting: deque[_Sent], room: int, exhausted: bool) -> int:
        """How many of a class's waiting files go in the next task (1: a task of its own).

        Light files of a burst travel in bundles of up to :attr:`bundle` (the queue's fixed
        cost per task, some milliseconds, is then shared); near the end of the run, what is
        left is split so that several workers share it. A file sent back by a bundle goes
        alone.
        """
        if cls != LIGHT or self.bundle < 2 or self.queue:
            return 1
        take = 0
        limit = min(self.bundle, room, len(waiting))
        if exhausted:
            limit = min(limit, max(1, (len(waiting) + 1) // 2))
        for sent in waiting:
            if take >= limit or sent.alone:
                break
            take += 1
        return max(1, take)

    def _send_all(
        self,
        client: Celery,
        batch: list[tuple[str, list[_Sent]]],
        send: Callable[[str, list[_Sent], Any], str],
    ) -> bool:
        """Send ``batch``, riding out a broker outage of up to ``outage_grace`` seconds.

        A file whose send failed is sent again once the broker is back (a duplicate is
        harmless: tasks are idempotent and the gatherer takes the first result).

        Returns:
            Whether the broker was away meanwhile (files sent before may have been lost).

        Raises:
            BrokerUnavailableError: If the broker stays unreachable for ``outage_grace``.
        """
        outage_since: float | None = None
        while batch:
            try:
                with client.producer_or_acquire() as producer:
                    while batch:
                        send(*batch[0], producer)
                        batch.pop(0)
                if outage_since is not None:
                    log.warning("queue broker %s is back", self.shown)
                    return True
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                outage_since = outage_step(
                    exc, outage_since, self.shown, self.outage_grace, self.poll_interval
                )
        return outage_since is not None

    def _cost_history(self, client: Celery) -> dict[str, ConverterCost]:
        """The converters' cost history: read from Redis, or kept from ``history_ttl`` ago."""
        now = time.monotonic()
        if self._history is not None and now - self._history[0] < self.history_ttl:
            return self._history[1]
        history = _history(client)
        self._history = (now, history)
        return history

    def class_queues(self) -> list[str]:
        """The queues this executor may send to."""
        if self.queue:
            return [self.queue]
        return [queue_name(cls) for cls in CLASSES]

    def _prepare_job(
        self,
        job: Job,
        stat: Stat,
        options: Options,
        registry: Registry,
        run: str,
        history: Mapping[str, ConverterCost],
    ) -> _Sent:
        """A job as a task: its arguments, and its route (probed and classed here)."""
        abs_path = os.path.abspath(str(job.source))
        opts = replace(
            options,
            out_dir=Path(os.path.abspath(job.out_dir)),
            out_root=Path(os.path.abspath(options.out_dir)),
        )
        route = choose_route(
            abs_path,
            options,
            self.tenant,
            registry=registry,
            history=history,
            queue=self.queue,
            place=self.probe_place,
        )
        args = [abs_path, opts.to_dict(), job.given_name, run]
        return _Sent(job, abs_path, args, stat, str(uuid.uuid4()), route)


def default_tenant() -> str:
    """The tenant of a submitter that names none: the user name, else ``default``."""
    import getpass

    try:
        return getpass.getuser() or "default"
    except Exception:  # noqa: BLE001 - no user name in this environment
        return "default"


def _history(client: Celery) -> dict[str, ConverterCost]:
    """The converters' cost history kept by the workers (empty when it cannot be read)."""
    try:
        return read_history(client.backend.client)
    except Exception as exc:  # noqa: BLE001 - the estimate then uses its defaults
        log.debug("cannot read the converters' cost history: %s", exc)
        return {}


def sanitize_url(url: str) -> str:
    """The broker URL as shown in messages: its password masked (kombu's ``sanitize_url``)."""
    from kombu.utils.url import sanitize_url as kombu_sanitize

    return str(kombu_sanitize(url))
