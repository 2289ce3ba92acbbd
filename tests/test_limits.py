"""Limits hold on every path: single conversions (CLI and library) run where they apply.

A single file runs in a child process under ``timeout`` and ``max_memory``; engine messages are
captured and handed to the logger and the result; errors speak of parameters and never show
temporary paths; batch workers die with the batch. The misbehaving converter is
``tests.plugins.faulty.TripwireConverter``; the command-line runs load it as an installed plugin
(a ``.dist-info`` on ``PYTHONPATH``).
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import (
    alive,
    clean_env,
    plugin_site,
    processes,
    run_previewer,
    start_previewer,
    wait_until,
)

import previewer
import previewer.limited
from previewer import Limits, Registry
from previewer.errors import (
    EngineError,
    EngineTimeoutError,
    ExitCode,
    LimitExceededError,
    PreviewerError,
)
from tests.plugins.faulty import TripwireConverter

REPO = Path(__file__).resolve().parents[1]


def registry() -> Registry:
    return Registry(converters=[TripwireConverter], entry_points=False)


def tripwire(tmp_path: Path, word: str, name: str | None = None) -> Path:
    path = tmp_path / (name or f"{word.split()[0].lower()}.txt")
    path.write_text(f"{word}\n")
    return path


def marked(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker``."""
    return processes(environ=marker)


def cli_env(tmp_path: Path, marker: str = "") -> dict[str, str]:
    """An environment whose previewer loads the tripwire converter as a plugin."""
    site = plugin_site(tmp_path / "site")
    return clean_env(pythonpath=[site], **({"PREVIEWER_TEST_MARKER": marker} if marker else {}))


def run_cli(tmp_path: Path, *args: str, marker: str = "") -> subprocess.CompletedProcess[str]:
    return run_previewer(*args, env=cli_env(tmp_path, marker), cwd=tmp_path, text=True)


def interlaced_png(width: int, height: int) -> bytes:
    """A small PNG declaring an interlaced ``width`` x ``height`` RGB image.

    Pillow decodes an interlaced PNG whole (no reduced decoding), so it needs about
    3 x width x height bytes: 1.2 GB for 20000 x 20000.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    packer = zlib.compressobj(1)
    row = bytes(1 + 3 * width)
    data = b"".join(packer.compress(row) for _ in range(64)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def in_thread(func: Callable[[], Any]) -> Any:
    """Call ``func`` from a second thread (the caller is then multi-threaded)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    if "error" in box:
        raise box["error"]
    return box.get("value")


# --------------------------------------------------------------------------- timeout


def test_cli_timeout_stops_a_stuck_conversion_and_its_group(tmp_path: Path) -> None:
    stuck = tripwire(tmp_path, "WEDGE")
    started = time.monotonic()
    done = run_cli(
        tmp_path,
        "convert",
        str(stuck),
        "--converter",
        "test-tripwire",
        "--timeout",
        "2",
        "-o",
        "out",
    )
    elapsed = time.monotonic() - started
    assert done.returncode == ExitCode.TIMEOUT, done.stderr
    assert elapsed < 12, f"took {elapsed:.1f} s"
    assert "timeout of 2 s" in done.stderr and "--timeout" in done.stderr
    pids = [int(p) for p in (tmp_path / "wedge.txt.pids").read_text().split()]
    assert wait_until(lambda: not any(alive(p) for p in pids), 3), "the child's group lives on"


@pytest.mark.parametrize("caller", ["direct", "thread"])
def test_library_timeout_raises_engine_timeout(tmp_path: Path, caller: str) -> None:
    stuck = tripwire(tmp_path, "WEDGE")

    def convert() -> Any:
        return previewer.convert(
            stuck, out_dir=tmp_path / "out", limits=Limits(timeout=2), registry=registry()
        )

    started = time.monotonic()
    with pytest.raises(EngineTimeoutError) as info:
        convert() if caller == "direct" else in_thread(convert)
    assert time.monotonic() - started < 12
    assert info.value.path == str(stuck)
    assert info.value.hint is not None and "raise timeout" in info.value.hint
    assert "--" not in str(info.value)
    pids = [int(p) for p in (tmp_path / "wedge.txt.pids").read_text().split()]
    assert os.getpid() not in pids
    assert wait_until(lambda: not any(alive(p) for p in pids), 3), "the child's group lives on"


def test_render_and_info_are_limited_too(tmp_path: Path) -> None:
    hang = tripwire(tmp_path, "HANG PID")
    for call in (previewer.render, previewer.info):
        started = time.monotonic()
        with pytest.raises(EngineTimeoutError):
            call(hang, limits=Limits(timeout=1), registry=registry())
        assert time.monotonic() - started < 8
        pid = int((tmp_path / "hang.txt.pid").read_text())
        assert pid != os.getpid() and wait_until(lambda pid=pid: not alive(pid), 3)


# --------------------------------------------------------------------------- memory


def test_memory_hog_is_a_limit_error(tmp_path: Path) -> None:
    hog = tripwire(tmp_path, "HOG")
    with pytest.raises(LimitExceededError) as info:
        previewer.convert(
            hog,
            out_dir=tmp_path / "out",
            limits=Limits(max_memory=300_000_000),
            registry=registry(),
        )
    assert info.value.exit_code == ExitCode.LIMIT
    assert "max_memory" in info.value.message and info.value.hint == (
        "raise max_memory or ask for a smaller size"
    )
    assert info.value.path == str(hog) and info.value.converter == "test-tripwire"

    done = run_cli(
        tmp_path, "convert", str(hog), "--converter", "test-tripwire", "--max-memory", "300000000"
    )
    assert done.returncode == ExitCode.LIMIT, done.stderr
    assert "--max-memory" in done.stderr


def test_giant_interlaced_png_is_a_limit_error_not_corrupt(tmp_path: Path) -> None:
    png = tmp_path / "giant.png"
    png.write_bytes(interlaced_png(20000, 20000))
    assert png.stat().st_size < 1_000_000
    with pytest.raises(LimitExceededError) as info:
        previewer.convert(png, out_dir=tmp_path / "out", limits=Limits(max_memory=400_000_000))
    assert "max_memory" in str(info.value)

    done = run_cli(tmp_path, "convert", str(png), "-o", "out", "--max-memory", "400000000")
    assert done.returncode == ExitCode.LIMIT, done.stderr
    assert "ran out of memory" in done.stderr and "--max-memory" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


# --------------------------------------------------------------------------- results


def test_results_and_errors_come_back_as_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tripwire(tmp_path, "FINE")
    leak = tripwire(tmp_path, "LEAK")
    isolated = previewer.convert(good, out_dir=tmp_path / "a", registry=registry())
    with pytest.raises(PreviewerError) as child_error:
        previewer.info(leak, registry=registry())
    monkeypatch.setattr(previewer.limited, "ISOLATE", False)
    direct = previewer.convert(good, out_dir=tmp_path / "a", registry=registry())
    with pytest.raises(PreviewerError) as own_error:
        previewer.info(leak, registry=registry())
    assert isolated == direct
    for attr in ("message", "path", "converter", "hint", "exit_code"):
        assert getattr(child_error.value, attr) == getattr(own_error.value, attr), attr
    assert type(child_error.value) is type(own_error.value) is EngineError


def test_error_messages_hide_work_directories(tmp_path: Path) -> None:
    leak = tripwire(tmp_path, "LEAK", name="leaky.txt")
    with pytest.raises(EngineError) as info:
        previewer.convert(leak.read_bytes(), name="leaky.txt", registry=registry())
    text = str(info.value)
    assert "previewer-" not in text and "magick-Xq1" not in text
    assert info.value.message == "unable to open image 'leaky.txt'"


def test_hints_name_parameters_and_the_cli_maps_them_to_flags(tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (100, 100), "red").save(image)
    with pytest.raises(LimitExceededError) as info:
        previewer.convert(image, out_dir=tmp_path, limits=Limits(max_pixels=1000))
    assert info.value.hint is not None and "max_pixels" in info.value.hint
    assert "--" not in str(info.value)
    done = run_cli(tmp_path, "convert", str(image), "--max-pixels", "1000")
    assert done.returncode == ExitCode.LIMIT
    assert "--max-pixels" in done.stderr and "max_pixels" not in done.stderr


# --------------------------------------------------------------------------- engine messages


def test_engine_messages_go_to_the_logger_and_the_result(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    noisy = tripwire(tmp_path, "NOISY")
    caplog.set_level(logging.WARNING, logger="previewer")
    report = previewer.convert_many([noisy], out_dir=tmp_path / "out", registry=registry())
    (result,) = report.results
    assert result.status == "converted"
    assert result.warnings == [
        "UserWarning: engine: strange data in chunk 7",
        "TIFFFillStrip: Read error on strip 3; got 0 bytes, expected 512",
        "mupdf: syntax error in content stream",
    ]
    assert result.to_dict()["warnings"] == result.warnings
    logged = [r.getMessage() for r in caplog.records if r.name == "previewer.engine"]
    assert logged == [f"{noisy}: {m}" for m in result.warnings]
    out, err = capfd.readouterr()
    assert "TIFFFillStrip" not in out + err and "mupdf:" not in out + err

    previews = previewer.convert(noisy, out_dir=tmp_path / "again", registry=registry())
    assert len(previews) == 1
    out, err = capfd.readouterr()
    assert "TIFFFillStrip" not in out + err and "strange data" not in out + err


def test_cli_shows_engine_messages_as_warnings(tmp_path: Path) -> None:
    noisy = tripwire(tmp_path, "NOISY")
    done = run_cli(
        tmp_path, "convert", str(noisy), "--converter", "test-tripwire", "--json", "-o", "out"
    )
    assert done.returncode == 0, done.stderr
    import json

    line = json.loads(done.stdout)
    assert "TIFFFillStrip: Read error on strip 3; got 0 bytes, expected 512" in line["warnings"]
    assert "mupdf:" not in done.stdout.replace(json.dumps(line["warnings"])[1:-1], "")
    assert f"previewer: warning: {noisy}: TIFFFillStrip: Read error" in done.stderr


def test_messages_clear_the_progress_bar_first() -> None:
    import io

    from rich.console import Console

    from previewer import cli

    sink = io.StringIO()
    cli._Console.live = Console(file=sink, force_terminal=False, width=200)
    try:
        cli._err("previewer: error: a.pdf: [broken] data", style="red")
    finally:
        cli._Console.live = None
    assert sink.getvalue() == "previewer: error: a.pdf: [broken] data\n"


# --------------------------------------------------------------------------- dying with the parent


def test_kill_9_of_a_batch_leaves_no_worker(tmp_path: Path) -> None:
    tree = tmp_path / "in"
    tree.mkdir()
    for n in range(4):
        tripwire(tree, "HANG PID", name=f"hang{n}.txt")
    marker = f"limits-{uuid.uuid4().hex}"
    process = start_previewer(
        *["convert", tree, "-j", "2", "-o", "out", "--converter", "test-tripwire"],
        env=cli_env(tmp_path, marker),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: len(list(tree.glob("*.pid"))) >= 2, 60), "workers never started"
        workers = [int(p.read_text()) for p in tree.glob("*.pid")]
        assert all(alive(pid) for pid in workers)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert wait_until(lambda: not marked(marker), 5), f"left alive: {marked(marker)}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)


def inflating_pdf(path: Path, megabytes: int) -> None:
    """A one-page PDF whose content stream is a few MB that inflate to ``megabytes`` MB."""
    packer = zlib.compressobj(1)
    chunk = b"0 0 1 1 re " * 95325  # ~1 MiB of drawing operators
    data = b"".join(packer.compress(chunk) for _ in range(megabytes)) + packer.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Filter /FlateDecode /Length %d >>\nstream\n" % len(data) + data + b"\nendstream",
    ]
    out = b"%PDF-1.7\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 5\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(out)


def test_content_stream_inflating_past_max_memory_is_a_limit_error(tmp_path: Path) -> None:
    pdf = tmp_path / "inflates.pdf"
    inflating_pdf(pdf, 400)
    with pytest.raises(LimitExceededError) as info:
        previewer.convert(pdf, out_dir=tmp_path / "out", limits=Limits(max_memory=150_000_000))
    assert info.value.converter == "pdf-pymupdf" and "max_memory" in info.value.message


def test_scrub_paths_and_parameter_words() -> None:
    import tempfile

    from previewer.errors import flag_words, parameter_words, scrub_paths

    work = os.path.join(tempfile.gettempdir(), "previewer-batch-x1", "previewer-ab_c", "in.tif")
    assert scrub_paths(f"TIFFReadDirectory: {work}: bad tag", "scan.tif") == (
        "TIFFReadDirectory: scan.tif: bad tag"
    )
    assert scrub_paths("/home/me/previewer-notes/a.pdf: fine", "a.pdf") == (
        "/home/me/previewer-notes/a.pdf: fine"
    )
    for cli, library in [
        ("pass the password with --password", "pass password="),
        ("raise --max-pixels to accept it", "raise max_pixels to accept it"),
        ("raise --timeout if it is slow", "raise timeout if it is slow"),
        ("select fewer pages with --pages or raise --max-pages", None),
    ]:
        words = parameter_words(cli)
        assert "--" not in words and flag_words(words) == cli
        if library is not None:
            assert words == library


def test_an_engine_crash_fails_the_input_not_the_caller(tmp_path: Path) -> None:
    abort = tripwire(tmp_path, "ABORT")
    with pytest.raises(EngineError) as info:
        previewer.convert(abort, out_dir=tmp_path / "out", registry=registry())
    assert info.value.message == "the engine crashed (SIGABRT)"
    assert info.value.path == str(abort) and info.value.exit_code == ExitCode.ENGINE_FAILED


def test_libtiff_and_pillow_messages_of_a_real_file_are_captured(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    broken = (
        REPO / "tests/fixtures/corpus/raster/crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif"
    )
    report = previewer.convert_many([broken], out_dir=tmp_path)
    (result,) = report.results
    assert result.status == "failed"
    assert "UserWarning: Tag data larger than file. Skipping tag 42112" in result.warnings
    assert any(w.startswith("TIFFFillStrip: Read error on strip 0") for w in result.warnings)
    assert all("site-packages" not in w for w in result.warnings)
    out, err = capfd.readouterr()
    assert "TIFFFillStrip" not in out + err and "UserWarning" not in out + err


def test_engine_output_on_stdout_never_mixes_into_png_data(tmp_path: Path) -> None:
    noisy = tripwire(tmp_path, "NOISY")
    done = run_previewer(
        "convert",
        noisy,
        "--converter",
        "test-tripwire",
        "-o",
        "-",
        env=cli_env(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"\x89PNG\r\n\x1a\n") and b"mupdf:" not in done.stdout
    assert b"previewer: warning: " in done.stderr and b"mupdf: syntax error" in done.stderr


def nested_forms_pdf(path: Path, depth: int = 12) -> None:
    """A 5 KB PDF whose form XObjects each draw the next ten times: 10**depth draws for MuPDF."""

    def stream(head: bytes, data: bytes) -> bytes:
        return b"<< " + head + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"

    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Resources << /XObject << /X 5 0 R >> >> /Contents 4 0 R >>",
        stream(b"", b"/X Do"),
    ]
    for level in range(depth):
        if level < depth - 1:
            body = b" ".join([b"q 0.9 0 0 0.9 1 1 cm /X Do Q"] * 10)
            resources = b" /Resources << /XObject << /X %d 0 R >> >>" % (6 + level)
        else:
            body, resources = b"0 0 100 100 re f", b""
        objects.append(
            stream(b"/Type /XObject /Subtype /Form /BBox [0 0 612 792]" + resources, body)
        )
    out = b"%PDF-1.7\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    count = len(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % count
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (count, xref)
    path.write_bytes(out)


def test_mupdf_drawing_nested_forms_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    pdf = tmp_path / "nested.pdf"
    nested_forms_pdf(pdf)
    started = time.monotonic()
    with pytest.raises(EngineTimeoutError) as info:
        previewer.convert(pdf, out_dir=tmp_path / "out", limits=Limits(timeout=2))
    assert time.monotonic() - started < 12
    assert info.value.path == str(pdf)
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


def _address_space_of_threads(count: int) -> int:
    """Start ``count`` threads that each allocate; return how much the address space grew."""
    import threading

    def vm_size() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmSize")

    before = vm_size()
    hold = threading.Barrier(count + 1)
    blocks: list[bytearray] = []

    def work() -> None:
        blocks.append(bytearray(1000))  # a small malloc: glibc hands the thread an arena
        hold.wait()
        hold.wait()

    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    hold.wait()
    grown = vm_size() - before
    hold.wait()
    for thread in threads:
        thread.join()
    return grown


def test_engine_threads_do_not_reserve_an_arena_each() -> None:
    # The memory cap limits address space; glibc reserves 64 MiB per thread's malloc arena, so a
    # 12,000 px WebP scaled to 8,000 px by libvips' threads (540 MB used) failed under 2 GiB.
    from previewer.limited import run_limited

    grown, _ = run_limited(
        _address_space_of_threads, (12,), limits=Limits(timeout=30), display="threads"
    )
    # 12 threads: 12 x (8 MiB stack) plus at most 2 arenas of 64 MiB, not 12 arenas (~860 MiB).
    assert grown < 300 * 2**20, grown
