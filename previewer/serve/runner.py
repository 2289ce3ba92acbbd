"""The job runner: admission (bounded in-flight work and queue), workers, drain on shutdown.

At most ``jobs`` conversions run at once, each in one of ``jobs`` job threads that hands the
file to :mod:`previewer.serve.work` (which runs it on the thread's warm worker process); at most
``queue_size`` more wait. A request that would exceed both is refused before its body is read
(the API answers 429 with Retry-After). The event loop never converts: it only records state and
wakes the requests waiting for a job. It hands the next waiting job over before a thread is free
(:data:`AHEAD`), so a thread goes from one job to the next without waiting for the loop, which
may be busy with requests, and the worker processes are not left idle between jobs.

Tenants (API keys) are served fairly: waiting jobs are taken in turn from each tenant (round
robin, :class:`FairQueue`), so one key's burst of thousands of files delays another key's single
file by at most one job per running slot (plus the one handed over ahead); and one key holds at
most three quarters of the places (:meth:`Runner.tenant_cap`), so a burst cannot take the places
another key's next request needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from previewer.budgets import Limits
from previewer.serve import work
from previewer.serve.storage import Files, StorageError
from previewer.serve.store import JobStore

__all__ = ["Runner", "Task"]

log = logging.getLogger(__name__)

AHEAD = 1
"""Jobs handed to the job threads beyond the running ones: the next free thread starts it at
once instead of waiting for the event loop."""

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
        self.accepting = True
        self._queue = FairQueue()
        self._by_tenant: dict[str, int] = {}  # admitted jobs per tenant
        self._events: dict[str, asyncio.Event] = {}
        self._feeder: asyncio.Task[None] | None = None
        self._threads: list[threading.Thread] = []
        self._handoff: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._places = asyncio.Semaphore(jobs + AHEAD)  # running, or handed over to run next
        self._running: dict[int, str] = {}  # job thread -> the job it converts
        self._completing: set[asyncio.Future[None]] = set()
        self._stopped = False
        self._avg = 2.0  # seconds per job, a moving average for Retry-After

    # ------------------------------------------------------------------ admission

    @property
    def waiting(self) -> int:
        """Jobs queued (not yet running)."""
        return self._queue.qsize() + self._handoff.qsize()

    @property
    def running(self) -> int:
        """Jobs converting now."""
        return len(self._running)

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
        """Start the job threads and the task that hands them jobs."""
        loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(
                target=self._job_thread, args=(loop,), name=f"previewer-job-{i}", daemon=True
            )
            for i in range(self.jobs)
        ]
        for thread in self._threads:
            thread.start()
        self._feeder = asyncio.create_task(self._feed())

    def pool_alive(self) -> bool:
        """Whether the job threads and the task feeding them are up."""
        return (
            self._feeder is not None
            and not self._feeder.done()
            and bool(self._threads)
            and all(t.is_alive() for t in self._threads)
        )

    async def _feed(self) -> None:
        """Hand waiting jobs to the job threads, keeping one ready for the next free thread.

        A thread that finishes a job takes the next one at once, without waiting for the event
        loop (which may be busy with requests): the worker process is not left idle between
        jobs. At most :data:`AHEAD` job is handed over beyond the running ones, so fairness
        between tenants is decided at most that many jobs early.
        """
        while True:
            await self._places.acquire()
            task = await self._queue.get()
            try:
                deleted = self.store.get(task.id) is None  # deleted while it waited
            except Exception:  # the store is away: fail the job, keep feeding
                log.exception("job %s failed unexpectedly", task.id)
                self._places.release()
                self._spawn(self._complete(task, None, None, 0.0))
                continue
            if deleted:
                self._places.release()
                self._settle(task)
                continue
            self._handoff.put(task)

    def _job_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        """A job thread: convert the jobs handed over until told to stop (None)."""
        slot = threading.get_ident()
        while True:
            task = self._handoff.get()
            if task is None:
                return
            self._running[slot] = task.id
            started = time.monotonic()
            outcome: work.Outcome | None = None
            error: BaseException | None = None
            try:
                outcome = self._convert(task)
            except Exception as exc:  # a bug: the job fails, the thread goes on
                error = exc
            finally:
                self._running.pop(slot, None)
            try:
                loop.call_soon_threadsafe(
                    self._converted, task, outcome, error, time.monotonic() - started
                )
            except RuntimeError:  # the loop has closed (shutdown past its grace)
                return

    def _convert(self, task: Task) -> work.Outcome:
        """Convert one job and keep its files (in a job thread)."""
        job_dir = self.store.job_dir(task.id)
        outcome = work.convert_job(
            task.source,
            task.name,
            job_dir / "out",
            sizes=task.sizes,
            pages=task.pages,
            metadata=task.metadata,
            format=task.format,
            tenant=task.tenant,
            limits=self.limits,
            broker=self.broker,
            abort=self.abort,
        )
        if self.files is not None:
            outcome = self.files.keep(task.id, job_dir, outcome)
        return outcome

    def _converted(
        self,
        task: Task,
        outcome: work.Outcome | None,
        error: BaseException | None,
        elapsed: float,
    ) -> None:
        """A job thread finished ``task`` (on the event loop): record it, feed the next."""
        if self._stopped:  # finished past the grace period: already failed
            return
        self._places.release()
        self._spawn(self._complete(task, outcome, error, elapsed))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        done = asyncio.ensure_future(coro)
        self._completing.add(done)
        done.add_done_callback(self._completing.discard)

    async def _complete(
        self,
        task: Task,
        outcome: work.Outcome | None,
        error: BaseException | None,
        elapsed: float,
    ) -> None:
        """Record a converted job's outcome, then wake the requests waiting for it."""
        try:
            if outcome is None:
                if error is not None:
                    log.error(
                        "job %s failed unexpectedly",
                        task.id,
                        exc_info=(type(error), error, error.__traceback__),
                    )
                await self._record(
                    task.id,
                    "failure",
                    {"code": "InternalError", "message": "the job failed unexpectedly"},
                )
            else:
                await self._finish(task, outcome, elapsed)
        except Exception:  # a bug, or the store unreachable: fail the job
            log.exception("job %s failed unexpectedly", task.id)
            await self._record(
                task.id,
                "failure",
                {"code": "InternalError", "message": "the job failed unexpectedly"},
            )
        finally:
            self._settle(task)

    def _settle(self, task: Task) -> None:
        """Give back a finished (or dropped) job's place and wake whoever waits for it."""
        self.admitted -= 1
        self._drop(task.tenant)
        self._unfinished.discard(task.id)
        event = self._events.pop(task.id, None)
        if event is not None:
            event.set()

    async def _finish(self, task: Task, outcome: work.Outcome, elapsed: float) -> None:
        status, payload = outcome
        self._avg = 0.8 * self._avg + 0.2 * elapsed
        kept = await self._record(task.id, status, payload)
        if not kept:  # deleted while it ran
            with contextlib.suppress(Exception):  # unreachable store: the sweeper removes it
                self.store.delete(task.id)
            if self.files is not None:
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        None, self.files.remove, task.id
                    )
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
        if self._feeder is not None:
            self._feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feeder
        for completing in list(self._completing):
            completing.cancel()
        while True:  # jobs handed over but not started: failed below with the others
            try:
                self._handoff.get_nowait()
            except queue.Empty:
                break
        for _thread in self._threads:
            self._handoff.put(None)
        self._stopped = True
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

    def info(self) -> dict[str, Any]:
        """Counters for readiness and metrics."""
        return {"running": self.running, "waiting": self.waiting, "admitted": self.admitted}
