"""The JSON the API answers: job objects with signed result URLs, and error bodies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse

from previewer.serve.signing import Signer
from previewer.serve.store import JobRow

__all__ = ["error", "file_path", "job_object"]


def file_path(job_id: str, name: str) -> str:
    """The path of one of a job's result files (before signing)."""
    return f"/v2/files/{job_id}/{name}"


Link = Callable[[str, str, float], str | None]
"""``(job id, file name, expiry) -> URL``, or None for the API's own signed URL."""


def job_object(row: JobRow, signer: Signer, link: Link | None = None) -> dict[str, Any]:
    """The FilePreviews job object of ``row``, result URLs signed until the job expires.

    Args:
        row: The job.
        signer: Signs result URLs.
        link: Gives result URLs elsewhere (presigned bucket URLs); the API's signed
            ``/v2/files/`` URL where it gives None.

    Returns:
        ``{"id", "url", "status", "preview", "thumbnails", "original_file", "user_data"}``,
        plus ``converter`` on success, ``queue`` (the cost class, queue and wait) when queue
        workers converted it, ``error`` on failure and ``callback`` when a callback URL was
        given.
    """
    base = row.base_url.rstrip("/")
    obj: dict[str, Any] = {
        "id": row.id,
        "url": f"{base}/v2/previews/{row.id}/",
        "status": row.status,
        "preview": None,
        "thumbnails": None,
        "original_file": None,
        "user_data": row.request.get("data"),
    }
    if row.status == "success" and row.result is not None:
        thumbnails = []
        for t in row.result["thumbnails"]:
            item = {k: v for k, v in t.items() if k != "file"}
            url = link(row.id, t["file"], row.expires) if link is not None else None
            if url is None:
                url = base + signer.sign(file_path(row.id, t["file"]), int(row.expires))
            item["url"] = url
            thumbnails.append(item)
        obj["thumbnails"] = thumbnails
        obj["preview"] = thumbnails[0] if thumbnails else None
        obj["original_file"] = row.result["original_file"]
        obj["converter"] = row.result.get("converter")
        if row.result.get("queue") is not None:
            obj["queue"] = row.result["queue"]
    if row.status == "failure":
        obj["error"] = row.error
    if row.request.get("callback_url"):
        obj["callback"] = row.callback or {
            "state": "pending",
            "attempts": 0,
            "last_status": None,
            "last_error": None,
        }
    return obj


def error(
    status: int,
    code: str,
    message: str,
    *,
    fields: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error answer, shaped as FilePreviews documents it: ``{"error": {...}}``.

    Args:
        status: The HTTP status.
        code: A short machine-readable code (``invalid_request``, ``not_found``...).
        message: What went wrong, for people.
        fields: Errors by request field (400).
        headers: Extra headers (WWW-Authenticate, Retry-After).

    Returns:
        The response.
    """
    body: dict[str, Any] = {"type": code, "code": code, "message": message}
    if fields:
        body["param"] = next(iter(fields))
        body["fields"] = fields
    return JSONResponse({"error": body}, status_code=status, headers=headers)
