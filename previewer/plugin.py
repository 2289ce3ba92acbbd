"""The converter contract: what a converter plugin implements and what it is given.

Built-in converters (in ``converters/``) and third-party plugins use exactly this surface plus
:mod:`previewer.errors`. A plugin package declares its converter class under the entry-point group
:data:`ENTRY_POINT_GROUP`::

    [project.entry-points."previewer.converters"]
    myformat = "mypackage.module:MyConverter"

The class is instantiated without arguments. See the README section "Writing a converter".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self, runtime_checkable

from previewer.geometry import Box
from previewer.options import Limits

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "ENTRY_POINT_GROUP",
    "Availability",
    "BaseDocument",
    "Box",
    "ConvertContext",
    "Converter",
    "Document",
    "Limits",
    "RunResult",
    "register_shutdown",
    "run_shutdown_hooks",
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


@dataclass(frozen=True)
class RunResult:
    """What an external program run through :meth:`ConvertContext.run` produced.

    Attributes:
        argv: The command that ran.
        returncode: Its exit status (always 0: non-zero raises ``EngineError``).
        stdout: Captured standard output.
        stderr: Captured standard error.
    """

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


@runtime_checkable
class Document(Protocol):
    """An opened input. A context manager: leaving it releases every engine handle.

    Attributes:
        page_count: Number of pages (frames for multi-page images), at least 1.
        units: ``"pt"`` for vector sources (rendered at any requested size) or ``"px"`` for
            raster sources (never enlarged unless the user asks for it).

    A document may also set ``page_count_known = False`` (optional; True when absent) when the
    file's own page count is damaged: ``page_count`` then counts the pages that could be found,
    ``previewer info`` reports the page count as unknown, and ``--pages all`` renders the pages
    found.
    """

    page_count: int
    units: Literal["pt", "px"]

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

    def metadata(self) -> dict[str, Any]:
        """Return format-specific facts for ``previewer info`` (may be empty)."""
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
    """Optional base class for documents: the context-manager half of :class:`Document`.

    Subclasses implement ``close()`` (and the rest of the protocol); ``with`` closes them.

    Attributes:
        page_count_known: False when ``page_count`` counts the pages found in a document whose
            own page count is damaged.
    """

    page_count_known: bool = True

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

    A converter may also declare ``fallback_mime_types: ClassVar[frozenset[str]]``: types it
    does not claim but can take over when the converter chosen for them fails on a file (see
    :attr:`ConvertContext.fallback_for`). previewer retries with it only for failures about the
    file's content or the engine (:class:`~previewer.errors.InputError`,
    :class:`~previewer.errors.UnsupportedFormatError`, :class:`~previewer.errors.EngineError`),
    never for encrypted files, exceeded limits or timeouts, nor when the user forced a converter.

    And ``sandboxed: ClassVar[bool]``, reported by ``previewer converters``: True when the
    engine runs as a separate program through :meth:`ConvertContext.run` (isolated by
    :mod:`previewer.sandbox`), False when it is a library running in previewer's process.
    """

    name: ClassVar[str]
    mime_types: ClassVar[frozenset[str]]
    priority: ClassVar[int]

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
        if self._run is None:
            raise RuntimeError("this context cannot run programs")
        return self._run(
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


_shutdown_hooks: list[Callable[[], None]] = []


def register_shutdown(hook: Callable[[], None]) -> None:
    """Have ``previewer.shutdown()`` call ``hook``: for converters that keep engines running.

    Args:
        hook: Stops the converter's engines and removes their files; must not raise.
    """
    if hook not in _shutdown_hooks:
        _shutdown_hooks.append(hook)


def run_shutdown_hooks() -> None:
    """Call every hook given to :func:`register_shutdown` (what ``previewer.shutdown()`` does)."""
    for hook in list(_shutdown_hooks):
        try:
            hook()
        except Exception:  # noqa: BLE001 - one converter's failure must not stop the others
            logging.getLogger(__name__).exception("shutting down %r failed", hook)
