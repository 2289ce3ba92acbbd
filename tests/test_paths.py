"""Where previewer writes: names, links planted in the output tree, stdin, the journal, temp dirs.

Nothing is written outside the output directory whatever an input's name says; symbolic links
planted inside the output directory are never followed; a walked input swapped after the walk
is refused; stdin is streamed within ``--max-file-size``; a forced run is journaled; what a
batch killed by SIGKILL leaves in the temporary directory is removed by the next run, and a
live run's directories never are.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from support import (
    clean_env,
    files_under,
    processes,
    run_previewer,
    start_previewer,
    temp_leftovers,
    wait_for,
)

import previewer
from previewer import tempdirs
from previewer.batch import collect, run_batch
from previewer.errors import InputError, InvalidOptionsError, LimitExceededError, OutputError
from previewer.options import Options
from previewer.output import write_file
from previewer.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
PDF = SAMPLES / "report.pdf"  # 2 pages, A4 portrait
JPEG = SAMPLES / "photo.jpg"  # 1600 x 1200

CLIMBING = [
    "../../etc/evil.jpg",
    "/srv/abs/evil.jpg",
    "..\\..\\evil.jpg",
    "C:\\Users\\me\\Desktop\\evil.jpg",  # an upload's file name as some browsers send it
    "sub/dir\\evil.jpg",
]
REFUSED = [
    "",
    ".",
    "..",
    "x/..",
    "dir/",
    "dir\\",
    "a\x00b.jpg",
    "a\nb.jpg",
    "\x1b[31mred.jpg",
    "a\x7f",
]


def env(**extra: str) -> dict[str, str]:
    return clean_env(**extra)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", CLIMBING)
def test_convert_uses_only_the_final_component_of_a_name(tmp_path: Path, name: str) -> None:
    out = tmp_path / "srv" / "out"
    (preview,) = previewer.convert(JPEG.read_bytes(), name=name, out_dir=out)
    assert preview.path == out / "evil.jpg.p1.256.png"
    assert preview.source == name  # still the caller's name in messages and results
    assert files_under(tmp_path) == ["srv", "srv/out", "srv/out/evil.jpg.p1.256.png"]


@pytest.mark.parametrize("name", CLIMBING)
def test_a_climbing_name_for_a_path_or_stream_stays_inside(tmp_path: Path, name: str) -> None:
    out = tmp_path / "srv" / "out"
    previewer.convert(JPEG, name=name, out_dir=out)
    with JPEG.open("rb") as fh:
        (preview,) = previewer.convert(fh, name=name, out_dir=out, sizes=64)
    assert preview.path == out / "evil.jpg.p1.64.png"
    assert files_under(tmp_path) == [
        "srv",
        "srv/out",
        "srv/out/evil.jpg.p1.256.png",
        "srv/out/evil.jpg.p1.64.png",
    ]


@pytest.mark.parametrize("name", REFUSED)
def test_empty_dot_and_control_names_are_refused_everywhere(tmp_path: Path, name: str) -> None:
    data = JPEG.read_bytes()
    for call in (
        lambda: previewer.convert(data, name=name, out_dir=tmp_path / "out"),
        lambda: previewer.convert(io.BytesIO(data), name=name, out_dir=tmp_path / "out"),
        lambda: previewer.convert(JPEG, name=name, out_dir=tmp_path / "out"),
        lambda: previewer.render(data, name=name),
        lambda: previewer.info(data, name=name),
    ):
        with pytest.raises(InvalidOptionsError) as info:
            call()
        assert repr(name) in str(info.value)
        assert info.value.exit_code == 2
    assert files_under(tmp_path) == []


def test_render_and_info_accept_a_climbing_name() -> None:
    image = previewer.render(JPEG.read_bytes(), name="../../x.jpg", size=64)
    assert image.size == (64, 48)
    facts = previewer.info(JPEG.read_bytes(), name="../../x.jpg")
    assert facts.input == "../../x.jpg" and facts.mime == "image/jpeg"


def test_a_file_object_whose_name_climbs_is_named_input(tmp_path: Path) -> None:
    class Upload(io.BytesIO):
        name = "../../climb.jpg"

    out = tmp_path / "srv" / "out"
    (preview,) = previewer.convert(Upload(JPEG.read_bytes()), out_dir=out)
    assert preview.path == out / "input.p1.256.png"
    report = previewer.convert_many([Upload(JPEG.read_bytes())], out_dir=tmp_path / "many")
    assert report.converted == 1
    assert report.results[0].outputs[0].path == tmp_path / "many" / "input.p1.256.png"
    assert files_under(tmp_path) == [
        "many",
        "many/input.p1.256.png",
        "srv",
        "srv/out",
        "srv/out/input.p1.256.png",
    ]


@pytest.mark.parametrize("jobs", [0, 2])
def test_convert_many_names_in_tuples_stay_inside(tmp_path: Path, jobs: int) -> None:
    out = tmp_path / "srv" / "out"
    data = JPEG.read_bytes()
    report = previewer.convert_many(
        [
            (data, "../x.jpg"),
            (io.BytesIO(data), "../../etc/s.jpg"),
            (JPEG, "/abs/p.jpg"),
            (data, ".."),
            (io.BytesIO(data), "bad\nname.jpg"),
            (data, "a/b/x.jpg"),  # the same final name as the first: refused, not overwritten
        ],
        out_dir=out,
        jobs=jobs,
    )
    by_input = {r.input: r for r in report.results}
    assert [str(p.path) for p in by_input["../x.jpg"].outputs] == [str(out / "x.jpg.p1.256.png")]
    assert [str(p.path) for p in by_input["../../etc/s.jpg"].outputs] == [
        str(out / "s.jpg.p1.256.png")
    ]
    assert [str(p.path) for p in by_input[str(JPEG)].outputs] == [str(out / "p.jpg.p1.256.png")]
    assert isinstance(by_input[".."].error, InvalidOptionsError)
    assert isinstance(by_input["bad\nname.jpg"].error, InvalidOptionsError)
    assert isinstance(by_input["a/b/x.jpg"].error, OutputError)
    assert "overwrite" in str(by_input["a/b/x.jpg"].error)
    assert report.converted == 3 and report.failed == 3
    assert files_under(tmp_path) == [
        "srv",
        "srv/out",
        "srv/out/p.jpg.p1.256.png",
        "srv/out/s.jpg.p1.256.png",
        "srv/out/x.jpg.p1.256.png",
    ]


def test_stdin_is_named_stdin_inside_the_output_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for extra in ([], [str(PDF), "-j", "1", "--json"]):  # in this process; spooled for a worker
        proc = run_previewer("convert", "-", *extra, "-o", out, "-s", "64", input=JPEG.read_bytes())
        assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    stdin_result = next(json.loads(line) for line in lines if '"stdin"' in line)
    assert stdin_result["outputs"][0]["path"] == str(out / "stdin.p1.64.png")
    assert "previewer-spool" not in proc.stdout.decode() + proc.stderr.decode()
    assert files_under(tmp_path) == ["out", "out/report.pdf.p1.64.png", "out/stdin.p1.64.png"]


# --------------------------------------------------------------------------- links in OUTDIR


def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.jpg").write_bytes(JPEG.read_bytes())
    (src / "sub" / "b.jpg").write_bytes(JPEG.read_bytes())
    (src / "sub" / "deeper" / "c.jpg").write_bytes(JPEG.read_bytes())
    return src


@pytest.mark.parametrize("jobs", [0, 2])
def test_a_journal_link_planted_in_the_output_directory_is_not_followed(
    tmp_path: Path, jobs: int, caplog: pytest.LogCaptureFixture
) -> None:
    src = tree(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / ".previewer-journal.jsonl").symlink_to(victim)
    for _run in range(2):
        report = previewer.convert_many([src], out_dir=out, jobs=jobs, resume=True)
        assert report.converted == 3 and report.failed == 0
    assert victim.read_text() == "precious\n"
    assert (out / ".previewer-journal.jsonl").is_symlink()
    assert "not using the journal" in caplog.text and "symbolic link" in caplog.text


@pytest.mark.parametrize("jobs", [0, 2])
@pytest.mark.parametrize("link", ["sub", "sub/deeper"])
def test_a_folder_link_planted_in_the_output_directory_is_not_followed(
    tmp_path: Path, jobs: int, link: str
) -> None:
    src = tree(tmp_path)
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(elsewhere)
    report = previewer.convert_many([src], out_dir=out, jobs=jobs)
    assert list(elsewhere.iterdir()) == []
    failed = {Path(r.input).name: r.error for r in report.results if r.status == "failed"}
    expect = {"b.jpg", "c.jpg"} if link == "sub" else {"c.jpg"}
    assert set(failed) == expect
    for error in failed.values():
        assert isinstance(error, OutputError) and error.exit_code == 9
        assert "symbolic link" in str(error) and str(out / link) in str(error)
    assert (out / "a.jpg.p1.256.png").is_file()


def test_a_link_planted_at_the_destination_is_replaced_not_written_through(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    (out / "photo.jpg.p1.256.png").symlink_to(victim)
    (preview,) = previewer.convert(JPEG, out_dir=out)
    assert victim.read_bytes() == b"precious"
    assert not preview.path.is_symlink()
    with Image.open(preview.path) as im:
        assert im.size == (256, 192)


def test_a_link_planted_at_the_temporary_name_is_not_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    tokens = iter([b"\x01" * 6, b"\x02" * 6])
    monkeypatch.setattr(os, "urandom", lambda n: next(tokens))
    (out / f".x.png.{'01' * 6}.tmp").symlink_to(victim)  # the first name tried
    write_file(out / "x.png", b"new content")
    assert victim.read_bytes() == b"precious"
    assert (out / "x.png").read_bytes() == b"new content"
    assert (out / f".x.png.{'01' * 6}.tmp").is_symlink()
    assert not (out / f".x.png.{'02' * 6}.tmp").exists()


def test_write_file_below_a_root_refuses_links_and_creates_folders(tmp_path: Path) -> None:
    root = tmp_path / "out"
    write_file(root / "a" / "b" / "x.png", b"1", root=root)
    assert (root / "a" / "b" / "x.png").read_bytes() == b"1"
    (root / "c").symlink_to(tmp_path)
    with pytest.raises(OutputError, match="symbolic link"):
        write_file(root / "c" / "y.png", b"2", root=root)
    with pytest.raises(OutputError, match="not inside"):
        write_file(tmp_path / "z.png", b"3", root=root)
    assert not (tmp_path / "y.png").exists() and not (tmp_path / "z.png").exists()


# --------------------------------------------------------------------------- walked inputs swapped


@pytest.mark.parametrize("jobs", [0, 1])
def test_a_walked_file_swapped_after_the_walk_is_not_converted(tmp_path: Path, jobs: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "keep.jpg"):
        (src / name).write_bytes(JPEG.read_bytes())
    (src / "inside.pdf").symlink_to(src / "c.jpg")  # a link within the tree is walked
    secret = tmp_path / "secret.pdf"
    secret.write_bytes(PDF.read_bytes())
    out = tmp_path / "out"
    jobs_list = collect([src], out)
    assert len(jobs_list) == 5
    # After the walk: a.jpg becomes a link leaving the tree, b.jpg another file, and the
    # in-tree link is pointed outside.
    (src / "a.jpg").unlink()
    (src / "a.jpg").symlink_to(secret)
    (src / "b.new").write_bytes(PDF.read_bytes())
    os.replace(src / "b.new", src / "b.jpg")
    (src / "inside.pdf").unlink()
    (src / "inside.pdf").symlink_to(secret)
    report = run_batch(jobs_list, Options(out_dir=out), Registry(), workers=jobs)
    results = {Path(r.input).name: r for r in report.results}
    assert results["keep.jpg"].status == "converted"
    assert results["c.jpg"].status == "converted"
    for name, why in [
        ("a.jpg", "replaced by a symbolic link"),
        ("b.jpg", "replaced by another file"),
        ("inside.pdf", "replaced by another file"),
    ]:
        error = results[name].error
        assert isinstance(error, InputError), (name, error)
        assert why in str(error) and name in str(error)
    assert sorted(p.name for p in out.iterdir()) == ["c.jpg.p1.256.png", "keep.jpg.p1.256.png"]


# --------------------------------------------------------------------------- stdin


# Linux keeps a process's peak RSS across exec, and a child forked from this (possibly large)
# test process starts with this process's pages: previewer is forked by a small launcher, which
# reports previewer's own peak on the last line of stderr.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nMAXRSS {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_streaming(args: list[str], total: int, cwd: Path) -> tuple[int, str, str, int]:
    """Run the CLI fed ``total`` bytes on stdin; return (status, stdout, stderr, max RSS KiB)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "-m", "previewer", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    chunk = b"\xff\xd8\xff" + bytes(1 << 20)

    def feed() -> None:
        sent = 0
        try:
            while sent < total:
                proc.stdin.write(chunk)  # type: ignore[union-attr]
                sent += len(chunk)
            proc.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            pass  # it stopped reading: that is the point

    captured: dict[str, bytes] = {}

    def drain(name: str, stream: io.BufferedReader) -> None:
        captured[name] = stream.read()

    threads = [
        threading.Thread(target=feed),
        threading.Thread(target=drain, args=("out", proc.stdout)),
        threading.Thread(target=drain, args=("err", proc.stderr)),
    ]
    for t in threads:
        t.start()
    proc.wait(timeout=120)
    for t in threads:
        t.join(timeout=30)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass  # the write end, cut off when previewer stopped reading
    err, _, last = captured["err"].decode().rstrip("\n").rpartition("\n")
    assert last.startswith("MAXRSS "), last
    return proc.returncode, captured["out"].decode(), err, int(last.split()[1])


@pytest.mark.parametrize("extra", [[], [str(JPEG), "-j", "1", "--json"]])
def test_stdin_over_the_size_limit_fails_early_in_little_memory(
    tmp_path: Path, extra: list[str]
) -> None:
    total = 384 << 20  # far more than the process may hold if it read it whole
    code, out, err, rss_kib = run_streaming(
        ["convert", "-", *extra, "-o", "out", "--max-file-size", "1000000"], total, tmp_path
    )
    assert rss_kib < 160 * 1024, f"max RSS {rss_kib} KiB: stdin was read into memory"
    assert "stdin: input is over the limit of 1,000,000 bytes" in err
    if extra:
        assert code == 10
        results = {r["input"]: r for r in map(json.loads, out.splitlines())}
        assert results["stdin"]["error"]["type"] == "LimitExceededError"
        assert results["stdin"]["error"]["exit_code"] == 6
        assert results[str(JPEG)]["status"] == "converted"
        assert sorted(os.listdir(tmp_path / "out")) == ["photo.jpg.p1.256.png"]
    else:
        assert code == LimitExceededError.exit_code == 6
        assert not (tmp_path / "out").exists()  # nothing written, not even the directory


# --------------------------------------------------------------------------- --force and the journal


def cli_convert(*args: str, cwd: Path) -> list[dict[str, object]]:
    proc = run_previewer("convert", *args, "--json", "-q", "-j", "0", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def converted(results: list[dict[str, object]]) -> int:
    return sum(r["status"] == "converted" for r in results)


def test_a_forced_run_is_journaled_so_the_next_run_resumes(tmp_path: Path) -> None:
    src = tree(tmp_path)
    assert converted(cli_convert("src", "-o", "out", cwd=tmp_path)) == 3
    # Changed inputs make the first run's entries stale: only the forced run's can apply.
    past = time.time_ns() - 100 * 10**9
    for jpg in src.rglob("*.jpg"):
        os.utime(jpg, ns=(past, past))
    assert converted(cli_convert("src", "-o", "out", "--force", cwd=tmp_path)) == 3
    last = cli_convert("src", "-o", "out", cwd=tmp_path)
    assert converted(last) == 0
    assert {r["reason"] for r in last} == {"up to date"}


def test_a_first_run_with_force_is_journaled(tmp_path: Path) -> None:
    tree(tmp_path)
    assert converted(cli_convert("src", "-o", "out", "--force", cwd=tmp_path)) == 3
    assert converted(cli_convert("src", "-o", "out", cwd=tmp_path)) == 0


# --------------------------------------------------------------------------- temp dir reaping


def test_reap_removes_only_unlocked_marked_directories_of_ours(tmp_path: Path) -> None:
    # A directory made by a process that then dies without cleaning up (as under SIGKILL).
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); from previewer import tempdirs; "
        "h = tempdirs.make('previewer-dead-', sys.argv[2]); print(h.path); os._exit(0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(tmp_path)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    dead = Path(proc.stdout.decode().strip())
    (dead / "left.bin").write_bytes(b"x")
    live = tempdirs.make("previewer-live-", tmp_path)
    kept = tempdirs.make("previewer-kept-", tmp_path)
    kept.release(keep=True)  # --keep-temp: unmarked, so never reaped
    foreign = [tmp_path / "previewer-foreign", tmp_path / "pymp-foreign"]
    for path in foreign:
        path.mkdir()  # no marker: another program's, or an older previewer's
    (tmp_path / "previewer-link").symlink_to(dead)
    (tmp_path / "other-dir").mkdir()
    try:
        assert tempdirs.reap(tmp_path) == [dead.name]
        assert not dead.exists()
        assert live.path.is_dir() and (live.path / tempdirs.LOCK_NAME).exists()
        assert kept.path.is_dir()
        assert all(p.is_dir() for p in foreign)
        assert tempdirs.reap(tmp_path) == []
    finally:
        live.release()
    assert tempdirs.reap(tmp_path) == [live.path.name]  # released without removal: unlocked


def pdf_tree(tmp_path: Path, files: int) -> Path:
    import pymupdf

    src = tmp_path / "src"
    src.mkdir()
    doc = pymupdf.open()
    for i in range(20):
        page = doc.new_page()
        page.insert_text((72, 72 + i), f"page {i}" * 8, fontsize=14)
    data = doc.tobytes()
    for i in range(files):
        (src / f"doc{i:02}.pdf").write_bytes(data)
    return src


def our_processes(marker: str) -> list[int]:
    """Processes whose environment mentions ``marker`` (our TMPDIR), zombies aside."""
    return processes(environ=marker)


def marked_by(pid: int, places: list[Path]) -> list[Path]:
    """Top-level temporary directories whose marker names ``pid``."""
    found = []
    for place in places:
        for path in place.glob("p*-*"):
            try:
                if (path / tempdirs.LOCK_NAME).read_text().strip() == str(pid):
                    found.append(path)
            except OSError:
                continue
    return found


def start_batch(src: Path, out: Path, tmp: Path) -> subprocess.Popen[bytes]:
    return start_previewer(
        *["convert", src, "-o", out, "-j", "2", "-p", "all", "-s", "600", "-q"],
        stdout=subprocess.DEVNULL,
        env=env(TMPDIR=str(tmp)),
    )


SLOW_BATCH = """
import sys
sys.path.insert(0, sys.argv[1])
import previewer
from previewer.converters import BUILTIN
from plugins.faulty import TripwireConverter
from previewer.registry import Registry

registry = Registry(converters=[*BUILTIN, TripwireConverter], entry_points=False)
report = previewer.convert_many([sys.argv[2]], out_dir=sys.argv[3], jobs=2, registry=registry)
sys.exit(report.exit_code)
"""


def start_slow_batch(src: Path, out: Path, tmp: Path) -> subprocess.Popen[bytes]:
    """A real batch whose files each take a second without using the CPU."""
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_BATCH, str(ROOT / "tests"), str(src), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env(TMPDIR=str(tmp)),
    )


def test_what_a_sigkilled_batch_leaves_is_reaped_by_the_next_run(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    places = [tmp, Path("/tmp")]  # multiprocessing's socket folder goes to /tmp for long TMPDIRs
    src = pdf_tree(tmp_path, 6)
    out = tmp_path / "out"
    batch = start_batch(src, out, tmp)
    try:
        wait_for(lambda: out.is_dir() and any(out.glob("*.png")))
        left = marked_by(batch.pid, places)
        assert any(p.name.startswith("previewer-batch-") for p in left), left
        assert any(p.name.startswith("pymp-") for p in left), left
        batch.send_signal(signal.SIGKILL)
        batch.wait(timeout=30)
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.wait()
        assert batch.stderr is not None
        batch.stderr.close()
    assert batch.returncode == -signal.SIGKILL
    wait_for(lambda: not our_processes(str(tmp)))  # orphaned workers finish their file and exit
    # SIGKILL ran no clean-up: the directories are left (those in /tmp, any later run may reap).
    assert all(p.is_dir() for p in left if p.parent == tmp)

    nxt = run_previewer(
        "convert", JPEG, "-o", tmp_path / "o2", "-j", "1", "-q", env=env(TMPDIR=str(tmp))
    )
    assert nxt.returncode == 0, nxt.stderr
    assert [p for p in left if p.exists()] == []
    assert temp_leftovers(tmp) == []  # and its own were removed at its normal exit


def test_a_live_run_s_directories_are_never_reaped(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    places = [tmp, Path("/tmp")]
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"slow{i:02}.txt").write_text("SLOW")
    first = start_slow_batch(src, tmp_path / "out", tmp)
    try:
        wait_for(lambda: any(p.name.startswith("pymp-") for p in marked_by(first.pid, places)))
        wait_for(lambda: any(marked_by(first.pid, [tmp])))
        live = marked_by(first.pid, places)
        second = run_previewer(
            "convert", JPEG, "-o", tmp_path / "o2", "-j", "1", "-q", env=env(TMPDIR=str(tmp))
        )
        assert second.returncode == 0, second.stderr
        assert first.poll() is None, "the first batch should still be running"
        assert all(p.is_dir() for p in live)
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    assert len(list((tmp_path / "out").glob("*.png"))) == 12
    assert list(tmp.iterdir()) == []
