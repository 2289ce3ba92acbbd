"""Warm LibreOffice instances shared by the conversions of one process.

Each :class:`Engine` is one bridge process (``office_bridge.py`` run by Debian's
``/usr/bin/python3``, the only interpreter ``python3-uno`` works with) and the ``soffice.bin`` it
starts, both in one process group of their own, with a private throw-away profile and ``HOME``
in the engine's own temporary directory. Engines start lazily on the first Office document, are
reused for the next ones, recycled after :data:`RECYCLE_AFTER` documents (LibreOffice leaks),
replaced after a crash or a timeout (the whole group is killed), and stopped at interpreter exit.
If previewer dies without running its exit handlers (SIGTERM, SIGKILL), the bridge notices it was
re-parented and kills LibreOffice itself.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import select
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from previewer.errors import EncryptedError, EngineError, EngineTimeoutError, InputError

if TYPE_CHECKING:
    import subprocess  # noqa: TID251 - only for the type of process.spawn's result

__all__ = ["Engine", "convert", "probe", "shutdown", "soffice_options"]

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
    """Find LibreOffice and its Python bridge; return ``(version, "")`` or ``(None, reason)``."""
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
    from previewer import process

    home = tempfile.mkdtemp(prefix="previewer-office-probe-")
    try:
        result = process.run(
            [str(SOFFICE_BIN), *soffice_options(), "--version"], timeout=30, cwd=Path(home)
        )
    except Exception as exc:  # noqa: BLE001 - availability never raises
        return None, f"LibreOffice does not run ({exc}); {hint}"
    finally:
        shutil.rmtree(home, ignore_errors=True)
    words = result.stdout.decode("utf-8", "replace").split()
    return (words[1] if len(words) > 1 else "unknown"), ""


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


class Engine:
    """One bridge process and its LibreOffice, in a private work directory."""

    def __init__(self) -> None:
        from previewer import process

        self.pid = os.getpid()
        self.uses = 0
        self.version = ""
        self.workdir = Path(tempfile.mkdtemp(prefix="previewer-office-"))
        self._buffer = b""
        try:
            self.proc: subprocess.Popen[bytes] | None = process.spawn(
                [SYSTEM_PYTHON, "-I", str(BRIDGE), str(self.workdir), *soffice_options()],
                cwd=self.workdir,
                env=process.minimal_env(self.workdir, fontconfig_env(self.workdir)),
                stderr=self.workdir / "bridge.log",
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
            process.kill_group(proc, grace=0.5)  # anything left in the group
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


_lock = threading.Lock()
_idle: list[Engine] = []
_busy: set[Engine] = set()
_registered = False


@contextlib.contextmanager
def _engine() -> Iterator[Engine]:
    """Borrow an idle engine (starting one if none), return it afterwards if still healthy."""
    global _registered
    engine = None
    with _lock:
        if not _registered:
            atexit.register(shutdown)
            _registered = True
        while _idle and engine is None:
            candidate = _idle.pop()
            if candidate.pid == os.getpid() and candidate.alive():
                engine = candidate
    if engine is None:
        engine = Engine()
    with _lock:
        _busy.add(engine)
    try:
        yield engine
    finally:
        with _lock:
            _busy.discard(engine)
            keep = engine.alive() and engine.uses < RECYCLE_AFTER
            if keep:
                _idle.append(engine)
        if not keep:
            engine.stop()


def convert(
    source: Path,
    out: Path,
    *,
    timeout: float,
    pages: str | None = None,
    password: str | None = None,
    import_filter: str | None = None,
    filter_options: str | None = None,
) -> None:
    """Convert ``source`` to the PDF ``out`` with a warm LibreOffice.

    Args:
        source: Absolute path of the document.
        out: Absolute path of the PDF to write.
        timeout: Seconds the conversion may take (the instance is killed after it).
        pages: A page range such as ``"1-3"`` to export only those pages, or None for all.
        password: Password for an encrypted document.
        import_filter: LibreOffice import filter to force (else LibreOffice detects the type).
        filter_options: Options of that filter (CSV separators and encoding).

    Raises:
        EncryptedError: The document asks for a password (none given, or a wrong one).
        InputError: LibreOffice cannot load the document.
        EngineTimeoutError: The conversion ran past ``timeout``.
        EngineError: LibreOffice crashed or failed to export.
    """
    req = {
        "op": "convert",
        "src": str(source.resolve()),
        "out": str(out.resolve()),
        "pages": pages,
        "password": password,
        "filter": import_filter,
        "filter_options": filter_options,
    }
    with _engine() as engine:
        engine.uses += 1
        try:
            reply = engine.request(req, timeout)
        except BaseException:
            # Interrupted (Ctrl-C) or failed mid-request: a late reply would desynchronise the
            # protocol, and the document may still be busy in LibreOffice. Discard the instance.
            engine.stop(graceful=False)
            raise
        if reply.get("error") == "crashed":
            engine.stop()
    if reply.get("ok"):
        return
    error, message = reply.get("error"), str(reply.get("message", ""))
    if error == "encrypted":
        raise EncryptedError(
            "document is encrypted and needs a password"
            if not password
            else "document is encrypted and the password is wrong",
            hint="pass the password with --password" if not password else None,
        )
    if error == "unloadable":
        raise InputError(message or "LibreOffice cannot load it")
    raise EngineError(message or "LibreOffice failed")


def shutdown() -> None:
    """Stop every engine of this process (registered with :mod:`atexit` on first use)."""
    with _lock:
        engines = list(_idle) + list(_busy)
        _idle.clear()
    for engine in engines:
        engine.stop()
