"""One warm LibreOffice instance: its bridge process, sandbox, profile and work directory.

Each :class:`Engine` is one bridge process (``office_bridge.py`` run by Debian's
``/usr/bin/python3``, the only interpreter ``python3-uno`` works with) and the ``soffice.bin`` it
starts, both in one process group and one sandbox of their own (:mod:`previewer.sandbox`: no
network; with bubblewrap a file view of ``/usr``, fonts, the engine's work directory and a private
``/tmp``), with a private throw-away profile and ``HOME`` in the engine's work directory. Each
input is copied into a job directory inside that work directory before the bridge is asked to
convert it, so LibreOffice never sees any other file of the host, whatever a document links to.

The engines of a process are shared by its conversions through
:data:`previewer.converters.office_pool.ENGINES`. The bridge is started with
:func:`previewer.plugin.start_helper`, which gives it its process group, sandbox, memory cap
and death with previewer.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from previewer.errors import EngineError, EngineTimeoutError
from previewer.plugin import HelperProcess, start_helper

__all__ = ["ENGINE_MEMORY", "Engine", "probe", "soffice_options"]

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
ENGINE_MEMORY = 6 << 30
"""Address-space cap of an engine (bridge and soffice.bin), in bytes, unless
``Limits.max_memory`` is larger. LibreOffice 7.4 reserves far more address space than it uses:
a legitimate 68-slide deck failed with ``bad_alloc`` under the 2 GiB a batch worker gets."""


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


def _product_version() -> tuple[str, ...]:
    """The bridge's ``--product-version=X.Y`` option (LibreOffice's major and minor version).

    The bridge records it in the fresh profile as the last version run, which spares every
    start LibreOffice's first-start graphics render tests (about 0.8 s; see
    ``office_bridge.LAST_VERSION``).
    """
    match = re.match(r"(\d+)\.(\d+)", probe()[0] or "")
    return (f"--product-version={match[1]}.{match[2]}",) if match else ()


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
            profile,
            tmp / "profile",
            symlinks=True,
            ignore=shutil.ignore_patterns(".lock", "GraphicsRenderTests.log"),
        )
        os.rename(tmp, template)
    except OSError as exc:
        log.debug("not keeping a LibreOffice profile template: %s", exc)
        shutil.rmtree(tmp, ignore_errors=True)


class Engine:
    """One bridge process and its LibreOffice, in a sandbox and a private work directory.

    Args:
        memory: Address-space cap of the engine, in bytes.
        allow_unisolated: Start the engine unisolated where nothing isolates, instead of
            raising :class:`~previewer.errors.EngineUnavailableError`.
        started: Called once the engine's processes are spawned, before waiting for
            LibreOffice to accept the connection (work to overlap with its start; it must not
            raise).
    """

    def __init__(
        self,
        *,
        memory: int = ENGINE_MEMORY,
        allow_unisolated: bool = False,
        started: Callable[[], None] | None = None,
    ) -> None:
        self.pid = os.getpid()
        self.uses = 0
        self.version = ""
        self.last_used = time.monotonic()
        self.unisolated = False
        self.retired = False
        base = Path(tempfile.gettempdir())
        _reap_stale(base)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{self.pid}-", dir=base))
        self.jobs = self.workdir / "jobs"
        self.jobs.mkdir()
        self.helper: HelperProcess | None = None
        template = _template_dir()
        from_template = _usable_template(template)
        if from_template:
            try:
                shutil.copytree(template / "profile", self.workdir / "profile", symlinks=True)
            except OSError:
                shutil.rmtree(self.workdir / "profile", ignore_errors=True)
                from_template = False
        try:
            self.helper = start_helper(
                [
                    SYSTEM_PYTHON,
                    "-I",
                    str(BRIDGE),
                    str(self.workdir),
                    *soffice_options(),
                    *_product_version(),
                ],
                cwd=self.workdir,
                read=[BRIDGE],
                write=[self.workdir],
                env=fontconfig_env(self.workdir),
                stderr=self.workdir / "bridge.log",
                memory=memory,
                allow_unisolated=allow_unisolated,
                program="LibreOffice",
            )
            self.unisolated = not self.helper.isolated
            if started is not None:
                started()
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
        return self.helper is not None and self.helper.alive()

    def request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait for its reply.

        Raises:
            EngineTimeoutError: No reply within ``timeout``; the engine was killed.
            EngineError: The bridge died; the engine was stopped.
        """
        helper = self.helper
        if helper is None:
            raise EngineError("LibreOffice engine is stopped")
        try:
            helper.send(json.dumps(req).encode() + b"\n")
        except OSError as exc:
            self.stop()
            raise EngineError(f"LibreOffice bridge died: {self._logs()}") from exc
        line = helper.readline(timeout)
        if line is None:
            self.stop(graceful=False)
            raise EngineTimeoutError(
                f"LibreOffice was killed after the timeout of {timeout:g} s",
                hint="raise --timeout if the document is legitimately slow",
            )
        if not line:
            logs = self._logs()
            self.stop()
            raise EngineError(f"LibreOffice bridge died: {logs}")
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
            graceful: Let an idle bridge stop LibreOffice first (closing its stdin); False
                kills the group at once (a hung conversion would not let the bridge read it).
        """
        helper, self.helper = self.helper, None
        if helper is not None:
            helper.stop(grace=3.0 if graceful else 0)
        if self.pid == os.getpid():  # a forked child must not remove its parent's engine
            shutil.rmtree(self.workdir, ignore_errors=True)
