"""Raster sources through the real Pillow engine, with inputs generated in ``tmp_path``.

Colour handling (CMYK with and without an ICC profile, RGB with a non-sRGB profile, 16-bit grey,
palette transparency), frames and pages (animations, multi-page TIFF), EXIF orientation, the
JPEG draft path, upscaling and the size syntaxes. The ICC profiles are built here, byte by byte,
so the tests depend on no profile installed on the machine.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image, ImageCms, ImageDraw, ImageOps, JpegImagePlugin
from pngcheck import check_png, png_chunks
from support import partial_outputs, run_previewer, worst_channel_difference

import previewer
import previewer.limited
from previewer.api import render

FIXTURES = Path(__file__).parent / "fixtures"

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def _close(actual: Sequence[int], expected: Sequence[int], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def _assert_colour(image: Image.Image, xy: tuple[int, int], expected, tolerance=12) -> None:
    pixel = image.getpixel(xy)
    assert _close(pixel[: len(expected)], expected, tolerance), (
        f"pixel {xy} is {pixel}, expected {expected} +-{tolerance}"
    )


def _convert_one(path: Path, out_dir: Path, **kwargs) -> tuple[previewer.Preview, Image.Image]:
    (preview,) = previewer.convert(path, out_dir=out_dir, **kwargs)
    return preview, check_png(preview.path, expected_size=(preview.width, preview.height))


def _no_leftovers(directory: Path) -> None:
    stray = partial_outputs(directory)
    assert not stray, f"temporary files left behind: {stray}"


# --------------------------------------------------------------------------- ICC profiles
# Minimal ICC v2 profiles (ICC.1:2001-04): a 128-byte header, a tag table, tag data.

_D50 = (0.9642, 1.0, 0.8249)


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15f16(x) + _s15f16(y) + _s15f16(z)


def _desc_tag(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    return (
        b"desc" + bytes(4) + struct.pack(">I", len(ascii_)) + ascii_
        + struct.pack(">II", 0, 0)  # no Unicode description
        + struct.pack(">HB", 0, 0) + bytes(67)  # no ScriptCode description
    )  # fmt: skip


def _curve_tag(gamma: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))


def _profile(device_class: bytes, space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes]]):
    table = struct.pack(">I", len(tags))
    data = b""
    base = 128 + 4 + 12 * len(tags)
    for signature, body in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", base + len(data), len(body))
        data += body
    data += bytes(-len(data) % 4)
    header = (
        struct.pack(">I", 128 + len(table) + len(data)) + bytes(4)
        + struct.pack(">I", 0x02100000) + device_class + space + pcs
        + bytes(12) + b"acsp" + bytes(28)
        + _s15f16(_D50[0]) + _s15f16(_D50[1]) + _s15f16(_D50[2])
    )  # fmt: skip
    header += bytes(128 - len(header))
    return header + table + data


def rgb_profile(name: str, red, green, blue, gamma: float) -> bytes:
    """A matrix/TRC RGB display profile from D50-adapted colorants and one gamma."""
    return _profile(
        b"mntr",
        b"RGB ",
        b"XYZ ",
        [
            (b"desc", _desc_tag(name)),
            (b"cprt", b"text" + bytes(4) + b"test data\0"),
            (b"wtpt", _xyz_tag(*_D50)),
            (b"rXYZ", _xyz_tag(*red)),
            (b"gXYZ", _xyz_tag(*green)),
            (b"bXYZ", _xyz_tag(*blue)),
            (b"rTRC", _curve_tag(gamma)),
            (b"gTRC", _curve_tag(gamma)),
            (b"bTRC", _curve_tag(gamma)),
        ],
    )


def _srgb_to_lab(rgb: Sequence[float]) -> tuple[float, float, float]:
    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    x = 0.4360747 * r + 0.3850649 * g + 0.1430804 * b
    y = 0.2225045 * r + 0.7168786 * g + 0.0606169 * b
    z = 0.0139322 * r + 0.0971045 * g + 0.7141733 * b

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    fx, fy, fz = f(x / _D50[0]), f(y / _D50[1]), f(z / _D50[2])
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def cmyk_profile(name: str, inks: Sequence[tuple[int, int, int]]) -> bytes:
    """A CMYK output profile (lut8 A2B0, 2-point grid, Lab PCS).

    ``inks`` are the sRGB colours of C, M, Y and K alone on white paper; overprints multiply.
    """
    clut = b""
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    rgb = [255.0, 255.0, 255.0]
                    for on, ink in zip((c, m, y, k), inks, strict=True):
                        if on:
                            rgb = [a * b / 255 for a, b in zip(rgb, ink, strict=True)]
                    lab_l, lab_a, lab_b = _srgb_to_lab(rgb)
                    clut += bytes(
                        [
                            round(lab_l * 255 / 100),
                            max(0, min(255, round(lab_a + 128))),
                            max(0, min(255, round(lab_b + 128))),
                        ]
                    )
    identity = bytes(range(256))
    matrix = b"".join(_s15f16(1.0 if i == j else 0.0) for i in range(3) for j in range(3))
    lut = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + matrix + identity * 4 + clut + identity * 3
    return _profile(
        b"prtr",
        b"CMYK",
        b"Lab ",
        [
            (b"desc", _desc_tag(name)),
            (b"cprt", b"text" + bytes(4) + b"test data\0"),
            (b"wtpt", _xyz_tag(*_D50)),
            (b"A2B0", lut),
        ],
    )


PRESS_INKS = [(0, 174, 239), (236, 0, 140), (255, 242, 0), (35, 31, 32)]
PRESS_CMYK = cmyk_profile("test press CMYK", PRESS_INKS)
ADOBE_RGB_LIKE = rgb_profile(
    "test Adobe RGB (1998)-like",
    (0.6097, 0.3111, 0.0195),
    (0.2053, 0.6257, 0.0609),
    (0.1492, 0.0632, 0.7446),
    563 / 256,
)
LINEAR_SRGB = rgb_profile(
    "test linear-light sRGB",
    (0.4360747, 0.2225045, 0.0139322),
    (0.3850649, 0.7168786, 0.0971045),
    (0.1430804, 0.0606169, 0.7141733),
    1.0,
)


def _through_profile(colour: tuple[int, int, int], profile: bytes) -> tuple[int, int, int]:
    """What LittleCMS makes of ``colour`` in ``profile`` converted to sRGB (the oracle)."""
    src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    dst = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    out = ImageCms.profileToProfile(Image.new("RGB", (1, 1), colour), src, dst, outputMode="RGB")
    return out.getpixel((0, 0))


# --------------------------------------------------------------------------- CMYK


def _cmyk_patches(path: Path, icc: bytes | None) -> None:
    image = Image.new("CMYK", (64, 64), (0, 0, 0, 0))  # white paper
    ImageDraw.Draw(image).rectangle((0, 0, 31, 63), fill=(255, 0, 0, 0))  # pure cyan
    ImageDraw.Draw(image).rectangle((32, 32, 63, 63), fill=(0, 0, 0, 255))  # black
    image.save(path, "JPEG", quality=95, **({"icc_profile": icc} if icc else {}))


@pytest.mark.parametrize("size", [64, 32], ids=["native", "downscaled"])
def test_cmyk_jpeg_without_profile_is_sane_rgb(tmp_path: Path, size: int) -> None:
    _cmyk_patches(tmp_path / "cmyk.jpg", icc=None)
    with Image.open(tmp_path / "cmyk.jpg") as source:
        assert source.mode == "CMYK"

    preview, image = _convert_one(tmp_path / "cmyk.jpg", tmp_path / "out", sizes=[size])

    assert image.mode == "RGB" and image.size == (size, size)
    s = size / 64
    red, green, blue = image.getpixel((int(8 * s), int(16 * s)))
    assert red < 60 and green > 190 and blue > 190, f"cyan came out as {(red, green, blue)}"
    _assert_colour(image, (int(48 * s), int(8 * s)), (255, 255, 255))
    assert max(image.getpixel((int(48 * s), int(48 * s)))) < 60  # black ink is dark


@pytest.mark.parametrize("size", [64, 32], ids=["native", "downscaled"])
def test_cmyk_jpeg_with_profile_uses_the_profile(tmp_path: Path, size: int) -> None:
    _cmyk_patches(tmp_path / "cmyk-icc.jpg", icc=PRESS_CMYK)

    preview, image = _convert_one(tmp_path / "cmyk-icc.jpg", tmp_path / "out", sizes=[size])

    assert image.mode == "RGB"
    s = size / 64
    cyan = image.getpixel((int(8 * s), int(16 * s)))
    # The profile says this press's cyan is (0, 174, 239), not the naive (0, 255, 255).
    assert _close(cyan, PRESS_INKS[0], 10), f"cyan came out as {cyan}"
    assert cyan[1] < 215
    _assert_colour(image, (int(48 * s), int(8 * s)), (255, 255, 255), tolerance=6)
    _assert_colour(image, (int(48 * s), int(48 * s)), PRESS_INKS[3], tolerance=12)


# --------------------------------------------------------------------------- RGB with ICC

PATCHES = [(60, 200, 120), (200, 50, 50), (128, 128, 128), (0, 128, 128)]


@pytest.mark.parametrize(
    ("profile", "fmt"),
    [
        (ADOBE_RGB_LIKE, "PNG"),
        (ADOBE_RGB_LIKE, "JPEG"),
        (LINEAR_SRGB, "PNG"),
    ],
    ids=["adobe-rgb-png", "adobe-rgb-jpeg", "linear-srgb-png"],
)
@pytest.mark.parametrize("size", [128, 64], ids=["native", "downscaled"])
def test_rgb_icc_profile_is_converted_to_srgb(
    tmp_path: Path, profile: bytes, fmt: str, size: int
) -> None:
    source = Image.new("RGB", (128, 32))
    for i, colour in enumerate(PATCHES):
        ImageDraw.Draw(source).rectangle((32 * i, 0, 32 * i + 31, 31), fill=colour)
    path = tmp_path / ("tagged.png" if fmt == "PNG" else "tagged.jpg")
    source.save(path, fmt, icc_profile=profile, **({"quality": 95} if fmt == "JPEG" else {}))

    preview, image = _convert_one(path, tmp_path / "out", sizes=[size])

    expected = [_through_profile(colour, profile) for colour in PATCHES]
    # The check only means something if the profile really moves the colours.
    shift = max(
        abs(a - b)
        for want, colour in zip(expected, PATCHES, strict=True)
        for a, b in zip(want, colour, strict=True)
    )
    assert shift > 25
    s = size / 128
    for i, want in enumerate(expected):
        _assert_colour(image, (int((32 * i + 16) * s), int(16 * s)), want, tolerance=6)


def test_png_with_srgb_profile_is_unchanged(tmp_path: Path) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = Image.new("RGB", (128, 32))
    for i, colour in enumerate(PATCHES):
        ImageDraw.Draw(source).rectangle((32 * i, 0, 32 * i + 31, 31), fill=colour)
    source.save(tmp_path / "srgb.png", icc_profile=srgb)

    preview, image = _convert_one(tmp_path / "srgb.png", tmp_path / "out")

    for i, colour in enumerate(PATCHES):
        _assert_colour(image, (32 * i + 16, 16), colour, tolerance=3)


# --------------------------------------------------------------------------- 16-bit grey


def _grey16(path: Path, maximum: int) -> None:
    image = Image.new("I;16", (256, 8))
    image.putdata([round(x * maximum / 255) for _ in range(8) for x in range(256)])
    image.save(path)
    with Image.open(path) as check:
        assert check.mode == "I;16"


@pytest.mark.parametrize("size", [256, 128], ids=["native", "downscaled"])
def test_16bit_grey_gradient_maps_to_8bit_levels(tmp_path: Path, size: int) -> None:
    _grey16(tmp_path / "grey16.png", 65535)

    preview, image = _convert_one(tmp_path / "grey16.png", tmp_path / "out", sizes=[size])

    assert image.mode == "RGB" and image.width == size
    s = size / 256
    for x in (0, 32, 64, 128, 192, 224, 255):
        pixel = image.getpixel((min(image.width - 1, int(x * s)), image.height // 2))
        assert pixel[0] == pixel[1] == pixel[2]
        assert abs(pixel[0] - x) <= 3, f"level {x} came out as {pixel[0]}"


@pytest.mark.parametrize("size", [256, 128], ids=["native", "downscaled"])
def test_16bit_grey_half_range_is_not_stretched(tmp_path: Path, size: int) -> None:
    _grey16(tmp_path / "half.png", 32767)

    preview, image = _convert_one(tmp_path / "half.png", tmp_path / "out", sizes=[size])

    right = image.getpixel((image.width - 1, image.height // 2))[0]
    assert abs(right - 127) <= 3, f"the brightest level (32767/65535) came out as {right}"


# --------------------------------------------------------------------------- transparency


def _palette_with_transparency(path: Path, fmt: str) -> None:
    image = Image.new("P", (64, 32), 1)
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (253 * 3))
    ImageDraw.Draw(image).rectangle((0, 0, 31, 31), fill=0)  # left half: transparent index 0
    ImageDraw.Draw(image).rectangle((48, 0, 63, 31), fill=2)  # right quarter: blue
    image.save(path, fmt, transparency=0)


@pytest.mark.parametrize(
    "size",
    [64, 32],
    ids=["native", "downscaled"],
)
@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_gives_rgba(tmp_path: Path, fmt: str, size: int) -> None:
    path = tmp_path / f"palette.{fmt.lower()}"
    _palette_with_transparency(path, fmt)
    with Image.open(path) as source:
        assert source.mode == "P" and source.info["transparency"] == 0

    preview, image = _convert_one(path, tmp_path / "out", sizes=[size])

    assert image.mode == "RGBA"
    s = size / 64
    assert image.getpixel((int(8 * s), int(16 * s)))[3] == 0
    _assert_colour(image, (int(40 * s), int(16 * s)), (*RED, 255), tolerance=2)
    _assert_colour(image, (int(58 * s), int(16 * s)), (*BLUE, 255), tolerance=2)


def test_corpus_palette_png_keeps_transparency(tmp_path: Path) -> None:
    path = FIXTURES / "corpus" / "raster" / "tbbn3p08.png"  # PngSuite: palette + tRNS
    preview, image = _convert_one(path, tmp_path, sizes=[256])
    assert image.size == (32, 32)
    assert image.mode == "RGBA"
    assert image.getchannel("A").getextrema()[0] == 0


def test_rgb_png_colour_key_transparency_gives_rgba(tmp_path: Path) -> None:
    source = Image.new("RGB", (64, 32), RED)
    ImageDraw.Draw(source).rectangle((0, 0, 31, 31), fill=GREEN)
    source.save(tmp_path / "key.png", transparency=GREEN)

    preview, image = _convert_one(tmp_path / "key.png", tmp_path / "out", sizes=[32])

    assert image.mode == "RGBA"
    assert image.getpixel((4, 8))[3] == 0
    assert image.getpixel((28, 8))[3] == 255


# --------------------------------------------------------------------------- frames and pages


def _frame(colour: tuple[int, int, int], size: tuple[int, int] = (60, 40)) -> Image.Image:
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle((0, 0, size[0] - 1, 4), fill=(255, 255, 255))  # not flat
    return image


@pytest.mark.parametrize(
    ("fmt", "suffix", "options"),
    [
        ("GIF", "gif", {}),
        ("PNG", "apng", {}),
        ("WEBP", "webp", {"lossless": True}),
    ],
    ids=["gif", "apng", "webp"],
)
@pytest.mark.parametrize("size", [256, 30], ids=["native", "downscaled"])
def test_animation_gives_only_its_first_frame(
    tmp_path: Path, fmt: str, suffix: str, options: dict, size: int
) -> None:
    frames = [_frame(RED), _frame(GREEN), _frame(BLUE)]
    path = tmp_path / f"anim.{suffix}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, **options)
    with Image.open(path) as source:
        assert source.n_frames == 3

    previews = previewer.convert(path, out_dir=tmp_path / "out", sizes=[size], pages="all")

    assert len(previews) == 1 and previews[0].page == 1
    image = check_png(previews[0].path, longest=min(size, 60), aspect=(60, 40))
    _assert_colour(image, (image.width // 2, image.height * 3 // 4), RED, tolerance=8)
    assert previewer.info(path).pages == 1
    with pytest.raises(previewer.InvalidOptionsError, match="1 page"):
        previewer.convert(path, out_dir=tmp_path / "out", pages=2)


def test_multipage_tiff_gives_one_preview_per_page(tmp_path: Path) -> None:
    pages = [_frame(RED, (60, 40)), _frame(GREEN, (40, 60)), _frame(BLUE, (50, 50))]
    path = tmp_path / "pages.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])

    previews = previewer.convert(path, out_dir=tmp_path / "out", sizes=[256], pages="all")

    assert [p.page for p in previews] == [1, 2, 3]
    assert [p.path.name for p in previews] == [f"pages.tiff.p{n}.256.png" for n in (1, 2, 3)]
    for preview, page, colour in zip(previews, pages, (RED, GREEN, BLUE), strict=True):
        image = check_png(preview.path, expected_size=page.size)
        _assert_colour(image, (image.width // 2, image.height * 3 // 4), colour, tolerance=2)
    info = previewer.info(path)
    assert info.pages == 3
    assert info.page_sizes == [(60.0, 40.0), (40.0, 60.0), (50.0, 50.0)]
    (second,) = previewer.convert(path, out_dir=tmp_path / "two", pages="2")
    assert (second.page, second.width, second.height) == (2, 40, 60)
    _no_leftovers(tmp_path / "out")


# --------------------------------------------------------------------------- EXIF orientation

# A 60x40 photo stored with four coloured quadrants.
_QUADRANTS = {"TL": RED, "TR": GREEN, "BL": BLUE, "BR": YELLOW}
# Where each displayed corner's colour comes from, for the orientations that rotate.
_DISPLAYED = {
    6: {"TL": BLUE, "TR": RED, "BL": YELLOW, "BR": GREEN},  # rotate 90 CW to display
    8: {"TL": GREEN, "TR": YELLOW, "BL": RED, "BR": BLUE},  # rotate 90 CCW to display
}


def _quadrant_photo(path: Path, orientation: int) -> None:
    image = Image.new("RGB", (60, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 29, 19), fill=_QUADRANTS["TL"])
    draw.rectangle((30, 0, 59, 19), fill=_QUADRANTS["TR"])
    draw.rectangle((0, 20, 29, 39), fill=_QUADRANTS["BL"])
    draw.rectangle((30, 20, 59, 39), fill=_QUADRANTS["BR"])
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "previewer test camera"  # Make: must not reach the preview
    image.save(path, "JPEG", quality=95, exif=exif)


def _corners(image: Image.Image) -> dict[str, tuple[int, ...]]:
    w, h = image.size
    dx, dy = max(1, w // 6), max(1, h // 6)
    return {
        "TL": image.getpixel((dx, dy)),
        "TR": image.getpixel((w - 1 - dx, dy)),
        "BL": image.getpixel((dx, h - 1 - dy)),
        "BR": image.getpixel((w - 1 - dx, h - 1 - dy)),
    }


@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("size", [256, 30], ids=["native", "downscaled"])
def test_exif_rotation_puts_corners_where_they_are_displayed(
    tmp_path: Path, orientation: int, size: int
) -> None:
    _quadrant_photo(tmp_path / "photo.jpg", orientation)

    preview, image = _convert_one(tmp_path / "photo.jpg", tmp_path / "out", sizes=[size])

    assert image.size == ((40, 60) if size == 256 else (20, 30))  # portrait once displayed
    corners = _corners(image)
    for corner, colour in _DISPLAYED[orientation].items():
        assert _close(corners[corner], colour, 40), f"{corner} is {corners[corner]}, not {colour}"
    assert previewer.info(tmp_path / "photo.jpg").page_sizes == [(40.0, 60.0)]


def _png_with_late_exif(path: Path, orientation: int, size: tuple[int, int]) -> None:
    """A quadrant PNG whose eXIf chunk follows the image data (PNG 1.2 allows either place)."""
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    w, h = size
    for (x0, y0), corner in zip(
        [(0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2)], _QUADRANTS, strict=True
    ):
        draw.rectangle((x0, y0, x0 + w // 2 - 1, y0 + h // 2 - 1), fill=_QUADRANTS[corner])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif)
    chunks = png_chunks(buffer.getvalue())
    late = [c for c in chunks if c[0] != b"eXIf"]
    late[-1:-1] = [c for c in chunks if c[0] == b"eXIf"]  # just before IEND
    body = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in late
    )
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


@pytest.mark.parametrize("orientation", [3, 5, 6, 8])
@pytest.mark.parametrize("giant_path", [False, True], ids=["pillow", "libvips"])
def test_png_exif_after_the_pixels_is_applied(
    tmp_path: Path, orientation: int, giant_path: bool
) -> None:
    # Read without decoding the PNG (Pillow's getexif would), and by previewer for the libvips
    # path too: libvips 8.18 does not see an eXIf chunk after the image data.
    _png_with_late_exif(tmp_path / "late.png", orientation, (120, 80))
    with Image.open(tmp_path / "late.png") as source:
        displayed = ImageOps.exif_transpose(source).convert("RGB")  # loads, then sees it
    limits = previewer.Limits(max_tile_pixels=4096) if giant_path else None

    preview, image = _convert_one(
        tmp_path / "late.png", tmp_path / "out", sizes=[60], limits=limits
    )

    assert image.size == ((60, 40) if displayed.width > displayed.height else (40, 60))
    reference = _corners(displayed.resize(image.size, Image.Resampling.BOX))
    for corner, colour in _corners(image).items():
        assert _close(colour, reference[corner], 40), f"{corner}: {colour} vs {reference[corner]}"
    info = previewer.info(tmp_path / "late.png")
    assert info.page_sizes == [(float(displayed.width), float(displayed.height))]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow_exif_transpose(
    tmp_path: Path, orientation: int
) -> None:
    _quadrant_photo(tmp_path / "photo.jpg", orientation)
    with Image.open(tmp_path / "photo.jpg") as source:
        displayed = ImageOps.exif_transpose(source).convert("RGB")

    preview, image = _convert_one(tmp_path / "photo.jpg", tmp_path / "out", sizes=[30])

    assert image.size == ((30, 20) if displayed.width > displayed.height else (20, 30))
    reference = _corners(displayed.resize(image.size, Image.Resampling.BOX))
    for corner, colour in _corners(image).items():
        assert _close(colour, reference[corner], 40), f"{corner}: {colour} vs {reference[corner]}"


# --------------------------------------------------------------------------- JPEG draft


def test_big_jpeg_is_decoded_with_draft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = Image.new("RGB", (6000, 4000), (240, 240, 240))
    ImageDraw.Draw(photo).rectangle((0, 0, 2999, 1999), fill=(200, 30, 30))
    ImageDraw.Draw(photo).ellipse((3000, 2000, 5999, 3999), fill=(30, 30, 200))
    photo.save(tmp_path / "big.jpg", quality=80)
    del photo
    decoded_at: list[tuple[int, int]] = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # records what the JPEG decoder was asked for; changes nothing
        result = draft(self, mode, size)
        decoded_at.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    monkeypatch.setattr(previewer.limited, "ISOLATE", False)  # the spy records in this process

    preview, image = _convert_one(tmp_path / "big.jpg", tmp_path / "out", sizes=[256])

    assert image.size == (256, 171)
    assert decoded_at and max(decoded_at[-1]) <= 6000 // 4, (
        f"decoded at {decoded_at}: DCT scaling (draft) not used"
    )
    _assert_colour(image, (32, 32), (200, 30, 30), tolerance=12)
    _assert_colour(image, (192, 128), (30, 30, 200), tolerance=12)


# --------------------------------------------------------------------------- sizes


def test_small_raster_is_not_upscaled_unless_asked(tmp_path: Path) -> None:
    _frame(RED, (100, 50)).save(tmp_path / "small.png")

    (kept,) = previewer.convert(tmp_path / "small.png", out_dir=tmp_path / "a", sizes=[256])
    (enlarged,) = previewer.convert(
        tmp_path / "small.png", out_dir=tmp_path / "b", sizes=[256], upscale=True
    )

    check_png(kept.path, expected_size=(100, 50))
    check_png(enlarged.path, expected_size=(256, 128))
    assert (kept.width, kept.height, enlarged.width, enlarged.height) == (100, 50, 256, 128)
    assert render(tmp_path / "small.png", size=256).size == (100, 50)
    assert render(tmp_path / "small.png", size=256, upscale=True).size == (256, 128)


@pytest.mark.parametrize(
    ("size", "label", "expected"),
    [
        (256, "256", (256, 128)),
        ("100x", "100x", (100, 50)),
        ("x40", "x40", (80, 40)),
        ("120x120", "120x120", (120, 60)),
        ("50x100", "50x100", (50, 25)),
        ("300x30", "300x30", (60, 30)),
        ("x500", "x500", (400, 200)),  # would enlarge: raster kept at its own size
        ("1000x", "1000x", (400, 200)),
    ],
)
def test_size_syntaxes(tmp_path: Path, size, label: str, expected: tuple[int, int]) -> None:
    _frame(RED, (400, 200)).save(tmp_path / "wide.png")

    (preview,) = previewer.convert(tmp_path / "wide.png", out_dir=tmp_path / "out", sizes=[size])

    assert preview.size == label
    assert preview.path == tmp_path / "out" / f"wide.png.p1.{label}.png"
    check_png(preview.path, expected_size=expected, aspect=(400, 200))


def test_several_sizes_in_one_call(tmp_path: Path) -> None:
    _frame(RED, (400, 200)).save(tmp_path / "wide.png")

    previews = previewer.convert(
        tmp_path / "wide.png", out_dir=tmp_path / "out", sizes=[64, "300x", "x20", 1024]
    )

    assert [(p.size, p.width, p.height) for p in previews] == [
        ("64", 64, 32),
        ("300x", 300, 150),
        ("x20", 40, 20),
        ("1024", 400, 200),
    ]
    for preview in previews:
        check_png(preview.path, expected_size=(preview.width, preview.height))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.path.name for p in previews
    )
    _no_leftovers(tmp_path / "out")


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize("edge", [40, 100], ids=["under-2x-limit", "over-2x-limit"])
def test_pixel_limit_is_checked_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edge: int
) -> None:
    # previewer sets the process-wide PIL.Image.MAX_IMAGE_PIXELS from Limits.max_pixels and
    # leaves it there; restore it so later tests in this worker are not affected.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    _frame(RED, (edge, edge)).save(tmp_path / "square.png")
    limits = previewer.Limits(max_pixels=1000)

    with pytest.raises(previewer.LimitExceededError) as excinfo:
        previewer.convert(tmp_path / "square.png", out_dir=tmp_path / "out", limits=limits)

    assert "square.png" in str(excinfo.value)
    assert excinfo.value.exit_code == 6
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


# --------------------------------------------------------------------------- inputs


def test_jpeg_with_a_wrong_extension_is_sniffed(tmp_path: Path) -> None:
    """Generated stand-in for the corpus's misc/is_jpeg.jp2 (not vendored: size budget)."""
    photo = _frame(BLUE, (300, 400))
    photo.save(tmp_path / "is_jpeg.jp2", "JPEG", quality=90)

    preview, image = _convert_one(tmp_path / "is_jpeg.jp2", tmp_path / "out")

    assert preview.mime == "image/jpeg" and preview.converter == "raster-pillow"
    assert preview.path.name == "is_jpeg.jp2.p1.256.png"
    assert image.size == (192, 256)


def test_bytes_and_file_object_inputs(tmp_path: Path) -> None:
    _frame(GREEN, (80, 40)).save(tmp_path / "g.png")
    data = (tmp_path / "g.png").read_bytes()

    (from_bytes,) = previewer.convert(data, out_dir=tmp_path / "out", name="from-bytes.png")
    with open(tmp_path / "g.png", "rb") as fh:
        (from_file,) = previewer.convert(fh, out_dir=tmp_path / "out", name="from-file.png")
    rendered = render(io.BytesIO(data), size=40)

    assert from_bytes.path.name == "from-bytes.png.p1.256.png"
    assert from_file.path.name == "from-file.png.p1.256.png"
    assert from_bytes.source == "from-bytes.png"
    for preview in (from_bytes, from_file):
        image = check_png(preview.path, expected_size=(80, 40))
        _assert_colour(image, (40, 30), GREEN, tolerance=2)
    assert rendered.size == (40, 20) and rendered.mode == "RGB"
    _no_leftovers(tmp_path / "out")


def test_exif_and_text_metadata_are_not_copied(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "someone")
    text.add_itxt("Comment", "secret", zip=True)
    exif = Image.Exif()
    exif[0x010F] = "camera"
    _frame(RED, (64, 32)).save(tmp_path / "meta.png", pnginfo=text, exif=exif, dpi=(300, 300))
    source_chunks = {kind for kind, _ in png_chunks((tmp_path / "meta.png").read_bytes())}
    assert {b"tEXt", b"iTXt", b"eXIf", b"pHYs"} <= source_chunks

    preview, image = _convert_one(tmp_path / "meta.png", tmp_path / "out")

    assert image.size == (64, 32)  # check_png already refused tEXt/iTXt/eXIf/pHYs chunks


def test_public_render_survives_a_conversion(tmp_path: Path) -> None:
    _frame(RED, (64, 32)).save(tmp_path / "r.png")
    previewer.convert(tmp_path / "r.png", out_dir=tmp_path / "out")

    image = previewer.render(tmp_path / "r.png", size=32)

    assert image.size == (32, 16)


# --------------------------------------------------------------------------- the PNG checker


def _png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def test_check_png_accepts_a_good_preview_and_refuses_bad_ones() -> None:
    good = _frame(RED, (100, 50))
    assert check_png(_png(good), longest=100, aspect=(200, 100)).size == (100, 50)
    assert check_png(_png(good), longest=101, expected_size=(100, 50)).mode == "RGB"

    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Software", "x")
    refused = {
        "flat": (_png(Image.new("RGB", (10, 10), RED)), {}),
        "too long": (_png(good), {"longest": 99}),
        "too short": (_png(good), {"longest": 102}),
        "aspect": (_png(good), {"aspect": (100, 60)}),
        "size": (_png(good), {"expected_size": (50, 100)}),
        "text chunk": (_png(good, pnginfo=text), {}),
        "dpi": (_png(good, dpi=(72, 72)), {}),
        "16-bit": (_png(Image.new("I;16", (4, 4))), {"allow_flat": True}),
        "grey": (_png(good.convert("L")), {}),
        "palette": (_png(good.convert("P")), {}),
        "not a png": (b"GIF89a" + bytes(20), {}),
    }
    for label, (data, options) in refused.items():
        with pytest.raises(AssertionError):
            check_png(data, **options)
            pytest.fail(f"check_png accepted a bad preview: {label}")
    assert check_png(_png(Image.new("RGB", (10, 10), RED)), allow_flat=True).size == (10, 10)


def test_images_within_the_tile_budget_never_load_libvips(tmp_path: Path) -> None:
    # libvips takes ~50 ms to load: only images over the tile budget may pay for it.
    import subprocess
    import sys

    png, jpeg = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.new("RGB", (2000, 1500), (10, 200, 30)).save(png)
    Image.new("RGB", (3000, 2000), (10, 200, 30)).save(jpeg)
    code = (
        "import sys, previewer\n"
        f"previewer.convert({str(png)!r}, out_dir={str(tmp_path)!r})\n"
        f"previewer.convert({str(jpeg)!r}, out_dir={str(tmp_path)!r})\n"
        "print('pyvips' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.split() == ["False"]
    check_png(tmp_path / "a.png.p1.256.png", longest=256, aspect=(2000, 1500), allow_flat=True)
    check_png(tmp_path / "b.jpg.p1.256.png", longest=256, aspect=(3000, 2000), allow_flat=True)


def _tiff_with_dimensionless_second_page(path: Path) -> None:
    """A valid one-page TIFF, then a second directory without ImageWidth/ImageLength."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 16), (200, 30, 30)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    (first,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, first)
    struct.pack_into("<I", data, first + 2 + 12 * count, len(data))  # next directory
    # BitsPerSample, Compression, PhotometricInterpretation, StripOffsets, RowsPerStrip,
    # StripByteCounts: everything but the dimensions.
    entries = [(258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8), (278, 3, 1, 1)]
    entries.append((279, 4, 1, 1))
    data += struct.pack("<H", len(entries))
    data += b"".join(struct.pack("<HHII", *entry) for entry in entries) + bytes(4)
    path.write_bytes(bytes(data))


def test_tiff_missing_dimensions_is_bad_input_alone_and_in_a_batch(tmp_path: Path) -> None:
    # Pillow 13 raises TypeError("Missing dimensions") while counting the frames.
    import json

    broken = tmp_path / "nodims.tif"
    _tiff_with_dimensionless_second_page(broken)
    _frame(RED, (20, 20)).save(tmp_path / "good.png")
    base = ["convert", "-o", tmp_path / "out", "--json"]

    alone = run_previewer(*base, broken, text=True)
    batch = run_previewer(*base, "-j", "2", broken, tmp_path / "good.png", text=True)

    assert alone.returncode == 5, alone.stderr
    assert batch.returncode == 10, batch.stderr
    for proc in (alone, batch):
        (failed,) = [line for line in map(json.loads, proc.stdout.splitlines()) if line["error"]]
        assert failed["error"]["type"] == "InputError", failed
        assert failed["error"]["exit_code"] == 5
        assert "nodims.tif" in failed["error"]["message"]
        assert "Missing dimensions" in failed["error"]["message"]


@pytest.mark.parametrize(
    "exc",
    [
        TypeError("Missing dimensions"),
        ValueError("tile cannot extend outside image"),
        struct.error("unpack requires a buffer of 4 bytes"),
        IndexError("list index out of range"),
        EOFError(),
        SyntaxError("not a TIFF file"),
        OSError("image file is truncated"),
        ZeroDivisionError("division by zero"),
        KeyError(99),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_every_damaged_data_exception_of_pillow_is_bad_input(exc: Exception) -> None:
    from previewer.converters.raster import _damaged_data
    from previewer.errors import InputError
    from previewer.plugin import ConvertContext

    with (
        pytest.raises(InputError) as raised,
        _damaged_data("TIFF", ConvertContext(limits=previewer.Limits(), mime="image/tiff")),
    ):
        raise exc
    assert raised.value.__cause__ is exc
    assert "TIFF image" in str(raised.value)


def test_palette_gif_over_the_budget_is_scaled_band_by_band(tmp_path: Path) -> None:
    # Over the tile budget, a GIF is kept as decoded (one byte a pixel) and converted band by
    # band (libvips would hold it as RGBA): the result matches Pillow's whole-image resize,
    # in one piece and in tiles, transparency included.
    from pngcheck import check_tiling

    image = Image.new("P", (600, 400), 0)
    image.putpalette([255, 255, 255, 200, 30, 30, 30, 30, 200, 0, 160, 0] + [0] * 756)
    draw = ImageDraw.Draw(image)
    for i in range(0, 600, 40):
        draw.rectangle((i, 0, i + 19, 399), fill=1 + (i // 40) % 3)
    draw.ellipse((200, 100, 400, 300), fill=0)
    image.save(tmp_path / "bands.gif", transparency=0)
    small = previewer.Limits(max_tile_pixels=20_000)  # 240,000 pixels decoded: over it

    banded = previewer.render(tmp_path / "bands.gif", size=150, limits=small)

    with Image.open(tmp_path / "bands.gif") as source:
        expected = source.convert("RGBA").resize(banded.size, Image.Resampling.LANCZOS)
    assert banded.mode == "RGBA" and banded.size == (150, 100)
    white = Image.new("RGBA", banded.size, "white")
    a, b = (Image.alpha_composite(white, i).convert("RGB") for i in (banded, expected))
    assert worst_channel_difference(a, b) < 2
    assert banded.getpixel((75, 50))[3] == 0  # the transparent ellipse
    check_tiling(tmp_path / "bands.gif", 450, max_tile_pixels=20_000)
