"""Giant pages and images convert in bounded memory: proved under an address-space cap.

The inputs are generated once per test session (shared by the xdist workers through a lock):
a 20,000 x 30,000 pt vector page, the same page size holding a 12,000 x 18,000 JPEG, a
16,000 x 16,000 RGBA PNG (with and without an eXIf chunk), a 30,000 x 20,000 JPEG, a
20,000 x 20,000 tiled TIFF and a 16,000 x 16,000 GIF. Each
conversion runs in a child process whose address space is capped (``RLIMIT_AS``); it must succeed
there, while the naive way (one full ``get_pixmap``, one full decode) must fail under the same cap.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from tests.pngcheck import check_png, png_chunks

pytestmark = pytest.mark.slow

GIB = 1024**3
MIB = 1024**2
ROOT = Path(__file__).resolve().parents[1]

GENERATE = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import pymupdf
    import pyvips

    kind, out = sys.argv[1], Path(sys.argv[2])
    tmp = out.with_name(out.name + ".part")
    if kind == "giant.gif":
        # Pillow encodes a palette image in seconds (libvips quantises RGB: ~30 s).
        from PIL import Image, ImageDraw

        image = Image.new("P", (16_000, 16_000), 0)
        image.putpalette([255, 255, 255, 200, 30, 30, 30, 30, 200, 0, 160, 0] + [0] * 756)
        draw = ImageDraw.Draw(image)
        for i in range(0, 16_000, 500):
            draw.rectangle((i, 0, i + 249, 15_999), fill=1 + (i // 500) % 3)
            draw.line((0, i, 16_000, 16_000 - i), fill=3, width=40)
        image.save(tmp, "GIF")
    elif kind == "vector.pdf":
        doc = pymupdf.open()
        page = doc.new_page(width=20_000, height=30_000)
        shape = page.new_shape()
        for i in range(40):
            shape.draw_rect(pymupdf.Rect(i * 480, i * 720, i * 480 + 900, i * 720 + 600))
            shape.finish(color=(0, 0, 0), fill=(i / 40, 0.5, 1 - i / 40), width=8)
            shape.draw_line((0, i * 750), (20_000, 30_000 - i * 750))
            shape.finish(color=(0, 0, 1), width=4)
        shape.commit()
        for y in range(1000, 30_000, 3000):
            page.insert_text((400, y), f"giant vector page, y = {y}", fontsize=160)
        doc.save(tmp)
    elif kind == "image.pdf":
        x = pyvips.Image.xyz(12_000, 18_000)
        rgb = (x[0] * 255 / 12_000).bandjoin([x[1] * 255 / 18_000, (x[0] + x[1]) % 256])
        jpeg = rgb.cast("uchar").jpegsave_buffer(Q=75)
        doc = pymupdf.open()
        page = doc.new_page(width=20_000, height=30_000)
        page.insert_image(page.rect, stream=jpeg)
        page.insert_text((500, 1500), "giant page, giant image", fontsize=600)
        doc.save(tmp)
    else:
        # A 1000 x 1000 picture repeated: cheap to encode, and it compresses well.
        x = pyvips.Image.xyz(1000, 1000)
        tile = (x[0] / 4).bandjoin([x[1] / 4, (x[0] + x[1]) / 8]).cast("uchar")
        if kind in ("giant.png", "giant-noexif.png"):
            # libvips writes an eXIf chunk before the pixels unless told to strip metadata.
            tile = tile.bandjoin(255 - x[0] / 8).cast("uchar")
            strip = kind == "giant-noexif.png"
            tile.replicate(16, 16).pngsave(str(tmp), compression=1, filter="none", strip=strip)
        elif kind == "giant.jpg":
            tile.replicate(30, 20).jpegsave(str(tmp), Q=70)
        elif kind == "giant.tif":
            tile.replicate(20, 20).tiffsave(
                str(tmp), tile=True, tile_width=256, tile_height=256, compression="deflate"
            )
    tmp.rename(out)
    """
)

# Runs one conversion through the public library API under the cap; prints the result as JSON.
CONVERT = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path

    cap, src, out, size, extra = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import previewer
    from previewer.errors import PreviewerError
    from previewer.options import Limits

    try:
        (preview,) = previewer.convert(src, out_dir=out, sizes=[size], limits=Limits(**extra))
    except PreviewerError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        sys.exit(0)
    dest, written = preview.path, (preview.width, preview.height)
    # VmHWM belongs to this process image (ru_maxrss would include the parent's at fork).
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    print(json.dumps({"path": str(dest), "size": list(written), "peak": peak}))
    """
)

# The naive ways, under the same cap: one full get_pixmap, one full decode.
NAIVE = textwrap.dedent(
    """
    import resource, sys

    cap, kind, src, zoom = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    if kind == "pixmap":
        import pymupdf

        pymupdf.TOOLS.mupdf_display_errors(False)
        page = pymupdf.open(src)[0]
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom))
        print(pix.width, pix.height)
    else:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        with Image.open(src) as im:
            im.load()
            print(im.size)
    """
)


@pytest.fixture(scope="session")
def giant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared directory of giant inputs, generated once for all xdist workers."""
    root = tmp_path_factory.getbasetemp()
    shared = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "giant-inputs"
    shared.mkdir(exist_ok=True)
    return shared


def _input(giant: Path, kind: str) -> Path:
    path = giant / kind
    with open(giant / f"{kind}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            subprocess.run(
                [sys.executable, "-c", GENERATE, kind, str(path)], check=True, timeout=300
            )
    return path


def _convert(src: Path, out: Path, size: str, cap: int, **limits: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CONVERT, str(cap), str(src), str(out), size, json.dumps(limits)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _naive_fails(kind: str, src: Path, cap: int, zoom: float = 1.0) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", NAIVE, str(cap), kind, str(src), str(zoom)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode != 0, f"the naive way fit under the cap too: {proc.stdout}"
    assert "Memory" in proc.stderr or "malloc" in proc.stderr or "alloc" in proc.stderr, (
        proc.stderr[-2000:]
    )


@pytest.mark.parametrize("kind", ["vector.pdf", "image.pdf"])
def test_thumbnail_of_giant_page_under_cap(giant: Path, tmp_path: Path, kind: str) -> None:
    src = _input(giant, kind)
    cap = 512 * MIB
    result = _convert(src, tmp_path, "256", cap)
    assert result["size"] == [171, 256]
    check_png(Path(result["path"]), longest=256, aspect=(20_000, 30_000))
    assert result["peak"] < 300 * MIB
    # A naive tool renders the page at some fixed resolution and shrinks it: at 0.6 px/pt
    # (12,000 x 18,000 px, 648 MB) the pixmap alone exceeds the cap (from about 0.8 px/pt,
    # MuPDF refuses such pixmaps itself: "Overly large image").
    _naive_fails("pixmap", src, cap, zoom=0.6)


def test_streamed_output_of_giant_page_under_cap(giant: Path, tmp_path: Path) -> None:
    # 8,000 x 12,000 px: one full pixmap is 288 MB; the streamed output renders 16 MP tiles.
    src = _input(giant, "vector.pdf")
    cap = 340 * MIB
    result = _convert(src, tmp_path, "12000", cap, max_output_pixels=100_000_000)
    assert result["size"] == [8000, 12000]
    path = Path(result["path"])
    assert result["peak"] < 300 * MIB
    _naive_fails("pixmap", src, cap, zoom=12000 / 30000)
    chunks = png_chunks(path.read_bytes())
    kinds = [kind for kind, _ in chunks]
    assert kinds[:2] == [b"IHDR", b"sRGB"] and set(kinds) == {b"IHDR", b"sRGB", b"IDAT", b"IEND"}
    assert struct.unpack(">IIBB", chunks[0][1][:10]) == (8000, 12000, 8, 2)
    # Inflate it piece by piece rather than decoding it whole: every row is there, filter byte
    # first, and the drawing reaches most rows.
    stride = 1 + 8000 * 3
    inflate = zlib.decompressobj()
    pending = bytearray()
    count = drawn = 0
    for kind, payload in chunks:
        if kind != b"IDAT":
            continue
        pending += inflate.decompress(payload)
        while len(pending) >= stride:
            row = bytes(pending[:stride])
            del pending[:stride]
            assert row[0] == 0
            count += 1
            drawn += row.count(255) < stride - 1
    pending += inflate.flush()
    assert not pending and inflate.eof
    assert count == 12000 and drawn > 1000


@pytest.mark.parametrize(
    ("kind", "pixels", "naive"),
    [
        ("giant.png", (16000, 16000), "decode"),
        ("giant.jpg", (30000, 20000), "decode"),
        ("giant.tif", (20000, 20000), "decode"),
    ],
)
@pytest.mark.parametrize("size", ["256", "4000", "8000"])
def test_giant_raster_under_cap(
    giant: Path, tmp_path: Path, kind: str, pixels: tuple[int, int], naive: str, size: str
) -> None:
    src = _input(giant, kind)
    cap = 768 * MIB  # a full decode of the PNG alone is 1,024 MB (RGBA), of the JPEG 1.8 GB
    result = _convert(src, tmp_path, size, cap)
    edge = int(size)
    w, h = pixels
    expected = [edge, round(h * edge / w)] if w >= h else [round(w * edge / h), edge]
    assert result["size"] == expected
    check_png(Path(result["path"]), longest=edge, aspect=pixels)
    assert result["peak"] < 400 * MIB
    if size == "256":
        _naive_fails(naive, src, cap)


def test_max_pixels_refuses_from_the_header(giant: Path, tmp_path: Path) -> None:
    src = _input(giant, "giant.png")
    result = _convert(src, tmp_path, "256", GIB, max_pixels=100_000_000)
    assert result["error"] == "LimitExceededError"
    assert "256,000,000" in result["message"]
    assert "100,000,000" in result["message"]


def test_png_without_exif_is_not_decoded_to_read_its_orientation(
    giant: Path, tmp_path: Path
) -> None:
    # Pillow 13 decodes a whole PNG (1 GB here) when asked for its EXIF and no eXIf chunk came
    # before the pixels. No cap that would hide it (a failed allocation reads as "no EXIF"):
    # the peak itself is measured.
    src = _input(giant, "giant-noexif.png")
    assert b"eXIf" not in src.read_bytes()[:4096]
    result = _convert(src, tmp_path, "256", 4 * GIB)
    assert result["size"] == [256, 256]
    check_png(Path(result["path"]), longest=256, aspect=(16000, 16000))
    assert result["peak"] < 300 * MIB


@pytest.mark.parametrize("size", ["256", "8000"])
def test_giant_png_without_exif_to_8000_px(giant: Path, tmp_path: Path, size: str) -> None:
    src = _input(giant, "giant-noexif.png")
    result = _convert(src, tmp_path, size, 4 * GIB)
    assert result["size"] == [int(size), int(size)]
    check_png(Path(result["path"]), longest=int(size), aspect=(16000, 16000))
    assert result["peak"] < 400 * MIB


@pytest.mark.parametrize("size", ["256", "8000"])
def test_giant_gif_is_kept_at_one_byte_a_pixel(giant: Path, tmp_path: Path, size: str) -> None:
    # A GIF frame is decoded whole (256 MB here, as palette indices); libvips 8.18 holds it as
    # RGBA (1.1 GB), Pillow's whole-image conversion to RGB would take 768 MB more.
    src = _input(giant, "giant.gif")
    result = _convert(src, tmp_path, size, 4 * GIB)
    assert result["size"] == [int(size), int(size)]
    image = check_png(Path(result["path"]), longest=int(size), aspect=(16000, 16000))
    r, g, b = image.convert("RGB").getpixel((int(size) // 128, int(size) * 3 // 10))
    assert r > 150 and g < 80 and b < 80  # the first red stripe
    assert result["peak"] < 400 * MIB
