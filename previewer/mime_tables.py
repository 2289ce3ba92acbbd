"""The MIME type tables :mod:`previewer.mime` sniffs with: names, extensions, refinements.

Content decides a file's type; these tables say what a name may add: the type an extension
stands for (:data:`EXTENSIONS`), which container types an extension may refine and into what
(:data:`REFINABLE`), and the Office types LibreOffice is given by name when content sniffing
cannot tell (:data:`OFFICE_INCONCLUSIVE`, :data:`OFFICE_EXTENSIONS`).
:mod:`previewer.mime` re-exports the public ones.
"""

from __future__ import annotations

__all__ = [
    "EXTENSIONS",
    "GENERIC_TYPES",
    "IMAGE_SUFFIXES",
    "OFFICE_EXTENSIONS",
    "OFFICE_INCONCLUSIVE",
    "OOXML_PARTS",
    "REFINABLE",
    "TEXT_EXTENSIONS",
    "text_by_name",
]

GENERIC_TYPES = frozenset(
    {
        "application/zip",
        "application/x-ole-storage",
        "application/CDFV2",
        "application/xml",
        "text/xml",
        "text/plain",
    }
)
"""Types that say only what container a file is; the extension may refine them."""

EXTENSIONS: dict[str, str] = {
    ".pdf": "application/pdf",
    ".ai": "application/pdf",
    ".xps": "application/vnd.ms-xpsdocument",
    ".oxps": "application/oxps",
    ".epub": "application/epub+zip",
    ".cbz": "application/vnd.comicbook+zip",
    ".fb2": "application/x-fictionbook+xml",
    ".svg": "image/svg+xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".bmp": "image/bmp",
    ".ico": "image/vnd.microsoft.icon",
    ".psd": "image/vnd.adobe.photoshop",
    ".psb": "image/vnd.adobe.photoshop",
    ".tga": "image/x-tga",
    ".pct": "image/x-pict",
    ".pict": "image/x-pict",
    ".doc": "application/msword",
    ".dot": "application/msword",
    ".xls": "application/vnd.ms-excel",
    ".ppt": "application/vnd.ms-powerpoint",
    ".pps": "application/vnd.ms-powerpoint",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".csv": "text/csv",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".odp": "application/vnd.oasis.opendocument.presentation",
    ".odg": "application/vnd.oasis.opendocument.graphics",
    # Camera RAW variants a maker's TIFF-structured files share one signature with.
    ".nrw": "image/x-nikon-nrw",
    ".sr2": "image/x-sony-sr2",
    ".srf": "image/x-sony-srf",
    ".dcr": "image/x-kodak-dcr",
}

# Containers whose extension may refine them, and which refinements are plausible.
REFINABLE: dict[str, set[str]] = {
    "application/zip": {
        "application/epub+zip",
        "application/vnd.comicbook+zip",
        "application/vnd.ms-xpsdocument",
        "application/oxps",
        # A zip named as an Office document but without its parts (say an empty zip): the
        # Office converter then reports it as corrupt rather than as an unsupported format.
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        "application/vnd.oasis.opendocument.graphics",
    },
    # libmagic's TTComp signature is two bytes and matches old word-processor files named .doc.
    "application/x-compress-ttcomp": {"application/msword"},
    "application/x-ole-storage": {
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
    },
    "text/plain": {"text/csv"},
    "application/xml": {"image/svg+xml", "application/x-fictionbook+xml"},
    "image/x-nikon-nef": {"image/x-nikon-nrw"},
    "image/x-sony-arw": {"image/x-sony-sr2", "image/x-sony-srf"},
    "image/x-kodak-kdc": {"image/x-kodak-dcr"},
}

OOXML_PARTS = (
    ("word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
)
"""OOXML part prefixes and the document type a package holding them is."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
"""File names a zip of nothing but images has (a comic book archive)."""

OFFICE_INCONCLUSIVE = frozenset(
    {
        "application/octet-stream",
        "application/zip",
        "application/x-ole-storage",
        "application/CDFV2",
        "application/vnd.ms-office",
        "application/xml",
        "text/xml",
    }
)
"""What content sniffing answers for Office files it cannot name: a bare container, or nothing."""

OFFICE_EXTENSIONS: dict[str, str] = {
    ".vsd": "application/vnd.visio",
    ".vss": "application/vnd.visio",
    ".vst": "application/vnd.visio",
    ".vsdx": "application/vnd.ms-visio.drawing",
    ".pub": "application/x-mspublisher",
    ".xls": "application/vnd.ms-excel",
    ".xlw": "application/vnd.ms-excel",
    ".doc": "application/msword",
    ".wpd": "application/vnd.wordperfect",
    ".wp": "application/vnd.wordperfect",
    ".wp4": "application/vnd.wordperfect",
    ".wp5": "application/vnd.wordperfect",
    ".wp6": "application/vnd.wordperfect",
}
"""Office types whose files content sniffing may not recognise (Visio, Publisher, BIFF2-4
worksheets without an OLE container, WordPerfect 4.2, which has no magic number): named so, they
go to LibreOffice, whose own type detection decides (and reports what it cannot load)."""


TEXT_EXTENSIONS: dict[str, str] = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".log": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".tab": "text/tab-separated-values",
    ".html": "text/html",
    ".htm": "text/html",
    ".xhtml": "text/html",
    ".py": "text/x-python",
    ".pyi": "text/x-python",
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".ts": "application/x-typescript",
    ".tsx": "text/typescript-tsx",
    ".jsx": "text/jsx",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".yaml": "text/x-yaml",
    ".yml": "text/x-yaml",
    ".toml": "application/toml",
    ".ini": "text/x-ini",
    ".cfg": "text/x-ini",
    ".c": "text/x-csrc",
    ".h": "text/x-chdr",
    ".cc": "text/x-c++src",
    ".cpp": "text/x-c++src",
    ".cxx": "text/x-c++src",
    ".hpp": "text/x-c++hdr",
    ".cs": "text/x-csharp",
    ".java": "text/x-java",
    ".kt": "text/x-kotlin",
    ".go": "text/x-gosrc",
    ".rs": "text/x-rust",
    ".rb": "text/x-ruby",
    ".php": "text/x-php",
    ".sh": "application/x-sh",
    ".bash": "application/x-sh",
    ".ps1": "text/x-powershell",
    ".bat": "application/x-dos-batch",
    ".sql": "text/x-sql",
    ".lua": "text/x-lua",
    ".swift": "text/x-swift",
    ".scala": "text/x-scala",
    ".hs": "text/x-haskell",
    ".css": "text/css",
    ".scss": "text/x-scss",
    ".tex": "text/x-tex",
    ".diff": "text/x-diff",
    ".patch": "text/x-diff",
    ".mk": "text/x-makefile",
    ".rst": "text/x-rst",
    ".xml": "text/xml",
}
"""Text files' types by name, taken when content says only "text" (:func:`is_textual`): which
language a text file is in is a matter of its name (the code types are Pygments' names, which
the text converter picks its lexer by, so the language survives inputs given as bytes)."""

_TEXTUAL = frozenset({"text/plain", "application/json", "application/javascript", "text/xml"})


def text_by_name(mime: str, ext: str) -> str | None:
    """Return the text type extension ``ext`` gives a file sniffed as ``mime``, if any.

    Only answers that say no more than "some kind of text" are refined: plain text, libmagic's
    guesses at code (``text/x-...``: it calls Markdown with an ``import`` line a Python script)
    and bare XML (a Markdown file starting with an HTML tag is sniffed as XML); HTML only into
    Markdown (which may hold HTML). RTF, CSV, SVG and anything else with a signature keep their
    type.
    """
    text = TEXT_EXTENSIONS.get(ext)
    if text is None:
        return None
    if mime in _TEXTUAL or mime == "application/xml" or mime.startswith("text/x-"):
        return text
    if mime == "text/html" and text == "text/markdown":
        return text
    return None
