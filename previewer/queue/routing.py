"""Routing: which queue a file goes to, how many a submitter keeps queued, and what waits.

Every file is classed before it is queued (:mod:`previewer.queue.cost`) and sent to its class's
queue, ``previewer.light``, ``previewer.heavy`` or ``previewer.office``
(:func:`choose_route`: the one function any submitter, the CLI's or a service's, calls with a
file and a tenant). A submitter keeps at most :data:`WINDOWS` files per class sent and not
finished, so one submitter's burst sits in its own process, not in the shared queue: files of
several submitters interleave in the queue, and a newcomer's file waits behind at most a
window's worth of each other submitter's files.

Workers keep two things in Redis for the estimator and for monitoring: per converter, the cost
of its light files (:data:`COST_KEY`), and per queue, the recent waits between enqueueing and a
task's start (:data:`WAITS_PREFIX`). :func:`queue_stats` reads depth, oldest wait and recent
waits per class (what ``previewer worker`` logs and a metrics endpoint can export).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from previewer.options import Options
from previewer.queue.cost import (
    CLASSES,
    HEAVY,
    LIGHT,
    OFFICE,
    ConverterCost,
    Estimate,
    FileFacts,
    Place,
    estimate,
    probe,
)

if TYPE_CHECKING:
    from previewer.registry import Registry

__all__ = [
    "COST_KEY",
    "QUEUE_PREFIX",
    "WAITS_PREFIX",
    "WINDOWS",
    "ClassStats",
    "Route",
    "choose_route",
    "queue_name",
    "queue_stats",
    "read_history",
    "worker_queues",
]

QUEUE_PREFIX = "previewer"
"""Class queues are ``<prefix>.<class>``: ``previewer.light``, ``previewer.heavy``..."""
WINDOWS: Mapping[str, int] = {LIGHT: 24, HEAVY: 2, OFFICE: 2}
"""Files a submitter keeps sent and unfinished per class: for light files, three bundles of 8
(two converting, one queued to follow at once), few enough that another submitter's file
waits behind one bundle of them (some tens of milliseconds)."""
COST_KEY = "previewer-cost"
"""Redis hash of the light files' cost per converter: ``<converter>|n`` (files), ``|s``
(seconds), ``|p`` (rendered pages)."""
WAITS_PREFIX = "previewer-waits-"
"""Redis list per queue (``previewer-waits-<queue>``) of the latest waits in seconds, newest
first, at most :data:`WAIT_SAMPLES`."""
WAIT_SAMPLES = 256
ENQUEUED_HEADER = "previewer_enqueued"
"""Message header holding the wall-clock time (epoch seconds) a file was sent."""


def queue_name(cls: str, prefix: str = QUEUE_PREFIX) -> str:
    """The queue of a class: ``<prefix>.<cls>``."""
    return f"{prefix}.{cls}"


def worker_queues(names: Iterable[str] = (), prefix: str = QUEUE_PREFIX) -> list[str]:
    """The queues a worker consumes: class names expand to their queue, others stay as given.

    Args:
        names: ``light``, ``heavy``, ``office`` or any queue name (``-Q``); none means every
            class, heavy and office before light.
        prefix: The class queues' prefix.

    Returns:
        Queue names, without duplicates, in the order given.
    """
    given = list(names) or [HEAVY, OFFICE, LIGHT]
    out: list[str] = []
    for name in given:
        full = queue_name(name, prefix) if name in CLASSES else name
        if full not in out:
            out.append(full)
    return out


@dataclass(frozen=True)
class Route:
    """Where a file goes (see :func:`choose_route`).

    Attributes:
        queue: The Celery queue.
        cls: Its class (``light``, ``heavy``, ``office``).
        tenant: Who submitted it.
        estimate: The estimate that chose the class.
        facts: What the probe read.
    """

    queue: str
    cls: str
    tenant: str
    estimate: Estimate
    facts: FileFacts

    def to_dict(self) -> dict[str, Any]:
        """The route as sent with the task and reported in results."""
        return {
            "queue": self.queue,
            "class": self.cls,
            "tenant": self.tenant,
            "estimate": round(self.estimate.seconds, 3),
            "converter": self.facts.converter,
            "why": list(self.estimate.reasons),
        }


def choose_route(
    path: str,
    options: Options,
    tenant: str,
    *,
    registry: Registry,
    history: Mapping[str, ConverterCost] | None = None,
    queue: str | None = None,
    prefix: str = QUEUE_PREFIX,
    place: Place | None = None,
) -> Route:
    """Probe a file, class it, and pick its queue.

    Args:
        path: The file.
        options: The request.
        tenant: Who submits it (reported; submitters keep their own windows).
        registry: The converters (to know which one the file goes to).
        history: Per converter cost of earlier files (:func:`read_history`).
        queue: Send to this queue whatever the class (``--queue NAME``).
        prefix: Prefix of the class queues.
        place: Where the probe parses a document (default: a limited child).

    Returns:
        The route.
    """
    facts = probe(path, options, registry, place=place)
    found = estimate(facts, options, history)
    return Route(queue or queue_name(found.cls, prefix), found.cls, tenant, found, facts)


def read_history(redis: Any) -> dict[str, ConverterCost]:
    """Per converter cost of earlier light files, from :data:`COST_KEY` (one round trip)."""
    raw: dict[bytes | str, bytes | str] = redis.hgetall(COST_KEY) or {}
    parts: dict[str, dict[str, float]] = {}
    for key, value in raw.items():
        text = key.decode() if isinstance(key, bytes) else str(key)
        name, _, field = text.rpartition("|")
        try:
            parts.setdefault(name, {})[field] = float(value)
        except ValueError:
            continue
    return {
        name: ConverterCost(int(v.get("n", 0)), v.get("s", 0.0), int(v.get("p", 0)))
        for name, v in parts.items()
    }


def record_cost(pipe: Any, converter: str, seconds: float, pages: int) -> None:
    """Add one light file's cost to its converter's history (on a Redis pipeline)."""
    pipe.hincrby(COST_KEY, f"{converter}|n", 1)
    pipe.hincrbyfloat(COST_KEY, f"{converter}|s", float(seconds))
    pipe.hincrby(COST_KEY, f"{converter}|p", max(1, int(pages)))


def record_wait(pipe: Any, queue: str, wait: float) -> None:
    """Add a task's wait (enqueue to start) to its queue's recent waits (on a pipeline)."""
    key = WAITS_PREFIX + queue
    pipe.lpush(key, f"{wait:.4f}")
    pipe.ltrim(key, 0, WAIT_SAMPLES - 1)


@dataclass(frozen=True)
class ClassStats:
    """A queue's state (see :func:`queue_stats`).

    Attributes:
        queue: The queue name.
        depth: Messages waiting in it.
        oldest_wait: Seconds the oldest waiting message has waited (0 when empty).
        recent: How many recent waits the percentiles cover.
        p50: Median of the recent waits (seconds).
        p95: Their 95th percentile.
        max: The longest of them.
    """

    queue: str
    depth: int
    oldest_wait: float
    recent: int
    p50: float
    p95: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form (seconds rounded to milliseconds)."""
        return {
            "queue": self.queue,
            "depth": self.depth,
            "oldest_wait": round(self.oldest_wait, 3),
            "recent": self.recent,
            "p50": round(self.p50, 3),
            "p95": round(self.p95, 3),
            "max": round(self.max, 3),
        }


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values`` by nearest rank (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def queue_stats(
    redis: Any, queues: Mapping[str, str] | None = None, *, now: float | None = None
) -> dict[str, ClassStats]:
    """Depth, oldest wait and recent waits of each class queue, in one round trip.

    For a metrics endpoint (gauges per class) or a worker's periodic log line.

    Args:
        redis: A redis-py client of the broker.
        queues: Class -> queue (default: every class's queue under :data:`QUEUE_PREFIX`).
        now: Wall-clock time to measure the oldest wait against (default: now).

    Returns:
        Class -> :class:`ClassStats`.
    """
    names = dict(queues or {cls: queue_name(cls) for cls in CLASSES})
    pipe = redis.pipeline(transaction=False)
    for queue in names.values():
        pipe.llen(queue)
        pipe.lindex(queue, -1)  # kombu pushes on the left and pops on the right: the oldest
        pipe.lrange(WAITS_PREFIX + queue, 0, WAIT_SAMPLES - 1)
    replies = pipe.execute()
    moment = time.time() if now is None else now
    out: dict[str, ClassStats] = {}
    for i, (cls, queue) in enumerate(names.items()):
        depth, oldest, waits = replies[3 * i : 3 * i + 3]
        values = [float(w) for w in waits or []]
        sent = _enqueued(oldest) if oldest else None
        out[cls] = ClassStats(
            queue,
            int(depth or 0),
            max(0.0, moment - sent) if sent is not None else 0.0,
            len(values),
            statistics.median(values) if values else 0.0,
            percentile(values, 0.95),
            max(values, default=0.0),
        )
    return out


def _enqueued(raw: bytes | str) -> float | None:
    """The enqueue time a queued message carries (None when it has none)."""
    try:
        headers = json.loads(raw)["headers"]
        return float(headers[ENQUEUED_HEADER])
    except (ValueError, KeyError, TypeError):
        return None
