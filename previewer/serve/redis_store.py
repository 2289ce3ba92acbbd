"""Job state in Redis (``previewer serve --broker``): one key per job, expiring with the job.

Several services may share the Redis and the storage directory. A job is the JSON key
``previewer:serve:job:<id>`` with the job's time to live; an Idempotency-Key is
``previewer:serve:idem:<tenant>:<key>`` (the job id, same lifetime). Redis expires the state by
itself; the sweeper removes job directories whose key is gone (only once they are older than
:data:`ORPHAN_AGE`, so a job still being uploaded is never taken for one). Each call is one
short round trip to Redis from the event loop.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from previewer.serve.store import JobRow, row_dict

__all__ = ["ORPHAN_AGE", "RedisStore"]

PREFIX = "previewer:serve:"
ORPHAN_AGE = 600.0
"""Seconds a job directory without state is left alone (it may be a job being created)."""


class RedisStore:
    """Jobs in Redis, files under ``root``.

    Args:
        root: The storage directory (shared with the queue workers, same path).
        url: The Redis URL.
    """

    def __init__(self, root: Path, url: str) -> None:
        import redis

        self.root = root
        self.jobs_dir = root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def close(self) -> None:
        """Close the connections."""
        self.redis.close()

    def job_dir(self, job_id: str) -> Path:
        """The directory of a job's files."""
        return self.jobs_dir / job_id

    @staticmethod
    def _ttl(row: JobRow) -> int:
        return max(1, int(row.expires - time.time()) + 1)

    def insert(self, row: JobRow) -> JobRow:
        """Store a new job; with an Idempotency-Key already used by the tenant, that job."""
        if row.idem is not None:
            idem = f"{PREFIX}idem:{row.tenant}:{row.idem}"
            if not self.redis.set(idem, row.id, nx=True, ex=self._ttl(row)):
                existing = self.by_idempotency_key(row.tenant, row.idem)
                if existing is not None:
                    return existing
                self.redis.set(idem, row.id, ex=self._ttl(row))
        self.redis.set(f"{PREFIX}job:{row.id}", json.dumps(row_dict(row)), ex=self._ttl(row))
        return row

    def by_idempotency_key(self, tenant: str, key: str | None) -> JobRow | None:
        """The tenant's job created with ``key``, if any."""
        if key is None:
            return None
        job_id = self.redis.get(f"{PREFIX}idem:{tenant}:{key}")
        if job_id is None:
            return None
        return self.get(job_id.decode() if isinstance(job_id, bytes) else str(job_id), tenant)

    def get(self, job_id: str, tenant: str | None = None) -> JobRow | None:
        """The job (only the tenant's own, when ``tenant`` is given)."""
        raw = self.redis.get(f"{PREFIX}job:{job_id}")
        if raw is None:
            return None
        row = JobRow(**json.loads(raw))
        return None if tenant is not None and row.tenant != tenant else row

    def _update(self, job_id: str, **changes: Any) -> bool:
        key = f"{PREFIX}job:{job_id}"
        raw = self.redis.get(key)
        if raw is None:
            return False
        data = json.loads(raw)
        data.update(changes)
        return bool(self.redis.set(key, json.dumps(data), keepttl=True, xx=True))

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Record a job's outcome; False when the job no longer exists."""
        return self._update(job_id, status=status, result=result, error=error)

    def set_callback(self, job_id: str, state: dict[str, Any]) -> None:
        """Record the webhook delivery state."""
        self._update(job_id, callback=state)

    def delete(self, job_id: str) -> None:
        """Remove a job's state and files."""
        self.redis.delete(f"{PREFIX}job:{job_id}")
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def expired(self, now: float | None = None) -> list[str]:
        """Job directories whose state Redis has expired (older than :data:`ORPHAN_AGE`)."""
        return [p.name for p in self.orphan_dirs(now)]

    def fail(self, job_ids: list[str], message: str) -> None:
        """Fail these jobs if still pending."""
        for job_id in job_ids:
            row = self.get(job_id)
            if row is not None and row.status == "pending":
                self.finish(job_id, "failure", error={"code": "Interrupted", "message": message})

    def fail_unfinished(self, message: str) -> int:
        """Nothing: other services may share the Redis; their pending jobs are theirs."""
        return 0

    def orphan_dirs(self, now: float | None = None) -> list[Path]:
        """Job directories whose job has no state in Redis, older than :data:`ORPHAN_AGE`."""
        cutoff = (time.time() if now is None else now) - ORPHAN_AGE
        dirs = [p for p in self.jobs_dir.iterdir() if p.stat().st_mtime < cutoff]
        if not dirs:
            return []
        exists = self.redis.mget([f"{PREFIX}job:{p.name}" for p in dirs])
        return [p for p, raw in zip(dirs, exists, strict=True) if raw is None]

    def writable(self) -> bool:
        """Whether Redis answers and the storage directory accepts a write."""
        import redis

        probe = self.root / ".ready-probe"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
            self.redis.ping()
        except (OSError, redis.RedisError):
            return False
        return True
