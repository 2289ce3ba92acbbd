"""HTML pages (isolated: no file or network access), font specimens, and sniffing text by name.

The HTML checks run the real command line (the limited child) against a loopback listener and
planted files (:mod:`netcheck`), and read the laid-out PDF's text in-process.
"""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import pymupdf
import pytest
from netcheck import SECRET, Listener, assert_no_secret, plant, planted_pixels
from PIL import Image
from support import run_previewer
from test_text import opened

import previewer
from previewer.errors import InputError
from previewer.mime import sniff

BLOB = random.Random(7).randbytes(4096)
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def green_png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (0, 200, 0)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def hostile_page(tmp_path: Path, listener: Listener) -> Path:
    planted = plant(tmp_path / "planted")
    css = tmp_path / "planted" / "evil.css"
    css.write_text("body { background-color: #ff00ff; } p { color: #ff00ff; }")
    page = tmp_path / "page.html"
    page.write_text(
        f"""<!DOCTYPE html>
<html><head>
<link rel="stylesheet" href="file://{css}">
<link rel="stylesheet" href="{css}">
<link rel="stylesheet" href="{listener.url("/a.css")}">
<style>
@import url("file://{css}");
@import "{listener.url("/b.css")}";
h1 {{ background-image: url("{listener.url("/bg.png")}"); }}
</style>
<script>document.write("SCRIPT-RAN")</script>
</head><body>
<h1>Visible heading</h1>
<p>Paragraph text.</p>
<img src="file://{planted.image}" width="64" height="64">
<img src="{planted.image}" width="64" height="64">
<img src="{listener.url()}" width="64" height="64">
<img src="{green_png()}" width="64" height="64">
<iframe src="file://{planted.text}"></iframe>
<object data="{planted.text}"></object>
<embed src="{listener.url("/embed")}">
</body></html>"""
    )
    return page


def test_html_reaches_no_file_and_no_network(tmp_path: Path) -> None:
    with Listener() as listener:
        page = hostile_page(tmp_path, listener)
        out = tmp_path / "out"
        done = run_previewer("convert", page, "-o", out, "-s", "800", "--json", text=True)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["converter"] == "html-story"
        png = Path(result["outputs"][0]["path"])
        with opened(page) as od:
            pdf_path = od.doc.pdf_path  # type: ignore[attr-defined]
            with pymupdf.open(pdf_path) as pdf:
                text = pdf[0].get_text()
            assert_no_secret(pdf_path)
        assert listener.connections == []
    assert "Visible heading" in text
    assert "SCRIPT-RAN" not in text
    assert SECRET not in text
    assert planted_pixels(png) == 0  # no planted image, stylesheet or fetched PNG
    with Image.open(png) as image:  # the inline (data:) image is drawn: images do render
        greens = image.convert("RGB").getcolors(1 << 20) or []
    assert sum(n for n, (r, g, b) in greens if g > 150 and r < 60 and b < 60) > 500
    assert_no_secret(png)


def test_html_sniffed_by_content(tmp_path: Path) -> None:
    for name, data in [
        ("page.txt", b"<!doctype html><title>T</title><p>x"),
        ("page", b"<html><body><p>x</p></body></html>"),
        ("frag.html", b"<div>fragment</div>"),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        assert sniff(path) == "text/html", name
    image = previewer.render(tmp_path / "frag.html", size=300)
    assert image.size == (212, 300)


# --------------------------------------------------------------------------- fonts


def test_font_specimen() -> None:
    with opened(DEJAVU) as od:
        assert od.converter.name == "font-pillow"
        assert od.doc.metadata()["family"] == "DejaVu Sans"
    image = previewer.render(DEJAVU, size=400)
    assert image.size == (300, 400)
    ink = image.convert("L").point(lambda v: 255 if v < 128 else 0).getbbox()
    assert ink is not None and ink[3] - ink[1] > 200  # name, "Aa" and the pangrams


def test_corrupt_font_is_a_bad_input(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(DEJAVU.read_bytes()[:300])
    assert sniff(broken) in ("font/sfnt", "application/font-sfnt")
    with pytest.raises(InputError, match="not a readable font"):
        previewer.render(broken)
    done = run_previewer("convert", broken, "-o", tmp_path, text=True)
    assert done.returncode == 5, done.stderr
    assert "broken.ttf" in done.stderr


# --------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("name", "data", "mime"),
    [
        ("notes.md", b"# Notes\n\nimport os\nfrom x import y\n", "text/markdown"),
        ("README.md", b'<p align="center"><img src="logo.png"></p>\n\n# Title\n', "text/markdown"),
        ("table.tsv", b"a\tb\n1\t2\n", "text/tab-separated-values"),
        ("tool.py", b"x = 1\n", "text/x-python"),
        ("app.js", b"const x = 1;\n", "application/javascript"),
        ("conf.yaml", b"key: value\n", "text/x-yaml"),
        ("data.json", b'{"a": 1}\n', "application/json"),
        ("notes.txt", b"just text\n", "text/plain"),
        ("letter.txt", b"{\\rtf1\\ansi hello}", "text/rtf"),  # RTF stays RTF
        ("movie.mp4", b"#EXTM3U\n#EXTINF:10,\nseg.ts\n", "application/vnd.apple.mpegurl"),
        ("blob.txt", BLOB, "application/octet-stream"),
    ],
)
def test_text_types_by_name_where_content_says_only_text(
    tmp_path: Path, name: str, data: bytes, mime: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    assert sniff(path) == mime


def test_playlists_and_binary_stay_unsupported(tmp_path: Path) -> None:
    playlist = tmp_path / "movie.mp4"
    playlist.write_bytes(b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n")
    blob = tmp_path / "blob.txt"
    blob.write_bytes(BLOB)
    for path in (playlist, blob):
        done = run_previewer("convert", path, "-o", tmp_path, text=True)
        assert done.returncode == 3, done.stderr
