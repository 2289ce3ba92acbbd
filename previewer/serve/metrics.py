"""Prometheus metrics of one app, in its own :class:`~prometheus_client.CollectorRegistry`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """The service's metrics.

    Args:
        queue_depth: Returns the jobs waiting.
        in_flight: Returns the jobs running.
        class_stats: With queue workers: returns the broker's per-class queue state
            (:func:`previewer.queue.routing.queue_stats`), read at each scrape.
    """

    def __init__(
        self,
        queue_depth: Callable[[], int],
        in_flight: Callable[[], int],
        class_stats: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._class_stats = class_stats
        self.class_depth = Gauge(
            "previewer_class_queue_depth",
            "Files waiting in the broker, by cost class (queue workers only).",
            ["cost_class"],
            registry=self.registry,
        )
        self.class_wait = Gauge(
            "previewer_class_wait_seconds",
            "Wait of the broker's files by cost class: the oldest waiting one, and the p50/p95 "
            "of recent starts (queue workers only).",
            ["cost_class", "which"],
            registry=self.registry,
        )
        self.requests = Counter(
            "previewer_http_requests",
            "HTTP requests by route and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "previewer_job_duration_seconds",
            "Seconds from a job's start to its end, by converter and outcome.",
            ["converter", "status"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.rejected = Counter(
            "previewer_rejected",
            "Requests refused with 429 (in-flight jobs and queue full).",
            registry=self.registry,
        )
        depth = Gauge("previewer_queue_depth", "Jobs waiting to run.", registry=self.registry)
        depth.set_function(lambda: float(queue_depth()))
        running = Gauge("previewer_jobs_in_flight", "Jobs running.", registry=self.registry)
        running.set_function(lambda: float(in_flight()))
        self.workers = Gauge(
            "previewer_queue_workers",
            "Queue workers that answered the latest ping (broker mode).",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        if self._class_stats is not None:
            try:
                stats = self._class_stats()
            except Exception:  # noqa: BLE001 - a broker outage shows in /readyz, not here
                stats = {}
            for cls, st in stats.items():
                self.class_depth.labels(cls).set(st.depth)
                self.class_wait.labels(cls, "oldest").set(st.oldest_wait)
                self.class_wait.labels(cls, "p50").set(st.p50)
                self.class_wait.labels(cls, "p95").set(st.p95)
        return generate_latest(self.registry)
