"""What the submitter keeps in Redis: the run's heartbeat, its cancellation, lost files.

Reads kombu's Redis layout (the queue a list of messages, messages being processed in the
``unacked`` hash, results ``celery-task-meta-<id>`` keys) to cancel a run's queued messages
and to find files a restarted Redis lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from celery import Celery

from previewer.queue.config import ALIVE_PREFIX, CANCEL_PREFIX, CANCEL_TTL, STOP_SIGNAL

__all__ = ["cancel_run"]

log = logging.getLogger(__name__)


def cancel_run(
    client: Celery, run: str, task_ids: set[str], queues: Sequence[str] | None = None
) -> None:
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
        queues: The queues the run sent to (default: the app's default queue).
    """
    purged: set[str] = set()
    try:
        client.backend.client.set(CANCEL_PREFIX + run, "1", ex=CANCEL_TTL)
        client.backend.client.delete(ALIVE_PREFIX + run)
        with client.connection_for_write() as conn:
            redis = conn.default_channel.client
            for queue in queues or [client.conf.task_default_queue]:
                removed = redis.eval(_PURGE_RUN, 1, queue, run)
                purged |= {x.decode() if isinstance(x, bytes) else str(x) for x in removed}
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


def _lost_tasks(
    client: Celery, task_ids: set[str], queues: Sequence[str] | None = None
) -> set[str]:
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
        for queue in queues or [client.conf.task_default_queue]:  # the run's queues
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
