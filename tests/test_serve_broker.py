"""``previewer serve --broker``: conversions on a real queue worker, job state in a real Redis."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.servekit import Served
from tests.support import JPEG, PDF, clean_env, plugin_site, requires_engine, wait_for
from tests.test_queue import REDIS, Redis, Worker

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
        # The worker described the document with the conversion (pages, page sizes, the
        # checksum asked for): the service did not open it again.
        assert job["queue"]["described"] == "worker"
        assert job["original_file"]["total_pages"] == 1
        assert job["preview"]["original_size"] == {"width": 1600, "height": 1200}
        pdf = httpx.post(
            f"{served.url}/v2/previews/",
            params={"wait": 30},
            files={"file": ("report.pdf", PDF.read_bytes())},
            data={"sizes": "x200", "pages": "1-2", "metadata": "checksum"},
            timeout=60,
        ).json()
        assert pdf["status"] == "success", pdf
        assert pdf["queue"]["described"] == "worker"
        assert [t["page"] for t in pdf["thumbnails"]] == [1, 2]
        assert {t["original_size"]["width"] for t in pdf["thumbnails"]} == {595}
        assert pdf["thumbnails"][0]["size"] == {"width": 141, "height": 200}
        assert pdf["original_file"]["total_pages"] == 2
        assert pdf["original_file"]["mimetype"] == "application/pdf"
        checksum = pdf["original_file"]["metadata"]["checksum"]
        assert checksum["sha256"] == hashlib.sha256(PDF.read_bytes()).hexdigest()
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


# --------------------------------------------------------------------------- failures


def _start_redis(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    """redis-server on ``port`` (without persistence: a restart loses everything)."""
    proc = subprocess.Popen(
        [str(REDIS), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(up, 10, "redis-server")
    return proc


def _final(url: str, timeout: float) -> dict[str, Any]:
    """The job at ``url`` once it is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(url, params={"wait": 5}, timeout=30).json()
        if job["status"] != "pending" or time.monotonic() > deadline:
            return dict(job)


def _ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=10)


def _post(url: str, name: str, body: bytes, **params: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v2/previews/",
        params={"sizes": "40", **params},
        files={"file": (name, body)},
        timeout=60,
    )


def _kill_tree(served: Served) -> None:
    """SIGKILL the service and what it started, as a lost machine would stop it."""
    kids = served.descendants()
    served.proc.kill()
    served.proc.wait(10)
    served._log.close()
    for pid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_killed_worker_killed_service_and_no_worker_never_leave_a_job_pending(
    tmp_path: Path,
) -> None:
    """A worker SIGKILLed mid-job: redelivered to the next worker. No worker at all: the job
    fails after --worker-grace, /readyz says why. The service SIGKILLed: another one fails its
    pending jobs once the dead one's liveness key expires."""
    site = plugin_site(tmp_path / "site")
    env = clean_env(pythonpath=[site])
    broker = Redis(tmp_path)
    workers: list[Worker] = []
    served: Served | None = None
    args = ("--broker", broker.url, "--timeout", "2", "--worker-grace", "6")
    try:
        workers.append(Worker(broker.url, "w1", tmp_path / "w1.log", timeout=2, env=env))
        served = Served(tmp_path / "storage", *args, env=env)
        wait_for(lambda: _ready(served.url).status_code == 200, 20, "/readyz with a worker")
        assert _ready(served.url).json()["queue"]["workers"] == 1

        # 1. SIGKILL of the worker while it converts: a new worker gets the file again.
        created = _post(served.url, "slow.txt", b"SLOW")
        assert created.status_code == 201, created.text
        job_url = created.json()["url"]
        wait_for(lambda: "convert_file" in workers[0].text(), 20, "the worker taking the file")
        workers[0].kill()
        workers.append(Worker(broker.url, "w2", tmp_path / "w2.log", timeout=2, env=env))
        job = _final(job_url, 40)
        assert job["status"] == "success", job
        assert job["thumbnails"][0]["size"] == {"width": 40, "height": 20}
        assert "convert_file" in workers[1].text()

        # 2. No worker at all: /readyz turns 503 naming the check, the job fails cleanly.
        workers[1].kill()
        wait_for(lambda: _ready(served.url).status_code == 503, 10, "/readyz 503")
        ready = _ready(served.url).json()
        assert ready["checks"]["workers"] is False and ready["checks"]["broker"] is True
        assert ready["queue"]["workers"] == 0
        started = time.monotonic()
        created = _post(served.url, "photo.jpg", JPEG.read_bytes())
        assert created.status_code == 201, created.text
        job = _final(created.json()["url"], 30)
        assert job["status"] == "failure", job
        assert job["error"]["code"] == "EngineUnavailableError"
        assert "no queue worker has answered" in job["error"]["message"]
        assert time.monotonic() - started < 15

        # 3. The service SIGKILLed with a job pending (a worker busy with it): the next one
        # started fails that job.
        workers.append(Worker(broker.url, "w3", tmp_path / "w3.log", timeout=2, env=env))
        wait_for(lambda: _ready(served.url).status_code == 200, 20, "/readyz with a worker")
        created = _post(served.url, "hang.txt", b"HANG")
        assert created.status_code == 201
        job_id = created.json()["id"]
        wait_for(lambda: "convert_file" in workers[2].text(), 20, "the worker taking the file")
        _kill_tree(served)
        served = Served(tmp_path / "storage", *args, env=env)
        job = _final(f"{served.url}/v2/previews/{job_id}/", 25)
        assert job["status"] == "failure", job
        assert job["error"]["code"] == "Interrupted"
        assert "stopped before the job finished" in job["error"]["message"]
        assert redis.Redis.from_url(broker.url).hlen("previewer:serve:running") == 0
    finally:
        if served is not None:
            code, left = served.stop()
            assert code == 0, served.log()
            assert not left
        for worker in workers:
            worker.kill()
        broker.stop()


def test_redis_restart_gives_503_then_recovers(tmp_path: Path) -> None:
    broker = Redis(tmp_path)
    worker: Worker | None = None
    served: Served | None = None
    try:
        worker = Worker(broker.url, "w", tmp_path / "w.log")
        served = Served(tmp_path / "storage", "--broker", broker.url)
        wait_for(lambda: _ready(served.url).status_code == 200, 20, "/readyz")
        broker.stop()
        ready = _ready(served.url)
        assert ready.status_code == 503
        assert ready.json()["checks"]["storage"] is False
        assert ready.json()["checks"]["broker"] is False
        started = time.monotonic()
        refused = _post(served.url, "photo.jpg", JPEG.read_bytes())
        assert time.monotonic() - started < 10
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "5"
        assert "Redis" in refused.json()["error"]["message"]
        missing = httpx.get(f"{served.url}/v2/previews/{'0' * 8}-0000-0000-0000-{'0' * 12}/")
        assert missing.status_code == 503
        assert httpx.get(f"{served.url}/healthz").status_code == 200
        broker.proc = _start_redis(broker.port, tmp_path)  # the same port, empty
        wait_for(lambda: _ready(served.url).status_code == 200, 30, "/readyz after the restart")
        done = _post(served.url, "photo.jpg", JPEG.read_bytes(), wait=30)
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "success"
        assert "Traceback" not in served.log()
    finally:
        if served is not None:
            code, left = served.stop()
            assert code == 0, served.log()
            assert not left
        if worker is not None:
            worker.kill()
        broker.stop()
