"""Local executors: where a batch's jobs run, one at a time in a child or in a worker pool.

An executor takes the planned work (see :func:`previewer.batch.engine.run`) and hands every
job's result to the sink as soon as it is known; the queue's executor
(:class:`previewer.queue.submit.QueueExecutor`) follows the same interface. Whichever runs a
file, it has its limits: a wall-clock deadline, an address-space cap, and crash isolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from previewer.batch.jobs import Job, Work, job_options
from previewer.batch.report import ReportSink
from previewer.batch.tasks import BatchTask
from previewer.errors import PreviewerError
from previewer.options import Options
from previewer.results import FileResult, Status

if TYPE_CHECKING:
    from previewer.registry import Registry

__all__ = ["Executor", "InlineExecutor", "PoolExecutor"]


class Executor(Protocol):
    """Runs a batch's jobs and hands their results to a sink."""

    def prepare(self, jobs: Sequence[Job], options: Options, task: BatchTask) -> None:
        """Refuse what this executor cannot run, before anything runs.

        Raises:
            InvalidOptionsError: If a job or the task cannot run here.
        """

    def run(
        self,
        work: Sequence[Work],
        options: Options,
        registry: Registry,
        task: BatchTask,
        sink: ReportSink,
    ) -> None:
        """Run ``work`` and add every job's result to ``sink``."""


class InlineExecutor:
    """One file at a time, each in a child process of this one under its limits."""

    def prepare(self, jobs: Sequence[Job], options: Options, task: BatchTask) -> None:
        """Anything runs here."""

    def run(
        self,
        work: Sequence[Work],
        options: Options,
        registry: Registry,
        task: BatchTask,
        sink: ReportSink,
    ) -> None:
        """Run each job in its turn; settled ones are reported in their turn too."""
        if len(work) > 1:  # a batch (a pool reaps too); a one-off conversion stays lean
            from previewer.tempdirs import reap_once

            reap_once()  # what runs killed by SIGKILL left behind
        for job, stat, ready in work:
            if ready is not None:
                sink.add(job, ready)
                continue
            sink.add(job, task.inline(job, job_options(options, job), registry), stat)


class PoolExecutor:
    """N worker processes (:class:`previewer.pool.WorkerPool`).

    Args:
        workers: Worker processes (>= 1).
        min_jobs: Fewer jobs than this run in this process instead (see :class:`InlineExecutor`).
    """

    def __init__(self, workers: int, *, min_jobs: int = 1) -> None:
        self.workers = workers
        self.min_jobs = min_jobs

    def prepare(self, jobs: Sequence[Job], options: Options, task: BatchTask) -> None:
        """Anything runs here (streams are copied to files first)."""

    def run(
        self,
        work: Sequence[Work],
        options: Options,
        registry: Registry,
        task: BatchTask,
        sink: ReportSink,
    ) -> None:
        """Report the settled jobs, then run the others in the pool as workers free up."""
        if len(work) < self.min_jobs:
            InlineExecutor().run(work, options, registry, task, sink)
            return
        from previewer import tempdirs
        from previewer.pool import WorkerPool

        for job, _stat, ready in work:
            if ready is not None:
                sink.add(job, ready)
        spools: tempdirs.Held | None = None
        try:
            runnable = []
            spooled_jobs = set()
            for job, stat, ready in work:
                if ready is not None:
                    continue
                if not isinstance(job.source, (str, bytes)):
                    # A stream cannot go to a worker: copy it to a file first, in chunks.
                    if spools is None:
                        spools = tempdirs.make("previewer-spool-")
                    spooled = _spool(job, spools.path, options)
                    if isinstance(spooled, FileResult):
                        sink.add(job, spooled)
                        continue
                    job = spooled
                    spooled_jobs.add(job.index)
                runnable.append((job, stat))
            with WorkerPool(self.workers, options, registry, task=task.worker) as pool:
                for job, stat, result in pool.run(runnable, job_options):
                    if spools is not None and job.index in spooled_jobs:
                        _name_spooled(result, str(job.source), job.display)
                    sink.add(job, result, stat)
        finally:
            if spools is not None:
                import shutil

                shutil.rmtree(spools.path, ignore_errors=True)
                spools.release()


def _name_spooled(result: FileResult, path: str, display: str) -> None:
    """Name a spooled stream's result and previews as the stream, not its temporary copy."""
    result.input = display
    if result.error is not None and result.error.path == path:
        result.error.path = display
    result.outputs = [replace(p, source=display) if p.source == path else p for p in result.outputs]


def _spool(job: Job, directory: Path, options: Options) -> Job | FileResult:
    """Copy a stream job's data into ``directory``; return the job reading that file instead.

    Returns:
        The job with the copy as its source, or its failed result (too big, unreadable).
    """
    from previewer.sources import spool

    assert not isinstance(job.source, (str, bytes))
    path = directory / f"input-{job.index}"
    try:
        spool(job.source, path, job.display, options.limits)
    except PreviewerError as exc:
        return FileResult(input=job.display, status=Status.FAILED, error=exc)
    return replace(job, source=str(path))
