"""The exception hierarchy of previewer and the exit codes derived from it.

Every error previewer raises derives from :class:`PreviewerError`. Each class carries the process
exit code the command line uses for it (mapped in exactly one place, ``cli.main``), and each
instance names the file it is about, the converter involved and, where it helps, what the user can
do about it.

Messages and hints speak of the library's parameters (``raise max_pixels``, ``pass password=``),
never of command-line flags (the command line maps them with :func:`flag_words`), and never show
previewer's private temporary paths (:func:`scrub_paths` replaces them with the input's name).
:class:`ExitCode` and those message helpers live in :mod:`previewer.reporting` and are
re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from previewer.reporting import ExitCode, flag_words, parameter_words, scrub_paths

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
    "error_class",
    "flag_words",
    "out_of_memory",
    "parameter_words",
    "scrub_paths",
]


class PreviewerError(Exception):
    """Base class of every error previewer raises on purpose.

    ``str(error)`` is ``"<path>: <message> [<converter>]; <hint>"`` (the parts that are set).
    Errors pickle with all their attributes, so an error raised in a worker or a forked child
    reaches the caller as it was raised.

    Args:
        message: What went wrong, without the file name (it is added from ``path``).
        path: The input (or output) the error is about, as the user named it.
        converter: Name of the converter involved, if any.
        hint: What the user can do about it, shown after the message.

    Attributes:
        message: What went wrong, without the file name. It speaks of the library's
            parameters, and names inputs by their display name (no temporary paths).
        path: The input (or output) as the caller named it: the path given, the ``name=``
            passed with bytes or a stream, or ``"<bytes>"``; None when no input is involved.
        converter: The converter involved (``"pdf-pymupdf"``), or None.
        hint: What the caller can do about it, in terms of parameters
            (``"raise max_pixels to accept it"``), or None.
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
        # Keyword-only details survive pickling (workers and children send errors to their
        # parent), and so does the exception it was raised from.
        cause = self.__cause__
        state = {"cause": _portable(cause)} if cause is not None else None
        return (_rebuild, (type(self), self.message, self.path, self.converter, self.hint), state)

    def __setstate__(self, state: dict[str, BaseException | None] | None) -> None:
        if state and state.get("cause") is not None:
            self.__cause__ = state["cause"]

    def summary(self) -> dict[str, object]:
        """Return the error as the ``error`` object of a JSON result line (``--json``).

        Returns:
            ``{"type": ..., "exit_code": ..., "message": str(error)}``.
        """
        return {"type": type(self).__name__, "exit_code": int(self.exit_code), "message": str(self)}

    def to_dict(self) -> dict[str, Any]:
        """Return the error's parts as a JSON-serialisable dict (see :meth:`from_dict`).

        ``bases`` (the class's :class:`PreviewerError` ancestry, most specific first) and
        ``exit_code`` let a class the receiving side does not know, say a plugin's own
        ``InputError`` subclass, come back with the same name, exit code and place in the
        hierarchy. Attributes a subclass sets beyond the base ones are kept under ``fields``
        when they are JSON scalars.

        Returns:
            ``{"type", "bases", "exit_code", "message", "path", "converter", "hint"}`` and,
            when a subclass carries more, ``"fields"``.
        """
        data: dict[str, Any] = {
            "type": type(self).__name__,
            "bases": [c.__name__ for c in type(self).__mro__ if issubclass(c, PreviewerError)],
            "exit_code": int(self.exit_code),
            "message": self.message,
            "path": self.path,
            "converter": self.converter,
            "hint": self.hint,
        }
        extra = {
            key: value
            for key, value in vars(self).items()
            if key not in _BASE_FIELDS
            and not key.startswith("_")
            and (value is None or isinstance(value, (str, int, float, bool)))
        }
        if extra:
            data["fields"] = extra
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreviewerError:
        """Rebuild an error from :meth:`to_dict` output, as the most specific known class.

        The class is found by name among the loaded :class:`PreviewerError` subclasses whose
        ancestry matches ``bases``. A class not loaded here gets a stand-in: a subclass of its
        nearest known ancestor with the same name and exit code (nothing is imported). With
        no usable ancestry the stand-in derives from :class:`EngineError`.

        Args:
            data: The dict (``type`` and ``message`` at least).

        Returns:
            The error (``from_dict(e.to_dict()).to_dict() == e.to_dict()``).
        """
        kind = error_class(data)
        error = kind(
            str(data.get("message", "")),
            path=_optional_str(data.get("path")),
            converter=_optional_str(data.get("converter")),
            hint=_optional_str(data.get("hint")),
        )
        fields = data.get("fields")
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                if str(key) not in _BASE_FIELDS and not str(key).startswith("_"):
                    setattr(error, str(key), value)
        return error


_BASE_FIELDS = frozenset({"message", "path", "converter", "hint"})

_stand_ins: dict[tuple[str, str, int], type[PreviewerError]] = {}


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _known(name: str, bases: list[str]) -> type[PreviewerError] | None:
    """The loaded PreviewerError subclass called ``name`` whose ancestry is ``bases``."""
    found: type[PreviewerError] | None = None
    pending: list[type[PreviewerError]] = [PreviewerError]
    seen: set[type[PreviewerError]] = set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.__name__ == name and current not in _stand_ins.values():
            ancestry = [c.__name__ for c in current.__mro__ if issubclass(c, PreviewerError)]
            if not bases or ancestry == bases:
                if current.__module__ == __name__:
                    return current  # ours first
                found = found or current
        pending.extend(current.__subclasses__())
    return found


def error_class(data: Mapping[str, Any]) -> type[PreviewerError]:
    """Return the class to rebuild a :meth:`PreviewerError.to_dict` dict as.

    Args:
        data: The dict; ``type``, ``bases`` and ``exit_code`` are read.

    Returns:
        The loaded class of that name and ancestry, else a cached stand-in subclass of the
        nearest known ancestor with the same name and exit code.
    """
    name = str(data.get("type", ""))
    raw_bases = data.get("bases")
    bases = [str(b) for b in raw_bases] if isinstance(raw_bases, (list, tuple)) else []
    known = _known(name, bases)
    if known is not None:
        return known
    base: type[PreviewerError] = EngineError
    for ancestor in bases[1:] if bases[:1] == [name] else bases:
        cls = _known(ancestor, [])
        if cls is not None:
            base = cls
            break
    try:
        code = ExitCode(int(data.get("exit_code", base.exit_code)))
    except (TypeError, ValueError):
        code = base.exit_code
    if not name.isidentifier():
        return base
    key = (name, base.__name__, int(code))
    if key not in _stand_ins:
        _stand_ins[key] = type(
            name, (base,), {"exit_code": code, "__module__": __name__, "__doc__": base.__doc__}
        )
    return _stand_ins[key]


def _portable(cause: BaseException) -> BaseException:
    """Return ``cause`` if it pickles, else a RuntimeError with its type and text.

    Engine exceptions can hold handles to C objects.
    """
    import pickle

    try:
        pickle.dumps(cause)
    except Exception:  # noqa: BLE001 - any reason it does not pickle
        kind = type(cause)
        return RuntimeError(f"{kind.__module__}.{kind.__qualname__}: {cause}")
    return cause


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


_MEMORY_WORDS = re.compile(
    r"out of memory|cannot allocate|memory allocation|malloc|calloc|realloc|MemoryError"
    r"|std::bad_alloc|not enough memory",
    re.IGNORECASE,
)


def out_of_memory(exc: BaseException) -> bool:
    """Tell whether ``exc`` (or an exception it was raised from) is an allocation failure.

    Under an address-space cap engines report running out of memory in their own ways:
    Python's ``MemoryError`` (Pillow, NumPy for psd-tools), MuPDF's ``FzErrorSystem`` with a
    ``malloc ... failed`` message, which converters may already have re-raised as a
    "corrupt input" error.

    Args:
        exc: The exception.

    Returns:
        True when it is about memory.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return True
        if isinstance(current, LimitExceededError):
            return current.message.startswith("ran out of memory")
        if type(current).__name__ in ("FzErrorSystem", "FzErrorBase") or not isinstance(
            current, PreviewerError
        ):
            if _MEMORY_WORDS.search(str(current)):
                return True
        elif _MEMORY_WORDS.search(current.message):
            return True
        current = current.__cause__ or current.__context__
    return False
