"""The ``serve`` cases of bench.py: ``previewer serve`` against the library and the CLI.

- **serve-overhead**: a small PDF converted by 4 concurrent clients through the API
  (``--jobs 4``, ``?wait=``) against 4 threads calling :func:`previewer.api.convert` in one
  process without child processes (the conversion itself); the overhead of a request is its wall
  time minus the median in-process conversion.
- **serve-N-mixed**: N mixed files (the pool's inputs) posted by 8 keep-alive clients through
  the API with the local pool (``--jobs 2``) and through 2 Celery workers (``--broker``),
  against ``previewer convert DIR -j 2``, in files/s.
- **serve-overload**: 16 clients posting without waiting to a service admitting 4 jobs
  (``--jobs 2 --queue-size 2``) for a few seconds: every response must be 2xx or 429, and the
  server's RSS must stay flat.

Run by bench.py (``--only serve``); needs httpx and psutil (the project's virtualenv), and
``redis-server`` for the broker variant.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ServeResult", "inprocess_main", "run_serve", "serve_targets"]

OVERHEAD_CLIENTS = 4
OVERHEAD_REQUESTS = 25  # per client
MIXED_CLIENTS = 8
OVERLOAD_CLIENTS = 16
OVERLOAD_SECONDS = 5.0


@dataclass
class ServeResult:
    """One measured variant: wall seconds, server RSS/CPU, files/s, notes, latencies."""

    case: str
    tool: str
    wall: float | None = None
    rss_kb: int = 0
    cpu: float = 0.0
    files_per_s: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {seconds:g} s")
        time.sleep(0.1)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Server:
    """A ``previewer serve`` on a free loopback port, stopped with SIGTERM."""

    def __init__(self, exe: str, env: dict[str, str], storage: Path, log: Path, *args: str):
        import httpx

        shutil.rmtree(storage, ignore_errors=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [exe, "serve", "--bind", f"127.0.0.1:{self.port}", "--storage", str(storage), *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"previewer serve exited: see {log}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(ready, 60, "previewer serve")

    def rss_kb(self) -> int:
        import psutil

        return int(psutil.Process(self.proc.pid).memory_info().rss // 1024)

    def cpu(self) -> float:
        import psutil

        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


class Redis:
    """A private redis-server and N ``previewer worker -c 1`` processes."""

    def __init__(self, exe: str, env: dict[str, str], logdir: Path, workers: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.procs = [
            subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
                + ["--appendonly", "no"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        ]
        self.logs = []

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        _wait(up, 15, "redis-server")
        for i in range(workers):
            log = logdir / f"serve-worker-{i}.log"
            fh = log.open("wb")
            self.logs.append(fh)
            proc = subprocess.Popen(
                [exe, "worker", "--broker", self.url, "-c", "1", "-n", f"servebench{i}@%h"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
            self.procs.append(proc)
            _wait(lambda log=log: b"ready." in log.read_bytes(), 60, f"worker {i}")

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        for fh in self.logs:
            fh.close()


async def _post_all(
    url: str, files: list[Path], clients: int, params: dict[str, Any]
) -> tuple[list[float], Counter[str]]:
    """Post every file (``?wait=``) from ``clients`` keep-alive clients; latencies, outcomes."""
    import httpx

    todo = list(reversed(files))
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def one() -> None:
            while todo:
                path = todo.pop()
                body = path.read_bytes()
                started = time.perf_counter()
                r = await client.post(
                    "/v2/previews/",
                    params=params,
                    content=body,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Disposition": f'attachment; filename="{path.name}"',
                    },
                )
                latencies.append(time.perf_counter() - started)
                status = r.json().get("status") if r.status_code in (200, 201) else None
                outcomes[f"{r.status_code} {status}"] += 1

        await asyncio.gather(*(one() for _ in range(clients)))
    return latencies, outcomes


def _in_process_times(pdf: Path, out: Path, threads: int, per_thread: int) -> list[float]:
    """Seconds of :func:`previewer.api.convert` calls made in this process, ``threads`` at once.

    Run in a child of its own (``inprocess_main``), with the library's child processes off
    (``previewer.limited.ISOLATE = False``): the conversion itself, in the caller's process.
    """
    from previewer import api, limited

    limited.ISOLATE = False
    times: list[float] = []
    lock = threading.Lock()

    def loop(i: int) -> None:
        for _ in range(per_thread):
            started = time.perf_counter()
            api.convert(pdf, out_dir=out / str(i), sizes=[256])
            with lock:
                times.append(time.perf_counter() - started)

    for _round in range(2):  # the first warms up
        times.clear()
        workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return times


def _in_process(python: str, env: dict[str, str], pdf: Path, out: Path) -> list[float]:
    import json

    # ``-c``: a main module without a file, which the fork server's children do not run again.
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    code += "import serve_bench; serve_bench.inprocess_main()"
    argv = [python, "-c", code, str(pdf), str(out), str(OVERHEAD_CLIENTS)]
    done = subprocess.run(
        [*argv, str(OVERHEAD_REQUESTS)], env=env, capture_output=True, check=True, timeout=600
    )
    return [float(x) for x in json.loads(done.stdout)]


def _overhead(exe: str, env: dict[str, str], pdf: Path, work: Path, logdir: Path) -> ServeResult:
    import sys

    base = _in_process(sys.executable, env, pdf, work / "inproc")
    server = Server(exe, env, work / "storage-overhead", logdir / "serve-overhead.log",
                    "--jobs", str(OVERHEAD_CLIENTS), "--queue-size", "16")  # fmt: skip
    try:
        params = {"sizes": "256", "wait": 30}
        asyncio.run(_post_all(server.url, [pdf] * 8, OVERHEAD_CLIENTS, params))  # warm-up
        files = [pdf] * (OVERHEAD_CLIENTS * OVERHEAD_REQUESTS)
        cpu0 = server.cpu()
        started = time.perf_counter()
        latencies, outcomes = asyncio.run(_post_all(server.url, files, OVERHEAD_CLIENTS, params))
        wall = time.perf_counter() - started
        rss, cpu = server.rss_kb(), server.cpu() - cpu0
    finally:
        server.close()
    conv = _pct(base, 50)
    over = [x - conv for x in latencies]
    return ServeResult(
        "serve-overhead-pdf",
        f"API, {OVERHEAD_CLIENTS} clients",
        wall,
        rss,
        cpu,
        note=f"p50 {_pct(over, 50) * 1000:.0f} ms, p99 {_pct(over, 99) * 1000:.0f} ms over "
        f"{conv * 1000:.0f} ms in-process; {dict(outcomes)}",
        extra={
            "p50_ms": _pct(over, 50) * 1000,
            "p99_ms": _pct(over, 99) * 1000,
            "inprocess_p50_ms": conv * 1000,
            "inprocess_p99_ms": _pct(base, 99) * 1000,
            "api_p50_ms": _pct(latencies, 50) * 1000,
            "outcomes": dict(outcomes),
        },
    )


def _post_round(server: Server, files: list[Path]) -> tuple[float, int, float, str]:
    """Post every file through ``server``; wall seconds, server RSS (KB), server CPU, problem."""
    cpu0 = server.cpu()
    started = time.perf_counter()
    _lat, outcomes = asyncio.run(
        _post_all(server.url, files, MIXED_CLIENTS, {"sizes": "256", "wait": 30})
    )
    wall = time.perf_counter() - started
    ok = outcomes.get("200 success", 0)
    problem = "" if ok == len(files) else f"only {ok}/{len(files)} succeeded: {dict(outcomes)}"
    return wall, server.rss_kb(), server.cpu() - cpu0, problem


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


async def _flood(url: str, body: bytes, clients: int, seconds: float) -> Counter[str]:
    import httpx

    seen: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one() -> None:
            while time.monotonic() < deadline:
                r = await client.post(
                    "/v2/previews/",
                    params={"sizes": "256"},
                    content=body,
                    headers={"Content-Type": "application/pdf"},
                )
                retry = r.headers.get("retry-after")
                key = str(r.status_code) if r.status_code != 429 or retry else "429 no Retry-After"
                seen[key] += 1
                if r.status_code == 429:
                    await asyncio.sleep(0.02)

        await asyncio.gather(*(one() for _ in range(clients)))
    return seen


def _overload(exe: str, env: dict[str, str], pdf: Path, work: Path, logdir: Path) -> ServeResult:
    server = Server(exe, env, work / "storage-overload", logdir / "serve-overload.log",
                    "--jobs", "2", "--queue-size", "2")  # fmt: skip
    try:
        body = pdf.read_bytes()
        asyncio.run(_flood(server.url, body, OVERLOAD_CLIENTS, 1.0))  # warm-up
        time.sleep(2)
        before = server.rss_kb()
        started = time.perf_counter()
        seen = asyncio.run(_flood(server.url, body, OVERLOAD_CLIENTS, OVERLOAD_SECONDS))
        wall = time.perf_counter() - started
        time.sleep(2)  # the admitted jobs finish
        after = server.rss_kb()
    finally:
        server.close()
    bad = sum(n for key, n in seen.items() if not (key.startswith("2") or key == "429"))
    return ServeResult(
        "serve-overload-4x",
        f"{OVERLOAD_CLIENTS} clients, 4 admitted",
        wall,
        after,
        note=f"{dict(seen)}; RSS {before / 1024:.1f} -> {after / 1024:.1f} MB",
        extra={"bad": bad, "rss_before_kb": before, "rss_after_kb": after, "seen": dict(seen)},
    )


def run_serve(
    exe: str,
    env: dict[str, str],
    mixed: Path,
    pdf: Path,
    work: Path,
    logdir: Path,
    files: int,
    convert: Callable[[list[str], str], Any],
    rounds: int = 1,
) -> list[ServeResult]:
    """Run the serve cases.

    Args:
        exe: The ``previewer`` executable.
        env: Its environment.
        mixed: The pool's 1,000 mixed files.
        pdf: A small PDF.
        work: Work directory.
        logdir: Where logs go.
        files: How many of the mixed files go through the API.
        convert: Runs ``argv`` (bench.py's Runner.run): returns a Sample (``wall``,
            ``rss_kb``, ``cpu``, ``rc``).
        rounds: Rounds of the throughput case (round robin between the three variants,
            medians reported; the services stay up between rounds).

    Returns:
        The measured variants.
    """
    work = work / "serve"
    work.mkdir(parents=True, exist_ok=True)
    everything = sorted(mixed.iterdir())  # PDFs first, then JPEGs, PNGs, PSDs: take a spread
    step = max(1, len(everything) // max(1, files))
    picked = everything[::step][:files]
    subset = work / f"inputs-{files}"
    if not subset.exists() or len(list(subset.iterdir())) != len(picked):
        shutil.rmtree(subset, ignore_errors=True)
        subset.mkdir()
        for p in picked:
            os.link(p, subset / p.name)
    results = [_overhead(exe, env, pdf, work, logdir)]
    case = f"serve-{len(picked)}-mixed"
    tools = ["previewer convert -j 2", "API --jobs 2 (local pool)", "API --broker, 2 workers"]
    servers: dict[str, Server] = {}
    queue: Redis | None = None
    notes: dict[str, str] = {}
    samples: dict[str, list[tuple[float, int, float]]] = {t: [] for t in tools}
    try:
        servers[tools[1]] = Server(exe, env, work / "storage-local", logdir / "serve-local.log",
                                   "--jobs", "2", "--queue-size", "64")  # fmt: skip
        try:
            queue = Redis(exe, env, logdir, 2)
        except RuntimeError as exc:
            notes[tools[2]] = f"n/a ({exc})"
        else:
            servers[tools[2]] = Server(exe, env, work / "storage-broker",
                                       logdir / "serve-broker.log", "--broker", queue.url,
                                       "--jobs", "8", "--queue-size", "64")  # fmt: skip
        for server in servers.values():  # warm-up: every worker starts its engines once
            asyncio.run(_post_all(server.url, picked[:40], MIXED_CLIENTS, {"wait": 30}))
        for rnd in range(rounds):
            order = tools[rnd % len(tools) :] + tools[: rnd % len(tools)]
            for tool in order:
                if tool == tools[0]:
                    out = work / "convert-out"
                    shutil.rmtree(out, ignore_errors=True)
                    argv = [exe, "convert", str(subset), "-o", str(out), "-q", "-j", "2"]
                    sample = convert(argv, "serve-cli")
                    written = sum(1 for _ in out.rglob("*.png"))
                    if sample.rc != 0 or written != len(picked):
                        notes[tool] = f"failed: exit {sample.rc}, {written}/{len(picked)} PNGs"
                        continue
                    samples[tool].append((sample.wall, sample.rss_kb, sample.cpu))
                elif tool in servers:
                    wall, rss, cpu, problem = _post_round(servers[tool], picked)
                    if problem:
                        notes[tool] = problem
                        continue
                    samples[tool].append((wall, rss, cpu))
    finally:
        for server in servers.values():
            server.close()
        if queue is not None:
            queue.close()
    for tool in tools:
        got = samples[tool]
        if not got:
            results.append(ServeResult(case, tool, note=notes.get(tool, "not measured")))
            continue
        wall = _median([g[0] for g in got])
        row = ServeResult(case, tool, wall, max(g[1] for g in got), _median([g[2] for g in got]))
        row.files_per_s = len(picked) / wall
        row.note = "; ".join(x for x in (notes.get(tool, ""), f"{len(got)} round(s)") if x)
        results.append(row)
    results.append(_overload(exe, env, pdf, work, logdir))
    return results


def serve_targets(results: list[ServeResult]) -> list[dict[str, Any]]:
    """The serve targets, as bench.py prints them."""
    found: list[dict[str, Any]] = []
    by = {(r.case, r.tool): r for r in results}
    for r in results:
        if r.case == "serve-overhead-pdf" and "p50_ms" in r.extra:
            p50, p99 = r.extra["p50_ms"], r.extra["p99_ms"]
            found.append({"target": "serve: API overhead p50 <= 30 ms (small PDF, 4 clients)",
                          "pass": p50 <= 30, "value": f"{p50:.0f} ms"})  # fmt: skip
            found.append({"target": "serve: API overhead p99 <= 100 ms",
                          "pass": p99 <= 100, "value": f"{p99:.0f} ms"})  # fmt: skip
        if r.case == "serve-overload-4x" and "bad" in r.extra:
            drift = (r.extra["rss_after_kb"] - r.extra["rss_before_kb"]) / 1024
            found.append({"target": "serve: 4x overload, responses other than 2xx/429 = 0",
                          "pass": r.extra["bad"] == 0, "value": str(r.extra["bad"])})  # fmt: skip
            found.append({"target": "serve: 4x overload, server RSS drift < 10 MB",
                          "pass": abs(drift) < 10, "value": f"{drift:+.1f} MB"})  # fmt: skip
    cases = {r.case for r in results if r.case.endswith("-mixed")}
    for case in sorted(cases):
        cli = by.get((case, "previewer convert -j 2"))
        for tool, goal in (("API --jobs 2 (local pool)", 0.9), ("API --broker, 2 workers", 0.8)):
            api = by.get((case, tool))
            if cli and api and cli.files_per_s and api.files_per_s:
                ratio = api.files_per_s / cli.files_per_s
                found.append({
                    "target": f"serve: {tool} >= {goal}x convert -j 2 files/s ({case})",
                    "pass": ratio >= goal,
                    "value": f"{ratio:.2f}x ({api.files_per_s:.1f} vs {cli.files_per_s:.1f})",
                })  # fmt: skip
    return found


def inprocess_main() -> None:
    """``python -c ... PDF OUT THREADS COUNT``: print the in-process times as JSON."""
    import json
    import sys

    pdf, out, threads, count = sys.argv[1:5]
    print(json.dumps(_in_process_times(Path(pdf), Path(out), int(threads), int(count))))
