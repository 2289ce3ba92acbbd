"""The ASGI app of ``previewer serve``: routes, authentication, uploads, lifespan.

Routes: the FilePreviews v2 API (``/v2/previews/``, ``/v2/previews/{id}/``,
``/v2/converters/``), signed result files (``/v2/files/{id}/{name}``), ``/healthz``,
``/readyz`` and ``/metrics``. Build it with :func:`create_app` from :class:`Settings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from previewer.budgets import Limits
from previewer.serve import params, views
from previewer.serve.auth import ANONYMOUS, Tokens, basic_credentials
from previewer.serve.fetch import FetchError, fetch_url
from previewer.serve.metrics import Metrics
from previewer.serve.middleware import BodyTooLargeError, Observe
from previewer.serve.netguard import NetPolicy
from previewer.serve.runner import Runner, Task
from previewer.serve.signing import SignatureError, Signer
from previewer.serve.store import JobRow, JobStore, Store
from previewer.serve.webhooks import WebhookSecrets, deliver
from previewer.serve.work import safe_name

__all__ = ["MAX_WAIT", "Settings", "create_app"]

log = logging.getLogger("previewer.serve")

MAX_WAIT = 30.0
"""Longest ``?wait=`` accepted, in seconds."""

FORM_SLACK = 1024 * 1024
"""Bytes a request body may carry beyond the file: form fields and multipart framing."""

_ID = re.compile(r"^[0-9a-f-]{36}$")


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
        self.runner = Runner(
            self.store,
            settings.limits,
            jobs=settings.jobs,
            queue_size=settings.queue_size,
            on_done=self.job_done,
            broker=settings.broker,
        )
        self.metrics = Metrics(lambda: self.runner.waiting, lambda: self.runner.running)
        self.background: set[asyncio.Task[Any]] = set()
        self.converters: list[dict[str, Any]] | None = None

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def job_done(self, job_id: str, status: str, converter: str, seconds: float) -> None:
        self.metrics.job_seconds.labels(converter or "none", status).observe(seconds)
        row = self.store.get(job_id)
        if row is not None and row.request.get("callback_url"):
            self.spawn(self.callback(row))

    async def callback(self, row: JobRow) -> None:
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
        period = max(1.0, min(60.0, self.settings.ttl / 4))
        while True:
            for job_id in self.store.expired():
                self.store.delete(job_id)
            await asyncio.sleep(period)

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


def _wait_param(request: Request) -> float | Response:
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


def _disposition_name(header: str | None) -> str | None:
    if not header:
        return None
    match = re.search(r'filename="?([^";]+)"?', header)
    if not match:
        return None
    name = PurePosixPath(match.group(1).replace("\\", "/")).name
    return name if name not in ("", ".", "..") else None


def _copy_upload(upload: UploadFile, dest: Path, limit: int) -> int:
    size = 0
    upload.file.seek(0)
    with dest.open("wb") as out:
        while chunk := upload.file.read(1024 * 1024):
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError
            out.write(chunk)
    return size


async def _answer(svc: Service, row: JobRow, status: int) -> Response:
    headers = {"Location": f"{row.base_url.rstrip('/')}/v2/previews/{row.id}/"}
    return JSONResponse(views.job_object(row, svc.signer), status_code=status, headers=headers)


def _too_large(limit: int) -> Response:
    return views.error(413, "too_large", f"the file is larger than the limit of {limit} bytes")


async def create_preview(request: Request) -> Response:
    svc: Service = request.app.state.service
    tenant = svc.tenant(request)
    if isinstance(tenant, Response):
        return tenant
    wait = _wait_param(request)
    if isinstance(wait, Response):
        return wait
    idem = request.headers.get("idempotency-key")
    if idem is not None and (existing := svc.store.by_idempotency_key(tenant, idem)):
        return await _answer(svc, existing, 200 if existing.status != "pending" else 201)
    limit = svc.settings.limits.max_file_size
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length")
    allowed = {"multipart/form-data": limit + FORM_SLACK, "application/json": FORM_SLACK}.get(
        ctype, limit
    )
    if length is not None and length.isdigit() and int(length) > allowed:
        return _too_large(limit)
    if not svc.runner.reserve():
        retry = svc.runner.retry_after()
        return views.error(
            429,
            "rate_limited",
            f"too many jobs in flight; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )
    job_id = str(uuid.uuid4())
    job_dir = svc.store.job_dir(job_id)
    submitted = False
    try:
        (job_dir / "input").mkdir(parents=True)
        (job_dir / "out").mkdir()
        source: Path | None = None
        name = ""
        if ctype == "application/json":
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > FORM_SLACK:
                    return views.error(
                        413, "too_large", f"a JSON body is at most {FORM_SLACK} bytes"
                    )
            try:
                data = json.loads(body)
            except ValueError:
                return views.error(400, "invalid_request", "the body is not valid JSON")
            if not isinstance(data, dict):
                return views.error(400, "invalid_request", "the body must be a JSON object")
            req, errors = params.parse(data, upload=False)
            if not errors and req.url is not None:
                try:
                    fetched = await fetch_url(req.url, job_dir / "input", svc.settings.policy)
                except FetchError as exc:
                    return views.error(exc.status, "fetch_failed", str(exc))
                name = fetched.filename
                source = fetched.path.rename(job_dir / "input" / safe_name(name))
        elif ctype == "multipart/form-data":
            form = await request.form(max_files=1, max_part_size=FORM_SLACK)
            upload = form.get("file")
            fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
            data, errors = params.from_multi(fields)
            req, more = params.parse(data, upload=True)
            errors.update(more)
            if not isinstance(upload, UploadFile):
                errors.setdefault("file", []).append("required: the file to preview")
            elif not errors:
                name = PurePosixPath((upload.filename or "upload").replace("\\", "/")).name
                source = job_dir / "input" / safe_name(name or "upload")
                await run_in_threadpool(_copy_upload, upload, source, limit)
            await form.close()
        else:
            data, errors = params.from_multi(list(request.query_params.multi_items()))
            name = _disposition_name(request.headers.get("content-disposition")) or "upload"
            req, more = params.parse(data, upload=True)
            errors.update(more)
            if not errors:
                source = job_dir / "input" / safe_name(name)
                size = 0
                with source.open("wb") as out:
                    async for chunk in request.stream():
                        size += len(chunk)
                        if size > limit:
                            raise BodyTooLargeError
                        out.write(chunk)
                if size == 0:
                    errors["file"] = ["the body is empty: send the file, or JSON with a url"]
        if errors:
            return views.error(
                400, "invalid_request", "the request has invalid fields", fields=errors
            )
        assert source is not None  # every branch without errors has its file
        now = time.time()
        row = JobRow(
            id=job_id,
            tenant=tenant,
            status="pending",
            created=now,
            expires=now + svc.settings.ttl,
            base_url=str(request.base_url),
            request=req.stored(),
            idem=idem,
        )
        stored = svc.store.insert(row)
        if stored.id != job_id:  # the same Idempotency-Key raced in
            return await _answer(svc, stored, 200 if stored.status != "pending" else 201)
        svc.runner.submit(
            Task(job_id, req.sizes, req.pages, req.metadata, source=source, name=name)
        )
        submitted = True
    except BodyTooLargeError:
        return _too_large(limit)
    except ClientDisconnect:
        return Response(status_code=400)
    finally:
        if not submitted:
            svc.runner.release()
            shutil.rmtree(job_dir, ignore_errors=True)
    if wait > 0 and await svc.runner.wait(job_id, wait):
        return await _answer(svc, svc.store.get(job_id) or row, 200)
    return await _answer(svc, svc.store.get(job_id) or row, 201)


def _own_job(svc: Service, request: Request, tenant: str) -> JobRow | None:
    job_id = request.path_params["job_id"]
    return svc.store.get(job_id, tenant) if _ID.match(job_id) else None


def _not_found() -> Response:
    return views.error(404, "not_found", "no such preview")


async def preview(request: Request) -> Response:
    svc: Service = request.app.state.service
    tenant = svc.tenant(request)
    if isinstance(tenant, Response):
        return tenant
    row = _own_job(svc, request, tenant)
    if row is None:
        return _not_found()
    if request.method == "DELETE":
        svc.store.delete(row.id)
        return Response(status_code=204)
    wait = _wait_param(request)
    if isinstance(wait, Response):
        return wait
    if row.status == "pending" and wait > 0:
        await svc.runner.wait(row.id, wait)
        row = svc.store.get(row.id) or row
    accept = request.headers.get("accept", "")
    if "image/png" in accept and "application/json" not in accept:
        if row.status != "success" or not row.result or not row.result["thumbnails"]:
            return views.error(409, "not_ready", f"the preview is not available ({row.status})")
        first = row.result["thumbnails"][0]["file"]
        return FileResponse(svc.store.job_dir(row.id) / "out" / first, media_type="image/png")
    return JSONResponse(views.job_object(row, svc.signer))


async def result_file(request: Request) -> Response:
    svc: Service = request.app.state.service
    try:
        svc.signer.verify(request.url.path, request.query_params)
    except SignatureError as exc:
        return views.error(403, "forbidden", str(exc))
    job_id, name = request.path_params["job_id"], request.path_params["name"]
    row = svc.store.get(job_id) if _ID.match(job_id) else None
    files = {t["file"] for t in (row.result or {}).get("thumbnails", [])} if row else set()
    if row is None or name not in files:
        return _not_found()
    return FileResponse(
        svc.store.job_dir(job_id) / "out" / name,
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=3600"},
    )


async def converters(request: Request) -> Response:
    svc: Service = request.app.state.service
    tenant = svc.tenant(request)
    if isinstance(tenant, Response):
        return tenant
    if svc.converters is None:
        from previewer import api

        infos = await run_in_threadpool(api.list_converters)
        svc.converters = [c.to_dict() for c in infos]
    return JSONResponse({"converters": svc.converters})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc: Service = request.app.state.service
    checks = {
        "storage": svc.store.writable(),
        "pool": svc.runner.pool_alive() and svc.runner.accepting,
        "engines": bool(svc.converters) and any(c["available"] for c in svc.converters or []),
    }
    ok = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


async def metrics(request: Request) -> Response:
    svc: Service = request.app.state.service
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings) -> Starlette:
    """Build the service's ASGI app.

    Args:
        settings: The configuration.

    Returns:
        The app; its lifespan starts the workers and the sweeper, and drains on shutdown.
    """
    svc = Service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from previewer import api

        failed = svc.store.fail_unfinished("the service stopped before the job finished")
        if failed:
            log.warning("%d job(s) left unfinished by an earlier run were failed", failed)
        for orphan in svc.store.orphan_dirs():
            shutil.rmtree(orphan, ignore_errors=True)
        svc.runner.start()
        sweeper = asyncio.create_task(svc.sweep())

        async def probe() -> None:  # readiness waits for it; serving does not
            infos = await run_in_threadpool(api.list_converters)
            svc.converters = [c.to_dict() for c in infos]

        svc.spawn(probe())
        try:
            yield
        finally:
            log.info("draining: %s", svc.runner.info())
            await svc.runner.drain(settings.grace)
            pending = [t for t in svc.background if not t.done()]
            if pending:  # webhooks under way get a moment; the sweeper is cancelled
                await asyncio.wait(pending, timeout=5)
            for task in [*svc.background, sweeper]:
                task.cancel()
            await run_in_threadpool(api.shutdown)
            svc.store.close()
            log.info("stopped")

    routes = [
        Route("/v2/previews/", create_preview, methods=["POST"]),
        Route("/v2/previews", create_preview, methods=["POST"]),
        Route("/v2/previews/{job_id}/", preview, methods=["GET", "DELETE"]),
        Route("/v2/previews/{job_id}", preview, methods=["GET", "DELETE"]),
        Route("/v2/converters/", converters, methods=["GET"]),
        Route("/v2/files/{job_id}/{name}", result_file, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return views.error(exc.status_code, code, str(exc.detail))

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
        middleware=[
            Middleware(
                Observe,
                metrics=svc.metrics,
                max_body=settings.limits.max_file_size + FORM_SLACK,
            )
        ],
    )
    app.state.service = svc
    return app
