"""The built-in converter plugins, one module per family, and their one declaration.

Each module imports nothing of previewer but :mod:`previewer.plugin` and :mod:`previewer.errors`
(the surface third-party plugins get) and its own family's modules, and imports its engine only
when first used.

This package declares the built-ins as the registry sees them before importing any: each
:class:`BuiltinSpec` gives a built-in converter's name, class, priority and MIME types; the
tables below give, for each type, what the converter's engine calls it. The registry chooses
among built-ins by these alone, so a one-off preview imports only the module of the converter
that handles the file; each converter class takes its ``name``, ``priority`` and
``mime_types`` from its spec. Pure data: importing this module imports no engine.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "AUDIO",
    "AUDIO_DEMUXERS",
    "BUILTIN_SPECS",
    "CAMERA_RAW",
    "FONT",
    "GHOSTSCRIPT",
    "HTML",
    "MAGICK",
    "MARKDOWN",
    "OFFICE",
    "PDF",
    "PSD",
    "RASTER",
    "TABLE",
    "TEXT",
    "VIDEO",
    "VIDEO_DEMUXERS",
    "BuiltinSpec",
]


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


# MIME type -> PyMuPDF filetype, so content sniffing (not the name) decides how a file is read.
PDF_FILETYPES: dict[str, str] = {
    "application/pdf": "pdf",
    "application/vnd.ms-xpsdocument": "xps",
    "application/oxps": "xps",
    "application/epub+zip": "epub",
    "application/vnd.comicbook+zip": "cbz",
    "application/x-cbz": "cbz",
    "application/x-fictionbook+xml": "fb2",
    "image/svg+xml": "svg",
}

# MIME type -> Pillow format names allowed to decode it.
RASTER_FORMATS: dict[str, tuple[str, ...]] = {
    "image/jpeg": ("JPEG", "MPO"),
    "image/png": ("PNG",),
    "image/apng": ("PNG",),
    "image/gif": ("GIF",),
    "image/webp": ("WEBP",),
    "image/tiff": ("TIFF",),
    "image/bmp": ("BMP", "DIB"),
    "image/x-ms-bmp": ("BMP", "DIB"),
    "image/vnd.microsoft.icon": ("ICO",),
    "image/x-icon": ("ICO",),
    # Pillow 13 decodes the DDS variants ImageMagick 6.9 refuses (BC1-BC7 in a DX10 header,
    # palette); ImageMagick stays the fallback.
    "image/vnd-ms.dds": ("DDS",),
    "image/vnd.ms-dds": ("DDS",),
    "image/x-dds": ("DDS",),
}

# Types ImageMagick claims that Pillow reads when ImageMagick fails: ImageMagick 6.9.11 rejects
# plain (ASCII) PGM/PPM whose last sample has no whitespace after it ("unable to read image data").
RASTER_FALLBACK_FORMATS: dict[str, tuple[str, ...]] = {
    "image/x-portable-anymap": ("PPM",),
    "image/x-portable-bitmap": ("PPM",),
    "image/x-portable-graymap": ("PPM",),
    "image/x-portable-greymap": ("PPM",),
    "image/x-portable-pixmap": ("PPM",),
}


MAGICK_CODERS: dict[str, str] = {
    "image/x-xcf": "XCF",
    "image/x-tga": "TGA",
    "image/x-targa": "TGA",
    "image/x-pcx": "PCX",
    "image/vnd.zbrush.pcx": "PCX",
    "image/x-portable-anymap": "PNM",
    "image/x-portable-bitmap": "PNM",
    "image/x-portable-graymap": "PNM",
    "image/x-portable-greymap": "PNM",
    "image/x-portable-pixmap": "PNM",
    "image/x-portable-arbitrarymap": "PNM",
    "image/vnd-ms.dds": "DDS",
    "image/vnd.ms-dds": "DDS",
    "image/x-dds": "DDS",
    "image/x-pict": "PICT",
    "image/x-sgi": "SGI",
    "image/sgi": "SGI",
    "image/jp2": "JP2",
    "image/jpx": "JP2",
    "image/x-jp2-codestream": "J2K",
    "image/heic": "HEIC",
    "image/heif": "HEIC",
    "image/avif": "AVIF",
}
"""Sniffed MIME type -> the ImageMagick coder the input is read with (and nothing else)."""

MAGICK_FALLBACK_CODERS: dict[str, str] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/apng": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/tiff": "TIFF",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/vnd.microsoft.icon": "ICO",
    "image/x-icon": "ICO",
    "image/vnd.adobe.photoshop": "PSD",
    "image/x-photoshop": "PSD",
    "application/x-photoshop": "PSD",
    "image/vnd-ms.dds": "DDS",
    "image/vnd.ms-dds": "DDS",
    "image/x-dds": "DDS",
}
"""Types other converters claim that ImageMagick reads (strictly) when they fail on a file."""


OOXML = "application/vnd.openxmlformats-officedocument."
OFFICE_WORD = frozenset(
    {
        "application/msword",
        OOXML + "wordprocessingml.document",
        OOXML + "wordprocessingml.template",
        "application/vnd.ms-word.document.macroEnabled.12",
        "application/vnd.ms-word.template.macroEnabled.12",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.text-template",
        "application/vnd.oasis.opendocument.text-flat-xml",
        "application/vnd.wordperfect",
        "application/vnd.ms-wordml",
        "application/rtf",
        "text/rtf",
    }
)
OFFICE_SHEET = frozenset(
    {
        "application/vnd.ms-excel",
        OOXML + "spreadsheetml.sheet",
        OOXML + "spreadsheetml.template",
        "application/vnd.ms-excel.sheet.macroEnabled.12",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.spreadsheet-template",
        "application/vnd.oasis.opendocument.spreadsheet-flat-xml",
        "application/vnd.ms-excel.2003+xml",
        "text/csv",
    }
)
OFFICE_SLIDES = frozenset(
    {
        "application/vnd.ms-powerpoint",
        OOXML + "presentationml.presentation",
        OOXML + "presentationml.slideshow",
        OOXML + "presentationml.template",
        "application/vnd.ms-powerpoint.presentation.macroEnabled.12",
        "application/vnd.oasis.opendocument.presentation",
        "application/vnd.oasis.opendocument.presentation-template",
        "application/vnd.oasis.opendocument.presentation-flat-xml",
    }
)
OFFICE_DRAWING = frozenset(
    {
        "application/vnd.oasis.opendocument.graphics",
        "application/vnd.oasis.opendocument.graphics-template",
        "application/vnd.oasis.opendocument.graphics-flat-xml",
        "application/vnd.visio",
        "application/vnd.ms-visio.drawing",
        "application/x-mspublisher",
        "application/vnd.ms-publisher",
    }
)
OFFICE_ENCRYPTED = frozenset({"application/encrypted", "application/CDFV2-encrypted"})
"""libmagic's types for an encrypted OOXML package ("CDFV2 Encrypted")."""
OFFICE_OLE_GENERIC = frozenset(
    {"application/x-ole-storage", "application/CDFV2", "application/vnd.ms-office"}
)
"""An OLE2 container libmagic could not name: LibreOffice may still know it (Works, Visio...)."""


PSD_TYPES = frozenset({"image/vnd.adobe.photoshop", "image/x-photoshop", "application/x-photoshop"})
POSTSCRIPT_TYPES = frozenset(
    {"application/postscript", "application/eps", "image/x-eps", "application/x-eps"}
)

PDF = BuiltinSpec(
    "pdf-pymupdf", "previewer.converters.pdf:PdfConverter", 50, frozenset(PDF_FILETYPES)
)
RASTER = BuiltinSpec(
    "raster-pillow", "previewer.converters.raster:RasterConverter", 50, frozenset(RASTER_FORMATS)
)
PSD = BuiltinSpec("psd-psdtools", "previewer.converters.psd:PsdConverter", 50, PSD_TYPES)
GHOSTSCRIPT = BuiltinSpec(
    "postscript-ghostscript",
    "previewer.converters.ghostscript:GhostscriptConverter",
    50,
    POSTSCRIPT_TYPES,
)
OFFICE = BuiltinSpec(
    "office-libreoffice",
    "previewer.converters.office:OfficeConverter",
    50,
    OFFICE_WORD
    | OFFICE_SHEET
    | OFFICE_SLIDES
    | OFFICE_DRAWING
    | OFFICE_ENCRYPTED
    | OFFICE_OLE_GENERIC,
)
MAGICK = BuiltinSpec(
    "magick-wand", "previewer.converters.magick:MagickConverter", 10, frozenset(MAGICK_CODERS)
)

CAMERA_RAW_TYPES = frozenset(
    {
        "image/x-adobe-dng",
        "image/x-canon-cr2",
        "image/x-canon-cr3",
        "image/x-canon-crw",
        "image/x-nikon-nef",
        "image/x-nikon-nrw",
        "image/x-sony-arw",
        "image/x-sony-sr2",
        "image/x-sony-srf",
        "image/x-olympus-orf",
        "image/x-panasonic-rw2",
        "image/x-panasonic-raw",
        "image/x-pentax-pef",
        "image/x-fuji-raf",
        "image/x-sigma-x3f",
        "image/x-epson-erf",
        "image/x-kodak-dcr",
        "image/x-kodak-kdc",
        "image/x-samsung-srw",
        "image/x-minolta-mrw",
        "image/x-hasselblad-3fr",
        "image/x-mamiya-mef",
        "image/x-leaf-mos",
        "image/x-phaseone-iiq",
        "image/x-dcraw",
    }
)
"""Camera RAW types (content-sniffed: see :mod:`previewer.mime_heuristics`), read by LibRaw."""

CAMERA_RAW = BuiltinSpec(
    "raw-libraw", "previewer.converters.camera_raw:CameraRawConverter", 50, CAMERA_RAW_TYPES
)

# Sniffed MIME type -> the one ffmpeg demuxer allowed to read it (``-f X -format_whitelist X``):
# content never picks another demuxer (an HLS playlist named .mp4 opens nothing).
VIDEO_DEMUXERS: dict[str, str] = {
    "video/mp4": "mov",
    "video/quicktime": "mov",
    "video/x-m4v": "mov",
    "video/3gpp": "mov",
    "video/3gpp2": "mov",
    "video/x-matroska": "matroska",
    "video/webm": "matroska",
    "video/x-msvideo": "avi",
    "video/avi": "avi",
    "video/mpeg": "mpeg",
    "video/mp2t": "mpegts",
    "video/x-ms-asf": "asf",
    "video/x-ms-wmv": "asf",
    "video/ogg": "ogg",
    "video/x-flv": "flv",
}
AUDIO_DEMUXERS: dict[str, str] = {
    "audio/mpeg": "mp3",
    "audio/x-wav": "wav",
    "audio/wav": "wav",
    "audio/vnd.wave": "wav",
    "audio/x-aiff": "aiff",
    "audio/aiff": "aiff",
    "audio/ogg": "ogg",
    "audio/x-opus+ogg": "ogg",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/x-m4a": "mov",
    "audio/mp4": "mov",
    "audio/x-hx-aac-adts": "aac",
    "audio/aac": "aac",
    "audio/x-ms-wma": "asf",
    "audio/webm": "matroska",
}
VIDEO = BuiltinSpec(
    "video-ffmpeg", "previewer.converters.video:VideoConverter", 50, frozenset(VIDEO_DEMUXERS)
)
AUDIO = BuiltinSpec(
    "audio-ffmpeg", "previewer.converters.audio:AudioConverter", 50, frozenset(AUDIO_DEMUXERS)
)

# Text: plain text and code (libmagic's text/x-* and the types the sniffer gives code by its
# name), tables, Markdown, HTML and fonts, laid out with PyMuPDF's Story (fonts with Pillow).
TEXT_TYPES = frozenset(
    {
        "text/*",
        "text/plain",
        "text/xml",
        "application/xml",
        "application/json",
        "application/x-ndjson",
        "application/javascript",
        "application/x-javascript",
        "application/x-typescript",
        "application/toml",
        "application/x-sh",
        "application/x-shellscript",
        "application/x-dos-batch",
    }
)
TABLE_TYPES = frozenset({"text/csv", "text/tab-separated-values"})
MARKDOWN_TYPES = frozenset({"text/markdown", "text/x-markdown"})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
FONT_TYPES = frozenset(
    {
        "font/sfnt",
        "font/ttf",
        "font/otf",
        "font/collection",
        "font/woff",
        "font/woff2",
        "application/font-sfnt",
        "application/font-woff",
        "application/x-font-ttf",
        "application/x-font-otf",
        "application/vnd.ms-opentype",
    }
)
TEXT = BuiltinSpec("text-story", "previewer.converters.text:TextConverter", 50, TEXT_TYPES)
# Above LibreOffice (50), which also claims text/csv and takes over when this is unavailable.
TABLE = BuiltinSpec("table-story", "previewer.converters.table:TableConverter", 60, TABLE_TYPES)
MARKDOWN = BuiltinSpec(
    "markdown-story", "previewer.converters.markup:MarkdownConverter", 50, MARKDOWN_TYPES
)
HTML = BuiltinSpec("html-story", "previewer.converters.markup:HtmlConverter", 50, HTML_TYPES)
FONT = BuiltinSpec("font-pillow", "previewer.converters.font:FontConverter", 50, FONT_TYPES)

BUILTIN_SPECS: tuple[BuiltinSpec, ...] = (
    PDF,
    RASTER,
    PSD,
    GHOSTSCRIPT,
    OFFICE,
    MAGICK,
    CAMERA_RAW,
    VIDEO,
    AUDIO,
    TEXT,
    TABLE,
    MARKDOWN,
    HTML,
    FONT,
)
"""Every built-in converter, in the order the registry lists them."""
