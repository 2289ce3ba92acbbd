"""Which converter gets which raster type: camera RAW, DDS, plain PNM, PICT (real engines)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, TiffImagePlugin
from pngcheck import check_png
from support import require_engine, run_previewer

import previewer
from previewer.errors import ExitCode, InputError
from previewer.mime import RAW_TYPES, sniff, sniff_bytes

# --------------------------------------------------------------------------- camera RAW


def _tiff(path: Path, tags: dict[int, object], types: dict[int, int] | None = None) -> Path:
    """A 96 x 64 TIFF (the size of a RAW file's first-IFD thumbnail) with extra IFD0 tags."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    for tag, value in tags.items():
        ifd[tag] = value
    for tag, kind in (types or {}).items():
        ifd.tagtype[tag] = kind
    Image.new("RGB", (96, 64), "red").save(path, "TIFF", tiffinfo=ifd)
    return path


def _cr2(path: Path) -> Path:
    # Canon CR2: a TIFF header with "CR", major version 2, at offset 8, then IFD0 at 16.
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 256, 3, 1, 96) + b"\0\0\0\0"
    path.write_bytes(b"II*\x00" + struct.pack("<I", 16) + b"CR\x02\x00" + b"\0" * 4 + ifd)
    return path


RAW_FILES = {
    "x.dng": (lambda p: _tiff(p, {50706: b"\x01\x04\x00\x00", 271: "Canon"}, {50706: 1})),
    "x.nef": (lambda p: _tiff(p, {271: "NIKON CORPORATION", 254: 1}, {254: 4})),
    "x.kdc": (lambda p: _tiff(p, {271: "EASTMAN KODAK COMPANY", 254: 1}, {254: 4})),
    "x.arw": (lambda p: _tiff(p, {271: "SONY", 254: 1}, {254: 4})),
    "x.cr2": _cr2,
}
RAW_MIME = {
    "x.dng": "image/x-adobe-dng",
    "x.nef": "image/x-nikon-nef",
    "x.kdc": "image/x-kodak-kdc",
    "x.arw": "image/x-sony-arw",
    "x.cr2": "image/x-canon-cr2",
}


@pytest.mark.parametrize("name", sorted(RAW_FILES))
def test_camera_raw_is_not_taken_for_its_tiff_thumbnail(name: str, tmp_path: Path) -> None:
    path = RAW_FILES[name](tmp_path / name)
    # Named like a TIFF, so the type comes from the content alone.
    renamed = path.rename(tmp_path / "photo.tif")

    mime = sniff(renamed)
    assert mime == RAW_MIME[name] and mime in RAW_TYPES
    assert sniff_bytes(renamed.read_bytes()[:8192], "photo.tif") == mime
    require_engine("rawpy")
    # These are only a RAW's thumbnail with its tags: LibRaw finds no sensor data to read, and
    # the thumbnail is not previewed instead (no TIFF decoder gets it).
    with pytest.raises(InputError, match="LibRaw") as exc:
        previewer.convert(renamed, out_dir=tmp_path / "out")
    assert exc.value.exit_code == ExitCode.BAD_INPUT == 5
    assert exc.value.converter == "raw-libraw"
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


def test_cli_reports_a_raw_without_sensor_data_as_bad_input(tmp_path: Path) -> None:
    require_engine("rawpy")
    path = RAW_FILES["x.dng"](tmp_path / "x.dng")
    proc = run_previewer("convert", path, "-o", tmp_path / "o", text=True, timeout=60)
    assert proc.returncode == 5, proc.stderr
    assert "image/x-adobe-dng" in proc.stderr and "raw-libraw" in proc.stderr


@pytest.mark.parametrize(
    ("tags", "types"),
    [
        ({271: "NIKON"}, {}),  # a Nikon film scanner's TIFF: camera maker, plain image
        ({271: "Canon", 272: "CanoScan"}, {}),
        ({305: "darktable"}, {}),
    ],
    ids=["nikon-scan", "canon-scan", "editor"],
)
def test_tiffs_naming_camera_makers_stay_tiff(
    tags: dict[int, object], types: dict[int, int], tmp_path: Path
) -> None:
    path = _tiff(tmp_path / "scan.tif", tags, types)
    assert sniff(path) == "image/tiff"
    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[64])
    assert preview.converter == "raster-pillow"


# --------------------------------------------------------------------------- DDS


def _picture() -> Image.Image:
    image = Image.new("RGBA", (64, 32), (255, 0, 0, 255))
    ImageDraw.Draw(image).rectangle((0, 0, 31, 31), fill=(0, 0, 255, 255))
    return image


@pytest.mark.parametrize("pixel_format", ["DXT1", "DXT5", "BC2", "BC3", None])
def test_dds_is_decoded_by_pillow(pixel_format: str | None, tmp_path: Path) -> None:
    # BC2/BC3 are written with a DX10 header, which ImageMagick 6.9.11 refuses
    # ("image type not supported").
    path = tmp_path / "tex.dds"
    options = {"pixel_format": pixel_format} if pixel_format else {}
    _picture().save(path, **options)

    info = previewer.info(path)
    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[64])

    assert info.mime == "image/vnd-ms.dds" and info.converter == "raster-pillow"
    assert info.page_sizes == [(64.0, 32.0)]
    assert preview.converter == "raster-pillow"
    image = check_png(preview.path, expected_size=(64, 32)).convert("RGB")
    blue, red = image.getpixel((8, 16)), image.getpixel((56, 16))
    assert blue[0] < 12 and blue[1] < 12 and blue[2] > 240, blue
    assert red[0] > 240 and red[1] < 12 and red[2] < 12, red


def test_damaged_dds_falls_back_to_imagemagick_and_fails_with_both_reasons(tmp_path: Path) -> None:
    path = tmp_path / "cut.dds"
    _picture().save(path, pixel_format="DXT1")
    path.write_bytes(path.read_bytes()[:200])  # header and a sliver of the blocks

    with pytest.raises(InputError) as exc:
        previewer.convert(path, out_dir=tmp_path / "out")

    assert exc.value.converter == "raster-pillow"
    assert "magick-wand could not read it either" in str(exc.value)


# --------------------------------------------------------------------------- plain PNM


@pytest.mark.parametrize(
    ("data", "pixel"),
    [
        (b"P1\n1 1\n1", 0),
        (b"P2\n1 1\n255\n7", 7),
        (b"P3\n1 1\n255\n1 2 3", (1, 2, 3)),
        (b"P2\n2 1\n255\n0 200", 0),
    ],
    ids=["p1", "p2", "p3", "p2-wide"],
)
def test_plain_pnm_without_trailing_whitespace(data: bytes, pixel: object, tmp_path: Path) -> None:
    # ImageMagick 6.9.11 refuses P2/P3 whose last sample ends the file; Pillow reads them.
    path = tmp_path / "tiny.pnm"
    path.write_bytes(data)

    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[64])

    image = check_png(preview.path, longest=int(data.split()[1]), allow_flat=True)
    assert image.size == (int(data.split()[1]), 1)
    assert preview.converter in ("magick-wand", "raster-pillow")
    value = image.convert("RGB").getpixel((0, 0))
    expected = (pixel,) * 3 if isinstance(pixel, int) else pixel
    assert value == expected


def test_binary_pnm_still_goes_to_imagemagick(tmp_path: Path) -> None:
    path = tmp_path / "g.pgm"
    Image.linear_gradient("L").resize((40, 20)).save(path)
    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[40])
    assert preview.converter == "magick-wand"


# --------------------------------------------------------------------------- PICT


@pytest.fixture(scope="module")
def pict(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A PICT 2 written by ImageMagick (512-byte header, picSize, frame, 0011 02FF at 522)."""
    require_engine("imagemagick-cli")
    convert = shutil.which("convert")
    assert convert is not None
    out = tmp_path_factory.mktemp("pict") / "out.pct"
    subprocess.run(
        [
            convert,
            "-size",
            "40x20",
            "xc:red",
            "-fill",
            "blue",
            "-draw",
            "rectangle 0,0 19,19",
            f"pict:{out}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    data = out.read_bytes()
    assert data[522:526] == b"\x00\x11\x02\xff"
    return data


@pytest.mark.parametrize("name", ["pic.pct", "pic.PICT"])
def test_pict_is_recognised_by_its_name_and_read_by_imagemagick(
    name: str, pict: bytes, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(pict)

    assert sniff(path) == "image/x-pict"
    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[40])

    assert preview.converter == "magick-wand"
    image = check_png(preview.path, expected_size=(40, 20)).convert("RGB")
    assert image.getpixel((5, 10)) == (0, 0, 255) and image.getpixel((35, 10)) == (255, 0, 0)


def test_pict_needs_its_name(pict: bytes, tmp_path: Path) -> None:
    path = tmp_path / "pic.bin"
    path.write_bytes(pict)
    assert sniff(path) != "image/x-pict"
    jpeg = tmp_path / "photo.pct"
    Image.new("RGB", (8, 8)).save(jpeg, "JPEG")
    assert sniff(jpeg) == "image/jpeg"  # content that settles the type wins over the name


def test_imagemagick_still_reads_dds_when_forced(tmp_path: Path) -> None:
    path = tmp_path / "plain.dds"
    _picture().convert("RGB").save(path)  # uncompressed, which ImageMagick 6.9.11 reads

    (preview,) = previewer.convert(
        path, out_dir=tmp_path / "out", sizes=[64], converter="magick-wand"
    )

    assert preview.converter == "magick-wand"
    red = check_png(preview.path, expected_size=(64, 32)).convert("RGB").getpixel((56, 16))
    assert red[0] > 240 and red[1] < 12 and red[2] < 12
