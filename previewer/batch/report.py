"""The report as a sink: every result of a batch goes through :meth:`ReportSink.add` once.

Adding a result applies the skip rule for walked files, records a converted input in the
journal, counts it in the :class:`~previewer.results.BatchReport`, and notifies the caller
(``on_result``, then ``on_progress``). Executors only produce results; this is the one place
that finishes them, whichever executor ran the job.
"""

from __future__ import annotations

from collections.abc import Callable

from previewer.batch.jobs import Job, Stat, skip_if_unsupported
from previewer.batch.journal import Journal
from previewer.results import BatchReport, FileResult

__all__ = ["ReportSink"]


class ReportSink:
    """Collects a batch's results into its report, journal and callbacks.

    Args:
        total: Number of jobs in the batch (for progress).
        journal: Where converted inputs are recorded, or None.
        on_result: Called with each result as soon as it is known.
        on_progress: Called with ``(done, total)`` at the start and after each result.
    """

    def __init__(
        self,
        total: int,
        *,
        journal: Journal | None = None,
        on_result: Callable[[FileResult], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.report = BatchReport()
        self.total = total
        self.journal = journal
        self.on_result = on_result
        self.on_progress = on_progress

    def start(self) -> None:
        """Announce the batch: progress ``(0, total)``."""
        if self.on_progress is not None:
            self.on_progress(0, self.total)

    def add(self, job: Job, result: FileResult, stat: Stat = None) -> None:
        """Finish ``job`` with ``result``.

        Args:
            job: The job.
            result: Its result (a walked, unsupported file's failure becomes a skip).
            stat: The input's ``(size, mtime_ns)`` when it was planned; the journal records
                a converted input only with it (a result settled before running has none).
        """
        skip_if_unsupported(job, result)
        if self.journal is not None and stat is not None:
            self.journal.record(job, result, stat)
        self.report.results.append(result)
        if self.on_result is not None:
            self.on_result(result)
        if self.on_progress is not None:
            self.on_progress(len(self.report.results), self.total)
