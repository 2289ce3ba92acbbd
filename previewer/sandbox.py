"""Operating-system isolation for the external engines that parse document content.

Engine settings are not a security boundary: LibreOffice 7.4 fetches linked images and
stylesheets and reads ``file://`` links from some document types whatever its profile says
(see ENGINES.md). So every engine child that parses a document runs

- in an **empty network namespace** (only a loopback device of its own: nothing on the host's
  ``127.0.0.1`` nor any other address is reachable), and
- where bubblewrap works, in a **private file view**: ``/usr`` and a few read-only system files
  (fonts, the dynamic loader cache, the engines' own configuration), a private ``/tmp``, an
  empty ``/dev`` and a ``/proc`` of its own (its own PID namespace: no other process is
  visible), no capabilities, plus exactly the paths the converter names: the conversion's
  work directory (writable) and its input (read-only);
- dying with its parent (``--die-with-parent``: ``PR_SET_PDEATHSIG``).

bubblewrap (``bwrap``, Debian package ``bubblewrap``) gives both; util-linux ``unshare --net
--map-root-user`` gives the network namespace only. The best installed one is used without a
trial run; when it cannot set its sandbox up here (it says so on stderr before the engine
starts), a probe confirms that once per process and the engine is rerun under the next one
(long-lived engines, which cannot be rerun, get a mechanism confirmed by a probe up front).
When the process already runs in an empty network namespace (GNOME's thumbnailer sandbox, a
container started with ``--network none``) and neither works inside it, that is accepted as
network isolation. When nothing isolates, engines are refused with
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

from previewer import process
from previewer.errors import EngineUnavailableError

__all__ = [
    "SYSTEM_READ",
    "Mechanism",
    "describe",
    "mechanism",
    "python_paths",
    "setup_failed",
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


def _first_executable(candidates: Iterable[str]) -> str | None:
    return next((p for p in candidates if os.access(p, os.X_OK)), None)


def _installed() -> list[Mechanism]:
    """The wrappers installed here, best first (two ``access`` calls; nothing started)."""
    found = []
    bwrap = _first_executable(BWRAP_CANDIDATES)
    if bwrap is not None:
        found.append(Mechanism("bubblewrap", bwrap, "no network, private file view (bubblewrap)"))
    unshare = _first_executable(UNSHARE_CANDIDATES)
    if unshare is not None:
        found.append(Mechanism("unshare", unshare, "no network (unshare); files not restricted"))
    return found


# What this process learnt about the wrappers: kinds that ran a probe successfully, and kinds
# that failed one (with the reason). Filled lazily: see mechanism() and setup_failed().
_verified: set[str] = set()
_broken: dict[str, str] = {}
_warned: list[str] = []

# How each wrapper reports its own failure: exit status 1 and a message with this prefix on
# stderr, before the engine ever runs (bubblewrap 0.8, util-linux 2.38).
_SETUP_FAILURE = {"bubblewrap": b"bwrap: ", "unshare": b"unshare: "}


def _probe(mech: Mechanism) -> str:
    """Run ``true`` under ``mech``; return "" when it works, else the reason."""
    assert mech.program is not None
    true = shutil.which("true", path="/usr/bin:/bin") or "/usr/bin/true"
    args = _bwrap_base() if mech.kind == "bubblewrap" else list(_UNSHARE_ARGS)
    try:
        process.run([mech.program, *args, "--", true], timeout=10.0, env={"PATH": "/usr/bin:/bin"})
    except Exception as exc:  # noqa: BLE001 - a probe reports, it never raises
        return str(exc)
    return ""


def _mark_broken(mech: Mechanism, why: str) -> None:
    name = "bubblewrap" if mech.kind == "bubblewrap" else "unshare --net"
    _broken[mech.kind] = f"{name} does not work here ({why})"
    # Not a warning yet: the next mechanism (or an inherited empty network namespace) may do.
    log.info("engine isolation: %s", _broken[mech.kind])


def mechanism(*, verify: bool = True) -> Mechanism:
    """Return the mechanism engines are isolated with in this process.

    By default each candidate is tried with a probe (``true`` in the sandbox, about 10-50 ms)
    before it is returned, once per process: right for a long-lived engine started with
    :func:`previewer.helper.start_helper`, which cannot be rerun, and for ``previewer converters``.
    :func:`previewer.programs.run` passes ``verify=False``: the best installed wrapper that has
    not failed here is returned without starting anything, and a wrapper that cannot set its
    sandbox up is noticed on its first real use (:func:`setup_failed`) and the program rerun
    under the next one, which keeps the probe off every conversion's path.

    Args:
        verify: Probe each candidate not yet known to work. The outcome is remembered for
            the life of the process.

    Returns:
        The mechanism (``kind="none"`` with the reasons when nothing isolates here).
    """
    reasons = []
    installed = _installed()
    if not any(m.kind == "bubblewrap" for m in installed):
        reasons.append("bubblewrap is not installed")
    for mech in installed:
        if mech.kind in _broken:
            reasons.append(_broken[mech.kind])
            continue
        if verify and mech.kind not in _verified:
            why = _probe(mech)
            if why:
                _mark_broken(mech, why)
                reasons.append(_broken[mech.kind])
                continue
            _verified.add(mech.kind)
        return mech
    if not any(m.kind == "unshare" for m in installed):
        reasons.append("unshare (util-linux) is not installed")
    if not _host_has_network():
        return Mechanism("inherited", None, "no network (the whole process has none)")
    return Mechanism("none", None, "not isolated: " + "; ".join(reasons))


def setup_failed(argv: Sequence[str], returncode: int, stderr: bytes) -> bool:
    """Tell whether a wrapped program failed because its wrapper could not isolate it.

    bubblewrap and unshare exit with status 1 and a message starting ``bwrap:`` /
    ``unshare:`` when they cannot create the namespaces (no unprivileged user namespaces, a
    seccomp filter, a nested sandbox). The engine could print the same, so the wrapper is
    then confirmed with a probe; when the probe fails too, the wrapper is remembered as
    broken and :func:`wrap` moves on to the next mechanism.

    Args:
        argv: The command that ran, as :func:`wrap` returned it.
        returncode: Its exit status.
        stderr: Its standard error.

    Returns:
        True when the caller should wrap the program again and rerun it.
    """
    if returncode != 1 or not argv:
        return False
    for mech in _installed():
        prefix = _SETUP_FAILURE[mech.kind]
        if argv[0] != mech.program or not stderr.startswith(prefix):
            continue
        if mech.kind in _verified:
            return False
        why = _probe(mech)
        if not why:
            _verified.add(mech.kind)
            return False
        _mark_broken(mech, why)
        return True
    return False


_UNSHARE_ARGS = ("--net", "--map-root-user", "--kill-child")


def _bwrap_base() -> list[str]:
    """Arguments every bubblewrap sandbox gets: namespaces, /usr, /dev, /proc, a private /tmp.

    A PID namespace of its own, so ``/proc`` shows the sandbox's processes only (not the
    command lines and environments of the host's), and when its first process ends, the
    kernel kills everything else in it. No capabilities, not even inside the
    sandbox's user namespace (bubblewrap keeps them when run by root). ``--new-session`` is
    not needed: :func:`previewer.process.run` already starts bubblewrap in a new session
    without a controlling terminal, so the engine cannot push input into one (``TIOCSTI``),
    and keeping the session keeps the engine in the process group that is killed on timeout.
    """
    args = [
        "--unshare-user-try",
        "--unshare-ipc",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--cap-drop",
        "ALL",
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
    Computed once per ``sys.path``.
    """
    return _python_paths(tuple(sys.path))


@functools.lru_cache(maxsize=4)
def _python_paths(search_path: tuple[str, ...]) -> tuple[Path, ...]:
    paths: list[Path] = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).parent]
    paths += [Path(p) for p in search_path if p and os.path.isdir(p)]
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
    verify: bool = True,
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
        verify: Use a mechanism confirmed by a probe (see :func:`mechanism`); False for a
            caller that reruns the program when :func:`setup_failed` says so.

    Returns:
        The command to run.

    Raises:
        EngineUnavailableError: No isolation mechanism works here and ``allow_unisolated``
            is false.
    """
    mech = mechanism() if verify else mechanism(verify=False)
    name = program or Path(argv[0]).name
    if mech.kind == "none":
        if allow_unisolated:
            if not _warned:
                _warned.append(name)
                log.warning("running engines without isolation (allowed): %s", mech.detail)
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
    """One line saying how engines are isolated here (for ``previewer converters``).

    Probes the mechanism (one ``true`` in the sandbox, once per process), so the line says
    what engines really get.
    """
    return mechanism().detail
