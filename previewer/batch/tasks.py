"""Batch tasks: what the batch engine does with one job, in each kind of executor.

A task knows how to run one job where its limits apply: in a limited child of this process
(:meth:`BatchTask.inline`), or in a worker of the pool (:meth:`BatchTask.worker`, a picklable
module-level function). :class:`ConvertTask` writes previews; the desktop's thumbnail cache
has its own (:class:`previewer.freedesktop.fill.CacheTask`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, Protocol

from previewer.batch.jobs import Job
from previewer.options import Options
from previewer.results import FileResult

if TYPE_CHECKING:
    from previewer.pool import Task
    from previewer.registry import Registry

__all__ = ["BatchTask", "ConvertTask", "convert_job", "kept_workdirs"]


class BatchTask(Protocol):
    """What the batch engine runs for each job.

    Attributes:
        claims_outputs: The job's outputs are named after it in the output tree: the overwrite
            check and the journal (resuming, ``--force``) apply.
        queueable: Queue workers can run it (the Celery task ``previewer.convert_file``).
    """

    claims_outputs: ClassVar[bool]
    queueable: ClassVar[bool]

    def inline(self, job: Job, options: Options, registry: Registry) -> FileResult:
        """Run ``job`` in a child process of this one, under ``options.limits``."""

    @property
    def worker(self) -> Task:
        """The picklable function a pool worker runs for each job."""


class ConvertTask:
    """Convert one input into previews (the default task of ``previewer convert``)."""

    claims_outputs: ClassVar[bool] = True
    queueable: ClassVar[bool] = True

    def inline(self, job: Job, options: Options, registry: Registry) -> FileResult:
        """Convert ``job`` in a limited child process (see :func:`previewer.pipeline.convert_one`).

        Args:
            job: The input.
            options: Its options (``out_dir`` set for the job).
            registry: The converters.

        Returns:
            Its result, named as the user sees the input.
        """
        from previewer.pipeline import convert_one

        result = convert_one(job.source, options, registry, name=job.given_name, isolate=True)
        result.input = job.display
        return result

    @property
    def worker(self) -> Task:
        """:func:`convert_job`."""
        return convert_job


def convert_job(job: Job, options: Options, registry: Registry) -> FileResult:
    """The pool workers' convert task: one input with :func:`previewer.pipeline.convert_one`.

    Args:
        job: The input.
        options: The options (``out_dir`` already set for this job).
        registry: The converters.

    Returns:
        The input's result.
    """
    from previewer import capture
    from previewer.pipeline import convert_one

    with capture.captured() as messages, kept_workdirs(options.keep_temp) as kept:
        result = convert_one(job.source, options, registry, name=job.given_name)
    result.warnings.extend(m for m in [*messages, *kept] if m not in result.warnings)
    return result


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "keeping work directory %s":
            self.lines.append(record.getMessage())


@contextlib.contextmanager
def kept_workdirs(keep: bool) -> Iterator[list[str]]:
    """In a pool worker, collect the "keeping work directory" lines of ``--keep-temp``.

    A pool worker has no log handler: the lines go back with the result (its ``warnings``),
    which the pool reports, so the user learns where each kept directory is.

    Args:
        keep: Whether work directories are kept (otherwise nothing is collected).

    Yields:
        The lines, filled as they are logged.
    """
    lines: list[str] = []
    if not keep:
        yield lines
        return
    handler = _Lines(lines)
    logger = logging.getLogger("previewer.inputs")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
