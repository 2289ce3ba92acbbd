"""Results from queue workers rebuilt on the submitting side, as a local run would give them.

A worker returns ``FileResult.to_dict()`` plus ``error_detail`` (see
:func:`previewer.queue.worker._error_dict`); the submitter rebuilds the same
:class:`~previewer.results.FileResult` and error classes from it, and turns a task that raised
on the worker (hard time limit, lost worker) into the error a local batch reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from previewer import errors
from previewer.errors import EngineError, PreviewerError
from previewer.queue.config import BrokerUnavailableError, _timeout_error
from previewer.results import FileResult, Preview

_foreign_errors: dict[tuple[str, str, int], type[PreviewerError]] = {}


def _error_class(detail: dict[str, Any]) -> type[PreviewerError]:
    """The class of a worker's error: ours by name, else a stand-in with its name and code.

    A class previewer does not define (a plugin's, say ``MyInputError(InputError)``) gets a
    subclass of its nearest ancestor that previewer knows, with the same name and exit code,
    so reports, ``--json`` and exit codes read as in a local run. Nothing is imported.
    """
    name = str(detail.get("type", ""))
    known = getattr(errors, name, None)
    if isinstance(known, type) and issubclass(known, PreviewerError):
        return known
    if name == BrokerUnavailableError.__name__:
        return BrokerUnavailableError
    base: type[PreviewerError] = EngineError
    for ancestor in detail.get("bases") or []:
        cls = getattr(errors, str(ancestor), None)
        if isinstance(cls, type) and issubclass(cls, PreviewerError):
            base = cls
            break
    try:
        code = errors.ExitCode(int(detail.get("exit_code", base.exit_code)))
    except (TypeError, ValueError):
        code = base.exit_code
    if not name.isidentifier():
        return base
    key = (name, base.__name__, int(code))
    if key not in _foreign_errors:
        _foreign_errors[key] = type(
            name, (base,), {"exit_code": code, "__module__": __name__, "__doc__": base.__doc__}
        )
    return _foreign_errors[key]


def _rebuild_error(detail: dict[str, Any], display: str, abs_path: str) -> PreviewerError:
    cls = _error_class(detail)
    path = detail.get("path")
    return cls(
        str(detail.get("message", "")),
        path=display if path in (abs_path, None) else path,
        converter=detail.get("converter"),
        hint=detail.get("hint"),
    )


def _rebuild_result(data: dict[str, Any], display: str, abs_path: str, out_dir: Path) -> FileResult:
    detail = data.get("error_detail")
    result = FileResult(
        input=display,
        status=str(data["status"]),
        mime=data.get("mime"),
        converter=data.get("converter"),
        error=_rebuild_error(detail, display, abs_path) if detail else None,
        reason=str(data.get("reason", "")),
        duration=float(data.get("duration", 0.0)),
    )
    for item in data.get("outputs", []):
        written = item.get("path")
        result.outputs.append(
            Preview(
                source=display,
                page=int(item["page"]),
                size=str(item["size"]),
                path=out_dir / Path(written).name if written else None,
                width=int(item["width"]),
                height=int(item["height"]),
                converter=result.converter or "",
                mime=result.mime or "",
            )
        )
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
    return FileResult(input=display, status="failed", error=error)
