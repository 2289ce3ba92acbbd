"""Batch inputs: files, directory trees, bytes and streams turned into jobs; the skip rules.

A directory is walked recursively and mirrored under the output directory; each input becomes a
:class:`Job`. Two jobs whose previews would have the same names fail the second one
(:func:`overwrite_error`), and a walked file no converter claims is skipped, not failed
(:func:`skip_if_unsupported`).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, NamedTuple

from previewer.errors import InvalidOptionsError, OutputError, UnsupportedFormatError
from previewer.options import Options
from previewer.results import FileResult, Status, no_converter_reason

__all__ = [
    "Job",
    "Stat",
    "Work",
    "collect",
    "job_options",
    "overwrite_error",
    "skip_if_unsupported",
]

log = logging.getLogger(__name__)

Stat = tuple[int, int] | None
"""An input's ``(size, mtime_ns)`` when the batch started (None for bytes and streams)."""


class Work(NamedTuple):
    """A planned job: what to run, or its result when it was settled before running.

    Attributes:
        job: The job.
        stat: Its input's :data:`Stat` when planned.
        ready: Its result already (up to date, or its outputs would overwrite another's).
    """

    job: Job
    stat: Stat
    ready: FileResult | None = None


@dataclass(frozen=True)
class Job:
    """One input of a batch.

    Attributes:
        index: Position in the batch.
        source: A path (a :class:`~previewer.sources.WalkedFile` when walked), or bytes or a
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
        :func:`previewer.sources.output_stem`).
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
    from previewer.sources import output_stem

    try:
        return output_stem(name)
    except InvalidOptionsError:
        return name  # refused by the conversion, with the reason, as that input's failure


def _walk(
    top: str, out_real: str, include: Sequence[str], exclude: Sequence[str], hidden: bool
) -> Iterator[tuple[str, str]]:
    """Yield ``(path, relative path)`` of the files under ``top``, sorted, per the rules.

    Each path is a :class:`~previewer.sources.WalkedFile` holding the identity the file has
    now, so converting it later refuses a file swapped in after the walk.
    """
    from previewer.sources import WalkedFile

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


# --------------------------------------------------------------------------- rules


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
