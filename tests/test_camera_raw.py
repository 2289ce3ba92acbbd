"""Camera RAW previews through LibRaw (rawpy): sniffing, preview vs demosaic, colour, orientation,
metadata, hostile files (real LibRaw on DNGs written by tests/rawgen.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image, TiffImagePlugin
from pngcheck import check_png
from rawgen import dng, hostile_dng
from support import requires_engine, run_previewer

import previewer
from previewer.budgets import Limits
from previewer.converters import CAMERA_RAW
from previewer.errors import InputError
from previewer.mime import RAW_TYPES, sniff, sniff_bytes
from previewer.plugin import ConvertContext

SENSOR = (1200, 800)
PREVIEW = (480, 320)
RED = (0.8, 0.1, 0.05)
BLUE_PREVIEW = (0, 0, 255)


pytestmark = requires_engine("rawpy")


@pytest.fixture(scope="module")
def raws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The DNGs most tests share: with a JPEG preview, without one, and rotated."""
    d = tmp_path_factory.mktemp("raw")
    return {
        "preview": dng(d / "preview.dng", size=SENSOR, rgb=RED, preview=PREVIEW),
        "cfa": dng(d / "cfa.dng", size=SENSOR, rgb=RED),
        "rotated": dng(d / "rotated.dng", size=SENSOR, rgb=RED, orientation=6),
        "rotated-preview": dng(d / "rp.dng", size=SENSOR, preview=PREVIEW, orientation=6),
    }


def _dominant(image: Image.Image, xy: tuple[int, int]) -> int:
    pixel = image.convert("RGB").getpixel(xy)
    assert isinstance(pixel, tuple)
    return max(range(3), key=lambda c: pixel[c])


def _open(path: Path) -> object:
    from previewer.converters.camera_raw import CameraRawConverter

    ctx = ConvertContext(limits=Limits(), mime=sniff(path))
    return CameraRawConverter().open(path, ctx)


# --------------------------------------------------------------------------- sniffing

SIGNATURES = {
    "crw": (b"II\x1a\x00\x00\x00HEAPCCDR" + b"\0" * 32, "image/x-canon-crw"),
    "cr3": (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom" + b"\0" * 32, "image/x-canon-cr3"),
    "raf": (b"FUJIFILMCCD-RAW 0201FF383501" + b"\0" * 32, "image/x-fuji-raf"),
    "orf": (b"IIRO\x08\x00\x00\x00" + b"\0" * 32, "image/x-olympus-orf"),
    "orf-mm": (b"MMOR\x00\x00\x00\x08" + b"\0" * 32, "image/x-olympus-orf"),
    "rw2": (b"IIU\x00\x18\x00\x00\x00" + b"\0" * 32, "image/x-panasonic-rw2"),
    "mrw": (b"\x00MRM\x00\x00\x00\x80" + b"\0" * 32, "image/x-minolta-mrw"),
    "x3f": (b"FOVb\x00\x00\x02\x00" + b"\0" * 32, "image/x-sigma-x3f"),
}


@pytest.mark.parametrize("kind", sorted(SIGNATURES))
def test_raw_signatures_are_sniffed_and_claimed(kind: str, tmp_path: Path) -> None:
    head, mime = SIGNATURES[kind]
    path = tmp_path / "photo.tif"  # the name must not matter
    path.write_bytes(head)
    assert sniff(path) == mime == sniff_bytes(head, "photo.tif")
    assert mime in RAW_TYPES and mime in CAMERA_RAW.mime_types


def test_every_sniffed_raw_type_goes_to_libraw() -> None:
    assert RAW_TYPES <= CAMERA_RAW.mime_types
    assert previewer.Registry().resolve("image/x-nikon-nef").name == "raw-libraw"


def test_extension_names_a_maker_variant(tmp_path: Path) -> None:
    # Nikon's NEF and NRW (and Sony's ARW/SR2, Kodak's KDC/DCR) look alike: the name tells.
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[271], ifd[254] = "NIKON CORPORATION", 1
    ifd.tagtype[254] = 4
    for name, mime in (("x.nrw", "image/x-nikon-nrw"), ("x.nef", "image/x-nikon-nef")):
        Image.new("RGB", (96, 64)).save(tmp_path / name, "TIFF", tiffinfo=ifd)
        assert sniff(tmp_path / name) == mime
    (tmp_path / "x.nef").rename(tmp_path / "x.png")
    assert sniff(tmp_path / "x.png") == "image/x-nikon-nef"


# --------------------------------------------------------------------------- rendering


def test_small_output_comes_from_the_embedded_preview(
    raws: dict[str, Path], tmp_path: Path
) -> None:
    (preview,) = previewer.convert(raws["preview"], out_dir=tmp_path, sizes=[256])
    assert preview.converter == "raw-libraw"
    image = check_png(preview.path, expected_size=(256, 171))
    assert _dominant(image, (200, 120)) == 2  # the preview is blue, the mosaic red
    assert image.convert("RGB").getpixel((10, 10)) > (200, 200, 200)  # its light corner


def test_output_larger_than_the_preview_is_demosaiced(
    raws: dict[str, Path], tmp_path: Path
) -> None:
    (preview,) = previewer.convert(raws["preview"], out_dir=tmp_path, sizes=[1024])
    image = check_png(preview.path, expected_size=(1024, 683))
    assert _dominant(image, (800, 500)) == 0  # the scene's red, not the preview's blue
    corner = image.convert("RGB").getpixel((20, 20))
    assert isinstance(corner, tuple) and min(corner) > 150, corner


def test_sources_chosen_by_output_size(raws: dict[str, Path]) -> None:
    with _open(raws["preview"]) as doc:  # type: ignore[attr-defined]
        assert doc.page_size(0) == (1200.0, 800.0)
        for scale, used, size in (
            (0.4, "embedded preview", (480, 320)),
            (0.5, "half-size demosaic", (600, 400)),
            (0.9, "demosaic", (1080, 720)),
        ):
            assert doc.render(0, scale=scale).size == size
            assert doc.source_used == used, scale
        tile = doc.render(0, scale=0.9, clip=(0, 0, 600, 400))
        assert tile.size == (540, 360)
        facts = doc.metadata()
    assert facts["make"] == "Previewer" and facts["model"] == "TestCam"
    assert facts["raw_size"] == [1200, 800] and facts["embedded_preview"] == [480, 320]
    assert facts["rendered_from"] == "demosaic"


def test_damaged_embedded_preview_falls_back_to_the_demosaic(tmp_path: Path) -> None:
    path = dng(tmp_path / "cut.dng", size=(800, 600), rgb=RED, preview=(400, 300), cut_preview=True)
    with _open(path) as doc:  # type: ignore[attr-defined]
        image = doc.render(0, scale=0.32)
        assert doc.source_used == "half-size demosaic"
    assert image.size == (256, 192) and _dominant(image, (200, 150)) == 0


@pytest.mark.parametrize(
    ("rgb", "channel"), [((0.8, 0.1, 0.05), 0), ((0.1, 0.7, 0.1), 1), ((0.05, 0.1, 0.8), 2)]
)
def test_cfa_only_dng_is_demosaiced_in_its_colour(
    rgb: tuple[float, float, float], channel: int, tmp_path: Path
) -> None:
    path = dng(tmp_path / "c.dng", size=(400, 300), rgb=rgb)
    (preview,) = previewer.convert(path, out_dir=tmp_path / "o", sizes=[256])
    image = check_png(preview.path, expected_size=(256, 192))
    assert _dominant(image, (200, 150)) == channel


@pytest.mark.parametrize("name", ["rotated", "rotated-preview"])
def test_orientation_6_gives_a_portrait_preview(
    name: str, raws: dict[str, Path], tmp_path: Path
) -> None:
    info = previewer.info(raws[name])
    assert info.page_sizes == [(800.0, 1200.0)]
    (preview,) = previewer.convert(raws[name], out_dir=tmp_path, sizes=[256])
    image = check_png(preview.path, expected_size=(171, 256)).convert("RGB")
    # The stored top-left corner is light; turned 90 degrees clockwise it is the top right.
    assert min(image.getpixel((160, 10))) > 150  # type: ignore[arg-type]
    assert min(image.getpixel((10, 10))) < 100  # type: ignore[arg-type]
    assert min(image.getpixel((160, 245))) < 100  # type: ignore[arg-type]


def test_info_reports_camera_and_preview(raws: dict[str, Path]) -> None:
    proc = run_previewer("info", raws["preview"], "--json", text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["mime"] == "image/x-adobe-dng" and facts["converter"] == "raw-libraw"
    meta = facts["metadata"]
    assert (meta["make"], meta["model"]) == ("Previewer", "TestCam")
    assert meta["embedded_preview"] == [480, 320] and meta["image_size"] == [1200, 800]


def test_batch_workers_convert_raw(raws: dict[str, Path], tmp_path: Path) -> None:
    proc = run_previewer(
        "convert", raws["preview"], raws["rotated"], "-o", tmp_path, "-j", "2", "--json",
        text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sizes = sorted(check_png(Path(json.loads(line)["outputs"][0]["path"])).size
                   for line in proc.stdout.splitlines())  # fmt: skip
    assert sizes == [(171, 256), (256, 171)]


# --------------------------------------------------------------------------- hostile files


def _cli(path: Path, out: Path, *args: str) -> tuple[int, str, float]:
    start = time.monotonic()
    proc = run_previewer("convert", path, "-o", out, *args, text=True, timeout=60)
    return proc.returncode, proc.stderr, time.monotonic() - start


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("garbage", "truncated or unreadable RAW data"),
        ("truncated", "truncated or unreadable RAW data"),
        ("fake", "not a RAW file or an unsupported camera format"),
    ],
)
def test_broken_raw_is_a_bad_input(kind: str, words: str, tmp_path: Path) -> None:
    path = hostile_dng(tmp_path / f"{kind}.dng", kind)
    code, err, seconds = _cli(path, tmp_path / "o")
    assert code == 5, err
    assert words in err and f"{kind}.dng" in err and "raw-libraw" in err, err
    assert seconds < 10
    assert not (tmp_path / "o").exists()  # nothing written, not even the directory


def test_huge_declared_dimensions_fail_fast_with_bounded_memory(tmp_path: Path) -> None:
    path = hostile_dng(tmp_path / "huge.dng", "huge")  # 60,000 x 60,000 in 64 KB
    code, err, seconds = _cli(path, tmp_path / "o")
    assert code == 6 and "over the limit" in err and "60000x60000" in err, err
    assert seconds < 10
    # With the pixel limit lifted, the memory the decode needs is refused before unpacking.
    code, err, seconds = _cli(path, tmp_path / "o", "--max-pixels", "10000000000", "-s", "4096")
    assert code == 6 and "max_memory" in err.replace("--max-memory", "max_memory"), err
    assert seconds < 10


def test_library_error_names_the_reason(tmp_path: Path) -> None:
    path = hostile_dng(tmp_path / "t.dng", "truncated")
    with pytest.raises(InputError, match="truncated or unreadable RAW data") as exc:
        previewer.convert(path, out_dir=tmp_path / "o")
    assert exc.value.converter == "raw-libraw" and exc.value.path == str(path)
