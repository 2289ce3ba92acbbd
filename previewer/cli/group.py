"""The ``previewer`` click group: options every command shares, logging, lazy commands."""

from __future__ import annotations

import functools
import logging

import click

from previewer.cli.messages import _MessageHandler

__all__ = ["CONTEXT", "LAZY_COMMANDS", "State", "cli"]

log = logging.getLogger("previewer")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _version() -> str:
    from previewer import __version__

    return __version__


class _State:
    debug = False


LAZY_COMMANDS: dict[str, str] = {
    "desktop": "previewer.thumbnailer:desktop",
    "serve": "previewer.serve_cli:serve",
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
        import pkgutil

        loaded = pkgutil.resolve_name(LAZY_COMMANDS[cmd_name])
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


State = _State
