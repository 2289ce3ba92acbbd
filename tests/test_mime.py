"""Content sniffing: signatures, container look-in, extension only as tie-breaker."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from previewer.mime import sniff

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def image_bytes(fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("TIFF", "image/tiff"),
        ("BMP", "image/bmp"),
        ("ICO", "image/vnd.microsoft.icon"),
    ],
)
def test_image_signatures_ignore_the_extension(tmp_path: Path, fmt: str, mime: str) -> None:
    assert sniff(write(tmp_path, "picture.pdf", image_bytes(fmt))) == mime


def test_pdf_named_jpg(tmp_path: Path) -> None:
    assert sniff(write(tmp_path, "x.jpg", (SAMPLES / "report.pdf").read_bytes())) == (
        "application/pdf"
    )


def test_pdf_with_leading_garbage(tmp_path: Path) -> None:
    data = b"\x00" * 100 + (SAMPLES / "report.pdf").read_bytes()
    assert sniff(write(tmp_path, "x", data)) == "application/pdf"


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("entries", "mime"),
    [
        (
            {"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>"},
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (
            {"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<w/>"},
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        (
            {"[Content_Types].xml": b"<Types/>", "ppt/presentation.xml": b"<p/>"},
            "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        ),
        (
            {"mimetype": b"application/epub+zip", "META-INF/container.xml": b"<c/>"},
            "application/epub+zip",
        ),
        (
            {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<c/>"},
            "application/vnd.oasis.opendocument.text",
        ),
        (
            {"[Content_Types].xml": b"<Types/>", "FixedDocumentSequence.fdseq": b"<f/>"},
            "application/vnd.ms-xpsdocument",
        ),
        ({"001.jpg": b"x", "002.png": b"y"}, "application/vnd.comicbook+zip"),
        ({"readme.txt": b"hello"}, "application/zip"),
    ],
)
def test_zip_containers_are_looked_into(
    tmp_path: Path, entries: dict[str, bytes], mime: str
) -> None:
    assert sniff(write(tmp_path, "no-extension", zip_bytes(entries))) == mime


def test_plain_zip_is_refined_only_by_a_plausible_extension(tmp_path: Path) -> None:
    data = zip_bytes({"readme.txt": b"hello"})
    assert sniff(write(tmp_path, "a.epub", data)) == "application/epub+zip"
    assert sniff(write(tmp_path, "a.jpg", data)) == "application/zip"


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (
            b'<?xml version="1.0"?>\n<!-- c -->\n<svg xmlns="http://www.w3.org/2000/svg"/>',
            "image/svg+xml",
        ),
        (b"<svg width='10' height='10'></svg>", "image/svg+xml"),
        (b'\xef\xbb\xbf<?xml version="1.0"?><!DOCTYPE svg><svg/>', "image/svg+xml"),
        (
            b'<?xml version="1.0"?><FictionBook xmlns="x"></FictionBook>',
            "application/x-fictionbook+xml",
        ),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "application/postscript"),
        (b"8BPS\x00\x01" + b"\x00" * 30, "image/vnd.adobe.photoshop"),
    ],
)
def test_text_and_other_signatures(tmp_path: Path, data: bytes, mime: str) -> None:
    assert sniff(write(tmp_path, "file.bin", data)) == mime


def test_empty_and_random(tmp_path: Path) -> None:
    assert sniff(write(tmp_path, "empty.pdf", b"")) == "application/x-empty"
    noise = random.Random(1).randbytes(4096)
    assert sniff(write(tmp_path, "random.pdf", noise)) == "application/octet-stream"


def test_csv_only_when_named(tmp_path: Path) -> None:
    data = b"a,b,c\n1,2,3\n"
    assert sniff(write(tmp_path, "table.csv", data)) == "text/csv"
    assert sniff(write(tmp_path, "table.txt", data)) == "text/plain"


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"gimp xcf v011\x00" + b"\x00\x00\x02\x12\x00\x00\x00\xbd" + b"\x00" * 20, "image/x-xcf"),
        (b"P1\n2 2\n0 1 1 0\n", "image/x-portable-bitmap"),
        (b"P4 2 2\n\x00\x00", "image/x-portable-bitmap"),
        (b"P2\n# c\n2 2 255\n0 1 2 3\n", "image/x-portable-graymap"),
        (b"P5\n2 2\n255\n\x00\x01\x02\x03", "image/x-portable-graymap"),
        (b"P3\n1 1\n255\n1 2 3\n", "image/x-portable-pixmap"),
        (b"P6\n1 1\n255\n\x01\x02\x03", "image/x-portable-pixmap"),
        (
            b"P7\nWIDTH 1\nHEIGHT 1\nDEPTH 1\nMAXVAL 255\nENDHDR\n\x00",
            "image/x-portable-arbitrarymap",
        ),
        (b"DDS |\x00\x00\x00" + b"\x00" * 120, "image/vnd-ms.dds"),
        (b"\x01\xda\x01\x01\x00\x03" + b"\x00" * 100, "image/x-sgi"),
        (b"\x0a\x05\x01\x08" + b"\x00" * 124, "image/x-pcx"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00\x00\x14ftypjp2 ", "image/jp2"),
        (b"\xff\x4f\xff\x51\x00\x2f" + b"\x00" * 40, "image/x-jp2-codestream"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "image/avif"),
    ],
    ids=[
        "xcf",
        "p1",
        "p4",
        "p2",
        "p5",
        "p3",
        "p6",
        "p7",
        "dds",
        "sgi",
        "pcx",
        "jp2",
        "j2k",
        "heic",
        "avif",
    ],
)
def test_imagemagick_signatures(tmp_path: Path, data: bytes, mime: str) -> None:
    assert sniff(write(tmp_path, "file.bin", data)) == mime
