"""The built-in converter plugins, one module per family.

Only :mod:`previewer.registry` imports this package. Each module imports nothing of previewer
but :mod:`previewer.plugin` and :mod:`previewer.errors` (the surface third-party plugins get),
and imports its engine only when first used.

:data:`BUILTIN_SPECS` declares each built-in converter's name, MIME types and priority
statically, so the registry can choose a converter without importing every module: a one-off
preview imports only the module of the converter that handles the file. A test checks that the
declarations match the classes. ``BUILTIN`` (the classes themselves) and the class names are
still importable from here; they import every module on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from previewer.converters.ghostscript import GhostscriptConverter
    from previewer.converters.magick import MagickConverter
    from previewer.converters.office import OfficeConverter
    from previewer.converters.pdf import PdfConverter
    from previewer.converters.psd import PsdConverter
    from previewer.converters.raster import RasterConverter

    BUILTIN: tuple[type[Any], ...]


class BuiltinSpec(NamedTuple):
    """A built-in converter as the registry sees it before importing it.

    Attributes:
        name: The converter's ``name``.
        target: ``module:class`` of the converter class.
        priority: Its ``priority``.
        mime_types: Its ``mime_types``.
    """

    name: str
    target: str
    priority: int
    mime_types: frozenset[str]


def _spec(name: str, target: str, priority: int, types: str) -> BuiltinSpec:
    return BuiltinSpec(name, target, priority, frozenset(types.split()))


# Keep in step with each class's name, priority and mime_types (tests/test_registry.py checks).
BUILTIN_SPECS: tuple[BuiltinSpec, ...] = (
    _spec(
        "pdf-pymupdf",
        "previewer.converters.pdf:PdfConverter",
        50,
        "application/pdf application/epub+zip application/oxps application/vnd.comicbook+zip"
        " application/vnd.ms-xpsdocument application/x-cbz application/x-fictionbook+xml"
        " image/svg+xml",
    ),
    _spec(
        "raster-pillow",
        "previewer.converters.raster:RasterConverter",
        50,
        "image/apng image/bmp image/gif image/jpeg image/png image/tiff image/vnd.microsoft.icon"
        " image/vnd-ms.dds image/vnd.ms-dds image/webp image/x-dds image/x-icon image/x-ms-bmp",
    ),
    _spec(
        "psd-psdtools",
        "previewer.converters.psd:PsdConverter",
        50,
        "application/x-photoshop image/vnd.adobe.photoshop image/x-photoshop",
    ),
    _spec(
        "postscript-ghostscript",
        "previewer.converters.ghostscript:GhostscriptConverter",
        50,
        "application/eps application/postscript application/x-eps image/x-eps",
    ),
    _spec(
        "office-libreoffice",
        "previewer.converters.office:OfficeConverter",
        50,
        "application/CDFV2 application/CDFV2-encrypted application/encrypted application/msword"
        " application/rtf application/vnd.ms-excel application/vnd.ms-excel.2003+xml"
        " application/vnd.ms-excel.sheet.macroEnabled.12 application/vnd.ms-office"
        " application/vnd.ms-powerpoint"
        " application/vnd.ms-powerpoint.presentation.macroEnabled.12"
        " application/vnd.ms-publisher application/vnd.ms-visio.drawing"
        " application/vnd.ms-word.document.macroEnabled.12"
        " application/vnd.ms-word.template.macroEnabled.12 application/vnd.ms-wordml"
        " application/vnd.oasis.opendocument.graphics"
        " application/vnd.oasis.opendocument.graphics-flat-xml"
        " application/vnd.oasis.opendocument.graphics-template"
        " application/vnd.oasis.opendocument.presentation"
        " application/vnd.oasis.opendocument.presentation-flat-xml"
        " application/vnd.oasis.opendocument.presentation-template"
        " application/vnd.oasis.opendocument.spreadsheet"
        " application/vnd.oasis.opendocument.spreadsheet-flat-xml"
        " application/vnd.oasis.opendocument.spreadsheet-template"
        " application/vnd.oasis.opendocument.text application/vnd.oasis.opendocument.text-flat-xml"
        " application/vnd.oasis.opendocument.text-template"
        " application/vnd.openxmlformats-officedocument.presentationml.presentation"
        " application/vnd.openxmlformats-officedocument.presentationml.slideshow"
        " application/vnd.openxmlformats-officedocument.presentationml.template"
        " application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        " application/vnd.openxmlformats-officedocument.spreadsheetml.template"
        " application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        " application/vnd.openxmlformats-officedocument.wordprocessingml.template"
        " application/vnd.visio application/vnd.wordperfect application/x-mspublisher"
        " application/x-ole-storage text/csv text/rtf",
    ),
    _spec(
        "magick-wand",
        "previewer.converters.magick:MagickConverter",
        10,
        "image/avif image/heic image/heif image/jp2 image/jpx image/sgi image/vnd-ms.dds"
        " image/vnd.ms-dds image/vnd.zbrush.pcx image/x-dds image/x-jp2-codestream image/x-pcx"
        " image/x-pict image/x-portable-anymap image/x-portable-arbitrarymap"
        " image/x-portable-bitmap image/x-portable-graymap image/x-portable-greymap"
        " image/x-portable-pixmap image/x-sgi image/x-targa image/x-tga image/x-xcf",
    ),
)


def load_class(target: str) -> Any:
    """Import and return the class a ``module:class`` target names.

    Args:
        target: ``module:class``, as in :attr:`BuiltinSpec.target`.

    Returns:
        The class.
    """
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def __getattr__(name: str) -> Any:
    # BUILTIN and the class names, imported on first access (PEP 562).
    if name == "BUILTIN":
        return tuple(load_class(spec.target) for spec in BUILTIN_SPECS)
    for spec in BUILTIN_SPECS:
        if spec.target.endswith(":" + name):
            return load_class(spec.target)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTIN",
    "BUILTIN_SPECS",
    "BuiltinSpec",
    "GhostscriptConverter",
    "MagickConverter",
    "OfficeConverter",
    "PdfConverter",
    "PsdConverter",
    "RasterConverter",
    "load_class",
]
