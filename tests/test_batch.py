"""Batches: walking directories, worker isolation and limits, resuming, reports, interruption."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from pathlib import Path

import pymupdf
import pytest
from support import (
    clean_env,
    partial_outputs,
    processes,
    run_previewer,
    start_previewer,
    temp_leftovers,
    wait_until,
)

import previewer
from previewer.errors import EngineError, EngineTimeoutError, ExitCode, LimitExceededError
from previewer.registry import Registry
from tests.plugins.faulty import TripwireConverter

ROOT = Path(__file__).resolve().parents[1]
PDF = ROOT / "samples" / "report.pdf"
JPEG = ROOT / "samples" / "photo.jpg"


def tree(base: Path) -> Path:
    """A small input tree: two levels, a hidden folder and file, an unsupported file."""
    src = base / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / ".hidden").mkdir()
    (src / "a.pdf").write_bytes(PDF.read_bytes())
    (src / "sub" / "b.jpg").write_bytes(JPEG.read_bytes())
    (src / "sub" / "deeper" / "c.pdf").write_bytes(PDF.read_bytes())
    (src / ".hidden" / "d.jpg").write_bytes(JPEG.read_bytes())
    (src / ".e.pdf").write_bytes(PDF.read_bytes())
    (src / "notes.txt").write_bytes(random.Random(7).randbytes(4096))  # binary: unsupported
    return src


def outputs(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))


@pytest.mark.parametrize("jobs", [0, 2])
def test_directory_is_mirrored_and_unsupported_files_skipped(tmp_path: Path, jobs: int) -> None:
    src = tree(tmp_path)
    out = tmp_path / "out"
    report = previewer.convert_many([src], out_dir=out, jobs=jobs)
    assert report.exit_code == 0
    assert outputs(out) == [
        "a.pdf.p1.256.png",
        "sub/b.jpg.p1.256.png",
        "sub/deeper/c.pdf.p1.256.png",
    ]
    skipped = [r for r in report.results if r.status == "skipped"]
    assert [(r.input, r.reason) for r in skipped] == [
        (str(src / "notes.txt"), "no converter for application/octet-stream")
    ]
    assert report.converted == 3 and report.failed == 0


def test_hidden_include_exclude(tmp_path: Path) -> None:
    src = tree(tmp_path)
    out = tmp_path / "out"
    previewer.convert_many([src], out_dir=out, hidden=True, exclude=["*.txt", "sub/deeper/*"])
    assert outputs(out) == [
        ".e.pdf.p1.256.png",
        ".hidden/d.jpg.p1.256.png",
        "a.pdf.p1.256.png",
        "sub/b.jpg.p1.256.png",
    ]
    out2 = tmp_path / "out2"
    previewer.convert_many([src], out_dir=out2, include=["*.pdf"])
    assert outputs(out2) == ["a.pdf.p1.256.png", "sub/deeper/c.pdf.p1.256.png"]


def test_symlinks_leaving_the_tree_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pdf").write_bytes(PDF.read_bytes())
    src = tmp_path / "in"
    src.mkdir()
    (src / "inside.pdf").write_bytes(PDF.read_bytes())
    (src / "escape.pdf").symlink_to(outside / "secret.pdf")
    (src / "escape-dir").symlink_to(outside)
    (src / "alias.pdf").symlink_to(src / "inside.pdf")
    out = tmp_path / "out"
    report = previewer.convert_many([src], out_dir=out)
    assert outputs(out) == ["alias.pdf.p1.256.png", "inside.pdf.p1.256.png"]
    assert report.exit_code == 0


def test_output_inside_the_input_tree_is_not_walked(tmp_path: Path) -> None:
    src = tree(tmp_path)
    out = src / "thumbs"
    first = previewer.convert_many([src], out_dir=out, resume=True)
    second = previewer.convert_many([src], out_dir=out, resume=True)
    assert first.converted == 3
    assert second.converted == 0 and all(
        r.reason in ("up to date", "no converter for application/octet-stream")
        for r in second.results
    )
    assert not list(out.rglob("*.png.p1.256.png"))


def test_hostile_names_stay_inside_the_output_directory(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    names = ["-rf.pdf", "with space.pdf", "new\nline.pdf", "back\\slash.pdf"]
    names.append(os.fsdecode(b"caf\xe9-latin1.pdf"))  # not valid UTF-8
    for name in names:
        (src / name).write_bytes(PDF.read_bytes())
    out = tmp_path / "out"
    report = previewer.convert_many([src], out_dir=out, jobs=2)
    assert report.converted == 5, [r.error for r in report.results]
    for result in report.results:
        (preview,) = result.outputs
        assert preview.path is not None
        assert Path(os.path.abspath(preview.path)).parent == out.absolute()
    assert sorted(os.listdir(tmp_path)) == ["in", "out"]


def registry() -> Registry:
    return Registry([TripwireConverter], builtins=True, entry_points=False)


def test_hang_crash_and_memory_hog_fail_alone(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "1-hang.txt").write_text("HANG")
    (src / "2-abort.txt").write_text("ABORT")
    (src / "3-hog.txt").write_text("HOG")
    for i in range(4):
        (src / f"4-good-{i}.pdf").write_bytes(PDF.read_bytes())
    (src / "5-fine.txt").write_text("fine")
    started = time.monotonic()
    report = previewer.convert_many(
        [src],
        out_dir=tmp_path / "out",
        jobs=2,
        registry=registry(),
        limits=previewer.Limits(timeout=2, max_memory=768 * 1024**2),
    )
    assert time.monotonic() - started < 30
    by_name = {Path(r.input).name: r for r in report.results}
    assert isinstance(by_name["1-hang.txt"].error, EngineTimeoutError)
    assert "timeout of 2 s" in str(by_name["1-hang.txt"].error)
    assert isinstance(by_name["2-abort.txt"].error, EngineError)
    assert "SIGABRT" in str(by_name["2-abort.txt"].error)
    assert isinstance(by_name["3-hog.txt"].error, LimitExceededError)
    assert str(src / "3-hog.txt") in str(by_name["3-hog.txt"].error)
    for name in [f"4-good-{i}.pdf" for i in range(4)] + ["5-fine.txt"]:
        assert by_name[name].status == "converted", by_name[name].error
    assert report.exit_code == ExitCode.BATCH_PARTIAL
    assert report.failures_by_type() == {
        "EngineTimeoutError": 1,
        "EngineError": 1,
        "LimitExceededError": 1,
    }


def test_progress_callbacks(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    report = previewer.convert_many(
        [PDF, JPEG, tmp_path / "missing.pdf"],
        out_dir=tmp_path,
        jobs=2,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert report.exit_code == 10


def test_resume_redoes_only_what_changed(tmp_path: Path) -> None:
    src = tree(tmp_path)
    out = tmp_path / "out"
    first = previewer.convert_many([src], out_dir=out, resume=True)
    assert first.converted == 3
    second = previewer.convert_many([src], out_dir=out, resume=True)
    assert second.converted == 0
    up_to_date = [r for r in second.results if r.reason == "up to date"]
    assert len(up_to_date) == 3 and all(r.outputs for r in up_to_date)
    # A touched input is redone; so is everything when the options change.
    touched = (src / "a.pdf").stat().st_mtime + 0.01  # newer, still older than its next preview
    os.utime(src / "a.pdf", (touched, touched))
    third = previewer.convert_many([src], out_dir=out, resume=True)
    assert [Path(r.input).name for r in third.results if r.status == "converted"] == ["a.pdf"]
    fourth = previewer.convert_many([src], out_dir=out, resume=True, sizes=[128])
    assert fourth.converted == 3
    # A deleted output is redone.
    (out / "sub" / "b.jpg.p1.256.png").unlink()
    fifth = previewer.convert_many([src], out_dir=out, resume=True)
    assert [Path(r.input).name for r in fifth.results if r.status == "converted"] == ["b.jpg"]


def test_cli_report_file_and_summary(tmp_path: Path) -> None:
    src = tree(tmp_path)
    report = tmp_path / "run.jsonl"
    proc = run_previewer(
        "convert", src, "-o", tmp_path / "out", "--report", report, "-j", "2", text=True
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted((Path(r["input"]).name, r["status"]) for r in lines) == [
        ("a.pdf", "converted"),
        ("b.jpg", "converted"),
        ("c.pdf", "converted"),
        ("notes.txt", "skipped"),
    ]
    assert "3 converted, 1 skipped" in proc.stderr
    rerun = run_previewer("convert", src, "-o", tmp_path / "out", text=True)
    assert rerun.returncode == 0 and "0 converted, 4 skipped" in rerun.stderr
    assert len(rerun.stdout.splitlines()) == 3  # the up-to-date previews are still listed
    forced = run_previewer("convert", src, "-o", tmp_path / "out", "--force", text=True)
    assert forced.returncode == 0 and "3 converted, 1 skipped" in forced.stderr


def _slow_pdf(path: Path, pages: int) -> None:
    doc = pymupdf.open()
    for i in range(pages):
        page = doc.new_page()
        for j in range(20):
            page.draw_circle((300, 400), 10 + j * 4, color=(j / 20, 0.2, 0.5), width=3)
        page.insert_text((72, 72), f"page {i + 1}")
    doc.save(path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_batch_cleans_up_and_resumes(tmp_path: Path, sig: signal.Signals) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _slow_pdf(src / "doc0.pdf", pages=3)
    for i in range(1, 40):
        (src / f"doc{i}.pdf").write_bytes((src / "doc0.pdf").read_bytes())
    out = tmp_path / "out"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    marker = f"PREVIEWER_TEST_{uuid.uuid4().hex}"
    env = clean_env(TMPDIR=str(tmp), **{marker: "1"})
    argv = ["convert", src, "-o", out, "-p", "all", "-s", "1200", "-j", "2"]
    proc = start_previewer(*argv, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first preview is written: the batch is under way
    if not first.endswith(b".png\n"):
        proc.kill()
        pytest.fail(f"no preview written: {first!r} {proc.communicate()[1]!r}")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    expected = ExitCode.TERMINATED if sig == signal.SIGTERM else ExitCode.INTERRUPTED
    assert proc.returncode == expected, err
    wait_until(lambda: not processes(environ=marker), 10)
    assert processes(environ=marker) == [], "a worker or engine outlived the interrupted batch"
    assert partial_outputs(out) == [], "a partial PNG was left behind"
    assert temp_leftovers(tmp) == [], "a temporary directory was left behind"
    done_before = {p.name for p in out.glob("*.png")}
    assert done_before
    rerun = run_previewer(*argv[:-2], "-j", "2", "-q", "--json", env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    results = [json.loads(line) for line in rerun.stdout.splitlines()]
    skipped = [r for r in results if r["status"] == "skipped"]
    converted = [r for r in results if r["status"] == "converted"]
    assert len(skipped) + len(converted) == 40
    assert skipped, "the rerun redid documents finished before the interruption"
    assert converted, "the interrupted batch had finished anyway: the test proves nothing"
    assert len({p.name for p in out.glob("*.png")}) == 40 * 3
