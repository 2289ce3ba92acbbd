"""Inputs: materialising bytes and streams, checking the file, sniffing it, opening a document.

The steps :mod:`previewer.pipeline` takes an input through, each on its own:

- :func:`open_input` turns a path, bytes or a stream into a checked regular file (exists,
  regular, readable, not empty, within the size limit), copying bytes and streams to a
  temporary file that is removed afterwards (it and the other materialising steps live in
  :mod:`previewer.sources` and are re-exported here);
- :func:`sniff` finds its MIME type from its content (and name);
- :func:`open_document` opens it with a given converter, in a private work directory (removed
  afterwards), and closes the document on exit;
- :func:`guard` translates any foreign exception from a converter into a
  :class:`~previewer.errors.PreviewerError` naming the input and the converter.

Which converter opens the file, and which one is tried when it fails, is the pipeline's
decision; nothing here fills in results.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from previewer import limits as _limits
from previewer import mime as _mime
from previewer.errors import EngineError, InputError, LimitExceededError, PreviewerError
from previewer.options import Options
from previewer.plugin import ConvertContext, Converter, Document
from previewer.registry import Registry
from previewer.sources import Input, Source, WalkedFile, open_input, output_stem, spool

if TYPE_CHECKING:
    from previewer import tempdirs

__all__ = [
    "Input",
    "Opened",
    "Source",
    "WalkedFile",
    "guard",
    "open_document",
    "open_input",
    "output_stem",
    "sniff",
    "spool",
]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def guard(display: str, converter: str | None) -> Iterator[None]:
    """Translate foreign exceptions from converters into ours and name the input in errors."""
    try:
        yield
    except PreviewerError as exc:
        if exc.path is None:
            exc.path = display
        if exc.converter is None:
            exc.converter = converter
        raise
    except MemoryError as exc:
        raise LimitExceededError(
            "ran out of memory", path=display, converter=converter, hint="lower the size"
        ) from exc
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except Exception as exc:
        raise EngineError(
            f"unexpected {type(exc).__name__}: {exc}", path=display, converter=converter
        ) from exc


def sniff(inp: Input) -> str:
    """Return the MIME type of ``inp``'s content (its name breaks ties).

    Args:
        inp: The input.

    Returns:
        The MIME type.

    Raises:
        InputError: If the file cannot be read.
    """
    try:
        return _mime.sniff(inp.path, inp.name)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=inp.display) from exc


@dataclass
class Opened:
    """An open input: the converter's document and what was learnt on the way there.

    Attributes:
        doc: The converter's open document.
        mime: The sniffed MIME type.
        converter: The converter that opened it.
        display: The input as the user named it (for messages).
        name: The file name used for outputs.
        path: The file read (a temporary copy for bytes and streams).
    """

    doc: Document
    mime: str
    converter: Converter
    display: str
    name: str
    path: Path


@contextlib.contextmanager
def open_document(
    conv: Converter,
    inp: Input,
    mime: str,
    options: Options,
    registry: Registry,
    *,
    page_hint: bool = False,
    fallback_for: str | None = None,
) -> Iterator[Opened]:
    """Open ``inp`` with ``conv`` in a private work directory; close and clean up on exit.

    Args:
        conv: The converter.
        inp: The input.
        mime: Its sniffed MIME type.
        options: The options (limits, password, keep_temp, pages).
        registry: The converters an intermediate file may be handed to
            (``ConvertContext.delegate``).
        page_hint: Tell the converter the highest page that will be rendered
            (``ConvertContext.max_page``), so it may skip producing the rest.
        fallback_for: The converter that failed on this file, when ``conv`` is its fallback.

    Yields:
        The opened input (a document with at least one page).

    Raises:
        PreviewerError: A subclass naming the input and the converter.
    """
    cname = conv.name
    workdir = _WorkDir("previewer-")
    if options.keep_temp:
        workdir()  # asked for: make it exist even if the converter needs none
    try:
        ctx = ConvertContext(
            limits=options.limits,
            mime=mime,
            password=options.password,
            log=logging.getLogger(f"previewer.converter.{cname}"),
            max_page=options.pages.last if page_hint else None,
            fallback_for=fallback_for,
            _workdir=workdir,
            _run=_runner(),
            _delegate=_delegator(registry, options, workdir),
        )
        with guard(inp.display, cname):
            doc = conv.open(inp.path, ctx)
        try:
            with guard(inp.display, cname):
                count = doc.page_count
                if count < 1:
                    raise InputError("document has no pages")
            yield Opened(doc, mime, conv, inp.display, inp.name, inp.path)
        finally:
            with contextlib.suppress(Exception):
                doc.close()
    finally:
        workdir.cleanup(keep=options.keep_temp)


class _WorkDir:
    """A private temporary directory, created on first use (inside ``parent`` if given)."""

    def __init__(self, prefix: str, parent: _WorkDir | None = None) -> None:
        self._prefix = prefix
        self._parent = parent
        self._held: tempdirs.Held | None = None

    def __call__(self) -> Path:
        if self._held is None:
            from previewer import tempdirs

            base = str(self._parent()) if self._parent is not None else None
            self._held = tempdirs.make(self._prefix, base)
        return self._held.path

    def cleanup(self, *, keep: bool) -> None:
        if self._held is None:
            return
        if keep:
            log.warning("keeping work directory %s", self._held.path)
        else:
            import shutil

            shutil.rmtree(self._held.path, ignore_errors=True)
        self._held.release(keep=keep)
        self._held = None


def _runner() -> Callable[..., Any]:
    def run(argv: Sequence[str], **kwargs: Any) -> Any:
        from previewer import programs

        return programs.run(argv, **kwargs)

    return run


def _delegator(
    registry: Registry, options: Options, workdir: _WorkDir
) -> Callable[[Path, str], Document]:
    def delegate(path: Path, mime: str) -> Document:
        conv = registry.resolve(mime)
        _limits.prepare(options.limits, mime)
        sub = _WorkDir("delegate-", parent=workdir)
        ctx = ConvertContext(
            _workdir=sub,
            limits=options.limits,
            mime=mime,
            password=None,
            log=logging.getLogger(f"previewer.converter.{conv.name}"),
            _run=_runner(),
            _delegate=_delegator(registry, options, sub),
        )
        return conv.open(path, ctx)

    return delegate
