"""The ``previewer`` command: a thin click layer over :mod:`previewer.api`.

stdout carries only results (output paths one per line, PNG bytes with ``-o -``, or one JSON
object per input with ``--json``); messages, warnings and progress go to stderr. Exceptions are
turned into exit codes in exactly one place, :func:`main`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from previewer.cli_limits import limit_options, limits_from_params
from previewer.errors import ExitCode, InvalidOptionsError, PreviewerError
from previewer.options import Options, PageSpec, parse_sizes
from previewer.results import UP_TO_DATE, Status

__all__ = ["cli", "main"]

log = logging.getLogger("previewer")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _version() -> str:
    from previewer import __version__

    return __version__


class _State:
    debug = False


LAZY_COMMANDS: dict[str, str] = {
    "desktop": "previewer.thumbnailer:desktop",
    "thumbnail": "previewer.thumbnailer:thumbnail",
    "worker": "previewer.worker_cli:worker",
}
"""Commands defined in other modules, as ``name -> "module:attribute"``; each module is
imported only when its command runs (or help lists it), so ``previewer convert`` stays fast."""


class _LazyGroup(click.Group):
    """A click group that also offers :data:`LAZY_COMMANDS`, importing each on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in LAZY_COMMANDS:
            return command
        import importlib

        module, _, attribute = LAZY_COMMANDS[cmd_name].partition(":")
        loaded = getattr(importlib.import_module(module), attribute)
        if not isinstance(loaded, click.Command):  # pragma: no cover - a wiring mistake
            raise TypeError(f"{LAZY_COMMANDS[cmd_name]} is not a click command")
        return loaded


@click.group(cls=_LazyGroup, context_settings=CONTEXT)
@click.version_option(_version(), "-V", "--version", prog_name="previewer")
@click.option(
    "--debug",
    is_flag=True,
    envvar="PREVIEWER_DEBUG",
    help="Log engine details and show tracebacks.",
)
def cli(debug: bool) -> None:
    """Turn documents and images into sized PNG previews.

    \b
    Examples:
      previewer convert report.pdf photo.jpg
      previewer convert report.pdf -o thumbs -s 128 -s 1024x768 -p 1-3
      previewer convert scan.tiff -p all --json
      previewer convert report.pdf -o - > page1.png
      previewer info report.pdf --json
      previewer converters
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    _State.debug = debug
    for logger in (logging.root, log):  # one handler, however often main() runs in a process
        for old in [h for h in logger.handlers if isinstance(h, _MessageHandler)]:
            logger.removeHandler(old)
    handler = _MessageHandler()
    level = logging.root.level
    if debug:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.root.addHandler(handler)
        logging.root.setLevel(logging.DEBUG)
    else:
        # The library's warnings (engine messages captured during a conversion, kept work
        # directories) as warning lines; details stay for --debug.
        handler.setFormatter(logging.Formatter("previewer: warning: %(message)s"))
        handler.setLevel(logging.WARNING)
        log.addHandler(handler)
    # Only for this invocation: a host running the CLI in-process (tests, click's runner)
    # keeps a silent library afterwards.
    click.get_current_context().call_on_close(functools.partial(_remove_handler, handler, level))


def _remove_handler(handler: logging.Handler, root_level: int) -> None:
    for logger in (logging.root, log):
        logger.removeHandler(handler)
    logging.root.setLevel(root_level)


# --------------------------------------------------------------------------- messages


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
        from previewer.errors import flag_words

        hint = exc.hint
        try:
            exc.hint = flag_words(hint)
            return str(exc)
        finally:
            exc.hint = hint
    return str(exc)


def _report_error(exc: BaseException) -> None:
    _err(f"previewer: error: {_describe(exc)}", style="red")


# --------------------------------------------------------------------------- convert


@cli.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "-o",
    "--out-dir",
    default=".",
    show_default=True,
    envvar="PREVIEWER_OUT_DIR",
    help="Directory for the PNG files, or - to write a single PNG to stdout.",
)
@click.option(
    "-s",
    "--size",
    "sizes",
    multiple=True,
    default=("256",),
    show_default=True,
    help="Output size: N (fit in NxN), WxH (fit in the box), Wx (width), xH (height). Repeatable.",
)
@click.option(
    "-p", "--pages", default="1", show_default=True, help="Pages: 1, 2-4, 1,3,5-7 or all."
)
@click.option("--upscale", is_flag=True, help="Enlarge raster images smaller than the size.")
@click.option("--password", envvar="PREVIEWER_PASSWORD", help="Password for encrypted documents.")
@click.option("--converter", "converter_name", metavar="NAME", help="Force this converter.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per input.")
@click.option("-q", "--quiet", is_flag=True, help="Print no progress or summary on stderr.")
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=0),
    default=None,
    envvar="PREVIEWER_JOBS",
    help="Worker processes (default: one per CPU; a single file runs in this process). "
    "0 runs everything in this process.",
)
@click.option(
    "--include", multiple=True, metavar="GLOB", help="Only walk files matching this glob."
)
@click.option("--exclude", multiple=True, metavar="GLOB", help="Do not walk files matching it.")
@click.option("--hidden", is_flag=True, help="Also walk hidden files and folders.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, writable=True, path_type=str),
    help="Write one JSON line per input to this file as it finishes.",
)
@click.option("--force", is_flag=True, help="Convert even inputs whose previews are up to date.")
@click.option(
    "--broker",
    envvar="PREVIEWER_BROKER_URL",
    metavar="URL",
    help="Send each file to queue workers through this broker (redis://...) instead of "
    "converting here; see 'previewer worker'.",
)
@click.option(
    "--freedesktop",
    is_flag=True,
    help="Fill the desktop's thumbnail cache ($XDG_CACHE_HOME/thumbnails) instead of OUT_DIR; "
    "-s 128/256/512/1024 pick normal/large/x-large/xx-large (default: 128 and 256).",
)
@click.option("--keep-temp", is_flag=True, help="Keep work directories (for debugging).")
@limit_options
def convert(
    inputs: tuple[str, ...],
    out_dir: str,
    sizes: tuple[str, ...],
    pages: str,
    upscale: bool,
    password: str | None,
    converter_name: str | None,
    as_json: bool,
    quiet: bool,
    jobs: int | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    hidden: bool,
    report_path: str | None,
    force: bool,
    broker: str | None,
    freedesktop: bool,
    keep_temp: bool,
    **limit_params: Any,
) -> int:
    """Write PNG previews of INPUTS: files, directories (walked recursively), or - for stdin.

    Each preview is written to OUT_DIR/<input name>.p<PAGE>.<SIZE>.png (a directory's files
    keep their relative path under OUT_DIR) and its path printed on stdout as it is written.
    Failing inputs are reported on stderr and the others still convert (exit status 10). When
    directories are converted, files whose previews are up to date from an earlier run are not
    redone unless --force.

    \b
    Examples:
      previewer convert report.pdf photo.jpg
      previewer convert report.pdf -o thumbs -s 128 -s 1024x768 -p 1-3
      previewer convert scan.tiff -p all --json
      previewer convert report.pdf -o - > page1.png
      cat photo.jpg | previewer convert - -o thumbs
      previewer convert ~/Documents -o ~/thumbs -j 4 --exclude '*.tmp' --report run.jsonl
      previewer convert /srv/docs -o /srv/thumbs --broker redis://queue-host:6379/0
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    from previewer import api
    from previewer.registry import Registry

    try:
        options = Options(
            sizes=parse_sizes(sizes),
            pages=PageSpec.parse(pages),
            out_dir=Path(out_dir),
            upscale=upscale,
            password=password,
            converter=converter_name,
            limits=limits_from_params(limit_params),
            keep_temp=keep_temp,
        )
    except InvalidOptionsError as exc:
        raise click.UsageError(exc.message) from exc
    if inputs.count("-") > 1:
        raise click.UsageError("stdin (-) can be given only once")
    registry = Registry()
    if out_dir == "-":
        if broker:
            raise click.UsageError("-o - converts here; it cannot be combined with --broker")
        return _convert_to_stdout(inputs, options, registry)
    if broker and freedesktop:
        raise click.UsageError("--broker and --freedesktop cannot be combined")

    walking = any(item != "-" and os.path.isdir(item) for item in inputs)
    if jobs is None:
        jobs = 0 if len(inputs) == 1 and not walking else (os.cpu_count() or 1)
    results_out = _ResultPrinter(as_json=as_json, report_path=report_path)
    with results_out, _progress(quiet=quiet) as progress:

        def on_result(result: api.FileResult) -> None:
            results_out(result)
            progress.advance(result)

        if freedesktop:
            from previewer.freedesktop import fill_cache

            if "-" in inputs:
                raise click.UsageError("--freedesktop thumbnails files, not stdin")
            report = fill_cache(
                inputs,
                sizes=_cache_sizes(sizes),
                registry=registry,
                limits=options.limits,
                jobs=jobs,
                include=include,
                exclude=exclude,
                hidden=hidden,
                on_result=on_result,
                on_progress=progress.total,
            )
        elif broker:
            from previewer.tasks import submit_many

            if "-" in inputs:
                raise click.UsageError("--broker sends files to workers, not stdin")
            report = submit_many(
                list(inputs),
                options,
                broker=broker,
                include=include,
                exclude=exclude,
                hidden=hidden,
                on_result=on_result,
                on_progress=progress.total,
            )
        else:
            sources = [(sys.stdin.buffer, "stdin") if item == "-" else item for item in inputs]
            report = api.convert_many(
                sources,
                options=options,
                registry=registry,
                jobs=jobs,
                include=include,
                exclude=exclude,
                hidden=hidden,
                resume=walking and not force,
                journal=walking,
                on_result=on_result,
                on_progress=progress.total,
            )
    if (len(report.results) > 1 or walking) and not quiet:
        _summary(report)
    return report.exit_code


_CACHE_SIZES = {"128": "normal", "256": "large", "512": "x-large", "1024": "xx-large"}


def _cache_sizes(sizes: Sequence[str]) -> tuple[str, ...]:
    """Map -s values to the thumbnail cache's size directories."""
    if tuple(sizes) == ("256",):  # the default -s: fill the two sizes file managers ask for
        return ("normal", "large")
    try:
        return tuple(dict.fromkeys(_CACHE_SIZES[str(size).strip()] for size in sizes))
    except KeyError as exc:
        raise click.UsageError(
            f"--freedesktop sizes are 128, 256, 512 and 1024, not {exc.args[0]}"
        ) from None


def _convert_to_stdout(inputs: Sequence[str], options: Options, registry: Any) -> int:
    from previewer import api, output

    if len(inputs) != 1 or len(options.sizes) != 1 or not options.pages.is_single:
        raise click.UsageError("-o - writes one PNG: give one input, one size and one page")
    if sys.stdout.isatty():
        raise click.UsageError("refusing to write PNG data to a terminal; redirect stdout")
    item = inputs[0]
    source: Any = sys.stdin.buffer if item == "-" else item
    image = api.render(
        source,
        page=options.pages.ranges[0][0],
        size=options.sizes[0],
        upscale=options.upscale,
        password=options.password,
        converter=options.converter,
        limits=options.limits,
        name="stdin" if item == "-" else None,
        registry=registry,
    )
    data = output.encode_png(image)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return int(ExitCode.OK)


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
            from previewer.errors import flag_words

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


# --------------------------------------------------------------------------- info


@cli.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--password", envvar="PREVIEWER_PASSWORD", help="Password for encrypted documents.")
@click.option("--converter", "converter_name", metavar="NAME", help="Force this converter.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per input.")
@limit_options
def info(
    inputs: tuple[str, ...],
    password: str | None,
    converter_name: str | None,
    as_json: bool,
    **limit_params: Any,
) -> int:
    """Describe INPUTS: sniffed MIME type, converter, pages and page sizes, bytes, SHA-256.

    \b
    Examples:
      previewer info report.pdf
      previewer info scan.tiff photo.jpg --json
      previewer info secret.pdf --password hunter2
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    from previewer import api
    from previewer.registry import Registry

    registry = Registry()
    limits = limits_from_params(limit_params)
    failures: list[PreviewerError] = []
    for item in inputs:
        try:
            facts = api.info(
                sys.stdin.buffer if item == "-" else item,
                password=password,
                converter=converter_name,
                limits=limits,
                name="stdin" if item == "-" else None,
                registry=registry,
            )
        except PreviewerError as exc:
            failures.append(exc)
            if as_json:
                click.echo(
                    json.dumps({"input": item, "status": Status.FAILED, "error": exc.summary()})
                )
            _report_error(exc)
            continue
        if as_json:
            click.echo(json.dumps({**facts.to_dict(), "status": "ok"}, ensure_ascii=False))
        else:
            _print_info(facts)
    if not failures:
        return int(ExitCode.OK)
    if len(inputs) == 1:
        return int(failures[0].exit_code)
    return int(ExitCode.BATCH_PARTIAL)


def _print_info(facts: Any) -> None:
    rows: list[tuple[str, str]] = [
        ("mime", facts.mime),
        ("converter", f"{facts.converter} ({facts.engine})"),
        (
            "pages",
            str(facts.pages)
            if facts.pages is not None
            else f"unknown (damaged; {len(facts.page_sizes)} found)",
        ),
    ]
    shown = facts.page_sizes[:10]
    for number, (w, h) in enumerate(shown, start=1):
        rows.append((f"page {number}", f"{w:g} x {h:g} {facts.units}"))
    if len(facts.page_sizes) > len(shown):
        total = facts.pages if facts.pages is not None else len(facts.page_sizes)
        rows.append(("", f"... {total - len(shown)} more pages"))
    rows.append(("bytes", f"{facts.bytes:,}"))
    rows.append(("sha256", facts.sha256))
    for key, value in facts.metadata.items():
        if value not in ("", None, [], {}):
            rows.append((key, json.dumps(value) if isinstance(value, (list, dict)) else str(value)))
    click.echo(facts.input)
    for key, value in rows:
        click.echo(f"  {key:<17} {value}")


# --------------------------------------------------------------------------- converters


@cli.command("converters", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per converter.")
def converters_command(as_json: bool) -> int:
    """List converters: MIME types, engine, version, and whether they are available.

    \b
    Examples:
      previewer converters
      previewer converters --json
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    from previewer import api

    listing = api.list_converters()
    for conv in listing:
        if as_json:
            click.echo(json.dumps(conv.to_dict()))
            continue
        mark = "✓" if conv.available else "✗"
        engine = f"{conv.engine} {conv.version}" if conv.version else conv.engine
        click.echo(f"{mark} {conv.name:<18} {engine}")
        click.echo(f"    types:  {', '.join(conv.mime_types) or '-'}")
        click.echo(f"    isolation: {conv.isolation}")
        if conv.origin != "builtin":
            click.echo(f"    from:   {conv.origin}")
        if not conv.available:
            click.echo(f"    reason: {conv.reason}")
    return int(ExitCode.OK)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line and exit with the status derived from the outcome.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
    """
    import signal

    terminated: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt  # unwinds like Ctrl-C: workers and engines stopped, temp removed

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    code: int
    try:
        rv = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="previewer",
            standalone_mode=False,
        )
        code = int(rv) if isinstance(rv, int) else int(ExitCode.OK)
    except click.exceptions.Exit as exc:
        code = int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        code = int(ExitCode.USAGE) if isinstance(exc, click.UsageError) else exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        _err("previewer: terminated" if terminated else "previewer: interrupted")
        code = int(ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED)
    except PreviewerError as exc:
        _report_error(exc)
        code = int(exc.exit_code)
    except BrokenPipeError:
        # stdout closed early (previewer ... | head); exit quietly like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = int(ExitCode.OK)
    except Exception as exc:  # noqa: BLE001 - the one place internal errors become exit 1
        if _State.debug:
            import traceback

            traceback.print_exc()
        _err(
            f"previewer: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for a traceback and please report it)",
            style="red",
        )
        code = int(ExitCode.INTERNAL)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code)
