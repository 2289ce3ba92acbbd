"""Warm LibreOffice instances shared by the conversions of one process.

Each :class:`Engine` is one bridge process (``office_bridge.py`` run by Debian's
``/usr/bin/python3``, the only interpreter ``python3-uno`` works with) and the ``soffice.bin`` it
starts, both in one process group and one sandbox of their own (:mod:`previewer.sandbox`: no
network; with bubblewrap a file view of ``/usr``, fonts, the engine's work directory and a private
``/tmp``), with a private throw-away profile and ``HOME`` in the engine's work directory. Each
input is copied into a job directory inside that work directory before the bridge is asked to
convert it, so LibreOffice never sees any other file of the host, whatever a document links to.

Engines start lazily on the first Office document and are reused for the next ones: at most
:func:`max_engines` per process (callers beyond it wait, within their timeout); an engine idle
for :data:`IDLE_SECONDS` is stopped; an engine is recycled after :data:`RECYCLE_AFTER` documents
(LibreOffice leaks) and replaced after a crash or a timeout (the whole group is killed).
:func:`shutdown` (``previewer.shutdown()``) stops them all and removes their work directories; it
runs at interpreter exit. A host killed without exit handlers (SIGKILL, or SIGTERM without a
handler) takes its engines with it (they die with their parent, and the bridge exits when its
stdin closes); the work directories left behind name the dead process and are removed by the next
engine started on the machine.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import queue
import re
import resource
import select
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from previewer.errors import EncryptedError, EngineError, EngineTimeoutError, InputError

if TYPE_CHECKING:
    import subprocess  # noqa: TID251 - only for the type of process.spawn's result

__all__ = ["Engine", "convert", "max_engines", "probe", "shutdown", "soffice_options"]

log = logging.getLogger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"
PROGRAM_DIR = Path("/usr/lib/libreoffice/program")
SOFFICE_BIN = PROGRAM_DIR / "soffice.bin"
BRIDGE = Path(__file__).resolve().with_name("office_bridge.py")
RECYCLE_AFTER = 100
"""Documents an instance converts before it is replaced by a fresh one."""
START_TIMEOUT = 90.0
"""Seconds a new instance may take to start and accept the UNO connection."""
PRISTINE_REGISTRY = PROGRAM_DIR.parent / "share" / ".registry"
"""Debian's packaged copy of the registry that ``/etc/libreoffice/registry`` is installed from."""
MAIN_XCD = PROGRAM_DIR.parent / "share" / "registry" / "main.xcd"
PRLIMIT = "/usr/bin/prlimit"
ENGINE_MEMORY = 6 << 30
"""Address-space cap of an engine (bridge and soffice.bin), in bytes, unless
``Limits.max_memory`` is larger. LibreOffice 7.4 reserves far more address space than it uses:
a legitimate 68-slide deck failed with ``bad_alloc`` under the 2 GiB a batch worker gets."""
IDLE_SECONDS = 60.0
"""An engine with no work for this long is stopped."""
MAX_ENGINES: int | None = None
"""Most engines one process runs at once; None means one per CPU (:func:`max_engines`)."""


@functools.cache
def soffice_options() -> tuple[str, ...]:
    """Bootstrap overrides ``soffice.bin`` needs on this system; usually none.

    Debian's LibreOffice reads its configuration registry (``CONFIGURATION_LAYERS`` in
    ``program/fundamentalrc``) from ``/etc/libreoffice/registry``, which sandboxes showing only
    ``/usr`` (GNOME's thumbnailer bubblewrap) hide; ``soffice.bin`` then aborts with
    ``NoSuchElementException``. When a registry layer there is unreadable and Debian's pristine
    copy under ``/usr/lib/libreoffice/share/.registry`` exists, the layers are pointed at that
    copy with ``-env:CONFIGURATION_LAYERS``; every other layer (the private profile's
    ``registrymodifications.xcu`` holding the security settings included) is kept as it is.
    """
    try:
        lines = (PROGRAM_DIR / "fundamentalrc").read_text("utf-8", "replace").splitlines()
    except OSError:
        return ()
    value = next(
        (ln.split("=", 1)[1] for ln in lines if ln.startswith("CONFIGURATION_LAYERS=")), ""
    )
    layers, changed = [], False
    for layer in value.split():
        kind, _, url = layer.partition(":")
        if kind in ("xcsxcu", "res") and url.startswith("file:///"):
            folder = Path(url.removeprefix("file://"))
            if (
                not os.access(folder, os.R_OK | os.X_OK)
                and (PRISTINE_REGISTRY / "main.xcd").is_file()
            ):
                layer, changed = f"{kind}:{PRISTINE_REGISTRY.as_uri()}", True
        layers.append(layer)
    if changed:
        log.debug("LibreOffice registry not readable; using %s", PRISTINE_REGISTRY)
        return (f"-env:CONFIGURATION_LAYERS={' '.join(layers)}",)
    return ()


@functools.cache
def probe() -> tuple[str | None, str]:
    """Find LibreOffice and its Python bridge; return ``(version, "")`` or ``(None, reason)``.

    The version is read from LibreOffice's own configuration (``ooSetupVersionAboutBox`` in
    ``share/registry/main.xcd``, what ``soffice --version`` prints) rather than by starting
    ``soffice.bin``, which cost every one-off conversion a second process start.
    """
    hint = (
        "install LibreOffice and its Python UNO bridge: "
        "apt-get install libreoffice-writer-nogui libreoffice-calc-nogui "
        "libreoffice-impress-nogui libreoffice-draw-nogui python3-uno"
    )
    if not SOFFICE_BIN.is_file():
        return None, f"LibreOffice not found ({SOFFICE_BIN}); {hint}"
    if not Path(SYSTEM_PYTHON).is_file() or not any(
        (Path(d) / "uno.py").is_file() for d in ("/usr/lib/python3/dist-packages",)
    ):
        return None, f"python3-uno not found for {SYSTEM_PYTHON}; {hint}"
    # In a sandbox that hides /etc, share/registry (a link to /etc/libreoffice/registry on
    # Debian) is unreadable; the engine then uses Debian's pristine copy (soffice_options).
    try:
        data = MAIN_XCD.read_bytes()
    except OSError as exc:
        try:
            data = (PRISTINE_REGISTRY / "main.xcd").read_bytes()
        except OSError:
            return None, f"LibreOffice is incomplete ({MAIN_XCD}: {exc.strerror}); {hint}"
    match = re.search(rb'oor:name="ooSetupVersionAboutBox"[^>]*>\s*<value>([^<]+)</value>', data)
    return (match.group(1).decode("ascii", "replace") if match else "unknown"), ""


FONT_RULES = (
    "30-metric-aliases",
    "40-nonlatin",
    "45-generic",
    "45-latin",
    "48-spacing",
    "49-sansserif",
    "60-generic",
    "60-latin",
    "65-fonts-persian",
    "65-nonlatin",
    "69-unifont",
    "70-no-bitmaps",
    "80-delicious",
    "90-synthetic",
)
"""fontconfig's default font-matching rules (from ``/usr/share/fontconfig/conf.avail``)."""
FONTS_CONF = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig>
<dir>/usr/share/fonts</dir>
<dir>/usr/local/share/fonts</dir>
{includes}
<cachedir>/var/cache/fontconfig</cachedir>
<cachedir>{cache}</cachedir>
</fontconfig>
"""


def fontconfig_env(workdir: Path) -> dict[str, str]:
    """``FONTCONFIG_FILE`` for LibreOffice when the system's fontconfig setup is hidden.

    Without ``/etc/fonts/fonts.conf`` (a sandbox showing only ``/usr``) fontconfig falls back to
    a bare configuration with no aliases, so documents asking for Calibri, Arial or Courier get
    arbitrary fonts instead of their metric-compatible replacements. A private ``fonts.conf`` in
    ``workdir`` then lists the fonts under ``/usr`` and fontconfig's default matching rules.

    Returns:
        ``{}`` normally, else the variable to add to LibreOffice's environment.
    """
    if os.access("/etc/fonts/fonts.conf", os.R_OK):
        return {}
    from xml.sax.saxutils import escape

    avail = Path("/usr/share/fontconfig/conf.avail")
    includes = "\n".join(
        f"<include>{escape(str(avail / (name + '.conf')))}</include>"
        for name in FONT_RULES
        if (avail / (name + ".conf")).is_file()
    )
    conf = workdir / "fonts.conf"
    cache = escape(str(workdir / "fontconfig"))
    conf.write_text(FONTS_CONF.format(includes=includes, cache=cache), "utf-8")
    return {"FONTCONFIG_FILE": str(conf)}


def max_engines() -> int:
    """Most LibreOffice engines this process runs at once: :data:`MAX_ENGINES`, else the CPUs."""
    if MAX_ENGINES is not None:
        return max(1, MAX_ENGINES)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_T = TypeVar("_T")


class _Keeper:
    """A thread that lives as long as the process and starts the engines.

    Engines die with the thread that started them (bubblewrap's ``--die-with-parent`` and
    ``setpriv --pdeathsig`` use ``PR_SET_PDEATHSIG``, which fires when that *thread* exits), so
    an engine started by a short-lived thread of a host's pool would be killed with it.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._loop, name="previewer-office-keeper", daemon=True).start()

    def _loop(self) -> None:
        while True:
            work, reply = self._jobs.get()
            try:
                reply.put((True, work()))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                reply.put((False, exc))

    def call(self, work: Callable[[], _T]) -> _T:
        reply: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._jobs.put((work, reply))
        ok, value = reply.get()
        if not ok:
            raise value
        result: _T = value
        return result


_keeper: _Keeper | None = None


def _keeper_call(work: Callable[[], _T]) -> _T:
    global _keeper
    with _lock:
        if _keeper is None or _keeper.pid != os.getpid():
            _keeper = _Keeper()
        keeper = _keeper
    return keeper.call(work)


WORKDIR_PREFIX = "previewer-office-"


def _reap_stale(base: Path) -> None:
    """Remove engine work directories in ``base`` whose owning process is gone."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return
    for entry in entries:
        match = re.fullmatch(re.escape(WORKDIR_PREFIX) + r"(\d+)-\w+", entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log.debug("removing %s, left by process %d", entry, pid)
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            continue


def _template_dir() -> Path:
    """Where the initialised profile is kept: the user's cache, per LibreOffice version."""
    version = (probe()[0] or "unknown").replace("/", "_")
    return Path.home() / ".cache" / "previewer" / f"libreoffice-profile-{version}"


def _usable_template(template: Path) -> bool:
    """True when ``template`` is a profile template this user made (not planted by another)."""
    try:
        st = os.lstat(template)
    except OSError:
        return False
    import stat

    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.getuid()
        and not st.st_mode & 0o077
        and (template / "profile" / "user").is_dir()
    )


def _save_template(profile: Path, template: Path) -> None:
    """Keep a copy of a freshly initialised profile for the next engines (best effort).

    LibreOffice 7.4 initialises a new profile by starting, writing it and asking to be
    restarted (exit status 81): about 0.3-0.6 s of every cold start. Engines started later from
    a copy of an initialised profile (kept in ``~/.cache/previewer``, one per LibreOffice
    version; a cache, safe to delete) start once.
    """
    try:
        template.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{template.name}.", dir=template.parent))
    except OSError as exc:  # a read-only home (a thumbnailer sandbox): start cold each time
        log.debug("not keeping a LibreOffice profile template: %s", exc)
        return
    try:
        shutil.copytree(
            profile, tmp / "profile", symlinks=True, ignore=shutil.ignore_patterns(".lock")
        )
        os.rename(tmp, template)
    except OSError as exc:
        log.debug("not keeping a LibreOffice profile template: %s", exc)
        shutil.rmtree(tmp, ignore_errors=True)


def _live_members(pgid: int) -> bool:
    """True when a process of group ``pgid`` still runs (zombies do not count).

    soffice.bin 7.4 runs ``gpgconf``, ``gpg`` and ``gpgsm`` at start-up; once re-parented they
    stay zombies until the system's init reaps them, and a group holding only those would keep
    :func:`previewer.process.kill_group` waiting through its grace period (about 1 s per stop).
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _memory_cap(memory: int) -> int:
    """``memory``, lowered to the hard address-space limit this process may not exceed."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    return memory if hard == resource.RLIM_INFINITY else min(memory, hard)


class Engine:
    """One bridge process and its LibreOffice, in a sandbox and a private work directory.

    Args:
        memory: Address-space cap of the engine, in bytes.
        allow_unisolated: Start the engine unisolated where nothing isolates, instead of
            raising :class:`~previewer.errors.EngineUnavailableError`.
    """

    def __init__(self, *, memory: int = ENGINE_MEMORY, allow_unisolated: bool = False) -> None:
        from previewer import process, sandbox

        self.pid = os.getpid()
        self.uses = 0
        self.version = ""
        self.last_used = time.monotonic()
        self.unisolated = sandbox.mechanism().kind == "none"
        self.retired = False
        base = Path(tempfile.gettempdir())
        _reap_stale(base)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{self.pid}-", dir=base))
        self.jobs = self.workdir / "jobs"
        self.jobs.mkdir()
        self._buffer = b""
        self.proc: subprocess.Popen[bytes] | None = None
        template = _template_dir()
        from_template = _usable_template(template)
        if from_template:
            try:
                shutil.copytree(template / "profile", self.workdir / "profile", symlinks=True)
            except OSError:
                shutil.rmtree(self.workdir / "profile", ignore_errors=True)
                from_template = False
        try:
            argv = sandbox.wrap(
                [SYSTEM_PYTHON, "-I", str(BRIDGE), str(self.workdir), *soffice_options()],
                read=[BRIDGE],
                write=[self.workdir],
                allow_unisolated=allow_unisolated,
                program="LibreOffice",
            )
            if os.access(PRLIMIT, os.X_OK):
                argv = [PRLIMIT, f"--as={_memory_cap(memory)}", "--", *argv]
            argv = process.die_with_parent(argv)
            env = process.minimal_env(self.workdir, fontconfig_env(self.workdir))
            self.proc = _keeper_call(
                lambda: process.spawn(
                    argv, cwd=self.workdir, env=env, stderr=self.workdir / "bridge.log"
                )
            )
            reply = self.request({"op": "ping"}, START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        if not reply.get("ok"):
            self.stop()
            raise EngineError(f"LibreOffice did not start: {reply.get('message', '')}")
        self.version = str(reply.get("version", ""))
        log.debug("LibreOffice %s started in %s", self.version, self.workdir)
        if not from_template and not os.path.lexists(template):
            _save_template(self.workdir / "profile", template)

    def alive(self) -> bool:
        """True while the bridge process runs."""
        return self.proc is not None and self.proc.poll() is None

    def request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait for its reply.

        Raises:
            EngineTimeoutError: No reply within ``timeout``; the engine was killed.
            EngineError: The bridge died; the engine was stopped.
        """
        if self.proc is None or self.proc.stdin is None or self.proc.stdout is None:
            raise EngineError("LibreOffice engine is stopped")
        try:
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            self.stop()
            raise EngineError(f"LibreOffice bridge died: {self._logs()}") from exc
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop(graceful=False)
                raise EngineTimeoutError(
                    f"LibreOffice was killed after the timeout of {timeout:g} s",
                    hint="raise --timeout if the document is legitimately slow",
                )
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    logs = self._logs()
                    self.stop()
                    raise EngineError(f"LibreOffice bridge died: {logs}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _logs(self) -> str:
        text = ""
        for name in ("bridge.log", "soffice.log"):
            with contextlib.suppress(OSError):
                text += (self.workdir / name).read_bytes()[-1500:].decode("utf-8", "replace")
        return text.strip() or "no message"

    def stop(self, *, graceful: bool = True) -> None:
        """Stop the bridge and LibreOffice (the whole process group) and remove the work dir.

        Args:
            graceful: Let an idle bridge stop LibreOffice first; False kills the group at once
                (a hung conversion would not let the bridge read the request to stop).
        """
        proc, self.proc = self.proc, None
        if proc is not None and self.pid == os.getpid():
            from previewer import process

            if graceful and proc.poll() is None and proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # the bridge stops LibreOffice and exits
                with contextlib.suppress(Exception):
                    proc.wait(timeout=3)
            if proc.poll() is None or _live_members(proc.pid):
                process.kill_group(proc, grace=0.5)  # anything left in the group
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self.pid == os.getpid():  # a forked child must not remove its parent's engine
            shutil.rmtree(self.workdir, ignore_errors=True)


_lock = threading.Lock()
_changed = threading.Condition(_lock)
_idle: list[Engine] = []
_busy: set[Engine] = set()
_starting = 0
_registered = False
_reaper_pid = 0


def _register() -> None:
    """On first use in this process: stop engines at exit, and when they sit idle."""
    global _registered, _reaper_pid
    if not _registered:
        atexit.register(shutdown)
        from previewer import plugin

        plugin.register_shutdown(shutdown)
        _registered = True
    if _reaper_pid != os.getpid():
        _reaper_pid = os.getpid()
        threading.Thread(target=_reap_idle, name="previewer-office-idle", daemon=True).start()


def _reap_idle() -> None:
    """Stop engines that had no work for :data:`IDLE_SECONDS` (runs in a daemon thread)."""
    while True:
        with _lock:
            _changed.wait(max(IDLE_SECONDS / 4, 0.05))
            now = time.monotonic()
            stale = [e for e in _idle if now - e.last_used >= IDLE_SECONDS]
            for engine in stale:
                _idle.remove(engine)
            if stale:
                _changed.notify_all()
        for engine in stale:
            log.debug("stopping LibreOffice idle for %.0f s", now - engine.last_used)
            engine.stop()


@contextlib.contextmanager
def _engine(timeout: float, *, memory: int, allow_unisolated: bool) -> Iterator[Engine]:
    """Borrow an idle engine, or start one while under :func:`max_engines`, or wait for one.

    Raises:
        EngineTimeoutError: Every engine stayed busy for ``timeout`` seconds.
    """
    global _starting
    deadline = time.monotonic() + timeout
    engine = None
    retire: list[Engine] = []
    with _lock:
        _register()
        while True:
            for candidate in list(_idle):
                if candidate.pid != os.getpid() or not candidate.alive():
                    _idle.remove(candidate)
                    retire.append(candidate)
                elif engine is None and (allow_unisolated or not candidate.unisolated):
                    _idle.remove(candidate)
                    engine = candidate
            if engine is not None:
                break
            if len(_idle) + len(_busy) + _starting >= max_engines() and _idle:
                retire.append(_idle.pop(0))  # unusable for this call: make room
            if len(_idle) + len(_busy) + _starting < max_engines():
                _starting += 1
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineTimeoutError(
                    f"all {max_engines()} LibreOffice engines stayed busy for {timeout:g} s",
                    hint="raise --timeout, or convert fewer Office documents at once",
                )
            _changed.wait(left)
        if engine is not None:
            _busy.add(engine)
    for old in retire:
        old.stop()
    if engine is None:
        try:
            engine = Engine(memory=memory, allow_unisolated=allow_unisolated)
        finally:
            with _lock:
                _starting -= 1
                if engine is not None:
                    _busy.add(engine)
                _changed.notify_all()
    try:
        yield engine
    finally:
        with _lock:
            _busy.discard(engine)
            engine.last_used = time.monotonic()
            keep = engine.alive() and engine.uses < RECYCLE_AFTER and not engine.retired
            if keep:
                _idle.append(engine)
            _changed.notify_all()
        if not keep:
            engine.stop()


def convert(
    source: Path,
    out: Path,
    *,
    timeout: float,
    pages: str | None = None,
    password: str | None = None,
    asked: bool | None = None,
    import_filter: str | None = None,
    filter_options: str | None = None,
    memory: int = 0,
    allow_unisolated: bool = False,
    no_text: bool = False,
) -> None:
    """Convert ``source`` to the PDF ``out`` with a warm LibreOffice.

    ``source`` is copied into a job directory of the engine (the only host files the sandboxed
    LibreOffice sees are its own); the PDF is written there and moved to ``out``.

    Args:
        source: Absolute path of the document.
        out: Absolute path of the PDF to write.
        timeout: Seconds the call may take, waiting for a free engine included (the instance
            is killed after it).
        pages: A page range such as ``"1-3"`` to export only those pages, or None for all.
        password: Password for an encrypted document.
        asked: Whether the user gave ``password`` (default: whether there is one); a wrong
            password the user did not give is reported as a missing one.
        import_filter: LibreOffice import filter to force (else LibreOffice detects the type).
        filter_options: Options of that filter (CSV separators and encoding).
        memory: Address-space cap of a newly started engine (at least :data:`ENGINE_MEMORY`).
        allow_unisolated: Run LibreOffice unisolated where nothing isolates.
        no_text: Refuse the document when LibreOffice's own type detection takes it for plain
            text (it was sniffed as an Office type, most likely by its name only).

    Raises:
        EncryptedError: The document asks for a password (none given, or a wrong one).
        InputError: LibreOffice cannot load the document.
        EngineTimeoutError: The conversion ran past ``timeout``, or no engine became free.
        EngineUnavailableError: LibreOffice cannot be isolated here.
        EngineError: LibreOffice crashed or failed to export.
    """
    started = time.monotonic()
    with _engine(
        timeout, memory=max(memory, ENGINE_MEMORY), allow_unisolated=allow_unisolated
    ) as engine:
        job = engine.jobs / uuid.uuid4().hex
        job.mkdir()
        try:
            staged = job / source.name
            shutil.copyfile(source, staged)
            req = {
                "op": "convert",
                "src": str(staged),
                "out": str(job / "out.pdf"),
                "pages": pages,
                "password": password,
                "filter": import_filter,
                "filter_options": filter_options,
                "no_text": no_text,
            }
            engine.uses += 1
            left = max(timeout - (time.monotonic() - started), 1.0)
            try:
                reply = engine.request(req, left)
            except BaseException:
                # Interrupted (Ctrl-C) or failed mid-request: a late reply would desynchronise
                # the protocol, and the document may still be busy in LibreOffice.
                engine.stop(graceful=False)
                raise
            if reply.get("error") == "crashed":
                engine.stop()
            elif reply.get("ok"):
                shutil.move(job / "out.pdf", out)
        finally:
            shutil.rmtree(job, ignore_errors=True)
    if reply.get("ok"):
        return
    error, message = reply.get("error"), str(reply.get("message", ""))
    if error == "encrypted":
        given = bool(password) if asked is None else asked
        raise EncryptedError(
            "document is encrypted and the password is wrong"
            if given
            else "document is encrypted and needs a password",
            hint=None if given else "pass the password with --password",
        )
    if error == "unloadable":
        raise InputError(message or "LibreOffice cannot load it")
    raise EngineError(message or "LibreOffice failed")


def shutdown() -> None:
    """Stop every engine of this process and remove their work directories.

    Registered with :mod:`atexit` on first use, and run by ``previewer.shutdown()``. Engines
    busy with a conversion are stopped too (that conversion fails with an
    :class:`~previewer.errors.EngineError`). Engines start again on the next Office document.
    """
    with _lock:
        engines = list(_idle) + list(_busy)
        _idle.clear()
        for engine in _busy:
            engine.retired = True
        _changed.notify_all()
    for engine in engines:
        if engine.pid == os.getpid():
            engine.stop(graceful=engine not in _busy)
