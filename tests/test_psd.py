"""Photoshop documents through converters/psd.py, with real files and generated ones."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pngcheck import check_png, check_tiling
from psdgen import layered_psd, with_corrupt_layer_rect, without_composite
from support import worst_channel_difference

import previewer
from previewer.errors import InputError, LimitExceededError

PSD = Path(__file__).parent / "fixtures" / "psd"
GOLDEN = sorted((PSD / "golden").glob("*.psd"))

# Rows of the shared corpus manifest (family psd): file -> (size, depth, colour mode).
OK_ROWS = {
    "gray1.psd": ((1800, 1200), 8, "Grayscale"),
    "transparentbg-gimp.psd": ((40, 40), 8, "RGB"),
    "16bit5x5.psd": ((5, 5), 16, "RGB"),
    "32bit.psd": ((100, 150), 32, "RGB"),
    "0layers.psb": ((1600, 1200), 8, "RGB"),
    "pixel-layer.psd": ((32, 32), 8, "RGB"),
    "cmyk-spot.psd": ((640, 637), 8, "CMYK"),
    "4x4_8bit_lab.psd": ((4, 4), 8, "Lab"),
    "4x4_1bit_bitmap.psd": ((4, 4), 1, "Bitmap"),
}
CORRUPT = ["group-divider-blend-mode.psd", "psd-oob-write-overflow.psd"]


def _mse(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64) / 255
    y = np.asarray(b.convert("RGB"), dtype=np.float64) / 255
    return float(((x - y) ** 2).mean())


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_composite_matches_photoshop(path: Path) -> None:
    image = previewer.render(path, size=200)
    with Image.open(path.with_suffix(".png")) as png:
        golden = png.convert("RGB")
    assert image.size == golden.size == (200, 200)
    assert _mse(image, golden) <= 0.001


@pytest.mark.parametrize("name", sorted(OK_ROWS))
def test_corpus_psd_converts(name: str, tmp_path: Path) -> None:
    size, depth, mode = OK_ROWS[name]
    (preview,) = previewer.convert(PSD / name, out_dir=tmp_path, sizes=[256])
    assert preview.converter == "psd-psdtools"
    longest = min(256, max(size))
    flat = name in ("4x4_1bit_bitmap.psd",)
    check_png(preview.path, longest=longest, aspect=size, allow_flat=flat)
    info = previewer.info(PSD / name)
    assert info.page_sizes == [(float(size[0]), float(size[1]))]
    assert info.metadata["canvas"] == list(size)
    assert info.metadata["bit_depth"] == depth
    assert info.metadata["color_mode"] == mode


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_psd_is_bad_input(name: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        previewer.convert(PSD / name, out_dir=tmp_path)
    assert name in str(excinfo.value)
    assert list(tmp_path.iterdir()) == []


def test_info_lists_layers() -> None:
    info = previewer.info(PSD / "gray1.psd")
    assert info.metadata["layer_count"] == 3
    assert info.metadata["layer_names"] == ["Background", "Shape 1", "Shape 2"]
    assert info.metadata["format"] == "PSD"
    assert previewer.info(PSD / "0layers.psb").metadata["format"] == "PSB"


def test_cmyk_is_converted_not_inverted() -> None:
    image = previewer.render(PSD / "golden" / "curves_cmyk.psd", size=200)
    with Image.open(PSD / "golden" / "curves_cmyk.psd", formats=["PSD"]) as source:
        naive = source.convert("RGB").resize((200, 200))
    with Image.open(PSD / "golden" / "curves_cmyk.png") as png:
        golden = png.convert("RGB")
    assert _mse(image, golden) < _mse(naive, golden)


def test_transparency_is_kept() -> None:
    image = previewer.render(PSD / "transparentbg-gimp.psd", size=40)
    assert image.mode == "RGBA"
    assert image.getchannel("A").getextrema()[0] == 0


def test_no_composite_is_composited_from_layers(tmp_path: Path) -> None:
    layered = layered_psd(tmp_path / "layered.psd", (800, 600), layers=4)
    bare = without_composite(layered, tmp_path / "bare.psd")
    assert previewer.info(bare).metadata["has_composite"] is False
    ours = previewer.render(bare, size=400)
    from psd_tools import PSDImage

    full = PSDImage.open(bare).composite().resize(ours.size, Image.Resampling.LANCZOS)
    white = Image.new("RGBA", ours.size, "white")
    a = Image.alpha_composite(white, ours.convert("RGBA")).convert("RGB")
    b = Image.alpha_composite(white, full.convert("RGBA")).convert("RGB")
    assert worst_channel_difference(a, b) < 3
    # And the stored-composite path gives the same picture.
    stored = previewer.render(layered, size=400).convert("RGB")
    assert worst_channel_difference(stored, a) < 3


def test_corrupt_layer_rectangle_falls_back_to_the_stored_composite(tmp_path: Path) -> None:
    layered = layered_psd(tmp_path / "layered.psd", (300, 200), layers=2)
    broken = with_corrupt_layer_rect(layered, tmp_path / "broken.psd")

    (preview,) = previewer.convert(broken, out_dir=tmp_path / "out", sizes=["150"])

    image = check_png(preview.path, longest=150, aspect=(300, 200))
    expected = previewer.render(layered, size=150).convert("RGB")
    assert worst_channel_difference(image.convert("RGB"), expected) < 1
    info = previewer.info(broken)
    assert "corrupt layer rectangle" in info.metadata["layer_error"]


def test_corrupt_layer_rectangle_without_a_composite_is_bad_input(tmp_path: Path) -> None:
    layered = layered_psd(tmp_path / "layered.psd", (300, 200), layers=2)
    bare = with_corrupt_layer_rect(
        without_composite(layered, tmp_path / "bare.psd"), tmp_path / "broken.psd"
    )
    with pytest.raises(InputError, match="corrupt layer rectangle"):
        previewer.convert(bare, out_dir=tmp_path / "out")


def test_tiny_file_declaring_a_huge_canvas_fails_fast(tmp_path: Path) -> None:
    data = bytearray((PSD / "pixel-layer.psd").read_bytes()[:26])
    data[14:22] = (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big")
    path = tmp_path / "huge.psd"
    path.write_bytes(bytes(data) + b"\x00" * 1000)
    start = time.monotonic()
    limits = previewer.Limits(max_pixels=100_000_000)
    with pytest.raises(LimitExceededError, match="30000x30000"):
        previewer.convert(path, out_dir=tmp_path / "out", limits=limits)
    assert time.monotonic() - start < 1.0


def test_truncated_psd_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "cut.psd"
    path.write_bytes((PSD / "gray1.psd").read_bytes()[:5000])
    with pytest.raises(InputError):
        previewer.convert(path, out_dir=tmp_path)


def test_tiled_rendering_matches_one_piece() -> None:
    check_tiling(PSD / "gray1.psd", 600, max_tile_pixels=40_000)


def test_stored_composite_needs_neither_psd_tools_nor_metadata(tmp_path: Path) -> None:
    # The fast path (Pillow reads the stored composite) must stay free of psd-tools' and
    # importlib.metadata's import costs; availability still reports the installed version.
    import subprocess
    import sys
    from importlib import metadata

    code = (
        "import sys, previewer\n"
        f"previewer.convert({str(PSD / 'gray1.psd')!r}, out_dir={str(tmp_path)!r})\n"
        "loaded = 'psd_tools' in sys.modules, 'importlib.metadata' in sys.modules\n"
        "from previewer.converters.psd import PsdConverter\n"
        "print(PsdConverter().availability().version, *loaded)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    version, psd_tools, meta = proc.stdout.split()
    assert version == metadata.version("psd-tools")
    assert (psd_tools, meta) == ("False", "False")
    check_png(tmp_path / "gray1.psd.p1.256.png", longest=256, aspect=(1800, 1200))
