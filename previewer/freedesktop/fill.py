"""Filling the freedesktop thumbnail cache: one file (:func:`thumbnail_file`), or a batch.

:func:`fill_cache` runs the batch engine (:mod:`previewer.batch`) with :class:`CacheTask`,
in this process or in a worker pool, so progress, reports and limits are those of
``previewer convert``; the cache's own rules (entries valid while ``Thumb::MTime`` matches,
fail entries) are in :mod:`previewer.freedesktop.spec`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from previewer.errors import (
    EngineUnavailableError,
    InvalidOptionsError,
    PreviewerError,
    UnsupportedFormatError,
)
from previewer.freedesktop.spec import (
    SIZES,
    ThumbnailFacts,
    cache_root,
    fail_path,
    is_valid,
    thumbnail_path,
    to_uri,
    write_fail_entry,
    write_thumbnail,
)
from previewer.results import (
    FAILED_BEFORE,
    IN_THUMBNAIL_CACHE,
    UP_TO_DATE,
    BatchReport,
    FileResult,
    Preview,
    Status,
)

if TYPE_CHECKING:
    from PIL import Image

    from previewer.batch import Job
    from previewer.budgets import Limits
    from previewer.options import Options
    from previewer.pool import Task
    from previewer.registry import Registry

__all__ = ["CacheTask", "fill_cache", "thumbnail_file"]


def _inside(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


def _facts(
    uri: str,
    st: os.stat_result,
    mime: str,
    doc_units: str,
    pages: int | None,
    page_size: tuple[float, float],
) -> ThumbnailFacts:
    if doc_units == "px" and pages == 1:
        return ThumbnailFacts(
            uri,
            int(st.st_mtime),
            st.st_size,
            mime,
            width=round(page_size[0]),
            height=round(page_size[1]),
        )
    return ThumbnailFacts(uri, int(st.st_mtime), st.st_size, mime, pages=pages)


def thumbnail_file(
    path: str | os.PathLike[str],
    *,
    sizes: Sequence[str] = ("normal", "large"),
    root: Path | None = None,
    registry: Registry | None = None,
    limits: Limits | None = None,
    walked: bool = False,
    options: Options | None = None,
    force: bool = False,
) -> FileResult:
    """Bring the cache entries of one file up to date; never raises for a bad input.

    Entries whose ``Thumb::MTime`` matches the file are reused; a file with a valid fail entry
    of this previewer version is not retried. On failure a fail entry is written, except when
    no available converter handles the file's type (then nothing is recorded).

    Args:
        path: The file.
        sizes: Size directories to fill (keys of :data:`SIZES`).
        root: The cache directory (default: :func:`cache_root`).
        registry: The converters.
        limits: Resource budgets.
        walked: The file was found by walking a directory: an unsupported type is then
            skipped rather than failed.
        options: Password, forced converter, ``keep_temp`` and limits (``limits`` wins);
            sizes, pages and upscaling are the cache's (page 1, never enlarged).
        force: Write the entries even when valid ones exist (and retry a failed file).

    Returns:
        ``converted`` (outputs are the entries written), ``skipped`` (reason ``up to date``,
        ``failed before``, ``inside the thumbnail cache`` or an unsupported type) or ``failed``.
    """
    from previewer.inputs import Opened, guard
    from previewer.options import Options
    from previewer.pagespec import PageSpec, parse_sizes
    from previewer.reading import Found, read
    from previewer.registry import Registry
    from previewer.rendering import render_page

    started = time.monotonic()
    display = os.fspath(path)
    result = FileResult(input=display, status=Status.FAILED)
    cache = root or cache_root()
    try:
        for size in sizes:
            if size not in SIZES:
                raise InvalidOptionsError(
                    f"unknown thumbnail size {size!r} (known: {', '.join(SIZES)})"
                )
        uri = to_uri(path)
        real = os.path.realpath(path)
        if _inside(real, os.path.realpath(cache)):
            result.status, result.reason = Status.SKIPPED, IN_THUMBNAIL_CACHE
            return result
        try:
            st = os.stat(path)
        except OSError as exc:
            from previewer.errors import InputError

            raise InputError(f"cannot read: {exc.strerror or exc}", path=display) from exc
        mtime = int(st.st_mtime)
        wanted = [
            s for s in sizes if force or not is_valid(thumbnail_path(uri, s, cache), uri, mtime)
        ]
        if not wanted:
            result.status, result.reason = Status.SKIPPED, UP_TO_DATE
            return result
        if not force and is_valid(fail_path(uri, cache), uri, mtime):
            result.status, result.reason = Status.SKIPPED, FAILED_BEFORE
            return result
        wanted = sorted(dict.fromkeys(wanted), key=lambda s: SIZES[s])
        base = options or Options()
        opts = replace(
            base,
            sizes=parse_sizes([SIZES[s] for s in wanted]),
            pages=PageSpec.parse("1"),
            upscale=False,
            limits=limits or base.limits,
        )

        def render(od: Opened) -> tuple[ThumbnailFacts, list[Image.Image]]:
            with guard(od.display, od.converter.name):
                # The source's size before rendering (a JPEG may be decoded reduced).
                # A damaged page tree's page count is unknown: no Thumb::Document::Pages then.
                known = od.doc.page_count_known
                pages = od.doc.page_count if known else None
                facts = _facts(uri, st, od.mime, od.doc.units, pages, od.doc.page_size(0))
                images = render_page(od.doc, 0, opts.sizes, upscale=False, limits=opts.limits)
            return facts, images

        found = Found()
        try:
            # The pipeline's fallback applies: ImageMagick may read what the converter cannot.
            facts, images = read(
                path, opts, registry or Registry(), render, found=found, page_hint=True
            )
        except (UnsupportedFormatError, EngineUnavailableError) as exc:
            if walked:
                result.status, result.reason = Status.SKIPPED, exc.message
                return result
            raise
        except PreviewerError:
            write_fail_entry(uri, mtime, cache)
            raise
        finally:
            result.mime, result.converter = found.mime, found.converter
        for size, image in zip(wanted, images, strict=True):
            dest = thumbnail_path(uri, size, cache)
            write_thumbnail(dest, image, facts)
            result.outputs.append(
                Preview(
                    source=display,
                    page=1,
                    size=size,
                    path=dest,
                    width=image.width,
                    height=image.height,
                    converter=result.converter or "",
                    mime=result.mime or "",
                )
            )
        result.status = Status.CONVERTED
    except PreviewerError as exc:
        if exc.path is None:
            exc.path = display
        result.error = exc
        result.status = Status.FAILED
    finally:
        result.duration = time.monotonic() - started
    return result


def fill_cache(
    paths: Iterable[str | os.PathLike[str]],
    *,
    sizes: Sequence[str] = ("normal", "large"),
    root: str | os.PathLike[str] | None = None,
    registry: Registry | None = None,
    limits: Limits | None = None,
    jobs: int = 0,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    hidden: bool = False,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    password: str | None = None,
    converter: str | None = None,
    keep_temp: bool = False,
    force: bool = False,
) -> BatchReport:
    """Fill the freedesktop thumbnail cache for files and directory trees.

    Args:
        paths: Files and directories (walked recursively, like :func:`previewer.convert_many`;
            the cache itself is never walked or thumbnailed).
        sizes: Size directories to fill: ``"normal"`` (128), ``"large"`` (256), ``"x-large"``
            (512), ``"xx-large"`` (1024).
        root: The cache directory (default: ``$XDG_CACHE_HOME/thumbnails``).
        registry: The converters (default: built-ins and installed plugins).
        limits: Resource budgets per file.
        jobs: 0 works in this process; N >= 1 uses N worker processes.
        include: Globs a walked file must match.
        exclude: Globs of walked files to leave out.
        hidden: Also walk hidden files and folders.
        on_result: Called with each :class:`FileResult` as soon as it is known.
        on_progress: Called with ``(done, total)`` before the first and after each input.
        password: Password for encrypted documents.
        converter: Force this converter by name.
        keep_temp: Keep the work directories (their paths are logged).
        force: Rewrite valid entries and retry files that failed before.

    Returns:
        The report: ``converted`` results list the entries written, up-to-date files are
        ``skipped`` with reason ``up to date``; its ``exit_code`` follows the usual rules.

    Raises:
        InvalidOptionsError: If ``sizes`` or ``jobs`` are invalid.
    """
    from previewer import batch
    from previewer.budgets import Limits
    from previewer.options import Options

    for size in sizes:
        if size not in SIZES:
            raise InvalidOptionsError(
                f"unknown thumbnail size {size!r} (known: {', '.join(SIZES)})"
            )
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise InvalidOptionsError(f"jobs must be 0 or a positive integer, not {jobs!r}")
    cache = Path(root) if root is not None else cache_root()
    work = [
        j
        for j in batch.collect(list(paths), cache, include=include, exclude=exclude, hidden=hidden)
        if isinstance(j.source, str)
    ]
    options = Options(
        out_dir=cache,
        password=password,
        converter=converter,
        limits=limits or Limits(),
        keep_temp=keep_temp,
    )
    from previewer.registry import Registry

    return batch.run(
        work,
        options,
        registry or Registry(),
        # The batch worker pool: per-file deadline, memory cap and crash isolation, as for
        # `previewer convert DIR -j N`; a single file runs in a limited child.
        executor=batch.local_executor(jobs, min_jobs=2),
        task=CacheTask(tuple(sizes), cache, force=force),
        on_result=on_result,
        on_progress=on_progress,
    )


class CacheTask:
    """The batch task that brings one file's cache entries up to date (:func:`thumbnail_file`).

    Args:
        sizes: Size directories to fill.
        cache: The cache directory.
        force: Rewrite valid entries.
    """

    claims_outputs: ClassVar[bool] = False  # entries are named by URI; validity is their own
    queueable: ClassVar[bool] = False

    def __init__(self, sizes: tuple[str, ...], cache: Path, *, force: bool = False) -> None:
        self.sizes, self.cache, self.force = sizes, cache, force

    def inline(self, job: Job, options: Options, registry: Registry) -> FileResult:
        """Thumbnail ``job`` in a child process under its limits, as `previewer convert FILE`."""
        from previewer.limited import report_messages, run_limited

        display = str(job.source)
        started = time.monotonic()
        args = (display, self.sizes, self.cache, registry, options, job.walked, self.force)
        try:
            result, messages = run_limited(
                _thumbnail_positional, args, limits=options.limits, display=display
            )
        except PreviewerError as exc:
            return FileResult(
                input=display, status=Status.FAILED, error=exc, duration=time.monotonic() - started
            )
        report_messages(display, messages)
        result.warnings.extend(m for m in messages if m not in result.warnings)
        return result

    @property
    def worker(self) -> Task:
        """:func:`_pool_task` bound to the sizes and the cache."""
        return functools.partial(_pool_task, sizes=self.sizes, cache=self.cache, force=self.force)


def _thumbnail_positional(
    path: str,
    sizes: tuple[str, ...],
    root: Path,
    registry: Registry | None,
    options: Options,
    walked: bool,
    force: bool,
) -> FileResult:
    """:func:`thumbnail_file` with positional arguments, for a limited child."""
    return thumbnail_file(
        path, sizes=sizes, root=root, registry=registry, options=options, walked=walked, force=force
    )


def _pool_task(
    job: Job,
    options: Options,
    registry: Registry,
    *,
    sizes: tuple[str, ...],
    cache: Path,
    force: bool = False,
) -> FileResult:
    """Worker-pool task: thumbnail one file into the cache."""
    from previewer.batch.tasks import kept_workdirs

    with kept_workdirs(options.keep_temp) as kept:
        result = thumbnail_file(
            str(job.source),
            sizes=sizes,
            root=cache,
            registry=registry,
            options=options,
            walked=job.walked,
            force=force,
        )
    result.warnings.extend(kept)
    return result
