"""``POST /v2/previews/``: admission, the body (JSON with a URL, multipart, raw), the job."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from pathlib import Path, PurePosixPath

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from previewer.serve import params, views
from previewer.serve.fetch import FetchError, fetch_url
from previewer.serve.middleware import BodyTooLargeError
from previewer.serve.runner import Task
from previewer.serve.service import FORM_SLACK, Service, answer, wait_param
from previewer.serve.store import JobRow
from previewer.serve.work import safe_name

__all__ = ["create_preview"]


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


def _too_large(limit: int) -> Response:
    return views.error(413, "too_large", f"the file is larger than the limit of {limit} bytes")


async def create_preview(request: Request) -> Response:
    """Create a job (see the README's "HTTP service")."""
    svc: Service = request.app.state.service
    tenant = svc.tenant(request)
    if isinstance(tenant, Response):
        return tenant
    wait = wait_param(request)
    if isinstance(wait, Response):
        return wait
    idem = request.headers.get("idempotency-key")
    if idem is not None and (existing := svc.store.by_idempotency_key(tenant, idem)):
        return await answer(svc, existing, 200 if existing.status != "pending" else 201)
    limit = svc.settings.limits.max_file_size
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length")
    allowed = {"multipart/form-data": limit + FORM_SLACK, "application/json": FORM_SLACK}.get(
        ctype, limit
    )
    if length is not None and length.isdigit() and int(length) > allowed:
        return _too_large(limit)
    if not svc.runner.reserve(tenant):
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
        job_dir.mkdir()  # its parent exists: one call each, no failed attempt first
        (job_dir / "input").mkdir()
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
            return await answer(svc, stored, 200 if stored.status != "pending" else 201)
        svc.runner.submit(
            Task(
                job_id,
                req.sizes,
                req.pages,
                req.metadata,
                source=source,
                name=name,
                format=req.format,
                tenant=tenant,
            )
        )
        submitted = True
    except BodyTooLargeError:
        return _too_large(limit)
    except ClientDisconnect:
        return Response(status_code=400)
    finally:
        if not submitted:
            svc.runner.release(tenant)
            shutil.rmtree(job_dir, ignore_errors=True)
    if wait > 0:
        # Finished within ``wait``: 200 with the result; still pending: 202 Accepted (the
        # preview exists; poll its Location). Without ``wait``: 201 Created, as FilePreviews.
        finished = await svc.runner.wait(job_id, wait)
        return await answer(svc, svc.store.get(job_id) or row, 200 if finished else 202)
    return await answer(svc, svc.store.get(job_id) or row, 201)
