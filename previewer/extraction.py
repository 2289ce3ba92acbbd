"""Metadata on request (``previewer.metadata``): checksums, EXIF, GPS, text, OCR, media, PSD.

``previewer info --metadata KEYS``, :func:`previewer.api.metadata` and ``info(metadata=...)``
name the keys (:data:`KEYS`); :func:`parse_keys` checks them and :func:`extract` computes each
on an input the pipeline has opened, inside the same limited call (a child process under the
timeout and memory cap, see :mod:`previewer.placement`). Keys that need no document
(``checksum``, ``exif``, ``gps``, ``multimedia``, and ``text`` of a text file) work on any file,
even one no converter claims; the others use the converter's open document.

What each key gives (None when it does not apply to the input):

- ``checksum``: ``sha256``, ``sha1`` and ``md5`` of the bytes (one pass over the file).
- ``exif``: the EXIF tags by name (:mod:`previewer.exif`), GPS tags left out.
- ``gps``: the GPS tags, with ``latitude``/``longitude`` in signed degrees. Never part of
  ``exif`` or ``all``: a location is only given when asked for by name.
- ``text``: the document's text layer (PDF, XPS, EPUB, SVG..., Office documents through the PDF
  LibreOffice exports), or a text file's own text: at most :data:`MAX_TEXT_CHARS` characters of
  at most ``Limits.max_pages`` pages.
- ``ocr``: Tesseract's reading (English) of the first :data:`OCR_PAGES` pages rendered at
  300 dpi (raster images at their own size), each within the tile budget.
- ``multimedia``: ffprobe's facts of audio and video files (:mod:`previewer.mediaprobe`).
- ``psd``: the Photoshop document's facts (format, canvas, colour mode, depth, layers).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from previewer.budgets import Limits
from previewer.errors import EngineUnavailableError, InvalidOptionsError, PreviewerError
from previewer.plugin import Document

__all__ = [
    "ALL",
    "DOCUMENT_KEYS",
    "KEYS",
    "MAX_TEXT_CHARS",
    "OCR_DPI",
    "OCR_PAGES",
    "Target",
    "extract",
    "needs_document",
    "parse_keys",
]

log = logging.getLogger(__name__)

KEYS = ("checksum", "exif", "gps", "text", "ocr", "multimedia", "psd")
"""Every metadata key, in the order results list them."""

ALL = tuple(k for k in KEYS if k != "gps")
"""What ``all`` stands for: every key but ``gps`` (a location is given only when named)."""

DOCUMENT_KEYS = frozenset({"text", "ocr", "psd"})
"""Keys read from the converter's open document (the others need only the file)."""

MAX_TEXT_CHARS = 1_000_000
"""Most characters ``text`` returns (``truncated`` says when there was more)."""

OCR_PAGES = 3
"""Pages OCR reads, from the first (fewer when ``Limits.max_pages`` is lower)."""

OCR_DPI = 300
"""Resolution vector pages are rendered at for OCR."""

TESSERACT = "tesseract"
"""The OCR program (Debian: ``tesseract-ocr``, with ``tesseract-ocr-eng``)."""

OCR_LANGUAGE = "eng"

PSD_TYPES = frozenset({"image/vnd.adobe.photoshop", "image/x-photoshop", "application/x-photoshop"})

TEXT_FILE_EXCLUDED = frozenset({"text/html", "text/rtf", "text/xml"})
"""``text/*`` types that are markup, not text: their text comes from their document, if any."""


def parse_keys(keys: str | Iterable[str]) -> tuple[str, ...]:
    """Check metadata keys and return them in :data:`KEYS` order, without repeats.

    Args:
        keys: ``"exif,text"`` or an iterable of names; ``all`` stands for :data:`ALL`. Case
            and spaces around names are ignored.

    Returns:
        The keys.

    Raises:
        InvalidOptionsError: A name is not a key (the message lists the valid ones), or none
            is given.
    """
    names = keys.split(",") if isinstance(keys, str) else list(keys)
    wanted: set[str] = set()
    for raw in names:
        if not isinstance(raw, str):
            raise InvalidOptionsError(f"metadata keys must be strings, not {raw!r}")
        name = raw.strip().lower()
        if not name:
            continue
        if name == "all":
            wanted.update(ALL)
        elif name in KEYS:
            wanted.add(name)
        else:
            raise InvalidOptionsError(
                f"unknown metadata key {raw.strip()!r}; valid keys: {', '.join(KEYS)}, all"
            )
    if not wanted:
        raise InvalidOptionsError(f"no metadata key given; valid keys: {', '.join(KEYS)}, all")
    return tuple(k for k in KEYS if k in wanted)


def needs_document(keys: Iterable[str]) -> bool:
    """Tell whether any of ``keys`` is read from the converter's document.

    Args:
        keys: Metadata keys.

    Returns:
        True when one of them is in :data:`DOCUMENT_KEYS`.
    """
    return any(k in DOCUMENT_KEYS for k in keys)


@dataclass
class Target:
    """The input metadata is extracted from.

    Attributes:
        path: The file (a temporary copy for bytes and streams).
        mime: Its sniffed MIME type.
        display: The input as the user named it (for messages).
        limits: Budgets.
        doc: The converter's open document, or None when no converter was used.
    """

    path: Path
    mime: str
    display: str
    limits: Limits
    doc: Document | None = None
    _workdir: Path | None = field(default=None, repr=False)
    _held: Any = field(default=None, repr=False)

    def workdir(self) -> Path:
        """A private directory for the programs run, created on first use."""
        if self._workdir is None:
            from previewer import tempdirs

            held = tempdirs.make("previewer-meta-")
            self._workdir = held.path
            self._held = held
        return self._workdir

    def cleanup(self) -> None:
        """Remove the private directory, if one was made."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._held.release()
            self._workdir = self._held = None


def extract(keys: Iterable[str], target: Target) -> dict[str, Any]:
    """Compute each metadata key of ``target``.

    Args:
        keys: Keys from :func:`parse_keys`.
        target: The input.

    Returns:
        Key -> value (JSON-safe), None where the key does not apply to the input.

    Raises:
        PreviewerError: A subclass naming the input: a needed program is missing
            (``EngineUnavailableError``), failed or timed out.
    """
    keys = tuple(keys)
    results: dict[str, Any] = {}
    with _named(target.display):
        try:
            exif_pair: tuple[Any, Any] | None = None
            for key in keys:
                if key in ("exif", "gps"):
                    if exif_pair is None:
                        from previewer.exif import read_exif

                        exif_pair = read_exif(
                            target.path, target.mime, target.limits, target.workdir()
                        )
                    results[key] = exif_pair[0] if key == "exif" else exif_pair[1]
                else:
                    results[key] = _EXTRACTORS[key](target)
        finally:
            target.cleanup()
    return results


@contextmanager
def _named(display: str) -> Iterator[None]:
    try:
        yield
    except PreviewerError as exc:
        if exc.path is None:
            exc.path = display
        raise


def _checksum(target: Target) -> dict[str, Any]:
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(usedforsecurity=False)
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(target.path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            size += len(chunk)
            sha256.update(chunk)
            sha1.update(chunk)
            md5.update(chunk)
    return {
        "sha256": sha256.hexdigest(),
        "sha1": sha1.hexdigest(),
        "md5": md5.hexdigest(),
        "bytes": size,
    }


def _text(target: Target) -> dict[str, Any] | None:
    if target.mime.startswith("text/") and target.mime not in TEXT_FILE_EXCLUDED:
        with open(target.path, "rb") as fh:
            raw = fh.read(MAX_TEXT_CHARS * 4 + 1)
        more = len(raw) > MAX_TEXT_CHARS * 4
        text = _decode(raw[: MAX_TEXT_CHARS * 4])
        return _text_result(text, more, "file", None)
    if target.doc is None:
        return None
    pages = min(target.doc.page_count, target.limits.max_pages)
    layer = target.doc.text(max_pages=pages, max_chars=MAX_TEXT_CHARS)
    if layer is None:
        return None
    return _text_result(layer, target.doc.page_count > pages, "document", pages)


def _text_result(text: str, more: bool, source: str, pages: int | None) -> dict[str, Any]:
    truncated = more or len(text) > MAX_TEXT_CHARS
    result: dict[str, Any] = {
        "text": text[:MAX_TEXT_CHARS],
        "characters": min(len(text), MAX_TEXT_CHARS),
        "truncated": truncated,
        "source": source,
    }
    if pages is not None:
        result["pages"] = pages
    return result


def _decode(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", "replace")
    return raw.decode("utf-8-sig", "replace")


def tesseract_path() -> str | None:
    """Return Tesseract's absolute path, or None when it is not installed."""
    return shutil.which(TESSERACT, path="/usr/local/bin:/usr/bin:/bin")


def _ocr(target: Target) -> dict[str, Any] | None:
    doc = target.doc
    if doc is None:
        return None
    program = tesseract_path()
    if program is None:
        raise EngineUnavailableError(
            "Tesseract is not installed, so text cannot be recognised (ocr)",
            hint="install it: apt-get install tesseract-ocr",
        )
    from previewer import output, process, programs
    from previewer.errors import EngineError
    from previewer.rendering import render_page

    count = min(doc.page_count, OCR_PAGES, target.limits.max_pages)
    texts = []
    workdir = target.workdir()
    for index in range(count):
        size = _ocr_size(doc, index, target.limits)
        (image,) = render_page(doc, index, [size], upscale=True, limits=target.limits)
        page_png = workdir / f"page-{index + 1}.png"
        output.flatten(image).convert("L").save(page_png, "PNG", compress_level=1)
        del image
        result = programs.run(
            [program, os.fspath(page_png), "stdout", "-l", OCR_LANGUAGE],
            timeout=target.limits.timeout,
            cwd=workdir,
            # One thread: OpenMP's default costs 3.6x the CPU for the same page (ENGINES.md).
            env=process.minimal_env(workdir, {"OMP_THREAD_LIMIT": "1"}),
            read=(page_png,),
            allow_unisolated=target.limits.allow_unisolated,
        )
        page_png.unlink()
        try:
            texts.append(result.stdout.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise EngineError(f"tesseract printed text that is not UTF-8: {exc}") from exc
    return {
        "text": "\f".join(t.strip() for t in texts),
        "pages": count,
        "language": OCR_LANGUAGE,
        "dpi": OCR_DPI if doc.units == "pt" else None,
    }


def _ocr_size(doc: Document, index: int, limits: Limits) -> Any:
    """The box a page is rendered into for OCR: 300 dpi, or a raster's own size, within budget."""
    from previewer.geometry import SizeSpec

    width, height = doc.page_size(index)
    if doc.units == "pt":
        width, height = width * OCR_DPI / 72, height * OCR_DPI / 72
    budget = min(limits.max_tile_pixels, limits.max_output_pixels)
    if width * height > budget:
        shrink = math.sqrt(budget / (width * height))
        width, height = width * shrink, height * shrink
    return SizeSpec(max(1, math.floor(width)), max(1, math.floor(height)))


def _multimedia(target: Target) -> dict[str, Any] | None:
    from previewer import mediaprobe

    if mediaprobe.demuxer(target.mime) is None:
        return None
    return mediaprobe.probe(target.path, target.mime, target.limits, target.workdir())


def _psd(target: Target) -> dict[str, Any] | None:
    if target.doc is None or target.mime not in PSD_TYPES:
        return None
    return dict(target.doc.metadata())


_EXTRACTORS: dict[str, Callable[[Target], Any]] = {
    "checksum": _checksum,
    "text": _text,
    "ocr": _ocr,
    "multimedia": _multimedia,
    "psd": _psd,
}
