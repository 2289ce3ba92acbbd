"""The built-in converter plugins, one module per family.

Only :mod:`previewer.registry` imports this package. Each module imports nothing of previewer
but :mod:`previewer.plugin` and :mod:`previewer.errors` (the surface third-party plugins get),
and imports its engine only when first used.
"""

from converters.ghostscript import GhostscriptConverter
from converters.magick import MagickConverter
from converters.office import OfficeConverter
from converters.pdf import PdfConverter
from converters.psd import PsdConverter
from converters.raster import RasterConverter

BUILTIN = (
    PdfConverter,
    RasterConverter,
    PsdConverter,
    GhostscriptConverter,
    OfficeConverter,
    MagickConverter,
)

__all__ = [
    "BUILTIN",
    "GhostscriptConverter",
    "MagickConverter",
    "OfficeConverter",
    "PdfConverter",
    "PsdConverter",
    "RasterConverter",
]
