"""``previewer serve --broker``: conversions on a real queue worker, job state in a real Redis."""

from __future__ import annotations

from pathlib import Path

import httpx
import redis

from tests.servekit import Served
from tests.support import JPEG, requires_engine
from tests.test_queue import Redis, Worker

pytestmark = requires_engine("redis-server")


def test_jobs_run_on_queue_workers_with_state_in_redis(tmp_path: Path) -> None:
    broker = Redis(tmp_path)
    worker = None
    served = None
    try:
        worker = Worker(broker.url, "serve", tmp_path / "worker.log")
        served = Served(tmp_path / "storage", "--broker", broker.url, "--ttl", "600")
        response = httpx.post(
            f"{served.url}/v2/previews/",
            params={"sizes": "120", "wait": 30},
            content=JPEG.read_bytes(),
            headers={"Content-Type": "image/jpeg", "Idempotency-Key": "one"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] == "success", job
        image = httpx.get(job["preview"]["url"])
        assert image.status_code == 200
        assert image.content.startswith(b"\x89PNG")
        assert job["preview"]["size"] == {"width": 120, "height": 90}
        # The job says where it was routed and how long it waited there.
        assert job["queue"]["class"] == "light"
        assert job["queue"]["queue"] == "previewer.light"
        assert job["queue"]["tenant"] == "anonymous"
        assert 0 <= job["queue"]["wait"] < 30
        metrics = httpx.get(f"{served.url}/metrics").text
        assert 'previewer_class_queue_depth{cost_class="light"}' in metrics
        # The worker converted it; the state is a Redis key that expires with the job.
        assert "convert_file" in worker.text() or "previewer.convert_file" in worker.text()
        client = redis.Redis.from_url(broker.url)
        key = f"previewer:serve:job:{job['id']}"
        assert 0 < client.ttl(key) <= 601
        assert not (served.storage / "jobs.sqlite3").exists()
        again = httpx.post(
            f"{served.url}/v2/previews/",
            content=JPEG.read_bytes(),
            headers={"Content-Type": "image/jpeg", "Idempotency-Key": "one"},
        )
        assert again.json()["id"] == job["id"]
        assert httpx.get(f"{served.url}/readyz").json()["checks"]["storage"] is True
        assert httpx.delete(job["url"]).status_code == 204
        assert client.exists(key) == 0
        client.close()
    finally:
        if served is not None:
            code, left = served.stop()
            assert code == 0, served.log()
            assert not left
        if worker is not None:
            worker.kill()
        broker.stop()
