"""The shared test helpers can fail: each one sees what it is meant to catch."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image
from support import (
    ENGINES,
    children,
    clean_env,
    cmdline,
    gone,
    max_difference,
    mean_difference,
    partial_outputs,
    processes,
    require_engine,
    same_pixels,
    snapshot,
    temp_leftovers,
    wait_for,
    wait_until,
    worst_channel_difference,
    written_outside,
)


def test_processes_are_found_by_environment_command_line_and_ancestry() -> None:
    marker = f"PREVIEWER_TEST_{uuid.uuid4().hex}"
    seconds = f"{time.time() % 1000 + 3000:.6f}"  # a command line no other test has
    child = subprocess.Popen(
        [sys.executable, "-c", f"import time; time.sleep({seconds})"],
        env=clean_env(**{marker: "1"}),
    )
    try:
        assert processes(environ=marker) == [child.pid]
        assert processes(cmdline=seconds) == [child.pid]
        assert processes(cmdline=seconds, programs={"no-such-program"}) == []
        assert child.pid in children()
        assert seconds in cmdline(child.pid)
        assert not gone(child.pid, within=0.2)
    finally:
        child.kill()
    assert wait_until(lambda: child.pid not in children(), 5)  # a zombie does not count
    assert processes(environ=marker) == []
    child.wait()
    assert gone(child.pid, zombie_ok=False)


def test_clean_env_drops_previewer_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEWER_MAX_PAGES", "1")
    env = clean_env(pythonpath=["/x"], TMPDIR="/t")
    assert "PREVIEWER_MAX_PAGES" not in env and env["TMPDIR"] == "/t"
    assert env["PYTHONPATH"].split(":")[0] == "/x"


def test_leftover_helpers_see_leftovers(tmp_path: Path) -> None:
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    before = snapshot(tmp_path)
    (tmp / "pymp-abc").mkdir()
    (tmp / "previewer-xyz").mkdir()
    (out / ".a.png.1234.tmp").write_bytes(b"")
    (out / ".previewer-journal.jsonl").write_text("")
    (tmp_path / "beside.png").write_bytes(b"")
    assert temp_leftovers(tmp) == ["previewer-xyz", "pymp-abc"]
    assert temp_leftovers(tmp, allow=["pymp-"]) == ["previewer-xyz"]
    assert partial_outputs(out) == [out / ".a.png.1234.tmp"]
    assert written_outside(tmp_path, before, out, tmp) == [tmp_path / "beside.png"]


def test_waiting_gives_up() -> None:
    assert not wait_until(lambda: False, 0.1)
    with pytest.raises(AssertionError, match="timed out after 0.1 s waiting for the moon"):
        wait_for(lambda: False, 0.1, "the moon")


def test_image_differences() -> None:
    black, grey = Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), (0, 0, 90))
    assert same_pixels(black, black.copy()) and not same_pixels(black, grey)
    assert mean_difference(black, grey) == pytest.approx(30)
    assert worst_channel_difference(black, grey) == pytest.approx(90)
    assert max_difference(black, grey) == 90
    assert mean_difference(black, Image.new("RGB", (2, 2), (0, 0, 90)), resize=True) == 30


def test_a_missing_engine_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENGINES, "test-absent", ("Nothing", lambda: "not installed"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Nothing .test-absent. is missing"):
        require_engine("test-absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install every engine"):
        require_engine("test-absent")
