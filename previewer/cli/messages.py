"""Output of the command line: message lines, results on stdout, the report file, progress.

stdout carries only results (output paths one per line, or one JSON object per input with
``--json``); messages, warnings and progress go to stderr, through the live progress bar when
one is shown. rich is imported only when stderr is a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from previewer.errors import PreviewerError
from previewer.results import UP_TO_DATE, Status

__all__ = ["ResultPrinter", "err", "progress", "report_error", "summary"]


class _Console:
    """The rich console of the live progress bar, if any: messages go through it."""

    live: Any = None


def _err(text: str, *, style: str | None = None) -> None:
    """Write a message line on stderr, clearing the progress bar first when one is shown."""
    console = _Console.live
    if console is not None:
        console.print(text, style=style, markup=False, highlight=False, emoji=False)
        return
    if style and sys.stderr.isatty():
        text = click.style(text, fg=style)
    click.echo(text, err=True)


class _MessageHandler(logging.Handler):
    """Shows log records as message lines (see :func:`_err`), warnings in yellow."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging must not fail the run
            self.handleError(record)
            return
        style = "yellow" if record.levelno >= logging.WARNING else None
        _err(text, style="red" if record.levelno >= logging.ERROR else style)


def _describe(exc: BaseException) -> str:
    """The error as the command line shows it: the library's hint in terms of flags."""
    if isinstance(exc, PreviewerError) and exc.hint:
        from previewer.reporting import flag_words

        hint = exc.hint
        try:
            exc.hint = flag_words(hint)
            return str(exc)
        finally:
            exc.hint = hint
    return str(exc)


def _report_error(exc: BaseException) -> None:
    _err(f"previewer: error: {_describe(exc)}", style="red")


class _ResultPrinter:
    """Writes results as they arrive: paths or JSON on stdout, failures on stderr, a report file.

    Paths are written as the bytes the file system uses, so names that are not valid UTF-8
    come out unchanged.
    """

    def __init__(self, *, as_json: bool, report_path: str | None = None) -> None:
        self.as_json = as_json
        self.report_path = report_path
        self.report: Any = None

    def __enter__(self) -> _ResultPrinter:
        if self.report_path is not None:
            try:
                self.report = open(self.report_path, "wb")  # closed in __exit__
            except OSError as exc:
                raise click.UsageError(
                    f"cannot write the report {self.report_path}: {exc}"
                ) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self.report is not None:
            self.report.close()

    def __call__(self, result: Any) -> None:
        out = sys.stdout.buffer
        line = None
        if self.as_json or self.report is not None:
            line = _json_bytes(result.to_dict())
        if self.as_json and line is not None:
            out.write(line)
        else:
            for preview in result.outputs:
                out.write(os.fsencode(str(preview.path)) + b"\n")
        out.flush()
        if self.report is not None and line is not None:
            self.report.write(line)
            self.report.flush()
        if result.error is not None:
            _report_error(result.error)
        elif result.status == Status.SKIPPED and result.reason != UP_TO_DATE:
            from previewer.reporting import flag_words

            _err(f"previewer: skipped {result.input}: {flag_words(result.reason)}", style="yellow")


def _json_bytes(data: Any) -> bytes:
    """One JSON line; file names that are not UTF-8 keep their original bytes."""
    return (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")


class _Progress:
    """A rich progress bar on stderr, shown only on a terminal and for more than one input."""

    def __init__(self, bar: Any = None) -> None:
        self.bar = bar
        self.task: Any = None
        self.failed = 0

    def total(self, done: int, total: int) -> None:
        if self.bar is None:
            return
        if self.task is None:
            if total < 2:
                return
            self.task = self.bar.add_task("converting", total=total, failed=0)
            self.bar.start()
        self.bar.update(self.task, completed=done, failed=self.failed)

    def advance(self, result: Any) -> None:
        self.failed += result.status == Status.FAILED


@contextmanager
def _progress(*, quiet: bool) -> Iterator[_Progress]:
    """Yield a progress tracker; rich is imported only when stderr is a terminal."""
    if quiet or not sys.stderr.isatty():
        yield _Progress()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} files/s" if speed else "- files/s")

    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[failed]} failed"),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        auto_refresh=True,
    )
    tracker = _Progress(bar)
    _Console.live = bar.console  # messages printed meanwhile clear the bar and redraw it
    try:
        yield tracker
    finally:
        _Console.live = None
        if tracker.task is not None:
            bar.stop()


def _summary(report: Any) -> None:
    parts = [f"{report.converted} converted"]
    if report.skipped:
        parts.append(f"{report.skipped} skipped")
    if report.failed:
        by_type = ", ".join(f"{k}: {v}" for k, v in sorted(report.failures_by_type().items()))
        parts.append(f"{report.failed} failed ({by_type})")
    _err(
        f"previewer: {', '.join(parts)} in {report.elapsed:.1f} s",
        style="red" if report.failed else "green",
    )


# Public names for the other command modules; the underscored ones stay for tests and hosts.
err = _err
report_error = _report_error
ResultPrinter = _ResultPrinter
progress = _progress
summary = _summary
