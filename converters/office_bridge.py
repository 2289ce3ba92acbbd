"""LibreOffice over UNO, as a small bridge program run by Debian's ``/usr/bin/python3``.

Debian's ``python3-uno`` is built for the system interpreter only, so previewer (in its own
virtual environment, possibly another Python) does not import ``uno``: it runs this script with
``/usr/bin/python3`` and talks to it over stdin/stdout, one JSON object per line.

The bridge starts ``soffice.bin`` itself, headless, with the private profile and ``HOME`` in its
work directory (the first argument; further ``-env:`` arguments are bootstrap options passed on
to ``soffice.bin``, such as ``CONFIGURATION_LAYERS`` in a sandbox that hides ``/etc``;
``--product-version=X.Y`` is the installed version, see :data:`LAST_VERSION`), in the
bridge's own process group, so killing that group stops everything. It then answers requests
until stdin closes:

- ``{"op": "convert", "src": PATH, "out": PATH, "pages": "1-3" | null, "password": str | null,
  "filter": IMPORT_FILTER | null, "filter_options": str | null, "no_text": bool}`` loads ``src``
  (refusing it when ``no_text`` is set and LibreOffice's type detection takes it for plain
  text) hidden, read-only,
  with macros and link updates disabled, and exports it to ``out`` as PDF. Reply:
  ``{"ok": true}`` or ``{"ok": false, "error": "encrypted" | "unloadable" | "crashed" | "failed",
  "message": str}``.
- ``{"op": "ping"}`` starts LibreOffice if needed. Reply: ``{"ok": true, "version": str}``.

Safety: the fresh profile blocks untrusted referer links (LibreOffice 7.4 otherwise fetches
linked remote images) and disables macros before LibreOffice first reads it; a password prompt is
answered by aborting (reported as ``encrypted``). A watchdog thread kills LibreOffice and exits
when previewer goes away (the bridge is re-parented), so SIGTERM or SIGKILL of previewer never
leaves ``soffice.bin`` running.
"""
# This file runs under the system Python with python3-uno, never inside previewer's process:
# it cannot use previewer.process, hence the direct use of subprocess.

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess  # noqa: TID251 - a separate program; see the comment above
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uno  # type: ignore[import-not-found]
import unohelper  # type: ignore[import-not-found]
from com.sun.star.awt import XCallback  # type: ignore[import-not-found]
from com.sun.star.task import XInteractionHandler  # type: ignore[import-not-found]

SOFFICE = "/usr/lib/libreoffice/program/soffice.bin"
START_TIMEOUT = 60.0
RESTART_EXIT = 81  # soffice.bin asks to be restarted (normally handled by oosplash)

XCU = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry"
 xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
{items}
</oor:items>
"""
SETTINGS = (
    # Blocks linked remote images and OLE links (fetched by default in 7.4, see ENGINES.md).
    (
        "/org.openoffice.Office.Common/Security/Scripting",
        "BlockUntrustedRefererLinks",
        "boolean",
        "true",
    ),
    (
        "/org.openoffice.Office.Common/Security/Scripting",
        "DisableMacrosExecution",
        "boolean",
        "true",
    ),
    ("/org.openoffice.Office.Common/Security/Scripting", "MacroSecurityLevel", "int", "3"),
    ("/org.openoffice.Office.Common/Misc", "UseLocking", "boolean", "false"),
    ("/org.openoffice.Office.Common/Misc", "ShowTipOfTheDay", "boolean", "false"),
    ("/org.openoffice.Office.Calc/Formula/Load", "OOXMLRecalcMode", "int", "1"),
    ("/org.openoffice.Office.Calc/Formula/Load", "ODFRecalcMode", "int", "1"),
)
LAST_VERSION = ("/org.openoffice.Setup/Product", "ooSetupLastVersion", "string")
"""Where LibreOffice remembers the last version it ran (``utl::isProductVersionUpgraded``).
Only the "what's new" infobar of a visible document window ever updates it, so a headless
LibreOffice takes every start for the first start of a new version and runs its VCL graphics
render tests (``GraphicsRenderTests.log``), about 0.8 s of every start. The bridge records the
running version there (``--product-version=X.Y``, passed by previewer), which skips them."""

TEXT_TYPES = frozenset({"generic_Text", "writer_Text", "writer_Text_encoded"})
"""What LibreOffice's detection calls data it can only read as plain text (LibreOffice 7.4
takes any unrecognised bytes for text): refused when the request says the file is an Office
type (``"no_text": true``)."""

EXPORT_FILTERS = (
    ("com.sun.star.sheet.SpreadsheetDocument", "calc_pdf_Export"),
    ("com.sun.star.presentation.PresentationDocument", "impress_pdf_Export"),
    ("com.sun.star.drawing.DrawingDocument", "draw_pdf_Export"),
    ("com.sun.star.formula.FormulaProperties", "math_pdf_Export"),
    ("com.sun.star.text.GenericTextDocument", "writer_pdf_Export"),
)


def _prop(name: str, value: Any) -> Any:
    prop = uno.createUnoStruct("com.sun.star.beans.PropertyValue")
    prop.Name = name
    prop.Value = value
    return prop


class PasswordHandler(unohelper.Base, XInteractionHandler):  # type: ignore[misc]
    """Answers every interaction by aborting; remembers whether a password was asked for."""

    def __init__(self) -> None:
        self.asked_password = False
        self.requests: list[str] = []

    def handle(self, request: Any) -> None:  # noqa: D102 - UNO callback
        # request.getRequest() cannot be used: pyuno 7.4 on Python 3.11 raises SystemError
        # ("returned a result with an exception set") when the request is a UNO exception.
        # A password request is recognised by its XInteractionPassword continuation instead.
        abort = None
        for cont in request.getContinuations():
            if _supports(cont, "com.sun.star.task.XInteractionPassword"):
                self.asked_password = True
            if abort is None and _supports(cont, "com.sun.star.task.XInteractionAbort"):
                abort = cont
        self.requests.append("password" if self.asked_password else "other")
        if abort is not None:
            abort.select()


class MainThreadJob(unohelper.Base, XCallback):  # type: ignore[misc]
    """A piece of work LibreOffice runs in its main thread (``XCallback.notify``)."""

    def __init__(self, work: Any) -> None:
        self.work = work
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def notify(self, data: Any) -> None:  # noqa: D102 - UNO callback
        try:
            self.result = self.work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc
        finally:
            self.done.set()


def _listening_sockets(pid: int) -> list[str]:
    """Paths of the Unix sockets under /tmp that process ``pid`` holds open."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return []
    paths = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in inodes and fields[7].startswith("/tmp/OSL_PIPE_"):
            paths.append(fields[7])
    return sorted(set(paths))


def _supports(obj: Any, interface: str) -> bool:
    try:
        return bool(obj.queryInterface(uno.getTypeByName(interface)))
    except Exception:  # noqa: BLE001 - not a UNO object
        return False


class Bridge:
    """One soffice.bin and the UNO connection to it."""

    def __init__(self, workdir: Path, options: list[str] | None = None) -> None:
        self.workdir = workdir
        self.options = [o for o in options or [] if o.startswith("-env:")]
        self.product_version = next(
            (
                o.partition("=")[2]
                for o in options or []
                if o.startswith("--product-version=")
                and re.fullmatch(r"\d+\.\d+", o.partition("=")[2])
            ),
            "",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.desktop: Any = None
        self.ctx: Any = None
        self.version = ""
        self.starts = 0
        self.sockets: list[str] = []

    def _write_profile(self) -> Path:
        profile = self.workdir / "profile"
        user = profile / "user"
        user.mkdir(parents=True, exist_ok=True)
        items = "\n".join(
            f'<item oor:path="{path}"><prop oor:name="{name}" oor:op="fuse">'
            f"<value>{value}</value></prop></item>"
            for path, name, _kind, value in (
                *SETTINGS,
                *([(*LAST_VERSION, self.product_version)] if self.product_version else []),
            )
        )
        (user / "registrymodifications.xcu").write_text(XCU.format(items=items), "utf-8")
        return profile

    def alive(self) -> bool:
        """True while soffice.bin runs."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start soffice.bin with a fresh profile and connect to it."""
        self.stop()
        profile = self._write_profile()
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        self.starts += 1
        pipe = f"previewer-{self.workdir.name}-{self.starts}"
        argv = [
            SOFFICE,
            *self.options,
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--invisible",
            "--nologo",
            "--norestore",
            "--nodefault",
            "--nolockcheck",
            "--nofirststartwizard",
            f"--accept=pipe,name={pipe};urp;StarOffice.ComponentContext",
        ]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(self.workdir),
            "TMPDIR": str(tmp),
            "SAL_USE_VCLPLUGIN": "svp",
        }
        if os.environ.get("FONTCONFIG_FILE"):  # set by previewer when /etc/fonts is hidden
            env["FONTCONFIG_FILE"] = os.environ["FONTCONFIG_FILE"]
        log = open(self.workdir / "soffice.log", "ab")  # noqa: SIM115 - handed to the child
        deadline = time.monotonic() + START_TIMEOUT
        for _attempt in range(3):
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                env=env,
                close_fds=True,
                preexec_fn=_die_with_parent,
            )
            ok = self._connect(pipe, deadline)
            if ok:
                self.sockets = _listening_sockets(self.proc.pid)
                break
            if self.proc.poll() != RESTART_EXIT:
                break
        log.close()
        if self.desktop is None:
            raise RuntimeError("LibreOffice did not start: " + _tail(self.workdir / "soffice.log"))

    def _connect(self, pipe: str, deadline: float) -> bool:
        local = uno.getComponentContext()
        resolver = local.ServiceManager.createInstanceWithContext(
            "com.sun.star.bridge.UnoUrlResolver", local
        )
        url = f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                ctx = resolver.resolve(url)
            except Exception:  # noqa: BLE001 - NoConnectException until it listens
                time.sleep(0.01)
                continue
            self.ctx = ctx
            smgr = ctx.ServiceManager
            self.desktop = smgr.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
            try:
                provider = smgr.createInstanceWithContext(
                    "com.sun.star.configuration.ConfigurationProvider", ctx
                )
                access = provider.createInstanceWithArguments(
                    "com.sun.star.configuration.ConfigurationAccess",
                    (_prop("nodepath", "/org.openoffice.Setup/Product"),),
                )
                self.version = str(access.getByName("ooSetupVersionAboutBox"))
            except Exception:  # noqa: BLE001 - the version is informative only
                self.version = ""
            return True
        return False

    def stop(self) -> None:
        """Kill soffice.bin and remove the sockets it listened on."""
        self.desktop = self.ctx = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        # LibreOffice 7.4 puts its pipes in /tmp whatever $TMPDIR says and never removes them
        # when killed. In a bubblewrap sandbox /tmp is private anyway; elsewhere they would pile
        # up in the host's /tmp.
        for path in self.sockets:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.sockets = []

    def ensure(self) -> None:
        """Start LibreOffice unless it runs and is connected."""
        if not self.alive() or self.desktop is None:
            self.start()

    def convert(self, req: dict[str, Any]) -> dict[str, Any]:
        """Load one document and export it to PDF in LibreOffice's main thread; return the reply.

        A UNO call from outside runs in one of soffice.bin's bridge threads while its main
        thread keeps dispatching events; Writer's comment margin then builds its windows in the
        middle of the load (an event posted by the layout) and, the ``.ui`` files of the
        ``-nogui`` packages being absent, LibreOffice 7.4 aborts (``NoSuchElementException``
        from ``CreateInterimBuilder``) on every document with comments. ``soffice
        --convert-to`` loads, exports and closes within one main-thread event, before any such
        event runs: the same is done here through ``com.sun.star.awt.AsyncCallback``, whose
        callback runs in the main thread, and the UNO calls made from the callback are executed
        by that same thread (UNO keeps the calling thread's identity across the bridge).
        """
        self.ensure()
        return self.on_main_thread(lambda: self._convert(req))

    def on_main_thread(self, work: Any) -> dict[str, Any]:
        """Run ``work()`` in soffice.bin's main thread and return its reply."""
        try:
            callback = self.ctx.ServiceManager.createInstanceWithContext(
                "com.sun.star.awt.AsyncCallback", self.ctx
            )
        except Exception:  # noqa: BLE001 - no such service: run from the bridge thread
            callback = None
        if callback is None:
            result: dict[str, Any] = work()
            return result
        job = MainThreadJob(work)
        callback.addCallback(job, None)
        while not job.done.wait(0.1):
            if not self.alive():
                self.stop()
                return {"ok": False, "error": "crashed", "message": "LibreOffice crashed"}
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _convert(self, req: dict[str, Any]) -> dict[str, Any]:
        handler = PasswordHandler()
        props = [
            _prop("Hidden", True),  # without it 7.4 returns no document for XLSX, then aborts
            _prop("ReadOnly", True),
            _prop("MacroExecutionMode", 0),  # NEVER_EXECUTE
            _prop("UpdateDocMode", 0),  # NO_UPDATE: no links, no external data
            _prop("InteractionHandler", handler),
        ]
        if req.get("password"):
            props.append(_prop("Password", req["password"]))
        if req.get("filter"):
            props.append(_prop("FilterName", req["filter"]))
        if req.get("filter_options"):
            props.append(_prop("FilterOptions", req["filter_options"]))
        url = uno.systemPathToFileUrl(req["src"])
        if req.get("no_text") and not req.get("filter"):
            detected = self.detect(url)
            if detected in TEXT_TYPES or not detected:
                what = "plain text" if detected else "not a format LibreOffice knows"
                return {"ok": False, "error": "unloadable", "message": f"{what}, not a document"}
        try:
            doc = self.desktop.loadComponentFromURL(url, "_blank", 0, tuple(props))
        except Exception as exc:  # noqa: BLE001 - UNO exceptions are not Python classes
            return self._load_failure(handler, exc)
        if doc is None:
            return self._load_failure(handler, None)
        try:
            export = next(
                (f for service, f in EXPORT_FILTERS if doc.supportsService(service)), None
            )
            if export is None:
                return {"ok": False, "error": "unloadable", "message": "not a printable document"}
            data = []
            if req.get("pages"):
                data.append(_prop("PageRange", req["pages"]))
            store = (
                _prop("FilterName", export),
                _prop(
                    "FilterData",
                    uno.Any("[]com.sun.star.beans.PropertyValue", tuple(data)),
                ),
                _prop("Overwrite", True),
            )
            doc.storeToURL(uno.systemPathToFileUrl(req["out"]), store)
        except Exception as exc:  # noqa: BLE001
            if self.died(exc):
                self.stop()
                return {"ok": False, "error": "crashed", "message": "LibreOffice crashed"}
            return {"ok": False, "error": "failed", "message": f"PDF export failed: {exc}"}
        finally:
            try:
                doc.close(True)
            except Exception:  # noqa: BLE001, S110 - already gone
                pass
        return {"ok": True}

    def died(self, exc: BaseException | None) -> bool:
        """True when LibreOffice is gone (killed or crashed) rather than the document failing."""
        if exc is not None and "disposed" in f"{type(exc).__name__} {exc}".lower():
            # The UNO connection broke: soffice.bin died, perhaps not yet reaped; either way this
            # instance is unusable.
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            return True
        return not self.alive()

    def detect(self, url: str) -> str:
        """LibreOffice's own type detection (content first, then the name): a type name or ""."""
        try:
            detection = self.ctx.ServiceManager.createInstanceWithContext(
                "com.sun.star.document.TypeDetection", self.ctx
            )
            kind, _descriptor = detection.queryTypeByDescriptor((_prop("URL", url),), True)
        except Exception:  # noqa: BLE001 - undecided: let the load decide
            return "?"
        return str(kind or "")

    def _load_failure(self, handler: PasswordHandler, exc: Exception | None) -> dict[str, Any]:
        if self.died(exc):
            self.stop()
            return {"ok": False, "error": "crashed", "message": "LibreOffice crashed on load"}
        if handler.asked_password:
            return {"ok": False, "error": "encrypted", "message": "document needs a password"}
        detail = getattr(exc, "Message", "") or (type(exc).__name__ if exc else "")
        message = "LibreOffice cannot load it" + (f" ({detail})" if detail else "")
        return {"ok": False, "error": "unloadable", "message": message}


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the bridge dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:  # noqa: BLE001, S110 - best effort; the watchdog remains
        pass


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_bytes()[-limit:].decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _watchdog(bridge: Bridge, parent: int) -> None:
    while True:
        time.sleep(0.25)
        if os.getppid() != parent:
            if bridge.proc is not None:
                try:
                    bridge.proc.kill()
                    bridge.proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            shutil.rmtree(bridge.workdir, ignore_errors=True)
            os._exit(3)


def main() -> int:
    """Serve requests from stdin until it closes."""
    workdir = Path(sys.argv[1])
    bridge = Bridge(workdir, sys.argv[2:])
    threading.Thread(target=_watchdog, args=(bridge, os.getppid()), daemon=True).start()
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            if req.get("op") == "ping":
                bridge.ensure()
                reply: dict[str, Any] = {"ok": True, "version": bridge.version}
            elif req.get("op") == "convert":
                reply = bridge.convert(req)
            else:
                reply = {"ok": False, "error": "failed", "message": f"unknown op {req.get('op')}"}
        except Exception as exc:  # noqa: BLE001 - reported to previewer, never a traceback
            if bridge.died(exc):
                bridge.stop()
                reply = {"ok": False, "error": "crashed", "message": f"LibreOffice died: {exc}"}
            else:
                reply = {"ok": False, "error": "failed", "message": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    bridge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
