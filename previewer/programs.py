"""Running external programs for converters: one-shot isolated runs and long-lived helpers.

:func:`run` is what ``ConvertContext.run`` does: :func:`previewer.process.run` wrapped by the
isolation sandbox (:mod:`previewer.sandbox`). :func:`start_helper` starts a program that stays
up across conversions (LibreOffice's UNO bridge) under the same rules: an argv list, its own
process group, no network and a restricted file view, death with previewer, an optional
address-space cap. Converters reach both through :mod:`previewer.plugin` only.
"""

from __future__ import annotations

import contextlib
import os
import queue
import resource
import select
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from previewer import process, sandbox
from previewer.process import RunResult

if TYPE_CHECKING:
    import subprocess  # noqa: TID251 - only for the type of process.spawn's result

__all__ = ["HelperProcess", "Isolation", "isolated", "run", "start_helper"]

PRLIMIT = "/usr/bin/prlimit"
"""util-linux ``prlimit``: caps a helper's address space before it runs."""


@dataclass(frozen=True)
class Isolation:
    """The :class:`previewer.process.Wrapper` that isolates one program (see :func:`run`).

    Attributes:
        read: Paths the program may read.
        write: Directories it may write.
        allow_unisolated: Run it unisolated where nothing isolates.
    """

    read: tuple[os.PathLike[str] | str, ...] = ()
    write: tuple[os.PathLike[str] | str, ...] = ()
    allow_unisolated: bool = False

    def wrap(self, argv: list[str]) -> list[str]:
        """Return ``argv`` wrapped by the best mechanism not known to fail here."""
        extra: tuple[os.PathLike[str] | str, ...] = ()
        if os.path.realpath(argv[0]) == os.path.realpath(sys.executable):
            extra = sandbox.python_paths()
        return sandbox.wrap(
            argv,
            read=(*self.read, *extra),
            write=self.write,
            allow_unisolated=self.allow_unisolated,
            program=Path(argv[0]).name,
            verify=False,
        )

    def setup_failed(self, wrapped: list[str], returncode: int, stderr: bytes) -> bool:
        """Tell whether the wrapper could not set the sandbox up (:func:`sandbox.setup_failed`)."""
        return sandbox.setup_failed(wrapped, returncode, stderr)


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    expect_output: Path | None = None,
    isolate: bool = True,
    read: Sequence[os.PathLike[str] | str] = (),
    allow_unisolated: bool = False,
) -> RunResult:
    """Run a program like :func:`previewer.process.run`, isolated.

    No network, and (with bubblewrap) only ``/usr``, ``read``, ``cwd`` (writable) and a private
    ``/tmp`` visible. A program that is this Python interpreter also sees its installation
    (:func:`previewer.sandbox.python_paths`). A wrapper that cannot set its sandbox up here is
    retired (:func:`previewer.sandbox.setup_failed`) and the program wrapped again by the next
    mechanism: at most one rerun per mechanism.

    Args:
        argv: The program (preferably an absolute path) and its arguments.
        timeout: Wall-clock seconds before the process group is killed.
        cwd: Working directory (writable inside the sandbox).
        env: Environment (see :func:`previewer.process.run`).
        expect_output: A file the program must leave behind, non-empty.
        isolate: False runs the program unisolated (for programs that never parse input).
        read: Paths the isolated program may read (its input).
        allow_unisolated: Run unisolated where no isolation works instead of raising.

    Returns:
        The result, with captured stdout and stderr.

    Raises:
        EngineTimeoutError: The program ran past ``timeout`` and was killed.
        EngineError: The program could not start, exited non-zero, or left no output.
        EngineUnavailableError: Nothing can isolate the program here and
            ``allow_unisolated`` is false.
    """
    wrapper = (
        Isolation(tuple(read), (cwd,) if cwd is not None else (), allow_unisolated)
        if isolate
        else None
    )
    return process.run(
        argv, timeout=timeout, cwd=cwd, env=env, expect_output=expect_output, wrapper=wrapper
    )


def isolated() -> bool:
    """Tell whether programs started here run isolated (at least from the network).

    Probes the isolation mechanism once per process (see :func:`previewer.sandbox.mechanism`).
    """
    return sandbox.mechanism().kind != "none"


_T = TypeVar("_T")


class _Keeper:
    """A thread that lives as long as the process and starts the helpers.

    Helpers die with the thread that started them (bubblewrap's ``--die-with-parent`` and
    ``setpriv --pdeathsig`` use ``PR_SET_PDEATHSIG``, which fires when that *thread* exits), so
    a helper started by a short-lived thread of a host's pool would be killed with it.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._loop, name="previewer-helper-keeper", daemon=True).start()

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
_keeper_lock = threading.Lock()


def _keeper_call(work: Callable[[], _T]) -> _T:
    global _keeper
    with _keeper_lock:
        if _keeper is None or _keeper.pid != os.getpid():
            _keeper = _Keeper()
        keeper = _keeper
    return keeper.call(work)


def _memory_cap(memory: int) -> int:
    """``memory``, lowered to the hard address-space limit this process may not exceed."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    return memory if hard == resource.RLIM_INFINITY else min(memory, hard)


class HelperProcess:
    """A long-lived helper program started by :func:`start_helper`, talked to over pipes.

    Attributes:
        pid: The process id (also its process group id).
        isolated: Whether it runs isolated (False only when started with
            ``allow_unisolated`` where nothing isolates).
    """

    def __init__(self, proc: subprocess.Popen[bytes], *, isolated: bool) -> None:
        self._proc = proc
        self._owner = os.getpid()
        self._buffer = b""
        self.pid = proc.pid
        self.isolated = isolated

    @property
    def stdin(self) -> IO[bytes]:
        """The helper's standard input (a pipe)."""
        assert self._proc.stdin is not None
        return self._proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        """The helper's standard output (a pipe); read it with :meth:`readline`."""
        assert self._proc.stdout is not None
        return self._proc.stdout

    def poll(self) -> int | None:
        """Return the exit status, or None while the helper runs."""
        return self._proc.poll()

    def alive(self) -> bool:
        """True while the helper runs."""
        return self._proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the helper to exit.

        Returns:
            Its exit status, or None if it still runs.
        """
        return process.wait(self._proc, timeout)

    def send(self, data: bytes) -> None:
        """Write ``data`` to the helper's stdin and flush it.

        Raises:
            OSError: The helper is gone (broken pipe).
        """
        self.stdin.write(data)
        self.stdin.flush()

    def readline(self, timeout: float) -> bytes | None:
        """Read one line, with its newline, from the helper's stdout.

        Args:
            timeout: Seconds to wait for a complete line.

        Returns:
            The line; ``b""`` when the helper closed its stdout (it exited) before a complete
            line; None when no complete line came within ``timeout``.
        """
        import time

        fd = self.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return b""
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def stop(self, grace: float = 3.0) -> None:
        """Stop the helper and everything in its process group.

        Its stdin is closed first (a helper that reads requests from it then exits by itself);
        whatever still runs after ``grace`` seconds gets SIGTERM, then SIGKILL. In a forked
        child of the process that started it, this does nothing: the helper is the parent's.

        Args:
            grace: Seconds the helper gets to exit by itself; 0 kills the group at once (for
                a helper busy with work it cannot be asked to stop).
        """
        if self._owner != os.getpid():
            return
        proc = self._proc
        if grace > 0 and proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            self.wait(grace)
        # Anything left in the group: soffice.bin 7.4 leaves gpg zombies, which do not count.
        if proc.poll() is None or process.group_alive(proc.pid):
            process.kill_group(proc, grace=0.5)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def start_helper(
    argv: Sequence[str],
    *,
    cwd: Path,
    read: Iterable[os.PathLike[str] | str] = (),
    write: Iterable[os.PathLike[str] | str] = (),
    env: Mapping[str, str] | None = None,
    stderr: Path | None = None,
    memory: int | None = None,
    allow_unisolated: bool = False,
    program: str | None = None,
) -> HelperProcess:
    """Start a long-lived helper program, isolated, talked to over its stdin and stdout.

    The same rules as ``ConvertContext.run``: an argv list, never a shell, a session and
    process group of its own (so :meth:`HelperProcess.stop` reaches everything it starts), no
    inherited file descriptors, no network and (with bubblewrap) a file view of ``/usr``, the
    paths in ``read`` and ``write`` (``cwd`` is not added: name it in ``write``), and a private
    ``/tmp``. It dies with previewer: it is started from a thread that lives as long as the
    process, since the parent-death signal fires when the starting *thread* exits. The
    isolation mechanism is confirmed by a probe first, since a helper cannot be rerun.

    Args:
        argv: The program (absolute path) and its arguments.
        cwd: Working directory.
        read: Paths the helper may read.
        write: Directories the helper may write.
        env: Variables added to a minimal environment (``PATH``, a UTF-8 locale, and
            ``HOME`` and ``TMPDIR`` set to ``cwd``).
        stderr: File the helper's stderr is appended to (default: discarded).
        memory: Address-space cap in bytes (``prlimit``; lowered to this process's own hard
            limit), or None for none.
        allow_unisolated: Start it unisolated where nothing isolates, instead of raising.
        program: The name used in messages (default: the program's file name).

    Returns:
        The running helper.

    Raises:
        EngineUnavailableError: Nothing isolates here and ``allow_unisolated`` is false.
        EngineError: The program could not be started.
    """
    command = [os.fspath(a) for a in argv]
    is_isolated = isolated()
    command = sandbox.wrap(
        command, read=read, write=write, allow_unisolated=allow_unisolated, program=program
    )
    if memory is not None and os.access(PRLIMIT, os.X_OK):
        command = [PRLIMIT, f"--as={_memory_cap(memory)}", "--", *command]
    command = process.die_with_parent(command)
    environment = process.minimal_env(cwd, env)
    log_path = stderr if stderr is not None else Path(os.devnull)
    proc = _keeper_call(lambda: process.spawn(command, cwd=cwd, env=environment, stderr=log_path))
    return HelperProcess(proc, isolated=is_isolated)
