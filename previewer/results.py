"""Result objects of the library: previews, per-file results, batch reports, info, converters.

Each has ``to_dict()`` giving the JSON the command line prints with ``--json``; previews,
per-file results and reports also have ``from_dict()``, and ``to_dict(detail=True)`` gives the
exact form (every field, the error's parts) that the journal and the queue send and rebuild.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from previewer.errors import PreviewerError
from previewer.reporting import ExitCode

__all__ = [
    "FAILED_BEFORE",
    "IN_THUMBNAIL_CACHE",
    "UP_TO_DATE",
    "BatchReport",
    "ConverterInfo",
    "DocumentInfo",
    "FileResult",
    "Preview",
    "Status",
    "no_converter_reason",
]


class Status(enum.StrEnum):
    """What happened to one input; the values are the ``status`` strings of ``--json``."""

    CONVERTED = "converted"
    SKIPPED = "skipped"
    FAILED = "failed"


PREVIEW_MIMETYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
"""MIME type of each preview format."""

UP_TO_DATE = "up to date"
"""Skip reason: the previews of an earlier run are still current (not reported on stderr)."""
FAILED_BEFORE = "failed before"
"""Skip reason: the desktop thumbnail cache records an earlier failure for this file."""
IN_THUMBNAIL_CACHE = "inside the thumbnail cache"
"""Skip reason: the file is itself a thumbnail in the desktop cache."""


def no_converter_reason(mime: str | None) -> str:
    """Skip reason of a walked file that no converter claims.

    Args:
        mime: Its sniffed type, if known.

    Returns:
        ``"no converter for <mime>"``.
    """
    return f"no converter for {mime or 'this type'}"


@dataclass(frozen=True)
class Preview:
    """One written (or rendered) preview image.

    Attributes:
        source: The input as the user named it.
        page: 1-based page number.
        size: The requested size, normalised (``256``, ``1024x768``).
        path: The PNG file written, or None when nothing was written.
        width: Image width in pixels.
        height: Image height in pixels.
        converter: Name of the converter that rendered it.
        mime: Sniffed MIME type of the input.
        format: The preview's image format: ``"png"``, ``"jpeg"`` or ``"webp"``.
    """

    source: str
    page: int
    size: str
    path: Path | None
    width: int
    height: int
    converter: str
    mime: str
    format: str = "png"

    @property
    def mimetype(self) -> str:
        """The preview file's MIME type (``image/png``, ``image/jpeg``, ``image/webp``)."""
        return PREVIEW_MIMETYPES.get(self.format, f"image/{self.format}")

    def to_dict(self, *, detail: bool = False) -> dict[str, Any]:
        """Return the preview as the ``outputs`` item of a JSON result line.

        Args:
            detail: Also give ``source``, ``converter`` and ``mime`` (which a result line
                holds once for all its outputs), so :meth:`from_dict` needs nothing else.

        Returns:
            ``{"page", "size", "path", "width", "height", "format", "mimetype"}`` (plus the
            three with ``detail``).
        """
        data: dict[str, Any] = {
            "page": self.page,
            "size": self.size,
            "path": str(self.path) if self.path is not None else None,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "mimetype": self.mimetype,
        }
        if detail:
            data.update(source=self.source, converter=self.converter, mime=self.mime)
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str = "", converter: str = "", mime: str = ""
    ) -> Preview:
        """Rebuild a preview from :meth:`to_dict` output.

        Args:
            data: The dict.
            source: The input, when ``data`` does not say (a result line's ``input``).
            converter: The converter, when ``data`` does not say.
            mime: The input's type, when ``data`` does not say.

        Returns:
            The preview.

        Raises:
            KeyError: If a required key is missing.
            ValueError: If a value has the wrong type.
        """
        path = data.get("path")
        return cls(
            source=str(data.get("source", source)),
            page=int(data["page"]),
            size=str(data["size"]),
            path=Path(path) if path is not None else None,
            width=int(data["width"]),
            height=int(data["height"]),
            converter=str(data.get("converter", converter)),
            mime=str(data.get("mime", mime)),
            format=str(data.get("format", "png")),
        )


@dataclass
class FileResult:
    """The outcome of converting one input in a batch.

    Attributes:
        input: The input as the user named it.
        status: :class:`Status` (a string enum: ``"converted"``, ``"skipped"``, ``"failed"``).
        mime: Sniffed MIME type, when sniffing got that far.
        converter: Converter used, when dispatch got that far.
        outputs: Previews written.
        error: The error, when ``status`` is ``"failed"``.
        reason: Why the input was skipped.
        duration: Seconds spent on this input.
        warnings: What the engines reported while converting it (Pillow's warnings, libtiff's
            or MuPDF's messages), without repeats; also logged to the ``previewer.engine``
            logger.
        queue: For a file converted by queue workers: its route and wait (``queue``,
            ``class``, ``tenant``, ``estimate`` seconds, ``wait`` seconds from enqueueing to
            the task's start, ``started`` epoch seconds, ``attempt``); None otherwise.
        info: The document's description, when it was asked for with the conversion (a queue
            worker's task called with ``describe``, see :mod:`previewer.queue.worker`);
            None otherwise.
    """

    input: str
    status: Status
    mime: str | None = None
    converter: str | None = None
    outputs: list[Preview] = field(default_factory=list)
    error: PreviewerError | None = None
    reason: str = ""
    duration: float = 0.0
    warnings: list[str] = field(default_factory=list)
    queue: dict[str, Any] | None = None
    info: DocumentInfo | None = None

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def exit_code(self) -> int:
        """The exit code this input alone would give (0 unless it failed)."""
        return int(self.error.exit_code) if self.error is not None else 0

    def to_dict(self, *, detail: bool = False) -> dict[str, Any]:
        """Return the result as one JSON line of ``--json`` / ``--report``.

        Args:
            detail: Give the exact form :meth:`from_dict` rebuilds the result from: the
                duration unrounded, each preview in full, and ``error_detail`` (the error's
                parts, :meth:`PreviewerError.to_dict`) besides the ``error`` summary.

        Returns:
            The JSON object.
        """
        data: dict[str, Any] = {
            "input": self.input,
            "status": self.status,
            "mime": self.mime,
            "converter": self.converter,
            "outputs": [p.to_dict(detail=detail) for p in self.outputs],
            "error": self.error.summary() if self.error is not None else None,
            "duration": self.duration if detail else round(self.duration, 4),
            "warnings": list(self.warnings),
        }
        if self.reason:
            data["reason"] = self.reason
        if self.queue is not None:
            data["queue"] = dict(self.queue)
        if self.info is not None:
            data["info"] = self.info.to_dict()
            if detail:
                data["info"]["page_sizes"] = [[w, h] for w, h in self.info.page_sizes]
        if detail:
            data["error_detail"] = self.error.to_dict() if self.error is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileResult:
        """Rebuild a result from :meth:`to_dict` output.

        With ``to_dict(detail=True)`` output the result is rebuilt exactly; from a ``--json``
        line the error is rebuilt from its summary (class by name, the whole text as its
        message).

        Args:
            data: The dict.

        Returns:
            The result.

        Raises:
            KeyError: If a required key is missing.
            ValueError: If a value has the wrong type (an unknown status, say).
        """
        mime, converter = data.get("mime"), data.get("converter")
        detail = data.get("error_detail")
        if detail is None and isinstance(data.get("error"), Mapping):
            summary = data["error"]
            detail = {
                "type": summary.get("type"),
                "exit_code": summary.get("exit_code"),
                "message": summary.get("message", ""),
            }
        source = str(data["input"])
        return cls(
            input=source,
            status=Status(data["status"]),
            mime=None if mime is None else str(mime),
            converter=None if converter is None else str(converter),
            outputs=[
                Preview.from_dict(item, source=source, converter=converter or "", mime=mime or "")
                for item in data.get("outputs") or []
            ],
            error=PreviewerError.from_dict(detail) if isinstance(detail, Mapping) else None,
            reason=str(data.get("reason", "")),
            duration=float(data.get("duration", 0.0)),
            warnings=[str(w) for w in data.get("warnings") or []],
            queue=dict(data["queue"]) if isinstance(data.get("queue"), Mapping) else None,
            info=DocumentInfo.from_dict(data["info"])
            if isinstance(data.get("info"), Mapping)
            else None,
        )


@dataclass
class BatchReport:
    """The results of a run over several inputs; it owns the run's exit code.

    Attributes:
        results: One result per input, in the order they finished.
        elapsed: Wall-clock seconds of the whole run.
    """

    results: list[FileResult] = field(default_factory=list)
    elapsed: float = 0.0

    def to_dict(self, *, detail: bool = False) -> dict[str, Any]:
        """Return the report as a JSON object (see :meth:`FileResult.to_dict` for ``detail``).

        Args:
            detail: Give each result in its exact form.

        Returns:
            ``{"results": [...], "elapsed": ...}``.
        """
        return {
            "results": [r.to_dict(detail=detail) for r in self.results],
            "elapsed": self.elapsed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchReport:
        """Rebuild a report from :meth:`to_dict` output.

        Args:
            data: The dict.

        Returns:
            The report.
        """
        return cls(
            results=[FileResult.from_dict(r) for r in data.get("results") or []],
            elapsed=float(data.get("elapsed", 0.0)),
        )

    @property
    def converted(self) -> int:
        """Number of inputs converted."""
        return sum(r.status == Status.CONVERTED for r in self.results)

    @property
    def skipped(self) -> int:
        """Number of inputs skipped."""
        return sum(r.status == Status.SKIPPED for r in self.results)

    @property
    def failed(self) -> int:
        """Number of inputs that failed."""
        return sum(r.status == Status.FAILED for r in self.results)

    def failures_by_type(self) -> dict[str, int]:
        """Count failures by error class name."""
        counts: dict[str, int] = {}
        for r in self.results:
            if r.error is not None:
                name = type(r.error).__name__
                counts[name] = counts.get(name, 0) + 1
        return counts

    @property
    def exit_code(self) -> int:
        """0 when nothing failed; a single input's own code; else BATCH_PARTIAL (10)."""
        failed = [r for r in self.results if r.status == Status.FAILED]
        if not failed:
            return int(ExitCode.OK)
        if len(self.results) == 1:
            return failed[0].exit_code
        return int(ExitCode.BATCH_PARTIAL)


@dataclass(frozen=True)
class DocumentInfo:
    """What ``previewer info`` reports about an input.

    Attributes:
        input: The input as the user named it.
        mime: Sniffed MIME type.
        converter: Converter that would render it.
        engine: That converter's engine and version.
        pages: Page count; None when the document's own count is damaged and unknown (then
            ``page_sizes`` lists the pages that could be found).
        page_sizes: Displayed size of each page (up to the first 1000) in ``units``.
        units: ``"pt"`` or ``"px"``.
        bytes: File size.
        sha256: Hex SHA-256 of the file.
        metadata: Format-specific facts from the converter.
        extracted: The metadata asked for with ``metadata=`` / ``--metadata`` (key -> value,
            None where a key does not apply; see :mod:`previewer.extraction`), or None when none
            was asked for.
    """

    input: str
    mime: str
    converter: str
    engine: str
    pages: int | None
    page_sizes: list[tuple[float, float]]
    units: str
    bytes: int
    sha256: str
    metadata: dict[str, Any]
    extracted: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the info as a JSON object (``extracted`` only when metadata was asked for)."""
        data = {
            "input": self.input,
            "mime": self.mime,
            "converter": self.converter,
            "engine": self.engine,
            "pages": self.pages,
            "page_sizes": [[round(w, 2), round(h, 2)] for w, h in self.page_sizes],
            "units": self.units,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "metadata": self.metadata,
        }
        if self.extracted is not None:
            data["extracted"] = self.extracted
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DocumentInfo:
        """Rebuild the info from :meth:`to_dict` output.

        Args:
            data: The dict.

        Returns:
            The info.

        Raises:
            KeyError: If a required key is missing.
            ValueError: If a value has the wrong type.
        """
        pages = data.get("pages")
        extracted = data.get("extracted")
        return cls(
            input=str(data["input"]),
            mime=str(data["mime"]),
            converter=str(data["converter"]),
            engine=str(data.get("engine", "")),
            pages=None if pages is None else int(pages),
            page_sizes=[(float(w), float(h)) for w, h in data.get("page_sizes") or []],
            units=str(data.get("units", "pt")),
            bytes=int(data.get("bytes", 0)),
            sha256=str(data.get("sha256", "")),
            metadata=dict(data.get("metadata") or {}),
            extracted=dict(extracted) if isinstance(extracted, Mapping) else None,
        )


@dataclass(frozen=True)
class ConverterInfo:
    """One converter as ``previewer converters`` lists it.

    Attributes:
        name: Converter name.
        mime_types: MIME types it declares.
        priority: Its priority.
        engine: Engine name.
        version: Engine version, when known.
        available: Whether it can run here.
        reason: Why not, with an install hint.
        origin: ``"builtin"`` or the entry point it came from.
        isolation: What its engine is isolated from: ``"in-process"`` (the engine is a
            library running in previewer's own or batch worker process, under its limits),
            the sandbox an engine program gets here (``"no network, private file view
            (bubblewrap)"``, see :mod:`previewer.sandbox`), or ``"not declared"`` for a plugin
            that does not say (its ``sandboxed`` attribute).
    """

    name: str
    mime_types: list[str]
    priority: int
    engine: str
    version: str | None
    available: bool
    reason: str
    origin: str
    isolation: str = "not declared"

    def to_dict(self) -> dict[str, Any]:
        """Return the converter as a JSON object."""
        return {
            "name": self.name,
            "mime_types": self.mime_types,
            "priority": self.priority,
            "engine": self.engine,
            "version": self.version,
            "available": self.available,
            "reason": self.reason,
            "origin": self.origin,
            "isolation": self.isolation,
        }
