"""The ImageMagick catch-all (converters/magick.py + magick_worker.py) and hostile inputs."""

from __future__ import annotations

import json
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
from support import requires_engine, run_previewer

import previewer
from previewer.converters.magick import POLICY_TEMPLATE
from previewer.errors import LimitExceededError, UnsupportedFormatError

pytestmark = requires_engine("magick")

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
    try:  # unsupported (MVG), or text shown as text: never ImageMagick
        assert previewer.info(path).converter == "text-story"
    except UnsupportedFormatError as exc:
        assert "evil.jpg: unsupported format" in str(exc)
    with pytest.raises(UnsupportedFormatError, match="ImageMagick is not allowed to decode"):
        previewer.convert(path, out_dir=tmp_path / "out", converter="magick-wand")
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


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
        "previewer.converters.magick_worker",
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
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory


def test_imagemagick_pixel_budget_follows_the_limits() -> None:
    from previewer.converters.magick import pixel_budget
    from previewer.options import Limits
    from previewer.plugin import ConvertContext

    def budget(**limits: int) -> int:
        return pixel_budget(ConvertContext(limits=Limits(**limits), mime="image/x-tga"))

    gib = 1024**3
    assert budget() == gib // 8  # half of the default 2 GiB cap, 8 bytes a pixel
    assert budget(max_memory=8 * gib) == 4 * gib // 8
    assert budget(max_pixels=1_000_000) == 1_000_000


def _huge_header(kind: str, width: int, height: int) -> bytes:
    """A file of ``kind`` whose header declares ``width`` x ``height`` and little else."""
    import struct

    if kind == "xcf":  # "gimp xcf file", width, height, RGB, no properties, layers, channels
        return b"gimp xcf file\0" + struct.pack(">IIIIII", width, height, 0, 0, 0, 0) + bytes(64)
    if kind == "pcx":  # ZSoft, version 5, RLE, 8 bits; xmin ymin xmax ymax; 3 planes
        head = bytes([10, 5, 1, 8]) + struct.pack("<HHHHHH", 0, 0, width - 1, height - 1, 72, 72)
        return (
            head + bytes(49) + bytes([3]) + struct.pack("<HH", width, 1) + bytes(58) + bytes(2000)
        )
    if kind == "tga":  # uncompressed true colour, 24 bits
        return (
            bytes([0, 0, 2])
            + bytes(9)
            + struct.pack("<HH", width, height)
            + bytes([24, 0])
            + bytes(3000)
        )
    assert kind == "sgi"  # magic 474, verbatim, 1 byte a channel, 3 dimensions, RGB
    return struct.pack(">hBBHHHH", 474, 0, 1, 3, width, height, 3) + bytes(3000)


@pytest.mark.parametrize("kind", ["xcf", "pcx", "tga", "sgi"])
def test_header_declaring_too_many_pixels_is_refused_at_once(kind: str, tmp_path: Path) -> None:
    # ImageMagick 6.9 took 16 s to fail on the XCF (its "ping" allocates the canvas), and
    # reported the PCX and SGI files as short data (exit 5) rather than too large.
    path = tmp_path / f"huge.{kind}"
    path.write_bytes(_huge_header(kind, 60000, 60000))
    started = time.monotonic()
    proc = run_previewer("convert", path, "-o", tmp_path / "out", text=True, timeout=60)
    assert time.monotonic() - started < 5
    assert proc.returncode == 6, proc.stderr
    assert "60000x60000 = 3,600,000,000 pixels" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_max_pixels_applies_to_imagemagick_headers(picture: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / "small.tga"
    picture.save(path)  # 300 x 200
    (preview,) = previewer.convert(path, out_dir=tmp_path / "out", sizes=["64"])
    assert preview.converter == "magick-wand"
    with pytest.raises(
        LimitExceededError, match=r"300x200 = 60,000 pixels, over the limit of 50,000"
    ):
        previewer.convert(
            path, out_dir=tmp_path / "out2", limits=previewer.Limits(max_pixels=50_000)
        )


# Installs an audit hook recording every program the interpreter starts (subprocess,
# posix_spawn, exec, system) into the file named LOG.
_HOOK = """
import json, sys

def _hook(event, args, _log=open(LOG, "a")):
    if event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.system", "os.spawn"):
        argv = [str(a) for a in args[1]] if isinstance(args[1], (list, tuple)) else [str(args[1])]
        _log.write(json.dumps([str(args[0]), *argv]) + "\\n")
        _log.flush()

sys.addaudithook(_hook)
"""

# Records the programs started while running ``python -m MODULE ARGS...``: argv is LOG MODULE
# ARGS...
_RECORD_SPAWNS = (
    "import runpy, sys\n"
    "LOG = sys.argv.pop(1)\n" + _HOOK + "module = sys.argv.pop(1)\n"
    "sys.argv[0] = module\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


_TOOLCHAIN = {"gcc", "cc", "ld", "ldconfig"}


def _fake_toolchain(tmp_path: Path) -> tuple[Path, Path]:
    """A directory of fake gcc, cc, ld and ldconfig that record being run, and their log."""
    bin_dir, called = tmp_path / "fakebin", tmp_path / "toolchain-called"
    bin_dir.mkdir()
    for name in sorted(_TOOLCHAIN):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {called}\nexit 1\n')
        script.chmod(0o755)
    return bin_dir, called


def test_conversion_starts_no_compiler_linker_or_ldconfig(
    picture: Image.Image, tmp_path: Path
) -> None:
    # ctypes.util.find_library runs /sbin/ldconfig, then gcc and ld from PATH, for every name it
    # does not find: converters.magick called it to report availability.
    source = tmp_path / "in.tga"
    picture.save(source)
    bin_dir, called = _fake_toolchain(tmp_path)
    spawns = tmp_path / "spawns.log"
    code = f"""
import magic  # python-magic (MIME sniffing) looks libmagic up once, when imported
LOG = {str(spawns)!r}
{_HOOK}
import previewer
(preview,) = previewer.convert(
    {str(source)!r}, out_dir={str(tmp_path / "out")!r}, sizes=["64"], converter="magick-wand"
)
print(preview.path)
"""
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    check_png(Path(proc.stdout.strip()), longest=64, aspect=(300, 200))
    started = [json.loads(line) for line in spawns.read_text().splitlines()]
    assert any("previewer.converters.magick_worker" in argv for argv in started), started
    assert not [argv for argv in started if _TOOLCHAIN & {Path(a).name for a in argv[:2]}]
    assert not called.exists(), called.read_text()


def test_worker_starts_no_compiler_linker_or_ldconfig(picture: Image.Image, tmp_path: Path) -> None:
    from previewer.converters.magick import _policy, worker_command
    from previewer.plugin import ConvertContext

    source = tmp_path / "in.tga"
    picture.save(source)
    work = tmp_path / "work"
    ctx = ConvertContext(limits=previewer.Limits(), mime="image/x-tga", _workdir=lambda: work)
    (work / "magick" / "config").mkdir(parents=True)
    (work / "magick" / "tmp").mkdir()
    policy = _policy(ctx, work / "magick" / "tmp")
    (work / "magick" / "config" / "policy.xml").write_text(policy)
    out = work / "magick" / "image.png"
    argv, env = worker_command(ctx, "TGA", source, out)
    assert argv[1:4] == ["-I", "-m", "previewer.converters.magick_worker"]
    bin_dir, called = _fake_toolchain(tmp_path)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    spawns = tmp_path / "spawns.log"

    proc = subprocess.run(
        [argv[0], "-I", "-c", _RECORD_SPAWNS, str(spawns), argv[3], *argv[4:]],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=work / "magick",
    )

    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as written:
        assert written.size == (300, 200)
    # The hook opens its log when installed: no log would mean no hook, and nothing checked.
    assert spawns.exists(), "the audit hook was never installed"
    assert spawns.read_text() == ""
    assert not called.exists(), called.read_text()
