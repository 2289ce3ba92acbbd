"""``previewer serve`` under pressure: body limits (413), backpressure (429), drain on SIGTERM,
and the rule that only a loopback-bound service may run without credentials.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.servekit import Served
from tests.support import JPEG, PDF, clean_env, plugin_site, run_previewer

LIMIT = 300_000


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """No tokens (loopback), one conversion at a time, one waiting, 300 kB inputs."""
    served = Served(
        tmp_path_factory.mktemp("serve-small") / "storage",
        "--jobs",
        "1",
        "--queue-size",
        "1",
        "--max-file-size",
        str(LIMIT),
    )
    yield served
    code, left = served.stop()
    assert code == 0, served.log()
    assert not left


def test_no_credentials_needed_on_loopback_without_tokens(small: Served) -> None:
    response = httpx.post(
        f"{small.url}/v2/previews/",
        params={"wait": 20, "sizes": "32"},
        content=JPEG.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "success"
    assert "authentication: none (loopback only)" in small.log()


def test_413_from_content_length(small: Served) -> None:
    body = b"\0" * (LIMIT + 1)
    response = httpx.post(
        f"{small.url}/v2/previews/", content=body, headers={"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 413
    assert str(LIMIT) in response.json()["error"]["message"]


def test_413_while_streaming_without_content_length(small: Served) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"\0" * 65536  # 512 KiB in all, sent chunked

    before = set((small.storage / "jobs").iterdir())
    response = httpx.post(
        f"{small.url}/v2/previews/",
        content=chunks(),
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert set((small.storage / "jobs").iterdir()) == before  # nothing kept of it


def test_413_for_a_multipart_file(small: Served) -> None:
    response = httpx.post(
        f"{small.url}/v2/previews/", files={"file": ("big.bin", b"\0" * (LIMIT + 10))}
    )
    assert response.status_code == 413


def test_flood_gets_429_never_5xx(small: Served) -> None:
    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{small.url}/v2/previews/",
                        params={"sizes": "900", "pages": "all"},
                        content=PDF.read_bytes(),
                        headers={"Content-Type": "application/pdf"},
                    )
                    for _ in range(12)
                )
            )

    responses = asyncio.run(flood())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 429}, statuses
    assert 201 in statuses and 429 in statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    for r in responses:
        if r.status_code == 201:
            done = httpx.get(r.json()["url"], params={"wait": 30}).json()
            assert done["status"] == "success"
    metrics = httpx.get(f"{small.url}/metrics").text
    rejected = next(
        line for line in metrics.splitlines() if line.startswith("previewer_rejected_total ")
    )
    assert float(rejected.split()[1]) == statuses.count(429)


def test_sustained_4x_overload_gets_only_2xx_and_429_and_memory_stays_flat(
    small: Served,
) -> None:
    """8 clients (4x the 2 admitted jobs) posting real conversions for 3 s without pause."""
    body = PDF.read_bytes()

    async def flood(seconds: float) -> list[httpx.Response]:
        deadline = time.monotonic() + seconds
        seen: list[httpx.Response] = []
        async with httpx.AsyncClient(timeout=60) as client:

            async def one() -> None:
                while time.monotonic() < deadline:
                    seen.append(
                        await client.post(
                            f"{small.url}/v2/previews/",
                            params={"sizes": "256"},
                            content=body,
                            headers={"Content-Type": "application/pdf"},
                        )
                    )

            await asyncio.gather(*(one() for _ in range(8)))
        return seen

    server = psutil.Process(small.proc.pid)
    asyncio.run(flood(1.0))  # warm-up
    before = server.memory_info().rss
    responses = asyncio.run(flood(3.0))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 429}, sorted(set(statuses))
    assert statuses.count(429) > statuses.count(201) > 0
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses if r.status_code == 429)
    for r in responses:
        if r.status_code == 201:
            done = httpx.get(r.json()["url"], params={"wait": 30}, timeout=40).json()
            assert done["status"] == "success", done
    after = server.memory_info().rss
    assert after - before < max(0.10 * before, 8 * 2**20), (before, after)


def test_client_leaving_during_wait_does_not_hurt(small: Served) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{small.url}/v2/previews/",
            params={"wait": 10, "sizes": "4000", "pages": "all"},  # ~1 s of rendering
            content=PDF.read_bytes(),
            headers={"Content-Type": "application/pdf"},
            timeout=0.05,
        )
    time.sleep(0.2)
    assert httpx.get(f"{small.url}/readyz").status_code == 200
    response = httpx.post(
        f"{small.url}/v2/previews/",
        params={"wait": 20, "sizes": "32"},
        content=JPEG.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert response.status_code == 200


def test_refuses_other_addresses_without_tokens(tmp_path: Path) -> None:
    result = run_previewer(
        "serve", "--bind", "0.0.0.0:0", "--storage", tmp_path / "s", text=True, timeout=30
    )
    assert result.returncode == 2
    assert "without authentication" in result.stderr
    assert "--tokens" in result.stderr


def test_sigterm_drains_a_running_job(tmp_path: Path) -> None:
    served = Served(tmp_path / "storage", "--jobs", "1")
    try:
        response = httpx.post(
            f"{served.url}/v2/previews/",
            params={"sizes": "1500", "pages": "all"},
            content=PDF.read_bytes(),
            headers={"Content-Type": "application/pdf"},
        )
        assert response.status_code == 201
        job_id = response.json()["id"]
    finally:
        code, left = served.stop()
    assert code == 0, served.log()
    assert not left
    db = sqlite3.connect(served.storage / "jobs.sqlite3")
    ((status, result),) = db.execute("SELECT status, result FROM jobs WHERE id = ?", (job_id,))
    assert status == "success"
    assert '"page":2' in result
    outputs = sorted(p.name for p in (served.storage / "jobs" / job_id / "out").iterdir())
    assert outputs == ["upload.p1.1500.png", "upload.p2.1500.png"]


def test_sweeper_removes_expired_jobs(tmp_path: Path) -> None:
    served = Served(tmp_path / "storage", "--ttl", "1")
    try:
        response = httpx.post(
            f"{served.url}/v2/previews/",
            params={"sizes": "32", "wait": 20},
            content=JPEG.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )
        job = response.json()
        assert job["status"] == "success"
        job_dir = served.storage / "jobs" / job["id"]
        assert job_dir.is_dir()
        deadline = time.monotonic() + 10
        while job_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not job_dir.exists()
        assert httpx.get(job["url"]).status_code == 404
        assert httpx.get(job["preview"]["url"]).status_code in (403, 404)
    finally:
        code, _ = served.stop()
    assert code == 0


def test_hang_crash_and_engine_paths_fail_only_their_job(tmp_path: Path) -> None:
    """The tripwire plugin (tests/plugins/faulty.py) hangs, aborts or names its work directory."""
    site = plugin_site(tmp_path / "site")
    served = Served(tmp_path / "storage", "--timeout", "1", "--jobs", "4",
                    env=clean_env(pythonpath=[site]))  # fmt: skip
    try:

        async def send() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            f"{served.url}/v2/previews/",
                            params={"wait": 30, "sizes": "32"},
                            files={"file": (name, body)},
                        )
                        for name, body in [
                            ("hang.txt", b"HANG"),
                            ("abort.txt", b"ABORT"),
                            ("leak.txt", b"LEAK"),
                            ("photo.jpg", JPEG.read_bytes()),
                        ]
                    )
                )

        hang, abort, leak, photo = (r.json() for r in asyncio.run(send()))
        assert hang["status"] == "failure"
        assert hang["error"]["code"] == "EngineTimeoutError"
        assert "hang.txt" in hang["error"]["message"]
        assert abort["status"] == "failure"
        assert abort["error"]["code"] == "EngineError"
        assert leak["status"] == "failure"
        assert "/tmp" not in leak["error"]["message"]
        assert str(served.storage) not in str([hang, abort, leak])
        assert photo["status"] == "success"
        assert httpx.get(f"{served.url}/healthz").status_code == 200
    finally:
        code, left = served.stop()
    assert code == 0, served.log()
    assert not left


def test_tenants_take_turns_and_one_cannot_take_every_place(tmp_path: Path) -> None:
    """A burst from one API key neither queues ahead of another key's file nor takes its place.

    The tripwire plugin's SLOW files take 1 s each; one conversion at a time, 8 waiting places.
    """
    site = plugin_site(tmp_path / "site")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("burst:s3cret-burst\nsingle:s3cret-single\n")
    served = Served(tmp_path / "storage", "--tokens", str(tokens), "--jobs", "1",
                    "--queue-size", "8", env=clean_env(pythonpath=[site]))  # fmt: skip
    try:

        def post(auth: tuple[str, str], wait: int = 0) -> httpx.Response:
            return httpx.post(
                f"{served.url}/v2/previews/",
                params={"wait": wait, "sizes": "32"},
                files={"file": ("slow.txt", b"SLOW")},
                auth=auth,
                timeout=60,
            )

        burst = ("burst", "s3cret-burst")
        first = [post(burst) for _ in range(7)]
        assert [r.status_code for r in first] == [201] * 7
        # Seven of the nine places are the burst's share: the eighth is refused...
        refused = post(burst)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        # ...while the other key still gets a place, and its file runs after at most one more
        # of the burst's (round robin), not after all of them.
        single = post(("single", "s3cret-single"), wait=30)
        assert single.status_code == 200, single.text
        assert single.json()["status"] == "success"
        states = [
            httpx.get(r.json()["url"], auth=burst, timeout=10).json()["status"] for r in first
        ]
        assert states.count("pending") >= 4, states
    finally:
        code, left = served.stop()
        assert code == 0, served.log()
        assert not left
