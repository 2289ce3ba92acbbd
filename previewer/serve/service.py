"""The service's configuration and state: settings, store, runner, signer, metrics, auth.

Shared by the request handlers (:mod:`previewer.serve.create` and :mod:`previewer.serve.app`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from previewer.budgets import Limits
from previewer.serve import views
from previewer.serve.auth import ANONYMOUS, Tokens, basic_credentials
from previewer.serve.metrics import Metrics
from previewer.serve.netguard import NetPolicy
from previewer.serve.runner import Runner
from previewer.serve.signing import Signer
from previewer.serve.storage import Files, LocalFiles, StorageError
from previewer.serve.store import JobRow, JobStore, Store
from previewer.serve.webhooks import WebhookSecrets, deliver
from previewer.serve.workers import WorkerWatch

__all__ = [
    "FORM_SLACK",
    "ID_PATTERN",
    "MAX_WAIT",
    "Service",
    "Settings",
    "answer",
    "wait_param",
]

MAX_WAIT = 30.0
"""Longest ``?wait=`` accepted, in seconds."""

FORM_SLACK = 1024 * 1024
"""Bytes a request body may carry beyond the file: form fields and multipart framing."""

log = logging.getLogger("previewer.serve")

ID_PATTERN = re.compile(r"^[0-9a-f-]{36}$")

STALE_AGE = 600.0
"""Seconds past ``--ttl`` after which stored files without a job are removed; also how often
the storage is listed for them."""

log = logging.getLogger("previewer.serve")


@dataclass
class Settings:
    """What ``previewer serve`` was started with.

    Attributes:
        storage: The storage directory: job files (and the database, unless ``state``
            is given); with ``files`` in a bucket, the jobs' local working directory.
        tokens: Accepted credentials; None runs without authentication (loopback only).
        signing_keys: ``(id, secret)`` pairs; the first signs result URLs.
        jobs: Conversions at once.
        queue_size: Jobs waiting at most.
        ttl: Seconds a job and its files are kept.
        grace: Seconds in-flight jobs get to finish on shutdown.
        limits: Per-file limits (the same as every other path).
        policy: What URLs may be fetched and called.
        broker: Redis URL: conversions go to queue workers (``previewer worker``), job state
            to Redis.
        webhook_secret: A Standard Webhooks secret (``whsec_...``) signing callbacks; the
            FilePreviews JWT body is signed with the secret of the job's API key.
        state: The directory of the job database, when not ``storage``.
        files: Where job files are kept after the job (default: :class:`LocalFiles`, the
            storage directory itself); :class:`previewer.serve.s3.S3Files` for a bucket.
        worker_grace: In broker mode, seconds without any queue worker answering after which
            jobs waiting for one fail.
    """

    storage: Path
    tokens: Tokens | None
    signing_keys: list[tuple[str, bytes]]
    jobs: int = 2
    queue_size: int = 16
    ttl: float = 86400.0
    grace: float = 30.0
    limits: Limits = field(default_factory=Limits)
    policy: NetPolicy = field(default_factory=NetPolicy)
    webhook_secret: str | None = field(default=None, repr=False)
    broker: str | None = field(default=None, repr=False)
    state: Path | None = None
    files: Files | None = field(default=None, repr=False)
    worker_grace: float = 30.0


class Service:
    """The app's state: store, runner, signer, metrics, background tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: JobStore
        if settings.broker is not None:
            from previewer.serve.redis_store import RedisStore

            self.store = RedisStore(settings.storage, settings.broker)
        elif settings.state is not None:
            self.store = Store(settings.state, settings.storage)
        else:
            self.store = Store(settings.storage)
        self.files: Files = settings.files or LocalFiles(settings.storage)
        self.signer = Signer(settings.signing_keys)
        self.watch: WorkerWatch | None = None
        if settings.broker is not None:
            self.watch = WorkerWatch(settings.broker, settings.worker_grace)
        self.runner = Runner(
            self.store,
            settings.limits,
            jobs=settings.jobs,
            queue_size=settings.queue_size,
            on_done=self.job_done,
            broker=settings.broker,
            files=self.files,
            abort=self.watch.abort if self.watch is not None else None,
        )
        self.metrics = Metrics(
            lambda: self.runner.waiting,
            lambda: self.runner.running,
            self._class_stats if settings.broker is not None else None,
        )
        self.background: set[asyncio.Task[Any]] = set()
        self.converters: list[dict[str, Any]] | None = None

    def _class_stats(self) -> dict[str, Any]:
        """The broker's per-class queue depth and waits (queue workers only)."""
        from previewer.queue.routing import queue_stats
        from previewer.serve.redis_store import RedisStore

        assert isinstance(self.store, RedisStore)
        return dict(queue_stats(self.store.redis))

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def job_done(self, job_id: str, status: str, converter: str, seconds: float) -> None:
        """Count a finished job and start its callback, if it has one."""
        self.metrics.job_seconds.labels(converter or "none", status).observe(seconds)
        row = self.store.get(job_id)
        if row is not None and row.request.get("callback_url"):
            self.spawn(self.callback(row))

    async def callback(self, row: JobRow) -> None:
        """Deliver the job object to its callback URL, recording the delivery state."""

        def record(state: dict[str, Any]) -> None:
            self.store.set_callback(row.id, state)

        payload = views.job_object(row, self.signer, self.files.link)
        tokens = self.settings.tokens
        secrets = WebhookSecrets(
            # FilePreviews signs a callback's JWT body with the secret of the app (key) whose
            # job it is.
            jwt_secret=tokens.secret_of(row.tenant) if tokens is not None else None,
            standard_secret=self.settings.webhook_secret,
        )
        state = await deliver(
            row.request["callback_url"],
            payload,
            secrets=secrets,
            policy=self.settings.policy,
            on_attempt=record,
        )
        record(state)

    async def delete(self, job_id: str) -> None:
        """Remove a job's stored files, then its state and working directory.

        Raises:
            StorageError: If the stored files could not be removed (the job is kept).
        """
        await run_in_threadpool(self.files.remove, job_id)
        self.store.delete(job_id)

    async def sweep(self) -> None:
        """Remove expired jobs and their files, forever (cancelled on shutdown)."""
        period = max(1.0, min(60.0, self.settings.ttl / 4))
        stale_due = 0.0
        while True:
            try:
                for job_id in self.store.expired():
                    try:
                        await self.delete(job_id)
                    except StorageError as exc:
                        log.warning("expired job %s kept for now: %s", job_id, exc)
            except Exception as exc:  # noqa: BLE001 - the store is away; try again next time
                log.warning("cannot sweep expired jobs: %s", exc)
            if time.monotonic() >= stale_due:
                stale_due = time.monotonic() + STALE_AGE
                await self.sweep_stale()
            await asyncio.sleep(period)

    async def sweep_stale(self) -> None:
        """Remove stored files of jobs that no longer exist, long past their expiry."""
        try:
            before = time.time() - self.settings.ttl - STALE_AGE
            stale = await run_in_threadpool(self.files.stale, before)
            for job_id in stale:
                if self.store.get(job_id) is None:
                    await run_in_threadpool(self.files.remove, job_id)
        except StorageError as exc:
            log.warning("removing stale job files failed: %s", exc)

    async def keep_alive(self) -> None:
        """Broker mode: renew this node's liveness, fail the jobs of dead nodes, forever."""
        from previewer.serve.redis_store import NODE_BEAT, RedisStore

        store = self.store
        assert isinstance(store, RedisStore)
        while True:
            try:
                store.beat()
                failed = store.fail_orphaned()
                if failed:
                    log.warning("%d job(s) of a service that stopped were failed", failed)
            except Exception as exc:  # noqa: BLE001 - Redis is away; /readyz says so
                log.debug("cannot renew this node's liveness: %s", exc)
            await asyncio.sleep(NODE_BEAT)

    def tenant(self, request: Request) -> str | Response:
        """The caller's tenant, or the 401 answer."""
        tokens = self.settings.tokens
        if tokens is None:
            return ANONYMOUS
        creds = basic_credentials(request.headers.get("authorization"))
        if creds is None or not tokens.check(*creds):
            return views.error(
                401,
                "authentication_error",
                "missing or invalid credentials: use HTTP Basic with API_KEY:API_SECRET",
                headers={"WWW-Authenticate": 'Basic realm="previewer"'},
            )
        return creds[0]


def wait_param(request: Request) -> float | Response:
    """The ``?wait=`` seconds, or the 400 answer."""
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_WAIT:
        return views.error(
            400,
            "invalid_request",
            f"wait must be a number of seconds from 0 to {MAX_WAIT:g}",
            fields={"wait": [f"from 0 to {MAX_WAIT:g}"]},
        )
    return value


async def answer(svc: Service, row: JobRow, status: int) -> Response:
    """The job object with its Location."""
    headers = {"Location": f"{row.base_url.rstrip('/')}/v2/previews/{row.id}/"}
    return JSONResponse(
        views.job_object(row, svc.signer, svc.files.link), status_code=status, headers=headers
    )
