"""Engine isolation (previewer/sandbox.py) on the real wrappers and engines, Office aside.

What an engine child gets: no network (a listener on the host's 127.0.0.1 records nothing),
only its input, its work directory and system files (planted files stay unreadable), a
``/proc`` of its own; refusal with the documented switch where nothing isolates; no engine
left running when previewer is SIGKILLed. Shared helpers live in ``netcheck.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from netcheck import SECRET, Listener, assert_no_secret, plant, planted_pixels
from support import (
    clean_env,
    cmdline,
    processes,
    require_engine,
    requires_engine,
    run_previewer,
    start_previewer,
    wait_until,
)

import previewer
from previewer import process, sandbox
from previewer.errors import EngineError, UnsupportedFormatError

BWRAP_WORKS = sandbox.mechanism(verify=True).kind == "bubblewrap"
needs_bwrap = pytest.mark.skipif(not BWRAP_WORKS, reason="bubblewrap does not work here")
needs_gs = requires_engine("gs")
BUBBLEWRAP = "no network, private file view (bubblewrap)"

EPS_HEAD = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 200 200\n%%EndComments\n"
EPS_BODY = b"0 0 1 setrgbcolor 0 0 200 200 rectfill\n"


def _eps(path: Path, body: bytes = b"") -> Path:
    path.write_bytes(EPS_HEAD + EPS_BODY + body + b"\nshowpage\n")
    return path


def _ps_string(text: str) -> bytes:
    """A PostScript string literal of ``text`` (parentheses and backslashes escaped)."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode() + b")"


# --------------------------------------------------------------------------- what is reported


def test_converters_report_each_engines_isolation() -> None:
    listing = {c.name: c for c in previewer.list_converters()}
    for name in ("pdf-pymupdf", "raster-pillow", "psd-psdtools"):
        assert listing[name].isolation == "in-process"
        assert listing[name].to_dict()["isolation"] == "in-process"
    for name in ("postscript-ghostscript", "magick-wand"):
        assert listing[name].isolation == sandbox.describe()
        if BWRAP_WORKS:
            assert listing[name].isolation == BUBBLEWRAP


def test_cli_converters_show_isolation() -> None:
    done = run_previewer("converters", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert rows["raster-pillow"]["isolation"] == "in-process"
    assert rows["postscript-ghostscript"]["isolation"] == sandbox.describe()
    listed = run_previewer("converters", text=True)
    assert listed.returncode == 0, listed.stderr
    text = listed.stdout
    assert f"isolation: {sandbox.describe()}" in text
    assert "isolation: in-process" in text


# --------------------------------------------------------------------------- refusal

REFUSAL_SCRIPT = r"""
import json, sys
import previewer
from previewer import cli, sandbox

# Nothing to isolate with: the wrappers are looked for where they are not.
sandbox.BWRAP_CANDIDATES = ("/nonexistent/bwrap",)
sandbox.UNSHARE_CANDIDATES = ("/nonexistent/unshare",)
eps, out = sys.argv[1], sys.argv[2]
report = {}
try:
    previewer.convert(eps, out_dir=out + "/refused")
except previewer.EngineUnavailableError as exc:
    report["error"] = [type(exc).__name__, exc.exit_code, str(exc)]
(preview,) = previewer.convert(
    eps, out_dir=out + "/allowed", limits=previewer.Limits(allow_unisolated=True)
)
report["allowed"] = str(preview.path)
report["isolation"] = {c.name: c.isolation for c in previewer.list_converters()}
for args in ([], ["--allow-unisolated"]):
    try:
        cli.main(["convert", eps, "-o", out + "/cli", "--force", *args])
    except SystemExit as exc:
        report.setdefault("cli", []).append(exc.code)
print("REPORT " + json.dumps(report))
"""


@needs_gs
@pytest.mark.skipif(not sandbox._host_has_network(), reason="this process has no network")
def test_engine_refused_where_nothing_isolates_unless_allowed(tmp_path: Path) -> None:
    eps = _eps(tmp_path / "in.eps")
    done = subprocess.run(
        [sys.executable, "-c", REFUSAL_SCRIPT, str(eps), str(tmp_path / "out")],
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr.decode()
    line = next(ln for ln in done.stdout.decode().splitlines() if ln.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    kind, code, message = report["error"]
    assert (kind, code) == ("EngineUnavailableError", 4)
    assert "gs cannot run isolated from the network and the host's files" in message
    assert "bubblewrap is not installed" in message
    assert "unshare (util-linux) is not installed" in message
    assert "--allow-unisolated" in message and "PREVIEWER_ALLOW_UNISOLATED=1" in message
    assert not (tmp_path / "out" / "refused").exists()
    assert Path(report["allowed"]).is_file()
    assert report["isolation"]["postscript-ghostscript"].startswith("not isolated: ")
    assert report["isolation"]["raster-pillow"] == "in-process"
    # The CLI: exit 4 with the hint on stderr, then converted with the switch.
    assert report["cli"] == [4, 0]
    stderr = done.stderr.decode()
    assert "in.eps: gs cannot run isolated" in stderr and "--allow-unisolated" in stderr
    assert "running engines without isolation (allowed)" in stderr


def _disable_userns_works() -> bool:
    if not BWRAP_WORKS:
        return False
    probe = ["bwrap", "--unshare-user", "--disable-userns", "--dev-bind", "/", "/", "true"]
    return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0


@needs_gs
@pytest.mark.skipif(not _disable_userns_works(), reason="needs bubblewrap >= 0.8")
def test_wrappers_that_cannot_create_namespaces_are_detected(tmp_path: Path) -> None:
    """Inside a sandbox that forbids new user namespaces neither wrapper works.

    They are installed and fail on first use: previewer notices (bwrap's and unshare's own
    messages, confirmed by a probe) and refuses; in an outer sandbox without network the
    engines run, accepted as isolated from the network.
    """
    eps = _eps(tmp_path / "in.eps")
    outer = ["bwrap", "--unshare-user", "--disable-userns", "--dev-bind", "/", "/"]
    cli = [sys.executable, "-m", "previewer", "convert", str(eps), "-o", str(tmp_path / "out")]
    env = clean_env()  # no PREVIEWER_ALLOW_UNISOLATED
    refused = subprocess.run([*outer, *cli], capture_output=True, timeout=180, env=env)
    assert refused.returncode == 4, refused.stderr.decode()
    stderr = refused.stderr.decode()
    assert "bubblewrap does not work here" in stderr
    assert "unshare --net does not work here" in stderr
    assert "--allow-unisolated" in stderr
    assert not (tmp_path / "out").exists()
    offline = [*outer[:2], "--unshare-net", *outer[2:]]
    done = subprocess.run([*offline, *cli], capture_output=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "out" / "in.eps.p1.256.png").is_file()
    listing = subprocess.run(
        [*offline, sys.executable, "-m", "previewer", "converters", "--json"],
        capture_output=True,
        timeout=180,
        env=env,
        check=True,
    )
    rows = {r["name"]: r for r in map(json.loads, listing.stdout.splitlines())}
    assert rows["postscript-ghostscript"]["isolation"] == "no network (the whole process has none)"


@needs_bwrap
def test_engine_imitating_a_wrapper_failure_does_not_lower_isolation(tmp_path: Path) -> None:
    """A document cannot make previewer give up bubblewrap by printing bwrap's message."""
    fake = ["/bin/sh", "-c", "echo 'bwrap: Creating new namespace failed' >&2; exit 1"]
    with pytest.raises(EngineError, match="sh exited with status 1: bwrap: Creating"):
        process.run(fake, timeout=30, cwd=tmp_path, isolate=True)
    assert sandbox.mechanism().kind == "bubblewrap"
    assert "bubblewrap" not in sandbox._broken


# --------------------------------------------------------------------------- what a child sees

VIEW_SCRIPT = r"""
import json, os, socket, sys
port, given, planted = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
seen = {}
try:
    socket.create_connection(("127.0.0.1", port), timeout=3).close()
    seen["connect"] = "connected"
except OSError as exc:
    seen["connect"] = type(exc).__name__
def readable(path):
    try:
        with open(path, "rb") as fh:
            fh.read(64)
        return True
    except OSError:
        return False
seen["given"] = readable(given)
seen["planted"] = {p: readable(p) for p in planted}
seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(json.dumps(seen))
"""


def _child_view(tmp_path: Path, listener: Listener) -> dict[str, object]:
    given = tmp_path / "given.txt"
    given.write_text("given")
    planted = plant(tmp_path / "planted")
    work = tmp_path / "work"
    work.mkdir()
    others = [str(planted.text), str(planted.image), "/etc/hostname", "/etc/passwd"]
    result = process.run(
        [sys.executable, "-I", "-c", VIEW_SCRIPT, str(listener.port), str(given), *others],
        timeout=60,
        cwd=work,
        isolate=True,
        read=[given],
    )
    seen: dict[str, object] = json.loads(result.stdout)
    return seen


@needs_bwrap
def test_bubblewrapped_child_sees_no_network_no_host_files_no_host_processes(
    tmp_path: Path,
) -> None:
    with Listener() as listener:
        seen = _child_view(tmp_path, listener)
    assert seen["connect"] == "ConnectionRefusedError"  # its own loopback, nothing listening
    assert listener.connections == []
    assert seen["given"] is True
    assert seen["planted"] == {p: False for p in seen["planted"]}  # type: ignore[union-attr]
    # Its own PID namespace: bubblewrap's init and the child; no host process is visible.
    assert seen["pids"] == [1, 2]


def test_unshared_child_sees_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "BWRAP_CANDIDATES", ())
    if sandbox.mechanism(verify=True).kind != "unshare":
        pytest.skip("unshare --net does not work here")
    with Listener() as listener:
        seen = _child_view(tmp_path, listener)
    assert seen["connect"] == "OSError"  # ENETUNREACH: not even a loopback device is up
    assert listener.connections == []
    assert seen["given"] is True


@needs_bwrap
def test_imagemagick_coder_cannot_read_a_local_file_in_the_sandbox(tmp_path: Path) -> None:
    """The file view alone stops an MVG image reading a planted file.

    Debian's own policy allows MVG and PNG, and outside the sandbox ``convert`` composites
    the planted image (the control); inside, the file does not exist. previewer's policy
    denies MVG anyway (tests/test_magick.py), so this is the second wall.
    """
    require_engine("imagemagick-cli")
    convert = shutil.which("convert")
    assert convert is not None
    planted = plant(tmp_path / "planted")
    mvg = tmp_path / "in.mvg"
    mvg.write_text(
        "viewbox 0 0 64 64\nfill blue rectangle 0,0 63,63\n"
        f"image over 0,0 32,32 '{planted.image}'\n"
    )
    control, boxed = tmp_path / "control", tmp_path / "boxed"
    for work in (control, boxed):
        work.mkdir()
    argv = [convert, f"mvg:{mvg}"]
    process.run([*argv, str(control / "out.png")], timeout=60, cwd=control)
    assert planted_pixels(control / "out.png") > 500
    try:
        process.run(
            [*argv, str(boxed / "out.png")], timeout=60, cwd=boxed, read=[mvg], isolate=True
        )
    except EngineError as exc:
        assert "unable to open file" in str(exc)
    if (boxed / "out.png").exists():
        assert planted_pixels(boxed / "out.png") == 0


# --------------------------------------------------------------------------- hostile documents


@needs_gs
def test_postscript_reads_no_file_and_reaches_no_socket(tmp_path: Path) -> None:
    """Every path a PostScript program tries to open paints a planted-colour square if it opens.

    The input's own directory holds the planted files; the engine gets only the input.
    """
    planted = plant(tmp_path)
    with Listener() as listener:
        targets = [
            str(planted.text),
            str(planted.image),
            "/etc/hostname",
            "/etc/passwd",
            "/root/.bashrc",
            "/proc/1/environ",
            f"%pipe%bash -c 'echo x >/dev/tcp/127.0.0.1/{listener.port}'",
            f"|bash -c 'echo x >/dev/tcp/127.0.0.1/{listener.port}'",
            f"%socket%{listener.address}",
        ]
        body = b"1 0 1 setrgbcolor\n"
        for i, target in enumerate(targets):
            x, y = 10 + (i % 5) * 36, 10 + (i // 5) * 36
            body += (
                _ps_string(target)
                + b" (r) { file } stopped { pop pop } "
                + f"{{ closefile {x} {y} 30 30 rectfill }} ifelse\n".encode()
            )
        eps = _eps(tmp_path / "hostile.eps", body)
        (preview,) = previewer.convert(eps, out_dir=tmp_path / "out", sizes=[200])
        time.sleep(0.2)
    assert listener.connections == []
    assert planted_pixels(preview.path) == 0
    assert_no_secret(preview.path)


def _svg(listener: Listener, planted_image: Path) -> bytes:
    return textwrap.dedent(
        f"""\
        <svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"
             width="200" height="200" viewBox="0 0 200 200">
          <rect width="200" height="200" fill="#0000ff"/>
          <image x="0" y="0" width="100" height="100" href="{listener.url("/a.png")}"/>
          <image x="100" y="0" width="100" height="100" xlink:href="{listener.url("/b.png")}"/>
          <image x="0" y="100" width="100" height="100" href="file://{planted_image}"/>
          <image x="100" y="100" width="100" height="100" href="{planted_image.name}"/>
        </svg>
        """
    ).encode()


def test_svg_external_and_local_images_are_not_loaded(tmp_path: Path) -> None:
    """MuPDF (in-process) loads neither remote, ``file://`` nor relative images of an SVG."""
    planted = plant(tmp_path)
    with Listener() as listener:
        svg = tmp_path / "links.svg"
        svg.write_bytes(_svg(listener, planted.image))
        (preview,) = previewer.convert(svg, out_dir=tmp_path / "out", sizes=[200])
        time.sleep(0.2)
    assert preview.converter == "pdf-pymupdf"
    assert listener.connections == []
    assert planted_pixels(preview.path) == 0
    from PIL import Image

    with Image.open(preview.path) as image:
        assert image.convert("RGB").getpixel((150, 150)) == (0, 0, 255)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("links.svg", None),
        ("in.mvg", "viewbox 0 0 10 10\nimage over 0,0 0,0 '{url}'\nimage over 0,0 0,0 '{file}'\n"),
        (
            "in.msl",
            '<?xml version="1.0"?>\n<image><read filename="{url}"/><read filename="{file}"/>'
            '<read filename="text:{text}"/></image>\n',
        ),
    ],
)
def test_imagemagick_is_never_handed_script_formats(
    name: str, content: str | None, tmp_path: Path
) -> None:
    planted = plant(tmp_path / "planted")
    with Listener() as listener:
        path = tmp_path / name
        if content is None:
            path.write_bytes(_svg(listener, planted.image))
        else:
            path.write_text(
                content.format(url=listener.url(), file=planted.image, text=planted.text)
            )
        with pytest.raises(UnsupportedFormatError, match="ImageMagick is not allowed to decode"):
            previewer.convert(path, out_dir=tmp_path / "out", converter="magick-wand")
        time.sleep(0.2)
    assert listener.connections == []
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


# --------------------------------------------------------------------------- nothing left behind


ENGINE_PROGRAMS = ("gs", "bwrap", "setpriv", "unshare", "sleep")


def _engines_mentioning(text: str) -> list[str]:
    """Command lines of running engines (and their wrappers) that mention ``text``.

    Zombies do not count.
    """
    return [cmdline(pid) for pid in processes(cmdline=text, programs=ENGINE_PROGRAMS)]


@needs_gs
def test_sigkilled_batch_leaves_no_engine_running(tmp_path: Path) -> None:
    """SIGKILL a two-worker batch (its whole process group) while gs loops on two inputs."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        (inputs / f"loop{i}.ps").write_bytes(b"%!PS\n{} loop\n")
    argv = ["convert", inputs, "-j", "2", "-o", tmp_path / "out", "--timeout", "300"]
    # Its temporary directories (left behind by a SIGKILL) go under tmp_path.
    (tmp_path / "tmp").mkdir()
    batch = start_previewer(
        *argv,
        env=clean_env(TMPDIR=str(tmp_path / "tmp")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def gs_running() -> int:
        return len([c for c in _engines_mentioning(str(inputs)) if c.startswith("/usr/bin/gs")])

    try:
        if not wait_until(lambda: gs_running() >= 2, 60):
            pytest.fail(f"gs never started twice: {_engines_mentioning(str(inputs))}")
    finally:
        os.killpg(batch.pid, signal.SIGKILL)
        batch.wait(10)
    wait_until(lambda: not _engines_mentioning(str(inputs)), 5)
    assert _engines_mentioning(str(inputs)) == []


KILLED_SCRIPT = r"""
import sys
from previewer import process
process.run(["/bin/sleep", sys.argv[1]], timeout=300)
"""


def test_unsandboxed_program_dies_with_previewer(tmp_path: Path) -> None:
    """Programs run without a sandbox (version probes) get setpriv's parent-death signal."""
    seconds = f"{time.time() % 1000 + 1000:.6f}"  # a command line no other test has
    child = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, seconds], start_new_session=True)
    try:
        assert wait_until(lambda: _engines_mentioning(f"sleep {seconds}"), 30), (
            "sleep never started"
        )
    finally:
        child.kill()
        child.wait(10)
    wait_until(lambda: not _engines_mentioning(f"sleep {seconds}"), 5)
    assert _engines_mentioning(f"sleep {seconds}") == []


def test_planted_secret_helper_detects_the_secret(tmp_path: Path) -> None:
    """The helpers can fail: a file holding the secret and an image of the colour are caught."""
    planted = plant(tmp_path)
    with pytest.raises(AssertionError, match="planted secret"):
        assert_no_secret(planted.text)
    assert planted_pixels(planted.image) == 64 * 64
    assert SECRET in planted.text.read_text()
    with Listener() as listener:
        import socket

        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as conn:
            conn.sendall(b"GET /x.png HTTP/1.0\r\n\r\n")
            assert conn.recv(12).startswith(b"HTTP/1.1 200")
    assert [c.data[:5] for c in listener.connections] == [b"GET /"]


@needs_bwrap
def test_isolated_run_costs_no_wait_for_the_sandbox_teardown(tmp_path: Path) -> None:
    """An isolated run returns as soon as the engine exits, and a timeout kill is prompt.

    bubblewrap's own init process, orphaned once bwrap exits, stays a zombie until the host's
    init reaps it (1.6 s on a machine without systemd); each run waited for it while a zombie
    counted as a live member of the process group.
    """
    true = shutil.which("true") or "/usr/bin/true"
    durations = []
    for _ in range(3):
        start = time.monotonic()
        process.run([true], timeout=30, cwd=tmp_path, isolate=True)
        durations.append(time.monotonic() - start)
    assert min(durations) < 0.8, durations
    start = time.monotonic()
    with pytest.raises(previewer.EngineTimeoutError):
        process.run(["/bin/sleep", "60"], timeout=1, cwd=tmp_path, isolate=True)
    # The SIGTERM stage suffices: no grace period spent.
    assert time.monotonic() - start < 1 + process.GRACE_SECONDS, time.monotonic() - start


@needs_bwrap
def test_timeout_kills_what_the_engine_forked_in_the_sandbox(tmp_path: Path) -> None:
    seconds = f"{time.time() % 1000 + 2000:.6f}"  # a command line no other test has
    script = f"/bin/sleep {seconds} & /bin/sleep {seconds}"
    with pytest.raises(previewer.EngineTimeoutError):
        process.run(["/bin/sh", "-c", script], timeout=1, cwd=tmp_path, isolate=True)
    wait_until(lambda: not _engines_mentioning(f"sleep {seconds}"), 5)
    assert _engines_mentioning(f"sleep {seconds}") == []
