"""Preview formats: PNG (default), JPEG and WebP through the API, the command line, batches and queues."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import previewer
from previewer import output
from previewer.errors import InvalidOptionsError, LimitExceededError
from previewer.options import Limits, Options
from tests.support import JPEG, PDF, invoke


@pytest.fixture(scope="module")
def transparent_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 200x100 RGBA PNG: left half fully transparent, right half opaque red."""
    path = tmp_path_factory.mktemp("formats") / "alpha.png"
    image = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((100, 0, 199, 99), fill=(255, 0, 0, 255))
    image.save(path)
    return path


@pytest.mark.parametrize(
    ("fmt", "pil_format", "suffix", "mime"),
    [
        ("png", "PNG", ".png", "image/png"),
        ("jpeg", "JPEG", ".jpg", "image/jpeg"),
        ("jpg", "JPEG", ".jpg", "image/jpeg"),
        ("webp", "WEBP", ".webp", "image/webp"),
    ],
)
def test_each_format_writes_its_file(
    tmp_path: Path, transparent_png: Path, fmt: str, pil_format: str, suffix: str, mime: str
) -> None:
    (preview,) = previewer.convert(transparent_png, out_dir=tmp_path, sizes=100, format=fmt)
    assert preview.path is not None and preview.path.name == f"alpha.png.p1.100{suffix}"
    assert preview.format == ("jpeg" if fmt == "jpg" else fmt) and preview.mimetype == mime
    assert preview.to_dict()["mimetype"] == mime
    with Image.open(preview.path) as im:
        assert im.format == pil_format
        assert im.size == (100, 50) == (preview.width, preview.height)
        if pil_format == "JPEG":
            assert im.mode == "RGB"
            r, g, b = im.convert("RGB").getpixel((10, 25))  # transparent in the source
            assert min(r, g, b) >= 245, (r, g, b)  # flattened onto white
            r, g, b = im.getpixel((90, 25))
            assert r > 200 and g < 60 and b < 60
        else:
            assert im.mode == "RGBA"
            assert im.getpixel((10, 25))[3] == 0
            assert im.getpixel((90, 25))[3] == 255
    assert sorted(p.name for p in tmp_path.iterdir()) == [preview.path.name]  # no temp file left


def test_quality_changes_the_file_size(tmp_path: Path) -> None:
    sizes = {}
    for fmt in ("jpeg", "webp"):
        for quality in (15, 95):
            out = tmp_path / f"{fmt}{quality}"
            (p,) = previewer.convert(JPEG, out_dir=out, sizes=512, format=fmt, quality=quality)
            assert p.path is not None
            sizes[fmt, quality] = p.path.stat().st_size
        assert sizes[fmt, 15] * 1.5 < sizes[fmt, 95], sizes
    png = previewer.convert(JPEG, out_dir=tmp_path / "png", sizes=512, quality=15)
    png_again = previewer.convert(JPEG, out_dir=tmp_path / "png2", sizes=512, quality=95)
    assert png[0].path is not None and png_again[0].path is not None
    assert png[0].path.read_bytes() == png_again[0].path.read_bytes()  # PNG ignores quality


def test_pdf_pages_and_sizes_as_jpeg(tmp_path: Path) -> None:
    previews = previewer.convert(
        PDF, out_dir=tmp_path, sizes=[128, "300x"], pages="all", format="jpeg"
    )
    assert sorted(p.path.name for p in previews if p.path) == [
        "report.pdf.p1.128.jpg",
        "report.pdf.p1.300x.jpg",
        "report.pdf.p2.128.jpg",
        "report.pdf.p2.300x.jpg",
    ]
    for p in previews:
        assert p.path is not None
        with Image.open(p.path) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (p.width, p.height)


def test_large_jpeg_is_assembled_from_tiles_or_refused(tmp_path: Path) -> None:
    # 600 px tall A4 page: 424 x 600 = 254,400 pixels.
    tiled = Limits(max_tile_pixels=100_000)  # 4 x 100,000 >= 254,400: assembled from tiles
    (p,) = previewer.convert(PDF, out_dir=tmp_path, sizes=600, format="jpeg", limits=tiled)
    reference = previewer.render(PDF, size=600)
    assert p.path is not None
    with Image.open(p.path) as im:
        assert im.format == "JPEG" and im.size == reference.size == (424, 600)
        diff = sum(
            abs(a - b)
            for a, b in zip(
                im.convert("L").tobytes(), reference.convert("L").tobytes(), strict=True
            )
        ) / (424 * 600)
        assert diff < 4, diff
    small = Limits(max_tile_pixels=50_000)  # 4 x 50,000 < 254,400
    with pytest.raises(LimitExceededError) as info:
        previewer.convert(PDF, out_dir=tmp_path / "no", sizes=600, format="webp", limits=small)
    assert "bounded memory" in str(info.value) and "png" in str(info.value)
    assert not (tmp_path / "no").exists() or not list((tmp_path / "no").iterdir())
    (png,) = previewer.convert(PDF, out_dir=tmp_path / "png", sizes=600, limits=small)
    assert png.path is not None and png.path.suffix == ".png"  # PNG is streamed instead


def test_encoder_edge_limits() -> None:
    output.check_encodable("png", (100_000, 10), 16 << 20)
    output.check_encodable("jpeg", (20_000, 10), 16 << 20)
    with pytest.raises(LimitExceededError, match="16,383 pixels a side"):
        output.check_encodable("webp", (20_000, 10), 16 << 20)


def test_options_validate_and_round_trip_the_format() -> None:
    opts = Options(format="JPG", quality=40)
    assert opts.format == "jpeg"
    assert Options.from_dict(opts.to_dict()) == opts
    assert opts.to_dict()["format"] == "jpeg" and opts.to_dict()["quality"] == 40
    old = Options().to_dict()
    del old["format"], old["quality"]  # a task queued by an older previewer
    assert Options.from_dict(old).format == "png"
    with pytest.raises(InvalidOptionsError, match="png, jpeg, webp"):
        Options(format="gif")
    for bad in (0, 101, "80", True):
        with pytest.raises(InvalidOptionsError, match="quality"):
            Options(quality=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionsError):
        previewer.convert(PDF, format="tiff")


def test_cli_stdout_jpeg_and_webp(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, out, err = invoke(capsysbinary, "convert", PDF, "-o", "-", "--format", "jpg")
    assert code == 0, err
    assert out[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(out)) as im:
        assert im.format == "JPEG" and im.size == (181, 256)
    code, out, err = invoke(
        capsysbinary, "convert", PDF, "-o", "-", "--format", "WEBP", "--quality", "30"
    )
    assert code == 0, err
    assert out[:4] == b"RIFF" and out[8:12] == b"WEBP"


def test_cli_flags_env_and_refusals(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = invoke(capsysbinary, "convert", PDF, "-o", tmp_path, "--quality", "0")
    assert code == 2 and "--quality" in err
    code, out, err = invoke(capsysbinary, "convert", PDF, "-o", tmp_path, "--format", "gif")
    assert code == 2 and "--format" in err
    code, out, err = invoke(
        capsysbinary, "convert", PDF, "--freedesktop", "--format", "jpeg", "-s", "128"
    )
    assert code == 2 and "--format cannot be used with --freedesktop" in err
    monkeypatch.setenv("PREVIEWER_FORMAT", "webp")
    monkeypatch.setenv("PREVIEWER_QUALITY", "50")
    code, out, err = invoke(capsysbinary, "convert", PDF, "-o", tmp_path, "--json")
    assert code == 0, err
    (line,) = [json.loads(x) for x in out.decode().splitlines()]
    (item,) = line["outputs"]
    assert item["path"].endswith("report.pdf.p1.256.webp")
    assert item["format"] == "webp" and item["mimetype"] == "image/webp"


def test_batch_with_two_workers_keeps_the_format_and_resumes_per_format(
    tmp_path: Path, transparent_png: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.pdf").write_bytes(PDF.read_bytes())
    (src / "b.jpg").write_bytes(JPEG.read_bytes())
    (src / "c.png").write_bytes(transparent_png.read_bytes())
    out = tmp_path / "out"
    report = previewer.convert_many(
        [src], out_dir=out, jobs=2, format="jpeg", quality=60, resume=True
    )
    assert report.exit_code == 0 and report.converted == 3
    names = sorted(p.name for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert names == ["a.pdf.p1.256.jpg", "b.jpg.p1.256.jpg", "c.png.p1.256.jpg"]
    for result in report.results:
        (p,) = result.outputs
        assert p.format == "jpeg" and p.path is not None
        with Image.open(p.path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
    # The journal tells formats apart: the same run again is up to date, a WebP run is not.
    code, stdout, err = invoke(
        capsysbinary, "convert", src, "-o", out, "-j", "2", "--format", "jpeg", "--quality", "60"
    )
    assert code == 0 and "0 converted, 3 skipped" in err, err
    code, stdout, err = invoke(
        capsysbinary, "convert", src, "-o", out, "-j", "2", "--format", "webp"
    )
    assert code == 0 and "3 converted" in err, err
    assert sorted(Path(x).name for x in stdout.decode().split()) == [
        "a.pdf.p1.256.webp",
        "b.jpg.p1.256.webp",
        "c.png.p1.256.webp",
    ]


def test_queue_worker_writes_the_asked_format(tmp_path: Path) -> None:
    from tests.support import require_engine

    require_engine("redis-server")
    from previewer.queue import submit_many
    from tests.test_queue import Redis, Worker

    redis = Redis(tmp_path)
    worker = None
    try:
        worker = Worker(redis.url, "formats", tmp_path / "worker.log")
        options = Options(out_dir=tmp_path / "out", format="webp", quality=40, sizes=(128,))
        report = submit_many([str(PDF), str(JPEG)], options, broker=redis.url)
        assert report.exit_code == 0, [r.error for r in report.results]
        for result in report.results:
            (p,) = result.outputs
            assert p.format == "webp" and p.path is not None and p.path.suffix == ".webp"
            with Image.open(p.path) as im:
                assert im.format == "WEBP" and max(im.size) == 128
    finally:
        if worker is not None:
            worker.kill()
        redis.stop()


def test_thumbnail_cache_stays_png_whatever_the_options_say(tmp_path: Path) -> None:
    from previewer.freedesktop import thumbnail_file

    src = tmp_path / "photo.jpg"
    src.write_bytes(JPEG.read_bytes())
    result = thumbnail_file(
        src, sizes=("normal",), root=tmp_path / "cache", options=Options(format="jpeg")
    )
    (p,) = result.outputs
    assert p.format == "png" and p.path is not None and p.path.suffix == ".png"
    with Image.open(p.path) as im:
        assert im.format == "PNG" and max(im.size) == 128
