"""The job runner: admission (bounded in-flight work and queue), workers, drain on shutdown.

At most ``jobs`` conversions run at once, each in a thread of a bounded pool that hands the
file to :mod:`previewer.serve.work` (which runs it in a limited child process); at most
``queue_size`` more wait. A request that would exceed both is refused before its body is read
(the API answers 429 with Retry-After). The event loop never converts: it only records state and
wakes the requests waiting for a job.

Tenants (API keys) are served fairly: waiting jobs are taken in turn from each tenant (round
robin, :class:`FairQueue`), so one key's burst of thousands of files delays another key's single
file by at most one job per running slot; and one key holds at most three quarters of the places
(:meth:`Runner.tenant_cap`), so a burst cannot take the places another key's next request needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from previewer.budgets import Limits
from previewer.serve import work
from previewer.serve.storage import Files, StorageError
from previewer.serve.store import JobStore

__all__ = ["Runner", "Task"]

log = logging.getLogger(__name__)

RECORD_PATIENCE = 60.0
"""Seconds a finished job's outcome is retried while the store (Redis) is unreachable."""


@dataclass
class Task:
    """A job to run.

    Attributes:
        id: The job id.
        sizes: Normalised sizes.
        pages: Page selection.
        metadata: Metadata keys.
        format: Image format of the previews (``png``, ``jpeg``, ``webp``).
        tenant: The API key that submitted the job: queue workers interleave tenants' files.
        source: The input file, in the job's ``input/``.
        name: The input's name as the client gave it (or the fetched URL's file name).
    """

    id: str
    sizes: list[str]
    pages: str
    metadata: list[str]
    source: Path
    name: str
    format: str = "png"
    tenant: str = ""


class FairQueue:
    """Waiting jobs, taken in turn from each tenant (round robin), oldest first within one."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, deque[Task]] = {}
        self._turns: deque[str] = deque()
        self._items = asyncio.Semaphore(0)
        self._size = 0

    def qsize(self) -> int:
        """Jobs waiting."""
        return self._size

    def put_nowait(self, task: Task) -> None:
        """Queue ``task`` behind its tenant's earlier jobs."""
        waiting = self._by_tenant.get(task.tenant)
        if waiting is None:
            waiting = self._by_tenant[task.tenant] = deque()
            self._turns.append(task.tenant)
        waiting.append(task)
        self._size += 1
        self._items.release()

    async def get(self) -> Task:
        """The next tenant's oldest job (waits until there is one)."""
        await self._items.acquire()
        tenant = self._turns.popleft()
        waiting = self._by_tenant[tenant]
        task = waiting.popleft()
        if waiting:
            self._turns.append(tenant)
        else:
            del self._by_tenant[tenant]
        self._size -= 1
        return task


class Runner:
    """Admits, queues and runs jobs.

    Args:
        store: The job store.
        limits: Per-file limits.
        jobs: Conversions at once.
        queue_size: Jobs waiting at most.
        broker: Send conversions to queue workers through this Redis URL.
        abort: In broker mode, called while a job waits for the workers; an exception it
            returns fails the job (see :meth:`previewer.serve.workers.WorkerWatch.abort`).
        on_done: Coroutine called with ``(job id, status, converter, seconds)`` after a job
            is recorded.
        files: Keeps a finished job's files (uploads them to a bucket) before it is recorded.
    """

    def __init__(
        self,
        store: JobStore,
        limits: Limits,
        *,
        jobs: int,
        queue_size: int,
        on_done: Callable[[str, str, str, float], Awaitable[None]],
        broker: str | None = None,
        files: Files | None = None,
        abort: Callable[[], BaseException | None] | None = None,
    ) -> None:
        self.store = store
        self.abort = abort
        self.limits = limits
        self.jobs = jobs
        self.queue_size = queue_size
        self.on_done = on_done
        self.broker = broker
        self.files = files
        self._unfinished: set[str] = set()
        self.admitted = 0  # reserved + queued + running
        self.running = 0
        self.accepting = True
        self._queue = FairQueue()
        self._by_tenant: dict[str, int] = {}  # admitted jobs per tenant
        self._events: dict[str, asyncio.Event] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="previewer-job")
        self._avg = 2.0  # seconds per job, a moving average for Retry-After

    # ------------------------------------------------------------------ admission

    @property
    def waiting(self) -> int:
        """Jobs queued (not yet running)."""
        return self._queue.qsize()

    def tenant_cap(self) -> int:
        """Places (running and waiting) one tenant may hold.

        Three quarters of them, and always more than the running slots, so that a single
        tenant still keeps every slot busy.
        """
        places = self.jobs + self.queue_size
        return max(self.jobs + 1, places - places // 4) if places > self.jobs else places

    def reserve(self, tenant: str = "") -> bool:
        """Take a place for a new job of ``tenant``.

        Returns:
            False when the places are all taken, or when the tenant holds its share of them
            (:meth:`tenant_cap`).
        """
        if not self.accepting or self.admitted >= self.jobs + self.queue_size:
            return False
        if self._by_tenant.get(tenant, 0) >= self.tenant_cap():
            return False
        self.admitted += 1
        self._by_tenant[tenant] = self._by_tenant.get(tenant, 0) + 1
        return True

    def release(self, tenant: str = "") -> None:
        """Give back a place taken by :meth:`reserve` for a job that was not submitted."""
        self.admitted -= 1
        self._drop(tenant)

    def _drop(self, tenant: str) -> None:
        left = self._by_tenant.get(tenant, 0) - 1
        if left > 0:
            self._by_tenant[tenant] = left
        else:
            self._by_tenant.pop(tenant, None)

    def retry_after(self) -> int:
        """Seconds a refused client should wait (an estimate from recent job durations)."""
        backlog = self.admitted / max(1, self.jobs)
        return max(1, min(60, math.ceil(backlog * self._avg)))

    def submit(self, task: Task) -> None:
        """Queue a job whose place was reserved."""
        self._events[task.id] = asyncio.Event()
        self._unfinished.add(task.id)
        self._queue.put_nowait(task)

    async def wait(self, job_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a job; True when it has finished."""
        event = self._events.get(job_id)
        if event is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(event.wait()), timeout)
        return event.is_set()

    # ------------------------------------------------------------------ workers

    def start(self) -> None:
        """Start the worker tasks."""
        self._workers = [asyncio.create_task(self._worker()) for _ in range(self.jobs)]

    def pool_alive(self) -> bool:
        """Whether the workers and their thread pool are up."""
        return bool(self._workers) and not any(w.done() for w in self._workers)

    async def _worker(self) -> None:
        while True:
            task = await self._queue.get()
            self.running += 1
            try:
                await self._run(task)
            except Exception:  # a bug, or the store unreachable: fail the job, keep the worker
                log.exception("job %s failed unexpectedly", task.id)
                await self._record(
                    task.id,
                    "failure",
                    {"code": "InternalError", "message": "the job failed unexpectedly"},
                )
            finally:
                self.running -= 1
                self.admitted -= 1
                self._drop(task.tenant)
                self._unfinished.discard(task.id)
                event = self._events.pop(task.id, None)
                if event is not None:
                    event.set()

    async def _run(self, task: Task) -> None:
        started = time.monotonic()
        job_dir = self.store.job_dir(task.id)
        source, name = task.source, task.name
        if self.store.get(task.id) is None:  # deleted while it waited
            return
        loop = asyncio.get_running_loop()
        status, payload = await loop.run_in_executor(
            self._pool,
            partial(
                work.convert_job,
                source,
                name,
                job_dir / "out",
                sizes=task.sizes,
                pages=task.pages,
                metadata=task.metadata,
                format=task.format,
                tenant=task.tenant,
                limits=self.limits,
                broker=self.broker,
                abort=self.abort,
            ),
        )
        if self.files is not None:
            status, payload = await loop.run_in_executor(
                self._pool, self.files.keep, task.id, job_dir, (status, payload)
            )
        elapsed = time.monotonic() - started
        self._avg = 0.8 * self._avg + 0.2 * elapsed
        kept = await self._record(task.id, status, payload)
        if not kept:  # deleted while it ran
            with contextlib.suppress(Exception):  # unreachable store: the sweeper removes it
                self.store.delete(task.id)
            if self.files is not None:
                try:
                    await loop.run_in_executor(self._pool, self.files.remove, task.id)
                except StorageError as exc:  # the sweeper removes them later
                    log.warning("job %s deleted while it ran: %s", task.id, exc)
            return
        converter = str(payload.get("converter", "")) if status == "success" else ""
        await self.on_done(task.id, status, converter, elapsed)

    async def _record(self, job_id: str, status: str, payload: dict[str, Any]) -> bool:
        """Store a job's outcome, retrying while the store is unreachable (Redis restarting).

        Returns:
            False when the job no longer exists (deleted meanwhile, or its state lost), or the
            store stayed unreachable for :data:`RECORD_PATIENCE` seconds.
        """
        deadline = time.monotonic() + RECORD_PATIENCE
        delay = 0.2
        while True:
            try:
                if status == "success":
                    return self.store.finish(job_id, status, result=payload)
                return self.store.finish(job_id, status, error=payload)
            except Exception as exc:  # noqa: BLE001 - the store's own errors vary by backend
                if time.monotonic() > deadline:
                    log.error("could not record the outcome of job %s: %s", job_id, exc)
                    return False
                log.warning("cannot record job %s yet (%s); retrying", job_id, exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    # ------------------------------------------------------------------ shutdown

    async def drain(self, grace: float) -> None:
        """Stop admitting, let queued and running jobs finish for up to ``grace`` seconds.

        Jobs still unfinished then are failed; the thread pool is shut down.
        """
        self.accepting = False
        deadline = time.monotonic() + grace
        while self.admitted > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self.admitted > 0:
            log.warning(
                "%d job(s) did not finish within the %g s grace period", self.admitted, grace
            )
            try:
                self.store.fail(
                    sorted(self._unfinished), "the service stopped before the job finished"
                )
            except Exception as exc:  # noqa: BLE001 - the store is away: others fail them later
                log.error("could not fail the unfinished jobs: %s", exc)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def info(self) -> dict[str, Any]:
        """Counters for readiness and metrics."""
        return {"running": self.running, "waiting": self.waiting, "admitted": self.admitted}
