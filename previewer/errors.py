"""The exception hierarchy of previewer and the exit codes derived from it.

Every error previewer raises derives from :class:`PreviewerError`. Each class carries the process
exit code the command line uses for it (mapped in exactly one place, ``cli.main``), and each
instance names the file it is about, the converter involved and, where it helps, what the user can
do about it.
"""

from __future__ import annotations

import enum

__all__ = [
    "EncryptedError",
    "EngineError",
    "EngineTimeoutError",
    "EngineUnavailableError",
    "ExitCode",
    "InputError",
    "InvalidOptionsError",
    "LimitExceededError",
    "OutputError",
    "PreviewerError",
    "UnsupportedFormatError",
]


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


class PreviewerError(Exception):
    """Base class of every error previewer raises on purpose.

    Args:
        message: What went wrong, without the file name (it is added from ``path``).
        path: The input (or output) the error is about, as the user named it.
        converter: Name of the converter involved, if any.
        hint: What the user can do about it, shown after the message.

    Attributes:
        exit_code: The :class:`ExitCode` the command line exits with for this error.
    """

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        converter: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.converter = converter
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.converter:
            text = f"{text} [{self.converter}]"
        if self.path:
            text = f"{self.path}: {text}"
        if self.hint:
            text = f"{text}; {self.hint}"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only details survive pickling (batch workers send errors to the parent).
        return (_rebuild, (type(self), self.message, self.path, self.converter, self.hint))

    def to_dict(self) -> dict[str, object]:
        """Return the error as the ``error`` object of a JSON result line.

        Returns:
            ``{"type": ..., "exit_code": ..., "message": ...}``.
        """
        return {"type": type(self).__name__, "exit_code": int(self.exit_code), "message": str(self)}


def _rebuild(
    cls: type[PreviewerError],
    message: str,
    path: str | None,
    converter: str | None,
    hint: str | None,
) -> PreviewerError:
    return cls(message, path=path, converter=converter, hint=hint)


class InvalidOptionsError(PreviewerError):
    """Bad flags, arguments or API options (a size, a page range, a path)."""

    exit_code = ExitCode.USAGE


class UnsupportedFormatError(PreviewerError):
    """No converter claims the input's (sniffed) MIME type."""

    exit_code = ExitCode.UNSUPPORTED


class EngineUnavailableError(PreviewerError):
    """A converter for the input exists, but its engine is not installed or not usable."""

    exit_code = ExitCode.ENGINE_MISSING


class InputError(PreviewerError):
    """The input is corrupt, truncated, empty, unreadable or has no pages."""

    exit_code = ExitCode.BAD_INPUT


class EncryptedError(InputError):
    """The input is encrypted and no (correct) password was given."""


class LimitExceededError(PreviewerError):
    """A pixel, page or size budget would be exceeded."""

    exit_code = ExitCode.LIMIT


class EngineError(PreviewerError):
    """An engine failed: non-zero exit, crash, unexpected exception or no output."""

    exit_code = ExitCode.ENGINE_FAILED


class EngineTimeoutError(EngineError):
    """An engine was killed after running longer than the timeout."""

    exit_code = ExitCode.TIMEOUT


class OutputError(PreviewerError):
    """The destination cannot be written."""

    exit_code = ExitCode.OUTPUT
