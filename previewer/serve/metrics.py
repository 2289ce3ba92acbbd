"""Prometheus metrics of one app, in its own :class:`~prometheus_client.CollectorRegistry`."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """The service's metrics.

    Args:
        queue_depth: Returns the jobs waiting.
        in_flight: Returns the jobs running.
    """

    def __init__(self, queue_depth: Callable[[], int], in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
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
        return generate_latest(self.registry)
