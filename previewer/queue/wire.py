"""Results from queue workers rebuilt on the submitting side, as a local run would give them.

A worker returns ``FileResult.to_dict(detail=True)``; the submitter rebuilds the same
:class:`~previewer.results.FileResult` and error classes from it, and turns a task that raised
on the worker (hard time limit, lost worker) into the error a local batch reports.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from previewer.errors import EngineError, PreviewerError
from previewer.queue.config import _timeout_error
from previewer.results import FileResult, Status


def _rebuild_result(data: dict[str, Any], display: str, abs_path: str, out_dir: Path) -> FileResult:
    """A worker's result as a local run gives it: named as the user named the input.

    The worker saw the input under its absolute path and wrote into the shared output folder;
    the result names the input as given and the previews under this run's ``out_dir``.
    """
    result = FileResult.from_dict(data)
    result.input = display
    if result.error is not None and result.error.path in (abs_path, None):
        result.error.path = display
    result.outputs = [
        replace(p, source=display, path=out_dir / p.path.name if p.path is not None else None)
        for p in result.outputs
    ]
    return result


def _failure_result(meta: dict[str, Any], display: str, timeout: float) -> FileResult:
    """A result for a task that raised on the worker (hard time limit, lost worker, bug).

    Celery's backend hands the failure over as an exception object rebuilt from its JSON
    (``exc_type``, ``exc_message``); older results may still be that dict.
    """
    info = meta.get("result")
    if isinstance(info, BaseException):
        exc_type, exc_message = type(info).__name__, str(info)
    elif isinstance(info, dict):
        exc_type, exc_message = str(info.get("exc_type", "")), str(info.get("exc_message", ""))
    else:
        exc_type, exc_message = "", str(info or "")
    error: PreviewerError
    if "TimeLimitExceeded" in exc_type:
        # The child ignored the soft limit (stuck in an engine's C code) and was killed at the
        # hard one; a local batch reports its worker killed at the deadline the same way.
        error = _timeout_error(timeout, display, killed=True)
    else:
        what = exc_type or meta.get("status") or "error"
        error = EngineError(f"queue worker failed: {what} {exc_message}".strip(), path=display)
    return FileResult(input=display, status=Status.FAILED, error=error)
