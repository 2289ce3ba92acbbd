"""The only place previewer starts external programs.

Every program runs from an argv list (never a shell), in its own process group and session,
with stdin closed, output captured and a mandatory timeout. On timeout or interruption the whole
group gets SIGTERM, a short grace period, then SIGKILL, and is reaped before the error is raised,
so no engine process outlives the call.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from previewer.errors import EngineError, EngineTimeoutError

__all__ = [
    "RunResult",
    "Wrapper",
    "die_with_parent",
    "group_alive",
    "keep_priority",
    "kill_group",
    "minimal_env",
    "run",
    "spawn",
    "wait",
]

log = logging.getLogger(__name__)

GRACE_SECONDS = 2.0
"""Time a process group gets between SIGTERM and SIGKILL."""

STDERR_TAIL = 4096
"""Bytes of stderr quoted in an EngineError message."""


@dataclass(frozen=True)
class RunResult:
    """What an external program run through :func:`run` produced.

    Attributes:
        argv: The command that ran.
        returncode: Its exit status (always 0: non-zero raises ``EngineError``).
        stdout: Captured standard output.
        stderr: Captured standard error.
    """

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


class Wrapper(Protocol):
    """Something that prefixes a command, such as an isolation sandbox (:mod:`previewer.sandbox`).

    It lets :func:`run` wrap a program without knowing how (and without importing the sandbox).
    """

    def wrap(self, argv: list[str]) -> list[str]:
        """Return the command that runs ``argv`` wrapped."""
        ...

    def setup_failed(self, wrapped: list[str], returncode: int, stderr: bytes) -> bool:
        """Tell whether the wrapper itself failed, so the program must be wrapped and run again."""
        ...


def minimal_env(workdir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return a small environment for an engine: PATH, locale, and HOME/TMPDIR in ``workdir``.

    Args:
        workdir: The conversion's private directory.
        extra: Variables to add or override.

    Returns:
        The environment mapping.
    """
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
    }
    if extra:
        env.update(extra)
    return env


SETPRIV = "/usr/bin/setpriv"
"""util-linux ``setpriv``: sets the parent-death signal before running the program."""


def die_with_parent(argv: list[str]) -> list[str]:
    """Prefix ``argv`` so the program is SIGKILLed when the thread that started it dies.

    bubblewrap's ``--die-with-parent`` already does this for sandboxed programs; others get
    ``setpriv --pdeathsig KILL`` (util-linux; ``PR_SET_PDEATHSIG`` survives ``exec``), so a
    SIGKILLed previewer never leaves an engine running until its timeout. Setting the signal
    with a ``preexec_fn`` instead would not be safe in a multi-threaded host. The signal fires
    when the *thread* that started the program exits, so only programs waited for by that
    thread (:func:`run`) use it.

    Args:
        argv: The command.

    Returns:
        The command, prefixed when ``setpriv`` is available and the program is not bwrap.
    """
    if Path(argv[0]).name == "bwrap" or not os.access(SETPRIV, os.X_OK):
        return argv
    return [SETPRIV, "--pdeathsig", "KILL", "--", *argv]


def keep_priority(pid: int) -> None:
    """Give an engine's new session the CPU priority of this process.

    Engines start in a session of their own (so that their process group can be killed
    whole), and Linux schedules each session as a group of its own (``autogroup``) with the
    weight of a normal process, whatever the niceness of its members: a LibreOffice or
    ffmpeg started by a low-priority worker (the queue's heavy node) would take as much CPU as
    every other process of the worker together. This sets the new session's group niceness
    to this process's (19 under the idle scheduling class). Nothing to do at normal priority,
    on another system, or when the engine has already exited.

    Args:
        pid: The engine's process (its session's leader).
    """
    try:
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        if os.sched_getscheduler(0) == getattr(os, "SCHED_IDLE", -1):
            nice = 19
    except (AttributeError, OSError):
        return
    if nice <= 0:
        return
    try:
        with open(f"/proc/{pid}/autogroup", "w") as fh:
            fh.write(str(nice))
    except OSError as exc:  # no autogroups here, or the engine is gone already
        log.debug("cannot set the CPU priority of process %d's session: %s", pid, exc)


def kill_group(proc: subprocess.Popen[bytes], grace: float = GRACE_SECONDS) -> None:
    """Terminate ``proc``'s whole process group: SIGTERM, wait ``grace`` seconds, SIGKILL, reap.

    Args:
        proc: A process started with ``start_new_session=True``.
        grace: Seconds between SIGTERM and SIGKILL.
    """
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not group_alive(pgid):
                break
            time.sleep(0.02)
        else:
            continue
        break
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL not delivered
        log.error("process %d survived SIGKILL", proc.pid)


def group_alive(pgid: int) -> bool:
    """Return True while a process of group ``pgid`` is still running (zombies do not count).

    Args:
        pgid: A process group id.
    """
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return _running_member(pgid)


def _running_member(pgid: int) -> bool:
    """Return True if ``/proc`` lists a member of group ``pgid`` that is not a zombie.

    ``killpg(pgid, 0)`` also succeeds for zombies. An engine killed after its wrapper
    (bubblewrap, setpriv's parent-death signal) is one until the host's init reaps it, which
    took 1.6 s on a machine whose init is not systemd; it runs nothing meanwhile. Only
    consulted once ``killpg`` says the group exists (after a kill, or when something lingers).
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp (proc(5)).
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    expect_output: Path | None = None,
    wrapper: Wrapper | None = None,
) -> RunResult:
    """Run a program to completion under a timeout, killing its process group if it overruns.

    Args:
        argv: The program (preferably an absolute path) and its arguments.
        timeout: Wall-clock seconds before the process group is killed.
        cwd: Working directory.
        env: Environment; defaults to :func:`minimal_env` of ``cwd`` when ``cwd`` is given,
            else the current environment.
        expect_output: A file the program must leave behind, non-empty.
        wrapper: Wraps the command (the isolation sandbox: :func:`previewer.sandbox.run`).
            When it reports that it failed to set itself up, the program is wrapped again
            and rerun: at most three times.

    Returns:
        The result, with captured stdout and stderr.

    Raises:
        EngineTimeoutError: The program ran past ``timeout`` and was killed.
        EngineError: The program could not start, exited non-zero, or left no output.
        EngineUnavailableError: The wrapper cannot wrap the program here.
    """
    argv = [os.fspath(a) for a in argv]
    if not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError("argv must be a non-empty list of strings")
    program = Path(argv[0]).name
    plog = logging.getLogger(f"{__name__}.{program}")
    if env is None and cwd is not None:
        env = minimal_env(cwd)
    _check_program(argv[0], program, env)
    if wrapper is None:
        stdout, stderr, returncode = _execute(argv, program, timeout, cwd, env)
    else:
        for _attempt in range(3):
            wrapped = wrapper.wrap(argv)
            stdout, stderr, returncode = _execute(wrapped, program, timeout, cwd, env)
            if not wrapper.setup_failed(wrapped, returncode, stderr):
                break
        argv = wrapped
    if stderr:
        plog.debug("%s stderr:\n%s", program, stderr.decode("utf-8", "replace"))
    if returncode != 0:
        tail = stderr[-STDERR_TAIL:].decode("utf-8", "replace").strip()
        status = (
            f"was killed by signal {-returncode}"
            if returncode < 0
            else f"exited with status {returncode}"
        )
        raise EngineError(f"{program} {status}" + (f": {tail}" if tail else ""))
    if expect_output is not None and not (
        expect_output.is_file() and expect_output.stat().st_size > 0
    ):
        raise EngineError(f"{program} finished but wrote no output ({expect_output.name})")
    return RunResult(tuple(argv), returncode, stdout, stderr)


def _check_program(path: str, program: str, env: Mapping[str, str] | None) -> None:
    """Raise the error Popen would, before a wrapper (setpriv, bwrap) hides it in its own."""
    if os.sep not in path:
        found = shutil.which(path, path=(env if env is not None else os.environ).get("PATH"))
        if found is None:
            raise EngineError(f"cannot start {program}: not found on the PATH")
        path = found
    if not os.path.isfile(path):
        raise EngineError(f"cannot start {program}: {os.strerror(errno.ENOENT)}")
    if not os.access(path, os.X_OK):
        raise EngineError(f"cannot start {program}: {os.strerror(errno.EACCES)}")


def _execute(
    argv: list[str],
    program: str,
    timeout: float,
    cwd: Path | None,
    env: Mapping[str, str] | None,
) -> tuple[bytes, bytes, int]:
    """Start ``argv`` (dying with this thread), wait under ``timeout``, kill its group after.

    Returns:
        stdout, stderr and the exit status.
    """
    argv = die_with_parent(argv)
    logging.getLogger(f"{__name__}.{program}").debug("running %s", argv)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise EngineError(f"cannot start {program}: {exc.strerror or exc}") from exc
    keep_priority(proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        raise EngineTimeoutError(
            f"{program} was killed after the timeout of {timeout:g} s",
            hint="raise --timeout if the input is legitimately slow",
        ) from None
    except BaseException:
        kill_group(proc)
        proc.communicate()
        raise
    # The direct child has exited; make sure nothing it forked lingers in its group.
    if group_alive(proc.pid):
        kill_group(proc, grace=0.2)
    return stdout, stderr, proc.returncode


def wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Wait up to ``timeout`` seconds for ``proc`` to exit.

    Args:
        proc: A process started by :func:`spawn`.
        timeout: Seconds to wait.

    Returns:
        Its exit status, or None if it still runs.
    """
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stderr: Path,
) -> subprocess.Popen[bytes]:
    """Start a long-lived helper program that is talked to over its stdin and stdout.

    For engines kept warm across conversions (the LibreOffice bridge). Like :func:`run`: an argv
    list, never a shell, its own session and process group (stop it with :func:`kill_group`),
    no inherited file descriptors. Its stderr is appended to the file ``stderr``.

    Args:
        argv: The program (absolute path) and its arguments.
        cwd: Working directory.
        env: The complete environment.
        stderr: File to append the program's stderr to.

    Returns:
        The running process, with ``stdin`` and ``stdout`` pipes.

    Raises:
        EngineError: The program could not be started.
    """
    argv = [os.fspath(a) for a in argv]
    program = Path(argv[0]).name
    logging.getLogger(f"{__name__}.{program}").debug("spawning %s", argv)
    try:
        with open(stderr, "ab") as err:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        raise EngineError(f"cannot start {program}: {exc.strerror or exc}") from exc
    keep_priority(proc.pid)
    return proc
