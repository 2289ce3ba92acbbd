"""Operating-system isolation for the external engines that parse document content.

Engine settings are not a security boundary: LibreOffice 7.4 fetches linked images and
stylesheets and reads ``file://`` links from some document types whatever its profile says
(see ENGINES.md). So every engine child that parses a document runs

- in an **empty network namespace** (only a loopback device of its own: nothing on the host's
  ``127.0.0.1`` nor any other address is reachable), and
- where bubblewrap works, in a **private file view**: ``/usr`` and a few read-only system files
  (fonts, the dynamic loader cache, the engines' own configuration), a private ``/tmp``, an
  empty ``/dev`` and ``/proc`` of its own, plus exactly the paths the converter names: the
  conversion's work directory (writable) and its input (read-only);
- dying with its parent (``--die-with-parent``: ``PR_SET_PDEATHSIG``).

The mechanism is chosen once per process, by trying it: bubblewrap (``bwrap``, Debian package
``bubblewrap``) gives both; util-linux ``unshare --net --map-root-user`` gives the network
namespace only. When the process already runs in an empty network namespace (GNOME's thumbnailer
sandbox, a container started with ``--network none``) and neither works inside it, that is
accepted as network isolation. When nothing isolates, engines are refused with
:class:`~previewer.errors.EngineUnavailableError` unless the caller accepts the risk with
``Limits(allow_unisolated=True)`` (``--allow-unisolated``, ``PREVIEWER_ALLOW_UNISOLATED=1``).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from previewer.errors import EngineUnavailableError

__all__ = [
    "SYSTEM_READ",
    "Mechanism",
    "describe",
    "mechanism",
    "python_paths",
    "wrap",
]

log = logging.getLogger(__name__)

SYSTEM_READ: tuple[str, ...] = (
    "/etc/fonts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ImageMagick-6",
    "/etc/ghostscript",
    "/etc/libreoffice",
    "/etc/papersize",
    "/etc/localtime",
    "/var/cache/fontconfig",
    "/var/lib/ghostscript",
)
"""System paths every sandboxed engine may read (when present): fonts and their cache, the
loader cache, and the configuration of the engines previewer drives. Nothing under ``/home``,
``/root``, ``/srv``, ``/tmp`` or the rest of ``/etc`` is visible."""

BWRAP_CANDIDATES = ("/usr/bin/bwrap", "/usr/local/bin/bwrap")
UNSHARE_CANDIDATES = ("/usr/bin/unshare", "/bin/unshare")
HINT = (
    "install bubblewrap (apt-get install bubblewrap) or allow unprivileged user namespaces; "
    "to run engines without isolation anyway (only for trusted input), pass "
    "allow_unisolated=True in Limits (--allow-unisolated, PREVIEWER_ALLOW_UNISOLATED=1)"
)


@dataclass(frozen=True)
class Mechanism:
    """How engines are isolated in this process.

    Attributes:
        kind: ``"bubblewrap"`` (network namespace and private file view), ``"unshare"``
            (network namespace only), ``"inherited"`` (this process already has no network)
            or ``"none"``.
        program: The wrapper program's path, when there is one.
        detail: A human description for ``previewer converters``; for ``"none"``, the reason.
    """

    kind: str
    program: str | None
    detail: str

    @property
    def network_isolated(self) -> bool:
        """True when engines cannot reach any network."""
        return self.kind != "none"

    @property
    def files_isolated(self) -> bool:
        """True when engines see only the files they need."""
        return self.kind == "bubblewrap"


def _host_has_network() -> bool:
    """Return True unless this process's network namespace has only a loopback device."""
    try:
        lines = Path("/proc/net/dev").read_text("ascii", "replace").splitlines()[2:]
    except OSError:
        return True
    names = [ln.split(":", 1)[0].strip() for ln in lines if ":" in ln]
    return any(n != "lo" for n in names)


def _try(argv: Sequence[str]) -> str:
    """Run a probe; return "" when it exits 0, else the reason."""
    from previewer import process

    try:
        process.run(argv, timeout=10.0, env={"PATH": "/usr/bin:/bin"})
    except Exception as exc:  # noqa: BLE001 - a probe reports, it never raises
        return str(exc)
    return ""


@functools.cache
def mechanism() -> Mechanism:
    """Find and test the isolation mechanism; cached for the life of the process.

    Returns:
        The best mechanism that works here (possibly ``kind="none"`` with the reason).
    """
    reasons = []
    bwrap = next((p for p in BWRAP_CANDIDATES if os.access(p, os.X_OK)), None)
    if bwrap is not None:
        true = shutil.which("true", path="/usr/bin:/bin") or "/usr/bin/true"
        why = _try([bwrap, *_bwrap_base(), "--", true])
        if not why:
            return Mechanism(
                "bubblewrap",
                bwrap,
                "no network, private file view (bubblewrap)",
            )
        reasons.append(f"bubblewrap does not work here ({why})")
    else:
        reasons.append("bubblewrap is not installed")
    unshare = next((p for p in UNSHARE_CANDIDATES if os.access(p, os.X_OK)), None)
    if unshare is not None:
        true = shutil.which("true", path="/usr/bin:/bin") or "/usr/bin/true"
        why = _try([unshare, *_UNSHARE_ARGS, "--", true])
        if not why:
            return Mechanism("unshare", unshare, "no network (unshare); files not restricted")
        reasons.append(f"unshare --net does not work here ({why})")
    if not _host_has_network():
        return Mechanism("inherited", None, "no network (the whole process has none)")
    reason = "; ".join(reasons)
    log.warning("engines cannot be isolated: %s", reason)
    return Mechanism("none", None, f"not isolated: {reason}")


_UNSHARE_ARGS = ("--net", "--map-root-user", "--kill-child")


def _bwrap_base() -> list[str]:
    """Arguments every bubblewrap sandbox gets: namespaces, /usr, /dev, /proc, a private /tmp."""
    args = [
        "--unshare-user-try",
        "--unshare-ipc",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    # Debian's merged /usr: /bin, /lib, ... are symlinks into /usr; bind them when they are not.
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    return args


def python_paths() -> tuple[Path, ...]:
    """Paths a Python helper running this interpreter needs to see (read-only).

    The interpreter's prefixes, every existing ``sys.path`` directory (the virtual
    environment's site-packages), and the ``previewer`` and converter packages themselves (an
    editable install imports them from the source tree, which stays hidden otherwise).
    """
    paths: list[Path] = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).parent]
    paths += [Path(p) for p in sys.path if p and os.path.isdir(p)]
    import importlib.util

    for package in ("previewer", "converters", "previewer.converters"):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            paths += [Path(p) for p in spec.submodule_search_locations]
    return tuple(dict.fromkeys(p.resolve() for p in paths if p.exists()))


def _under_usr(path: Path) -> bool:
    return path == Path("/usr") or Path("/usr") in path.parents


def wrap(
    argv: Sequence[str],
    *,
    read: Iterable[os.PathLike[str] | str] = (),
    write: Iterable[os.PathLike[str] | str] = (),
    allow_unisolated: bool = False,
    program: str | None = None,
) -> list[str]:
    """Return ``argv`` prefixed so that it runs isolated.

    Args:
        argv: The engine command (absolute program path first).
        read: Files or directories the engine may read (its input; engine data outside
            ``/usr``). Missing paths are skipped.
        write: Directories the engine may write (its work directory); also readable.
        allow_unisolated: Run the engine unisolated when no mechanism works, instead of
            refusing.
        program: Name used in the error message (default: the program's file name).

    Returns:
        The command to run.

    Raises:
        EngineUnavailableError: No isolation mechanism works here and ``allow_unisolated``
            is false.
    """
    mech = mechanism()
    name = program or Path(argv[0]).name
    if mech.kind == "none":
        if allow_unisolated:
            log.debug("running %s without isolation (allowed)", name)
            return list(argv)
        raise EngineUnavailableError(
            f"{name} cannot run isolated from the network and the host's files: "
            f"{mech.detail.removeprefix('not isolated: ')}",
            hint=HINT,
        )
    if mech.kind == "inherited":
        return list(argv)
    assert mech.program is not None
    if mech.kind == "unshare":
        return [mech.program, *_UNSHARE_ARGS, "--", *argv]
    args = [mech.program, *_bwrap_base()]
    for p in SYSTEM_READ:
        if os.path.exists(p):
            args += ["--ro-bind", p, p]
    seen: set[Path] = set()
    for kind, paths in (("--ro-bind", read), ("--bind", write)):
        for raw in paths:
            path = Path(os.path.abspath(os.fspath(raw)))
            if path in seen or _under_usr(path) or not os.path.lexists(path):
                continue
            seen.add(path)
            # The engine sees the file at the path it was given; --*-bind follows a symlink
            # given as the source, so a linked input is bound at its own path, read-only.
            args += [kind, str(path), str(path)]
    return [*args, "--", *argv]


def describe() -> str:
    """One line saying how engines are isolated here (for ``previewer converters``)."""
    return mechanism().detail
