"""Which executor ``previewer convert`` uses, and the flags each one refuses.

``convert`` runs in one of four modes: ``-o -`` (one image on stdout), ``--freedesktop`` (the
desktop's thumbnail cache), ``--broker`` (queue workers), or locally (in this process, or in
``-j N`` worker processes). Every flag either works in a mode or is refused there with a usage
error naming it (exit 2): nothing given on the command line is silently ignored. Values from
``PREVIEWER_*`` environment variables are standing configuration and apply where they mean
something.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click
from click.core import ParameterSource

from previewer.options import Options
from previewer.reporting import ExitCode

__all__ = ["REFUSED", "cache_sizes", "check_flags", "convert_to_stdout", "mode_of", "given"]

STDOUT, FREEDESKTOP, BROKER, LOCAL = "-o -", "--freedesktop", "--broker", "local"

REFUSED: dict[str, dict[str, str]] = {
    STDOUT: {
        "as_json": "stdout carries the image data",
        "report_path": "one image is written, there is no batch to report",
        "jobs": "one input converts in this process",
        "include": "there is no directory to walk",
        "exclude": "there is no directory to walk",
        "hidden": "there is no directory to walk",
        "force": "nothing is written to skip",
        "keep_temp": "the page is rendered without a work directory to keep",
        "freedesktop": "the thumbnail cache is written to, not stdout",
        "queue_name": "it converts here",
        "tenant": "it converts here",
    },
    FREEDESKTOP: {
        "out_dir": "thumbnails go to the thumbnail cache ($XDG_CACHE_HOME/thumbnails)",
        "upscale": "the thumbnail cache keeps small images at their own size",
        "image_format": "the thumbnail cache holds PNG files (freedesktop.org specification)",
        "quality": "the thumbnail cache holds PNG files (freedesktop.org specification)",
        "queue_name": "the thumbnail cache is filled here",
        "tenant": "the thumbnail cache is filled here",
    },
    BROKER: {
        "max_memory": "queue workers bound memory with 'previewer worker --max-memory-per-child'",
    },
    LOCAL: {
        "queue_name": "it needs --broker",
        "tenant": "it needs --broker",
    },
}
"""Per mode, the flags it refuses (given on the command line) and why."""


def mode_of(out_dir: str, broker: str | None, freedesktop: bool) -> str:
    """Return the mode a ``convert`` command line asks for."""
    if out_dir == "-":
        return STDOUT
    if freedesktop:
        return FREEDESKTOP
    if broker:
        return BROKER
    return LOCAL


def given(ctx: click.Context, name: str) -> bool:
    """Whether parameter ``name`` was given on the command line."""
    return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE


def _flag(ctx: click.Context, name: str) -> str:
    for param in ctx.command.params:
        if param.name == name:
            return max(param.opts, key=len)
    return name  # pragma: no cover - a wiring mistake


def check_flags(ctx: click.Context, mode: str, options: Options, jobs: int | None) -> None:
    """Refuse the flags ``mode`` cannot honour.

    Args:
        ctx: The ``convert`` command's context.
        mode: From :func:`mode_of`.
        options: The options built from the flags.
        jobs: The ``--jobs`` value.

    Raises:
        click.UsageError: Naming the first flag that does not apply.
    """
    where = "locally" if mode == LOCAL else f"with {mode}"
    for name, why in REFUSED[mode].items():
        if given(ctx, name):
            raise click.UsageError(f"{_flag(ctx, name)} cannot be used {where}: {why}")
    if mode == FREEDESKTOP and options.pages.ranges != ((1, 1),):
        raise click.UsageError(
            f"--pages cannot be used with --freedesktop: the thumbnail cache holds page 1 "
            f"(not {options.pages.text})"
        )
    if mode == BROKER and jobs == 0 and given(ctx, "jobs"):
        raise click.UsageError(
            "--jobs 0 cannot be used with --broker: it converts in this process; with --broker "
            "-j N bounds the files of each class queued or running at once"
        )


_CACHE_SIZES = {"128": "normal", "256": "large", "512": "x-large", "1024": "xx-large"}


def cache_sizes(sizes: Sequence[str]) -> tuple[str, ...]:
    """Map -s values to the thumbnail cache's size directories."""
    if tuple(sizes) == ("256",):  # the default -s: fill the two sizes file managers ask for
        return ("normal", "large")
    try:
        return tuple(dict.fromkeys(_CACHE_SIZES[str(size).strip()] for size in sizes))
    except KeyError as exc:
        raise click.UsageError(
            f"--freedesktop sizes are 128, 256, 512 and 1024, not {exc.args[0]}"
        ) from None


def convert_to_stdout(inputs: Sequence[str], options: Options, registry: Any) -> int:
    """Write the one image of ``-o -`` to stdout, in the format asked for."""
    from previewer import api, output

    if len(inputs) != 1 or len(options.sizes) != 1 or not options.pages.is_single:
        raise click.UsageError("-o - writes one image: give one input, one size and one page")
    if sys.stdout.isatty():
        raise click.UsageError("refusing to write image data to a terminal; redirect stdout")
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
    output.check_encodable(options.format, image.size, options.limits.max_tile_pixels)
    data = output.encode_image(image, options.format, options.quality)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return int(ExitCode.OK)


def windows(jobs: int | None) -> dict[str, int] | None:
    """The submitter's per-class windows for ``-j N`` with ``--broker`` (None: the defaults)."""
    if not jobs:
        return None
    from previewer.queue.cost import CLASSES

    return dict.fromkeys(CLASSES, jobs)


def queue_summary(report: Any) -> None:
    """One stderr line per class of a ``--broker`` run: files, and their waits in the queue."""
    from previewer.cli.messages import err
    from previewer.queue.routing import percentile

    waits: dict[str, list[float]] = {}
    for result in report.results:
        info = result.queue or {}
        if "class" in info:
            waits.setdefault(str(info["class"]), [])
            if isinstance(info.get("wait"), (int, float)):
                waits[str(info["class"])].append(float(info["wait"]))
    for cls, values in sorted(waits.items()):
        shown = (
            f"wait p50 {percentile(values, 0.5):.2f} s, p95 {percentile(values, 0.95):.2f} s, "
            f"max {max(values):.2f} s"
            if values
            else "no wait recorded"
        )
        err(f"{cls}: {len(values)} file(s) started, {shown}")
