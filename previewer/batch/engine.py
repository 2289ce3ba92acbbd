"""The batch engine: plan a batch's jobs once, run them in an executor, finish them in a sink.

Planning is where the rules live, once for every executor: two jobs whose previews would have
the same names fail the second one, and with ``resume`` an input whose previews are up to date
(the journal) is skipped. The executor runs the rest (:mod:`previewer.batch.executors`, or the
queue's); the sink (:class:`~previewer.batch.report.ReportSink`) counts each result, notifies
progress and records the journal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from previewer.batch.executors import Executor, InlineExecutor, PoolExecutor
from previewer.batch.jobs import Job, Work, overwrite_error
from previewer.batch.journal import Journal
from previewer.batch.report import ReportSink
from previewer.batch.tasks import BatchTask, ConvertTask
from previewer.options import Options
from previewer.results import BatchReport, FileResult, Status

if TYPE_CHECKING:
    from previewer.registry import Registry

__all__ = ["plan", "run", "run_batch"]


def plan(jobs: Sequence[Job], task: BatchTask, journal: Journal | None) -> list[Work]:
    """Settle what can be settled before running: overwrites, and up-to-date inputs.

    Args:
        jobs: The batch's jobs, in order.
        task: The task (only one whose outputs are named after the job is checked).
        journal: The journal to resume from, or None to redo everything.

    Returns:
        One :class:`Work` per job, in order.
    """
    work: list[Work] = []
    claimed: dict[tuple[Path, str], Job] = {}
    for job in jobs:
        ready: FileResult | None = None
        if task.claims_outputs:
            if (error := overwrite_error(job, claimed)) is not None:
                ready = FileResult(input=job.display, status=Status.FAILED, error=error)
            elif journal is not None:
                ready = journal.up_to_date(job)
        stat = Journal._stat(job.source) if isinstance(job.source, str) else None
        work.append(Work(job, stat, ready))
    return work


def run(
    jobs: Sequence[Job],
    options: Options,
    registry: Registry,
    *,
    executor: Executor,
    task: BatchTask | None = None,
    resume: bool = False,
    journal: bool | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> BatchReport:
    """Run ``jobs`` with ``task`` in ``executor`` and report; a failing input never stops others.

    Args:
        jobs: From :func:`previewer.batch.collect`.
        options: The options (``out_dir`` is replaced per job).
        registry: The converters.
        executor: Where the jobs run.
        task: What is done with each job (default: :class:`ConvertTask`).
        resume: Skip inputs whose previews are up to date (see :class:`Journal`).
        journal: Record converted inputs in the journal (default: when ``resume``); a forced
            run records what it did, so the next resumed run does not redo it.
        on_result: Called with each result as soon as it is known.
        on_progress: Called with ``(done, total)`` at the start and after each input.

    Returns:
        The report, results in the order they finished.

    Raises:
        InvalidOptionsError: If the executor cannot run these jobs (nothing has run then).
        BrokerUnavailableError: If the queue's broker cannot be reached.
    """
    todo = task or ConvertTask()
    started = time.monotonic()
    executor.prepare(jobs, options, todo)
    record = resume if journal is None else journal
    book = Journal(options.out_dir, options) if todo.claims_outputs and (resume or record) else None
    sink = ReportSink(
        len(jobs),
        journal=book if record else None,
        on_result=on_result,
        on_progress=on_progress,
    )
    try:
        sink.start()
        work = plan(jobs, todo, book if resume else None)
        executor.run(work, options, registry, todo, sink)
    finally:
        if book is not None:
            book.close()
    sink.report.elapsed = time.monotonic() - started
    return sink.report


def run_batch(
    jobs: Sequence[Job],
    options: Options,
    registry: Registry,
    *,
    workers: int = 0,
    resume: bool = False,
    journal: bool | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> BatchReport:
    """Convert ``jobs`` locally and report (see :func:`run`).

    Args:
        jobs: From :func:`previewer.batch.collect`.
        options: The options (``out_dir`` is replaced per job).
        registry: The converters.
        workers: 0 runs one file at a time, each in a child process of this one (see
            :func:`previewer.limited.run_limited`); N >= 1 runs in N worker processes. Either way
            each file has its deadline, memory cap and crash isolation.
        resume: Skip inputs whose previews are up to date.
        journal: Record converted inputs in the journal (default: when ``resume``).
        on_result: Called with each result as soon as it is known.

    Returns:
        The report, results in the order they finished.
    """
    return run(
        jobs,
        options,
        registry,
        executor=local_executor(workers),
        resume=resume,
        journal=journal,
        on_result=on_result,
    )


def local_executor(workers: int, *, min_jobs: int = 1) -> Executor:
    """The executor for ``workers``: in-process when 0, else a pool of that many workers.

    Args:
        workers: 0, or the number of worker processes.
        min_jobs: A pool runs fewer jobs than this in-process.

    Returns:
        The executor.
    """
    if workers <= 0:
        return InlineExecutor()
    return PoolExecutor(workers, min_jobs=min_jobs)
