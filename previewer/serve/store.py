"""Job state in SQLite (``jobs.sqlite3`` in the state directory) and each job's files.

A job's files live in ``<storage>/jobs/<id>/`` (``input/`` and ``out/``; the state directory
is the storage directory unless ``--state`` is given, and with S3 storage these are the job's
working files, see :mod:`previewer.serve.storage`); the row holds the
request options, the outcome and the webhook state as JSON. Rows never hold a server path, a
credential or a source URL: only file names relative to the job's directory. All calls come
from the event loop's thread; each is a short local transaction.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["JobRow", "JobStore", "Store", "row_dict"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    idem TEXT,
    base_url TEXT NOT NULL,
    request TEXT NOT NULL,
    result TEXT,
    error TEXT,
    callback TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs (tenant, idem) WHERE idem IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires);
"""


@dataclass
class JobRow:
    """One job as stored.

    Attributes:
        id: The job id.
        tenant: The API key that created it (empty without tokens).
        status: ``pending``, ``success`` or ``failure``.
        created: Unix time of creation.
        expires: Unix time after which the sweeper removes it.
        base_url: The service's URL as the creating request saw it (for result URLs).
        request: The options asked for (sizes, pages, format, metadata, data, callback_url).
        result: On success: thumbnails (file names, sizes) and the original file's facts.
        error: On failure: ``{"code", "message"}``.
        callback: The webhook delivery state.
        idem: The Idempotency-Key, if any.
    """

    id: str
    tenant: str
    status: str
    created: float
    expires: float
    base_url: str
    request: dict[str, Any]
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    callback: dict[str, Any] | None = None
    idem: str | None = None


class JobStore(Protocol):
    """What the service needs of a job store (:class:`Store`, or the Redis one)."""

    root: Path

    def job_dir(self, job_id: str) -> Path:
        """The directory of a job's files."""

    def insert(self, row: JobRow) -> JobRow:
        """Store a new job, or return the tenant's job with the same Idempotency-Key."""

    def by_idempotency_key(self, tenant: str, key: str | None) -> JobRow | None:
        """The tenant's job created with ``key``, if any."""

    def get(self, job_id: str, tenant: str | None = None) -> JobRow | None:
        """The job (only the tenant's own, when ``tenant`` is given)."""

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Record a job's outcome; False when the job no longer exists."""

    def set_callback(self, job_id: str, state: dict[str, Any]) -> None:
        """Record the webhook delivery state."""

    def delete(self, job_id: str) -> None:
        """Remove a job's state and files."""

    def expired(self, now: float | None = None) -> list[str]:
        """Ids of jobs whose files are due for removal."""

    def fail(self, job_ids: list[str], message: str) -> None:
        """Fail these jobs if still pending (the service stops before they finish)."""

    def fail_unfinished(self, message: str) -> int:
        """Fail what an earlier run of this service left pending; return how many."""

    def orphan_dirs(self) -> list[Path]:
        """Job directories without a job."""

    def writable(self) -> bool:
        """Whether the store and the storage directory accept writes."""

    def close(self) -> None:
        """Release connections."""


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def row_dict(row: JobRow) -> dict[str, Any]:
    """A row as a JSON-serialisable dict."""
    return dict(row.__dict__)


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class Store:
    """The jobs database and files under ``root``.

    Args:
        root: The state directory: the database (created if missing).
        files: The directory whose ``jobs/`` holds the job files (default: ``root``).
    """

    def __init__(self, root: Path, files: Path | None = None) -> None:
        self.root = root
        self.jobs_dir = (files or root) / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = sqlite3.connect(root / "jobs.sqlite3", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL syncs at checkpoints instead of every commit: a crash of the service
        # loses nothing, a power cut at most the last jobs' updates (their jobs then fail as
        # interrupted); every commit's fsync would otherwise stall the event loop.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def job_dir(self, job_id: str) -> Path:
        """The directory of a job's files."""
        return self.jobs_dir / job_id

    def insert(self, row: JobRow) -> JobRow:
        """Store a new job; with an Idempotency-Key already used by the tenant, return that job.

        Args:
            row: The new job.

        Returns:
            ``row``, or the existing job with the same tenant and key.
        """
        try:
            self.db.execute(
                "INSERT INTO jobs (id, tenant, status, created, expires, idem, base_url, request)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.id,
                    row.tenant,
                    row.status,
                    row.created,
                    row.expires,
                    row.idem,
                    row.base_url,
                    _dump(row.request),
                ),
            )
        except sqlite3.IntegrityError:
            existing = self.by_idempotency_key(row.tenant, row.idem)
            if existing is None:
                raise
            return existing
        return row

    def by_idempotency_key(self, tenant: str, key: str | None) -> JobRow | None:
        """The tenant's job created with ``key``, if any."""
        if key is None:
            return None
        cur = self.db.execute("SELECT * FROM jobs WHERE tenant = ? AND idem = ?", (tenant, key))
        return self._row(cur.fetchone())

    def get(self, job_id: str, tenant: str | None = None) -> JobRow | None:
        """The job ``job_id`` (only the tenant's own, when ``tenant`` is given)."""
        cur = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,))
        row = self._row(cur.fetchone())
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return row

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Record a job's outcome.

        Returns:
            False when the job no longer exists (deleted meanwhile).
        """
        cur = self.db.execute(
            "UPDATE jobs SET status = ?, result = ?, error = ? WHERE id = ?",
            (status, _dump(result), _dump(error), job_id),
        )
        return cur.rowcount > 0

    def set_callback(self, job_id: str, state: dict[str, Any]) -> None:
        """Record the webhook delivery state."""
        self.db.execute("UPDATE jobs SET callback = ? WHERE id = ?", (_dump(state), job_id))

    def delete(self, job_id: str) -> None:
        """Remove a job's row and files."""
        self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def expired(self, now: float | None = None) -> list[str]:
        """Ids of finished jobs past their expiry."""
        cur = self.db.execute(
            "SELECT id FROM jobs WHERE expires < ? AND status != 'pending'",
            (time.time() if now is None else now,),
        )
        return [r[0] for r in cur.fetchall()]

    def fail(self, job_ids: list[str], message: str) -> None:
        """Fail these jobs if still pending."""
        error = _dump({"code": "Interrupted", "message": message})
        self.db.executemany(
            "UPDATE jobs SET status = 'failure', error = ? WHERE id = ? AND status = 'pending'",
            [(error, job_id) for job_id in job_ids],
        )

    def fail_unfinished(self, message: str) -> int:
        """Fail the jobs a previous run left pending.

        Returns:
            How many.
        """
        error = _dump({"code": "Interrupted", "message": message})
        cur = self.db.execute(
            "UPDATE jobs SET status = 'failure', error = ? WHERE status = 'pending'", (error,)
        )
        return cur.rowcount

    def orphan_dirs(self) -> list[Path]:
        """Job directories without a row (left by a crash between the two)."""
        ids = {r[0] for r in self.db.execute("SELECT id FROM jobs")}
        return [p for p in self.jobs_dir.iterdir() if p.name not in ids]

    def writable(self) -> bool:
        """Whether the storage accepts a write (for readiness)."""
        try:
            for folder in dict.fromkeys((self.root, self.jobs_dir.parent)):
                probe = folder / ".ready-probe"
                probe.write_bytes(b"ok")
                probe.unlink()
            self.db.execute("SELECT 1").fetchone()
        except (OSError, sqlite3.Error):
            return False
        return True

    @staticmethod
    def _row(r: Any) -> JobRow | None:
        if r is None:
            return None
        return JobRow(
            id=r[0],
            tenant=r[1],
            status=r[2],
            created=r[3],
            expires=r[4],
            idem=r[5],
            base_url=r[6],
            request=_load(r[7]),
            result=_load(r[8]),
            error=_load(r[9]),
            callback=_load(r[10]),
        )
