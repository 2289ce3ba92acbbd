"""previewer: sized PNG previews of documents and images, as a library and a command.

Typical use::

    import previewer

    previews = previewer.convert(
        "report.pdf", out_dir="thumbs", sizes=[256, "1024x768"], pages="1-3"
    )
    image = previewer.render("photo.jpg", page=1, size=256)   # a PIL.Image, nothing written
    facts = previewer.info("report.pdf")
    extra = previewer.metadata("photo.jpg", "exif,checksum")   # {"checksum": {...}, "exif": {...}}

Importing this package loads no engine; PyMuPDF, Pillow and the rest are imported when the
first input that needs them is converted.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from previewer.api import (
        BatchReport,
        ConverterInfo,
        DocumentInfo,
        FileResult,
        Preview,
        Source,
        convert,
        convert_many,
        info,
        list_converters,
        metadata,
        render,
        shutdown,
    )
    from previewer.budgets import Limits
    from previewer.errors import (
        EncryptedError,
        EngineError,
        EngineTimeoutError,
        EngineUnavailableError,
        ExitCode,
        InputError,
        InvalidOptionsError,
        LimitExceededError,
        OutputError,
        PreviewerError,
        UnsupportedFormatError,
    )
    from previewer.geometry import SizeSpec
    from previewer.options import Options
    from previewer.pagespec import PageSpec
    from previewer.registry import Registry

__version__ = "0.1.0"

_WHERE = {
    **dict.fromkeys(
        (
            "BatchReport",
            "ConverterInfo",
            "DocumentInfo",
            "FileResult",
            "Preview",
            "Source",
            "convert",
            "convert_many",
            "list_converters",
            "info",
            "metadata",
            "render",
            "shutdown",
        ),
        "previewer.api",
    ),
    **dict.fromkeys(
        (
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
        ),
        "previewer.errors",
    ),
    "SizeSpec": "previewer.geometry",
    "Limits": "previewer.budgets",
    "Options": "previewer.options",
    "PageSpec": "previewer.pagespec",
    "Registry": "previewer.registry",
}


def __getattr__(name: str) -> Any:
    """Import the public names on first use, so ``import previewer`` stays cheap."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'previewer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BatchReport",
    "ConverterInfo",
    "DocumentInfo",
    "EncryptedError",
    "EngineError",
    "EngineTimeoutError",
    "EngineUnavailableError",
    "ExitCode",
    "FileResult",
    "InputError",
    "InvalidOptionsError",
    "LimitExceededError",
    "Limits",
    "Options",
    "OutputError",
    "PageSpec",
    "Preview",
    "PreviewerError",
    "Registry",
    "SizeSpec",
    "Source",
    "UnsupportedFormatError",
    "__version__",
    "convert",
    "convert_many",
    "list_converters",
    "info",
    "metadata",
    "render",
    "shutdown",
]
