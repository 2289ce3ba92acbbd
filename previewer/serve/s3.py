"""Job files in an S3-compatible bucket (``previewer serve --storage s3://...``).

After a job, its input and previews are uploaded from the job's working directory to
``<prefix>jobs/<id>/input/<name>`` and ``<prefix>jobs/<id>/out/<name>``, then the working
directory is removed. Each object is one PUT, so it appears only complete, and the job is
recorded as a success only once every preview is there. Result URLs are presigned GET URLs
(SigV4, ``X-Amz-Expires``) valid until the job expires. Credentials come from boto3's chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles), never from the URL;
messages never carry them, nor a local path. boto3 is imported only here, when s3:// is used.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.responses import Response

from previewer.serve.storage import Outcome, S3Location, StorageError

__all__ = ["MAX_LINK_SECONDS", "S3Files"]

log = logging.getLogger(__name__)

MAX_LINK_SECONDS = 7 * 86400
"""Longest lifetime of a presigned URL (SigV4's limit)."""

_JOB_ID = re.compile(r"^[0-9a-f-]{36}$")
_CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


def _reason(exc: BaseException) -> str:
    """What went wrong, for clients: no credentials, local paths or endpoint URLs."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.get("Code") or "an error"
        return f"the bucket answered {code}" + (f" (HTTP {status})" if status else "")
    if isinstance(exc, ReadTimeoutError):
        return "the endpoint did not answer in time"
    if isinstance(exc, ConnectionError):
        return "cannot connect to the endpoint"
    if isinstance(exc, NoCredentialsError):
        return "no credentials"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def _detail(exc: BaseException) -> str:
    """What went wrong, for the log: botocore's message (endpoint and key, no credentials)."""
    from botocore.exceptions import BotoCoreError

    return str(exc) if isinstance(exc, BotoCoreError) else _reason(exc)


class S3Files:
    """A job's files in a bucket.

    Args:
        location: The bucket, prefix and endpoint.
        timeout: Seconds to connect and to wait for an answer.

    Raises:
        StorageError: If boto3 is missing or no credentials are configured.
    """

    def __init__(self, location: S3Location, *, timeout: float = 10.0) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise StorageError("s3:// storage needs boto3: pip install 'previewer[s3]'") from None
        self.location = location
        self.where = str(location)
        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise StorageError(
                "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE, or any source boto3 reads)"
            )
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": location.addressing},
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        self.client: Any = session.client(
            "s3",
            endpoint_url=location.endpoint,
            region_name=location.region,
            config=config,
        )

    def _errors(self) -> tuple[type[BaseException], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError, OSError)

    def keep(self, job_id: str, job_dir: Path, outcome: Outcome) -> Outcome:
        """Upload the job's input and previews, then remove its working directory.

        Args:
            job_id: The job.
            job_dir: Its working directory.
            outcome: The conversion's outcome.

        Returns:
            ``outcome``; a ``StorageError`` failure when a successful job's files could not be
            uploaded (what was uploaded is removed again).
        """
        status, payload = outcome
        prefix = self.location.job_prefix(job_id)
        uploads: list[tuple[Path, str, str]] = [
            (p, f"{prefix}input/{p.name}", "application/octet-stream")
            for p in sorted((job_dir / "input").glob("*"))
            if p.is_file()
        ]
        if status == "success":
            for thumb in payload["thumbnails"]:
                name = thumb["file"]
                kind = _CONTENT_TYPES.get(name.rpartition(".")[2].lower(), "image/png")
                uploads.append((job_dir / "out" / name, f"{prefix}out/{name}", kind))
        try:
            for path, key, kind in uploads:
                with path.open("rb") as body:
                    self.client.put_object(
                        Bucket=self.location.bucket, Key=key, Body=body, ContentType=kind
                    )
        except self._errors() as exc:
            reason = _reason(exc)
            log.warning("job %s: storing its files in the bucket failed: %s", job_id, _detail(exc))
            try:
                self.remove(job_id)
            except StorageError:
                pass  # the sweeper removes what is left once the job has expired
            if status == "success":
                return "failure", {
                    "code": "StorageError",
                    "message": f"the previews could not be stored: {reason}",
                }
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
        return outcome

    def _keys(self, prefix: str) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=prefix
        )
        for page in pages:
            objects.extend(page.get("Contents", []))
        return objects

    def remove(self, job_id: str) -> None:
        """Delete the job's objects.

        Raises:
            StorageError: If the bucket cannot be listed or an object not deleted.
        """
        try:
            keys = [o["Key"] for o in self._keys(self.location.job_prefix(job_id))]
            for start in range(0, len(keys), 1000):
                answer = self.client.delete_objects(
                    Bucket=self.location.bucket,
                    Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]},
                )
                if answer.get("Errors"):
                    raise StorageError(
                        f"the bucket refused to delete {len(answer['Errors'])} object(s) of "
                        f"job {job_id}"
                    )
        except self._errors() as exc:
            raise StorageError(f"cannot delete the files of job {job_id}: {_reason(exc)}") from None

    def link(self, job_id: str, name: str, expires: float) -> str:
        """A presigned GET URL of a preview, valid until ``expires`` (at most 7 days)."""
        seconds = max(1, min(MAX_LINK_SECONDS, int(expires - time.time())))
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.location.bucket,
                "Key": f"{self.location.job_prefix(job_id)}out/{name}",
            },
            ExpiresIn=seconds,
        )
        return url

    def response(
        self, job_id: str, job_dir: Path, name: str, media_type: str, headers: Mapping[str, str]
    ) -> Response | None:
        """A preview read from the bucket; None when it is not there.

        Raises:
            StorageError: If the bucket cannot be read.
        """
        from botocore.exceptions import ClientError

        key = f"{self.location.job_prefix(job_id)}out/{name}"
        try:
            answer = self.client.get_object(Bucket=self.location.bucket, Key=key)
            body = answer["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise StorageError(f"cannot read a preview: {_reason(exc)}") from None
        except self._errors() as exc:
            raise StorageError(f"cannot read a preview: {_reason(exc)}") from None
        return Response(body, media_type=media_type, headers=dict(headers))

    def check(self) -> dict[str, str | None]:
        """``{"bucket": None}`` when the bucket answers HEAD, else the problem."""
        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except self._errors() as exc:
            return {"bucket": f"cannot reach bucket {self.location.bucket}: {_reason(exc)}"}
        return {"bucket": None}

    def stale(self, before: float) -> list[str]:
        """Ids of jobs whose objects were all last written before ``before``.

        Raises:
            StorageError: If the bucket cannot be listed.
        """
        newest: dict[str, float] = {}
        root = f"{self.location.prefix}jobs/"
        try:
            objects = self._keys(root)
        except self._errors() as exc:
            raise StorageError(f"cannot list the bucket: {_reason(exc)}") from None
        for obj in objects:
            job_id = obj["Key"][len(root) :].partition("/")[0]
            stamp = obj["LastModified"].timestamp()
            newest[job_id] = max(stamp, newest.get(job_id, 0.0))
        return sorted(j for j, t in newest.items() if t < before and _JOB_ID.match(j))
