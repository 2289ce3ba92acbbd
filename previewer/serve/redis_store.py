"""Job state in Redis (``previewer serve --broker``): one key per job, expiring with the job.

Several services may share the Redis and the storage directory. A job is the JSON key
``previewer:serve:job:<id>`` with the job's time to live; an Idempotency-Key is
``previewer:serve:idem:<tenant>:<key>`` (the job id, same lifetime). Redis expires the state by
itself; the sweeper removes job directories whose key is gone (only once they are older than
:data:`ORPHAN_AGE`, so a job still being uploaded is never taken for one). Each call is one
short round trip to Redis from the event loop.

Each service is a node with a liveness key (``previewer:serve:node:<node>``, renewed every
:data:`NODE_BEAT` seconds, lasting :data:`NODE_TTL`), and each pending job is a field of the hash
``previewer:serve:running`` naming its node. A node that dies (SIGKILL, a lost machine) leaves
its pending jobs behind with nobody waiting for their results; any other node (or the same
service started again) fails them once the dead node's key has expired
(:meth:`RedisStore.fail_orphaned`), so no job stays pending for ever.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from previewer.serve.store import JobRow, row_dict

__all__ = ["NODE_BEAT", "NODE_TTL", "ORPHAN_AGE", "RedisStore"]

PREFIX = "previewer:serve:"
RUNNING = PREFIX + "running"
"""Hash: pending job id -> the node running it."""
NODE_TTL = 10
"""Seconds a node's liveness key lasts: its pending jobs are failed this long after it died."""
NODE_BEAT = 2.0
"""Seconds between two renewals of a node's liveness key."""
INTERRUPTED = "the service running the job stopped before the job finished"
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
        self.node = uuid.uuid4().hex

    def close(self) -> None:
        """Forget this node and close the connections."""
        import redis

        try:
            self.redis.delete(f"{PREFIX}node:{self.node}")
        except redis.RedisError:
            pass  # it expires anyway
        self.redis.close()

    def beat(self) -> None:
        """Renew this node's liveness key."""
        self.redis.set(f"{PREFIX}node:{self.node}", "1", ex=NODE_TTL)

    def fail_orphaned(self) -> int:
        """Fail the pending jobs of nodes that are gone; return how many were failed."""
        running = self.redis.hgetall(RUNNING)
        if not running:
            return 0
        owners = {_text(k): _text(v) for k, v in running.items()}
        nodes = sorted(set(owners.values()) - {self.node})
        if not nodes:
            return 0
        alive = self.redis.mget([f"{PREFIX}node:{n}" for n in nodes])
        dead = {n for n, key in zip(nodes, alive, strict=True) if key is None}
        failed = 0
        for job_id, node in owners.items():
            if node in dead:
                row = self.get(job_id)
                if row is not None and row.status == "pending":
                    self._update(
                        job_id,
                        status="failure",
                        error={"code": "Interrupted", "message": INTERRUPTED},
                    )
                    failed += 1
                self.redis.hdel(RUNNING, job_id)
        return failed

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
        pipe = self.redis.pipeline()
        pipe.set(f"{PREFIX}job:{row.id}", json.dumps(row_dict(row)), ex=self._ttl(row))
        if row.status == "pending":
            pipe.hset(RUNNING, row.id, self.node)
        pipe.execute()
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
        kept = self._update(job_id, status=status, result=result, error=error)
        self.redis.hdel(RUNNING, job_id)
        return kept

    def set_callback(self, job_id: str, state: dict[str, Any]) -> None:
        """Record the webhook delivery state."""
        self._update(job_id, callback=state)

    def delete(self, job_id: str) -> None:
        """Remove a job's state and files."""
        self.redis.delete(f"{PREFIX}job:{job_id}")
        self.redis.hdel(RUNNING, job_id)
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
        """Fail the pending jobs of nodes that are gone (not those of live ones).

        Other services may share the Redis: their pending jobs are theirs while they live. A
        node that died moments ago is still taken for alive; the service's watch
        (:meth:`fail_orphaned`, every :data:`NODE_BEAT` seconds) fails its jobs later.
        """
        self.beat()
        return self.fail_orphaned()

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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
