"""The service's configuration and state: settings, store, runner, signer, metrics, auth.

Shared by the request handlers (:mod:`previewer.serve.create` and :mod:`previewer.serve.app`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from previewer.budgets import Limits
from previewer.serve import views
from previewer.serve.auth import ANONYMOUS, Tokens, basic_credentials
from previewer.serve.metrics import Metrics
from previewer.serve.netguard import NetPolicy
from previewer.serve.runner import Runner
from previewer.serve.signing import Signer
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


@dataclass
class Settings:
    """What ``previewer serve`` was started with.

    Attributes:
        storage: The storage directory (database and job files).
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
    worker_grace: float = 30.0


class Service:
    """The app's state: store, runner, signer, metrics, background tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: JobStore
        if settings.broker is not None:
            from previewer.serve.redis_store import RedisStore

            self.store = RedisStore(settings.storage, settings.broker)
        else:
            self.store = Store(settings.storage)
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
            abort=self.watch.abort if self.watch is not None else None,
        )
        self.metrics = Metrics(lambda: self.runner.waiting, lambda: self.runner.running)
        self.background: set[asyncio.Task[Any]] = set()
        self.converters: list[dict[str, Any]] | None = None

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

        payload = views.job_object(row, self.signer)
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

    async def sweep(self) -> None:
        """Remove expired jobs and their files, forever (cancelled on shutdown)."""
        period = max(1.0, min(60.0, self.settings.ttl / 4))
        while True:
            try:
                for job_id in self.store.expired():
                    self.store.delete(job_id)
            except Exception as exc:  # noqa: BLE001 - the store is away; try again next time
                log.warning("cannot sweep expired jobs: %s", exc)
            await asyncio.sleep(period)

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
    return JSONResponse(views.job_object(row, svc.signer), status_code=status, headers=headers)
