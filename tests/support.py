"""What many test modules need, in one place.

- Running previewer: :func:`clean_env`, :func:`run_previewer` (the CLI in a subprocess),
  :func:`start_previewer` (the same, not waited for), :func:`invoke` (the real entry point
  in-process, under ``capsysbinary``), :func:`plugin_site` (a directory that makes a converter
  class an installed plugin for a subprocess).
- Engines: :func:`requires_engine` (a mark) and :func:`require_engine` (a call). A missing engine
  skips the test with its reason, except in CI (``CI`` set to anything but ``""``/``0``/
  ``false``), where CI installs every engine and a missing one fails the test instead.
- Nothing left behind: :func:`temp_leftovers` (``previewer-*``/``pymp-*`` and anything else in a
  private TMPDIR), :func:`osl_pipes` (LibreOffice's UNO sockets in ``/tmp``),
  :func:`partial_outputs` (``*.tmp`` and hidden files), :func:`written_outside` (files outside
  the output directory), :func:`files_under`.
- Live processes, through psutil: :func:`processes` (by environment, command line or program
  name), :func:`children`, :func:`alive`, :func:`gone`, :func:`cmdline`, :func:`mp_helpers`.
- Waiting: :func:`wait_until` (a bool) and :func:`wait_for` (an assertion).
- Images: :func:`mean_difference`, :func:`worst_channel_difference`, :func:`max_difference`,
  :func:`same_pixels`.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
from PIL import Image, ImageChops, ImageStat

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SAMPLES = ROOT / "samples"
PDF = SAMPLES / "report.pdf"  # 2 pages, A4 portrait
JPEG = SAMPLES / "photo.jpg"  # 1600 x 1200

# --------------------------------------------------------------------------- running previewer


def clean_env(*, pythonpath: Iterable[Path | str] = (), **extra: str) -> dict[str, str]:
    """This process's environment without ``PREVIEWER_*`` variables, for a previewer subprocess.

    Args:
        pythonpath: Directories put before the repository on ``PYTHONPATH`` (plugin sites).
        **extra: Variables to set (``TMPDIR=...``, markers).

    Returns:
        The environment: the repository is on ``PYTHONPATH``, so ``tests.plugins`` imports.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREVIEWER_")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), str(ROOT)])
    env.update(extra)
    return env


def run_previewer(
    *args: object,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    text: bool = False,
    input: bytes | str | None = None,
    python: Sequence[str] = (),
) -> subprocess.CompletedProcess[Any]:
    """Run ``python -m previewer ARGS`` and wait for it, output captured.

    Args:
        *args: The command line after ``previewer``.
        cwd: Its working directory.
        env: Its environment; :func:`clean_env` when not given.
        timeout: Seconds before the run is killed (and the test fails with TimeoutExpired).
        text: Decode stdout and stderr as text.
        input: Bytes (or text) fed to stdin.
        python: Arguments for the interpreter before ``-m previewer`` (e.g. ``-c LAUNCHER``).

    Returns:
        The finished process.
    """
    return subprocess.run(
        [sys.executable, *python, "-m", "previewer", *map(str, args)],
        cwd=cwd,
        env=clean_env() if env is None else env,
        capture_output=True,
        timeout=timeout,
        text=text,
        input=input,
    )


def start_previewer(
    *args: object,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start ``python -m previewer ARGS`` with stdout and stderr piped (unless overridden).

    Args:
        *args: The command line after ``previewer``.
        cwd: Its working directory.
        env: Its environment; :func:`clean_env` when not given.
        **popen: More :class:`subprocess.Popen` arguments (``stdout=subprocess.DEVNULL``, ...).

    Returns:
        The running process; the caller waits for it (and kills it in a ``finally``).
    """
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "previewer", *map(str, args)],
        cwd=cwd,
        env=clean_env() if env is None else env,
        **popen,
    )


def invoke(capsysbinary: pytest.CaptureFixture[bytes], *args: object) -> tuple[int, bytes, str]:
    """Run the real entry point (``previewer.cli.main``) in-process.

    Args:
        capsysbinary: pytest's binary capture fixture of the calling test.
        *args: The command line after ``previewer``.

    Returns:
        (exit status, stdout bytes (it may carry a PNG), stderr text).
    """
    from previewer.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsysbinary.readouterr()
    code = info.value.code
    return int(code) if code is not None else 0, captured.out, captured.err.decode()


def plugin_site(
    directory: Path,
    target: str = "tests.plugins.faulty:TripwireConverter",
    *,
    entry: str = "tripwire",
    dist: str = "previewer-tripwire",
) -> Path:
    """Make ``directory`` a site that declares ``target`` as a previewer converter entry point.

    Args:
        directory: Where to write the ``*.dist-info`` (created when missing).
        target: ``module:Class``; by default the tripwire of ``tests/plugins/faulty.py``.
        entry: The entry point's name.
        dist: The distribution's name.

    Returns:
        ``directory``, to put on a subprocess's ``PYTHONPATH`` (see :func:`clean_env`).
    """
    info = directory / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[previewer.converters]\n{entry} = {target}\n")
    return directory


# --------------------------------------------------------------------------- engines


def in_ci() -> bool:
    """Whether the suite runs in CI, where every engine is installed and none may be skipped."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@functools.cache
def _converter_reasons() -> dict[str, str]:
    import previewer
    from previewer.registry import Registry

    return {
        c.name: ("" if c.available else c.reason or "unavailable")
        for c in previewer.list_converters(Registry(entry_points=False))
    }


def _converter(name: str) -> str | None:
    reason = _converter_reasons().get(name, f"no converter named {name}")
    return reason or None


def _program(name: str) -> str | None:
    return None if shutil.which(name) else f"{name} is not installed"


GNOME_PYTHON = "/usr/bin/python3"
GNOME_PREVIEWER = "/usr/local/bin/previewer"


def _gnome_factory() -> str | None:
    if not os.access(GNOME_PYTHON, os.X_OK) or shutil.which("bwrap") is None:
        return "needs /usr/bin/python3 and bubblewrap"
    if not os.access(GNOME_PREVIEWER, os.X_OK):
        return f"needs previewer installed as {GNOME_PREVIEWER} (see README)"
    check = subprocess.run(
        [GNOME_PYTHON, "-c", "import gi; gi.require_version('GnomeDesktop', '3.0')"],
        capture_output=True,
        timeout=30,
    )
    if check.returncode != 0:
        return "needs python3-gi and gir1.2-gnomedesktop-3.0"
    return None


ENGINES: dict[str, tuple[str, Callable[[], str | None]]] = {
    "soffice": ("LibreOffice", lambda: _converter("office-libreoffice")),
    "gs": ("Ghostscript", lambda: _converter("postscript-ghostscript")),
    "ffmpeg": ("FFmpeg", lambda: _converter("video-ffmpeg")),
    "magick": ("ImageMagick (Wand)", lambda: _converter("magick-wand")),
    "rawpy": ("LibRaw (rawpy)", lambda: _converter("raw-libraw")),
    "imagemagick-cli": ("ImageMagick's convert", lambda: _program("convert")),
    "redis-server": ("Redis", lambda: _program("redis-server")),
    "gnome-thumbnail-factory": ("GNOME's thumbnail factory", _gnome_factory),
}
"""Engine name -> (what it is, probe returning why it is missing or None)."""


@functools.cache
def engine_missing(engine: str) -> str | None:
    """Why ``engine`` (a key of :data:`ENGINES`) cannot run here, or None when it can."""
    label, probe = ENGINES[engine]
    reason = probe()
    return None if reason is None else f"{label} ({engine}) is missing: {reason}"


def require_engine(*engines: str) -> None:
    """Skip the calling test when one of ``engines`` is missing; fail it instead in CI."""
    for engine in engines:
        reason = engine_missing(engine)
        if reason is not None:
            if in_ci():
                pytest.fail(f"{reason} (CI must install every engine)", pytrace=False)
            pytest.skip(reason)


def requires_engine(*engines: str) -> pytest.MarkDecorator:
    """Mark a test (``pytestmark`` a module) as needing ``engines``; see :func:`require_engine`.

    The check runs when the test is set up (``tests/conftest.py``), not at import.
    """
    unknown = set(engines) - set(ENGINES)
    assert not unknown, f"unknown engines {sorted(unknown)}; known: {sorted(ENGINES)}"
    return pytest.mark.requires_engine(*engines)


# --------------------------------------------------------------------------- leftovers


def temp_leftovers(directory: Path, *, allow: Sequence[str] = ()) -> list[str]:
    """Names of entries left in a private TMPDIR, but those starting with one of ``allow``.

    Args:
        directory: The TMPDIR the code under test was given (empty before).
        allow: Name prefixes that may stay, e.g. ``("pymp-",)``: the fork server's socket
            directory lives as long as this process.
    """
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith(tuple(allow)))


def osl_pipes() -> set[str]:
    """Names of LibreOffice's UNO pipe sockets (``OSL_PIPE_<uid>_*``) of this user in /tmp."""
    return {p.name for p in Path("/tmp").glob(f"OSL_PIPE_{os.getuid()}_*")}


JOURNAL = ".previewer-journal.jsonl"
"""The batch journal an output directory may hold (not a leftover)."""


def partial_outputs(directory: Path) -> list[Path]:
    """Half-written outputs under ``directory``: ``*.tmp`` files, hidden files but the journal.

    Outputs are written as ``.<name>.<random>.tmp`` and renamed when complete.
    """
    return sorted(
        p
        for p in directory.rglob("*")
        if p.name.endswith(".tmp") or (p.name.startswith(".") and p.name != JOURNAL)
    )


def snapshot(root: Path) -> set[Path]:
    """Every path under ``root`` now, for :func:`written_outside` later."""
    return set(root.rglob("*"))


def written_outside(root: Path, before: set[Path], *allowed: Path) -> list[Path]:
    """Paths that appeared under ``root`` since ``before`` (a :func:`snapshot`) outside ``allowed``.

    Args:
        root: The tree to check (say a test's ``tmp_path``).
        before: Its snapshot before the code under test ran.
        *allowed: Where writing was expected (the output directory, a private TMPDIR).
    """
    return sorted(
        p
        for p in snapshot(root) - before
        if not any(p == place or place in p.parents for place in allowed)
    )


def files_under(path: Path) -> list[str]:
    """Every path under ``path``, relative to it, sorted."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# --------------------------------------------------------------------------- processes


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a zombie is as good as gone)."""
    try:
        return _live(psutil.Process(pid))
    except psutil.Error:
        return False


def gone(pid: int, within: float = 5.0, *, zombie_ok: bool = True) -> bool:
    """Whether ``pid`` is gone, waiting up to ``within`` seconds.

    Args:
        pid: The process.
        within: Seconds to wait.
        zombie_ok: Count a zombie (dead, not yet reaped) as gone; False requires it reaped.
    """
    if zombie_ok:
        return wait_until(lambda: not alive(pid), within)
    return wait_until(lambda: not psutil.pid_exists(pid), within)


def cmdline(pid: int) -> str:
    """The command line of ``pid``, words joined by spaces ("?" when unreadable)."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return "?"


def mp_helpers() -> set[int]:
    """multiprocessing's fork server and resource tracker of this process.

    They live as long as the process that used a pool, by design.
    """
    from multiprocessing import forkserver, resource_tracker

    pids = {
        getattr(forkserver._forkserver, "_forkserver_pid", None),  # type: ignore[attr-defined]
        getattr(resource_tracker._resource_tracker, "_pid", None),  # type: ignore[attr-defined]
    }
    return {pid for pid in pids if pid is not None}


def _environ_text(proc: psutil.Process) -> str:
    return "\0".join(f"{k}={v}" for k, v in proc.environ().items())


def processes(
    *,
    environ: str | None = None,
    cmdline: str | None = None,
    programs: Iterable[str] | None = None,
    exclude: Iterable[int] = (),
) -> list[int]:
    """PIDs of live processes (zombies aside; never this one) matching every criterion given.

    Args:
        environ: Text in one of their environment variables (``K=V``), e.g. a private TMPDIR
            or a marker variable.
        cmdline: Text in their command line, e.g. a private work directory.
        programs: Names of the executable (first word's basename, or the process name), e.g.
            ``{"soffice.bin", "gs"}``.
        exclude: PIDs not to report (multiprocessing's helpers, say).

    Returns:
        Sorted PIDs.
    """
    skip = {os.getpid(), *exclude}
    wanted = set(programs) if programs is not None else None
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        if proc.pid in skip or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        words = proc.info["cmdline"] or []
        if wanted is not None:
            first = Path(words[0]).name if words else ""
            if first not in wanted and proc.info["name"] not in wanted:
                continue
        if cmdline is not None and cmdline not in " ".join(words):
            continue
        if environ is not None:
            try:
                if environ not in _environ_text(proc):
                    continue
            except psutil.Error:
                continue
        found.append(proc.pid)
    return sorted(found)


def children(pid: int | None = None, *, recursive: bool = False) -> set[int]:
    """Live children of ``pid`` (default: this process), but multiprocessing's helpers."""
    try:
        procs = psutil.Process(pid).children(recursive=recursive)
    except psutil.Error:
        return set()
    helpers = mp_helpers()
    return {p.pid for p in procs if p.pid not in helpers and _live(p)}


# --------------------------------------------------------------------------- waiting


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass.

    Returns:
        Whether it became true (it is evaluated once more at the deadline).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def wait_for(condition: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    """Like :func:`wait_until`, but fail the test when the time runs out.

    Raises:
        AssertionError: Naming ``what`` was waited for.
    """
    if not wait_until(condition, timeout):
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")


# --------------------------------------------------------------------------- images


def _pair(a: Image.Image, b: Image.Image, mode: str | None) -> tuple[Image.Image, Image.Image]:
    assert a.size == b.size, f"sizes differ: {a.size} != {b.size}"
    mode = mode or (a.mode if a.mode == b.mode else "RGB")
    return (a if a.mode == mode else a.convert(mode)), (b if b.mode == mode else b.convert(mode))


def channel_differences(a: Image.Image, b: Image.Image, *, mode: str | None = None) -> list[float]:
    """Mean absolute difference of each channel (0-255) of two same-sized images.

    Args:
        a: One image.
        b: The other.
        mode: Convert both to this mode first; by default their common mode, else RGB.
    """
    a, b = _pair(a, b, mode)
    return list(ImageStat.Stat(ImageChops.difference(a, b)).mean)


def mean_difference(
    a: Image.Image, b: Image.Image, *, mode: str | None = "RGB", resize: bool = False
) -> float:
    """Mean absolute difference (0-255) over all pixels and channels, compared in ``mode``.

    Args:
        a: One image.
        b: The other.
        mode: Convert both to this mode first.
        resize: Resize ``b`` to the size of ``a`` first (bilinear), for pictures of one scene
            rendered at different sizes.
    """
    if resize and b.size != a.size:
        b = b.convert(mode or a.mode).resize(a.size, Image.Resampling.BILINEAR)
    diffs = channel_differences(a, b, mode=mode)
    return sum(diffs) / len(diffs)


def worst_channel_difference(a: Image.Image, b: Image.Image, *, mode: str | None = None) -> float:
    """The largest per-channel mean absolute difference (0-255) of two images."""
    return max(channel_differences(a, b, mode=mode))


def max_difference(a: Image.Image, b: Image.Image) -> int:
    """The largest absolute difference (0-255) of any channel of any pixel; same size and mode."""
    assert a.size == b.size and a.mode == b.mode, (a.size, a.mode, b.size, b.mode)
    extrema = ImageChops.difference(a, b).getextrema()
    if isinstance(extrema[0], int | float):  # one band: (lo, hi)
        return int(extrema[1])  # type: ignore[arg-type]
    return int(max(hi for _, hi in extrema))  # type: ignore[misc]


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    """Whether two images of the same size and mode are identical pixel for pixel."""
    assert a.size == b.size and a.mode == b.mode, (a.size, a.mode, b.size, b.mode)
    return ImageChops.difference(a, b).getbbox() is None
