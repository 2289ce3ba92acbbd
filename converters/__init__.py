"""The built-in converter plugins, one module per family.

Only :mod:`previewer.registry` imports this package. Each module imports nothing of previewer
but :mod:`previewer.plugin` and :mod:`previewer.errors` (the surface third-party plugins get),
and imports its engine only when first used.
"""

from converters.pdf import PdfConverter
from converters.raster import RasterConverter

BUILTIN = (PdfConverter, RasterConverter)

__all__ = ["BUILTIN", "PdfConverter", "RasterConverter"]
