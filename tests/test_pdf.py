"""PDF, SVG, XPS and EPUB through the real PyMuPDF engine, with inputs generated in ``tmp_path``.

Page rotation, passwords, tiny and multi-size renders, page selection, bytes and stream inputs,
pixel placement on a white page, and atomic output.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pymupdf
import pytest
from PIL import Image
from pngcheck import check_png

import previewer
import previewer.converters.pdf
import previewer.limited
from previewer.api import render
from previewer.errors import (
    EncryptedError,
    ExitCode,
    InputError,
    InvalidOptionsError,
    LimitExceededError,
)

FIXTURES = Path(__file__).parent / "fixtures"
WHITE, RED = (255, 255, 255), (255, 0, 0)


def make_pdf(
    path: Path,
    pages: list[tuple[float, float]] = ((200, 100),),
    *,
    red: tuple[float, float, float, float] | None = (20, 20, 80, 60),
    rotate: int = 0,
    **save_options,
) -> Path:
    """Write a PDF with the given page sizes (pt), each with a red rectangle at ``red``."""
    doc = pymupdf.open()
    for width, height in pages:
        page = doc.new_page(width=width, height=height)
        if red is not None:
            page.draw_rect(pymupdf.Rect(*red), color=(1, 0, 0), fill=(1, 0, 0), width=0)
        page.insert_text((5, height - 5), f"{width:g}x{height:g}", fontsize=6)
        if rotate:
            page.set_rotation(rotate)
    doc.save(path, **save_options)
    doc.close()
    return path


def _colour(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return image.getpixel(xy)[:3]


def _near(actual, expected, tolerance: int = 8) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


# --------------------------------------------------------------------------- geometry


def test_red_rectangle_lands_where_it_is_on_a_white_page(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "rect.pdf")  # 200x100 pt, red at x 20..80, y 20..60

    (preview,) = previewer.convert(pdf, out_dir=tmp_path / "out", sizes=[256])

    image = check_png(preview.path, expected_size=(256, 128))
    assert image.mode == "RGB"
    scale = 256 / 200
    assert _near(_colour(image, (int(50 * scale), int(40 * scale))), RED, 2)
    for x, y in [(0, 0), (255, 0), (255, 127), (int(150 * scale), int(40 * scale)), (10, 10)]:
        assert _colour(image, (x, y)) == WHITE, f"({x}, {y}) is not white"
    # The red area covers the rectangle scaled, to within a pixel of antialiasing.
    red = [(x, y) for x in range(256) for y in range(128) if _near(_colour(image, (x, y)), RED, 40)]
    xs, ys = [x for x, _ in red], [y for _, y in red]
    assert abs(min(xs) - 20 * scale) <= 1.5 and abs(max(xs) + 1 - 80 * scale) <= 1.5
    assert abs(min(ys) - 20 * scale) <= 1.5 and abs(max(ys) + 1 - 60 * scale) <= 1.5


def test_rotated_page_gives_landscape_output(tmp_path: Path) -> None:
    # A 200x300 portrait page, red square in its top-left corner, shown with /Rotate 90.
    pdf = make_pdf(tmp_path / "rot.pdf", [(200, 300)], red=(0, 0, 50, 50), rotate=90)

    (preview,) = previewer.convert(pdf, out_dir=tmp_path / "out", sizes=[256])

    image = check_png(preview.path, expected_size=(256, 171), aspect=(300, 200))
    # Rotating 90 degrees clockwise moves the top-left corner to the top-right.
    assert _near(_colour(image, (250, 5)), RED, 2)
    assert _colour(image, (5, 165)) == WHITE and _colour(image, (250, 165)) == WHITE
    assert _colour(image, (128, 85)) == WHITE
    assert previewer.info(pdf).page_sizes == [(300.0, 200.0)]


def test_corpus_page_with_rotate_90_is_landscape(tmp_path: Path) -> None:
    pdf = FIXTURES / "corpus" / "pdf" / "rotation.pdf"  # page 2 has /Rotate 90
    first, second = previewer.convert(pdf, out_dir=tmp_path, sizes=[256], pages="all")
    check_png(first.path, expected_size=(198, 256))
    check_png(second.path, expected_size=(256, 198))


def test_tiny_page_is_scaled_up_to_the_box(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "tiny.pdf", [(10, 10)], red=(0, 0, 5, 5))

    (preview,) = previewer.convert(pdf, out_dir=tmp_path / "out", sizes=[256])

    image = check_png(preview.path, expected_size=(256, 256), longest=256, aspect=(1, 1))
    assert _near(_colour(image, (64, 64)), RED, 2)
    assert _colour(image, (192, 192)) == WHITE


def test_several_sizes_come_from_one_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pdf = make_pdf(tmp_path / "sizes.pdf", [(400, 600)], red=(0, 0, 200, 300))
    renders: list[float] = []
    real_render = previewer.converters.pdf.PdfDocument.render

    def counting_render(self, index, *, scale, clip=None):  # a spy: the real render runs
        renders.append(scale)
        return real_render(self, index, scale=scale, clip=clip)

    monkeypatch.setattr(previewer.converters.pdf.PdfDocument, "render", counting_render)
    monkeypatch.setattr(previewer.limited, "ISOLATE", False)  # the spy counts in this process

    previews = previewer.convert(pdf, out_dir=tmp_path / "out", sizes=[128, 512, "300x"])

    assert len(renders) == 1, f"page rendered {len(renders)} times"
    assert [(p.size, p.width, p.height) for p in previews] == [
        ("128", 85, 128),
        ("512", 341, 512),
        ("300x", 300, 450),
    ]
    for preview in previews:
        image = check_png(preview.path, expected_size=(preview.width, preview.height))
        assert _near(_colour(image, (image.width // 4, image.height // 4)), RED, 4)
        assert _colour(image, (image.width * 3 // 4, image.height * 3 // 4)) == WHITE
    assert _files(tmp_path / "out") == sorted(
        ["sizes.pdf.p1.128.png", "sizes.pdf.p1.512.png", "sizes.pdf.p1.300x.png"]
    )


def test_pages_of_different_sizes_keep_their_own_aspect(tmp_path: Path) -> None:
    pdf = FIXTURES / "corpus" / "pdf" / "sizes.pdf"  # 612x792, 649x323, 792x612 pt
    previews = previewer.convert(pdf, out_dir=tmp_path, sizes=["x100"], pages="all")
    assert [(p.page, p.width, p.height) for p in previews] == [
        (1, 77, 100),
        (2, 201, 100),
        (3, 129, 100),
    ]
    for preview, aspect in zip(previews, [(612, 792), (649, 323), (792, 612)], strict=True):
        check_png(preview.path, expected_size=(preview.width, preview.height), aspect=aspect)


# --------------------------------------------------------------------------- pages


def test_page_range_is_clipped_to_the_document(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "two.pdf", [(200, 100), (100, 200)])

    previews = previewer.convert(pdf, out_dir=tmp_path / "out", pages="1-3")

    assert [(p.page, p.width, p.height) for p in previews] == [(1, 256, 128), (2, 128, 256)]
    assert _files(tmp_path / "out") == ["two.pdf.p1.256.png", "two.pdf.p2.256.png"]
    assert len(previewer.convert(pdf, out_dir=tmp_path / "all", pages="all")) == 2


def test_page_beyond_the_end_is_an_options_error(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "two.pdf", [(200, 100), (200, 100)])

    with pytest.raises(InvalidOptionsError, match="2 pages") as excinfo:
        previewer.convert(pdf, out_dir=tmp_path / "out", pages=5)
    assert "two.pdf" in str(excinfo.value)
    assert excinfo.value.exit_code == ExitCode.USAGE
    with pytest.raises(InvalidOptionsError, match="2 pages"):
        render(pdf, page=5)
    assert _files(tmp_path / "out") == []


# --------------------------------------------------------------------------- passwords


@pytest.fixture
def locked_pdf(tmp_path: Path) -> Path:
    return make_pdf(
        tmp_path / "locked.pdf",
        encryption=pymupdf.PDF_ENCRYPT_AES_256,
        user_pw="open sesame",
        owner_pw="owner secret",
    )


def test_encrypted_pdf_opens_with_its_password(locked_pdf: Path, tmp_path: Path) -> None:
    (preview,) = previewer.convert(locked_pdf, out_dir=tmp_path / "out", password="open sesame")
    image = check_png(preview.path, expected_size=(256, 128))
    assert _near(_colour(image, (64, 51)), RED, 2)
    assert previewer.info(locked_pdf, password="open sesame").pages == 1
    assert render(locked_pdf, password="open sesame").size == (256, 128)


@pytest.mark.parametrize("password", [None, "", "wrong"], ids=["none", "empty", "wrong"])
def test_encrypted_pdf_without_the_password_fails(
    locked_pdf: Path, tmp_path: Path, password: str | None
) -> None:
    with pytest.raises(EncryptedError) as excinfo:
        previewer.convert(locked_pdf, out_dir=tmp_path / "out", password=password)

    error = excinfo.value
    assert isinstance(error, InputError) and error.exit_code == ExitCode.BAD_INPUT == 5
    assert "locked.pdf" in str(error) and "password" in str(error)
    assert _files(tmp_path / "out") == []
    with pytest.raises(EncryptedError):
        previewer.info(locked_pdf, password=password)


# --------------------------------------------------------------------------- inputs


def test_bytes_input(tmp_path: Path) -> None:
    data = make_pdf(tmp_path / "src.pdf").read_bytes()

    (named,) = previewer.convert(data, out_dir=tmp_path / "out", name="report.pdf")
    (anonymous,) = previewer.convert(data, out_dir=tmp_path / "anon")
    image = render(data, size=128, name="report.pdf")

    assert named.path == tmp_path / "out" / "report.pdf.p1.256.png"
    assert named.source == "report.pdf" and named.mime == "application/pdf"
    assert anonymous.path.parent == tmp_path / "anon" and anonymous.path.name.endswith(
        ".p1.256.png"
    )
    check_png(named.path, expected_size=(256, 128))
    assert image.size == (128, 64) and image.mode == "RGB"
    assert _near(_colour(image, (32, 25)), RED, 2)


def test_file_object_input(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "src.pdf")

    with open(pdf, "rb") as fh:
        (preview,) = previewer.convert(fh, out_dir=tmp_path / "out", name="stream.pdf")
    image = render(io.BytesIO(pdf.read_bytes()), size="x64", name="stream.pdf")

    assert preview.path == tmp_path / "out" / "stream.pdf.p1.256.png"
    check_png(preview.path, expected_size=(256, 128))
    assert image.size == (128, 64)


def test_broken_bytes_are_reported_under_their_name(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        previewer.convert(b"%PDF-1.7\n% nothing else\n", out_dir=tmp_path, name="broken.pdf")
    assert "broken.pdf" in str(excinfo.value)
    assert _files(tmp_path) == []


# --------------------------------------------------------------------------- other formats

SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" viewBox="0 0 200 100">
  <rect x="0" y="0" width="100" height="50" fill="#ff0000"/>
  <circle cx="150" cy="75" r="20" fill="#0000ff"/>
</svg>
"""

XPS_PARTS = {
    "[Content_Types].xml": """<?xml version="1.0" encoding="utf-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
  <Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
  <Default Extension="fdseq" ContentType="application/vnd.ms-package.xps-fixeddocumentsequence+xml"/>
  <Default Extension="fdoc" ContentType="application/vnd.ms-package.xps-fixeddocument+xml"/>
  <Default Extension="fpage" ContentType="application/vnd.ms-package.xps-fixedpage+xml"/>
</Types>""",
    "_rels/.rels": """<?xml version="1.0" encoding="utf-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
  <Relationship Id="R0" Target="/FixedDocSeq.fdseq"
    Type="http://schemas.microsoft.com/xps/2005/06/fixedrepresentation"/>
</Relationships>""",
    "FixedDocSeq.fdseq": """<FixedDocumentSequence xmlns="http://schemas.microsoft.com/xps/2005/06">
  <DocumentReference Source="/Documents/1/FixedDoc.fdoc"/>
</FixedDocumentSequence>""",
    "Documents/1/FixedDoc.fdoc": """<FixedDocument xmlns="http://schemas.microsoft.com/xps/2005/06">
  <PageContent Source="/Documents/1/Pages/1.fpage"/>
  <PageContent Source="/Documents/1/Pages/2.fpage"/>
</FixedDocument>""",
    # XPS units are 1/96 inch: 480x320 is 360x240 pt. Red fills the top-left quarter.
    "Documents/1/Pages/1.fpage": """<FixedPage xmlns="http://schemas.microsoft.com/xps/2005/06"
  Width="480" Height="320" xml:lang="en">
  <Path Data="M 0,0 L 240,0 240,160 0,160 Z" Fill="#FFFF0000"/>
</FixedPage>""",
    "Documents/1/Pages/2.fpage": """<FixedPage xmlns="http://schemas.microsoft.com/xps/2005/06"
  Width="480" Height="320" xml:lang="en">
  <Path Data="M 240,160 L 480,160 480,320 240,320 Z" Fill="#FF0000FF"/>
</FixedPage>""",
}

EPUB_PARTS = {
    "META-INF/container.xml": """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles>
    <rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>
  </rootfiles>
</container>""",
    "OEBPS/content.opf": """<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="id">urn:uuid:2d7c1c0e-previewer-test</dc:identifier>
    <dc:title>Previewer test book</dc:title>
    <dc:language>en</dc:language>
    <meta property="dcterms:modified">2024-01-01T00:00:00Z</meta>
  </metadata>
  <manifest>
    <item id="c1" href="chapter1.xhtml" media-type="application/xhtml+xml"/>
  </manifest>
  <spine><itemref idref="c1"/></spine>
</package>""",
    "OEBPS/chapter1.xhtml": """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>One</title></head>
<body>
  <h1>Chapter one</h1>
  <div style="background-color: #ff0000; height: 120pt; width: 200pt"></div>
  <p>The quick brown fox jumps over the lazy dog.</p>
</body></html>""",
}


def _zip(path: Path, parts: dict[str, str], first: tuple[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        if first is not None:  # EPUB: an uncompressed "mimetype" entry must come first
            zf.writestr(first[0], first[1], compress_type=zipfile.ZIP_STORED)
        for name, text in parts.items():
            zf.writestr(name, text, compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_svg_renders(tmp_path: Path) -> None:
    (tmp_path / "drawing.svg").write_bytes(SVG)

    (preview,) = previewer.convert(tmp_path / "drawing.svg", out_dir=tmp_path / "out")

    assert preview.mime == "image/svg+xml" and preview.converter == "pdf-pymupdf"
    image = check_png(preview.path, expected_size=(256, 128), aspect=(200, 100))
    assert _near(_colour(image, (40, 20)), RED, 2)
    assert _near(_colour(image, (192, 96)), (0, 0, 255), 2)
    assert _colour(image, (200, 10)) == WHITE  # transparent SVG background shown on white


def test_xps_renders(tmp_path: Path) -> None:
    xps = _zip(tmp_path / "doc.xps", XPS_PARTS)

    previews = previewer.convert(xps, out_dir=tmp_path / "out", pages="all")

    assert [p.page for p in previews] == [1, 2]
    assert previews[0].mime == "application/vnd.ms-xpsdocument"
    first = check_png(previews[0].path, expected_size=(256, 171), aspect=(360, 240))
    second = check_png(previews[1].path, expected_size=(256, 171))
    assert _near(_colour(first, (60, 40)), RED, 2) and _colour(first, (200, 130)) == WHITE
    assert _near(_colour(second, (200, 130)), (0, 0, 255), 2)
    assert _colour(second, (60, 40)) == WHITE
    info = previewer.info(xps)
    assert info.pages == 2
    assert info.page_sizes[0] == pytest.approx((360.0, 240.0))


def test_epub_renders(tmp_path: Path) -> None:
    epub = _zip(tmp_path / "book.epub", EPUB_PARTS, first=("mimetype", "application/epub+zip"))

    (preview,) = previewer.convert(epub, out_dir=tmp_path / "out")

    assert preview.mime == "application/epub+zip"
    # EPUB is reflowed onto 400x600 pt pages.
    image = check_png(preview.path, expected_size=(171, 256), aspect=(400, 600))
    reds = sum(
        1
        for x in range(0, image.width, 4)
        for y in range(0, image.height, 4)
        if _near(_colour(image, (x, y)), RED, 30)
    )
    assert reds > 20, "the red block of chapter 1 is not on page 1"
    assert previewer.info(epub).pages >= 1


# --------------------------------------------------------------------------- limits


def test_output_pixel_budget(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "doc.pdf")  # 200x100 pt: 20000 px wide is 200 megapixels

    with pytest.raises(LimitExceededError, match="doc.pdf"):
        previewer.convert(pdf, out_dir=tmp_path / "out", sizes=[128, 20000])
    assert _files(tmp_path / "out") == []
    small = previewer.Limits(max_output_pixels=256 * 128)
    assert len(previewer.convert(pdf, out_dir=tmp_path / "ok", limits=small)) == 1


def test_file_size_and_page_limits(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "doc.pdf", [(200, 100)] * 3)

    with pytest.raises(LimitExceededError, match="doc.pdf"):
        previewer.convert(pdf, out_dir=tmp_path / "out", limits=previewer.Limits(max_file_size=100))
    with pytest.raises(LimitExceededError, match="bytes.pdf"):
        previewer.convert(
            pdf.read_bytes(),
            out_dir=tmp_path / "out",
            name="bytes.pdf",
            limits=previewer.Limits(max_file_size=100),
        )
    with pytest.raises(LimitExceededError, match="3 pages"):
        previewer.convert(
            pdf, out_dir=tmp_path / "out", pages="all", limits=previewer.Limits(max_pages=2)
        )
    assert _files(tmp_path / "out") == []


# --------------------------------------------------------------------------- output


def test_outputs_are_atomic_and_overwrite_in_place(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "doc.pdf", [(200, 100), (100, 200), (300, 300)])
    out = tmp_path / "out"
    out.mkdir()
    stale = out / "doc.pdf.p2.128.png"
    stale.write_bytes(b"an old preview")

    previews = previewer.convert(pdf, out_dir=out, sizes=[128, "64x64"], pages="all")

    assert len(previews) == 6
    names = _files(out)
    assert names == sorted(p.path.name for p in previews)
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")]
    check_png(stale, expected_size=(64, 128))  # replaced, not appended to
