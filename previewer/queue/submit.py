"""The submitting side of the queue: an executor of the batch engine that sends files to workers.

:class:`QueueExecutor` runs a batch's jobs on queue workers: one task per file, sent to the
run's queue, at most ``max_in_flight`` at a time when asked; results are collected as they
complete (riding out broker outages, resending files a restarted Redis lost) and go to the
batch's sink like a local run's. An interrupted submitter cancels its run (:func:`cancel_run`);
one killed without cancelling stops renewing its heartbeat, and workers discard its files.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery

from previewer.batch import BatchTask, Job, ReportSink, Stat, Work
from previewer.errors import InvalidOptionsError
from previewer.options import Options
from previewer.queue.broker import _Heartbeat, _lost_tasks, _server_id, cancel_run
from previewer.queue.config import (
    HEARTBEAT,
    TASK_NAME,
    BrokerUnavailableError,
    _is_connection_error,
    broker_url,
    configure,
    time_limits,
)
from previewer.queue.wire import _failure_result, _rebuild_result
from previewer.results import BatchReport, FileResult

if TYPE_CHECKING:
    from previewer.registry import Registry

__all__ = ["QueueExecutor", "cancel_run", "submit_many"]

log = logging.getLogger(__name__)


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
    queue: str | None = None,
    max_in_flight: int | None = None,
    resume: bool = False,
    journal: bool | None = None,
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
        poll_interval: Seconds between polls of the result backend.
        heartbeat: Seconds the run's heartbeat key lasts in Redis; it is renewed while the
            submitter waits. Workers discard the files of a run whose heartbeat expired (its
            submitter was killed); an interrupted submitter (Ctrl-C, SIGTERM) cancels its run
            at once (see :func:`cancel_run`).
        queue: The Celery queue to send the files to (default: ``celery``, which
            ``previewer worker`` consumes unless given ``-Q``).
        max_in_flight: Files queued or running at once (default: all of them at once).
        resume: Skip inputs whose previews are up to date (the journal, as locally).
        journal: Record converted inputs in the journal (default: when ``resume``).
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
        abort=abort,
    )
    jobs = batch.collect(sources, options.out_dir, include=include, exclude=exclude, hidden=hidden)
    return batch.run(
        jobs,
        options,
        Registry(),  # unused here: the workers have theirs
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
        poll_interval: float = 0.1,
        stall_check: float = 30.0,
        heartbeat: float = HEARTBEAT,
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
        self.abort = abort
        self.client: Celery | None = None

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
        """Send each job to the workers and hand the results to ``sink`` as they complete."""
        client = self.client
        assert client is not None, "prepare() first"
        soft, hard, _visibility = time_limits(options.limits.timeout)
        pending: dict[str, _Sent] = {}
        # Results are collected by polling (_Gatherer); the pub/sub subscription Celery's Redis
        # backend opens for every sent task (and closes in forget) would only add round trips.
        client.backend.on_task_call = lambda producer, task_id: None
        run = uuid.uuid4().hex
        queue = client.conf.task_default_queue

        def send(sent: _Sent, producer: Any) -> str:
            async_result = client.send_task(
                TASK_NAME,
                args=sent.args,
                task_id=sent.task_id,
                argsrepr=repr(sent.abs_path),  # what worker logs show, without the options
                kwargsrepr="{}",
                soft_time_limit=soft,
                time_limit=hard,
                producer=producer,
                queue=queue,
                headers={"previewer_run": run},  # how cancel_run finds the run's messages
            )
            return str(async_result.id)

        def finish(sent: _Sent, result: FileResult) -> None:
            sink.add(sent.job, result, sent.stat)

        alive = _Heartbeat(client, run, self.heartbeat)
        gather = _Gatherer(client, pending, finish, options, self.shown, send, alive)
        gather.abort = self.abort
        timing = (self.outage_grace, self.poll_interval, self.stall_check)
        try:
            alive.beat(force=True)
            with client.producer_or_acquire() as producer:
                for job, stat, ready in work:
                    alive.beat()
                    if ready is not None:
                        sink.add(job, ready)
                        continue
                    if self.max_in_flight is not None and len(pending) >= self.max_in_flight:
                        gather.run(*timing, until=self.max_in_flight - 1)
                    abs_path = os.path.abspath(str(job.source))
                    opts = replace(
                        options,
                        out_dir=Path(os.path.abspath(job.out_dir)),
                        out_root=Path(os.path.abspath(options.out_dir)),
                    )
                    args = [abs_path, opts.to_dict(), job.given_name, run]
                    sent = _Sent(job, abs_path, args, stat)
                    sent.task_id = str(uuid.uuid4())
                    pending[sent.task_id] = sent  # before sending: an interrupt may come
                    send(sent, producer)
            gather.run(*timing)
            alive.stop()
        except BaseException as exc:
            if not _is_connection_error(exc):
                # Interrupted (Ctrl-C, SIGTERM) or a bug: nobody will wait for the rest.
                if pending:
                    cancel_run(client, run, set(pending))
                raise
            raise BrokerUnavailableError(
                f"lost the queue broker {self.shown}: {exc}",
                hint="restart Redis and run again (finished previews are kept)",
            ) from exc


def sanitize_url(url: str) -> str:
    """The broker URL as shown in messages: its password masked (kombu's ``sanitize_url``)."""
    from kombu.utils.url import sanitize_url as kombu_sanitize

    return str(kombu_sanitize(url))


@dataclass
class _Sent:
    """One file sent to the queue: what is needed to report it and to send it again."""

    job: Job
    abs_path: str
    args: list[Any]
    stat: Stat = None
    task_id: str | None = None


class _Gatherer:
    """Collects results as they complete, riding out broker outages, resending lost files."""

    def __init__(
        self,
        client: Celery,
        pending: dict[str, _Sent],
        finish: Callable[[_Sent, FileResult], None],
        options: Options,
        shown: str,
        send: Callable[[_Sent, Any], str],
        alive: _Heartbeat,
    ) -> None:
        self.client, self.pending, self.finish = client, pending, finish
        self.options, self.shown, self.send = options, shown, send
        self.alive = alive
        self.abort: Callable[[], BaseException | None] | None = None

    def run(
        self, outage_grace: float, poll_interval: float, stall_check: float, *, until: int = 0
    ) -> None:
        """Collect results until at most ``until`` files are pending (all of them by default)."""
        backend = self.client.backend
        outage_since: float | None = None
        progress_at = time.monotonic()
        server = _server_id(self.client)
        while len(self.pending) > until:
            if self.abort is not None and (stop := self.abort()) is not None:
                raise stop  # the caller cancels the run
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
            self.finish(sent, result)

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
