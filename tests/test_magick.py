"""The ImageMagick catch-all (converters/magick.py + magick_worker.py) and hostile inputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from pngcheck import check_png, check_tiling

import previewer
from converters.magick import POLICY_TEMPLATE, MagickConverter
from previewer.errors import InputError, LimitExceededError, UnsupportedFormatError

pytestmark = pytest.mark.skipif(
    not MagickConverter().availability().ok, reason="Wand/libMagickWand not installed"
)

VECTOR = Path(__file__).parent / "fixtures" / "vector"


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Image.Image:
    del tmp_path_factory
    image = Image.radial_gradient("L").resize((300, 200)).convert("RGB")
    image.paste((200, 30, 30), (0, 0, 100, 60))
    return image


@pytest.mark.parametrize(
    ("name", "canvas"), [("the_xcf.xcf", (530, 189)), ("man_layers.xcf", (33, 30))]
)
def test_xcf_layers_are_flattened_onto_the_canvas(
    name: str, canvas: tuple[int, int], tmp_path: Path
) -> None:
    (preview,) = previewer.convert(VECTOR / name, out_dir=tmp_path, sizes=[256])
    assert preview.converter == "magick-wand"
    check_png(preview.path, longest=min(256, max(canvas)), aspect=canvas)
    info = previewer.info(VECTOR / name)
    assert info.page_sizes == [(float(canvas[0]), float(canvas[1]))]
    assert info.metadata["format"] == "XCF"


@pytest.mark.parametrize(
    ("suffix", "mode", "mime"),
    [
        (".tga", "RGB", "image/x-tga"),
        (".ppm", "RGB", "image/x-portable-pixmap"),
        (".pgm", "L", "image/x-portable-graymap"),
        (".pbm", "1", "image/x-portable-bitmap"),
        (".pcx", "RGB", "image/x-pcx"),
        (".sgi", "RGB", "image/x-sgi"),
        (".jp2", "RGB", "image/jp2"),  # JPEG 2000 file (OpenJPEG through ImageMagick)
        (".j2k", "RGB", "image/x-jp2-codestream"),
        (".avif", "RGB", "image/avif"),  # libheif through ImageMagick's HEIC coder
    ],
)
def test_raster_formats(
    suffix: str, mode: str, mime: str, picture: Image.Image, tmp_path: Path
) -> None:
    path = tmp_path / f"in{suffix}"
    picture.convert(mode).save(path)
    info = previewer.info(path)
    assert info.mime == mime and info.converter == "magick-wand"
    assert info.page_sizes == [(300.0, 200.0)]
    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=[150])
    image = check_png(preview.path, longest=150, aspect=(300, 200))
    if mode == "RGB":
        r, g, b = image.convert("RGB").getpixel((10, 10))
        assert r > 150 and g < 60 and b < 60


def test_names_are_never_interpreted(picture: Image.Image, tmp_path: Path) -> None:
    # ImageMagick would crop "name[2x2+0+0]" and delete an "ephemeral:" file after reading it.
    crop = tmp_path / "pic[2x2+0+0].tga"
    picture.save(crop)
    assert previewer.info(crop).page_sizes == [(300.0, 200.0)]
    ephemeral = tmp_path / "ephemeral:pic.tga"
    picture.save(ephemeral)
    previewer.convert(ephemeral, out_dir=tmp_path / "out")
    assert ephemeral.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"push graphic-context\nviewbox 0 0 10 10\nimage over 0,0 0,0 'text:/etc/passwd'\npop graphic-context\n",
        b'<?xml version="1.0" encoding="UTF-8"?>\n<image><read filename="text:/etc/passwd"/></image>\n',
        b"text:/etc/passwd\n",
    ],
    ids=["mvg", "msl", "text"],
)
def test_script_formats_renamed_jpg_never_reach_imagemagick(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "evil.jpg"
    path.write_bytes(content)
    with pytest.raises((UnsupportedFormatError, InputError)):
        previewer.convert(path, out_dir=tmp_path / "out")
    with pytest.raises((UnsupportedFormatError, InputError)):
        previewer.convert(path, out_dir=tmp_path / "out", converter="magick-wand")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def _worker(
    tmp_path: Path, coder: str, source: Path, policy: bool
) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    if policy:
        config = tmp_path / "config"
        config.mkdir(exist_ok=True)
        text = POLICY_TEMPLATE.read_text().replace("$tmpdir", str(tmp_path))
        for key, value in [
            ("memory", "256MiB"),
            ("map", "512MiB"),
            ("disk", "1GiB"),
            ("area", "128MP"),
            ("width", "16KP"),
            ("height", "16KP"),
            ("time", "60"),
        ]:
            text = text.replace(f"${key}", value)
        (config / "policy.xml").write_text(text)
        env["MAGICK_CONFIGURE_PATH"] = str(config)
        env["MAGICK_TEMPORARY_PATH"] = str(tmp_path)
    argv = [
        sys.executable,
        "-I",
        "-m",
        "converters.magick_worker",
        coder,
        str(source),
        str(tmp_path / "o.png"),
    ]
    return subprocess.run(argv, env=env, capture_output=True, timeout=60, cwd=tmp_path, check=False)


def test_worker_refuses_to_run_without_the_policy(picture: Image.Image, tmp_path: Path) -> None:
    source = tmp_path / "in.tga"
    picture.save(source)
    done = _worker(tmp_path, "TGA", source, policy=False)
    assert done.returncode == 3
    assert b"PREVIEWER-POLICY" in done.stderr
    done = _worker(tmp_path, "TGA", source, policy=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o.png").is_file()


@pytest.mark.parametrize("coder", ["MVG", "MSL", "TEXT", "EPHEMERAL", "SVG", "PS", "URL"])
def test_policy_denies_dangerous_coders(coder: str, tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.write_bytes(b"push graphic-context\npop graphic-context\n")
    done = _worker(tmp_path, coder, source, policy=True)
    assert done.returncode == 3
    assert b"does not allow reading " + coder.encode() in done.stderr


def test_svg_fetches_nothing_local_or_remote(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    hits: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            hits.append(conn.recv(100))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        svg = tmp_path / "evil.svg"
        svg.write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="100">'
            '<rect width="100" height="50" fill="red"/>'
            '<image href="file:///etc/passwd" width="50" height="50"/>'
            f'<image xlink:href="http://127.0.0.1:{port}/x.png" width="50" height="50"/>'
            "</svg>"
        )
        (preview,) = previewer.convert(svg, out_dir=tmp_path / "out")
        assert preview.converter == "pdf-pymupdf"
    finally:
        stop.set()
        thread.join(2)
        server.close()
    assert hits == []
    assert os.listdir(tmp_path / "out") == [preview.path.name]


def test_tiled_rendering_matches_one_piece() -> None:
    check_tiling(VECTOR / "the_xcf.xcf", 530, max_tile_pixels=20_000)


def test_images_too_large_for_imagemagick_are_refused_from_the_header(tmp_path: Path) -> None:
    # 20000x20000 black PBM (a sparse 50 MB file): 400 MP would need 3.2 GB of pixel cache.
    path = tmp_path / "huge.pbm"
    with open(path, "wb") as fh:
        fh.write(b"P4\n20000 20000\n")
        fh.truncate(fh.tell() + 20000 // 8 * 20000)
    started = time.monotonic()
    with pytest.raises(LimitExceededError, match="400,000,000 pixels; ImageMagick decodes whole"):
        previewer.convert(path, out_dir=tmp_path / "out")
    assert time.monotonic() - started < 20
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_imagemagick_pixel_budget_follows_the_limits() -> None:
    from converters.magick import pixel_budget
    from previewer.options import Limits
    from previewer.plugin import ConvertContext

    def budget(**limits: int) -> int:
        return pixel_budget(ConvertContext(limits=Limits(**limits), mime="image/x-tga"))

    gib = 1024**3
    assert budget() == gib // 8  # half of the default 2 GiB cap, 8 bytes a pixel
    assert budget(max_memory=8 * gib) == 4 * gib // 8
    assert budget(max_pixels=1_000_000) == 1_000_000
