"""``previewer serve`` over many requests: its memory stays flat.

10,000 requests from concurrent keep-alive clients (health checks, unknown ids, invalid posts,
metrics scrapes and a few hundred real conversions of a tiny PNG); the server process's resident
memory after a warm-up and at the end must differ by less than 10 % (or 8 MiB).
"""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter
from collections.abc import Iterator

import httpx
import psutil
import pytest
from PIL import Image

from tests.servekit import Served

REQUESTS = 10_000
CONVERSIONS = 200
CLIENTS = 8


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served(
        tmp_path_factory.mktemp("serve-soak") / "storage", "--jobs", "2", "--queue-size", "64"
    )
    yield served
    code, left = served.stop()
    assert code == 0, served.log()
    assert not left


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def _plan(count: int, conversions: int, seed: int) -> list[str]:
    kinds = ["convert"] * conversions
    rest = count - conversions
    kinds += ["404"] * (rest // 8) + ["400"] * (rest // 8) + ["metrics"] * (rest // 50)
    kinds += ["healthz"] * (count - len(kinds))
    random.Random(seed).shuffle(kinds)
    return kinds


async def _send(url: str, kinds: list[str], png: bytes) -> Counter[tuple[str, int]]:
    seen: Counter[tuple[str, int]] = Counter()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for kind in kinds:
        queue.put_nowait(kind)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one_client() -> None:
            while not queue.empty():
                kind = queue.get_nowait()
                if kind == "healthz":
                    r = await client.get("/healthz")
                elif kind == "metrics":
                    r = await client.get("/metrics")
                elif kind == "404":
                    r = await client.get("/v2/previews/00000000-0000-0000-0000-000000000000/")
                elif kind == "400":
                    r = await client.post("/v2/previews/", params={"sizes": "huge"}, content=png)
                else:
                    r = await client.post(
                        "/v2/previews/",
                        params={"sizes": "16", "wait": 20},
                        content=png,
                        headers={"Content-Type": "image/png"},
                    )
                    if r.status_code == 200:
                        assert r.json()["status"] == "success", r.text
                seen[(kind, r.status_code)] += 1

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
    return seen


def test_memory_stays_flat_over_10000_requests(served: Served) -> None:
    png = _png()
    server = psutil.Process(served.proc.pid)
    warm = asyncio.run(_send(served.url, _plan(1500, 30, 1), png))
    assert set(warm) <= {("healthz", 200), ("metrics", 200), ("404", 404), ("400", 400),
                         ("convert", 200)}, warm  # fmt: skip
    before = server.memory_info().rss
    seen = asyncio.run(_send(served.url, _plan(REQUESTS, CONVERSIONS, 2), png))
    after = server.memory_info().rss
    assert sum(seen.values()) == REQUESTS
    assert seen[("convert", 200)] == CONVERSIONS, seen
    assert seen[("404", 404)] > 1000 and seen[("400", 400)] > 1000, seen
    assert {status for _kind, status in seen} <= {200, 400, 404}, seen
    growth = after - before
    assert growth < max(0.10 * before, 8 * 2**20), (before, after)
    # The service's own books: 11,500 requests counted, none of them a 5xx.
    metrics = httpx.get(f"{served.url}/metrics").text
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("previewer_http_requests_total{")
    )
    assert counted >= REQUESTS + 1500
    assert 'status="500"' not in metrics
    # Refused and invalid requests left no job directory behind.
    jobs = list((served.storage / "jobs").iterdir())
    assert len(jobs) == CONVERSIONS + 30
