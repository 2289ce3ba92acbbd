"""How errors reach the user: the command's exit codes and the wording of messages.

:class:`ExitCode` lists the ``previewer`` command's exit statuses (each error class in
:mod:`previewer.errors` carries one). Messages and hints speak of the library's parameters
(``raise max_pixels``, ``pass password=``), never of command-line flags: the command line
rewords them with :func:`flag_words` (:func:`parameter_words` is the inverse), and
:func:`scrub_paths` replaces previewer's private temporary paths with the input's name.
:mod:`previewer.errors` re-exports every name here.
"""

from __future__ import annotations

import enum
import os
import re

__all__ = ["ExitCode", "flag_words", "parameter_words", "scrub_paths"]


class ExitCode(enum.IntEnum):
    """Process exit statuses of the ``previewer`` command."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    UNSUPPORTED = 3
    ENGINE_MISSING = 4
    BAD_INPUT = 5
    LIMIT = 6
    ENGINE_FAILED = 7
    TIMEOUT = 8
    OUTPUT = 9
    BATCH_PARTIAL = 10
    INTERRUPTED = 130
    TERMINATED = 143


_FLAGS = {
    "max_pixels": "--max-pixels",
    "max_output_pixels": "--max-output-pixels",
    "max_tile_pixels": "--max-tile-pixels",
    "max_file_size": "--max-file-size",
    "max_pages": "--max-pages",
    "max_memory": "--max-memory",
    "timeout": "--timeout",
    "pages": "--pages",
}
_PHRASES = (
    ("pass password=", "pass the password with --password"),
    ("with pages=", "with --pages"),
    ("raise timeout", "raise --timeout"),
    ("selected by pages=", "selected by --pages "),
)
_FLAG_RE = re.compile(r"(?<![\w-])--(" + "|".join(f.replace("_", "-") for f in _FLAGS) + r")\b")
_PARAM_RE = re.compile(r"(?<![\w-])(max_[a-z_]+)\b")


def parameter_words(text: str) -> str:
    """Reword command-line flags in ``text`` as the library's parameters.

    Args:
        text: A message or hint, possibly written for the command line
            (``"pass the password with --password"``, ``"raise --max-pixels"``).

    Returns:
        The text in library terms (``"pass password="``, ``"raise max_pixels"``).
    """
    for library, cli in _PHRASES:
        text = text.replace(cli, library)
    return _FLAG_RE.sub(lambda m: m.group(1).replace("-", "_"), text)


def flag_words(text: str) -> str:
    """Reword the library's parameters in a hint as command-line flags (the inverse).

    Args:
        text: A hint in library terms.

    Returns:
        The hint for the command line.
    """
    for library, cli in _PHRASES:
        text = text.replace(library, cli)

    def flag(match: re.Match[str]) -> str:
        word = match.group(1)
        return _FLAGS.get(word, word)

    return _PARAM_RE.sub(flag, text)


_PATH_END = r"[^\s'\"`:;,()\[\]<>]*"


def scrub_paths(text: str, display: str) -> str:
    """Replace previewer's private temporary paths in ``text`` with ``display``.

    Engines name the files they read, and those are copies in work directories
    (``/tmp/previewer-.../magick/tmp/magick-...``): server-side details a caller has no use for.

    Args:
        text: A message from an engine.
        display: The input's display name, put in their place.

    Returns:
        The text without temporary paths.
    """
    import tempfile

    if "previewer-" not in text and "magick-" not in text:
        return text
    roots = {tempfile.gettempdir(), "/tmp", "/var/tmp", os.environ.get("TMPDIR", "/tmp")}
    roots |= {os.path.realpath(r) for r in list(roots)}
    alternatives = "|".join(re.escape(r.rstrip("/")) for r in sorted(roots, key=len, reverse=True))
    pattern = re.compile(f"(?:{alternatives})/{_PATH_END}(?:previewer|magick)-{_PATH_END}")
    return pattern.sub(lambda _m: display, text)
