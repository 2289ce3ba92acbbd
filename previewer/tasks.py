"""Former home of the queue (kept importable): see :mod:`previewer.queue`.

``celery -A previewer.tasks worker`` and ``from previewer.tasks import submit_many`` keep
working; the app, the task ``previewer.convert_file`` and the submitter live in
:mod:`previewer.queue`.
"""

from __future__ import annotations

from previewer.queue.broker import _lost_tasks, _message_id, _server_id, cancel_run
from previewer.queue.config import (
    ALIVE_PREFIX,
    ATTEMPTS_PREFIX,
    BROKER_ENV,
    CANCEL_PREFIX,
    DEFAULT_BROKER,
    HEARTBEAT,
    MAX_ATTEMPTS,
    STOP_SIGNAL,
    TASK_NAME,
    BrokerUnavailableError,
    app,
    broker_url,
    configure,
    time_limits,
)
from previewer.queue.submit import QueueExecutor, submit_many
from previewer.queue.worker import PRELOAD, convert_file, preload

__all__ = [
    "ALIVE_PREFIX",
    "ATTEMPTS_PREFIX",
    "BROKER_ENV",
    "CANCEL_PREFIX",
    "DEFAULT_BROKER",
    "HEARTBEAT",
    "MAX_ATTEMPTS",
    "PRELOAD",
    "STOP_SIGNAL",
    "TASK_NAME",
    "BrokerUnavailableError",
    "QueueExecutor",
    "_lost_tasks",
    "_message_id",
    "_server_id",
    "app",
    "broker_url",
    "cancel_run",
    "configure",
    "convert_file",
    "preload",
    "submit_many",
    "time_limits",
]
