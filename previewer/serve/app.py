"""The ASGI app of ``previewer serve``: routes, the read handlers, lifespan.

Routes: the FilePreviews v2 API (``/v2/previews/``, ``/v2/previews/{id}/``,
``/v2/converters/``), signed result files (``/v2/files/{id}/{name}``), ``/healthz``,
``/readyz`` and ``/metrics``. Build it with :func:`create_app` from :class:`Settings`; creating
a job is :mod:`previewer.serve.create`, the shared state :mod:`previewer.serve.service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from previewer.serve import pooled, views, work
from previewer.serve.create import create_preview
from previewer.serve.middleware import Observe
from previewer.serve.page import page_routes
from previewer.serve.service import (
    FORM_SLACK,
    ID_PATTERN,
    MAX_WAIT,
    Service,
    Settings,
    wait_param,
)
from previewer.serve.signing import SignatureError
from previewer.serve.storage import StorageError
from previewer.serve.store import JobRow

__all__ = ["MAX_WAIT", "Settings", "create_app"]

log = logging.getLogger("previewer.serve")


def _own_job(svc: Service, request: Request, tenant: str) -> JobRow | None:
    job_id = request.path_params["job_id"]
    return svc.store.get(job_id, tenant) if ID_PATTERN.match(job_id) else None


def _not_found() -> Response:
    return views.error(404, "not_found", "no such preview")


def _unavailable(exc: StorageError) -> Response:
    return views.error(503, "storage_unavailable", str(exc))


async def _file(svc: Service, job_id: str, name: str, headers: dict[str, str]) -> Response:
    """A result file from the storage; 404 when it is gone, 503 when the storage fails."""
    try:
        response = await run_in_threadpool(
            svc.files.response,
            job_id,
            svc.store.job_dir(job_id),
            name,
            _media_type(name),
            headers,
        )
    except StorageError as exc:
        return _unavailable(exc)
    return response if response is not None else _not_found()


async def preview(request: Request) -> Response:
    svc: Service = request.app.state.service
    tenant = svc.tenant(request)
    if isinstance(tenant, Response):
        return tenant
    row = _own_job(svc, request, tenant)
    if row is None:
        return _not_found()
    if request.method == "DELETE":
        try:
            await svc.delete(row.id)
        except StorageError as exc:
            return _unavailable(exc)
        return Response(status_code=204)
    wait = wait_param(request)
    if isinstance(wait, Response):
        return wait
    if row.status == "pending" and wait > 0:
        await svc.runner.wait(row.id, wait)
        row = svc.store.get(row.id) or row
    accept = request.headers.get("accept", "")
    if accept.startswith("image/") and "application/json" not in accept:
        if row.status != "success" or not row.result or not row.result["thumbnails"]:
            return views.error(409, "not_ready", f"the preview is not available ({row.status})")
        first = row.result["thumbnails"][0]["file"]
        return await _file(svc, row.id, first, {})
    return JSONResponse(views.job_object(row, svc.signer, svc.files.link))


def _media_type(name: str) -> str:
    """The MIME type of a preview file, from the suffix previewer gave it."""
    suffix = name.rpartition(".")[2].lower()
    return {"jpg": "image/jpeg", "webp": "image/webp"}.get(suffix, "image/png")


async def result_file(request: Request) -> Response:
    svc: Service = request.app.state.service
    try:
        svc.signer.verify(request.url.path, request.query_params)
    except SignatureError as exc:
        return views.error(403, "forbidden", str(exc))
    job_id, name = request.path_params["job_id"], request.path_params["name"]
    row = svc.store.get(job_id) if ID_PATTERN.match(job_id) else None
    files = {t["file"] for t in (row.result or {}).get("thumbnails", [])} if row else set()
    if row is None or name not in files:
        return _not_found()
    return await _file(svc, job_id, name, {"Cache-Control": "private, max-age=3600"})


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
    details: dict[str, str] = {}
    for name, problem in (await run_in_threadpool(svc.files.check)).items():
        checks[name] = problem is None
        if problem is not None:
            details[name] = problem
    body: dict[str, object] = {}
    if svc.watch is not None:  # broker mode: Redis answers, and so does a queue worker
        checks["broker"] = svc.watch.broker_error is None and checks["storage"]
        checks["workers"] = svc.watch.answering()
        body["queue"] = svc.watch.details()
    if details:
        body["details"] = details
    ok = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks, **body},
        status_code=200 if ok else 503,
    )


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """A 503 for a request that needed the job store (Redis) while it is unreachable."""
    log.warning("job store unreachable: %s", exc)
    return views.error(
        503,
        "unavailable",
        "the job store (Redis) cannot be reached right now; retry later",
        headers={"Retry-After": "5"},
    )


async def metrics(request: Request) -> Response:
    svc: Service = request.app.state.service
    from prometheus_client import CONTENT_TYPE_LATEST

    if svc.watch is not None:
        svc.metrics.workers.set(svc.watch.workers)
    # In a thread: with queue workers, rendering asks Redis for the classes' queue depths.
    body = await run_in_threadpool(svc.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


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
        await run_in_threadpool(work.start_fork_server)  # warm children for every job
        svc.runner.start()
        sweeper = asyncio.create_task(svc.sweep())
        if svc.watch is not None:
            svc.watch.start()
            svc.spawn(svc.keep_alive())

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
            if svc.watch is not None:
                await run_in_threadpool(svc.watch.stop)
            await run_in_threadpool(pooled.close_pools)
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
        *page_routes(),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return views.error(exc.status_code, code, str(exc.detail))

    handlers: dict[Any, Any] = {HTTPException: http_error}
    if settings.broker is not None:
        import redis

        handlers[redis.RedisError] = store_unavailable
    app = Starlette(
        routes=routes,
        exception_handlers=handlers,
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
