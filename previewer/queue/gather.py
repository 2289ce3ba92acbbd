"""Collecting a submitted run's results: waiting, riding out broker outages, resending.

:class:`_Gatherer` waits for the files a :class:`~previewer.queue.submit.QueueExecutor` sent
(:class:`_Sent`, alone or in bundles), woken by the workers' announcements on the run's
completion list and reading finished results in one round trip; it rebuilds each result as a
local run gives it, sends back a bundle's unconverted files, keeps the run's heartbeat alive,
waits through a broker outage of up to ``outage_grace`` seconds, and sends again the files a
restarted Redis lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery, states

from previewer.batch import Job, Stat
from previewer.options import Options
from previewer.queue.broker import _Heartbeat, _lost_tasks, _server_id
from previewer.queue.config import DONE_PREFIX, BrokerUnavailableError, _is_connection_error
from previewer.queue.routing import Route
from previewer.queue.wire import _failure_result, _rebuild_result
from previewer.results import FileResult

log = logging.getLogger(__name__)


@dataclass
class _Sent:
    """One file sent to the queue: what is needed to report it and to send it again."""

    job: Job
    abs_path: str
    args: list[Any]
    stat: Stat
    task_id: str
    route: Route
    alone: bool = False
    """Sent back by a bundle: goes in a task of its own."""


def outage_step(
    exc: Exception, since: float | None, shown: str, grace: float, poll_interval: float
) -> float:
    """Ride out one failed broker call: note when the outage began, give up after ``grace``.

    Args:
        exc: The connection error.
        since: When the outage began (None: it begins now, and is logged).
        shown: The broker's URL without its password.
        grace: Seconds of outage tolerated.
        poll_interval: The caller's polling interval (the pause before trying again).

    Returns:
        When the outage began.

    Raises:
        BrokerUnavailableError: The broker has been away for more than ``grace`` seconds.
    """
    now = time.monotonic()
    if since is None:
        since = now
        log.warning("queue broker %s unreachable (%s); retrying", shown, exc)
    if now - since > grace:
        raise BrokerUnavailableError(
            f"the queue broker {shown} has been unreachable for {grace:g} s: {exc}",
            hint="restart Redis and run again (finished previews are kept)",
        ) from exc
    time.sleep(min(1.0, max(poll_interval, 0.2)))
    return since


class _Gatherer:
    """Collects results as they complete, riding out broker outages, resending lost files."""

    def __init__(
        self,
        client: Celery,
        pending: dict[str, list[_Sent]],
        finish: Callable[[_Sent, FileResult], None],
        options: Options,
        shown: str,
        send: Callable[[str, list[_Sent], Any], str],
        alive: _Heartbeat,
        queues: list[str],
        run: str,
    ) -> None:
        self.client, self.pending, self.finish = client, pending, finish
        self.done_key = DONE_PREFIX + run
        self.getdel = True
        """Whether the server has ``GETDEL`` (Redis 6.2 and later), until it says otherwise."""
        self.options, self.shown, self.send = options, shown, send
        self.alive, self.queues = alive, queues
        self.server: str | None = None
        self.progress_at = time.monotonic()
        self.abort: Callable[[], BaseException | None] | None = None
        """Called while waiting; an exception it returns cancels the run and is raised."""
        self.send_again: Callable[[list[_Sent]], None] | None = None
        """Takes back a bundle's files it did not convert (each is then sent alone)."""

    def run(
        self, outage_grace: float, poll_interval: float, stall_check: float, *, until: int = 0
    ) -> None:
        """Collect results until at most ``until`` files are pending (all of them by default)."""
        outage_since: float | None = None
        backend = self.client.backend
        # The run calls this between sends: the server's id and the time of the last result
        # are the run's, not this call's, so a restart between two calls is still noticed.
        if self.server is None:
            self.server = _server_id(self.client)
        while len(self.pending) > until:
            if self.abort is not None and (stop := self.abort()) is not None:
                raise stop  # the caller cancels the run
            try:
                self.alive.beat()
                if time.monotonic() - self.progress_at > stall_check:
                    # No result for a while: a Redis restarted between two polls goes unseen
                    # as an outage, and a worker that does not know bundles discards them:
                    # look for files nobody holds, and send them again.
                    self.progress_at = time.monotonic()
                    current = _server_id(self.client)
                    if current is not None and current != self.server:
                        self.server = current
                    self.resend_lost()
                ready = self.poll()
                if not ready:
                    # Woken by a worker's announcement (see DONE_PREFIX) as soon as a file
                    # finishes; the timeout only paces the heartbeat, the abort check and
                    # results from workers that do not announce.
                    backend.client.blpop([self.done_key], timeout=poll_interval)
                if outage_since is not None:
                    log.warning("queue broker %s is back", self.shown)
                    self.alive.beat(force=True)
                    long_outage = time.monotonic() - outage_since > self.alive.ttl / 2
                    outage_since = None
                    current = _server_id(self.client)
                    if current is None or current != self.server or long_outage:
                        # Restarted (or cannot tell), or away so long that the heartbeat may
                        # have expired and workers discarded files: look for lost ones.
                        self.server = current
                        self.resend_lost()
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                outage_since = outage_step(
                    exc, outage_since, self.shown, outage_grace, poll_interval
                )
                continue
            if ready:
                self.progress_at = time.monotonic()
                self.collect(ready)

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        """The pending files' finished results, in one round trip; empties the completion list.

        The list is emptied before the results are read (in the same pipeline): a worker
        announces a file only after storing its result, so an announcement emptied here is
        read here, and a later one wakes the next wait. Results are read and deleted at once
        (``GETDEL``, Redis 6.2; with an older server, read here and deleted by
        :meth:`collect`): workers store only final states, so a result read is a result used.
        """
        import redis

        backend = self.client.backend
        ids = list(self.pending)
        keys = [backend.get_key_for_task(t) for t in ids]
        pipe = backend.client.pipeline(transaction=False)
        pipe.delete(self.done_key)
        if self.getdel:
            for key in keys:
                pipe.getdel(key)
        else:
            pipe.mget(keys)
        try:
            replies = pipe.execute()
        except redis.ResponseError as exc:
            if not self.getdel:
                raise
            log.debug("no GETDEL on this Redis (%s): reading and deleting apart", exc)
            self.getdel = False
            return self.poll()
        values = replies[1:] if self.getdel else replies[1]
        ready = []
        for task_id, value in zip(ids, values, strict=True):
            if value is None:
                continue
            meta = backend.decode_result(value)
            if meta.get("status") in states.READY_STATES:
                ready.append((task_id, meta))
        return ready

    def collect(self, ready: list[tuple[str, dict[str, Any]]]) -> None:
        if not self.getdel:
            backend = self.client.backend
            try:  # one round trip for the whole poll's results
                backend.client.delete(*(backend.get_key_for_task(t) for t, _meta in ready))
            except Exception as exc:  # noqa: BLE001 - cleanup only; results expire anyway
                log.debug("cannot delete %d stored results: %s", len(ready), exc)
        for task_id, meta in ready:
            files = self.pending.pop(task_id, None)
            if files is None:
                continue  # a duplicate of a file resent after an outage
            if len(files) == 1 and files[0].task_id == task_id:
                self.finish(files[0], self._result(files[0], meta))
                continue
            # A bundle: its files' results, and those it did not convert sent again alone
            # (all of them when it failed as a whole: its hard limit, a lost worker).
            done = meta.get("result") if meta.get("status") == "SUCCESS" else None
            results = done.get("results") if isinstance(done, dict) else None
            left = list(files)
            if isinstance(results, list):
                for sent, data in zip(files, results, strict=False):
                    self.finish(sent, self._result(sent, {"status": "SUCCESS", "result": data}))
                left = files[len(results) :]
            else:
                log.warning(
                    "a bundle of %d files failed on its worker (%s); sending them one by one",
                    len(files),
                    meta.get("status"),
                )
            if left and self.send_again is not None:
                self.send_again(left)

    def _result(self, sent: _Sent, meta: dict[str, Any]) -> FileResult:
        """A file's result as a local run gives it, from the worker's task state."""
        job = sent.job
        if meta.get("status") == "SUCCESS" and isinstance(meta.get("result"), dict):
            return _rebuild_result(meta["result"], job.display, sent.abs_path, job.out_dir)
        return _failure_result(meta, job.display, self.options.limits.timeout)

    def after_outage(self) -> None:
        """The broker was away while files were being sent: resend what a restart lost."""
        self.server = _server_id(self.client)
        self.resend_lost()

    def resend_lost(self) -> None:
        """Send again the pending files the broker no longer knows about."""
        self.alive.beat(force=True)  # first, so that workers do not discard what is resent
        lost = _lost_tasks(self.client, set(self.pending), self.queues)
        if not lost:
            return
        log.warning(
            "queue broker %s lost %d queued task(s) (restarted without its data, or discarded by "
            "an older worker?); sending them again",
            self.shown,
            len(lost),
        )
        with self.client.producer_or_acquire() as producer:
            for task_id in sorted(lost):
                files = self.pending[task_id]
                if len(files) > 1 and self.send_again is not None:
                    # A bundle goes again as single files (any worker knows those).
                    del self.pending[task_id]
                    self.send_again(files)
                else:
                    self.send(task_id, files, producer)
