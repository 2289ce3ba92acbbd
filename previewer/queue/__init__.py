"""Queue workers: a Celery app (Redis broker and result backend) and the submitting side.

:mod:`~previewer.queue.config` holds the app and its settings, :mod:`~previewer.queue.worker`
the tasks workers run (``previewer.convert_file``, one file; ``previewer.convert_files``, a
bundle of light files), :mod:`~previewer.queue.wire` how their
JSON results become :class:`~previewer.results.FileResult` objects again, and
:mod:`~previewer.queue.submit` the batch engine's queue executor (:func:`submit_many`),
:mod:`~previewer.queue.gather` how it collects results, and
:mod:`~previewer.queue.broker` what the submitter keeps in Redis (heartbeat, cancellation).

Usage: ``previewer worker`` (or ``celery -A previewer.queue worker``); send files with
``previewer convert DIR --broker URL [--queue NAME]``.
"""

from __future__ import annotations

from previewer.queue.broker import cancel_run
from previewer.queue.config import (
    BROKER_ENV,
    DEFAULT_BROKER,
    TASK_NAME,
    BrokerUnavailableError,
    app,
    broker_url,
    configure,
    time_limits,
)
from previewer.queue.cost import CLASSES, ConverterCost, Estimate, FileFacts, estimate, probe
from previewer.queue.routing import (
    ClassStats,
    Route,
    choose_route,
    queue_name,
    queue_stats,
    read_history,
    worker_queues,
)
from previewer.queue.submit import QueueExecutor, default_tenant, sanitize_url, submit_many
from previewer.queue.worker import PRELOAD, convert_file, convert_files, preload

__all__ = [
    "BROKER_ENV",
    "CLASSES",
    "ClassStats",
    "ConverterCost",
    "Estimate",
    "FileFacts",
    "Route",
    "choose_route",
    "default_tenant",
    "estimate",
    "probe",
    "queue_name",
    "queue_stats",
    "read_history",
    "worker_queues",
    "DEFAULT_BROKER",
    "PRELOAD",
    "TASK_NAME",
    "BrokerUnavailableError",
    "QueueExecutor",
    "app",
    "broker_url",
    "cancel_run",
    "configure",
    "convert_file",
    "convert_files",
    "preload",
    "sanitize_url",
    "submit_many",
    "time_limits",
]
