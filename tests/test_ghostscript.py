"""EPS, PostScript and non-PDF Illustrator files through Ghostscript (converters/ghostscript.py)."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import pytest
from pngcheck import check_png, check_tiling
from support import processes, requires_engine, same_pixels

import previewer
from previewer.errors import EngineTimeoutError, InputError, LimitExceededError

pytestmark = requires_engine("gs")

VECTOR = Path(__file__).parent / "fixtures" / "vector"

EPS_BOX = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 200 100\n%%EndComments\n"
    b"0.8 0.1 0.1 setrgbcolor 10 10 180 80 rectfill\n"
)


def _eps(tmp_path: Path, body: bytes, name: str = "in.eps") -> Path:
    path = tmp_path / name
    path.write_bytes(EPS_BOX + body + b"\nshowpage\n")
    return path


@pytest.mark.parametrize(
    ("name", "size", "kind"),
    [
        ("zero_bb.eps", (460, 352), "EPS"),
        ("illu10_preview.eps", (402.5206, 2447.3936), "EPS"),
        ("raw_text.ps", (595, 842), "PostScript"),
    ],
)
def test_corpus_postscript_converts(
    name: str, size: tuple[float, float], kind: str, tmp_path: Path
) -> None:
    (preview,) = previewer.convert(VECTOR / name, out_dir=tmp_path, sizes=[256])
    assert preview.converter == "postscript-ghostscript"
    check_png(preview.path, longest=256, aspect=size)
    info = previewer.info(VECTOR / name)
    assert info.units == "pt"
    (page,) = info.page_sizes
    assert abs(page[0] - size[0]) < 0.5 and abs(page[1] - size[1]) < 0.5
    assert info.metadata["format"] == kind


def test_eps_with_tiff_preview_header() -> None:
    info = previewer.info(VECTOR / "illu10_preview.eps")
    assert info.metadata["binary_preview"] == "TIFF"
    image = previewer.render(VECTOR / "illu10_preview.eps", size=512)
    assert image.height == 512


def test_eps_renders_at_requested_size(tmp_path: Path) -> None:
    path = _eps(tmp_path, b"")
    image = previewer.render(path, size=1000)
    assert image.size == (1000, 500)
    r, g, b, *_ = image.getpixel((500, 250))
    assert r > 150 and g < 80 and b < 80


def test_fuzzed_eps_is_bad_input(tmp_path: Path) -> None:
    name = "timeout-d675703545fee17acab56e5fec644c19979175de.eps"
    with pytest.raises(InputError) as excinfo:
        previewer.convert(VECTOR / name, out_dir=tmp_path)
    assert name in str(excinfo.value)


def test_postscript_error_is_bad_input(tmp_path: Path) -> None:
    path = _eps(tmp_path, b"nosuchoperator")
    with pytest.raises(InputError, match="undefined"):
        previewer.convert(path, out_dir=tmp_path / "out")


def test_pipe_is_refused(tmp_path: Path) -> None:
    marker = Path(tempfile.gettempdir()) / f"previewer-pwned-{uuid.uuid4().hex}"
    path = _eps(tmp_path, b"(%pipe%touch " + str(marker).encode() + b") (w) file closefile")
    with pytest.raises(InputError, match="invalidfileaccess"):
        previewer.convert(path, out_dir=tmp_path / "out")
    assert not marker.exists()


def test_file_planted_in_shared_temp_is_not_readable(tmp_path: Path) -> None:
    planted = Path(tempfile.gettempdir()) / f"previewer-planted-{uuid.uuid4().hex}.txt"
    planted.write_text("secret")
    try:
        body = b"/f (" + str(planted).encode() + b") (r) file def f 6 string readstring pop pop"
        path = _eps(tmp_path, body)
        with pytest.raises(InputError, match="invalidfileaccess"):
            previewer.convert(path, out_dir=tmp_path / "out")
    finally:
        planted.unlink()


def test_infinite_loop_times_out_and_leaves_no_process(tmp_path: Path) -> None:
    path = _eps(tmp_path, b"{} loop", name=f"loop-{uuid.uuid4().hex}.eps")
    start = time.monotonic()
    with pytest.raises(EngineTimeoutError):
        previewer.convert(path, out_dir=tmp_path / "out", limits=previewer.Limits(timeout=2))
    assert time.monotonic() - start < 15
    assert processes(cmdline=path.name) == []
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


def test_multi_page_postscript(tmp_path: Path) -> None:
    path = tmp_path / "two.ps"
    path.write_bytes(
        b"%!PS-Adobe-3.0\n%%Pages: 2\n%%EndComments\n"
        b"%%Page: 1 1\n0 0 1 setrgbcolor 0 0 300 300 rectfill showpage\n"
        b"%%Page: 2 2\n1 0 0 setrgbcolor 0 0 300 300 rectfill showpage\n%%EOF\n"
    )
    previews = previewer.convert(path, out_dir=tmp_path / "out", pages="all", sizes=[100])
    assert [p.page for p in previews] == [1, 2]
    with previewer.render(path, page=2, size=100) as image:
        r, g, b = image.convert("RGB").getpixel((5, image.height - 5))
    assert r > 200 and b < 50


def test_tiled_rendering_matches_one_piece(tmp_path: Path) -> None:
    path = _eps(tmp_path, b"0 0 1 setrgbcolor 100 50 moveto 150 90 lineto stroke")
    check_tiling(path, 800, max_tile_pixels=40_000)


def test_one_size_preview_is_gs_png_without_pillow(tmp_path: Path) -> None:
    # The fast path hands Ghostscript's PNG on (no Pillow import, no decode and re-encode);
    # its pixels are those of the decoded path.
    import subprocess
    import sys

    path = _eps(tmp_path, b"0 0 1 setrgbcolor 50 20 moveto 150 80 lineto stroke")
    code = (
        "import sys, previewer\n"
        f"(p,) = previewer.convert({str(path)!r}, out_dir={str(tmp_path / 'out')!r}, sizes=[300])\n"
        "print(p.path, 'PIL' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    out, pil = proc.stdout.split()
    assert pil == "False"
    check_png(Path(out), longest=300, aspect=(200, 100))
    from PIL import Image

    with Image.open(out) as fast:
        assert fast.mode == "RGBA" and fast.size == (300, 150)
        decoded = previewer.render(path, size=300)
        assert same_pixels(fast, decoded)


RED_BOX = b"0.8 0.1 0.1 setrgbcolor 10 10 180 80 rectfill\n"


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("noshow.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 200 100\n"),
        # FreeHand writes .ai files as PostScript (not EPSF) that never call showpage.
        ("freehand.ai", b"%!PS-Adobe-2.0\n%%Creator: FreeHand 5.0\n%%BoundingBox: 0 0 200 100\n"),
        ("noshow.ps", b"%!PS-Adobe-3.0\n%%DocumentMedia: Plain 200 100 0 () ()\n"),
    ],
    ids=["eps", "freehand-ai", "ps"],
)
@pytest.mark.parametrize("showpage", [False, True], ids=["without-showpage", "with-showpage"])
def test_page_is_emitted_once_with_or_without_showpage(
    tmp_path: Path, name: str, head: bytes, showpage: bool
) -> None:
    path = tmp_path / name
    path.write_bytes(head + b"%%EndComments\n" + RED_BOX + (b"showpage\n" if showpage else b""))

    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[200])

    assert preview.converter == "postscript-ghostscript"
    image = check_png(preview.path, expected_size=(200, 100)).convert("RGB")
    # The drawing, not a second blank page written over it.
    r, g, b = image.getpixel((100, 50))
    assert r > 150 and g < 80 and b < 80, (r, g, b)


BIG = "9" * 400  # overflows a double: inf


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ("0 0 1.2.3 5", InputError),  # malformed: ignored by previewer, refused by gs
        (". . . .", InputError),
        ("0 0 -100 -50", InputError),
        (f"0 0 {BIG} 5", InputError),
        ("-1e308 0 1e308 5", InputError),
        ("abc", (595, 842)),  # no box: A4
        ("0 0 200 100 junk", (200, 100)),
        ("0 0 1e30 5", (256, 1)),  # huge but finite: fitted to the output, no giant page
    ],
)
def test_malformed_or_overflowing_bounding_box(
    tmp_path: Path, box: str, expected: type[Exception] | tuple[int, int]
) -> None:
    path = tmp_path / "box.eps"
    path.write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: " + box.encode() + b"\n%%EndComments\n"
        + RED_BOX
    )  # fmt: skip
    if isinstance(expected, tuple):
        (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[256])
        w, h = expected
        assert (preview.width, preview.height) == (
            (256, max(1, round(256 * h / w))) if w >= h else (round(256 * w / h), 256)
        )
        return
    with pytest.raises(expected) as excinfo:
        previewer.convert(path, out_dir=tmp_path / "out")
    assert "box.eps" in str(excinfo.value)


def test_postscript_page_too_large_for_ghostscript_is_a_limit(tmp_path: Path) -> None:
    # 256 px across 100,000 pt is 0.18 dpi: Ghostscript 10.0 would stop with a rangecheck.
    path = tmp_path / "poster.ps"
    path.write_bytes(
        b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 100000 100000\n%%EndComments\n" + RED_BOX
        + b"showpage\n"
    )  # fmt: skip
    with pytest.raises(LimitExceededError, match="too large"):
        previewer.convert(path, out_dir=tmp_path / "out", sizes=[256])
