"""Local mode's conversions on warm workers: one persistent worker per job thread.

Each of the runner's ``--jobs`` threads keeps a :class:`previewer.pool.WorkerPool` of one
worker (the batch engine's: per-job deadline, memory cap, crash detection and replacement), so
a job is a message to a process that already has its engines loaded instead of a new child
process: the per-job cost of ``previewer convert -j N``. The worker converts the file and
describes it (:func:`previewer.pipeline.convert_and_describe`) in one go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from previewer.budgets import Limits
from previewer.errors import EngineError, PreviewerError
from previewer.options import Options
from previewer.pool import Call, call_on, run_call
from previewer.registry import Registry
from previewer.results import DocumentInfo, FileResult, Preview, Status

if TYPE_CHECKING:
    from previewer.pool import WorkerPool

__all__ = ["PoolJob", "call_pooled", "close_pools", "convert_pooled", "run_job"]

_local = threading.local()
_pools: list[object] = []
_pools_lock = threading.Lock()


@dataclass(frozen=True)
class PoolJob:
    """One job as a pool worker gets it.

    Attributes:
        source: The input file.
        name: Base name of its outputs (the file's name).
        out_dir: Where its previews go.
        keys: Metadata keys to extract with the description.
    """

    source: Path
    name: str
    out_dir: Path
    keys: tuple[str, ...] = ()
    describe_only: bool = False

    @property
    def display(self) -> str:
        """The input's name in messages."""
        return self.name


@dataclass
class JobResult(FileResult):
    """A worker's result with the document's description."""

    facts: DocumentInfo | None = None


def run_job(job: PoolJob | Call, options: Options, registry: Registry) -> FileResult:
    """The pool workers' task: convert and describe one input; never raises.

    Args:
        job: The input, or a function to run (:func:`call_pooled`).
        options: Its options (``out_dir`` set).
        registry: The converters.

    Returns:
        A :class:`JobResult`.
    """
    from previewer import capture, pipeline

    if isinstance(job, Call):
        return run_call(job, options, registry)
    started = time.monotonic()
    try:
        with capture.captured() as messages:
            if job.describe_only:  # in a child of this worker, forked warm
                previews: list[Preview] = []
                facts = pipeline.info(job.source, options, registry, name=job.name, keys=job.keys)
            else:
                previews, facts = pipeline.convert_and_describe(
                    job.source, options, registry, name=job.name, keys=job.keys, isolate=False
                )
    except PreviewerError as exc:
        return JobResult(job.display, Status.FAILED, error=exc, duration=time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - a converter's bug fails only this job
        error = EngineError(f"the conversion failed unexpectedly: {type(exc).__name__}: {exc}")
        error.path = job.display
        return JobResult(job.display, Status.FAILED, error=error)
    return JobResult(
        job.display,
        Status.CONVERTED,
        mime=facts.mime,
        converter=previews[0].converter if previews else facts.converter,
        outputs=previews,
        duration=time.monotonic() - started,
        warnings=list(messages),
        facts=facts,
    )


def convert_pooled(
    source: Path,
    out_dir: Path,
    sizes: Sequence[str],
    pages: str,
    keys: tuple[str, ...],
    limits: Limits,
    format: str,
    *,
    describe_only: bool = False,
) -> tuple[list[Preview], DocumentInfo]:
    """Convert and describe ``source`` on this thread's warm worker.

    Args:
        source: The input file.
        out_dir: Where the previews go.
        sizes: Normalised sizes.
        pages: The page selection.
        keys: Metadata keys.
        limits: The service's limits.
        format: The previews' image format.
        describe_only: Only describe it (the previews are made elsewhere: queue workers).

    Raises:
        PreviewerError: The file's error, or the worker's timeout, crash or memory exhaustion.
    """
    pool = _pool(limits, out_dir)
    options = Options.build(
        sizes=list(sizes), pages=pages, out_dir=out_dir, limits=limits, format=format
    )
    job = PoolJob(source, source.name, out_dir, keys, describe_only)
    ((_job, _stat, result),) = list(pool.run([(job, None)], lambda _base, _job: options))
    if result.error is not None:
        raise result.error
    assert isinstance(result, JobResult) and result.facts is not None
    return result.outputs, result.facts


def _pool(limits: Limits, out_dir: Path) -> WorkerPool:
    """This thread's pool of one warm worker (started on first use)."""
    from previewer.pool import WorkerPool

    pool: WorkerPool | None = getattr(_local, "pool", None)
    if pool is None:
        pool = WorkerPool(1, Options.build(limits=limits, out_dir=out_dir), Registry(), run_job)
        _local.pool = pool
        with _pools_lock:
            _pools.append(pool)
    return pool


def call_pooled(
    func: Callable[..., Any], args: tuple[Any, ...], limits: Limits, display: str
) -> Any:
    """Run ``func(*args)`` on this thread's warm worker, within ``limits.timeout``.

    The :data:`previewer.queue.cost.Place` of a job's probe in broker mode: a message to a
    process with PyMuPDF loaded, instead of a new limited child (about 17 ms of CPU each here).
    The worker's memory cap is the service's; a crash or a missed deadline replaces it.

    Args:
        func: A module-level function (it is pickled by name).
        args: Its arguments (picklable).
        limits: Its limits (only the timeout differs from the service's).
        display: The input's name in errors.

    Returns:
        What ``func`` returned.

    Raises:
        PreviewerError: ``func``'s error, or the worker's timeout, crash or memory exhaustion.
    """
    import tempfile

    return call_on(_pool(limits, Path(tempfile.gettempdir())), func, args, limits, display)


def close_pools() -> None:
    """Stop every thread's worker (at shutdown)."""
    from previewer.pool import WorkerPool

    with _pools_lock:
        pools, _pools[:] = list(_pools), []
    for pool in pools:
        assert isinstance(pool, WorkerPool)
        pool.close()
