"""The queue's Celery app: broker and reliability settings.

Workers on one or many machines run the task ``previewer.convert_file``
(:mod:`previewer.queue.worker`), one per input; the submitting side
(:mod:`previewer.queue.submit`) walks the inputs exactly like a local batch and runs them
through the same batch engine, so reports, failure counts and exit codes match a local run.
Inputs and the output directory must be reachable under the same absolute paths on every
machine (shared storage).

Reliability settings: late acknowledgement with requeue when a worker dies mid-task, a prefetch
of one, soft and hard time limits derived from the timeout, a Redis visibility timeout just above
the hard limit (a task of a killed worker is redelivered after it), per-child task and memory
recycling, JSON only. Tasks are idempotent: the same input and options give the same output
paths, and previews are written atomically, so a redelivered task is harmless.

Usage: ``celery -A previewer.queue worker`` or ``previewer worker``; the broker URL comes from
``PREVIEWER_BROKER_URL`` (default ``redis://127.0.0.1:6379/0``). Nothing connects at import.
"""

from __future__ import annotations

import logging
import os

from celery import Celery

from previewer.budgets import Limits
from previewer.errors import EngineTimeoutError, EngineUnavailableError

__all__ = [
    "DEFAULT_BROKER",
    "BrokerUnavailableError",
    "app",
    "broker_url",
    "configure",
    "time_limits",
]

log = logging.getLogger(__name__)

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
"""Broker (and result backend) used when neither ``--broker`` nor the environment names one."""

BROKER_ENV = "PREVIEWER_BROKER_URL"
"""Environment variable naming the broker URL."""

TASK_NAME = "previewer.convert_file"
BUNDLE_TASK_NAME = "previewer.convert_files"
"""A task converting a few light files of one run in turn (see :data:`BUNDLE_BUDGET`)."""
BUNDLE_BUDGET = 1.0
"""Seconds after which a bundle starts no further file: the rest go back to the submitter, which
sends them again. So a bundle ends within its last file's limits plus this; its time limits are
a single file's plus this, which stays below the visibility timeout (:data:`VISIBILITY_MARGIN`)."""
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
MAX_ATTEMPTS = 2
"""Deliveries of one task after which it fails instead of converting again: a file whose
engine crashes (or gets killed with) its worker process is requeued once
(``task_reject_on_worker_lost``, or the visibility timeout when the whole worker died); the
next delivery fails it with an EngineError naming the file, where it would otherwise crash a
worker for ever."""
DONE_PREFIX = "previewer-done-"
"""Redis key prefix of a run's completion list (``previewer-done-<run id>``): a worker pushes a
task's id onto it once the task's result is stored, and the submitter blocks on it instead of
sleeping between polls, so that the next file is sent as soon as one finishes."""
DONE_TTL = 600
"""Seconds a run's completion list outlives its last push (its submitter deletes it as it reads)."""
ATTEMPTS_PREFIX = "previewer-attempts-"
"""Redis key prefix counting a task's deliveries (``previewer-attempts-<task id>``)."""
STOP_SIGNAL = "SIGUSR1"
"""The signal a revoked task's process gets: Celery's prefork pool uses it for the soft time
limit, so a task interrupted by it cleans up (engines killed, temporary files removed)."""
VISIBILITY_MARGIN = 2.0
"""Seconds the Redis visibility timeout stays above the hard limit."""
MAX_TASKS_PER_CHILD = 5000
"""Tasks after which a worker child is replaced (leak protection; memory has its own cap).
Celery starts the replacement at its pool's next maintenance, up to a second later, so this
is kept high: each replacement leaves a slot idle meanwhile."""
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
    queue: str | None = None,
) -> Celery:
    """Apply previewer's broker and reliability settings to a Celery app.

    Args:
        celery_app: The app to configure.
        broker: Broker URL (see :func:`broker_url`); the result backend is the same Redis.
        timeout: Per-file seconds; the soft/hard limits and visibility timeout derive from it.
        max_tasks_per_child: Replace a worker child after this many tasks.
        max_memory_per_child: Replace a worker child whose resident memory exceeds this (KiB).
        queue: The queue tasks are sent to and looked for in (default: Celery's, ``celery``);
            ``previewer worker -Q NAME`` consumes it.

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
    if queue:
        celery_app.conf.task_default_queue = queue
    return celery_app


app = configure(Celery("previewer"))
"""The workers' app (``celery -A previewer.queue worker``), configured from the environment."""


def _timeout_error(timeout: float, path: str, *, killed: bool = False) -> EngineTimeoutError:
    """The error a local batch reports for a file its worker had to stop (``previewer.pool``)."""
    how = "its worker process was killed" if killed else "it was stopped"
    return EngineTimeoutError(
        f"conversion did not finish within the timeout of {timeout:g} s; {how}",
        path=path,
        hint="raise --timeout if the input is legitimately slow",
    )


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
