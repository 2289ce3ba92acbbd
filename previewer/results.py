"""Result objects of the library: previews, per-file results, batch reports, info, converters.

Each has ``to_dict()`` giving the JSON the command line prints with ``--json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from previewer.errors import ExitCode, PreviewerError

__all__ = ["BatchReport", "ConverterInfo", "DocumentInfo", "FileResult", "Preview"]


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
    """

    source: str
    page: int
    size: str
    path: Path | None
    width: int
    height: int
    converter: str
    mime: str

    def to_dict(self) -> dict[str, Any]:
        """Return the preview as the ``outputs`` item of a JSON result line."""
        return {
            "page": self.page,
            "size": self.size,
            "path": str(self.path) if self.path is not None else None,
            "width": self.width,
            "height": self.height,
        }


@dataclass
class FileResult:
    """The outcome of converting one input in a batch.

    Attributes:
        input: The input as the user named it.
        status: ``"converted"``, ``"skipped"`` or ``"failed"``.
        mime: Sniffed MIME type, when sniffing got that far.
        converter: Converter used, when dispatch got that far.
        outputs: Previews written.
        error: The error, when ``status`` is ``"failed"``.
        reason: Why the input was skipped.
        duration: Seconds spent on this input.
    """

    input: str
    status: str
    mime: str | None = None
    converter: str | None = None
    outputs: list[Preview] = field(default_factory=list)
    error: PreviewerError | None = None
    reason: str = ""
    duration: float = 0.0

    @property
    def exit_code(self) -> int:
        """The exit code this input alone would give (0 unless it failed)."""
        return int(self.error.exit_code) if self.error is not None else 0

    def to_dict(self) -> dict[str, Any]:
        """Return the result as one JSON line of ``--json`` / ``--report``."""
        data: dict[str, Any] = {
            "input": self.input,
            "status": self.status,
            "mime": self.mime,
            "converter": self.converter,
            "outputs": [p.to_dict() for p in self.outputs],
            "error": self.error.to_dict() if self.error is not None else None,
            "duration": round(self.duration, 4),
        }
        if self.reason:
            data["reason"] = self.reason
        return data


@dataclass
class BatchReport:
    """The results of a run over several inputs; it owns the run's exit code.

    Attributes:
        results: One result per input, in the order they finished.
        elapsed: Wall-clock seconds of the whole run.
    """

    results: list[FileResult] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def converted(self) -> int:
        """Number of inputs converted."""
        return sum(r.status == "converted" for r in self.results)

    @property
    def skipped(self) -> int:
        """Number of inputs skipped."""
        return sum(r.status == "skipped" for r in self.results)

    @property
    def failed(self) -> int:
        """Number of inputs that failed."""
        return sum(r.status == "failed" for r in self.results)

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
        failed = [r for r in self.results if r.status == "failed"]
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

    def to_dict(self) -> dict[str, Any]:
        """Return the info as a JSON object."""
        return {
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
