"""Batch runs: walk the inputs, run each file (in worker processes when asked), fill a report.

A batch turns files and directory trees into jobs (directories are walked recursively and
mirrored under the output directory), skips jobs whose previews are up to date (the journal),
and runs the rest either in this process or in a pool of worker processes. Workers give every
file its limits: a wall-clock deadline, an address-space cap, and isolation, so a hang, a crash
(an engine segfault or abort) or the out-of-memory killer fails only that file; the worker is
replaced and the batch goes on. Stopping the batch (Ctrl-C, SIGTERM) stops the workers and their
engines, and removes partial outputs and temporary directories.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from previewer.errors import (
    InvalidOptionsError,
    OutputError,
    PreviewerError,
    UnsupportedFormatError,
)
from previewer.options import Options
from previewer.results import (
    UP_TO_DATE,
    BatchReport,
    FileResult,
    Preview,
    Status,
    no_converter_reason,
)

if TYPE_CHECKING:
    from previewer import tempdirs
    from previewer.registry import Registry

__all__ = ["Job", "collect", "overwrite_error", "run_batch", "skip_if_unsupported"]

log = logging.getLogger(__name__)

JOURNAL_NAME = ".previewer-journal.jsonl"
"""File in the output directory recording finished inputs, for resuming."""


@dataclass(frozen=True)
class Job:
    """One input of a batch.

    Attributes:
        index: Position in the batch.
        source: A path (a :class:`~previewer.inputs.WalkedFile` when walked), or bytes or a
            binary stream for inputs that have no path (a stream is read only when its job
            runs, in chunks, within ``--max-file-size``).
        display: The input as the user sees it.
        name: File name used for the outputs (a final path component).
        out_dir: Directory its previews go to.
        walked: Found by walking a directory (unsupported files are then skipped, not failed).
    """

    index: int
    source: str | bytes | IO[bytes]
    display: str
    name: str
    out_dir: Path
    walked: bool = False

    @property
    def given_name(self) -> str | None:
        """The name to hand to the conversion: None when it is the path's own file name.

        A file's own name (one with a newline or a backslash in it, say) is what the file system
        holds, so it is used as it is; any other name is a caller's and is checked (see
        :func:`previewer.inputs.output_stem`).
        """
        if isinstance(self.source, str) and self.name == os.path.basename(self.source):
            return None
        return self.name


# --------------------------------------------------------------------------- collecting


def collect(
    sources: Iterable[Any],
    out_dir: Path,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
) -> list[Job]:
    """Turn files, directories, bytes and streams into jobs.

    A directory is walked recursively; its files keep their relative path under ``out_dir``.
    Hidden files and folders (names starting with ".") are skipped unless ``hidden``; symbolic
    links are followed only when they stay inside the tree; the output directory itself is never
    walked. ``include``/``exclude`` globs match a walked file's path relative to its tree and
    its name.

    Args:
        sources: Paths, bytes, binary file objects, or ``(source, name)`` pairs.
        out_dir: The batch's output directory.
        include: Only walked files matching one of these globs (default: all).
        exclude: Walked files matching one of these globs are left out.
        hidden: Also walk hidden files and folders.

    Returns:
        The jobs, in order.
    """
    jobs: list[Job] = []
    out_real = os.path.realpath(out_dir)
    for item in sources:
        source, name = item if isinstance(item, tuple) else (item, None)
        stem = _stem(name)
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if os.path.isdir(path):
                for file, rel in _walk(path, out_real, include, exclude, hidden):
                    rel_dir = os.path.dirname(rel)
                    jobs.append(
                        Job(
                            len(jobs),
                            file,
                            str(file),
                            os.path.basename(rel),
                            out_dir / rel_dir if rel_dir else out_dir,
                            walked=True,
                        )
                    )
                continue
            jobs.append(Job(len(jobs), path, path, stem or os.path.basename(path) or path, out_dir))
            continue
        if not hasattr(source, "read"):
            source = bytes(source)
        jobs.append(Job(len(jobs), source, name or "<bytes>", stem or "input", out_dir))
    return jobs


def _stem(name: str | None) -> str | None:
    """The output-name part of a caller's name; an invalid one is kept, to fail its job."""
    if name is None:
        return None
    from previewer.inputs import output_stem

    try:
        return output_stem(name)
    except InvalidOptionsError:
        return name  # refused by the conversion, with the reason, as that input's failure


def _walk(
    top: str, out_real: str, include: Sequence[str], exclude: Sequence[str], hidden: bool
) -> Iterator[tuple[str, str]]:
    """Yield ``(path, relative path)`` of the files under ``top``, sorted, per the rules.

    Each path is a :class:`~previewer.inputs.WalkedFile` holding the identity the file has
    now, so converting it later refuses a file swapped in after the walk.
    """
    from previewer.inputs import WalkedFile

    top_real = os.path.realpath(top)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        kept = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if not hidden and d.startswith("."):
                continue
            if os.path.realpath(full) == out_real or os.path.islink(full):
                continue  # our own output, or a linked directory (possibly leaving the tree)
            kept.append(d)
        dirnames[:] = kept
        for f in sorted(filenames):
            if not hidden and f.startswith("."):
                continue
            full = os.path.join(dirpath, f)
            link = os.path.islink(full)
            if link:
                target = os.path.realpath(full)
                if os.path.commonpath([top_real, target]) != top_real:
                    log.info("not following %s: it leaves %s", full, top)
                    continue
            rel = os.path.relpath(full, top)
            rel_posix = rel.replace(os.sep, "/")
            if include and not any(_match(rel_posix, f, g) for g in include):
                continue
            if any(_match(rel_posix, f, g) for g in exclude):
                continue
            try:
                st = os.stat(full)
            except OSError:
                yield full, rel  # gone already: its job fails, saying so
                continue
            yield WalkedFile(full, (st.st_dev, st.st_ino), link), rel


def _match(rel: str, name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(name, pattern)


# --------------------------------------------------------------------------- journal


_OUTPUT_OPTIONS = ("converter", "pages", "sizes", "upscale")
"""The options that decide an input's outputs (beyond its content)."""


def _fingerprint(options: Options) -> str:
    """What decides the outputs of an input, beyond its content (so resuming is safe)."""
    data = options.to_dict()
    return json.dumps({key: data[key] for key in _OUTPUT_OPTIONS}, sort_keys=True)


class Journal:
    """Records finished inputs in ``<out_dir>/.previewer-journal.jsonl`` to make reruns resume.

    An input is up to date when the journal holds an entry with the same path, size, mtime and
    options, and every output it lists exists and is not older than the input.
    """

    def __init__(self, out_dir: Path, options: Options) -> None:
        self.path = out_dir / JOURNAL_NAME
        self.absolute = out_dir.is_absolute()
        self.fingerprint = _fingerprint(options)
        self.entries: dict[tuple[str, str], dict[str, Any]] = {}
        self._fd: int | None = None
        self.disabled = False
        try:
            fd = self._open(os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._disable(exc)
            return
        with open(fd, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(entry, dict) and "input" in entry:
                    self.entries[(entry["input"], str(entry.get("options")))] = entry

    def _open(self, flags: int) -> int:
        """Open the journal itself: never through a symbolic link, never a FIFO or device."""
        import stat

        fd = os.open(self.path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{self.path} is not a regular file")
        return fd

    def _disable(self, exc: OSError) -> None:
        import errno

        self.disabled = True
        reason = (
            "it is a symbolic link, which is not followed"
            if exc.errno == errno.ELOOP
            else (exc.strerror or str(exc))
        )
        log.warning("not using the journal %s (no resuming, no recording): %s", self.path, reason)

    @staticmethod
    def _stat(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def up_to_date(self, job: Job) -> FileResult | None:
        """Return a "skipped" result listing the existing outputs, or None if work is needed."""
        if self.disabled or not isinstance(job.source, str):
            return None
        key = os.path.abspath(job.source)
        entry = self.entries.get((key, self.fingerprint))
        stat = self._stat(job.source)
        if entry is None or stat is None:
            return None
        if [entry.get("size"), entry.get("mtime_ns")] != list(stat):
            return None
        outputs = entry.get("outputs") or []
        for out in outputs:
            try:
                if os.stat(out["path"]).st_mtime_ns < stat[1]:
                    return None
            except (OSError, KeyError, TypeError):
                return None

        def shown(path: str) -> Path:
            # Report paths the way this run names them (relative when OUTDIR is relative).
            return Path(path) if self.absolute else Path(os.path.relpath(path))

        mime, converter = entry.get("mime"), entry.get("converter")
        try:
            previews = [
                Preview.from_dict(
                    {**o, "path": shown(o["path"])},
                    source=job.display,
                    converter=str(converter),
                    mime=str(mime),
                )
                for o in outputs
            ]
        except (KeyError, TypeError, ValueError):
            return None
        return FileResult(
            input=job.display,
            status=Status.SKIPPED,
            mime=mime,
            converter=converter,
            outputs=previews,
            reason=UP_TO_DATE,
        )

    def record(self, job: Job, result: FileResult, stat: tuple[int, int] | None) -> None:
        """Append a converted input to the journal (one line, one write)."""
        if self.disabled or result.status != Status.CONVERTED or not isinstance(job.source, str):
            return
        if stat is None:
            return
        entry = {
            "input": os.path.abspath(job.source),
            "size": stat[0],
            "mtime_ns": stat[1],
            "options": self.fingerprint,
            "mime": result.mime,
            "converter": result.converter,
            "outputs": [
                {**p.to_dict(), "path": os.path.abspath(str(p.path))} for p in result.outputs
            ],
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = self._open(os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.write(self._fd, line.encode("utf-8", "surrogateescape"))
        except OSError as exc:
            self._disable(exc)

    def close(self) -> None:
        """Close the journal file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------- running


def overwrite_error(job: Job, claimed: dict[tuple[Path, str], Job]) -> OutputError | None:
    """Claim ``job``'s output names; return the error if an earlier job already has them.

    Args:
        job: The job about to run.
        claimed: Output directory and name of every job seen so far in this run (updated).

    Returns:
        None when the names are free, else the ``OutputError`` to fail ``job`` with.
    """
    owner = claimed.setdefault((job.out_dir.absolute(), job.name), job)
    if owner is job:
        return None
    return OutputError(
        f"its previews would overwrite those of {owner.display} ({job.name} in {job.out_dir})",
        path=job.display,
        hint="give inputs distinct names or convert them into separate output directories",
    )


def skip_if_unsupported(job: Job, result: FileResult) -> None:
    """A walked file that no converter claims is skipped, not failed (named files fail)."""
    if (
        job.walked
        and result.status == Status.FAILED
        and isinstance(result.error, UnsupportedFormatError)
    ):
        result.status = Status.SKIPPED
        result.reason = no_converter_reason(result.mime)
        result.error = None


def job_options(options: Options, job: Job) -> Options:
    """The options ``job`` runs with: its own output folder, inside the batch's output tree.

    Args:
        options: The batch's options.
        job: The job.

    Returns:
        ``options`` with ``out_dir`` set to the job's folder and ``out_root`` to the tree's top,
        so folders inside the tree are never entered through a symbolic link.
    """
    return replace(options, out_dir=job.out_dir, out_root=options.out_root or options.out_dir)


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
    """Run ``jobs`` and report; a failing input never stops the others.

    Args:
        jobs: From :func:`collect`.
        options: The options (``out_dir`` is replaced per job).
        registry: The converters.
        workers: 0 runs one file at a time, each in a child process of this one (see
            :func:`previewer.limited.run_limited`); N >= 1 runs in N worker processes. Either way
            each file has its deadline, memory cap and crash isolation.
        resume: Skip inputs whose previews are up to date (see :class:`Journal`).
        journal: Record converted inputs in the journal (default: when ``resume``); a forced
            run records what it did, so the next resumed run does not redo it.
        on_result: Called with each result as soon as it is known.

    Returns:
        The report, results in the order they finished.
    """
    report = BatchReport()
    started = time.monotonic()
    if len(jobs) > 1:  # a batch (a pool reaps too); a one-off conversion stays lean
        from previewer.tempdirs import reap_once

        reap_once()  # what runs killed by SIGKILL left behind
    # One journal for the run, in the output directory (jobs' subdirectories included).
    record = resume if journal is None else journal
    book = Journal(options.out_dir, options) if resume or record else None

    def finish(job: Job, result: FileResult, stat: tuple[int, int] | None = None) -> None:
        skip_if_unsupported(job, result)
        if book is not None and record and stat is not None:
            book.record(job, result, stat)
        report.results.append(result)
        if on_result is not None:
            on_result(result)

    todo: list[tuple[Job, tuple[int, int] | None]] = []
    ready: dict[int, FileResult] = {}  # jobs settled before running, reported in their turn
    claimed: dict[tuple[Path, str], Job] = {}
    for job in jobs:
        if (error := overwrite_error(job, claimed)) is not None:
            ready[job.index] = FileResult(input=job.display, status=Status.FAILED, error=error)
        elif resume and book is not None and (done := book.up_to_date(job)) is not None:
            ready[job.index] = done
        todo.append((job, Journal._stat(job.source) if isinstance(job.source, str) else None))

    spools: tempdirs.Held | None = None
    try:
        if workers <= 0:
            from previewer.pipeline import convert_one

            for job, stat in todo:
                if job.index in ready:
                    finish(job, ready[job.index])
                    continue
                result = convert_one(
                    job.source,
                    job_options(options, job),
                    registry,
                    name=job.given_name,
                    isolate=True,
                )
                result.input = job.display
                finish(job, result, stat)
        else:
            from previewer.pool import WorkerPool

            for job, _stat in todo:
                if job.index in ready:
                    finish(job, ready[job.index])
            runnable = []
            spooled_jobs = set()
            for job, stat in todo:
                if job.index in ready:
                    continue
                if not isinstance(job.source, (str, bytes)):
                    # A stream cannot go to a worker: copy it to a file first, in chunks.
                    if spools is None:
                        from previewer.tempdirs import make

                        spools = make("previewer-spool-")
                    spooled = _spool(job, spools.path, options)
                    if isinstance(spooled, FileResult):
                        finish(job, spooled)
                        continue
                    job = spooled
                    spooled_jobs.add(job.index)
                runnable.append((job, stat))
            with WorkerPool(workers, options, registry) as pool:
                for job, stat, result in pool.run(runnable):
                    if spools is not None and job.index in spooled_jobs:
                        _name_spooled(result, str(job.source), job.display)
                    finish(job, result, stat)
    finally:
        if book is not None:
            book.close()
        if spools is not None:
            import shutil

            shutil.rmtree(spools.path, ignore_errors=True)
            spools.release()
    report.elapsed = time.monotonic() - started
    return report


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
    from previewer.inputs import spool

    assert not isinstance(job.source, (str, bytes))
    path = directory / f"input-{job.index}"
    try:
        spool(job.source, path, job.display, options.limits)
    except PreviewerError as exc:
        return FileResult(input=job.display, status=Status.FAILED, error=exc)
    return replace(job, source=str(path))
