"""The converter contract: what a converter plugin implements and what it is given.

Built-in converters (in ``converters/``) and third-party plugins use exactly this surface plus
:mod:`previewer.errors`. A plugin package declares its converter class under the entry-point group
:data:`ENTRY_POINT_GROUP`::

    [project.entry-points."previewer.converters"]
    myformat = "mypackage.module:MyConverter"

The class is instantiated without arguments. See the README section "Writing a converter".

Required and optional members are declared on :class:`Converter` and :class:`Document`; the
optional ones have defaults in :class:`BaseConverter` and :class:`BaseDocument`. A plugin that
subclasses neither still works: the registry gives its converter and documents the defaults
when it loads them, so previewer never probes for a member.

Converters that keep an engine running between conversions start it with
:func:`start_helper` (same isolation, process-group and parent-death rules as
:meth:`ConvertContext.run`) and stop it from a hook given to :func:`register_shutdown`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self, runtime_checkable

from previewer.budgets import Limits
from previewer.geometry import Box

if TYPE_CHECKING:
    from PIL import Image

    from previewer.process import RunResult
    from previewer.programs import HelperProcess, start_helper

__all__ = [
    "ENTRY_POINT_GROUP",
    "Availability",
    "BaseConverter",
    "BaseDocument",
    "Box",
    "ConvertContext",
    "Converter",
    "Document",
    "HelperProcess",
    "Limits",
    "RunResult",
    "register_shutdown",
    "run_shutdown_hooks",
    "start_helper",
]

ENTRY_POINT_GROUP = "previewer.converters"
"""Entry-point group third-party converters register under (contract version 1)."""


@dataclass(frozen=True)
class Availability:
    """Whether a converter's engine can be used here.

    Attributes:
        ok: True when the converter can run.
        engine: Human name of the engine ("PyMuPDF", "LibreOffice").
        version: Engine version, when known.
        reason: Why it cannot run, with an install hint (empty when ``ok``).
    """

    ok: bool
    engine: str
    version: str | None = None
    reason: str = ""


@runtime_checkable
class Document(Protocol):
    """An opened input. A context manager: leaving it releases every engine handle.

    Attributes:
        page_count: Number of pages (frames for multi-page images), at least 1.
        units: ``"pt"`` for vector sources (rendered at any requested size) or ``"px"`` for
            raster sources (never enlarged unless the user asks for it).
        page_count_known: Optional (default True). False when the file's own page count is
            damaged: ``page_count`` then counts the pages that could be found, ``previewer
            info`` reports the page count as unknown, and ``--pages all`` renders the pages
            found.

    Optional methods (defaults in :class:`BaseDocument`): :meth:`metadata` (default: no facts),
    :meth:`render_png` (default: no fast path) and :meth:`text` (default: no text layer).
    """

    page_count: int
    units: Literal["pt", "px"]
    page_count_known: bool

    def page_size(self, index: int) -> tuple[float, float]:
        """Return the displayed size of page ``index`` (0-based) in native units.

        "Displayed" means after page rotation or EXIF orientation.
        """
        ...

    def render(self, index: int, *, scale: float, clip: Box | None = None) -> Image.Image:
        """Render page ``index`` (0-based) at ``scale`` (output pixels per native unit).

        Args:
            index: 0-based page index.
            scale: Output pixels per native unit; the result is ``page_size * scale`` rounded
                (off by at most one pixel per edge).
            clip: Render only this part of the page, in native units (before scaling).

        Returns:
            A Pillow image in any mode; an ICC profile left in ``image.info["icc_profile"]``
            is honoured when converting to sRGB.
        """
        ...

    def render_png(self, index: int, *, size: tuple[int, int]) -> bytes | None:
        """Optional fast path: encode page ``index`` straight to a PNG of exactly ``size``.

        Used for a single output size that fits one tile; previewer cleans the PNG (only the
        image chunks and an sRGB chunk are kept) instead of decoding and re-encoding it.

        Args:
            index: 0-based page index.
            size: The exact output size in pixels.

        Returns:
            8-bit RGB or RGBA PNG bytes of exactly ``size``, or None to fall back to
            :meth:`render`.
        """
        ...

    def metadata(self) -> dict[str, Any]:
        """Return format-specific facts for ``previewer info`` (may be empty)."""
        ...

    def text(self, *, max_pages: int, max_chars: int) -> str | None:
        """Optional: return the document's text layer (``previewer info --metadata text``).

        Args:
            max_pages: Read at most this many pages, from the first.
            max_chars: Stop once this many characters are read (more may be returned; the
                caller truncates).

        Returns:
            The text, pages separated by form feeds (U+000C), or None when the document
            has no text layer this converter can read.
        """
        ...

    def close(self) -> None:
        """Release the engine's handles; safe to call twice."""
        ...

    def __enter__(self) -> Document: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BaseDocument:
    """Optional base class for documents: the defaults of :class:`Document`'s optional members.

    Subclasses implement ``page_count``, ``units``, ``page_size()``, ``render()`` and
    ``close()``; ``with`` closes them.

    Attributes:
        page_count_known: False when ``page_count`` counts the pages found in a document whose
            own page count is damaged.
    """

    page_count_known: bool = True

    def render_png(self, index: int, *, size: tuple[int, int]) -> bytes | None:
        """No PNG fast path: previewer renders with ``render()``."""
        return None

    def metadata(self) -> dict[str, Any]:
        """No format-specific facts."""
        return {}

    def text(self, *, max_pages: int, max_chars: int) -> str | None:
        """No text layer."""
        return None

    def close(self) -> None:
        """Release the engine's handles; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@runtime_checkable
class Converter(Protocol):
    """A converter plugin: declares what it handles and opens documents of those types.

    Attributes:
        name: Unique name, ``family-engine`` (``"pdf-pymupdf"``).
        mime_types: Exact MIME types handled; ``"image/*"`` style wildcards allowed.
        priority: Higher wins among available candidates for the same type.

    Optional members (defaults in :class:`BaseConverter`):

    Attributes:
        fallback_mime_types: Types it does not claim but can take over when the converter
            chosen for them fails on a file (see :attr:`ConvertContext.fallback_for`).
            previewer retries with it only for failures about the file's content or the engine
            (:class:`~previewer.errors.InputError`,
            :class:`~previewer.errors.UnsupportedFormatError`,
            :class:`~previewer.errors.EngineError`), never for encrypted files, exceeded limits
            or timeouts, nor when the user forced a converter. Default: none.
        sandboxed: Reported by ``previewer converters``: True when the engine runs as a
            separate program through :meth:`ConvertContext.run` or :func:`start_helper`
            (isolated by :mod:`previewer.sandbox`), False when it is a library running in
            previewer's process, None (the default) when the converter does not say.
        warm_engine: True when the engine is a long-lived external process kept warm between
            conversions under the timeout (:func:`start_helper`): single conversions of its
            types then run in the calling process instead of a throw-away child, so the engine
            survives from one call to the next. Default False.
    """

    name: ClassVar[str]
    mime_types: ClassVar[frozenset[str]]
    priority: ClassVar[int]
    fallback_mime_types: ClassVar[frozenset[str]]
    sandboxed: ClassVar[bool | None]
    warm_engine: ClassVar[bool]

    def availability(self) -> Availability:
        """Report whether the engine can be used; cheap, cached, never raises."""
        ...

    def open(self, source: Path, ctx: ConvertContext) -> Document:
        """Open ``source`` and return a document.

        Raises:
            previewer.errors.PreviewerError: A subclass saying what went wrong (engine errors
                are translated at this boundary).
        """
        ...


class BaseConverter:
    """Optional base class for converters: the defaults of :class:`Converter`'s optional members.

    Subclasses declare ``name``, ``mime_types`` and ``priority`` and implement
    ``availability()`` and ``open()``.
    """

    fallback_mime_types: ClassVar[frozenset[str]] = frozenset()
    sandboxed: ClassVar[bool | None] = None
    warm_engine: ClassVar[bool] = False


@dataclass
class ConvertContext:
    """What a converter is given for one conversion.

    Attributes:
        limits: The resource budgets in force.
        mime: The sniffed MIME type of the input.
        password: Password for encrypted documents, if the user gave one.
        log: Logger to report through (``previewer.converter.<name>``).
        max_page: The highest page number this conversion will render, or None when every
            page may be needed (``--pages all``, open ranges, ``previewer info``). A converter
            whose engine can stop early (LibreOffice exporting a page range) may produce only
            the first ``max_page`` pages; ``page_count`` then counts those pages only.
        fallback_for: When set, this converter was called as the fallback of the named
            converter, which failed on this file. The converter must then be strict: refuse
            damaged data (any warning of its engine about corrupt or truncated input) instead
            of rendering what it can, so a damaged file still fails with the first error.
    """

    limits: Limits
    mime: str
    password: str | None = field(default=None, repr=False)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("previewer.converter"))
    max_page: int | None = None
    fallback_for: str | None = None
    _workdir: Callable[[], Path] | None = field(default=None, repr=False)
    _run: Callable[..., RunResult] | None = field(default=None, repr=False)
    _delegate: Callable[[Path, str], Document] | None = field(default=None, repr=False)

    @property
    def workdir(self) -> Path:
        """A private, empty directory for intermediate files, removed after the conversion.

        It is created on first use, so converters that need none cost nothing.
        """
        if self._workdir is None:
            raise RuntimeError("this context has no work directory")
        return self._workdir()

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        expect_output: Path | None = None,
        read: Sequence[Path] = (),
        isolate: bool = True,
    ) -> RunResult:
        """Run an external program under the subprocess discipline of previewer.

        The program gets its own process group, closed stdin, captured output and the
        configured timeout; on expiry the whole group is killed, and it dies with previewer.
        It runs isolated (see :mod:`previewer.sandbox`): no network at all, and where
        bubblewrap works it sees only ``/usr``, fonts and engine configuration, a private
        ``/tmp``, its working directory (writable) and the paths in ``read``. Name the input
        file in ``read``.

        Args:
            argv: Program (absolute path) and arguments; never a shell string.
            timeout: Seconds before the group is killed (default: ``limits.timeout``).
            cwd: Working directory (default: ``workdir``).
            env: Environment (default: a minimal one with ``HOME`` and ``TMPDIR`` in ``workdir``).
            expect_output: A file that must exist and be non-empty afterwards.
            read: Files and directories outside ``/usr`` the program needs to read.
            isolate: False runs the program with the host's network and files; only for
                programs that never parse the input (a version probe).

        Returns:
            The program's result.

        Raises:
            previewer.errors.EngineError: Non-zero exit or missing output.
            previewer.errors.EngineTimeoutError: Killed after the timeout.
            previewer.errors.EngineUnavailableError: The program cannot be isolated here
                (and ``limits.allow_unisolated`` is false).
        """
        run = self._run
        if run is None:
            from previewer import programs

            run = programs.run
        return run(
            argv,
            timeout=self.limits.timeout if timeout is None else timeout,
            cwd=cwd or self.workdir,
            env=env,
            expect_output=expect_output,
            isolate=isolate,
            read=tuple(read),
            allow_unisolated=self.limits.allow_unisolated,
        )

    def delegate(self, path: Path, mime: str) -> Document:
        """Open an intermediate file with whichever converter handles ``mime``.

        This is how a converter that produces, say, a PDF hands it on without importing the
        PDF converter.

        Args:
            path: The intermediate file (normally inside ``workdir``).
            mime: Its MIME type.

        Returns:
            The opened document; the caller closes it.
        """
        if self._delegate is None:
            raise RuntimeError("this context cannot delegate")
        return self._delegate(path, mime)


def __getattr__(name: str) -> Any:
    # The members that run programs are imported on first use, so that subprocess and the
    # sandbox stay off the start-up of conversions that run none (PEP 562).
    if name == "RunResult":
        from previewer.process import RunResult

        return RunResult
    if name in ("HelperProcess", "start_helper"):
        from previewer import programs

        return getattr(programs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_shutdown_hooks: list[Callable[[], None]] = []


def register_shutdown(hook: Callable[[], None]) -> None:
    """Have ``previewer.shutdown()`` and interpreter exit call ``hook``.

    For converters that keep engines running (see :func:`start_helper`).

    Args:
        hook: Stops the converter's engines and removes their files; must not raise.
    """
    if not _shutdown_hooks:
        import atexit

        atexit.register(run_shutdown_hooks)
    if hook not in _shutdown_hooks:
        _shutdown_hooks.append(hook)


def run_shutdown_hooks() -> None:
    """Call every hook given to :func:`register_shutdown` (what ``previewer.shutdown()`` does)."""
    for hook in list(_shutdown_hooks):
        try:
            hook()
        except Exception:  # noqa: BLE001 - one converter's failure must not stop the others
            logging.getLogger(__name__).exception("shutting down %r failed", hook)
