"""The ``convert`` command: flags to :class:`~previewer.options.Options`, then one executor.

Which executor runs the inputs (locally, ``--broker``, ``--freedesktop``, ``-o -``) and which
flags each refuses is decided in :mod:`previewer.cli.modes`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from previewer.cli import modes
from previewer.cli.group import CONTEXT, cli
from previewer.cli.messages import ResultPrinter, progress, summary
from previewer.cli_limits import limit_options, limits_from_params
from previewer.errors import InvalidOptionsError
from previewer.options import DEFAULT_QUALITY, Options
from previewer.pagespec import PageSpec, parse_sizes

if TYPE_CHECKING:
    from previewer.results import BatchReport

__all__ = ["convert"]


@cli.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "-o",
    "--out-dir",
    default=".",
    show_default=True,
    envvar="PREVIEWER_OUT_DIR",
    help="Directory for the preview files, or - to write a single image to stdout.",
)
@click.option(
    "--format",
    "image_format",
    type=click.Choice(["png", "jpeg", "jpg", "webp"], case_sensitive=False),
    default="png",
    show_default=True,
    envvar="PREVIEWER_FORMAT",
    help="Image format of the previews (jpg = jpeg; JPEG flattens transparency onto white). "
    "The thumbnail cache (--freedesktop) is always PNG.",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=DEFAULT_QUALITY,
    show_default=True,
    envvar="PREVIEWER_QUALITY",
    help="JPEG/WebP quality, 1-100 (PNG ignores it).",
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
@click.option(
    "--queue",
    "queue_name",
    metavar="NAME",
    help="With --broker: send every file to this Celery queue whatever its class (default: "
    "each class to its own, previewer.light/.heavy/.office); 'previewer worker -Q NAME' "
    "consumes it.",
)
@click.option(
    "--tenant",
    metavar="NAME",
    envvar="PREVIEWER_TENANT",
    help="With --broker: who submits, shown with each file and in the workers' statistics "
    "(default: the user name).",
)
@click.option("--keep-temp", is_flag=True, help="Keep work directories (for debugging).")
@limit_options
def convert(
    inputs: tuple[str, ...],
    out_dir: str,
    image_format: str,
    quality: int,
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
    queue_name: str | None,
    tenant: str | None,
    keep_temp: bool,
    **limit_params: Any,
) -> int:
    """Write previews of INPUTS: files, directories (walked recursively), or - for stdin.

    Each preview is written to OUT_DIR/<input name>.p<PAGE>.<SIZE>.png (.jpg or .webp with
    --format; a directory's files keep their relative path under OUT_DIR) and its path printed
    on stdout as it is written.
    Failing inputs are reported on stderr and the others still convert (exit status 10). When
    directories are converted, files whose previews are up to date from an earlier run are not
    redone unless --force.

    -j N, --force, --report and the rest work the same with --broker (queue workers; each file
    is classed light, heavy or office before it is queued, and -j N bounds the files of each
    class in flight) and --freedesktop (the thumbnail cache); a flag that cannot
    apply there is refused (exit status 2).

    \b
    Examples:
      previewer convert report.pdf photo.jpg
      previewer convert report.pdf -o thumbs -s 128 -s 1024x768 -p 1-3
      previewer convert scan.tiff -p all --json
      previewer convert report.pdf -o - > page1.png
      previewer convert photo.jpg -o thumbs --format jpeg --quality 70
      cat photo.jpg | previewer convert - -o thumbs
      previewer convert ~/Documents -o ~/thumbs -j 4 --exclude '*.tmp' --report run.jsonl
      previewer convert /srv/docs -o /srv/thumbs --broker redis://queue-host:6379/0
      previewer convert /srv/big -o /srv/thumbs --broker redis://queue-host:6379/0 --queue big
    """  # noqa: D301 - click needs a real backspace (\b) to keep the examples unwrapped
    from previewer import api
    from previewer.registry import Registry

    ctx = click.get_current_context()
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
            format=image_format,
            quality=quality,
        )
    except InvalidOptionsError as exc:
        raise click.UsageError(exc.message) from exc
    if inputs.count("-") > 1:
        raise click.UsageError("stdin (-) can be given only once")
    if out_dir == "-" and broker:
        raise click.UsageError("-o - converts here; it cannot be combined with --broker")
    if broker and freedesktop:
        raise click.UsageError("--broker and --freedesktop cannot be combined")
    mode = modes.mode_of(out_dir, broker, freedesktop)
    modes.check_flags(ctx, mode, options, jobs)
    if mode == modes.FREEDESKTOP and "-" in inputs:
        raise click.UsageError("--freedesktop thumbnails files, not stdin")
    if mode == modes.BROKER and "-" in inputs:
        raise click.UsageError("--broker sends files to workers, not stdin")
    registry = Registry()
    if mode == modes.STDOUT:
        return modes.convert_to_stdout(inputs, options, registry)

    walking = any(item != "-" and os.path.isdir(item) for item in inputs)
    if mode == modes.BROKER:
        in_flight = jobs or None  # -j N: files of each class in flight (default: its window)
    elif jobs is None:
        jobs = 0 if len(inputs) == 1 and not walking else (os.cpu_count() or 1)
    results_out = ResultPrinter(as_json=as_json, report_path=report_path)
    with results_out, progress(quiet=quiet) as shown:

        def on_result(result: api.FileResult) -> None:
            results_out(result)
            shown.advance(result)

        report: BatchReport
        if mode == modes.FREEDESKTOP:
            from previewer.freedesktop import fill_cache

            report = fill_cache(
                inputs,
                sizes=modes.cache_sizes(sizes),
                registry=registry,
                limits=options.limits,
                jobs=jobs or 0,
                include=include,
                exclude=exclude,
                hidden=hidden,
                on_result=on_result,
                on_progress=shown.total,
                password=password,
                converter=converter_name,
                keep_temp=keep_temp,
                force=force,
            )
        elif mode == modes.BROKER:
            from previewer.queue import submit_many

            report = submit_many(
                list(inputs),
                options,
                broker=broker,
                include=include,
                exclude=exclude,
                hidden=hidden,
                on_result=on_result,
                on_progress=shown.total,
                queue=queue_name,
                windows=modes.windows(in_flight),
                tenant=tenant,
                resume=walking and not force,
                journal=walking,
            )
        else:
            sources = [(sys.stdin.buffer, "stdin") if item == "-" else item for item in inputs]
            report = api.convert_many(
                sources,
                options=options,
                registry=registry,
                jobs=jobs or 0,
                include=include,
                exclude=exclude,
                hidden=hidden,
                resume=walking and not force,
                journal=walking,
                on_result=on_result,
                on_progress=shown.total,
            )
    if (len(report.results) > 1 or walking) and not quiet:
        summary(report)
        if mode == modes.BROKER:
            modes.queue_summary(report)
    return report.exit_code
