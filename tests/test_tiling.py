"""Tiled rendering and streamed PNG output: tiles join without seams, bands stream exactly.

A page small enough to render in one piece is also rendered with a tiny tile budget (so in
dozens of tiles, assembled in memory or streamed into the PNG band by band), and the results
must match the single render pixel for pixel, up to a tiny tolerance at tile edges.
"""

from __future__ import annotations

import io
from pathlib import Path

import pymupdf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops
from support import channel_differences, max_difference

from previewer.converters.pdf import PdfConverter
from previewer.converters.raster import RasterConverter
from previewer.errors import InvalidOptionsError
from previewer.geometry import SizeSpec, band_grid
from previewer.options import Limits
from previewer.output import stream_png
from previewer.plugin import ConvertContext
from previewer.rendering import (
    plan_page,
    render_page,
    render_page_png,
    render_tiled,
    to_srgb,
    write_previews,
)
from tests.pngcheck import png_chunks

TINY = Limits(max_tile_pixels=64 * 64)


def _rich_pdf(path: Path, *, rotate: int = 0) -> Path:
    """A page with text, thin and thick lines, filled shapes and an embedded photo-like image."""
    doc = pymupdf.open()
    page = doc.new_page(width=420, height=595)
    shape = page.new_shape()
    for i in range(0, 420, 7):
        shape.draw_line((i, 0), (420 - i, 595))
        shape.finish(color=(i / 420, 0.2, 1 - i / 420), width=0.3 + (i % 3))
    shape.draw_circle((210, 300), 120)
    shape.finish(color=(0, 0, 0), fill=(0.9, 0.6, 0.1), width=2)
    shape.commit()
    photo = Image.radial_gradient("L").resize((300, 200)).convert("RGB")
    photo = Image.merge(
        "RGB",
        (
            photo.getchannel(0),
            photo.rotate(90).getchannel(0),
            photo.getchannel(0).point(lambda v: 255 - v),
        ),
    )
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    page.insert_image(pymupdf.Rect(60, 380, 360, 580), stream=buf.getvalue())
    for line in range(12):
        page.insert_text(
            (20, 30 + line * 14), f"Line {line}: the quick brown fox jumps", fontsize=11
        )
    if rotate:
        page.set_rotation(rotate)
    doc.save(path)
    doc.close()
    return path


def _open(path: Path, limits: Limits, mime: str = "application/pdf"):
    conv = PdfConverter() if mime == "application/pdf" else RasterConverter()
    return conv.open(path, ConvertContext(limits=limits, mime=mime))


def _assert_seamless(tiled: Image.Image, whole: Image.Image) -> None:
    """Tiled equals untiled but for MuPDF's anti-aliasing of strokes cut by a clip.

    MuPDF 1.28 clips path edges against the clip rectangle before rasterising, which moves the
    coverage of thin anti-aliased strokes by a few levels anywhere along them (not only at tile
    edges); images and text render identically. A seam or a row shifted by one pixel would
    raise the mean difference far above this bound (checked against a one-row shift).
    """
    from PIL import ImageStat

    diff = ImageChops.difference(tiled, whole).convert("L")
    mean = ImageStat.Stat(diff).mean[0]
    shifted = ImageChops.difference(
        whole.crop((0, 1, whole.width, whole.height)),
        whole.crop((0, 0, whole.width, whole.height - 1)),
    )
    assert ImageStat.Stat(shifted.convert("L")).mean[0] > 10 * max(mean, 0.2)
    visible = sum(diff.point(lambda v: 255 if v > 16 else 0).histogram()[255:])
    assert mean < 0.6 and visible < 0.01 * diff.width * diff.height, (mean, visible)


def _untiled(doc, size: str, limits: Limits) -> Image.Image:
    (image,) = render_page(doc, 0, [SizeSpec.parse(size)], upscale=False, limits=Limits())
    return image


# --------------------------------------------------------------------------- geometry


@settings(deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(4096, 20_000_000))
def test_bands_cover_exactly_once_within_budget(w: int, h: int, budget: int) -> None:
    bands = band_grid(w, h, budget)
    area = 0
    next_row = 0
    for band in bands:
        y0, y1 = band[0][1], band[0][3]
        assert y0 == next_row, "bands are contiguous, top to bottom"
        next_row = y1
        assert w * (y1 - y0) <= max(budget, w), "a band holds at most max(budget, width) pixels"
        next_col = 0
        for x0, ty0, x1, ty1 in band:
            assert (ty0, ty1) == (y0, y1) and x0 == next_col and x1 > x0
            next_col = x1
            assert (x1 - x0) * (y1 - y0) <= budget, "each tile within the budget"
            area += (x1 - x0) * (y1 - y0)
        assert next_col == w
    assert next_row == h and area == w * h


def test_band_grid_is_one_tile_when_it_fits() -> None:
    assert band_grid(100, 50, 5000) == [[(0, 0, 100, 50)]]
    assert band_grid(100, 50, 4999)[0] == [(0, 0, 100, 49)]
    with pytest.raises(ValueError):
        band_grid(0, 5, 10)


def test_limits_defaults_and_validation() -> None:
    limits = Limits()
    assert limits.max_tile_pixels == 16 * 1024 * 1024
    assert limits.max_pixels == 1024 * 1024 * 1024
    with pytest.raises(InvalidOptionsError, match="max_tile_pixels"):
        Limits(max_tile_pixels=100)
    with pytest.raises(InvalidOptionsError, match="max_tile_pixels"):
        Limits(max_tile_pixels=0)
    with pytest.raises(InvalidOptionsError, match="integer"):
        Limits(max_tile_pixels=2.5e7)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        limits.max_tile_pixels = 5  # type: ignore[misc]


# --------------------------------------------------------------------------- seams


@pytest.mark.parametrize("rotate", [0, 90])
@pytest.mark.parametrize("size", ["700", "450x"])
def test_tiled_pdf_equals_single_render(tmp_path: Path, rotate: int, size: str) -> None:
    pdf = _rich_pdf(tmp_path / "rich.pdf", rotate=rotate)
    with _open(pdf, TINY) as doc:
        whole = _untiled(doc, size, TINY)
        targets, largest, scale = plan_page(
            doc, 0, [SizeSpec.parse(size)], upscale=False, limits=TINY
        )
        assert largest[0] * largest[1] > 20 * TINY.max_tile_pixels  # really many tiles
        tiled = render_tiled(doc, 0, largest, scale, limits=TINY)
        (via_render_page,) = render_page(doc, 0, [SizeSpec.parse(size)], upscale=False, limits=TINY)
    assert tiled.size == whole.size == largest
    _assert_seamless(tiled, whole)
    _assert_seamless(via_render_page, whole)
    # The embedded image matches within rounding of its scaling filter at tile edges.
    image_box = tuple(round(v * scale) for v in (70, 390, 350, 570)) if not rotate else None
    if image_box is not None:
        assert max_difference(tiled.crop(image_box), whole.crop(image_box)) <= 8
    # Not trivially equal: the page has content everywhere.
    assert len(whole.getcolors(1 << 20) or range(10_000)) > 50


def test_streamed_png_equals_single_render(tmp_path: Path) -> None:
    pdf = _rich_pdf(tmp_path / "rich.pdf")
    sizes = [SizeSpec.parse("700"), SizeSpec.parse("64"), SizeSpec.parse("300x")]
    dests = [tmp_path / "out" / f"{s.label}.png" for s in sizes]
    with _open(pdf, TINY) as doc:
        written = write_previews(doc, 0, sizes, dests, upscale=False, limits=TINY)
        whole = _untiled(doc, "700", TINY)
    assert written == [(494, 700), (45, 64), (300, 425)]
    for dest, size in zip(dests, written, strict=True):
        with Image.open(dest) as png:
            assert png.format == "PNG" and png.size == size and png.mode == "RGB"
            png.load()
            if size == (494, 700):
                _assert_seamless(png.convert("RGB"), whole)
        kinds = [kind for kind, _ in png_chunks(dest.read_bytes())]
        assert kinds[:2] == [b"IHDR", b"sRGB"] and set(kinds) == {
            b"IHDR",
            b"sRGB",
            b"IDAT",
            b"IEND",
        }
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["300x.png", "64.png", "700.png"]


def test_fast_path_only_when_output_fits_one_tile(tmp_path: Path) -> None:
    pdf = _rich_pdf(tmp_path / "rich.pdf")
    with _open(pdf, TINY) as doc:
        fast = render_page_png(doc, 0, SizeSpec.parse("64"), upscale=False, limits=TINY)
        assert fast is not None
        data, size = fast
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and size == (45, 64), size
        assert render_page_png(doc, 0, SizeSpec.parse("700"), upscale=False, limits=TINY) is None
        assert doc.render_png(0, size=(495, 700)) is None  # the document checks the budget too
    with _open(pdf, Limits()) as doc:
        png = doc.render_png(0, size=(495, 700))
        assert png is not None and png.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(png)) as image:
            assert image.size == (495, 700)


def test_pdf_clip_gives_exact_pixel_boxes(tmp_path: Path) -> None:
    # Clips whose edges scale to whole pixels give exactly those pixels, even far from the
    # origin of a big page, where MuPDF's single-precision rounding would add or drop a row.
    doc = pymupdf.open()
    page = doc.new_page(width=20_000, height=30_000)
    page.draw_rect(pymupdf.Rect(0, 0, 20_000, 30_000), color=(0, 0, 1), width=50)
    doc.save(tmp_path / "big.pdf")
    scale = 12_000 / 30_000
    with _open(tmp_path / "big.pdf", Limits()) as pdf:
        for box in [(0, 0, 100, 7), (7999, 11_993, 8000, 12_000), (3333, 4567, 3400, 4600)]:
            clip = tuple(v / scale for v in box)
            image = pdf.render(0, scale=scale, clip=clip)
            assert image.size == (box[2] - box[0], box[3] - box[1])
        corner = pdf.render(
            0, scale=scale, clip=tuple(v / scale for v in (7960, 11_960, 8000, 12_000))
        )
    assert corner.size == (40, 40)
    # The 50 pt frame is 20 px wide, centred on the page edge: the last 10 px are blue.
    assert corner.getpixel((39, 39))[2] > 200 and corner.getpixel((39, 39))[0] < 80
    assert corner.getpixel((20, 20)) == (255, 255, 255)


def test_tiled_raster_equals_single_render(tmp_path: Path) -> None:
    image = Image.linear_gradient("L").resize((300, 200))
    rgba = Image.merge(
        "RGBA",
        (
            image,
            image.rotate(180),
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            image.point(lambda v: 128 + v // 2),
        ),
    )
    rgba.save(tmp_path / "a.png")
    sizes = [SizeSpec.parse("300")]
    with _open(tmp_path / "a.png", TINY, "image/png") as doc:
        whole = _untiled(doc, "300", TINY)
        written = write_previews(
            doc, 0, sizes, [tmp_path / "a.out.png"], upscale=False, limits=TINY
        )
    assert written == [(300, 200)] and whole.mode == "RGBA"
    with Image.open(tmp_path / "a.out.png") as png:
        assert png.mode == "RGBA"
        assert max_difference(png.convert("RGBA"), whole) == 0


def test_stream_png_round_trip_and_errors(tmp_path: Path) -> None:
    source = to_srgb(Image.radial_gradient("L").resize((123, 77)).convert("RGB"))
    bands = [source.crop((0, y, 123, min(y + 10, 77))) for y in range(0, 77, 10)]
    buf = io.BytesIO()
    stream_png(buf, 123, 77, iter(bands))
    with Image.open(io.BytesIO(buf.getvalue())) as png:
        assert png.size == (123, 77)
        assert max_difference(png.convert("RGB"), source) == 0
    with pytest.raises(ValueError, match="rows"):
        stream_png(io.BytesIO(), 123, 78, iter(bands))
    with pytest.raises(ValueError, match="does not fit"):
        stream_png(io.BytesIO(), 123, 77, iter([bands[0], bands[1].convert("RGBA")]))


def _exif_rotated_jpeg(path: Path) -> None:
    image = Image.linear_gradient("L").resize((240, 160)).convert("RGB")
    image.paste((255, 0, 0), (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    image.save(path, "JPEG", quality=95, exif=exif)


def _cmyk_jpeg(path: Path) -> None:
    image = Image.linear_gradient("L").resize((240, 160))
    Image.merge(
        "CMYK",
        (image, image.rotate(180), Image.new("L", (240, 160), 30), Image.new("L", (240, 160), 0)),
    ).save(path, "JPEG", quality=95)


def _grey16_png(path: Path) -> None:
    Image.linear_gradient("L").resize((240, 160)).convert("I").point(lambda v: v * 257).convert(
        "I;16"
    ).save(path)


@pytest.mark.parametrize(
    ("maker", "name", "mime"),
    [
        (_exif_rotated_jpeg, "r.jpg", "image/jpeg"),
        (_grey16_png, "g.png", "image/png"),
    ],
)
def test_libvips_path_matches_pillow_path(tmp_path: Path, maker, name: str, mime: str) -> None:
    # Below the tile budget Pillow decodes; above it libvips does: same orientation, colours.
    maker(tmp_path / name)
    with _open(tmp_path / name, Limits(), mime) as doc:
        (pillow,) = render_page(doc, 0, [SizeSpec.parse("120")], upscale=False, limits=Limits())
    with _open(tmp_path / name, TINY, mime) as doc:
        (vips,) = render_page(doc, 0, [SizeSpec.parse("120")], upscale=False, limits=TINY)
    assert pillow.size == vips.size and pillow.mode == vips.mode == "RGB"
    diff = channel_differences(pillow, vips)
    assert max(diff) < 6, diff


def test_libvips_path_colour_manages_cmyk(tmp_path: Path) -> None:
    # libvips converts untagged CMYK through its CMYK profile (Pillow's naive formula would
    # give (223, 32, 225) for this pink): C 13 %, M 87 %, Y 12 %, K 0.
    _cmyk_jpeg(tmp_path / "c.jpg")
    with _open(tmp_path / "c.jpg", TINY, "image/jpeg") as doc:
        (vips,) = render_page(doc, 0, [SizeSpec.parse("120")], upscale=False, limits=TINY)
    r, g, b = vips.getpixel((10, 10))
    assert r > 180 and g < 110 and 100 < b < 170, (r, g, b)
