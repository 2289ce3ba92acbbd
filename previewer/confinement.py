"""Confining a worker or a single conversion's child process, and stopping one.

A process that converts untrusted input sets itself up with :func:`limit_self`: Ctrl-C is left
to its parent, SIGTERM unwinds it (so it kills its engines' process groups and removes its work
directories), the kernel kills it when its parent dies (``PR_SET_PDEATHSIG``, see
:func:`die_with_parent`) and its address space is capped. :func:`_stop` stops one from the
outside (SIGTERM, then SIGKILL), and :func:`_crash_error` says how one that died without
answering ended (an engine's signal, the out-of-memory killer).

Used by :mod:`previewer.limited` (single conversions) and :mod:`previewer.pool` (batch workers);
imports nothing of previewer's above the core.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from previewer.errors import EngineError, LimitExceededError, PreviewerError

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ["die_with_parent", "limit_self"]

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
"""``prctl`` option: signal to receive when the parent dies (``<linux/prctl.h>``)."""


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent (``parent``) dies.

    ``libc`` is loaded by its exact name (``ctypes.util.find_library`` would run a compiler);
    without ``prctl`` (not Linux) nothing is done. If the parent is already gone, exit now.

    Args:
        parent: The pid of the process that started this one.
    """
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent or parent == 1:
        os._exit(1)  # orphaned before the request took effect


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """Return libc's ``prctl``, or None where there is none (looked up once, before forking)."""
    try:
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:  # pragma: no cover - a static interpreter
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
        function: Callable[..., int] = libc.prctl
    except (OSError, AttributeError) as exc:  # pragma: no cover - not Linux
        log.debug("cannot ask to die with the parent: %s", exc)
        return None
    return function


def _prepare_child() -> None:
    """Import and look up here, once, what every child needs, so no child pays for it."""
    import resource  # noqa: F401

    from previewer import capture  # noqa: F401

    _prctl()


def _release_forkserver() -> None:
    """In a child of the fork server: close its copy of the main process's "alive" pipe.

    multiprocessing (3.11) hands each such child the write end of the pipe the fork server
    watches to learn that the main process is gone (``forkserver._forkserver_alive_fd``);
    while any child holds it, the fork server outlives the main process, and children waiting
    to die with the fork server never would.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(alive, int):
        with contextlib.suppress(OSError):
            os.close(alive)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]


def limit_self(max_memory: int, parent: int) -> None:
    """Set up a worker or a single conversion's child: signals, parent death, memory cap.

    Args:
        max_memory: Address space the conversion may take beyond what the process already
            holds, in bytes (the process starts as a copy of a bigger one when forked directly).
        parent: The pid of the process that started this one.
    """
    import resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent coordinates Ctrl-C

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds: engines killed, work dirs removed

    signal.signal(signal.SIGTERM, terminate)
    die_with_parent(parent)
    _cap_malloc_arenas()
    cap = max_memory + _address_space()
    try:
        # Soft limit only: an engine started from here may get its own cap (LibreOffice needs
        # more address space than a worker, see converters.office_engine).
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot cap memory at %d bytes: %s", cap, exc)


M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter for the number of malloc arenas."""

MALLOC_ARENAS = 2
"""Arenas a converting process may have (glibc's default: 8 per CPU)."""


def _cap_malloc_arenas() -> None:
    """Keep glibc from reserving a 64 MiB malloc arena for every engine thread.

    The memory cap is an address-space limit, which counts reserved memory, not used memory:
    libvips' worker threads each took an arena, and a 12,000 x 12,000 WebP scaled to 8,000 px
    (540 MB resident) reserved 2.2 GB and failed under the 2 GiB default. Two arenas keep the
    reservation close to what is used; the threads still allocate in parallel.
    """
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError) as exc:  # pragma: no cover - not glibc
        log.debug("cannot limit malloc arenas: %s", exc)


def _address_space() -> int:
    """This process's current address-space size (``VmSize``), in bytes; 0 if unknown."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _short_socket_dir() -> None:
    """Make multiprocessing put its fork-server socket where the path fits AF_UNIX (108 bytes).

    It uses a directory under the temporary directory; a long ``TMPDIR`` (deep build or test
    directories) would make the fork server fail with "AF_UNIX path too long".
    """
    import tempfile
    from multiprocessing import util

    if len(tempfile.gettempdir()) <= 60 or not os.access("/tmp", os.W_OK):
        return
    saved = tempfile.tempdir
    tempfile.tempdir = "/tmp"
    try:
        util.get_temp_dir()  # created now, under /tmp, and reused for the life of the process
    finally:
        tempfile.tempdir = saved


def _stop(process: BaseProcess, grace: float = 3.0) -> None:
    """SIGTERM a worker (it unwinds and kills its engines), then SIGKILL if it lingers."""
    if process.pid is None:
        return
    try:
        os.kill(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    process.join(timeout=grace)
    if process.is_alive():
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.join(timeout=5)


def _crash_error(exitcode: int | None) -> PreviewerError:
    """The error for a process that died with ``exitcode`` without answering."""
    if exitcode is not None and exitcode < 0:
        signum = -exitcode
        try:
            signame = signal.Signals(signum).name
        except ValueError:
            signame = f"signal {signum}"
        if signum == signal.SIGKILL:
            return LimitExceededError(
                "its worker was killed (SIGKILL), most likely by the out-of-memory killer",
                hint="ask for a smaller size or lower max_memory, or give the machine more memory",
            )
        return EngineError(f"the engine crashed ({signame}); its worker was replaced")
    return EngineError(f"its worker exited unexpectedly (status {exitcode}); it was replaced")
