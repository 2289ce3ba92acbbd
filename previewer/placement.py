"""Where one conversion runs: in a child process under its limits, or here for a warm engine.

:func:`under_limits` runs a function of :mod:`previewer.pipeline` for one input where the
input's :class:`~previewer.options.Limits` apply: in a child process
(:func:`previewer.limited.run_limited`), so a hang is stopped at the timeout, an allocation
beyond ``max_memory`` fails and a crash fails only that input. A converter whose engine is
already an external process kept warm between conversions (LibreOffice, ``warm_engine``) runs
in this process instead, its engine under the timeout. Before forking, it peeks at which
converter the input will go to (without probing availability), so that from a converter's
second conversion on its engine is imported here once and inherited by every child.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

from previewer import limited
from previewer.errors import PreviewerError
from previewer.options import Options
from previewer.registry import Registry
from previewer.sources import Source, read_chunks

__all__ = ["display_name", "under_limits"]

T = TypeVar("T")


def display_name(source: Source, name: str | None) -> str:
    """The input as the user named it, for messages: the path given, ``name``, or ``<bytes>``.

    Args:
        source: The input.
        name: The name given with bytes or a stream.

    Returns:
        The display name.
    """
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return name or "<bytes>"


def _target(source: Source, opts: Options, registry: Registry, name: str | None) -> Any:
    """The registry entry of the converter ``source`` will go to, or None when unsure.

    Only sniffs and ranks, without probing availability: the child reports any error.
    """
    from previewer import mime as _mime

    try:
        if isinstance(source, (str, os.PathLike)):
            kind = _mime.sniff(source, name)
        elif isinstance(source, (bytes, bytearray, memoryview)):
            head = bytes(source[: _mime.HEAD_BYTES])
            kind = _mime.sniff_bytes(head, name or "")
            if kind == "application/zip":
                import io

                kind = _mime._zip_type(io.BytesIO(source))  # type: ignore[arg-type]
        else:
            return None
        if opts.converter is not None:
            entry = registry.get(opts.converter)
        else:
            # The converter resolve() would try first, without probing every candidate's
            # availability (that would import every candidate's engine here).
            ranked = sorted(
                ((e.handles(kind), e) for e in registry.entries),
                key=lambda c: (-c[0], -c[1].priority, c[1].name),
            )
            if not ranked or not ranked[0][0]:
                return None
            entry = ranked[0][1]
    except (PreviewerError, OSError, ValueError):
        return None  # the child reports it
    return entry


_converted_once: set[str] = set()
"""Converters this process has run a single conversion with (see :func:`_warm`)."""


def _warm(registry: Registry, entry: Any) -> None:
    """From its second conversion on, import ``entry``'s converter and engine in this process.

    A forked child inherits them: otherwise every conversion of a long-lived caller (a web
    service converting uploads one by one) would import its engine again in a fresh child
    (PyMuPDF: over 100 ms a call). A one-off run (the CLI) converts once and leaves the
    imports to its child, where they cost no copy-on-write faults.
    """
    if entry.name not in _converted_once:
        _converted_once.add(entry.name)
        return
    with contextlib.suppress(Exception):
        registry.availability(entry)
        import previewer.output
        import previewer.rendering  # noqa: F401


def under_limits(
    func: Callable[[Source, Options, Registry, str | None], T],
    source: Source,
    opts: Options,
    registry: Registry,
    name: str | None,
    *,
    writes: bool = False,
) -> tuple[T, list[str]]:
    """Run one conversion where its limits apply; return its value and the engine messages.

    The conversion runs in a child process under ``opts.limits`` (see
    :func:`previewer.limited.run_limited`): a hang is stopped at the timeout, an allocation
    beyond ``max_memory`` fails, a crash fails only this input. Inputs for a converter with a
    warm external engine (``warm_engine``) run in this process, their engine under the
    timeout. Streams are read here (up to the size limit), so the child never reads the
    caller's file objects.

    Args:
        func: A module-level function ``(source, options, registry, name)`` (it must pickle
            when the child comes from the fork server).
        source: The input.
        opts: The options; ``opts.limits`` bound the child.
        registry: The converters.
        name: File name for outputs and messages.
        writes: ``func`` writes previews into ``opts.out_dir``: partial files of a killed
            child are removed.

    Returns:
        ``func``'s value and the engine messages captured in the child (also logged to
        ``previewer.engine``).

    Raises:
        PreviewerError: What ``func`` raised, in the library's form (see
            :func:`previewer.limited.library_error`), or the child's timeout, crash or
            memory exhaustion.
    """
    display = display_name(source, name)
    entry = _target(source, opts, registry, name)
    # A converter whose engine is an external, warm process (LibreOffice's, ``warm_engine``)
    # keeps it running between conversions in the converting process, under the timeout and
    # in its own process group; a throw-away child would start a new engine every time.
    if not limited.ISOLATE or (
        entry is not None and entry.converter and entry.converter.warm_engine
    ):
        try:
            return func(source, opts, registry, name), []
        except Exception as exc:
            error = limited.library_error(exc, display, opts.limits)
            if error is exc:
                raise
            raise error from exc
    if entry is not None:
        _warm(registry, entry)
    if not isinstance(source, (str, os.PathLike, bytes)):
        if isinstance(source, (bytearray, memoryview)):
            source = bytes(source)
        elif hasattr(source, "read"):
            source = _read_stream(source, opts.limits.max_file_size, display)
    name_out = None
    if writes:
        name_out = name or (os.path.basename(display) if isinstance(source, str) else "input")
    value, messages = limited.run_limited(
        func,
        (source, opts, registry, name),
        limits=opts.limits,
        display=display,
        out_dir=opts.out_dir if writes else None,
        name=name_out,
    )
    limited.report_messages(display, messages)
    return value, messages


def _read_stream(stream: Any, limit: int, display: str) -> bytes:
    """Read a binary stream into memory, failing as soon as it is over ``limit`` bytes.

    The child converting it then gets the bytes: it never reads the caller's file objects.
    """
    return b"".join(read_chunks(stream, limit, display, "max_file_size"))
