"""Cost classes, fairness and poison pills on the queue: real redis-server, real workers.

The estimator is checked on generated files (a tiny PNG, a 300-page PDF, a giant page, an XLSX);
the queue tests run a two-process ``previewer worker`` (its default layout: light, office and
heavy nodes) under a burst of small files with giant ones beside it, two submitters of very
different sizes, and a file whose worker process is killed each time it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("celery")

from officegen import xlsx
from support import requires_engine, wait_for
from test_queue import Redis, Worker, _tripwire_env

from previewer.options import Options, PageSpec, parse_sizes
from previewer.queue import (
    CLASSES,
    ConverterCost,
    FileFacts,
    choose_route,
    estimate,
    queue_stats,
    worker_queues,
)
from previewer.queue.cost import HEAVY_SECONDS, HISTORY_MIN, probe
from previewer.queue.nodes import default_layout
from previewer.queue.routing import COST_KEY
from previewer.registry import Registry
from previewer.results import BatchReport, FileResult

pytestmark = requires_engine("redis-server")

SMALL = 80


def _tiny_png(path: Path, i: int = 0) -> Path:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (60 + i % 40, 40 + i % 30), (i * 3 % 255, 90, 200))
    ImageDraw.Draw(im).line((0, 0, 30, 30), fill=(255, 255, 0), width=3)
    im.save(path)
    return path


def _long_pdf(path: Path, pages: int = 300) -> Path:
    import pymupdf

    doc = pymupdf.open()
    for p in range(pages):
        page = doc.new_page()
        page.insert_text((72, 72), f"page {p + 1}", fontsize=24)
        page.draw_rect((60, 100, 500, 700), color=(0, 0, 1), fill=(0.9, 0.9, 1))
    doc.save(path)
    return path


def _giant_pdf(path: Path) -> Path:
    """One 20,000 x 30,000 pt vector page: cheap to write, seconds to render at 8000 px."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=20_000, height=30_000)
    for k in range(400):
        x, y = (k * 613) % 19_000, (k * 997) % 29_000
        page.draw_circle(
            (x + 500, y + 500), 300 + k % 500, color=(0, 0.3, 0.6), fill=(k % 7 / 7, 0.4, 0.2)
        )
    doc.save(path)
    return path


def _workbook(path: Path, sheets: int) -> Path:
    xlsx(path, '<c r="A1" t="n"><v>1</v></c>')
    with zipfile.ZipFile(path, "a") as zf:
        for n in range(2, sheets + 1):
            zf.writestr(f"xl/worksheets/sheet{n}.xml", "<worksheet/>")
    return path


# --------------------------------------------------------------------------- the estimator


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cost")
    return {
        "png": _tiny_png(tmp / "tiny.png"),
        "long": _long_pdf(tmp / "long.pdf"),
        "giant": _giant_pdf(tmp / "giant.pdf"),
        "xlsx": _workbook(tmp / "book.xlsx", 1),
        "sheets": _workbook(tmp / "sheets.xlsx", 200),
    }


def test_estimator_classes(samples: dict[str, Path]) -> None:
    registry = Registry()

    def route(name: str, **kw: Any) -> tuple[str, tuple[str, ...]]:
        r = choose_route(str(samples[name]), Options(**kw), "t", registry=registry)
        return r.cls, r.estimate.reasons

    assert route("png") == ("light", ())
    # A tiny raster is not enlarged: an 8000 px request does not make it heavy.
    assert route("png", sizes=parse_sizes(["8000"])) == ("light", ())
    cls, why = route("long", pages=PageSpec.parse("all"))
    assert cls == "heavy" and "300 pages" in why
    assert route("long") == ("light", ())  # the same file, first page only
    cls, why = route("giant", sizes=parse_sizes(["8000"]))
    assert cls == "heavy" and "43 MP output page" in why and "600 M pt² page" in why
    assert route("xlsx")[0] == "office"
    cls, why = route("sheets")  # a giant workbook goes with the giants, not the documents
    assert cls == "heavy" and "200 sheets" in why
    facts = probe(str(samples["long"]), Options(), registry)
    assert (facts.converter, facts.pages, round(facts.page_area or 0)) == (
        "pdf-pymupdf",
        300,
        500990,
    )


def test_estimator_is_pure_and_uses_history() -> None:
    small = FileFacts("text/plain", "slowpoke", 100)
    assert estimate(small, Options()).cls == "light"
    slow = {"slowpoke": ConverterCost(HISTORY_MIN, HISTORY_MIN * 3.0, HISTORY_MIN)}
    found = estimate(small, Options(), slow)
    assert found.cls == "heavy" and found.seconds == pytest.approx(3.0)
    assert found.seconds > HEAVY_SECONDS
    too_little = {"slowpoke": ConverterCost(HISTORY_MIN - 1, 100.0, HISTORY_MIN - 1)}
    assert estimate(small, Options(), too_little).cls == "light"
    huge_raster = FileFacts("image/png", "raster-pillow", 10**6, 1, None, 1.0, 60_000_000)
    assert estimate(huge_raster, Options()).reasons == ("60 MP raster",)
    big_file = FileFacts("application/pdf", "pdf-pymupdf", 80 * 2**20, 1, 500_000.0, 1.4)
    assert estimate(big_file, Options()).cls == "heavy"


def test_probe_is_cheap(samples: dict[str, Path]) -> None:
    """Classing a file reads headers, never renders (the benchmark measures its cost).

    Documents are probed in a limited child process (a fork, or the fork server when this
    process has threads), so their bound only says that nothing was rendered: the giant page
    at 8,000 px takes seconds to render.
    """
    registry = Registry()
    for name, limit in (("png", 0.005), ("long", 0.5), ("giant", 0.5)):
        choose_route(str(samples[name]), Options(), "t", registry=registry)  # imports, caches
        started = time.perf_counter()
        for _ in range(20):
            choose_route(str(samples[name]), Options(), "t", registry=registry)
        assert (time.perf_counter() - started) / 20 < limit, name


def test_documents_are_probed_in_a_child_process(samples: dict[str, Path]) -> None:
    """MuPDF never parses a submitted document in the submitting process (a service's)."""
    script = (
        "import pymupdf\n"
        "calls = []\n"
        "real_open = pymupdf.open\n"
        "pymupdf.open = lambda *a, **k: calls.append(a) or real_open(*a, **k)\n"
        "from previewer.options import Options\n"
        "from previewer.queue.cost import probe\n"
        "from previewer.registry import Registry\n"
        f"facts = probe({str(samples['long'])!r}, Options.build(pages='all'), Registry())\n"
        "print(facts.pages, len(calls))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["300", "0"], out.stderr


def test_probe_worker_moves_to_one_warm_worker(samples: dict[str, Path], tmp_path: Path) -> None:
    """The submitter's probes: a few limited children, then one persistent limited worker."""
    from previewer.queue.probing import COLD_PROBES, ProbeWorker

    registry = Registry()
    options = Options.build(pages="all")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 50)
    probes = ProbeWorker()
    try:
        found = [probe(str(samples["long"]), options, registry, place=probes) for _ in range(8)]
        assert [f.pages for f in found] == [300] * 8
        assert probes._calls == 8 and probes._pool is not None  # warm after COLD_PROBES
        worker = probes._pool.workers[0].process.pid
        again = probe(str(samples["long"]), options, registry, place=probes)
        assert again.pages == 300 and probes._pool.workers[0].process.pid == worker
        # A file MuPDF cannot read: only the cheap facts, and the worker serves on.
        bad = probe(str(broken), options, registry, place=probes)
        assert bad.pages is None and bad.size == broken.stat().st_size
        assert probe(str(samples["long"]), options, registry, place=probes).pages == 300
        assert COLD_PROBES < 8
    finally:
        probes.close()
    assert probes._pool is None


def test_worker_queue_names_and_layout() -> None:
    assert worker_queues() == ["previewer.heavy", "previewer.office", "previewer.light"]
    assert worker_queues(["light", "big", "light"]) == ["previewer.light", "big"]
    assert [(n.role, n.concurrency, n.queues, n.nice) for n in default_layout(4)] == [
        ("light", 4, ("previewer.light",), 0),
        ("office", 2, ("previewer.office",), 5),
        ("heavy", 4, ("previewer.heavy",), 19),
    ]
    assert [n.role for n in default_layout(1)] == ["all"]
    assert [n.role for n in default_layout(4, light_slots=0)] == ["all"]
    assert [n.concurrency for n in default_layout(2, 1, heavy_slots=1)] == [1, 1, 1]


# --------------------------------------------------------------------------- real workers


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Worker]]:
    """Redis and one ``previewer worker -c 2`` (default layout: light, office, heavy nodes)."""
    tmp = tmp_path_factory.mktemp("fairq")
    redis = Redis(tmp)
    worker = None
    try:
        worker = Worker(
            redis.url, "pair", tmp / "pair.log", concurrency=2, extra=("--stats-interval", "1")
        )
        yield redis.url, worker
    finally:
        if worker is not None:
            worker.kill()
        redis.stop()


def _submit(sources: list[Path], options: Options, url: str, **kw: Any) -> BatchReport:
    from previewer.queue import submit_many

    return submit_many(sources, options, broker=url, **kw)


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["report"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _waits(report: BatchReport) -> dict[str, float]:
    return {Path(r.input).name: float((r.queue or {})["wait"]) for r in report.results}


def test_giants_do_not_delay_small_files(pair: tuple[str, Worker], tmp_path: Path) -> None:
    """80 small files alone, then the same burst while a 20,000 x 30,000 pt page at 8000 px and
    a 300-page PDF (-p all) run: each small file waits at most 1.2x its wait without the giants
    (plus CI slack), the giants finish on the heavy node; with everything in one queue (the old
    layout, forced with queue=...) small files wait behind the giants."""
    url, worker = pair
    small = tmp_path / "small"
    small.mkdir()
    for i in range(SMALL):
        _tiny_png(small / f"s{i:03d}.png", i)
    giant = _giant_pdf(tmp_path / "giant.pdf")
    long = _long_pdf(tmp_path / "long.pdf")
    out = tmp_path / "out"

    def opts(name: str, **kw: Any) -> Options:
        return Options(out_dir=out / name, **kw)

    _submit([small], opts("warm"), url)  # warm both nodes
    alone = _submit([small], opts("alone"), url)
    assert alone.converted == SMALL

    def giants(queue: str | None, tag: str) -> list[tuple[threading.Thread, dict[str, Any]]]:
        return [
            _in_thread(
                lambda: _submit(
                    [giant], opts(f"g{tag}", sizes=parse_sizes(["8000"])), url, queue=queue
                )
            ),
            _in_thread(
                lambda: _submit(
                    [long], opts(f"l{tag}", pages=PageSpec.parse("all")), url, queue=queue
                )
            ),
        ]

    import redis as redis_py

    client = redis_py.Redis.from_url(url)
    running = giants(None, "1")
    wait_for(lambda: client.hlen("unacked") >= 1, 20, "a giant to start")
    with_giants = _submit([small], opts("with"), url)
    for thread, _box in running:
        thread.join(120)
    reports = [box["report"] for _t, box in running]
    assert [r.converted for r in reports] == [1, 1], [b for _t, b in running]
    assert len(reports[1].results[0].outputs) == 300
    for report in reports:
        info = report.results[0].queue or {}
        assert info["class"] == "heavy" and info["queue"] == "previewer.heavy"
        assert "heavy" in info["worker"]
    base, now = _waits(alone), _waits(with_giants)
    assert with_giants.converted == SMALL and set(now) == set(base)
    slack = 0.5
    late = {n: (base[n], now[n]) for n in base if now[n] > 1.2 * base[n] + slack}
    assert not late, late
    assert {(r.queue or {})["class"] for r in with_giants.results} == {"light"}

    # The control: giants in the light queue with the small files (one queue, FIFO).
    running = giants("previewer.light", "2")
    wait_for(lambda: client.hlen("unacked") >= 2, 20, "both giants to start")
    one_queue = _submit([small], opts("one"), url)
    for thread, _box in running:
        thread.join(120)
    control = [box["report"].results[0] for _t, box in running]
    assert [r.status for r in control] == ["converted"] * 2
    # Small files waited for a good part of a giant's time, far longer than with classes.
    shortest = min(r.duration for r in control)
    assert max(_waits(one_queue).values()) > max(0.5 * shortest, max(now.values())), (
        shortest,
        max(_waits(one_queue).values()),
        max(now.values()),
    )

    # Visibility: the workers' recorded waits per class, and their periodic log line.
    stats = queue_stats(client)
    assert set(stats) == set(CLASSES)
    assert stats["light"].recent > 0 and stats["light"].depth == 0
    assert stats["heavy"].recent >= 2
    assert "queues: light depth 0" in worker.text()
    # The heavy node runs at the lowest priority, the office node a little below normal:
    # light files keep the cores.
    import psutil

    nodes = psutil.Process(worker.proc.pid).children()
    assert sorted(p.nice() for p in nodes) == [0, 5, 19]
    heavy = next(p for p in nodes if p.nice() == 19)
    assert os.sched_getscheduler(heavy.pid) == os.SCHED_IDLE  # a waking light file preempts


def test_small_submitter_is_not_stuck_behind_a_burst(
    pair: tuple[str, Worker], tmp_path: Path
) -> None:
    """One submitter sends 300 small files, another 3 a moment later: the three finish within
    a few light-file times while the big run is still going (it keeps only a window queued)."""
    url, _worker = pair
    burst = tmp_path / "burst"
    burst.mkdir()
    for i in range(300):
        _tiny_png(burst / f"b{i:03d}.png", i)
    few = [_tiny_png(tmp_path / f"few{i}.png", i) for i in range(3)]
    done: list[float] = []
    started = time.monotonic()
    thread, box = _in_thread(
        lambda: _submit(
            [burst],
            Options(out_dir=tmp_path / "big"),
            url,
            tenant="bulk",
            on_result=lambda r: done.append(time.monotonic()),
        )
    )
    wait_for(lambda: len(done) >= 30, 60, "the burst to get going")
    per_file = (done[-1] - done[9]) / (len(done) - 10)  # seconds between two results, 2 slots
    t0 = time.monotonic()
    small = _submit(few, Options(out_dir=tmp_path / "small"), url, tenant="alice")
    took = time.monotonic() - t0
    left = 300 - len(done)
    thread.join(120)
    big = box["report"]
    assert small.converted == 3 and big.converted == 300
    assert {(r.queue or {})["tenant"] for r in small.results} == {"alice"}
    assert {(r.queue or {})["tenant"] for r in big.results} == {"bulk"}
    assert left > 50, "the burst was over before the small run: nothing was measured"
    # Behind at most a window (24, in bundles of 8) of the burst's files, served by two slots.
    assert took < 10 * per_file * 2 + 0.5, (took, per_file)
    assert time.monotonic() - started < 80


def test_file_killing_its_worker_twice_fails_cleanly(tmp_path: Path) -> None:
    """A heavy file whose worker process is SIGKILLed while converting it is delivered again
    once; killed again, the next delivery fails it with an EngineError naming the file, and
    the run ends (exit 7) instead of looping."""
    import redis as redis_py

    env = _tripwire_env(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("HANG PID\n")
    pid_file = tmp_path / "victim.txt.pid"
    redis = Redis(tmp_path)
    worker = None
    try:
        # History says the tripwire converter is slow: its files are classed heavy.
        redis_py.Redis.from_url(redis.url).hset(
            COST_KEY,
            mapping={"test-tripwire|n": 10, "test-tripwire|s": 50.0, "test-tripwire|p": 10},
        )
        worker = Worker(redis.url, "pp", tmp_path / "pp.log", concurrency=2, env=env, timeout=60)
        submitter = subprocess.Popen(
            [sys.executable, "-m", "previewer", "convert", str(victim), "--json"]
            + ["-o", str(tmp_path / "out"), "--broker", redis.url, "--timeout", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            killed: list[int] = []
            for _ in range(2):
                wait_for(
                    lambda: pid_file.exists() and pid_file.read_text().strip().isdigit(),
                    30,
                    "the victim to be converting",
                )
                pid = int(pid_file.read_text())
                assert pid not in killed  # a new worker process each time
                pid_file.unlink()
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            stdout, stderr = submitter.communicate(timeout=30)
        finally:
            if submitter.poll() is None:
                submitter.kill()
                submitter.wait(10)
        log = worker.text()
    finally:
        if worker is not None:
            worker.kill()
        redis.stop()
    assert submitter.returncode == 7, stderr
    (line,) = [json.loads(x) for x in stdout.splitlines()]
    result = FileResult.from_dict(line)
    assert result.status == "failed" and result.error is not None
    assert type(result.error).__name__ == "EngineError"
    assert "killed its worker twice" in str(result.error) and "victim.txt" in stderr
    assert line["queue"]["class"] == "heavy" and line["queue"]["attempt"] == 3
    assert log.count("exited with 'signal 9 (SIGKILL)'") == 2
    assert not pid_file.exists()  # the third delivery did not convert
