"""Broker mode's view of the queue: is Redis up, does a worker answer, is this node alive.

:class:`WorkerWatch` pings the queue workers (Celery's ``ping``, a short timeout) every
:data:`PING_EVERY` seconds from a thread, so ``/readyz`` answers at once, and a job waiting on
workers can be failed when none has answered for the service's ``worker_grace`` (see
:meth:`WorkerWatch.abort`): a job is never left pending for ever because its worker vanished.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from previewer.errors import EngineUnavailableError

__all__ = ["PING_EVERY", "WorkerWatch"]

log = logging.getLogger(__name__)

PING_EVERY = 2.0
"""Seconds between two pings of the workers."""
PING_TIMEOUT = 0.5
"""Seconds a ping waits for replies."""


class WorkerWatch:
    """Pings the queue workers in the background and remembers when one last answered.

    Args:
        broker: The Redis URL.
        grace: Seconds without any worker answering after which waiting jobs fail.
    """

    def __init__(self, broker: str, grace: float) -> None:
        from celery import Celery

        from previewer.queue.config import configure

        self.grace = grace
        self.client: Any = configure(Celery("previewer-serve"), broker=broker)
        self.client.conf.broker_connection_timeout = 2
        self.client.conf.broker_connection_max_retries = 0
        self.last_seen = time.monotonic()  # the grace counts from the start
        self.workers = 0
        self.broker_error: str | None = None
        self.checked = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="previewer-ping", daemon=True)

    def start(self) -> None:
        """Start pinging."""
        self._thread.start()

    def stop(self) -> None:
        """Stop pinging."""
        self._stop.set()
        self._thread.join(timeout=PING_TIMEOUT + 5)

    def ping(self) -> None:
        """Ping the workers once; record the replies or the broker's error."""
        try:
            replies = self.client.control.ping(timeout=PING_TIMEOUT) or []
        except Exception as exc:  # noqa: BLE001 - any failure to reach Redis is reported
            self.broker_error = f"{type(exc).__name__}: {exc}"[:200]
            self.workers = 0
        else:
            self.broker_error = None
            self.workers = len(replies)
            if replies:
                self.last_seen = time.monotonic()
        self.checked = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.ping()
            self._stop.wait(PING_EVERY)

    def answering(self) -> bool:
        """Whether a worker answered the latest ping (and that ping is recent)."""
        fresh = time.monotonic() - self.checked < PING_EVERY * 2 + PING_TIMEOUT + 1
        return fresh and self.workers > 0

    def abort(self) -> BaseException | None:
        """The error to fail a waiting job with, or None while it may go on waiting.

        Jobs wait while a worker answers (a killed worker's file is redelivered to another one
        after the visibility timeout) and while Redis itself is away (the submitter rides out
        the outage up to its own grace); once the broker answers but no worker has for
        ``grace`` seconds, they fail.
        """
        if self.broker_error is not None:
            return None
        idle = time.monotonic() - self.last_seen
        if idle <= self.grace:
            return None
        return EngineUnavailableError(
            f"no queue worker has answered for {idle:.0f} s; the conversion was abandoned",
            hint="start queue workers (previewer worker) on the same broker",
        )

    def details(self) -> dict[str, Any]:
        """What ``/readyz`` shows about the queue."""
        return {
            "workers": self.workers,
            "last_answer_s": round(time.monotonic() - self.last_seen, 1),
            "broker_error": self.broker_error,
        }
