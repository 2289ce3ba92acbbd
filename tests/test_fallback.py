"""ImageMagick as the strict fallback when a dedicated converter fails on a file (issue 7).

The rule under test (previewer/reading.py, ``fallback_converter``): a failure about the file's
content or the engine is retried with the converter that declares itself the fallback for the
type (ImageMagick); encrypted files, exceeded limits, timeouts and a forced ``--converter`` are
never retried; the fallback reads strictly (an ImageMagick warning about damaged data is a
failure), so a damaged file still fails with the first converter's error.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import VENDORED
from PIL import Image
from pngcheck import check_png

import previewer
from previewer.cli import cli
from previewer.converters.magick import MagickConverter
from previewer.converters.raster import RasterConverter
from previewer.errors import EngineError, InputError, LimitExceededError
from previewer.registry import Registry
from tests.plugins.faulty import BrokenFallback, CrashingPng, CrashingSecondPage

RED, BLUE = (255, 0, 0), (0, 0, 255)


def float_rgb_tiff(path: Path, width: int = 40, height: int = 20) -> Path:
    """Write an uncompressed 32-bit float RGB TIFF: red left half, blue right half.

    Pillow cannot decode float RGB ("unknown pixel mode"); ImageMagick reads it cleanly.
    """
    row = b"".join(
        struct.pack("<3f", *((1.0, 0.0, 0.0) if x < width // 2 else (0.0, 0.0, 1.0)))
        for x in range(width)
    )
    pixels = row * height
    entries = 11
    ifd_at = 8
    extra_at = ifd_at + 2 + entries * 12 + 4
    bits_at, format_at = extra_at, extra_at + 6
    data_at = format_at + 6
    tags = [
        (256, 3, 1, width),  # ImageWidth
        (257, 3, 1, height),  # ImageLength
        (258, 3, 3, bits_at),  # BitsPerSample 32,32,32
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 2),  # Photometric: RGB
        (273, 4, 1, data_at),  # StripOffsets
        (277, 3, 1, 3),  # SamplesPerPixel
        (278, 3, 1, height),  # RowsPerStrip
        (279, 4, 1, len(pixels)),  # StripByteCounts
        (284, 3, 1, 1),  # PlanarConfiguration: chunky
        (339, 3, 3, format_at),  # SampleFormat: IEEE float x3
    ]
    ifd = struct.pack("<H", entries)
    for tag, kind, count, value in tags:
        packed = (
            struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        )
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    body = b"II*\x00" + struct.pack("<I", ifd_at) + ifd
    body += struct.pack("<3H", 32, 32, 32) + struct.pack("<3H", 3, 3, 3)
    assert len(body) == data_at
    path.write_bytes(body + pixels)
    return path


def test_pillow_cannot_read_the_float_tiff(tmp_path: Path) -> None:
    # The premise of the next tests: the dedicated converter really fails on this file.
    tiff = float_rgb_tiff(tmp_path / "float.tif")
    with pytest.raises(InputError, match="not a readable TIFF"):
        previewer.convert(tiff, out_dir=tmp_path / "out", converter="raster-pillow")
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


def test_unreadable_variant_is_converted_by_imagemagick(tmp_path: Path) -> None:
    tiff = float_rgb_tiff(tmp_path / "float.tif")
    (preview,) = previewer.convert(tiff, out_dir=tmp_path, sizes=40)
    assert preview.converter == "magick-wand"
    assert preview.mime == "image/tiff"
    assert (preview.width, preview.height) == (40, 20)
    check_png(preview.path, expected_size=(40, 20))
    with Image.open(preview.path) as im:
        rgb = im.convert("RGB")
        assert rgb.getpixel((5, 10)) == RED
        assert rgb.getpixel((34, 10)) == BLUE
    assert previewer.info(tiff).converter == "magick-wand"
    assert previewer.render(tiff, size=20).size == (20, 10)


def test_cli_reports_the_fallback_converter(tmp_path: Path) -> None:
    tiff = float_rgb_tiff(tmp_path / "float.tif")
    result = CliRunner().invoke(cli, ["convert", str(tiff), "-o", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"converter": "magick-wand"' in result.output


def test_forced_converter_is_not_retried(tmp_path: Path) -> None:
    tiff = float_rgb_tiff(tmp_path / "float.tif")
    with pytest.raises(InputError) as caught:
        previewer.convert(tiff, out_dir=tmp_path, converter="raster-pillow")
    assert "could not read it either" not in str(caught.value)


@pytest.mark.parametrize(
    ("fixture", "words"),
    [
        ("truncated_jpeg.jpg", "truncated JPEG"),
        ("truncated_image.png", "truncated PNG"),
        ("crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif", "corrupt TIFF"),
    ],
)
def test_damaged_files_still_fail_with_the_first_error(
    fixture: str, words: str, tmp_path: Path
) -> None:
    # ImageMagick would render these grey-filled with a warning; strict reading refuses them.
    source = VENDORED / "raster" / fixture
    with pytest.raises(InputError) as caught:
        previewer.convert(source, out_dir=tmp_path)
    error = caught.value
    assert error.converter == "raster-pillow"
    assert str(error).startswith(f"{source}: {words}")
    assert "magick-wand could not read it either" in str(error)
    assert list(tmp_path.iterdir()) == []


def test_limits_are_not_retried(tmp_path: Path) -> None:
    with pytest.raises(LimitExceededError) as caught:
        previewer.convert(VENDORED / "raster" / "decompression_bomb.gif", out_dir=tmp_path)
    assert "could not read it either" not in str(caught.value)


def _png(path: Path) -> Path:
    Image.new("RGB", (30, 10), BLUE).save(path)
    return path


def test_failure_while_rendering_falls_back(tmp_path: Path) -> None:
    registry = Registry([CrashingPng, RasterConverter, MagickConverter], entry_points=False)
    (preview,) = previewer.convert(_png(tmp_path / "a.png"), out_dir=tmp_path, registry=registry)
    assert preview.converter == "magick-wand"
    with Image.open(preview.path) as im:
        assert im.size == (30, 10)
        assert (
            im.convert("RGB").getpixel((15, 5)) == BLUE
        )  # ImageMagick's pixels, not the crashing converter's


def test_no_fallback_once_pages_are_written(tmp_path: Path) -> None:
    registry = Registry([CrashingSecondPage, MagickConverter], entry_points=False)
    source = _png(tmp_path / "a.png")
    out = tmp_path / "out"
    with pytest.raises(EngineError) as caught:
        previewer.convert(source, out_dir=out, pages="all", registry=registry)
    assert "crashed while decoding" in str(caught.value)
    assert "could not read it either" not in str(caught.value)
    assert caught.value.converter == "test-crashing-page-2"
    # Page 1 (written before the failure) is kept, as for any multi-page failure.
    assert [p.name for p in out.iterdir()] == ["a.png.p1.256.png"]


def test_thumbnail_cache_uses_the_fallback(tmp_path: Path) -> None:
    from previewer import freedesktop as fd

    tiff = float_rgb_tiff(tmp_path / "float.tif")
    png = _png(tmp_path / "a.png")
    registry = Registry([CrashingPng, RasterConverter, MagickConverter], entry_points=False)
    root = tmp_path / "cache"
    report = fd.fill_cache([tiff, png], sizes=("normal",), root=root, registry=registry)
    assert [r.status for r in report.results] == ["converted", "converted"]
    assert [r.converter for r in report.results] == ["magick-wand", "magick-wand"]
    for source, colour in ((tiff, RED), (png, BLUE)):
        with Image.open(fd.thumbnail_path(fd.to_uri(source), "normal", root)) as im:
            assert im.mode == "RGBA"
            assert im.convert("RGB").getpixel((2, 5)) == colour


def test_failed_fallback_reports_the_first_converter(tmp_path: Path) -> None:
    report = previewer.convert_many([VENDORED / "raster" / "truncated_jpeg.jpg"], out_dir=tmp_path)
    (result,) = report.results
    assert result.status == "failed"
    assert result.converter == "raster-pillow"
    assert result.error is not None and result.error.converter == "raster-pillow"


def test_fallback_failing_while_rendering_reports_the_first_error(tmp_path: Path) -> None:
    registry = Registry([CrashingPng, BrokenFallback], entry_points=False)
    report = previewer.convert_many(
        [_png(tmp_path / "a.png")], out_dir=tmp_path / "out", registry=registry
    )
    (result,) = report.results
    assert result.status == "failed" and result.outputs == []
    assert result.converter == "test-crashing-png"
    assert isinstance(result.error, EngineError)
    assert result.error.converter == "test-crashing-png"
    assert str(result.error).endswith(
        "the engine crashed while decoding; test-broken-fallback could not read it either: "
        "the engine crashed while decoding [test-crashing-png]"
    )
