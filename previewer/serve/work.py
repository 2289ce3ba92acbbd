"""One job's conversion, run in a worker thread: previews, document facts, metadata.

The conversion and the description (pages, sizes, metadata) run in one call,
:func:`previewer.pipeline.convert_and_describe`, on the job thread's warm worker process
(:mod:`previewer.serve.pooled`: the batch engine's pool, with its per-job deadline, memory cap,
crash detection and replacement) under the same :class:`~previewer.budgets.Limits` as every
other path, a crash or timeout failing only this job. With queue workers both run there, in
one task; a worker that returns no description (an older version) leaves it to this warm
worker, in a child it forks. The outcome is plain
JSON with file names relative to the job's directory, and error messages never carry a server
path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from previewer import extraction
from previewer.budgets import Limits
from previewer.errors import PreviewerError
from previewer.results import DocumentInfo, Preview

__all__ = [
    "CHILD_PRELOAD",
    "METADATA_KEYS",
    "Outcome",
    "convert_job",
    "file_metadata",
    "public_error",
    "start_fork_server",
]

METADATA_KEYS = extraction.KEYS
"""Metadata keys a request may ask for (``"all"`` asks for every one but ``gps``)."""

Outcome = tuple[str, dict[str, Any]]
"""``("success", result)`` or ``("failure", error)``."""


CHILD_PRELOAD = (
    "previewer.pipeline",
    "previewer.limited",
    "previewer.pool",
    "previewer.serve.pooled",
    "previewer.rendering",
    "previewer.output",
    "previewer.describe",
    "previewer.converters",
    "previewer.headers",
    "PIL.Image",
    "PIL.PngImagePlugin",
    "PIL.JpegImagePlugin",
    "pymupdf",
)
"""Modules the fork server imports once, so that each conversion's child starts with them."""


def start_fork_server() -> None:
    """Start multiprocessing's fork server with :data:`CHILD_PRELOAD` imported.

    The service's processes (the job threads' warm workers, and any limited child started from
    a thread) come from the fork server (see :func:`previewer.limited.run_limited`); the library
    starts it, on first use, with only the pipeline imported, and every process it forks then
    imports the engines again (about 200 ms here). Started first with the engines, they begin
    warm. Harmless if it already runs (the preload only applies at its start).
    """
    import multiprocessing
    import sys
    from multiprocessing import forkserver

    preload = list(CHILD_PRELOAD)
    if "previewer.cli" in sys.modules:
        # Started by the ``previewer`` script: each child runs that script again as its main
        # module (multiprocessing's rule), whose import of the CLI is then already done.
        preload.append("previewer.cli")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    forkserver.ensure_running()


def public_error(exc: PreviewerError, name: str, job_dir: Path) -> dict[str, Any]:
    """The error as the API shows it: the class as ``code``, a message naming the file.

    Args:
        exc: The error.
        name: The file's name as the client gave it.
        job_dir: The job's directory, scrubbed from the message wherever it appears.

    Returns:
        ``{"code", "message"}``.
    """
    exc.path = name
    text = str(exc)
    for prefix in (str(job_dir / "input") + os.sep, str(job_dir) + os.sep, str(job_dir)):
        text = text.replace(prefix, "")
    return {"code": type(exc).__name__, "message": text}


def file_metadata(facts: DocumentInfo) -> dict[str, Any]:
    """The metadata a request asked for, as extracted with the file's facts.

    Args:
        facts: The :func:`previewer.api.info` result, called with ``metadata=`` the keys
            the request named (see :func:`previewer.api.metadata` for what each gives).

    Returns:
        One entry per key asked for (empty when none was).
    """
    return dict(facts.extracted or {})


def _kind(mime: str) -> str:
    major = mime.partition("/")[0]
    return major if major in ("image", "video", "audio") else "document"


def original_file(name: str, size: int, facts: DocumentInfo | None) -> dict[str, Any]:
    """The ``original_file`` object of a job.

    Args:
        name: The file's name as the client gave it.
        size: Its size in bytes.
        facts: What :func:`previewer.api.info` found, if it ran.

    Returns:
        ``{"name", "extension", "mimetype", "type", "encoding", "size", "total_pages",
        "metadata"}``.
    """
    mime = facts.mime if facts is not None else None
    return {
        "name": name,
        "extension": Path(name).suffix.lstrip(".").lower(),
        "mimetype": mime,
        "type": _kind(mime) if mime else None,
        "encoding": "binary",
        "size": size,
        "total_pages": facts.pages if facts is not None else None,
        "metadata": {},
    }


def convert_job(
    source: Path,
    name: str,
    out_dir: Path,
    *,
    sizes: Sequence[str],
    pages: str,
    metadata: Sequence[str],
    limits: Limits,
    broker: str | None = None,
    format: str = "png",
    tenant: str = "",
    abort: Callable[[], BaseException | None] | None = None,
) -> Outcome:
    """Convert one job's input; never raises for a bad input.

    Args:
        source: The input file (in the job's ``input/``).
        name: Its name as the client gave it.
        out_dir: Where the previews go (the job's ``out/``).
        sizes: Normalised sizes.
        pages: The page selection.
        metadata: Metadata keys asked for.
        limits: The service's limits.
        format: Image format of the previews (``png``, ``jpeg``, ``webp``).
        tenant: Who submitted it (the API key), for the queue's fairness between submitters.
        broker: Convert on queue workers through this Redis URL (they must see ``source``
            and ``out_dir`` at the same paths); they describe the document too, and only a
            worker that does not (an older version) leaves that to this thread's warm worker.
        abort: With ``broker``, called while waiting for the workers; an exception it returns
            fails the job (the run is cancelled).

    Returns:
        The outcome; a success's result holds ``thumbnails`` (file names relative to
        ``out_dir``), ``original_file`` and ``converter``.
    """
    job_dir = source.parent.parent
    size = source.stat().st_size
    queued: dict[str, Any] | None = None
    try:
        if broker is None:
            previews, facts = _here(source, out_dir, sizes, pages, metadata, limits, format)
        else:
            keys = extraction.parse_keys(list(metadata)) if metadata else ()
            previews, queued, described = _on_workers(
                source, out_dir, sizes, pages, keys, limits, broker, format, tenant, abort
            )
            if described is None:  # a worker that predates ``describe``: describe it here
                _none, facts = _here(
                    source, out_dir, sizes, pages, metadata, limits, format, describe_only=True
                )
            else:
                facts = described
            if queued is not None:
                queued = {**queued, "described": "service" if described is None else "worker"}
        original = original_file(name, size, facts)
        original["metadata"] = file_metadata(facts)
    except PreviewerError as exc:
        return "failure", public_error(exc, name, job_dir)
    thumbnails = []
    for p in previews:
        assert p.path is not None
        page_w, page_h = facts.page_sizes[p.page - 1] if p.page <= len(facts.page_sizes) else (0, 0)
        thumbnails.append(
            {
                "file": p.path.name,
                "page": p.page,
                "size": {"width": p.width, "height": p.height},
                "original_size": {"width": round(page_w), "height": round(page_h)},
                "requested_size": p.size,
                "resized": (p.width, p.height) != (round(page_w), round(page_h)),
            }
        )
    converter = previews[0].converter if previews else facts.converter
    return "success", {
        "thumbnails": thumbnails,
        "original_file": original,
        "converter": converter,
        "queue": queued,
    }


def _here(
    source: Path,
    out_dir: Path,
    sizes: Sequence[str],
    pages: str,
    metadata: Sequence[str],
    limits: Limits,
    format: str,
    *,
    describe_only: bool = False,
) -> tuple[list[Preview], DocumentInfo]:
    """Convert and describe ``source`` on this thread's warm worker (:mod:`.pooled`)."""
    from previewer.serve.pooled import convert_pooled

    keys = extraction.parse_keys(list(metadata)) if metadata else ()
    return convert_pooled(
        source, out_dir, sizes, pages, keys, limits, format, describe_only=describe_only
    )


_local = threading.local()


def _on_workers(
    source: Path,
    out_dir: Path,
    sizes: Sequence[str],
    pages: str,
    keys: tuple[str, ...],
    limits: Limits,
    broker: str,
    format: str,
    tenant: str,
    abort: Callable[[], BaseException | None] | None = None,
) -> tuple[list[Preview], dict[str, Any] | None, DocumentInfo | None]:
    """Convert ``source`` on queue workers; raise the file's error as :func:`api.convert` would.

    Runs :func:`previewer.queue.submit_many`'s steps with this thread's executor, whose Celery
    client (and its connections to Redis) is made once, not for every job. The worker is asked
    to describe the document (with the metadata ``keys``) in the same open as the conversion.

    Returns:
        The previews, the file's route (cost class, queue, wait), and the worker's
        description (None from a worker that does not describe).
    """
    from previewer import batch
    from previewer.options import Options
    from previewer.registry import Registry

    options = Options.build(
        sizes=list(sizes), pages=pages, out_dir=out_dir, limits=limits, format=format
    )
    executor = getattr(_local, "executor", None)
    if executor is None or executor.url != broker:
        executor = _local.executor = _executor(broker)
    executor.abort = abort
    executor.tenant = tenant or "anonymous"
    executor.describe = keys
    registry = getattr(_local, "registry", None)
    if registry is None:  # one per thread: loading it scans the installed distributions
        registry = _local.registry = Registry()
    jobs = batch.collect([str(source)], options.out_dir)
    report = batch.run(jobs, options, registry, executor=executor)
    (result,) = report.results
    if result.error is not None:
        raise result.error
    return result.outputs, result.queue, result.info


def _executor(broker: str) -> Any:
    """A queue executor that reaches the broker once and keeps its client for later jobs."""
    from previewer.queue.submit import QueueExecutor

    class Reused(QueueExecutor):
        def prepare(self, jobs: Any, options: Any, task: Any) -> None:
            if self.client is None:
                super().prepare(jobs, options, task)

    from previewer.serve.pooled import call_pooled

    # Woken by the workers' announcements; every 0.25 s at most it also checks whether the
    # client went away (abort).
    executor = Reused(broker, heartbeat=60.0, poll_interval=0.25)
    executor.probe_place = call_pooled  # the thread's warm worker, not a new child per file
    executor.history_ttl = 5.0  # the cost history changes slowly: not one read per job
    return executor


def safe_name(name: str) -> str:
    """A file name safe to create in a job's directory, kept recognisable (``report.pdf``).

    Args:
        name: The client's file name (already a basename).

    Returns:
        Letters, digits, ``.``, ``-``, ``_`` only, at most 100 characters, never hidden.
    """
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
    cleaned = cleaned.lstrip(".")[-100:] or "input"
    return cleaned
