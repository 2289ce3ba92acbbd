"""The service's job threads and the job handed to them ahead (``previewer.serve.runner``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from tests.servekit import Served
from tests.support import clean_env, plugin_site


def test_a_stop_fails_the_jobs_handed_ahead_or_waiting_and_a_deleted_one_is_dropped(
    tmp_path: Path,
) -> None:
    """One job thread, 1 s files: one running, one handed to the thread ahead, two waiting.

    SIGTERM with a 1.5 s grace: the running job finishes, the jobs that cannot are failed (none
    is left pending, the handed-ahead one included), the deleted one is gone, and the service
    exits cleanly with no process left behind.
    """
    site = plugin_site(tmp_path / "site")
    served = Served(tmp_path / "storage", "--jobs", "1", "--grace", "1.5",
                    env=clean_env(pythonpath=[site]))  # fmt: skip

    def post() -> dict[str, Any]:
        answer = httpx.post(
            f"{served.url}/v2/previews/",
            params={"sizes": "32"},
            files={"file": ("slow.txt", b"SLOW")},
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    try:
        jobs = [post() for _ in range(5)]
        assert httpx.delete(jobs[-1]["url"], timeout=10).status_code == 204
    finally:
        code, left = served.stop()
    assert code == 0, served.log()
    assert not left
    db = sqlite3.connect(served.storage / "jobs.sqlite3")
    rows = {i: (s, e) for i, s, e in db.execute("SELECT id, status, error FROM jobs")}
    assert jobs[-1]["id"] not in rows
    assert not (served.storage / "jobs" / jobs[-1]["id"]).exists()
    states = [rows[job["id"]][0] for job in jobs[:-1]]
    assert "pending" not in states, states
    assert states[0] == "success", states
    # 4 s of work against a 1.5 s grace: the last ones cannot have run.
    assert states[-1] == states[-2] == "failure", states
    for job in jobs[:-1]:
        status, error = rows[job["id"]]
        if status == "failure":
            assert json.loads(error)["code"] == "Interrupted"
