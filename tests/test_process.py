"""The subprocess wrapper: no shell, timeouts kill the whole group, errors carry stderr."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import gone

from previewer.errors import EngineError, EngineTimeoutError
from previewer.process import minimal_env, run

SH = "/bin/sh"


def test_arguments_are_never_interpreted_by_a_shell(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    result = run(["/bin/echo", f"; rm {victim}", "$(id)"], timeout=10)
    assert result.stdout == f"; rm {victim} $(id)\n".encode()
    assert victim.read_text() == "keep me"


def test_stdin_is_closed() -> None:
    result = run([SH, "-c", "cat; echo done"], timeout=10)
    assert result.stdout == b"done\n"


def test_timeout_kills_group_including_background_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(EngineTimeoutError, match="sh was killed after the timeout of 0.5 s"):
        run([SH, "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert time.monotonic() - started < 8
    assert gone(int(pidfile.read_text()), zombie_ok=False), "background child survived"


def test_lingering_background_child_is_reaped_after_success(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    run([SH, "-c", f"sleep 60 >/dev/null 2>&1 & echo $! > {pidfile}"], timeout=10)
    assert gone(int(pidfile.read_text()), zombie_ok=False), (
        "a child left running by a finished engine survived"
    )


def test_nonzero_exit_quotes_stderr_tail() -> None:
    with pytest.raises(EngineError, match="exited with status 4: boom") as info:
        run([SH, "-c", "echo boom >&2; exit 4"], timeout=10)
    assert not isinstance(info.value, EngineTimeoutError)


def test_killed_by_signal_is_reported() -> None:
    with pytest.raises(EngineError, match="killed by signal 9"):
        run([SH, "-c", "kill -9 $$"], timeout=10)


def test_missing_program() -> None:
    with pytest.raises(EngineError, match="cannot start no-such-engine"):
        run(["/nonexistent/no-such-engine"], timeout=10)


def test_expected_output_must_exist_and_not_be_empty(tmp_path: Path) -> None:
    out = tmp_path / "out.pdf"
    with pytest.raises(EngineError, match="wrote no output"):
        run([SH, "-c", f": > {out}"], timeout=10, expect_output=out)
    run([SH, "-c", f"echo x > {out}"], timeout=10, expect_output=out)


def test_minimal_environment_points_home_and_tmp_into_workdir(tmp_path: Path) -> None:
    result = run([SH, "-c", "echo $HOME $TMPDIR; env | wc -l"], timeout=10, cwd=tmp_path)
    home, tmpdir, count = result.stdout.decode().split()
    assert home == tmpdir == str(tmp_path)
    assert int(count) <= len(minimal_env(tmp_path)) + 3  # sh adds PWD, SHLVL, _


def test_argv_must_be_strings() -> None:
    with pytest.raises(TypeError):
        run([SH, 1], timeout=10)  # type: ignore[list-item]


def test_engine_sessions_keep_a_low_priority_callers_priority() -> None:
    """An engine runs in a session of its own, which Linux schedules as a group of normal
    weight: a niced caller (the queue's heavy node) passes its niceness on to that group, and
    under the idle scheduling class the lowest (19); a caller at normal priority leaves it.
    (The engine reads its group a moment after it starts: the caller sets it once the engine
    has started.)"""
    import os
    import subprocess
    import sys

    if not os.path.exists("/proc/self/autogroup"):
        pytest.skip("no scheduler autogroups on this kernel")
    probe = (
        "import os, sys; from previewer.process import run\n"
        "if sys.argv[1] == 'idle': os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
        "late = 'import time; time.sleep(0.3); print(open(\"/proc/self/autogroup\").read())'\n"
        "print(run([sys.executable, '-c', late], timeout=20).stdout.decode().split()[-1])"
    )

    def group_nice(*prefix: str, mode: str = "") -> str:
        done = subprocess.run(
            [*prefix, sys.executable, "-c", probe, mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    assert group_nice() == "0"
    assert group_nice("nice", "-n", "7") == "7"
    assert group_nice(mode="idle") == "19"
