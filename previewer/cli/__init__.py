"""The ``previewer`` command: a thin click layer over :mod:`previewer.api` and the batch engine.

stdout carries only results (output paths one per line, PNG bytes with ``-o -``, or one JSON
object per input with ``--json``); messages, warnings and progress go to stderr. Exceptions are
turned into exit codes in exactly one place, :func:`main`.

Modules: :mod:`~previewer.cli.group` (the group, logging, lazily imported commands),
:mod:`~previewer.cli.convert` and :mod:`~previewer.cli.modes` (``convert``; which executor,
which flags it refuses), :mod:`~previewer.cli.describe` (``info``, ``converters``),
:mod:`~previewer.cli.messages` (stderr messages, results on stdout, progress),
:mod:`~previewer.cli.limits` (the limit options), :mod:`~previewer.cli.main` (exit codes).
"""

from __future__ import annotations

from previewer.cli import convert, describe  # noqa: F401 - imported for their commands
from previewer.cli.group import LAZY_COMMANDS, cli
from previewer.cli.main import main
from previewer.cli.messages import _Console, _err  # noqa: F401 - hosts print through the bar

__all__ = ["LAZY_COMMANDS", "cli", "main"]
