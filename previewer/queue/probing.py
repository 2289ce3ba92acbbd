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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from previewer.budgets import Limits
from previewer.options import Options
from previewer.registry import Registry

if TYPE_CHECKING:
    from previewer.pool import WorkerPool

__all__ = ["COLD_PROBES", "ProbeWorker"]

COLD_PROBES = 4
"""Probes run in a forked limited child before the warm worker starts (a small run never pays
for starting it)."""


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
        from previewer.pool import call_on

        return call_on(self._warm(limits), func, args, limits, display)

    def _warm(self, limits: Limits) -> WorkerPool:
        if self._pool is None:
            from previewer.pool import WorkerPool, run_call

            options = dataclasses.replace(Options.build(), limits=limits)
            self._pool = WorkerPool(1, options, Registry(), run_call)
        return self._pool

    def close(self) -> None:
        """Stop the warm worker, if one was started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
