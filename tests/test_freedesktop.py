"""previewer as the desktop's thumbnailer: the calling convention, the freedesktop cache, entries.

Spec details checked against the Thumbnail Managing Standard 0.9.0: the md5-of-URI name (its
own example), size directories, tEXt keys, RGBA, mtime equality, fail entries, permissions.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
from pathlib import Path

import pytest
from PIL import Image
from support import clean_env, files_under, invoke, run_previewer, temp_leftovers

import previewer
from previewer import freedesktop as fd
from tests.pngcheck import png_chunks

ROOT = Path(__file__).resolve().parents[1]
PDF = ROOT / "samples" / "report.pdf"  # 2 pages, A4 portrait
JPEG = ROOT / "samples" / "photo.jpg"  # 1600 x 1200
PSD = ROOT / "tests" / "fixtures" / "psd" / "16bit5x5.psd"


def run(capsysbinary: pytest.CaptureFixture[bytes], *args: object) -> tuple[int, str, str]:
    code, out, err = invoke(capsysbinary, *args)
    return code, out.decode(), err


def ihdr(path: Path) -> tuple[int, int, int, int, int]:
    """(width, height, bit depth, colour type, interlace) from the file's own IHDR."""
    chunks = png_chunks(path.read_bytes())
    width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    return width, height, depth, colour, interlace


def text_chunks(path: Path) -> dict[str, str]:
    out = {}
    for kind, payload in png_chunks(path.read_bytes()):
        if kind == b"tEXt":
            key, _, value = payload.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
    return out


# --------------------------------------------------------------------------- previewer thumbnail


@pytest.mark.parametrize(("size", "expected"), [(128, (91, 128)), (300, (212, 300))])
def test_thumbnail_pdf_is_rgba_non_interlaced_longest_side(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, size: int, expected: tuple[int, int]
) -> None:
    out = tmp_path / "thumb.png"
    code, stdout, err = run(capsysbinary, "thumbnail", "--size", size, PDF, out)
    assert code == 0, err
    assert stdout == ""
    w, h, depth, colour, interlace = ihdr(out)
    assert abs(w - expected[0]) <= 1 and h == expected[1]
    assert (depth, colour, interlace) == (8, 6, 0)  # 8-bit RGBA, not interlaced
    assert os.listdir(tmp_path) == ["thumb.png"]


def test_thumbnail_file_uri_with_escapes(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    src = tmp_path / "a b%#ü.jpg"
    shutil.copy(JPEG, src)
    uri = fd.to_uri(src)
    assert "%20" in uri and "%25" in uri and "%23" in uri and "%C3%BC" in uri
    out = tmp_path / "out.png"
    code, _, err = run(capsysbinary, "thumbnail", "-s", "256", uri, out)
    assert code == 0, err
    assert ihdr(out)[:2] == (256, 192)
    with Image.open(out) as im:
        pixel = im.getpixel((128, 96))
        assert im.mode == "RGBA" and isinstance(pixel, tuple) and pixel[3] == 255


def test_thumbnail_never_enlarges_a_raster(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    src = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(src)
    out = tmp_path / "out.png"
    code, _, err = run(capsysbinary, "thumbnail", "--size", "512", src, out)
    assert code == 0, err
    assert ihdr(out) == (40, 30, 8, 6, 0)


@pytest.mark.parametrize("kind", ["missing", "corrupt", "unsupported", "http"])
def test_thumbnail_failure_writes_nothing(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, kind: str
) -> None:
    src = tmp_path / "in.pdf"
    if kind == "corrupt":
        src.write_bytes(PDF.read_bytes()[:300])
    elif kind == "unsupported":
        src = tmp_path / "in.bin"
        src.write_bytes(os.urandom(2048))
    arg = "http://example.org/x.pdf" if kind == "http" else fd.to_uri(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "thumb.png"
    code, stdout, err = run(capsysbinary, "thumbnail", "--size", "128", arg, out)
    assert code != 0
    assert code == {"missing": 5, "corrupt": 5, "unsupported": 3, "http": 2}[kind]
    assert "previewer: error:" in err and stdout == ""
    assert os.listdir(out_dir) == []  # no output, no temporary file left


def test_thumbnail_failure_keeps_an_existing_output(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    out = tmp_path / "thumb.png"
    out.write_bytes(b"old")
    code, _, _ = run(capsysbinary, "thumbnail", "--size", "128", tmp_path / "nope.pdf", out)
    assert code == 5 and out.read_bytes() == b"old"


def test_thumbnail_sandbox_style_writes_only_output_and_tmp(tmp_path: Path) -> None:
    """No $HOME writes, temporary files removed: what GNOME's bubblewrap sandbox allows."""
    home = tmp_path / "home"
    tmp = tmp_path / "tmp"
    outdir = tmp_path / "out"
    for d in (home, tmp, outdir):
        d.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
    }
    proc = run_previewer("thumbnail", "--size", "256", PSD, outdir / "t.png", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    assert ihdr(outdir / "t.png")[2:] == (8, 6, 0)
    assert files_under(home) == [] and temp_leftovers(tmp) == []
    assert os.listdir(outdir) == ["t.png"]


# --------------------------------------------------------------------------- spec details


def test_spec_example_name() -> None:
    # The spec's own example.
    assert fd.thumbnail_name("file:///home/jens/photos/me.png") == (
        "c6ee772d9e49320e97ec29a7eb5b1697.png"
    )


def test_canonical_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert fd.to_uri("x/../a b.pdf") == "file://" + str(tmp_path).replace(" ", "%20") + "/a%20b.pdf"
    assert fd.to_uri("/srv/it's (1)+[2];?.png") == "file:///srv/it's%20(1)+%5B2%5D%3B%3F.png"
    assert fd.uri_to_path("file:///srv/a%20b.pdf") == Path("/srv/a b.pdf")
    assert fd.uri_to_path("file://localhost/srv/x") == Path("/srv/x")
    assert fd.uri_to_path("/plain/path") == Path("/plain/path")


def test_cache_locations(tmp_path: Path) -> None:
    assert fd.cache_root({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "thumbnails"
    home = os.path.expanduser("~")
    assert fd.cache_root({"XDG_CACHE_HOME": "relative"}) == Path(home, ".cache", "thumbnails")
    assert fd.SIZES == {"normal": 128, "large": 256, "x-large": 512, "xx-large": 1024}
    uri = "file:///a.pdf"
    name = fd.thumbnail_name(uri)
    assert fd.thumbnail_path(uri, "x-large", tmp_path) == tmp_path / "x-large" / name
    assert fd.fail_path(uri, tmp_path) == (
        tmp_path / "fail" / f"previewer-{previewer.__version__}" / name
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fill_cache_writes_spec_entries(tmp_path: Path) -> None:
    root = tmp_path / "cache" / "thumbnails"
    pdf = tmp_path / "report.pdf"
    jpg = tmp_path / "photo.jpg"
    shutil.copy(PDF, pdf)
    shutil.copy(JPEG, jpg)
    os.utime(pdf, (1_700_000_000.75, 1_700_000_000.75))
    report = fd.fill_cache([pdf, jpg], sizes=("normal", "large", "x-large"), root=root)
    assert report.exit_code == 0 and report.converted == 2, report.results
    for src, pages in ((pdf, 2), (jpg, None)):
        uri = fd.to_uri(src)
        for size, longest in (("normal", 128), ("large", 256), ("x-large", 512)):
            path = root / size / fd.thumbnail_name(uri)
            w, h, depth, colour, interlace = ihdr(path)
            assert max(w, h) == longest and (depth, colour, interlace) == (8, 6, 0)
            assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
            keys = text_chunks(path)
            assert keys["Thumb::URI"] == uri
            assert keys["Thumb::MTime"] == str(int(src.stat().st_mtime))
            assert keys["Thumb::Size"] == str(src.stat().st_size)
            assert keys["Software"] == f"previewer {previewer.__version__}"
            if pages is not None:
                assert keys["Thumb::Mimetype"] == "application/pdf"
                assert keys["Thumb::Document::Pages"] == "2"
                assert "Thumb::Image::Width" not in keys
            else:
                assert keys["Thumb::Mimetype"] == "image/jpeg"
                assert (keys["Thumb::Image::Width"], keys["Thumb::Image::Height"]) == (
                    "1600",
                    "1200",
                )
                assert "Thumb::Document::Pages" not in keys
    assert text_chunks(root / "normal" / fd.thumbnail_name(fd.to_uri(pdf)))["Thumb::MTime"] == (
        "1700000000"
    )
    assert _mode(root) == 0o700
    assert not (root / "fail").exists()
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    # Result objects feed the usual batch report.
    result = next(r for r in report.results if r.input == str(pdf))
    assert result.converter == "pdf-pymupdf" and result.mime == "application/pdf"
    assert [p.size for p in result.outputs] == ["normal", "large", "x-large"]


def test_reuse_when_mtime_matches_else_regenerate(tmp_path: Path) -> None:
    root = tmp_path / "thumbs"
    src = tmp_path / "photo.jpg"
    shutil.copy(JPEG, src)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    assert fd.fill_cache([src], sizes=("normal",), root=root).converted == 1
    path = root / "normal" / fd.thumbnail_name(fd.to_uri(src))
    before = path.stat()
    again = fd.fill_cache([src], sizes=("normal",), root=root)
    assert again.results[0].status == "skipped" and again.results[0].reason == "up to date"
    assert path.stat().st_ino == before.st_ino
    # A missing size is generated; existing ones stay.
    more = fd.fill_cache([src], sizes=("normal", "large"), root=root)
    assert [p.size for p in more.results[0].outputs] == ["large"]
    assert path.stat().st_ino == before.st_ino
    os.utime(src, (1_600_000_001, 1_600_000_001))
    assert fd.is_valid(path, fd.to_uri(src), 1_600_000_000)
    assert not fd.is_valid(path, fd.to_uri(src), 1_600_000_001)
    redo = fd.fill_cache([src], sizes=("normal",), root=root)
    assert redo.converted == 1
    assert text_chunks(path)["Thumb::MTime"] == "1600000001"


def test_fail_entry_written_respected_and_retried_after_change(tmp_path: Path) -> None:
    root = tmp_path / "thumbs"
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(PDF.read_bytes()[:400])
    report = fd.fill_cache([bad], root=root)
    assert report.failed == 1 and report.exit_code == 5
    error = report.results[0].error
    assert isinstance(error, previewer.InputError) and "bad.pdf" in str(error), error
    fail = fd.fail_path(fd.to_uri(bad), root)
    assert fail.parent.name == f"previewer-{previewer.__version__}"
    assert ihdr(fail)[:2] == (1, 1) and ihdr(fail)[3] == 6
    keys = text_chunks(fail)
    assert keys["Thumb::URI"] == fd.to_uri(bad)
    assert keys["Thumb::MTime"] == str(int(bad.stat().st_mtime))
    assert _mode(fail) == 0o600 and _mode(fail.parent) == 0o700
    assert not (root / "normal").exists()
    again = fd.fill_cache([bad], root=root)
    assert again.results[0].status == "skipped" and again.results[0].reason == "failed before"
    shutil.copy(PDF, bad)
    os.utime(bad, (2_000_000_000, 2_000_000_000))
    fixed = fd.fill_cache([bad], root=root)
    assert fixed.converted == 1


def test_cache_is_never_thumbnailed_and_walks_skip_unsupported(tmp_path: Path) -> None:
    root = tmp_path / "thumbs"
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(JPEG, tree / "p.jpg")
    (tree / "notes.bin").write_bytes(os.urandom(1000))
    report = fd.fill_cache([tree], sizes=("normal",), root=root)
    by_name = {Path(r.input).name: r for r in report.results}
    assert by_name["p.jpg"].status == "converted"
    assert by_name["notes.bin"].status == "skipped" and report.exit_code == 0
    assert not (root / "fail").exists()
    inside = next((root / "normal").iterdir())
    direct = fd.fill_cache([inside], root=root)
    assert direct.results[0].reason == "inside the thumbnail cache"
    # Walking a tree that contains the cache leaves the cache out.
    walked = fd.fill_cache([tmp_path], sizes=("normal",), root=root)
    assert all(not r.input.startswith(str(root)) for r in walked.results)


def test_fill_cache_with_workers(tmp_path: Path) -> None:
    root = tmp_path / "thumbs"
    seen: list[tuple[int, int]] = []
    report = fd.fill_cache(
        [PDF, JPEG, tmp_path / "missing.pdf"],
        sizes=("normal",),
        root=root,
        jobs=2,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert report.converted == 2 and report.failed == 1 and report.exit_code == 10
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    assert len(list((root / "normal").iterdir())) == 2


def test_fill_cache_rejects_unknown_sizes(tmp_path: Path) -> None:
    with pytest.raises(previewer.InvalidOptionsError):
        fd.fill_cache([PDF], sizes=("huge",), root=tmp_path)


# --------------------------------------------------------------------------- .thumbnailer entry


def test_desktop_install_and_uninstall(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    code, out, err = run(capsysbinary, "desktop", "install", "--user")
    assert code == 0, err
    entry = tmp_path / "data" / "thumbnailers" / "previewer.thumbnailer"
    assert out.strip() == str(entry)
    lines = entry.read_text().splitlines()
    assert lines[0] == "[Thumbnailer Entry]"
    assert "TryExec=previewer" in lines
    assert "Exec=previewer thumbnail --size %s %i %o" in lines
    (mime_line,) = [line for line in lines if line.startswith("MimeType=")]
    types = mime_line.removeprefix("MimeType=").split(";")
    assert types[-1] == "" and "" not in types[:-1]
    types = types[:-1]
    assert types == sorted(set(types)) and not any("*" in t for t in types)
    for expected in ("application/pdf", "image/jpeg", "image/vnd.adobe.photoshop"):
        assert expected in types
    # Generated from the registry's available converters, not a fixed list.
    available = {
        m
        for c in previewer.list_converters()
        if c.available
        for m in c.mime_types
        if not m.endswith("/*")
    }
    assert set(types) == available
    code, printed, _ = run(capsysbinary, "desktop", "install", "--print")
    assert code == 0 and printed == entry.read_text()
    code, out, _ = run(capsysbinary, "desktop", "uninstall")
    assert code == 0 and not entry.exists()
    code, _, err = run(capsysbinary, "desktop", "uninstall", "--user")
    assert code == 0 and "was not installed" in err


def test_convert_freedesktop_flag_fills_the_cache(tmp_path: Path) -> None:

    samples = Path(__file__).resolve().parents[1] / "samples"
    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    argv = ["convert", "--freedesktop", samples]
    first = run_previewer(*argv, "-s", "128", "-s", "1024", env=env, text=True)
    assert first.returncode == 0, first.stderr
    thumbs = tmp_path / "cache" / "thumbnails"
    assert sorted(p.name for p in thumbs.iterdir()) == ["normal", "xx-large"]
    assert len(list((thumbs / "normal").glob("*.png"))) == 2
    assert "2 converted" in first.stderr
    again = run_previewer(*argv, "-s", "128", "-s", "1024", env=env, text=True)
    assert again.returncode == 0 and "0 converted, 2 skipped" in again.stderr
    bad = run_previewer(*argv, "-s", "300", env=env, text=True)
    assert bad.returncode == 2 and "sizes are 128, 256, 512 and 1024" in bad.stderr


def test_fill_cache_workers_isolate_a_hanging_file(tmp_path: Path) -> None:
    from previewer.converters import BUILTIN
    from previewer.errors import EngineTimeoutError
    from previewer.registry import Registry
    from tests.plugins.faulty import TripwireConverter

    src = tmp_path / "in"
    src.mkdir()
    (src / "hang.txt").write_text("HANG")
    samples = Path(__file__).resolve().parents[1] / "samples"
    for sample in samples.glob("*.*"):
        if sample.suffix in (".pdf", ".jpg"):
            (src / sample.name).write_bytes(sample.read_bytes())
    report = fd.fill_cache(
        [src],
        root=tmp_path / "cache",
        registry=Registry(converters=[*BUILTIN, TripwireConverter], entry_points=False),
        limits=previewer.Limits(timeout=2),
        jobs=2,
    )
    by_name = {Path(r.input).name: r for r in report.results}
    assert isinstance(by_name["hang.txt"].error, EngineTimeoutError)
    assert by_name["report.pdf"].status == by_name["photo.jpg"].status == "converted"
    assert report.exit_code == 10
