"""Where a job's files are kept: the local storage directory, or an S3-compatible bucket.

A conversion always works on local files, in the job's working directory
(``<storage>/jobs/<id>/``, ``input/`` and ``out/``). A :class:`Files` decides what happens around
that: :class:`LocalFiles` keeps the working directory as the job's files (today's layout, served
by the API under HMAC-signed URLs); :class:`previewer.serve.s3.S3Files` uploads the input and the
previews to a bucket after the job, removes the working directory and links presigned URLs.
This module also parses ``s3://`` storage URLs (:func:`parse_s3_url`), without importing boto3.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from starlette.responses import FileResponse, Response

__all__ = [
    "Files",
    "LocalFiles",
    "Outcome",
    "S3Location",
    "StorageError",
    "parse_s3_url",
]

Outcome = tuple[str, dict[str, Any]]
"""``("success", result)`` or ``("failure", error)`` (see :mod:`previewer.serve.work`)."""

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_QUERY_KEYS = ("endpoint", "region", "addressing")


class StorageError(Exception):
    """The job files' storage failed or is misconfigured.

    The message is safe to show and log: it never holds a credential or a local path.
    """


@dataclass(frozen=True)
class S3Location:
    """A bucket and key prefix, and how to reach them (no credentials).

    Attributes:
        bucket: The bucket name.
        prefix: The key prefix, empty or ending with ``/``.
        endpoint: The S3-compatible endpoint URL (None: AWS, by region).
        region: The region (None: boto3's configuration).
        addressing: ``path``, ``virtual`` or ``auto`` (bucket in the path or in the host).
    """

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    addressing: str = "auto"

    def __str__(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def job_prefix(self, job_id: str) -> str:
        """The key prefix of a job's objects (``<prefix>jobs/<id>/``)."""
        return f"{self.prefix}jobs/{job_id}/"


def parse_s3_url(url: str) -> S3Location:
    """Parse ``s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME&addressing=path]``.

    Args:
        url: The ``--storage`` value.

    Returns:
        The location.

    Raises:
        ValueError: If malformed, or if it carries credentials (the message never repeats them).
    """
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError("an S3 storage URL starts with s3://")
    if "@" in parts.netloc:
        raise ValueError(
            "credentials do not belong in the storage URL: remove them and give them as "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile, or any source boto3 "
            "reads)"
        )
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        raise ValueError(
            f"{bucket!r} is not a bucket name (3-63 lowercase letters, digits, '.' and '-')"
        )
    prefix = parts.path.strip("/")
    if prefix and any(seg in ("", ".", "..") for seg in prefix.split("/")):
        raise ValueError(f"the key prefix {prefix!r} has an empty, '.' or '..' segment")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise ValueError(
            f"unknown storage URL parameter(s) {', '.join(unknown)}: expected "
            f"{', '.join(_QUERY_KEYS)}"
        )
    values: dict[str, str] = {}
    for key, given in query.items():
        if len(given) != 1 or not given[0]:
            raise ValueError(f"the storage URL parameter {key} needs exactly one value")
        values[key] = given[0]
    endpoint = values.get("endpoint")
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.hostname:
            raise ValueError("endpoint must be an http:// or https:// URL")
        if "@" in ep.netloc:
            raise ValueError(
                "credentials do not belong in the endpoint URL: give them as "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
    addressing = values.get("addressing", "path" if endpoint else "auto")
    if addressing not in ("path", "virtual", "auto"):
        raise ValueError("addressing is path, virtual or auto")
    return S3Location(
        bucket=bucket,
        prefix=f"{prefix}/" if prefix else "",
        endpoint=endpoint,
        region=values.get("region"),
        addressing=addressing,
    )


class Files(Protocol):
    """What the service needs of the job files' storage.

    Attributes:
        where: The storage as the startup log names it (never a credential).
    """

    where: str

    def keep(self, job_id: str, job_dir: Path, outcome: Outcome) -> Outcome:
        """Store a finished job's files (run in a worker thread; never raises).

        Args:
            job_id: The job.
            job_dir: Its working directory (``input/``, ``out/``).
            outcome: The conversion's outcome.

        Returns:
            The outcome to record: ``outcome``, or a failure when the files could not be kept.
        """

    def remove(self, job_id: str) -> None:
        """Remove a job's stored files (blocking; the store removes the working directory).

        Raises:
            StorageError: If they could not be removed.
        """

    def link(self, job_id: str, name: str, expires: float) -> str | None:
        """An absolute URL of a result file valid until ``expires``, or None for the API's own."""

    def response(
        self, job_id: str, job_dir: Path, name: str, media_type: str, headers: Mapping[str, str]
    ) -> Response | None:
        """A result file as a response (blocking), or None when it does not exist.

        Raises:
            StorageError: If the storage cannot be read.
        """

    def check(self) -> dict[str, str | None]:
        """Readiness checks of the storage beyond the local directory: name -> problem or None."""

    def stale(self, before: float) -> list[str]:
        """Ids of jobs with stored files all older than ``before`` (Unix time).

        Raises:
            StorageError: If the storage cannot be listed.
        """


class LocalFiles:
    """The job's working directory is its storage (served by the API, signed URLs).

    Args:
        root: The storage directory.
    """

    def __init__(self, root: Path) -> None:
        self.where = str(root)

    def keep(self, job_id: str, job_dir: Path, outcome: Outcome) -> Outcome:
        """Nothing to do: the files stay where the conversion wrote them."""
        return outcome

    def remove(self, job_id: str) -> None:
        """Nothing to do: the store removes the job's directory."""

    def link(self, job_id: str, name: str, expires: float) -> str | None:
        """None: the API's HMAC-signed ``/v2/files/`` URL."""
        return None

    def response(
        self, job_id: str, job_dir: Path, name: str, media_type: str, headers: Mapping[str, str]
    ) -> Response | None:
        """The file from the job's ``out/``."""
        return FileResponse(job_dir / "out" / name, media_type=media_type, headers=dict(headers))

    def check(self) -> dict[str, str | None]:
        """No checks beyond the store's own."""
        return {}

    def stale(self, before: float) -> list[str]:
        """None: the store's sweep removes local directories."""
        return []
