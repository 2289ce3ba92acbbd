"""Every ``previewer convert`` flag works with every executor, or is refused naming it (exit 2).

Executors: in this process (``-j 0``; a single named file is the one-off path), a worker pool
(``-j 2``), the thumbnail cache (``--freedesktop``), and queue workers (``--broker``, a real
redis-server and one real worker consuming only the queue ``matrix``, so every broker case
also shows that ``--queue`` routes the files there). Each case asserts the flag's effect, or
the usage error; no flag is silently ignored.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from previewer.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
QUEUE = "matrix"
EXECUTORS = ("inline", "pool", "freedesktop", "broker")


@dataclass
class Run:
    """One command line's outcome."""

    code: int
    out: str
    err: str
    cache: Path  # the thumbnail cache of the run (XDG_CACHE_HOME/thumbnails)

    def json(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.splitlines() if line.startswith("{")]

    def pngs(self, where: Path) -> list[Path]:
        return sorted(where.rglob("*.png"))


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A photo, a tiny image, a two-page PDF, an encrypted PDF and a small tree."""
    import pymupdf

    root = tmp_path_factory.mktemp("matrix-inputs")
    photo = root / "photo.jpg"
    shutil.copy(SAMPLES / "photo.jpg", photo)
    tiny = root / "tiny.png"
    im = Image.new("RGB", (40, 30), (200, 30, 30))
    im.paste((20, 20, 220), (0, 0, 20, 15))
    im.save(tiny)
    big = root / "big.png"  # 48 MB decoded: more than --max-memory 20000000 lets it have
    im = Image.new("RGB", (4000, 4000), (10, 200, 30))
    im.paste((200, 0, 0), (100, 100, 3000, 3500))
    im.save(big)
    two = root / "two.pdf"
    doc = pymupdf.open()
    for n in range(2):
        page = doc.new_page(width=300, height=400)
        page.insert_text((40, 200), f"page {n + 1}", fontsize=30)
    doc.save(two)
    locked = root / "locked.pdf"
    doc.save(
        locked,
        encryption=pymupdf.PDF_ENCRYPT_AES_256,
        user_pw="hunter2",
        owner_pw="owner-pw",
    )
    tree = root / "tree"
    (tree / "sub").mkdir(parents=True)
    shutil.copy(photo, tree / "a.jpg")
    shutil.copy(tiny, tree / "sub" / "b.png")
    shutil.copy(photo, tree / ".hidden.jpg")
    return {"photo": photo, "tiny": tiny, "big": big, "two": two, "locked": locked, "tree": tree}


# --------------------------------------------------------------------------- the broker leg


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A redis-server and one worker that consumes only the queue ``matrix``."""
    pytest.importorskip("celery")
    from tests.support import wait_for
    from tests.test_queue import REDIS, Redis

    if REDIS is None:
        pytest.skip("redis-server is not installed")
    tmp = tmp_path_factory.mktemp("matrix-queue")
    redis = Redis(tmp)
    log = tmp / "worker.log"
    fh = open(log, "wb")  # noqa: SIM115 - closed below
    argv = [sys.executable, "-m", "previewer", "worker", "--broker", redis.url, "-c", "1"]
    argv += ["--timeout", "30", "-Q", QUEUE, "-n", "matrix@%h"]
    proc = subprocess.Popen(
        argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp
    )
    try:
        wait_for(lambda: b"ready." in log.read_bytes() or proc.poll() is not None, 60, "the worker")
        assert proc.poll() is None, log.read_text()
        yield redis.url, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        fh.close()
        redis.stop()


# --------------------------------------------------------------------------- running


@pytest.fixture
def run(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> Callable[..., Run]:
    """Run ``previewer convert`` with an executor's flags, in this process."""
    cache_home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    for name in ("PREVIEWER_BROKER_URL", "PREVIEWER_JOBS", "PREVIEWER_OUT_DIR"):
        monkeypatch.delenv(name, raising=False)

    def go(executor: str, *args: str | Path, out: Path | None = None) -> Run:
        argv = ["convert", *map(str, args)]
        if executor != "freedesktop" and out is not None:
            argv += ["-o", str(out)]
        if executor == "inline":
            argv += ["-j", "0"]
        elif executor == "pool":
            argv += ["-j", "2"]
        elif executor == "freedesktop":
            argv += ["--freedesktop"]
        elif executor == "broker":
            url, _log = request.getfixturevalue("broker")
            argv += ["--broker", url, "--queue", QUEUE]
        capfd.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        captured = capfd.readouterr()
        return Run(
            int(exit_info.value.code or 0), captured.out, captured.err, cache_home / "thumbnails"
        )

    return go


def refused(result: Run, flag: str) -> None:
    assert result.code == 2, (result.code, result.err)
    assert flag in result.err, result.err
    assert "Usage:" in result.err or "Error:" in result.err, result.err


def cache_entries(result: Run, size: str) -> list[Path]:
    return sorted((result.cache / size).glob("*.png"))


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("executor", EXECUTORS)
def test_size(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    result = run(executor, inputs["photo"], "-s", "128", "--json", out=tmp_path / "o")
    assert result.code == 0, result.err
    if executor == "freedesktop":
        assert len(cache_entries(result, "normal")) == 1
        assert cache_entries(result, "large") == []
        assert max(size_of(cache_entries(result, "normal")[0])) == 128
    else:
        (png,) = result.pngs(tmp_path / "o")
        assert png.name == "photo.jpg.p1.128.png" and max(size_of(png)) == 128


@pytest.mark.parametrize("executor", EXECUTORS)
def test_pages(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    result = run(executor, inputs["two"], "-p", "2", out=tmp_path / "o")
    if executor == "freedesktop":
        refused(result, "--pages")
        assert not result.cache.exists()
        assert run(executor, inputs["two"], "-p", "1").code == 0
        return
    assert result.code == 0, result.err
    assert [p.name for p in result.pngs(tmp_path / "o")] == ["two.pdf.p2.256.png"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_upscale(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    result = run(executor, inputs["tiny"], "--upscale", out=tmp_path / "o")
    if executor == "freedesktop":
        refused(result, "--upscale")
        return
    assert result.code == 0, result.err
    (png,) = result.pngs(tmp_path / "o")
    assert size_of(png) == (256, 192)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_password(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    without = run(executor, inputs["locked"], out=tmp_path / "none")
    assert without.code == 5, without.err  # encrypted: bad input
    # --force: the cache does not retry a file that failed before (its fail entry) otherwise.
    result = run(
        executor, inputs["locked"], "--password", "hunter2", "--json", "--force", out=tmp_path / "o"
    )
    assert result.code == 0, result.err
    assert [r["status"] for r in result.json()] == ["converted"]
    if executor == "freedesktop":
        assert len(cache_entries(result, "normal")) == len(cache_entries(result, "large")) == 1


@pytest.mark.parametrize("executor", EXECUTORS)
def test_converter(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    forced = run(
        executor, inputs["photo"], "--converter", "pdf-pymupdf", "--json", out=tmp_path / "o"
    )
    assert forced.code == 0, forced.err
    assert [r["converter"] for r in forced.json()] == ["pdf-pymupdf"]
    unknown = run(
        executor, inputs["photo"], "--converter", "no-such", "--force", out=tmp_path / "x"
    )
    assert unknown.code != 0 and "no-such" in unknown.err, unknown.err


@pytest.mark.parametrize("executor", EXECUTORS)
def test_json_report_quiet(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    report = tmp_path / "run.jsonl"
    both = [inputs["photo"], inputs["tiny"]]
    result = run(executor, *both, "--json", "--report", report, out=tmp_path / "o")
    assert result.code == 0, result.err
    lines = result.json()
    assert sorted(Path(str(r["input"])).name for r in lines) == ["photo.jpg", "tiny.png"]
    assert [json.loads(x) for x in report.read_text().splitlines()] == lines
    assert "2 converted" in result.err
    quiet = run(executor, *both, "-q", "--force", out=tmp_path / "o")
    assert quiet.code == 0 and "converted" not in quiet.err, quiet.err


@pytest.mark.parametrize("executor", EXECUTORS)
def test_walk_filters(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    tree = inputs["tree"]

    def names(*flags: str) -> list[str]:
        result = run(executor, tree, "--json", "--force", *flags, out=tmp_path / "o")
        assert result.code == 0, result.err
        return sorted(Path(str(r["input"])).name for r in result.json())

    assert names() == ["a.jpg", "b.png"]
    assert names("--include", "*.jpg") == ["a.jpg"]
    assert names("--exclude", "sub/*") == ["a.jpg"]
    assert names("--hidden") == [".hidden.jpg", "a.jpg", "b.png"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_force(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    tree = inputs["tree"]

    def statuses(*flags: str) -> list[object]:
        result = run(executor, tree, "--json", *flags, out=tmp_path / "o")
        assert result.code == 0, result.err
        return sorted(str(r["status"]) for r in result.json())

    assert statuses() == ["converted", "converted"]
    assert statuses() == ["skipped", "skipped"]  # up to date (journal, or valid cache entries)
    assert statuses("--force") == ["converted", "converted"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_keep_temp(
    run: Callable[..., Run],
    inputs: dict[str, Path],
    tmp_path: Path,
    executor: str,
    request: pytest.FixtureRequest,
) -> None:
    result = run(executor, inputs["photo"], "--keep-temp", out=tmp_path / "o")
    assert result.code == 0, result.err
    if executor == "broker":
        _url, log = request.getfixturevalue("broker")
        text = log.read_text(errors="replace")
        kept = [line.rsplit(" ", 1)[-1] for line in text.splitlines() if "keeping work" in line]
    else:
        kept = [
            line.rsplit(" ", 1)[-1] for line in result.err.splitlines() if "keeping work" in line
        ]
    assert kept, result.err
    assert Path(kept[-1]).is_dir()
    shutil.rmtree(kept[-1], ignore_errors=True)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_limits(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    result = run(executor, inputs["photo"], "--max-file-size", "100", out=tmp_path / "o")
    assert result.code == 6, result.err  # LimitExceededError, wherever it ran
    big = inputs["big"]
    memory = run(executor, big, "--max-memory", "20000000", "--force", out=tmp_path / "m")
    if executor == "broker":
        refused(memory, "--max-memory")
        assert "--max-memory-per-child" in memory.err
        return
    assert memory.code == 6 and "not enough memory" in memory.err, memory.err
    assert run(executor, big, "--force", out=tmp_path / "m").code == 0


@pytest.mark.parametrize("executor", ["freedesktop", "broker"])  # -j picks inline and pool
def test_jobs(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    """-j N with --broker bounds the files in flight; -j 0 is refused there."""
    flags = ["-j", "1"] if executor == "broker" else ["-j", "2"]
    result = run(executor, inputs["tree"], "--json", "--hidden", *flags, out=tmp_path / "o")
    assert result.code == 0, result.err
    assert len(result.json()) == 3
    if executor == "broker":
        refused(run(executor, inputs["photo"], "-j", "0", out=tmp_path / "z"), "--jobs")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_queue_flag(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    """--queue needs --broker (the broker leg passes it on every run: the worker reads only it)."""
    if executor == "broker":
        result = run(executor, inputs["photo"], out=tmp_path / "o")
        assert result.code == 0 and len(result.pngs(tmp_path / "o")) == 1, result.err
        return
    refused(run(executor, inputs["photo"], "--queue", "other", out=tmp_path / "o"), "--queue")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_out_dir(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, executor: str
) -> None:
    if executor == "freedesktop":
        result = run(executor, inputs["photo"], "-o", tmp_path / "o")
        refused(result, "--out-dir")
        return
    result = run(executor, inputs["photo"], out=tmp_path / "deep" / "o")
    assert result.code == 0 and len(result.pngs(tmp_path / "deep" / "o")) == 1, result.err


@pytest.mark.parametrize(
    "flag",
    [
        ["--json"],
        ["--report", "r.jsonl"],
        ["-j", "2"],
        ["--include", "*.jpg"],
        ["--exclude", "*.jpg"],
        ["--hidden"],
        ["--force"],
        ["--keep-temp"],
        ["--freedesktop"],
        ["--queue", QUEUE],
    ],
    ids=lambda f: f[0],
)
def test_stdout_refuses(
    run: Callable[..., Run], inputs: dict[str, Path], tmp_path: Path, flag: list[str]
) -> None:
    """``-o -`` writes one PNG here: batch and cache flags are refused, naming the flag."""
    result = run("none", inputs["photo"], "-o", "-", *flag)
    refused(result, flag[0] if flag[0] != "-j" else "--jobs")
    assert result.out == ""


def test_broker_and_freedesktop_refuse_each_other(
    run: Callable[..., Run], inputs: dict[str, Path]
) -> None:
    result = run("freedesktop", inputs["photo"], "--broker", "redis://127.0.0.1:1/0")
    refused(result, "--broker")


def test_broker_url_password_is_masked(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """Messages show the broker URL through kombu's sanitize_url: the password never appears."""
    pytest.importorskip("celery")
    from previewer.options import Options
    from previewer.queue import BrokerUnavailableError, sanitize_url, submit_many

    assert sanitize_url("redis://:secret@host:6379/0") == "redis://:**@host:6379/0"
    assert sanitize_url("redis://user:secret@host:6379/0") == "redis://user:**@host:6379/0"
    assert sanitize_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(BrokerUnavailableError) as info:
        submit_many(
            [inputs["photo"]], Options(out_dir=tmp_path), broker="redis://:secret@127.0.0.1:1/0"
        )
    assert "secret" not in str(info.value) and "redis://:**@127.0.0.1:1/0" in str(info.value)


def test_broker_jobs_bound_the_files_in_flight(
    broker: tuple[str, Path], inputs: dict[str, Path], tmp_path: Path
) -> None:
    """With max_in_flight=1 (-j 1) no file waits in the queue while another converts."""
    import redis as redis_py

    from previewer.options import Options
    from previewer.queue import submit_many

    url, _log = broker
    client = redis_py.Redis.from_url(url)
    waiting: list[int] = []
    report = submit_many(
        [inputs["tree"]],
        Options(out_dir=tmp_path / "o"),
        broker=url,
        queue=QUEUE,
        hidden=True,
        max_in_flight=1,
        on_result=lambda r: waiting.append(int(client.llen(QUEUE))),
    )
    assert [r.status for r in report.results] == ["converted"] * 3
    assert waiting == [0, 0, 0]
