"""MuPDF's messages never reach stdout, for every document type MuPDF reads (end to end).

MuPDF prints its warnings and errors on stdout, and PyMuPDF 1.28 prints an SVG's warnings itself
when it opens one; ``previewer convert x -o -`` must still give a PNG, and ``--json`` only JSON
lines. Each input is generated with the kind of damage that makes MuPDF talk: external or missing
images, bad path data, unknown references, undecodable base64.
"""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from support import run_previewer

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def _svg(path: Path) -> None:
    path.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
        ' width="100" height="50">'
        '<image xlink:href="missing/photo.jpg" x="0" y="0" width="50" height="50"/>'
        '<path d="M 10 10 L 20 zz 30 Q" fill="red"/><use xlink:href="#nosuch"/>'
        '<rect width="40" height="20" fill="blue"/></svg>'
    )


def _xps(path: Path) -> None:
    ns = 'xmlns="http://schemas.microsoft.com/xps/2005/06"'
    page = (
        f'<FixedPage {ns} Width="200" Height="100">'
        '<Path Data="M 0,0 L 100,0 100,50 z"><Path.Fill><ImageBrush ImageSource="/missing.png"'
        ' Viewbox="0,0,1,1" ViewboxUnits="Absolute" Viewport="0,0,100,50"'
        ' ViewportUnits="Absolute"/></Path.Fill></Path>'
        '<Path Data="M 0,0 L 50,0 50,50 z" Fill="#FF0000"/></FixedPage>'
    )
    types = (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="fdseq" ContentType="application/vnd.ms-package.xps-fixeddocumentsequence+xml"/>'
        '<Default Extension="fdoc" ContentType="application/vnd.ms-package.xps-fixeddocument+xml"/>'
        '<Default Extension="fpage" ContentType="application/vnd.ms-package.xps-fixedpage+xml"/>'
        "</Types>"
    )
    rels = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Type="http://schemas.microsoft.com/xps/2005/06/fixedrepresentation"'
        ' Target="/FixedDocSeq.fdseq" Id="R0"/></Relationships>'
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", types)
        zf.writestr("_rels/.rels", rels)
        zf.writestr(
            "FixedDocSeq.fdseq",
            f'<FixedDocumentSequence {ns}><DocumentReference Source="/Documents/1/FixedDoc.fdoc"/>'
            "</FixedDocumentSequence>",
        )
        zf.writestr(
            "Documents/1/FixedDoc.fdoc",
            f'<FixedDocument {ns}><PageContent Source="/Documents/1/Pages/1.fpage"/></FixedDocument>',
        )
        zf.writestr("Documents/1/Pages/1.fpage", page)


def _epub(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        zf.writestr(
            "META-INF/container.xml",
            '<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
            '<rootfiles><rootfile full-path="content.opf"'
            ' media-type="application/oebps-package+xml"/></rootfiles></container>',
        )
        zf.writestr(
            "content.opf",
            '<package xmlns="http://www.idpf.org/2007/opf" version="2.0"><metadata/><manifest>'
            '<item id="c" href="c.xhtml" media-type="application/xhtml+xml"/></manifest>'
            '<spine><itemref idref="c"/></spine></package>',
        )
        zf.writestr(
            "c.xhtml",
            '<html xmlns="http://www.w3.org/1999/xhtml"><body><p>Hello</p>'
            '<img src="missing.png"/></body></html>',
        )


def _cbz(path: Path) -> None:
    jpeg = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").save(jpeg, "JPEG")
    data = jpeg.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("001.jpg", data[: len(data) * 2 // 3])  # truncated: MuPDF warns, draws it


def _fb2(path: Path) -> None:
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>'
        '<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0"'
        ' xmlns:l="http://www.w3.org/1999/xlink"><body><section><p>Text</p>'
        '<image l:href="#bad.jpg"/></section></body>'
        '<binary id="bad.jpg" content-type="image/jpeg">!!!notbase64</binary></FictionBook>'
    )


MAKERS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (generator, what MuPDF says, pages to render)
    "talky.svg": (_svg, "ignoring external image", "1"),
    "talky.xps": (_xps, "missing.png", "1"),
    "talky.epub": (_epub, "missing.png", "1"),
    "talky.cbz": (_cbz, "premature end", "1"),
    "talky.fb2": (_fb2, "base64", "1"),
}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return run_previewer(*args, cwd=cwd)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_png_to_stdout_is_a_png_and_mupdf_talks_to_the_log(name: str, tmp_path: Path) -> None:
    make, said, page = MAKERS[name]
    source = tmp_path / name
    make(source)

    proc = _cli("--debug", "convert", str(source), "-o", "-", "-p", page, "-s", "64", cwd=tmp_path)

    assert proc.stdout.startswith(b"\x89PNG\r\n\x1a\n"), proc.stdout[:120]
    assert proc.returncode == 0, proc.stderr
    with Image.open(io.BytesIO(proc.stdout)) as image:
        image.load()
        assert image.format == "PNG" and max(image.size) == 64
    assert said in proc.stderr.decode(), proc.stderr  # logged (--debug shows it on stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_json_stdout_is_only_json_lines(tmp_path: Path) -> None:
    sources = []
    for name, (make, _said, _page) in MAKERS.items():
        make(tmp_path / name)
        sources.append(str(tmp_path / name))

    proc = _cli(
        "convert",
        *sources,
        "-o",
        str(tmp_path / "out"),
        "-p",
        "all",
        "--json",
        "-j",
        "0",
        cwd=tmp_path,
    )

    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(sources), proc.stdout
    results = [json.loads(line) for line in lines]
    assert {r["input"] for r in results} == set(sources)
    assert [r["status"] for r in results] == ["converted"] * len(sources)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS}")
def test_json_stdout_over_the_whole_corpus_is_only_json_lines(tmp_path: Path) -> None:
    """One batch run over every corpus file: each stdout line is one JSON object, one per file."""
    files = sorted(
        p for p in CORPUS.rglob("*") if p.is_file() and p.name not in ("MANIFEST.tsv", "README.md")
    )
    files = [p for p in files if p.name != "bigfoot.xlsx"]  # 20 s of LibreOffice, nothing to say

    proc = _cli(
        "convert", *map(str, files), "-o", str(tmp_path / "out"), "--json", "-j", "2", cwd=tmp_path
    )

    lines = proc.stdout.decode().splitlines()
    inputs = [json.loads(line)["input"] for line in lines]
    assert sorted(inputs) == sorted(map(str, files))
