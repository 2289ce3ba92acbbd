"""Where the submitter's cost-class probes parse documents: a warm, limited worker.

:func:`previewer.queue.cost.probe` must not let MuPDF parse a submitted document in the
submitting process; its default runs each probe in a limited child (a fork: about 10 ms each,
for a parse of a few hundred microseconds). A burst of thousands of files pays that for every
PDF-like file, so :class:`ProbeWorker` runs the first few probes that way and then moves to one
persistent worker of the batch engine's pool (:class:`previewer.pool.WorkerPool`: the probe's
deadline, the memory cap, a crashed or stuck worker replaced), where a probe is a message to a
process with PyMuPDF already loaded. The HTTP service passes its own warm workers instead.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from previewer.budgets import Limits
from previewer.errors import EngineError, PreviewerError
from previewer.options import Options
from previewer.registry import Registry
from previewer.results import FileResult, Status

if TYPE_CHECKING:
    from previewer.pool import WorkerPool

__all__ = ["COLD_PROBES", "ProbeWorker", "run_call"]

COLD_PROBES = 4
"""Probes run in a forked limited child before the warm worker starts (a small run never pays
for starting it)."""


@dataclass(frozen=True)
class _Call:
    """One probe as the pool worker gets it (the pool's job shape)."""

    source: Path
    name: str
    out_dir: Path
    func: Callable[..., Any]
    args: tuple[Any, ...]

    @property
    def display(self) -> str:
        """The input's name in messages."""
        return self.name


@dataclass
class _Answer(FileResult):
    """A worker's answer: the function's value."""

    value: Any = None


def run_call(job: _Call, options: Options, registry: Registry) -> FileResult:
    """The pool worker's task: run the probe; never raises.

    Args:
        job: The probe.
        options: The pool's options (unused: the probe carries its own arguments).
        registry: The converters (unused).

    Returns:
        An answer holding the probe's value, or a failed result with its error.
    """
    started = time.monotonic()
    try:
        return _Answer(job.display, Status.CONVERTED, value=job.func(*job.args))
    except PreviewerError as exc:
        return FileResult(job.display, Status.FAILED, error=exc)
    except Exception as exc:  # noqa: BLE001 - a damaged header fails only this probe
        error = EngineError(f"the probe failed: {type(exc).__name__}: {exc}")
        error.path = job.display
        return FileResult(
            job.display, Status.FAILED, error=error, duration=time.monotonic() - started
        )


class ProbeWorker:
    """A :data:`previewer.queue.cost.Place`: cold limited children first, then a warm worker.

    Call :meth:`close` when the run ends (it stops the worker).
    """

    def __init__(self) -> None:
        self._calls = 0
        self._pool: WorkerPool | None = None

    def __call__(
        self, func: Callable[..., Any], args: tuple[Any, ...], limits: Limits, display: str
    ) -> Any:
        """Run ``func(*args)`` away from this process under ``limits``.

        Raises:
            PreviewerError: ``func``'s error, or the child's or worker's timeout, crash or
                memory exhaustion.
        """
        self._calls += 1
        if self._calls <= COLD_PROBES:
            from previewer.limited import run_limited

            value, _messages = run_limited(func, args, limits=limits, display=display)
            return value
        pool = self._warm(limits)
        job = _Call(Path(display), Path(display).name, Path(pool.tmp), func, args)
        saved, pool.timeout = pool.timeout, min(pool.timeout, limits.timeout)
        try:
            ((_job, _stat, result),) = list(pool.run([(job, None)], lambda base, _job: base))
        finally:
            pool.timeout = saved
        if result.error is not None:
            raise result.error
        assert isinstance(result, _Answer)
        return result.value

    def _warm(self, limits: Limits) -> WorkerPool:
        if self._pool is None:
            from previewer.pool import WorkerPool

            options = dataclasses.replace(Options.build(), limits=limits)
            self._pool = WorkerPool(1, options, Registry(), run_call)
        return self._pool

    def close(self) -> None:
        """Stop the warm worker, if one was started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
