"""Queue workers: a real redis-server on a loopback port and real Celery worker processes."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("celery")


from support import (
    clean_env,
    plugin_site,
    requires_engine,
    wait_for,
    wait_until,
)

import previewer
from previewer.errors import EngineUnavailableError, InputError
from previewer.options import Limits, Options, PageSpec, parse_sizes
from previewer.results import BatchReport

REDIS = shutil.which("redis-server")
pytestmark = requires_engine("redis-server")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        assert REDIS is not None
        self.proc = subprocess.Popen(
            [
                REDIS,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(up, 10, "redis-server")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class Worker:
    def __init__(
        self,
        url: str,
        name: str,
        log: Path,
        *,
        timeout: float = 30,
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.log = log
        self.fh = open(log, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "previewer",
                "worker",
                "--broker",
                url,
                "-c",
                str(concurrency),
                "--timeout",
                str(timeout),
                "-n",
                f"{name}@%h",
                *extra,
            ],
            stdout=self.fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log.parent,
            env=env,
        )
        # Without -Q, two or more processes run three nodes (light, office, heavy): wait for all.
        nodes = 3 if concurrency >= 2 and "-Q" not in extra else 1
        try:
            wait_for(
                lambda: log.read_bytes().count(b" ready.") >= nodes or self.proc.poll() is not None,
                30,
                f"worker {name}",
            )
            assert self.proc.poll() is None, log.read_text()
        except BaseException:
            self.kill()  # a worker that did not start is not left behind
            raise

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.fh.close()


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Worker]]]:
    tmp = tmp_path_factory.mktemp("queue")
    redis = Redis(tmp)
    workers: list[Worker] = []
    try:
        for i in range(2):  # one by one: a worker that fails to start leaves none behind
            workers.append(Worker(redis.url, f"w{i}", tmp / f"w{i}.log"))
        yield redis.url, workers
    finally:
        for w in workers:
            w.kill()
        redis.stop()


def _make_inputs(root: Path) -> None:
    import pymupdf
    from PIL import Image, ImageDraw

    (root / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "report.pdf", root / "report.pdf")
    shutil.copy(SAMPLES / "photo.jpg", root / "sub" / "photo.jpg")
    for i in range(9):
        doc = pymupdf.open()
        for p in range(1 + i % 3):
            page = doc.new_page(width=300 + 40 * i, height=400)
            page.draw_rect((20, 20, 200, 100 + 20 * p), color=(0, 0, 1), fill=(i / 9, 0.5, 0.2))
            page.insert_text((30, 300), f"doc {i} page {p}", fontsize=20)
        doc.save(root / ("sub" if i % 2 else ".") / f"gen{i}.pdf")
    for i in range(8):
        im = Image.new("RGB", (200 + 30 * i, 150 + 10 * i), (20 * i, 100, 200 - 20 * i))
        ImageDraw.Draw(im).ellipse((10, 10, 100 + 5 * i, 90), fill=(255, 255, 0))
        im.save(root / f"img{i}.jpg", quality=85)
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj<<>>\ngarbage" * 3)


def _pngs(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith(".previewer-journal")
    }


def _summary(
    report: BatchReport,
) -> list[tuple[str, str, list[tuple[int, str, str, int, int]], str | None]]:
    return sorted(
        (
            r.input,
            r.status,
            sorted((o.page, o.size, str(o.path), o.width, o.height) for o in r.outputs),
            type(r.error).__name__ if r.error else None,
        )
        for r in report.results
    )


def test_mixed_batch_matches_local_run_and_bad_file_fails(
    queue: tuple[str, list[Worker]], tmp_path: Path
) -> None:
    from previewer.tasks import submit_many

    url, workers = queue
    src = tmp_path / "in"
    _make_inputs(src)
    options = Options(
        sizes=parse_sizes(["128", "300x200"]),
        pages=PageSpec.parse("all"),
        out_dir=tmp_path / "remote",
    )
    progress: list[tuple[int, int]] = []
    seen: list[str] = []
    report = submit_many(
        [src],
        options,
        broker=url,
        on_result=lambda r: seen.append(r.input),
        on_progress=lambda d, t: progress.append((d, t)),
    )
    local = previewer.convert_many(
        [src], options=Options(sizes=options.sizes, pages=options.pages, out_dir=tmp_path / "local")
    )

    assert len(report.results) == len(local.results) == 20
    assert progress[0] == (0, 20) and progress[-1] == (20, 20)
    assert sorted(seen) == sorted(r.input for r in report.results)
    assert report.converted == local.converted == 19
    assert report.skipped == local.skipped == 0
    assert report.failures_by_type() == local.failures_by_type() == {"InputError": 1}
    assert report.exit_code == local.exit_code == 10
    bad = next(r for r in report.results if r.status == "failed")
    assert bad.input.endswith("broken.pdf") and isinstance(bad.error, InputError)
    assert str(bad.error) == str(next(r for r in local.results if r.status == "failed").error)
    # Same outputs, same names (mirrored tree), identical bytes; paths reported like a local run.
    remote_files, local_files = _pngs(tmp_path / "remote"), _pngs(tmp_path / "local")
    assert len(remote_files) > 40 and remote_files == local_files
    assert _summary(report) == [
        (
            i,
            s,
            [
                (p, z, path.replace(str(tmp_path / "local"), str(tmp_path / "remote")), w, h)
                for p, z, path, w, h in o
            ],
            e,
        )
        for i, s, o, e in _summary(local)
    ]
    # Both workers took part, and they keep serving after the bad file.
    assert all("previewer.convert_file" in w.text() for w in workers)
    again = submit_many([SAMPLES / "photo.jpg"], options, broker=url)
    assert again.exit_code == 0 and again.results[0].status == "converted"
    single_bad = submit_many([src / "broken.pdf"], options, broker=url)
    assert single_bad.exit_code == 5 and isinstance(single_bad.results[0].error, InputError)


def test_worker_describes_the_file_when_asked(
    queue: tuple[str, list[Worker]], tmp_path: Path
) -> None:
    """``describe``: the task returns the description of its file (as ``api.info`` gives it)
    with the previews; not asked, the result has none and its JSON line keeps its shape."""
    from previewer import batch
    from previewer.queue.submit import QueueExecutor
    from previewer.registry import Registry
    from previewer.results import FileResult

    url, _workers = queue
    pdf = SAMPLES / "report.pdf"
    local = previewer.info(pdf, metadata=["checksum"])
    results = {}
    for describe in (("checksum",), None):
        options = Options(
            sizes=parse_sizes(["64"]), pages=PageSpec.parse("2"), out_dir=tmp_path / str(describe)
        )
        executor = QueueExecutor(url)
        executor.describe = describe
        jobs = batch.collect([str(pdf)], options.out_dir)
        (results[describe],) = batch.run(jobs, options, Registry(), executor=executor).results
    described, plain = results[("checksum",)], results[None]
    assert described.status == plain.status == "converted"
    assert [p.page for p in described.outputs] == [p.page for p in plain.outputs] == [2]
    info = described.info
    assert info is not None and plain.info is None
    assert (info.mime, info.converter, info.pages, info.units) == (
        local.mime, local.converter, local.pages, local.units
    )  # fmt: skip
    assert info.pages == 2 and info.page_sizes == local.page_sizes
    assert info.sha256 == local.sha256 and info.extracted == local.extracted
    assert info.extracted is not None and info.extracted["checksum"]["sha256"] == local.sha256
    assert "info" not in plain.to_dict() and described.to_dict()["info"]["pages"] == 2
    again = FileResult.from_dict(described.to_dict(detail=True))
    assert again.info == info


def test_describe_keys_of_a_route() -> None:
    from previewer.queue.worker import _describe_keys

    assert _describe_keys(None) is None
    assert _describe_keys({"queue": "previewer.light"}) is None
    assert _describe_keys({"describe": []}) == ()
    assert _describe_keys({"describe": ["checksum", "exif"]}) == ("checksum", "exif")
    assert _describe_keys({"describe": ["no-such-key"]}) is None  # left to the submitter
    assert _describe_keys({"describe": "checksum"}) is None


def test_killed_worker_task_is_redelivered(tmp_path: Path) -> None:
    import pymupdf

    from previewer.tasks import submit_many

    doc = pymupdf.open()
    for i in range(10):
        page = doc.new_page(width=600, height=800)
        for k in range(300):
            page.draw_circle(
                (50 + (k * 37 + i) % 500, 50 + (k * 53) % 700),
                10 + k % 40,
                color=(0, 0.2, 0.5),
                fill=(0.1, k % 5 / 5, 0.3),
            )
    doc.save(tmp_path / "long.pdf")
    options = Options(
        sizes=parse_sizes(["1600"]),
        pages=PageSpec.parse("all"),
        out_dir=tmp_path / "out",
        limits=Limits(timeout=8),
    )
    redis = Redis(tmp_path)
    first = second = None
    try:
        first = Worker(redis.url, "first", tmp_path / "first.log", timeout=8)
        box: dict[str, object] = {}
        thread = threading.Thread(
            target=lambda: box.update(
                report=submit_many([tmp_path / "long.pdf"], options, broker=redis.url)
            ),
            daemon=True,
        )
        thread.start()
        wait_for(
            lambda: "previewer.convert_file" in first.text(),
            20,
            "the task to reach the first worker",
        )
        time.sleep(0.8)
        first.kill()  # SIGKILL to the whole worker (main process and child), mid-task
        assert thread.is_alive(), "the task finished before the worker was killed"
        (task_id,) = re.findall(r"convert_file\[([0-9a-f-]+)\] received", first.text())
        second = Worker(redis.url, "second", tmp_path / "second.log", timeout=8)
        thread.join(40)  # visibility timeout (14 s) + restore scan interval (3 s)
        assert not thread.is_alive(), "the task was not redelivered"
        report = box["report"]
        assert isinstance(report, BatchReport)
        assert f"convert_file[{task_id}] received" in second.text()  # the same task, again
    finally:
        for w in (first, second):
            if w is not None:
                w.kill()
        redis.stop()
    assert report.exit_code == 0 and len(report.results[0].outputs) == 10
    previewer.convert_many(
        [tmp_path / "long.pdf"],
        options=Options(sizes=options.sizes, pages=options.pages, out_dir=tmp_path / "local"),
    )
    assert _pngs(tmp_path / "out") == _pngs(
        tmp_path / "local"
    )  # nothing missing, no .tmp leftovers


def test_unreachable_broker_fails_cleanly(tmp_path: Path) -> None:
    from previewer.tasks import BrokerUnavailableError, submit_many

    url = f"redis://127.0.0.1:{_free_port()}/0"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as info:
        submit_many([SAMPLES / "photo.jpg"], Options(out_dir=tmp_path), broker=url)
    assert time.monotonic() - started < 20
    assert isinstance(info.value, EngineUnavailableError) and info.value.exit_code == 4
    assert "cannot reach the queue broker" in str(info.value) and str(_free_port) not in str(
        info.value
    )
    assert not list(tmp_path.iterdir())


def test_worker_command_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "previewer", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and "--concurrency" in out.stdout and "--broker" in out.stdout


def test_options_round_trip() -> None:
    options = Options(
        sizes=parse_sizes(["128", "300x", "x200", "1024x768"]),
        pages=PageSpec.parse("1,3,5-7"),
        out_dir=Path("/x/y"),
        upscale=True,
        password="pw",
        converter="pdf",
        limits=Limits(max_pages=7, timeout=3.5, max_memory=10**9),
        keep_temp=True,
    )
    assert Options.from_dict(options.to_dict()) == options
    assert Options.from_dict(Options().to_dict()) == Options()


def test_cli_broker_flag_matches_a_local_run(
    queue: tuple[str, list[Worker]], tmp_path: Path
) -> None:
    url, _workers = queue
    src = tmp_path / "in"
    _make_inputs(src)
    common = [sys.executable, "-m", "previewer", "convert", str(src), "-s", "96", "--json"]
    remote = subprocess.run(
        common
        + [
            "-o",
            str(tmp_path / "remote"),
            "--broker",
            url,
            "--report",
            str(tmp_path / "remote.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    local = subprocess.run(
        common + ["-o", str(tmp_path / "local"), "-j", "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert remote.returncode == local.returncode == 10, remote.stderr
    assert "1 failed (InputError: 1)" in remote.stderr
    lines = [json.loads(x) for x in remote.stdout.splitlines()]
    assert lines == [json.loads(x) for x in (tmp_path / "remote.jsonl").read_text().splitlines()]
    assert sorted((Path(r["input"]).name, r["status"]) for r in lines) == sorted(
        (Path(r["input"]).name, r["status"]) for r in map(json.loads, local.stdout.splitlines())
    )
    assert _pngs(tmp_path / "remote") == _pngs(tmp_path / "local")
    bad = subprocess.run(
        common + ["-o", "-", "--broker", url], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "cannot be combined with --broker" in bad.stderr


@pytest.mark.parametrize("persistent", [True, False], ids=["with-its-data", "data-lost"])
def test_redis_restart_mid_run_completes(
    tmp_path: Path, persistent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped and started again in the middle of a run: the submitter rides out the
    outage, a worker that finished a task meanwhile keeps retrying to store its result, and the
    run completes with every file converted. Without persistence Redis comes back empty (queue,
    running tasks and results lost): the submitter notices and sends the lost files again."""
    import pymupdf

    from previewer.tasks import submit_many

    data = tmp_path / "redis"
    data.mkdir()
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    assert REDIS is not None

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                REDIS,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "yes" if persistent else "no",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(up, 10, "redis-server")
        return proc

    server = start()
    try:
        worker = Worker(url, "restart", tmp_path / "w.log")
    except BaseException:
        server.kill()  # never leave the server behind, even when the worker cannot start
        server.wait(10)
        raise
    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):
        doc = pymupdf.open()
        for p in range(4):
            page = doc.new_page()
            page.insert_text((72, 72 + p * 20), f"document {i} page {p}")
        doc.save(src / f"doc{i}.pdf")
    options = Options(
        sizes=parse_sizes(["800"]), pages=PageSpec.parse("all"), out_dir=tmp_path / "out"
    )
    results: list[str] = []
    outcome: list[object] = []

    def submit() -> None:
        try:
            outcome.append(
                submit_many(
                    [src],
                    options,
                    broker=url,
                    outage_grace=30,
                    on_result=lambda r: results.append(r.status),
                )
            )
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)

    caplog.set_level(logging.WARNING, logger="previewer.tasks")
    thread = threading.Thread(target=submit)
    thread.start()
    try:
        wait_for(lambda: len(results) >= 1, 60, "a first result")
        server.terminate()  # SIGTERM: Redis writes its data and exits
        server.wait(10)
        time.sleep(2)
        server = start()
        thread.join(120)
        assert not thread.is_alive(), "the submitter hung after the outage"
        # Files resent after the data loss may still be converting a second time when the run
        # has its results: let them finish (they replace the same previews atomically) before
        # the worker is killed, or a kill mid-write would leave their temporary file.
        wait_until(lambda: not list((tmp_path / "out").glob("*.tmp")), 30)
    finally:
        worker.kill()
        server.kill()
        server.wait(10)
    (report,) = outcome
    assert isinstance(report, BatchReport), report
    assert len(report.results) == 8
    assert [r.status for r in report.results] == ["converted"] * 8, [
        str(r.error) for r in report.results
    ]
    assert report.exit_code == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 8 * 4
    assert list((tmp_path / "out").glob("*.tmp")) == []
    if not persistent:
        assert "sending them again" in caplog.text, caplog.text


def test_lost_tasks_reads_the_brokers_layout(tmp_path: Path) -> None:
    """What the submitter counts as lost, against kombu's real Redis layout: a task in the
    queue, one being processed (the ``unacked`` hash) and one with a stored result are not
    lost; once the queue is gone, its task is."""
    from celery import Celery

    from previewer.tasks import TASK_NAME, _lost_tasks, _server_id, configure

    redis = Redis(tmp_path)
    try:
        client = configure(Celery("lost-test"), broker=redis.url)
        client.backend.on_task_call = lambda producer, task_id: None
        ids = [client.send_task(TASK_NAME, args=[f"/f{i}", {}, None]).id for i in range(3)]
        assert _lost_tasks(client, set(ids)) == set()
        with client.connection_for_write() as conn:
            channel = conn.default_channel
            raw = channel.client.rpop("celery")  # the oldest message, as a worker takes it
            message = json.loads(raw)
            channel.client.hset(channel.unacked_key, "tag-1", json.dumps([message, "", "celery"]))
            taken = message["headers"]["id"]
            assert taken == ids[0]
            backend = client.backend  # a stored result, as a worker leaves it
            backend.client.set(backend.get_key_for_task(ids[1]), json.dumps({"status": "SUCCESS"}))
            assert _lost_tasks(client, set(ids)) == set()
            channel.client.delete("celery")  # the queue is lost; ids[1] is done, ids[0] running
        assert _lost_tasks(client, set(ids)) == {ids[2]}
        assert _server_id(client) not in (None, "")
    finally:
        redis.stop()


def _tripwire_env(tmp: Path) -> dict[str, str]:
    """An environment whose previewer loads tests.plugins.faulty.TripwireConverter as an
    installed plugin (a dist-info with the entry point on PYTHONPATH), for workers and CLIs."""
    return clean_env(pythonpath=[plugin_site(tmp / "site")])


def _outcomes(stdout: str) -> dict[str, tuple[str, str | None, int | None]]:
    lines = [json.loads(x) for x in stdout.splitlines()]
    return {
        Path(r["input"]).name: (
            r["status"],
            r["error"]["type"] if r["error"] else None,
            r["error"]["exit_code"] if r["error"] else None,
        )
        for r in lines
    }


def test_failures_match_a_local_run(tmp_path: Path) -> None:
    """An engine overrunning the timeout (NAP), a conversion hanging in Python (HANG, stopped
    at the soft time limit) and one deaf to it (STUCK, killed at the hard limit) are
    EngineTimeoutError (exit 8) on the queue as in a local batch, not "unexpected
    SoftTimeLimitExceeded" or "queue worker failed: TimeLimitExceeded" (exit 7); a plugin's
    own error class comes back with its name and exit code; a file that crashes its worker
    process (ABORT) is an EngineError after two attempts instead of being requeued for
    ever."""
    env = _tripwire_env(tmp_path)
    src = tmp_path / "in"
    src.mkdir()
    for word in ("HANG", "NAP", "STUCK", "ODD", "ABORT", "fine"):
        (src / f"{word.lower()}.txt").write_text(f"{word}\n")
    (src / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj<<>>\ngarbage" * 3)
    redis = Redis(tmp_path)
    worker = None
    try:
        worker = Worker(redis.url, "tw", tmp_path / "tw.log", concurrency=2, env=env)
        common = [sys.executable, "-m", "previewer", "convert", "--json", "--timeout", "1"]
        started = time.monotonic()
        remote = subprocess.run(
            [*common, str(src), "-o", str(tmp_path / "remote"), "--broker", redis.url],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        elapsed = time.monotonic() - started
        single = subprocess.run(
            [*common, str(src / "hang.txt"), "-o", str(tmp_path / "one"), "--broker", redis.url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        stuck = subprocess.run(
            [*common, str(src / "stuck.txt"), "-o", str(tmp_path / "one"), "--broker", redis.url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        worker_log = worker.text()
    finally:
        if worker is not None:
            worker.kill()
        redis.stop()
    local = subprocess.run(
        [*common, str(src), "-o", str(tmp_path / "local"), "-j", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert remote.returncode == local.returncode == 10, remote.stderr
    expected = {
        "hang.txt": ("failed", "EngineTimeoutError", 8),
        "nap.txt": ("failed", "EngineTimeoutError", 8),
        "stuck.txt": ("failed", "EngineTimeoutError", 8),
        "odd.txt": ("failed", "OddInputError", 5),
        "abort.txt": ("failed", "EngineError", 7),
        "fine.txt": ("converted", None, None),
        "broken.pdf": ("failed", "InputError", 5),
    }
    assert _outcomes(local.stdout) == expected, local.stdout
    assert _outcomes(remote.stdout) == expected, remote.stdout
    assert "SoftTimeLimitExceeded" not in remote.stdout + remote.stderr
    assert "queue worker failed" not in remote.stdout + remote.stderr
    # The engine that overran was killed by its own timeout, in the words of a local run.
    nap = next(json.loads(x) for x in remote.stdout.splitlines() if "nap.txt" in x)
    assert "sleep was killed after the timeout of 1 s" in nap["error"]["message"]
    assert (
        "failed (EngineError: 1, EngineTimeoutError: 3, InputError: 1, OddInputError: 1)"
        in remote.stderr
    )
    abort = next(json.loads(x) for x in remote.stdout.splitlines() if "abort.txt" in x)
    assert "killed its worker twice" in abort["error"]["message"]
    assert abort["queue"]["attempt"] == 3  # delivered once more, failed without converting
    # Light files travel in bundles; one that crashes its bundle's process counts that crash
    # (it is sent back alone with one delivery used), so it still crashes only twice in all.
    assert "previewer.convert_files[" in worker_log  # a bundle was received
    assert "was delivered again (its process died)" in worker_log
    assert worker_log.count("exited with 'signal 6 (SIGABRT)'") == 2
    assert elapsed < 90
    assert single.returncode == 8 and "did not finish within the timeout of 1 s" in single.stderr
    assert stuck.returncode == 8 and "its worker process was killed" in stuck.stderr, stuck.stderr
    assert "Hard time limit" in worker_log  # STUCK really reached the hard limit


def test_bundles_start_no_file_past_their_budget(tmp_path: Path) -> None:
    """Light files of a burst travel in bundles; a bundle starts no file once it has run for
    BUNDLE_BUDGET (1 s): SLOW files (1 s each) come back unconverted and are sent again alone,
    and every file is converted once, with its own wait and route."""
    env = _tripwire_env(tmp_path)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):
        (src / f"slow{i}.txt").write_text("SLOW\n")
    redis = Redis(tmp_path)
    worker = None
    try:
        worker = Worker(redis.url, "bu", tmp_path / "bu.log", concurrency=2, env=env)
        done = subprocess.run(
            [sys.executable, "-m", "previewer", "convert", "--json", str(src)]
            + ["-o", str(tmp_path / "out"), "--broker", redis.url],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        worker_log = worker.text()
    finally:
        if worker is not None:
            worker.kill()
        redis.stop()
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert sorted(Path(r["input"]).name for r in lines) == [f"slow{i}.txt" for i in range(8)]
    assert all(r["status"] == "converted" and r["queue"]["class"] == "light" for r in lines)
    assert all(isinstance(r["queue"]["wait"], float) for r in lines)
    bundled = [r for r in lines if r["queue"].get("bundle")]
    alone = [r for r in lines if not r["queue"].get("bundle")]
    # Each bundle converted its first file only (1 s is its whole budget); the rest went alone.
    assert bundled and alone, lines
    assert len(bundled) <= 4 and all(r["queue"]["bundle"] > 1 for r in bundled)
    assert "previewer.convert_files[" in worker_log  # a bundle was received
    assert len(list((tmp_path / "out").glob("slow*.png"))) == 8


def test_bundles_nobody_holds_are_sent_again_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bundles that vanish from the queue (discarded by a worker that does not know them, or
    lost): after ``stall_check`` seconds without a result the submitter finds that nobody holds
    them and sends their files again one by one; the run completes."""
    import redis as redis_py
    from PIL import Image

    from previewer.queue import submit_many

    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):
        Image.new("RGB", (64, 48), (i * 30, 90, 160)).save(src / f"p{i}.png")
    redis = Redis(tmp_path)
    worker = None
    box: dict[str, object] = {}
    caplog.set_level(logging.WARNING, logger="previewer.queue")

    def submit() -> None:
        try:
            box["report"] = submit_many(
                [src], Options(out_dir=tmp_path / "out"), broker=redis.url, stall_check=1.0
            )
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            box["report"] = exc

    thread = threading.Thread(target=submit, daemon=True)
    try:
        client = redis_py.Redis.from_url(redis.url)
        thread.start()
        wait_for(lambda: client.llen("previewer.light") >= 2, 20, "the bundles to be queued")
        assert client.delete("previewer.light") == 1  # both bundles gone, no worker saw them
        worker = Worker(redis.url, "late", tmp_path / "late.log", concurrency=2)
        thread.join(60)
        assert not thread.is_alive(), "the submitter waited for the vanished bundles"
        worker_log = worker.text()
    finally:
        if worker is not None:
            worker.kill()
        redis.stop()
    report = box["report"]
    assert isinstance(report, BatchReport), report
    assert [r.status for r in report.results] == ["converted"] * 8
    assert all("bundle" not in (r.queue or {}) for r in report.results)  # each went alone
    assert "sending them again" in caplog.text
    assert "previewer.convert_files[" not in worker_log  # no bundle was ever received
    assert len(list((tmp_path / "out").glob("p*.png"))) == 8


def test_interrupted_submitter_cancels_its_queued_files(tmp_path: Path) -> None:
    """Ctrl-C of a --broker submitter: exit 130, its files still queued are removed, the one
    running is stopped, and nothing more is written; the worker goes on serving other runs."""
    import redis as redis_py

    env = _tripwire_env(tmp_path)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(30):
        (src / f"slow{i:02d}.txt").write_text("SLOW\n")
    out = tmp_path / "out"
    redis = Redis(tmp_path)
    worker = None
    try:
        worker = Worker(redis.url, "one", tmp_path / "one.log", concurrency=1, env=env)
        submitter = subprocess.Popen(
            [sys.executable, "-m", "previewer", "convert", str(src), "-o", str(out)]
            + ["--broker", redis.url, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            wait_for(lambda: len(list(out.glob("*.png"))) >= 2, 60, "two previews")
            submitter.send_signal(signal.SIGINT)
            stdout, stderr = submitter.communicate(timeout=30)
        finally:
            if submitter.poll() is None:
                submitter.kill()
                submitter.wait(10)
        assert submitter.returncode == 130, stderr
        assert b"interrupted" in stderr
        written = sorted(p.name for p in out.iterdir())
        time.sleep(4)  # four files' worth of work, had they gone on
        assert sorted(p.name for p in out.iterdir()) == written
        assert len([n for n in written if n.endswith(".png")]) < 10
        assert not [n for n in written if n.endswith(".tmp")]
        client = redis_py.Redis.from_url(redis.url)
        assert client.llen("previewer.light") == 0
        assert client.hlen("unacked") == 0
        assert len(client.keys("previewer-cancel-*")) == 1
        # The file being converted was stopped (or, between two files, the next one discarded).
        # Under load the worker may log it a little after the submitter has exited.
        assert wait_until(
            lambda: any(
                said in worker.text()  # type: ignore[union-attr]
                for said in ("its run was cancelled", "Discarding revoked task")
            ),
            15,
        ), worker.text()
        # The worker discarded the cancelled run's files and still serves a new run.
        (tmp_path / "next.txt").write_text("fine\n")
        again = subprocess.run(
            [sys.executable, "-m", "previewer", "convert", str(tmp_path / "next.txt")]
            + ["-o", str(tmp_path / "next"), "--broker", redis.url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert again.returncode == 0, again.stderr
        assert (tmp_path / "next" / "next.txt.p1.256.png").exists()
    finally:
        if worker is not None:
            worker.kill()
        redis.stop()


def test_killed_submitter_files_are_discarded(tmp_path: Path) -> None:
    """A submitter killed outright (SIGKILL: no chance to cancel) stops renewing its heartbeat;
    once it expires the worker discards the run's remaining files instead of converting them."""
    import redis as redis_py

    env = _tripwire_env(tmp_path)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(30):
        (src / f"slow{i:02d}.txt").write_text("SLOW\n")
    out = tmp_path / "out"
    redis = Redis(tmp_path)
    worker = None
    try:
        worker = Worker(redis.url, "gone", tmp_path / "gone.log", concurrency=1, env=env)
        code = (
            "import sys\n"
            "from pathlib import Path\n"
            "from previewer.options import Options\n"
            "from previewer.tasks import submit_many\n"
            "submit_many([sys.argv[1]], Options(out_dir=Path(sys.argv[2])), broker=sys.argv[3],"
            " heartbeat=2.0)\n"
        )
        submitter = subprocess.Popen(
            [sys.executable, "-c", code, str(src), str(out), redis.url], env=env
        )
        try:
            wait_for(lambda: len(list(out.glob("*.png"))) >= 2, 60, "two previews")
            submitter.kill()
            submitter.wait(10)
        finally:
            if submitter.poll() is None:
                submitter.kill()
                submitter.wait(10)
        client = redis_py.Redis.from_url(redis.url)
        wait_for(
            lambda: client.llen("previewer.light") == 0 and client.hlen("unacked") == 0,
            30,
            "the worker to drain the abandoned run",
        )
        written = sorted(p.name for p in out.iterdir())
        time.sleep(2)
        assert sorted(p.name for p in out.iterdir()) == written
        # Converted until the heartbeat (2 s) expired, about one file a second; not all 30.
        assert 2 <= len(written) <= 10, written
        assert "its submitter is gone" in worker.text()
        assert client.keys("previewer-run-*") == []
    finally:
        if worker is not None:
            worker.kill()
        redis.stop()


def test_cancel_run_removes_only_its_own_queued_messages(tmp_path: Path) -> None:
    """cancel_run against kombu's real Redis layout: the run's queued messages leave the queue
    in one pass, another run's stay in order, and the cancellation key is set."""
    from celery import Celery

    from previewer.tasks import CANCEL_PREFIX, TASK_NAME, _message_id, cancel_run, configure

    redis = Redis(tmp_path)
    try:
        client = configure(Celery("cancel-test"), broker=redis.url)
        client.backend.on_task_call = lambda producer, task_id: None
        ids: dict[str, list[str]] = {"mine": [], "other": []}
        for i in range(2500):  # more than one RPUSH chunk stays behind
            run = "mine" if i % 3 == 0 else "other"
            task = client.send_task(
                TASK_NAME, args=[f"/f{i}", {}, None, run], headers={"previewer_run": run}
            )
            ids[run].append(task.id)
        with client.connection_for_write() as conn:
            raw_redis = conn.default_channel.client
            before = [_message_id(m) for m in raw_redis.lrange("celery", 0, -1)]
            cancel_run(client, "mine", set(ids["mine"]))
            after = [_message_id(m) for m in raw_redis.lrange("celery", 0, -1)]
            assert raw_redis.exists(CANCEL_PREFIX + "mine")
            assert not raw_redis.exists(CANCEL_PREFIX + "other")
        assert after == [t for t in before if t in set(ids["other"])]
        assert len(after) == len(ids["other"]) == 1666
    finally:
        redis.stop()
