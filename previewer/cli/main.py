"""The command line's entry point: :func:`main` turns every outcome into the exit status."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from previewer.cli.group import State as _State
from previewer.cli.group import cli
from previewer.cli.messages import _err, _report_error
from previewer.errors import PreviewerError
from previewer.reporting import ExitCode

__all__ = ["main"]


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
